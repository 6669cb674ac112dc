//! TLS for the load generator's connections: a client configuration that
//! accepts whatever certificate the server shows, and a non-blocking
//! connection that reads and writes plaintext through rustls.
//!
//! The certificate is not checked because `chat-bench` only loads a
//! loopback server it was pointed at by whoever started that server; what
//! it measures is the cost of the encrypted stream, not trust. The
//! handshake signature is still verified against the certificate's key
//! with the provider's algorithms, so the handshake does the same work a
//! verifying client's would, except for the chain and name checks.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::{ClientConfig, ClientConnection};
use rustls_pki_types::ServerName;

/// The client configuration every TLS connection of a run shares: the
/// crate's one provider and its default cipher suites, TLS 1.2 and 1.3,
/// no client certificate, any server certificate (see the module's
/// comment).
pub fn client_config() -> Result<Arc<ClientConfig>, rustls::Error> {
    let verifier = crate::crypto::CertCheck::new(|_: &crate::crypto::Shown<'_>| Ok(()));
    let config = ClientConfig::builder_with_provider(crate::crypto::provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// One client connection over TLS on a non-blocking socket.
///
/// Edge-triggered polling reports a socket once per change, and rustls
/// keeps bytes of its own (records not yet decrypted, plaintext not yet
/// read, records not yet written) that raise no event at all; so every
/// call here takes each layer as far as it goes: the socket until it
/// would block, and rustls's buffers until they are empty.
pub struct TlsStream {
    pub socket: TcpStream,
    conn: ClientConnection,
}

impl TlsStream {
    /// Starts a handshake on `socket` (connected or still connecting);
    /// nothing is sent until `flush`.
    pub fn new(
        config: &Arc<ClientConfig>,
        socket: TcpStream,
        addr: SocketAddr,
    ) -> Result<TlsStream, rustls::Error> {
        // An address rather than a name: rustls sends no SNI for it, and
        // the certificate's names are not checked anyway.
        let name = ServerName::IpAddress(addr.ip().into());
        let conn = ClientConnection::new(config.clone(), name)?;
        Ok(TlsStream { socket, conn })
    }

    /// Reads plaintext into `buf`, like a socket's `read`: `Ok(0)` at the
    /// end of the stream (a clean close_notify, or the server closing the
    /// TCP connection without one: for a load tool both mean the
    /// connection is gone), `WouldBlock` once the socket would block and
    /// rustls holds no plaintext. Unlike a socket's, a short read says
    /// nothing about what is left: call until `WouldBlock`.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // No plaintext left: decrypt more. The plaintext buffer is
            // empty here, so read_tls cannot refuse for lack of room.
            match self.conn.read_tls(&mut self.socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The handshake or a key update may have left records
                    // to send; no event would come for them.
                    self.flush_some()?;
                    return Err(e);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // rustls queued an alert saying why; the server may as
                // well learn it.
                let _ = self.flush_some();
                return Err(tls_error(e));
            }
            // An Ok(0) from read_tls (the socket's end) falls through
            // here: the reader then hands out what is left, then the end.
        }
    }

    /// Queues plaintext for sending; it goes out on `flush` (during the
    /// handshake, once the handshake is done). rustls accepts up to its
    /// buffer limit and returns how much it took.
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.conn.writer().write(data)
    }

    /// Encrypts and sends plaintext, like a socket's `write`: how much was
    /// taken, or `WouldBlock` while records from before are still waiting
    /// for room in the socket (a writable event follows, and `flush` then
    /// sends them). Waiting for those first keeps rustls's buffer from
    /// growing past what the socket takes.
    pub fn write_through(&mut self, data: &[u8]) -> io::Result<usize> {
        self.flush()?;
        let taken = self.conn.writer().write(data)?;
        self.flush_some()?;
        Ok(taken)
    }

    /// Writes queued records to the socket until none are left
    /// (`Ok(())`) or the socket would block (`WouldBlock`: a writable
    /// event follows once there is room).
    pub fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `flush`, where a full socket (or one still connecting) is not an
    /// error: the writable event that follows flushes the rest.
    pub fn flush_some(&mut self) -> io::Result<()> {
        match self.flush() {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
                ) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    /// The negotiated protocol version and cipher suite, once the
    /// handshake is done.
    pub fn describe(&self) -> Option<String> {
        let suite = self.conn.negotiated_cipher_suite()?;
        Some(format!("{:?}", suite.suite()))
    }
}
