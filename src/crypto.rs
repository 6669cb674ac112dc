//! The one crypto provider behind every TLS configuration (the server,
//! `chat-client`, the load tool), and certificate fingerprints. Choosing
//! another provider is a change to this file alone.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

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
