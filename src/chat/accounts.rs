//! Accounts as the chat sees them: which names are registered, and what
//! happens to connections holding a name when its account changes. Part
//! of `Chat`.

use super::*;

impl Chat {
    /// The registered names, replacing what was known (at start-up, and
    /// when an operator changed the accounts).
    pub fn set_accounts(&mut self, names: impl IntoIterator<Item = Name>) {
        self.accounts = names
            .into_iter()
            .map(|n| (n.to_ascii_lowercase().into(), n))
            .collect();
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

    /// The account `name` was just created (by this server; told before
    /// the registration's own outcome): the chat knows it even if the
    /// connection that asked is gone, and any older claim on it ends.
    pub fn account_added(&mut self, name: Name) {
        let key: Box<str> = name.to_ascii_lowercase().into();
        self.release_claims(&key);
        self.accounts.insert(key, name);
    }
}
