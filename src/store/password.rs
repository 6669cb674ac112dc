//! Password hashing: Argon2id with a random salt per password, stored as a
//! PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`), so the
//! parameters travel with each hash and can be raised later without
//! breaking old accounts. Slow on purpose: only ever called off the loop.

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};

/// The cost of new hashes. Verifying uses the parameters stored in the
/// hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub passes: u32,
}

impl Default for Cost {
    /// 19 MiB and two passes, as OWASP recommends for Argon2id.
    fn default() -> Self {
        Cost {
            memory_kib: Params::DEFAULT_M_COST,
            passes: Params::DEFAULT_T_COST,
        }
    }
}

impl Cost {
    /// Whether argon2 accepts these numbers.
    pub fn check(self) -> Result<(), String> {
        self.params().map(|_| ())
    }

    fn params(self) -> Result<Params, String> {
        Params::new(self.memory_kib, self.passes, 1, None).map_err(|e| {
            format!(
                "bad Argon2 cost (memory {} KiB, passes {}): {e}",
                self.memory_kib, self.passes
            )
        })
    }
}

/// Hashes `password` with a fresh random salt.
pub fn hash(password: &str, cost: Cost) -> Result<String, String> {
    let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, cost.params()?);
    hasher
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash a password: {e}"))
}

/// Whether `password` matches the stored `phc` hash. An unreadable hash is
/// an error, not a mismatch.
pub fn verify(phc: &str, password: &str) -> Result<bool, String> {
    match Argon2::default().verify_password(password.as_bytes(), phc) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(format!("stored password hash unusable: {e}")),
    }
}

/// Whether `phc` is a usable Argon2id PHC string: the algorithm, a known
/// version, parameters argon2 accepts, a salt and a hash. Says what is
/// wrong otherwise. For `chatd check`: an account whose hash fails this
/// can never log in.
pub fn check_phc(phc: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(phc).map_err(|e| format!("not a PHC string ({e})"))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!("algorithm {} is not argon2id", parsed.algorithm));
    }
    if let Some(v) = parsed.version {
        Version::try_from(v).map_err(|_| format!("unknown Argon2 version {v}"))?;
    }
    Params::try_from(&parsed).map_err(|e| format!("bad parameters ({e})"))?;
    if parsed.salt.is_none() {
        return Err("no salt".into());
    }
    if parsed.hash.is_none() {
        return Err("no hash".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small enough to be quick in tests; the default is used in earnest.
    const CHEAP: Cost = Cost {
        memory_kib: 64,
        passes: 1,
    };

    #[test]
    fn round_trip_with_random_salts() {
        let a = hash("correct horse", CHEAP).unwrap();
        let b = hash("correct horse", CHEAP).unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify(&a, "correct horse").unwrap());
        assert!(!verify(&a, "correct horse ").unwrap(), "never trimmed");
        assert!(!verify(&b, "battery staple").unwrap());
    }

    #[test]
    fn a_damaged_hash_is_an_error() {
        assert!(verify("not a hash", "whatever1").is_err());
    }

    #[test]
    fn phc_strings_are_checked_for_what_verify_needs() {
        let good = hash("password1", CHEAP).unwrap();
        assert_eq!(check_phc(&good), Ok(()));
        let bad = |phc: &str| check_phc(phc).err().unwrap();
        assert!(bad("").contains("not a PHC string"));
        assert!(bad("plain text").contains("not a PHC string"));
        let argon2i = good.replacen("argon2id", "argon2i", 1);
        assert!(bad(&argon2i).contains("not argon2id"), "{}", bad(&argon2i));
        let future = good.replacen("v=19", "v=99", 1);
        assert!(bad(&future).contains("version 99"), "{}", bad(&future));
        let tiny = good.replacen("m=64", "m=1", 1);
        assert!(bad(&tiny).contains("bad parameters"), "{}", bad(&tiny));
        let cut = &good[..good.rfind('$').unwrap()];
        assert!(bad(cut).contains("no hash"), "{}", bad(cut));
    }

    #[test]
    fn the_default_cost_is_used_when_verifying_old_hashes() {
        let old = hash("password1", CHEAP).unwrap();
        // Verification reads the cost from the hash, whatever the current one.
        assert!(verify(&old, "password1").unwrap());
        assert!(
            Cost {
                memory_kib: 1,
                passes: 0
            }
            .check()
            .is_err()
        );
    }
}
