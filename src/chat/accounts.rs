//! Accounts as the chat sees them: which names are registered, their
//! roles, and what happens to connections holding a name when its account
//! changes. Part of `Chat`.

use super::moderation::OPERATOR;
use super::*;

impl Chat {
    /// The registered names and their roles, replacing what was known (at
    /// start-up, and when an operator changed the accounts). A connected
    /// holder whose role changed is told.
    pub fn set_accounts(
        &mut self,
        accounts: impl IntoIterator<Item = (Name, Role)>,
        out: &mut Outbox,
    ) {
        let old = std::mem::take(&mut self.accounts);
        self.accounts = accounts
            .into_iter()
            .map(|(name, role)| {
                let key: Box<str> = name.to_ascii_lowercase().into();
                let tokens = old.get(&key).map_or(0, |a| a.tokens);
                (key, Account { name, role, tokens })
            })
            .collect();
        for (key, account) in &self.accounts {
            if old.get(key).is_some_and(|a| a.role != account.role) {
                self.role_changed(key, account.role, OPERATOR.into(), None, out);
            }
        }
        // A deleted account is nobody's any more, not even the connection
        // that proved it: the name may be registered again by someone else.
        for user in self.users.iter_mut().flatten() {
            if user
                .account
                .as_deref()
                .is_some_and(|a| !self.accounts.contains_key(a))
            {
                user.account = None;
            }
        }
    }

    /// Ends every connection's claim on the account `key`: it was created
    /// anew or no longer exists.
    pub(super) fn release_claims(&mut self, key: &str) {
        for user in self.users.iter_mut().flatten() {
            if user.account.as_deref() == Some(key) {
                user.account = None;
            }
        }
    }

    /// The token generation of each account (lower-cased), from the
    /// database: tokens of an older one no longer work.
    pub fn set_token_generations(&mut self, generations: impl IntoIterator<Item = (Name, u32)>) {
        for (name, generation) in generations {
            if let Some(a) = self.accounts.get_mut(name.to_ascii_lowercase().as_str()) {
                a.tokens = generation;
            }
        }
    }

    /// The history's epoch and the secret that signs session tokens.
    pub fn set_identity(&mut self, epoch: &str, secret: &[u8]) {
        self.epoch = epoch.into();
        self.tokens = Some(crate::crypto::Tokens::new(secret));
    }

    /// A session token for the account `key`, if tokens are set up.
    pub(super) fn token_for(&self, key: &str) -> Option<Box<str>> {
        let account = self.accounts.get(key)?;
        let expires = self.clock.0.saturating_add(self.cfg.token_ttl);
        Some(
            self.tokens
                .as_ref()?
                .make(key, expires, account.tokens)
                .into(),
        )
    }

    /// Whether `token` logs in to the account `key` now.
    pub(super) fn token_works(&self, key: &str, token: &str) -> bool {
        let Some(claim) = self.tokens.as_ref().and_then(|t| t.check(token)) else {
            return false;
        };
        claim.account == key
            && claim.expires > self.clock.0
            && self
                .accounts
                .get(key)
                .is_some_and(|a| a.tokens == claim.generation)
    }

    /// The account `key`'s tokens stop working (a logout, a new password).
    pub(super) fn end_tokens(&mut self, key: &str, out: &mut Outbox) {
        if let Some(a) = self.accounts.get_mut(key) {
            a.tokens = a.tokens.wrapping_add(1);
            out.store(Change::Tokens {
                name: a.name.clone(),
                generation: a.tokens,
            });
        }
    }

    /// The account `name` was just created (by this server; told before
    /// the registration's own outcome): the chat knows it even if the
    /// connection that asked is gone, and any older claim on it ends.
    pub fn account_added(&mut self, name: Name, tokens: u32) {
        let key: Box<str> = name.to_ascii_lowercase().into();
        self.release_claims(&key);
        self.accounts.insert(
            key,
            Account {
                name,
                role: Role::User,
                tokens,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::script::*;
    use super::*;

    #[test]
    fn accounts_hold_their_names_and_show_offline() {
        let mut s = with_alice();
        let bob = s.user("bob");
        // Someone else's account is taken even while nobody holds it.
        assert_eq!(
            s.say(bob, "/nick alice")[&bob.0],
            got(&["! name \"alice\" is taken, choose another"])
        );
        assert_eq!(
            s.say(bob, "/users")[&bob.0],
            got(&[
                "* users: 2",
                "*   Alice offline",
                "*   bob online",
                "* end of /users"
            ])
        );
        // A password sent to a JSON connect for a free name is ignored;
        // none for a registered one is refused.
        let j = s.open();
        s.take();
        let connect = |name, password| Command::Connect {
            name,
            room: None,
            password,
            token: None,
            since: None,
        };
        s.chat.handle(j, connect("alice", None), &mut s.out);
        assert_eq!(
            s.take()[&j.0],
            got(&[
                "! Alice is registered: a password is needed",
                "* choose a name:"
            ])
        );
        s.chat
            .handle(j, connect("carol", Some("anything")), &mut s.out);
        assert!(s.take()[&j.0][0].starts_with("* you joined #lobby as carol"));
        assert!(s.jobs.is_empty());
    }

    #[test]
    fn registering_then_leaving_and_coming_back_to_ones_name() {
        let mut s = Script::new();
        let c = s.user("dave");
        assert_eq!(
            s.say(c, "/register short")[&c.0],
            got(&["! password too short: use 8-256 characters"])
        );
        s.say(c, "/register  two  spaces ");
        match &s.jobs[0] {
            Job::Register { password, .. } => assert_eq!(password, " two  spaces "),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.answer(Outcome::Done)[&c.0],
            got(&["* dave is now registered: log in with this password from now on"])
        );
        assert_eq!(
            s.say(c, "/register again123")[&c.0],
            got(&["! dave is already registered"])
        );
        s.say(c, "/nick david");
        // Back to one's own account without a password.
        assert_eq!(
            s.say(c, "/nick Dave")[&c.0],
            got(&["* you are now known as Dave"])
        );
        // /passwd: the old one is checked off the loop.
        // OLD is one word; NEW is the rest, spaces and all.
        s.say(c, "/passwd oldpass1 new pass word ");
        match &s.jobs[0] {
            Job::Passwd { old, new, .. } => {
                assert_eq!((&**old, &**new), ("oldpass1", "new pass word "))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.answer(Outcome::Done)[&c.0],
            got(&["* password changed for Dave"])
        );
    }

    #[test]
    fn an_operator_deleting_an_account_frees_the_name_for_everyone() {
        let mut s = Script::new();
        let a = s.user("dave");
        s.say(a, "/register password1");
        s.answer(Outcome::Done);
        s.say(a, "/nick zed");
        s.chat.set_accounts([], &mut s.out);
        let b = s.user("dave");
        s.say(b, "/register newowner99");
        s.answer(Outcome::Done);
        s.say(b, "/nick bob");
        // a proved the old account, not this one.
        assert_eq!(
            s.say(a, "/nick dave")[&a.0],
            got(&["! name \"dave\" is taken, choose another"])
        );
    }

    #[test]
    fn a_name_freed_and_registered_again_before_any_poll_is_the_new_owners() {
        let mut s = Script::new();
        let a = s.user("dave");
        s.say(a, "/register password1");
        s.answer(Outcome::Done);
        s.say(a, "/nick zed");
        // The operator deletes dave; the first to learn of it is a login.
        let c = s.open();
        s.say(c, "dave");
        s.say(c, "any password");
        assert!(s.answer(Outcome::NoAccount)[&c.0][0].starts_with("* you joined"));
        s.say(c, "/register newowner9");
        s.chat.account_added(Name::from("dave"), 0);
        s.answer(Outcome::Done);
        assert_eq!(
            s.say(a, "/nick dave")[&a.0],
            got(&["! name \"dave\" is taken, choose another"])
        );
        // And a registration finished for a connection gone by then is
        // known all the same.
        s.chat.account_added(Name::from("Erin"), 0);
        let e = s.user("x");
        assert_eq!(
            s.say(e, "/nick erin")[&e.0],
            got(&["! name \"erin\" is taken, choose another"])
        );
    }
}
