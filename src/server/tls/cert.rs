//! The server's certificate: read from PEM files or made once and kept
//! (self-signed), turned into the rustls configuration every handshake
//! uses, with its fingerprint for the log. Read at start and on SIGHUP,
//! never on the event loop.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{ServerConfig, version};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The server's certificate and key, ready for handshakes, with the
/// certificate's fingerprint for the log and for clients that pin it.
#[derive(Clone)]
pub struct TlsConfig {
    pub(super) config: Arc<ServerConfig>,
    fingerprint: String,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlsConfig(sha256 {})", self.fingerprint)
    }
}

impl TlsConfig {
    /// From PEM text: a certificate chain (end-entity first) and its key.
    pub fn from_pem(chain: &[u8], key: &[u8]) -> Result<TlsConfig, String> {
        let certs = CertificateDer::pem_slice_iter(chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("certificate: {e}"))?;
        let Some(first) = certs.first() else {
            return Err("certificate: no CERTIFICATE block in the file".into());
        };
        let fingerprint = crate::crypto::fingerprint(first);
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("key: {e}"))?;
        let mut config = ServerConfig::builder_with_provider(crate::crypto::provider())
            .with_protocol_versions(&[&version::TLS13, &version::TLS12])
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("certificate and key: {e}"))?;
        // After a TLS 1.3 handshake the layer protects records itself with
        // the traffic keys (see `records`), keeping far less per connection.
        config.enable_secret_extraction = true;
        Ok(TlsConfig {
            config: Arc::new(config),
            fingerprint,
        })
    }

    /// The SHA-256 of the end-entity certificate, lowercase hex.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// Where the server's certificate comes from; read at start and again on
/// SIGHUP.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// `--tls-cert FILE --tls-key FILE`.
    Files { cert: PathBuf, key: PathBuf },
    /// `--tls-self-signed`: made on first start, then kept in these files
    /// so that it stays the same across restarts.
    SelfSigned { cert: PathBuf, key: PathBuf },
}

/// What loading a source did, for the log.
#[derive(Debug)]
pub struct Loaded {
    pub config: TlsConfig,
    /// A self-signed certificate was made (first start).
    pub created: bool,
}

impl TlsSource {
    /// The self-signed certificate's files beside the database `db`
    /// (`DB.cert.pem`, `DB.key.pem`), or in the working directory when the
    /// database is in memory.
    pub fn self_signed_beside(db: &str) -> TlsSource {
        let base = if db == ":memory:" { "chatd" } else { db };
        TlsSource::SelfSigned {
            cert: PathBuf::from(format!("{base}.cert.pem")),
            key: PathBuf::from(format!("{base}.key.pem")),
        }
    }

    /// Reads the certificate and key; a self-signed one missing is made
    /// first if `may_create` (at start, not on SIGHUP: a certificate that
    /// clients pin must not change behind their back). The error names
    /// the file and what is wrong with it.
    pub fn load(&self, may_create: bool) -> Result<Loaded, String> {
        match self {
            TlsSource::Files { cert, key } => Ok(Loaded {
                config: load_files(cert, key)?,
                created: false,
            }),
            TlsSource::SelfSigned { cert, key } => {
                let created = may_create && !cert.exists() && !key.exists();
                if created {
                    make_self_signed(cert, key)?;
                }
                Ok(Loaded {
                    config: load_files(cert, key)?,
                    created,
                })
            }
        }
    }
}

fn load_files(cert: &Path, key: &Path) -> Result<TlsConfig, String> {
    let chain = std::fs::read(cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
    let key_pem = std::fs::read(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
    TlsConfig::from_pem(&chain, &key_pem)
        .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))
}

/// Makes a certificate for localhost and the loopback addresses, with an
/// ECDSA P-256 key (cheap handshakes), and writes it; the key file is
/// readable by its owner alone. Both are written under temporary names
/// and renamed into place, the certificate last: a failure half way
/// leaves no pair that would stop the next start.
fn make_self_signed(cert: &Path, key: &Path) -> Result<(), String> {
    let names = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot make a self-signed certificate: {e}"))?;
    let (key_tmp, cert_tmp) = (temporary(key), temporary(cert));
    let written = write_new(&key_tmp, made.signing_key.serialize_pem().as_bytes(), 0o600)
        .and_then(|()| write_new(&cert_tmp, made.cert.pem().as_bytes(), 0o644))
        .and_then(|()| rename(&key_tmp, key))
        .and_then(|()| rename(&cert_tmp, cert));
    if written.is_err() {
        for path in [&key_tmp, &cert_tmp, &key.to_path_buf()] {
            let _ = std::fs::remove_file(path);
        }
    }
    written
}

fn temporary(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

fn rename(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::rename(from, to).map_err(|e| format!("cannot create {}: {e}", to.display()))
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    // A leftover from an interrupted start is replaced.
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
