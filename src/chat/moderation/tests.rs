//! The moderation commands, played through scripted connections.

use super::super::script::*;
use super::*;

/// A chat whose accounts are `ada` (admin), `mo` (moderator) and
/// `pat` (user), at wall-clock second 1000, recording nothing.
fn staffed(cfg: ChatConfig) -> Script {
    let mut s = Script::with(ChatConfig {
        history_keep: 0,
        ..cfg
    });
    let accounts = [
        ("ada", Role::Admin),
        ("mo", Role::Moderator),
        ("pat", Role::User),
    ];
    s.chat.set_accounts(
        accounts.map(|(n, r)| (Name::from(n), r)),
        &mut Outbox::default(),
    );
    at(&mut s, 1000);
    s
}

fn at(s: &mut Script, secs: u64) {
    s.chat.set_clock(Timestamp(secs), s.now);
}

/// Logs in to the account `name` (its password taken as right).
fn login(s: &mut Script, name: &str) -> ConnId {
    let c = s.open();
    s.say(c, name);
    s.say(c, "a password");
    s.answer(Outcome::Done);
    c
}

#[test]
fn a_kick_moves_to_the_lobby_and_out_of_it_closes() {
    let mut s = staffed(ChatConfig::default());
    let mo = login(&mut s, "mo");
    let bob = s.user("bob");
    let carol = s.user("carol");
    s.say(bob, "/join rust");
    s.say(carol, "/join rust");
    let out = s.say(carol, "/kick bob");
    assert_eq!(
        lines(&out, carol),
        got(&["! not allowed: only moderators and admins may kick"])
    );
    let out = s.say(mo, "/kick bob spam");
    let told = "* bob was kicked from #rust by mo (spam)";
    assert_eq!(lines(&out, carol), got(&[told]));
    assert_eq!(lines(&out, mo), got(&[told, "* bob has joined #lobby"]));
    assert_eq!(
        lines(&out, bob),
        got(&[
            "* you were kicked from #rust by mo (spam)",
            "* you joined #lobby"
        ])
    );
    let out = s.say(mo, "/kick bob");
    assert_eq!(
        lines(&out, bob),
        got(&["* you were kicked from #lobby by mo"])
    );
    assert_eq!(s.closed, vec![(bob, CloseReason::Kicked)]);
    let out = s.say(mo, "/kick bob");
    assert_eq!(lines(&out, mo), got(&["! no such user: bob"]));
    // The name is free at once (the kicked connection is closing).
    let other = s.open();
    s.take();
    let out = s.say(other, "bob");
    assert!(lines(&out, other)[0].starts_with("* you joined #lobby as bob"));
    let audit: Vec<&str> = s
        .stored
        .iter()
        .filter_map(|c| match c {
            Change::Audit(a) => Some(a.action),
            _ => None,
        })
        .collect();
    assert_eq!(audit, ["kick", "kick"]);
}

#[test]
fn nobody_acts_on_themselves_and_moderators_not_on_admins() {
    let mut s = staffed(ChatConfig::default());
    let ada = login(&mut s, "ada");
    let mo = login(&mut s, "mo");
    s.take();
    for cmd in ["/kick ada", "/mute ada", "/ban ada", "/ban 127.0.0.0/8"] {
        let out = s.say(mo, cmd);
        assert!(
            lines(&out, mo)[0].starts_with("! not allowed: "),
            "{cmd}: {out:?}"
        );
    }
    let out = s.say(mo, "/mute mo");
    assert_eq!(lines(&out, mo), got(&["! not allowed: not on yourself"]));
    // An admin may act on a moderator.
    let out = s.say(ada, "/mute mo 60");
    assert_eq!(
        lines(&out, mo),
        got(&["* you were muted by ada until 1970-01-01T00:17:40Z"])
    );
    assert!(s.stored.contains(&Change::Sanction {
        kind: SanctionKind::Mute,
        target: "mo".into(),
        sanction: Sanction {
            until: Some(Timestamp(1060)),
            by: "ada".into(),
            reason: None,
        },
    }));
}

#[test]
fn a_mute_refuses_messages_until_its_time_or_an_unmute() {
    let mut s = staffed(ChatConfig::default());
    let mo = login(&mut s, "mo");
    let bob = s.user("bob");
    s.say(mo, "/mute bob 60 flood");
    let out = s.say(bob, "hello");
    assert_eq!(
        lines(&out, bob),
        got(&["! you are muted until 1970-01-01T00:17:40Z"])
    );
    assert!(lines(&out, mo).is_empty(), "nothing reaches the room");
    let out = s.say(bob, "@mo hi");
    assert_eq!(out.len(), 1, "{out:?}");
    // The same name on a new connection is still muted.
    s.say(bob, "/quit");
    let bob = s.user("bob");
    let out = s.say(bob, "again");
    assert_eq!(out.len(), 1, "{out:?}");
    // Time passes: the mute is over.
    at(&mut s, 1060);
    let out = s.say(bob, "free");
    assert_eq!(lines(&out, mo), got(&["<bob> free"]));
    let out = s.say(mo, "/unmute bob");
    assert_eq!(lines(&out, mo), got(&["! bob is not muted"]));
    // An untimed mute lasts until lifted.
    s.say(mo, "/mute bob");
    at(&mut s, 1_000_000);
    assert_eq!(s.say(bob, "x").len(), 1);
    let out = s.say(mo, "/unmute bob");
    assert_eq!(lines(&out, bob), got(&["* you were unmuted by mo"]));
    assert_eq!(lines(&s.say(bob, "y"), mo), got(&["<bob> y"]));
}

#[test]
fn bans_by_name_and_by_range() {
    let mut s = staffed(ChatConfig::default());
    let mo = login(&mut s, "mo");
    let bob = s.user("bob");
    let out = s.say(mo, "/ban bob 600 spam");
    assert_eq!(
        lines(&out, bob),
        got(&["* you were banned by mo until 1970-01-01T00:26:40Z (spam)"])
    );
    assert_eq!(s.closed, vec![(bob, CloseReason::Banned)]);
    // The name is refused at the name step, in any case.
    let again = s.open();
    let out = s.say(again, "BOB");
    assert_eq!(
        lines(&out, again)[1..],
        got(&[
            "! BOB is banned until 1970-01-01T00:26:40Z, choose another name",
            "* choose a name:"
        ])
    );
    let out = s.say(mo, "/nick bob");
    assert_eq!(
        lines(&out, mo),
        got(&["! bob is banned until 1970-01-01T00:26:40Z, choose another name"])
    );

    // A range: whoever is connected from it goes, named or not, and
    // it is refused at connect.
    let far = |last| IpAddr::from([10, 0, 0, last]);
    let carol = s.open_from(far(5));
    s.say(carol, "carol");
    let waiting = s.open_from(far(6));
    s.take();
    s.closed.clear();
    let out = s.say(mo, "/ban 10.0.0.0/8");
    assert_eq!(lines(&out, carol), got(&["* you were banned by mo"]));
    assert_eq!(
        lines(&out, waiting),
        got(&["! you are banned from this server"])
    );
    assert_eq!(
        lines(&out, mo),
        got(&[
            "* carol has disconnected (banned)",
            "* 10.0.0.0/8 was banned by mo"
        ])
    );
    let late = s.open_from(far(7));
    let out = s.take();
    assert_eq!(
        lines(&out, late),
        got(&["! you are banned from this server"])
    );
    assert_eq!(s.closed.len(), 3);
    let out = s.say(mo, "/bans");
    assert_eq!(
        lines(&out, mo),
        got(&[
            "* bans: 2",
            "*   bob by mo until 1970-01-01T00:26:40Z (spam)",
            "*   10.0.0.0/8 by mo",
            "* end of /bans"
        ])
    );
    s.say(mo, "/unban 10.0.0.0/8");
    let ok = s.open_from(far(8));
    assert!(lines(&s.take(), ok)[0].starts_with("* welcome"));
    // Timed bans end on time.
    at(&mut s, 1600);
    let bob = s.open();
    s.take();
    let out = s.say(bob, "bob");
    assert!(lines(&out, bob)[0].starts_with("* you joined #lobby as bob"));
}

#[test]
fn a_moderated_room_with_a_topic() {
    let mut s = staffed(ChatConfig::default());
    let mo = login(&mut s, "mo");
    let bob = s.user("bob");
    s.say(mo, "/join class");
    s.say(bob, "/join class");
    let out = s.say(bob, "/topic Algebra");
    assert_eq!(
        lines(&out, bob),
        got(&["! not allowed: only moderators and admins may set the topic"])
    );
    let out = s.say(mo, "/topic Algebra, chapter 3");
    let told = "* mo set the topic of #class: Algebra, chapter 3";
    assert_eq!(
        (lines(&out, mo), lines(&out, bob)),
        (got(&[told]), got(&[told]))
    );
    s.say(mo, "/moderate on");
    let out = s.say(bob, "a question");
    assert_eq!(
        lines(&out, bob),
        got(&["! #class is moderated: only moderators may speak"])
    );
    assert_eq!(lines(&s.say(mo, "listen"), bob), got(&["<mo> listen"]));
    // Kept by name while empty, shown on entering.
    s.say(mo, "/join lobby");
    s.say(bob, "/join lobby");
    let out = s.say(bob, "/join class");
    assert_eq!(
        lines(&out, bob),
        got(&[
            "* you joined #class",
            "* topic of #class: Algebra, chapter 3"
        ])
    );
    let out = s.say(bob, "/topic");
    assert_eq!(
        lines(&out, bob),
        got(&["* topic of #class: Algebra, chapter 3"])
    );
    let out = s.say(bob, "still moderated?");
    assert_eq!(out.len(), 1);
    let newcomer = s.open();
    s.take();
    s.chat.handle(
        newcomer,
        Command::Connect {
            name: "dan",
            room: Some("class"),
            password: None,
            token: None,
            since: None,
        },
        &mut s.out,
    );
    let out = s.take();
    assert_eq!(
        lines(&out, newcomer)[..2],
        got(&[
            "* you joined #class as dan (2 users here); /help lists the commands",
            "* topic of #class: Algebra, chapter 3"
        ])
    );
    assert!(s.stored.contains(&Change::Room {
        room: "class".into(),
        settings: RoomSettings {
            topic: Some("Algebra, chapter 3".into()),
            moderated: true
        },
        by: "mo".into(),
    }));
}

#[test]
fn walls_roles_and_whois() {
    let mut s = staffed(ChatConfig::default());
    let ada = login(&mut s, "ada");
    let mo = login(&mut s, "mo");
    let pat = login(&mut s, "pat");
    s.say(pat, "/join elsewhere");
    s.take();
    let out = s.say(mo, "/wall hi");
    assert_eq!(
        lines(&out, mo),
        got(&["! not allowed: only admins may send a wall"])
    );
    let out = s.say(ada, "/wall back at 5");
    for c in [ada, mo, pat] {
        assert_eq!(lines(&out, c), got(&["* wall from ada: back at 5"]));
    }
    let out = s.say(mo, "/role pat moderator");
    assert_eq!(
        lines(&out, mo),
        got(&["! not allowed: only admins may set roles"])
    );
    let out = s.say(ada, "/role pat moderator");
    assert_eq!(
        lines(&out, pat),
        got(&["* you are now a moderator (set by ada)"])
    );
    let out = s.say(ada, "/role nobody admin");
    assert_eq!(lines(&out, ada), got(&["! no such user: nobody"]));
    // The operator's change, read from the database, is told too.
    let accounts = [
        ("ada", Role::Admin),
        ("mo", Role::User),
        ("pat", Role::Moderator),
    ];
    s.chat
        .set_accounts(accounts.map(|(n, r)| (Name::from(n), r)), &mut s.out);
    let out = s.take();
    assert_eq!(
        lines(&out, mo),
        got(&["* you are now a user (set by operator)"])
    );
    let out = s.say(pat, "/whois ada");
    let seen = lines(&out, pat);
    assert!(seen.contains(&"*   role: admin".to_string()), "{seen:?}");
    assert!(seen.iter().any(|l| l.starts_with("*   address: 127.0.0.1")));
    let out = s.say(mo, "/whois ada");
    assert!(!lines(&out, mo).iter().any(|l| l.contains("address")));
    let out = s.say(mo, "/who");
    assert_eq!(
        lines(&out, mo),
        got(&[
            "* users in #lobby: 2",
            "*   ada online (admin)",
            "*   mo online",
            "* end of /who"
        ])
    );
}

#[test]
fn registration_limits_and_guests_who_may_not_speak() {
    let mut s = staffed(ChatConfig {
        require_account: true,
        register_rate: 2,
        ..ChatConfig::default()
    });
    let mo = login(&mut s, "mo");
    let bob = s.user("bob");
    let out = s.say(bob, "hi");
    assert_eq!(lines(&out, bob), got(&["! register or log in to speak"]));
    let out = s.say(bob, "@mo hi");
    assert_eq!(lines(&out, bob), got(&["! register or log in to speak"]));
    s.say(bob, "/register bobs password");
    s.answer(Outcome::Done);
    assert_eq!(lines(&s.say(bob, "hi"), mo), got(&["<bob> hi"]));
    // Two registrations an hour from one address; the third waits.
    for name in ["c1", "c2"] {
        let c = s.user(name);
        s.say(c, "/register a password");
    }
    let c3 = s.user("c3");
    let out = s.say(c3, "/register a password");
    assert_eq!(
        lines(&out, c3),
        got(&["! too many registrations from your address: try again in 60 minutes"])
    );
    at(&mut s, 1000 + 3600 - 61);
    let out = s.say(c3, "/register a password");
    assert_eq!(
        lines(&out, c3),
        got(&["! too many registrations from your address: try again in 2 minutes"])
    );
    at(&mut s, 1000 + 3600);
    let out = s.say(c3, "/register a password");
    assert!(out.is_empty(), "handed out: {out:?}");

    let mut closed = staffed(ChatConfig {
        registration_open: false,
        ..ChatConfig::default()
    });
    let dan = closed.user("dan");
    let out = closed.say(dan, "/register a password");
    assert_eq!(
        lines(&out, dan),
        got(&["! registration is closed: an operator creates accounts"])
    );
}

#[test]
fn moderation_read_back_from_the_database_applies_and_expired_is_dropped() {
    let mut s = staffed(ChatConfig::default());
    let sanction = |until| Sanction {
        until,
        by: "mo".into(),
        reason: None,
    };
    s.chat.load_moderation(ModState {
        sanctions: vec![
            (
                SanctionKind::Mute,
                "bob".into(),
                sanction(Some(Timestamp(2000))),
            ),
            (
                SanctionKind::Mute,
                "carol".into(),
                sanction(Some(Timestamp(999))),
            ),
            (SanctionKind::Ban, "10.1.0.0/16".into(), sanction(None)),
        ],
        rooms: vec![(
            "Quiet".into(),
            RoomSettings {
                topic: None,
                moderated: true,
            },
        )],
    });
    let bob = s.user("bob");
    let carol = s.user("carol");
    assert_eq!(s.say(bob, "x").len(), 1);
    assert_eq!(lines(&s.say(carol, "y"), bob), got(&["<carol> y"]));
    s.open_from(IpAddr::from([10, 1, 2, 3]));
    s.take();
    assert_eq!(s.closed.len(), 1);
    s.say(carol, "/join quiet");
    let out = s.say(carol, "z");
    assert_eq!(
        lines(&out, carol),
        got(&["! #quiet is moderated: only moderators may speak"])
    );
}
