//! TLS for `chat-client`: owns the trust decision (the system's roots, a
//! CA file, or a pinned fingerprint) and the `rustls` connection over the
//! client's socket; it never falls back to plain text, never sends a byte
//! of ours before the server is verified, and knows nothing of chat.
//!
//! The rest of the client sees only [`Trust`], [`Connector`], [`TlsStream`]
//! (read and write as on a non-blocking socket) and [`TlsError`]; `rustls`
//! stays behind them. Every verifier notes the certificate the server
//! presented, so a failed check can say which certificate was refused: a
//! person can then compare that fingerprint with the one the server logs.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, ClientConnection, OtherError, RootCertStore};

use crate::crypto::{CertCheck, Shown};

/// Length of a SHA-256 digest in bytes.
const DIGEST_LEN: usize = crate::crypto::SHA256_LEN;

/// Whom to believe about the server's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// The system's root certificates, and the certificate must name HOST.
    System,
    /// The certificates in this PEM file as roots, and it must name HOST.
    CaFile(PathBuf),
    /// Exactly this end-entity certificate, whatever it names.
    Pin(Pin),
}

/// The SHA-256 of the DER of the one certificate to accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pin([u8; DIGEST_LEN]);

impl Pin {
    /// Reads a fingerprint in hex: colons anywhere are ignored (the form
    /// `openssl x509 -fingerprint` prints), case does not matter, and
    /// anything but 64 hex digits is refused, so a truncated paste is
    /// caught when the flags are read rather than as a failed handshake.
    pub fn parse(text: &str) -> Result<Pin, String> {
        let digits: Vec<u8> = text.bytes().filter(|&b| b != b':').collect();
        if let Some(&bad) = digits.iter().find(|b| !b.is_ascii_hexdigit()) {
            let shown = char::from(bad);
            return Err(if bad.is_ascii_graphic() {
                format!("{shown:?} is not a hex digit; expected a SHA-256 fingerprint in hex")
            } else {
                "expected a SHA-256 fingerprint in hex (64 digits, colons optional)".to_string()
            });
        }
        if digits.len() != 2 * DIGEST_LEN {
            return Err(format!(
                "expected 64 hex digits (a SHA-256 fingerprint, colons optional), got {}",
                digits.len()
            ));
        }
        let mut pin = [0; DIGEST_LEN];
        for (byte, pair) in pin.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = (hex_value(pair[0]) << 4) | hex_value(pair[1]);
        }
        Ok(Pin(pin))
    }

    fn matches(&self, der: &[u8]) -> bool {
        crate::crypto::sha256(der) == self.0
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::crypto::hex(&self.0))
    }
}

/// A checked hex digit's value.
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

/// A certificate's fingerprint as chatd logs it and `--tls-pin` takes it:
/// the SHA-256 of its DER in lowercase hex, without colons.
pub fn fingerprint(der: &[u8]) -> String {
    crate::crypto::fingerprint(der)
}

/// Why TLS could not be used. Each is the end of the session: exit 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    /// The trust settings cannot be used; nothing was sent.
    Setup(String),
    /// The server's certificate was refused. The fingerprint is that of
    /// the end-entity certificate it presented, when it presented one.
    Certificate {
        reason: String,
        fingerprint: Option<String>,
    },
    /// The handshake failed for another reason (the server hung up, sent
    /// something that is not TLS, or had nothing in common with us).
    Handshake(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Setup(why) => write!(f, "chat-client: {why}"),
            TlsError::Certificate {
                reason,
                fingerprint: Some(fp),
            } => write!(
                f,
                "chat-client: cannot verify the server's certificate ({reason}); \
                 its SHA-256 fingerprint is {fp}"
            ),
            TlsError::Certificate {
                reason,
                fingerprint: None,
            } => write!(
                f,
                "chat-client: cannot verify the server's certificate ({reason})"
            ),
            TlsError::Handshake(why) => write!(f, "chat-client: TLS handshake failed: {why}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// The server's end-entity certificate as last presented, so an error
/// raised deep inside `rustls` can still name it.
#[derive(Debug, Default)]
struct Presented(Mutex<Option<String>>);

impl Presented {
    fn record(&self, der: &[u8]) {
        // A poisoned lock only means another thread panicked mid-write of
        // a `String`; the value is still whole.
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(fingerprint(der));
    }

    fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The refusal our pin verifier gives, shown as the reason.
#[derive(Debug)]
struct PinMismatch;

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("its fingerprint is not the one given to --tls-pin")
    }
}

impl std::error::Error for PinMismatch {}

/// Accepts the one certificate whose SHA-256 is the pin. Names and dates
/// are not looked at: the pin is the identity (a self-signed chatd
/// certificate names nothing a client could check).
fn pin_check(pin: Pin, presented: Arc<Presented>) -> Arc<dyn ServerCertVerifier> {
    CertCheck::new(move |shown: &Shown<'_>| {
        presented.record(shown.end_entity);
        if pin.matches(shown.end_entity) {
            Ok(())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch)),
            )))
        }
    })
}

/// The roots for `--tls-ca FILE`: every certificate in the file. A file
/// with none, or with one that cannot be a root, is refused whole rather
/// than half used.
fn roots_from_file(path: &std::path::Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read --tls-ca {shown}: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        let cert = cert.map_err(|e| format!("cannot read --tls-ca {shown}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("--tls-ca {shown} holds an unusable certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("--tls-ca {shown} holds no PEM certificate"));
    }
    Ok(roots)
}

/// The system's roots. Files that cannot be read are skipped as long as
/// some roots are found; with none, every check would fail, so say so now.
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = match found.errors.first() {
            Some(e) => format!(" ({e})"),
            None => String::new(),
        };
        return Err(format!(
            "found no system root certificates{why}; use --tls-ca FILE or --tls-pin SHA256"
        ));
    }
    Ok(roots)
}

/// What is needed to open TLS to one server: built before connecting, so
/// a bad CA file or host name fails before a byte is sent.
pub struct Connector {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    presented: Arc<Presented>,
}

impl Connector {
    /// `host` is the name (or address) the certificate must be valid for,
    /// and is sent as SNI when it is a name.
    pub fn new(trust: &Trust, host: &str) -> Result<Connector, TlsError> {
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|_| TlsError::Setup(format!("{host:?} is not a valid server name for TLS")))?;
        let provider = crate::crypto::provider();
        let presented = Arc::new(Presented::default());
        // Every check notes the certificate it was shown, for the error.
        let shown_to = presented.clone();
        let verifier: Arc<dyn ServerCertVerifier> = match trust {
            Trust::Pin(pin) => pin_check(*pin, shown_to),
            Trust::System | Trust::CaFile(_) => {
                let roots = match trust {
                    Trust::CaFile(path) => roots_from_file(path),
                    _ => system_roots(),
                }
                .map_err(TlsError::Setup)?;
                let inner =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| TlsError::Setup(format!("cannot use the roots: {e}")))?;
                // The webpki check (chain to a root, name, dates) as it is.
                CertCheck::new(move |shown: &Shown<'_>| {
                    shown_to.record(shown.end_entity);
                    inner
                        .verify_server_cert(
                            shown.end_entity,
                            shown.intermediates,
                            shown.server_name,
                            shown.ocsp_response,
                            shown.now,
                        )
                        .map(|_| ())
                })
            }
        };
        // TLS 1.2 and 1.3, as the server offers; the custom verifier is the
        // "dangerous" part only in name: both kinds verify.
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(format!("cannot set up TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Connector {
            config: Arc::new(config),
            server_name,
            presented,
        })
    }

    /// A connection whose ClientHello waits to be written.
    pub fn start(&self) -> Result<TlsStream, TlsError> {
        let conn = ClientConnection::new(self.config.clone(), self.server_name.clone())
            .map_err(|e| TlsError::Setup(format!("cannot start TLS: {e}")))?;
        Ok(TlsStream {
            conn,
            presented: self.presented.clone(),
            failure: None,
            in_flight: 0,
            closing: false,
        })
    }
}

/// One TLS connection over a non-blocking socket the caller owns (and
/// polls). `read` and `write` behave as the socket's would: `WouldBlock`
/// when nothing can be done until the socket is ready again.
pub struct TlsStream {
    conn: ClientConnection,
    presented: Arc<Presented>,
    /// Why the connection failed, kept for the caller, which sees only an
    /// `io::Error` at the moment it happens.
    failure: Option<TlsError>,
    /// Plaintext accepted by the last `write` whose records are not all
    /// on the socket yet, so the caller can still count it as unsent.
    in_flight: usize,
    closing: bool,
}

impl TlsStream {
    /// Plaintext from the server. Reads the socket only when `rustls`
    /// holds no plaintext, and drains it until it would block: with edge
    /// triggering, bytes left inside `rustls` would raise no event. `Ok(0)`
    /// is the server's end; after an `Err` other than `WouldBlock` or
    /// `Interrupted`, [`TlsStream::take_failure`] says whether TLS failed.
    pub fn read<S: Read + Write>(&mut self, sock: &mut S, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Data, `Ok(0)` after close_notify, or `UnexpectedEof` when
                // the server hung up without one: both ends, as on a socket.
                other => return other,
            }
            match self.conn.read_tls(sock)? {
                0 if self.conn.is_handshaking() => {
                    return Err(self.fail(TlsError::Handshake(
                        "the server closed the connection".to_string(),
                    )));
                }
                0 => return Ok(0),
                _ => {
                    if let Err(e) = self.conn.process_new_packets() {
                        let failure = self.classify(e);
                        // Let the server know why (rustls queued an alert);
                        // we are leaving whatever happens to it.
                        let _ = self.flush(sock);
                        return Err(self.fail(failure));
                    }
                }
            }
        }
    }

    /// Hands plaintext to TLS once the handshake is done and no older
    /// records wait, so what the caller counts as sent is at most one
    /// write away from the socket, and nothing goes out before the server
    /// is verified.
    pub fn write<S: Write>(&mut self, sock: &mut S, data: &[u8]) -> io::Result<usize> {
        self.flush(sock)?;
        if self.conn.wants_write() || self.conn.is_handshaking() || self.failure.is_some() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.conn.writer().write(data)?;
        if n == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.in_flight = n;
        self.flush(sock)?;
        Ok(n)
    }

    /// Writes the records `rustls` holds (handshake, data, alerts) until
    /// the socket would block; returns how many bytes went out.
    pub fn flush<S: Write>(&mut self, sock: &mut S) -> io::Result<usize> {
        let mut total = 0;
        while self.conn.wants_write() {
            match self.conn.write_tls(sock) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if !self.conn.wants_write() {
            self.in_flight = 0;
        }
        Ok(total)
    }

    /// Plaintext accepted but not yet all on the socket.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Ends our side of TLS with close_notify; true once everything is on
    /// the socket, so the caller may shut the TCP write side. Before the
    /// handshake is done there is nothing to close yet: false.
    pub fn close<S: Write>(&mut self, sock: &mut S) -> bool {
        if self.conn.is_handshaking() && self.failure.is_none() {
            return false;
        }
        if !self.closing {
            self.closing = true;
            self.conn.send_close_notify();
        }
        // A socket error ends the session on the reading side anyway.
        self.flush(sock).is_err() || !self.conn.wants_write()
    }

    /// Why TLS failed, once.
    pub fn take_failure(&mut self) -> Option<TlsError> {
        self.failure.take()
    }

    fn fail(&mut self, failure: TlsError) -> io::Error {
        let err = io::Error::other(failure.to_string());
        self.failure.get_or_insert(failure);
        err
    }

    /// Sorts a `rustls` error: a refused certificate names the one shown.
    fn classify(&self, err: rustls::Error) -> TlsError {
        match err {
            rustls::Error::InvalidCertificate(e) => TlsError::Certificate {
                reason: certificate_reason(&e),
                fingerprint: self.presented.get(),
            },
            e => TlsError::Handshake(e.to_string()),
        }
    }
}

/// A refusal in words; `rustls` shows several only by their Rust names.
fn certificate_reason(err: &CertificateError) -> String {
    match err {
        CertificateError::UnknownIssuer => "not issued by a trusted authority".to_string(),
        CertificateError::BadSignature => "bad signature".to_string(),
        CertificateError::BadEncoding => "malformed certificate".to_string(),
        CertificateError::Expired => "certificate expired".to_string(),
        CertificateError::NotValidYet => "certificate not valid yet".to_string(),
        CertificateError::NotValidForName => "certificate not valid for this host".to_string(),
        CertificateError::Revoked => "certificate revoked".to_string(),
        CertificateError::Other(OtherError(e)) => e.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn cert_der() -> CertificateDer<'static> {
        rcgen::generate_simple_self_signed(vec!["localhost".into()])
            .expect("rcgen makes a certificate")
            .cert
            .der()
            .clone()
    }

    use rustls::client::danger::ServerCertVerified;
    use rustls::pki_types::UnixTime;

    /// A pin check and where it notes what it was shown.
    fn verifier(pin: Pin) -> (Arc<dyn ServerCertVerifier>, Arc<Presented>) {
        let presented = Arc::new(Presented::default());
        (pin_check(pin, presented.clone()), presented)
    }

    fn check(
        v: &Arc<dyn ServerCertVerifier>,
        der: &CertificateDer<'_>,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from("localhost").expect("a DNS name");
        v.verify_server_cert(der, &[], &name, &[], UnixTime::now())
    }

    #[test]
    fn pins_parse_with_or_without_colons_in_any_case() {
        let plain = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let pin = Pin::parse(plain).expect("plain hex");
        assert_eq!(pin.to_string(), plain);
        assert_eq!(Pin::parse(&plain.to_uppercase()), Ok(pin));
        let colons: Vec<String> = plain
            .as_bytes()
            .chunks(2)
            .map(|p| String::from_utf8_lossy(p).to_uppercase())
            .collect();
        assert_eq!(Pin::parse(&colons.join(":")), Ok(pin));
        assert_eq!(Pin::parse(ZEROS).map(|p| p.0), Ok([0; DIGEST_LEN]));
    }

    #[test]
    fn pins_of_the_wrong_length_or_not_hex_are_refused() {
        let short = &ZEROS[1..];
        let err = Pin::parse(short).expect_err("63 digits");
        assert!(
            err.contains("64 hex digits") && err.contains("got 63"),
            "{err}"
        );
        let long = format!("{ZEROS}0");
        assert!(Pin::parse(&long).is_err());
        assert!(Pin::parse("").is_err());
        assert!(Pin::parse(":::").is_err());
        let bad = format!("{}g", &ZEROS[1..]);
        let err = Pin::parse(&bad).expect_err("a g");
        assert!(err.contains("'g' is not a hex digit"), "{err}");
        // A space or a prefix is not silently dropped.
        assert!(Pin::parse(&format!(" {ZEROS}")).is_err());
        assert!(Pin::parse(&format!("sha256:{ZEROS}")).is_err());
        assert!(Pin::parse(&format!("{}é", &ZEROS[2..])).is_err());
    }

    #[test]
    fn fingerprints_are_lowercase_hex_sha256_of_the_der() {
        // SHA-256 of the empty input and of "abc", well-known values.
        assert_eq!(
            fingerprint(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // What is printed is what the pin takes.
        let der = cert_der();
        let fp = fingerprint(&der);
        assert_eq!(Pin::parse(&fp).map(|p| p.to_string()), Ok(fp));
    }

    #[test]
    fn the_pin_verifier_accepts_only_the_pinned_certificate() {
        let right = cert_der();
        let wrong = cert_der();
        let pin = Pin::parse(&fingerprint(&right)).expect("a fingerprint parses");
        let (v, presented) = verifier(pin);

        assert!(check(&v, &right).is_ok());
        assert_eq!(presented.get(), Some(fingerprint(&right)));

        let err = check(&v, &wrong).expect_err("another certificate");
        assert_eq!(presented.get(), Some(fingerprint(&wrong)));
        let rustls::Error::InvalidCertificate(e) = err else {
            panic!("not a certificate error: {err:?}");
        };
        assert_eq!(
            certificate_reason(&e),
            "its fingerprint is not the one given to --tls-pin"
        );
        // Garbage is not a certificate to accept either.
        assert!(check(&v, &CertificateDer::from(vec![0x30, 0x00])).is_err());
    }

    #[test]
    fn a_refusal_reads_with_the_fingerprint() {
        let e = TlsError::Certificate {
            reason: "not issued by a trusted authority".into(),
            fingerprint: Some(ZEROS.into()),
        };
        assert_eq!(
            e.to_string(),
            format!(
                "chat-client: cannot verify the server's certificate \
                 (not issued by a trusted authority); its SHA-256 fingerprint is {ZEROS}"
            )
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_before_connecting() {
        let path = std::env::temp_dir().join(format!("chatd-tls-unit-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").expect("write a temp file");
        let err = Connector::new(&Trust::CaFile(path.clone()), "localhost")
            .err()
            .expect("no certificate in it");
        let _ = std::fs::remove_file(&path);
        assert!(
            matches!(&err, TlsError::Setup(why) if why.contains("holds no PEM certificate")),
            "{err}"
        );
        let missing = Connector::new(&Trust::CaFile(path), "localhost")
            .err()
            .expect("no such file");
        assert!(matches!(missing, TlsError::Setup(_)), "{missing}");
    }
}
