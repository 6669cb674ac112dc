//! The one crypto provider behind every TLS configuration (the server,
//! `chat-client`, the load tool), certificate fingerprints, and the one
//! shape of a client-side certificate check. Choosing another provider is
//! a change to this file alone.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// aws-lc-rs, rustls's default provider: its default key exchange includes
/// the post-quantum hybrid X25519MLKEM768 beside X25519 and the NIST
/// curves.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Bytes in a SHA-256 digest.
pub const SHA256_LEN: usize = 32;

pub fn sha256(data: &[u8]) -> [u8; SHA256_LEN] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0; SHA256_LEN];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The SHA-256 of a certificate's DER, lowercase hex without colons: what
/// `chatd --tls-self-signed` logs and `chat-client --tls-pin` takes.
pub fn fingerprint(der: &[u8]) -> String {
    hex(&sha256(der))
}

/// Lowercase hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Random bytes from the provider's generator.
pub fn random(out: &mut [u8]) {
    use aws_lc_rs::rand::SecureRandom;
    aws_lc_rs::rand::SystemRandom::new()
        .fill(out)
        .expect("the system's random generator works");
}

/// Session tokens: `v1.NAME.EXPIRY.GEN.MAC`, where MAC is the hex
/// HMAC-SHA256 under the server's secret of everything before it (the
/// name lower-cased). Checked without a password hash: a login by token
/// costs a MAC, not Argon2id.
pub struct Tokens {
    key: aws_lc_rs::hmac::Key,
}

/// What a valid token says.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenClaim {
    /// The account, lower-cased.
    pub account: String,
    pub expires: u64,
    /// The account's token generation when it was made.
    pub generation: u32,
}

impl Tokens {
    pub fn new(secret: &[u8]) -> Tokens {
        Tokens {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret),
        }
    }

    pub fn make(&self, account: &str, expires: u64, generation: u32) -> String {
        let body = format!("v1.{}.{expires}.{generation}", account.to_ascii_lowercase());
        let mac = aws_lc_rs::hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", hex(mac.as_ref()))
    }

    /// The claim of a well-formed token with a right MAC (its expiry and
    /// generation are the caller's to check).
    pub fn check(&self, token: &str) -> Option<TokenClaim> {
        let (body, mac) = token.rsplit_once('.')?;
        let mac = unhex(mac)?;
        aws_lc_rs::hmac::verify(&self.key, body.as_bytes(), &mac).ok()?;
        let mut parts = body.split('.');
        let (Some("v1"), Some(account), Some(expires), Some(generation), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        Some(TokenClaim {
            account: account.to_string(),
            expires: expires.parse().ok()?,
            generation: generation.parse().ok()?,
        })
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What a server showed of its identity, for a `CertCheck`.
pub struct Shown<'a> {
    pub end_entity: &'a CertificateDer<'a>,
    pub intermediates: &'a [CertificateDer<'a>],
    pub server_name: &'a ServerName<'a>,
    pub ocsp_response: &'a [u8],
    pub now: UnixTime,
}

/// A client's check of the server's certificate by a rule of our own (a
/// pinned fingerprint, the roots with a note of what was shown, anything
/// for a load tool), while the handshake's signatures are still verified
/// with the provider: a server must hold the key of the certificate it
/// shows, whatever the rule.
pub struct CertCheck<F> {
    check: F,
    algorithms: WebPkiSupportedAlgorithms,
}

impl<F> CertCheck<F>
where
    F: Fn(&Shown<'_>) -> Result<(), rustls::Error> + Send + Sync,
{
    pub fn new(check: F) -> Arc<CertCheck<F>> {
        Arc::new(CertCheck {
            check,
            algorithms: provider().signature_verification_algorithms,
        })
    }
}

impl<F> fmt::Debug for CertCheck<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertCheck")
    }
}

impl<F> ServerCertVerifier for CertCheck<F>
where
    F: Fn(&Shown<'_>) -> Result<(), rustls::Error> + Send + Sync,
{
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        (self.check)(&Shown {
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        })
        .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprint_is_sha256_in_lowercase_hex() {
        // SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        assert_eq!(
            super::fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn tokens_carry_their_claim_and_any_change_breaks_them() {
        let t = Tokens::new(b"a secret of the server");
        let token = t.make("Alice", 1000, 3);
        assert_eq!(
            t.check(&token),
            Some(TokenClaim {
                account: "alice".into(),
                expires: 1000,
                generation: 3
            })
        );
        let forged = token.replace(".1000.", ".9999.");
        assert_eq!(t.check(&forged), None);
        assert_eq!(Tokens::new(b"another secret").check(&token), None);
        for bad in [
            "",
            "v1",
            "v1.a.1.1.zz",
            "v1.a.1.1",
            &token[..token.len() - 1],
        ] {
            assert_eq!(t.check(bad), None, "{bad}");
        }
    }
}
