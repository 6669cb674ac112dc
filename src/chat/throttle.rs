//! Slows password guessing: each wrong password is answered after a delay
//! that doubles with the recent failures of the account. An address is
//! slowed too, but only past `ADDRESS_GRACE` recent failures: a few typos
//! behind one shared address (a classroom) slow nobody else, while
//! guessing many accounts from one address soon does. Once an account (or
//! an address past its grace) has failed lately, its checks also run one
//! at a time, each after that delay, so that guesses sent on many
//! connections at once gain nothing; a right password for that account
//! waits its turn too, but never for another account's failures. With no
//! recent failure, checks run at once. Plain data and arithmetic; the
//! chat passes the time in.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures older than this are forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// The longest delay, however many failures.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// Recent failures an address may have before it is slowed itself.
pub const ADDRESS_GRACE: u32 = 10;
/// Entries kept per table before old ones are dropped, so that a flood of
/// addresses cannot grow memory without bound.
pub const MAX_ENTRIES: usize = 100_000;

/// Recent failures per key, with the time of the last one.
struct Failures<K> {
    by_key: HashMap<K, (u32, Instant)>,
}

impl<K: Hash + Eq> Failures<K> {
    fn new() -> Self {
        Failures {
            by_key: HashMap::new(),
        }
    }

    /// Counts one more failure for `key` and returns the count.
    fn add(&mut self, key: K, now: Instant) -> u32 {
        if self.by_key.len() >= MAX_ENTRIES {
            self.by_key
                .retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
            if self.by_key.len() >= MAX_ENTRIES {
                // All recent: forgetting some is better than growing.
                self.by_key.clear();
            }
        }
        let entry = self.by_key.entry(key).or_insert((0, now));
        if now.duration_since(entry.1) >= FORGET_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        entry.0
    }
}

/// Failure counts per account and per source address, and the checks
/// under way for each.
pub struct Throttle {
    base: Duration,
    accounts: Failures<Box<str>>,
    addresses: Failures<IpAddr>,
    checking_accounts: HashMap<Box<str>, u32>,
    checking_addresses: HashMap<IpAddr, u32>,
}

impl Throttle {
    /// `base` is the delay of a first failure; each further one doubles it.
    pub fn new(base: Duration) -> Throttle {
        Throttle {
            base,
            accounts: Failures::new(),
            addresses: Failures::new(),
            checking_accounts: HashMap::new(),
            checking_addresses: HashMap::new(),
        }
    }

    /// Changes the delay of a first failure from now on (SIGHUP); the
    /// failures counted so far stay counted.
    pub fn set_base(&mut self, base: Duration) {
        self.base = base;
    }

    /// Records a wrong password for `account` (lower-cased) from `addr` and
    /// returns how long to wait before saying so.
    pub fn failed(&mut self, account: &str, addr: IpAddr, now: Instant) -> Duration {
        let by_account = self.accounts.add(account.into(), now);
        let by_addr = self.addresses.add(addr, now);
        self.delay(by_account.max(by_addr.saturating_sub(ADDRESS_GRACE)))
    }

    fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.base
            .saturating_mul(factor)
            .min(MAX_DELAY.max(self.base))
    }

    /// A password check for `account` from `addr` is under way: until it
    /// `ended`, others for either wait (when either has failed lately).
    pub fn began(&mut self, account: &str, addr: IpAddr) {
        *self.checking_accounts.entry(account.into()).or_default() += 1;
        *self.checking_addresses.entry(addr).or_default() += 1;
    }

    pub fn ended(&mut self, account: &str, addr: IpAddr) {
        fn down<K: Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
        down(&mut self.checking_accounts, &Box::<str>::from(account));
        down(&mut self.checking_addresses, &addr);
    }

    /// When a password for `account` from `addr` may next be checked: not
    /// before the delay of the account's latest failure is over (or the
    /// address's, past its grace), and, while either is slowed, not while
    /// another check for it is under way (asked again a little later). So
    /// guesses sent in parallel are checked one at a time, each after its
    /// delay. `None` if at once.
    pub fn ready_at(&self, account: &str, addr: IpAddr, now: Instant) -> Option<Instant> {
        let recent = |entry: Option<&(u32, Instant)>, grace: u32| {
            entry
                .filter(|&&(n, last)| n > grace && now.duration_since(last) < FORGET_AFTER)
                .map(|&(n, last)| last + self.delay(n - grace))
        };
        let by_account = recent(self.accounts.by_key.get(account), 0);
        let by_addr = recent(self.addresses.by_key.get(&addr), ADDRESS_GRACE);
        let at = by_account.max(by_addr)?;
        let busy = (by_account.is_some() && self.checking_accounts.contains_key(account))
            || (by_addr.is_some() && self.checking_addresses.contains_key(&addr));
        if busy {
            return Some(at.max(now + self.base.max(Duration::from_millis(20))));
        }
        (at > now).then_some(at)
    }

    /// A right password for `account`: its count starts again. The
    /// address keeps its count, so logging in to one's own account does
    /// not reset the guessing of others.
    pub fn succeeded(&mut self, account: &str) {
        self.accounts.by_key.remove(account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn delays_double_per_account() {
        let mut t = Throttle::new(Duration::from_millis(100));
        let now = Instant::now();
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(t.failed("alice", A, now)), 100);
        assert_eq!(ms(t.failed("alice", A, now)), 200);
        // Another address guessing the same account is slowed as much.
        assert_eq!(ms(t.failed("alice", B, now)), 400);
        // The same address guessing another account is not, within grace.
        assert_eq!(ms(t.failed("bob", A, now)), 100);
        // Capped.
        for _ in 0..20 {
            t.failed("alice", A, now);
        }
        assert_eq!(t.failed("alice", A, now), MAX_DELAY);
    }

    #[test]
    fn an_address_is_slowed_only_past_its_grace() {
        let mut t = Throttle::new(Duration::from_millis(100));
        let now = Instant::now();
        // Ten accounts guessed once each from A: each answer waits only
        // for its own account's first failure.
        for i in 0..ADDRESS_GRACE {
            assert_eq!(t.failed(&format!("user{i}"), A, now).as_millis(), 100);
        }
        assert_eq!(t.ready_at("carol", A, now), None, "within grace");
        // The eleventh failure from A counts for the address.
        assert_eq!(t.failed("dave", A, now).as_millis(), 100);
        assert_eq!(t.failed("erin", A, now).as_millis(), 200);
        let ms = |at: Option<Instant>| at.map(|at| (at - now).as_millis());
        assert_eq!(ms(t.ready_at("carol", A, now)), Some(200));
        // Other addresses are not slowed by A's guessing.
        assert_eq!(t.ready_at("carol", B, now), None);
    }

    #[test]
    fn success_resets_the_account_not_the_address() {
        let mut t = Throttle::new(Duration::from_millis(100));
        let now = Instant::now();
        for _ in 0..ADDRESS_GRACE + 2 {
            t.failed("alice", A, now);
        }
        t.succeeded("alice");
        // B is fresh and alice's count was reset.
        assert_eq!(t.failed("alice", B, now).as_millis(), 100);
        // A is still past its grace by two, now three.
        assert_eq!(t.failed("carol", A, now).as_millis(), 400);
    }

    #[test]
    fn checks_wait_for_the_last_failures_delay() {
        let mut t = Throttle::new(Duration::from_millis(100));
        let now = Instant::now();
        assert_eq!(t.ready_at("alice", A, now), None);
        t.failed("alice", A, now);
        let ms = |at: Option<Instant>| at.map(|at| (at - now).as_millis());
        assert_eq!(ms(t.ready_at("alice", B, now)), Some(100), "same account");
        assert_eq!(t.ready_at("bob", A, now), None, "same address, in grace");
        assert_eq!(t.ready_at("bob", B, now), None);
        t.failed("alice", B, now);
        assert_eq!(ms(t.ready_at("alice", B, now)), Some(200));
        assert_eq!(
            t.ready_at("alice", B, now + Duration::from_millis(200)),
            None
        );
    }

    #[test]
    fn a_right_password_does_not_wait_for_other_accounts_checks() {
        let mut t = Throttle::new(Duration::from_millis(100));
        let now = Instant::now();
        t.failed("alice", A, now);
        t.began("alice", A);
        // bob shares the address but not the account: checked at once.
        assert_eq!(t.ready_at("bob", A, now), None);
    }

    #[test]
    fn after_a_failure_one_check_at_a_time() {
        let mut t = Throttle::new(Duration::from_millis(100));
        let now = Instant::now();
        // Nothing failed yet: checks run side by side.
        t.began("alice", A);
        assert_eq!(t.ready_at("alice", B, now), None);
        t.ended("alice", A);
        t.failed("alice", A, now);
        let later = now + Duration::from_secs(1);
        assert_eq!(t.ready_at("alice", B, later), None);
        t.began("alice", B);
        assert!(t.ready_at("alice", A, later).is_some_and(|at| at > later));
        t.ended("alice", B);
        assert_eq!(t.ready_at("alice", A, later), None);
    }

    #[test]
    fn old_failures_are_forgotten() {
        let mut t = Throttle::new(Duration::from_millis(100));
        let now = Instant::now();
        t.failed("alice", A, now);
        t.failed("alice", A, now);
        let later = now + FORGET_AFTER;
        assert_eq!(t.failed("alice", A, later).as_millis(), 100);
    }
}
