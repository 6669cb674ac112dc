//! The TLS layer of a connection (its certificate is in `cert`). Hides
//! rustls behind a small interface of our own: ciphertext in, plaintext
//! out through a callback; plaintext in, ciphertext queued for the socket.
//! Socket-free: the loop does the reads and writes.
//!
//! Built on rustls's unbuffered API, so every buffer is ours: a connection
//! holds ciphertext only while some is waiting (a partial record in, or
//! bytes the socket did not take out), and an idle one holds none.

use std::fmt;
use std::io::{self, Write};

use rustls::ProtocolVersion;
use rustls::server::ServerConnectionData;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};

pub mod cert;
pub mod records;

pub use cert::{Loaded, TlsConfig, TlsSource};
use records::{MAX_PLAIN, RECORD_OVERHEAD, RecordError, Records};

/// A fatal `handshake_failure` alert as an unprotected record, for a
/// client whose ClientHello the server cannot answer (no certificate set
/// up) or whose handshake failed with no alert from rustls.
pub const PLAIN_ALERT_HANDSHAKE_FAILURE: &[u8] = &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];
/// A fatal `decode_error` alert as an unprotected record, for bytes that
/// cannot be a ClientHello when rustls left no alert of its own.
pub const PLAIN_ALERT_DECODE_ERROR: &[u8] = &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32];

/// Why a TLS connection cannot go on.
#[derive(Debug)]
pub enum TlsError {
    /// The peer broke the protocol, or the handshake failed.
    Protocol(rustls::Error),
    /// A record after the handshake was wrong (see `records`).
    Record(RecordError),
    /// Application data before the handshake allowed it; a bug of ours,
    /// never the peer's doing.
    NotReady,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Protocol(e) => write!(f, "TLS: {e}"),
            TlsError::Record(e) => write!(f, "TLS: {e}"),
            TlsError::NotReady => f.write_str("TLS: data to send before the handshake ended"),
        }
    }
}

impl std::error::Error for TlsError {}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Protocol(e)
    }
}

impl From<RecordError> for TlsError {
    fn from(e: RecordError) -> Self {
        TlsError::Record(e)
    }
}

/// What a batch of ciphertext brought.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// The peer sent close_notify: no more data will come.
    pub peer_closed: bool,
}

/// Who protects the records.
enum Engine {
    /// rustls, through the handshake, and for the life of a TLS 1.2
    /// connection.
    Rustls(Box<UnbufferedServerConnection>),
    /// Our own TLS 1.3 records: after the handshake only the keys are
    /// kept (about a kilobyte less than rustls's whole state, per idle
    /// connection).
    Records(Box<Records>),
    /// Between the two, or after a failure of the move.
    Gone,
}

/// One connection's TLS state. Boxed inside a connection, so a plain
/// connection pays one pointer for it.
pub struct TlsLayer {
    engine: Engine,
    /// Ciphertext received but not yet a whole record. Empty (and holding
    /// no allocation) between records.
    incoming: Vec<u8>,
    /// Ciphertext for the socket: handshake records, and application data
    /// the socket did not take. Freed once written.
    outgoing: Vec<u8>,
    /// Bytes of `outgoing` already written.
    sent: usize,
    close_queued: bool,
}

impl fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsLayer")
            .field("handshaking", &self.is_handshaking())
            .field("incoming", &self.incoming.len())
            .field("pending", &self.pending())
            .finish()
    }
}

impl TlsLayer {
    pub fn new(cfg: &TlsConfig) -> Result<TlsLayer, TlsError> {
        Ok(TlsLayer {
            engine: Engine::Rustls(Box::new(UnbufferedServerConnection::new(
                cfg.config.clone(),
            )?)),
            incoming: Vec::new(),
            outgoing: Vec::new(),
            sent: 0,
            close_queued: false,
        })
    }

    /// The handshake has not finished; application data cannot flow yet.
    pub fn is_handshaking(&self) -> bool {
        match &self.engine {
            Engine::Rustls(conn) => conn.is_handshaking(),
            Engine::Records(_) | Engine::Gone => false,
        }
    }

    /// Our own TLS 1.3 record layer, once the handshake has moved to it.
    #[cfg(test)]
    pub fn records(&mut self) -> Option<&mut Records> {
        match &mut self.engine {
            Engine::Records(records) => Some(records),
            _ => None,
        }
    }

    /// Takes ciphertext as read from the socket (`data` is scratch space:
    /// records are decrypted in it when nothing is held from before).
    /// Plaintext goes to `plain` as records complete; handshake records to
    /// send are queued (see `pending`). On an error, an alert is queued
    /// and the connection must be closed after sending it.
    ///
    /// rustls is always handed exactly the bytes it has not told us to
    /// discard, plus new ones: it keeps offsets into them between calls.
    pub fn receive(
        &mut self,
        data: &mut [u8],
        plain: &mut impl FnMut(&[u8]),
    ) -> Result<Received, TlsError> {
        let mut got = Received::default();
        if self.incoming.is_empty() {
            let (used, outcome) = self.run(data, plain, &mut got);
            if let Err(e) = outcome {
                return Err(self.fail(e, &mut data[used..]));
            }
            // Only a partial record is copied and kept.
            self.incoming.extend_from_slice(&data[used..]);
        } else {
            self.incoming.extend_from_slice(data);
            let mut incoming = std::mem::take(&mut self.incoming);
            let (used, outcome) = self.run(&mut incoming, plain, &mut got);
            if let Err(e) = outcome {
                return Err(self.fail(e, &mut incoming[used..]));
            }
            incoming.drain(..used);
            if !incoming.is_empty() {
                self.incoming = incoming;
            }
        }
        Ok(got)
    }

    /// Runs the records at the front of `buf` through whoever protects
    /// them; returns the bytes used. A TLS 1.3 handshake that ends here
    /// hands the rest of `buf` to our own records.
    fn run(
        &mut self,
        buf: &mut [u8],
        plain: &mut impl FnMut(&[u8]),
        got: &mut Received,
    ) -> (usize, Result<(), TlsError>) {
        match &mut self.engine {
            Engine::Rustls(conn) => {
                let (used, outcome) = process(conn, buf, &mut self.outgoing, plain, got);
                if outcome.is_err()
                    || conn.is_handshaking()
                    || conn.protocol_version() != Some(ProtocolVersion::TLSv1_3)
                {
                    return (used, outcome);
                }
                if let Err(e) = self.take_over() {
                    return (used, Err(e));
                }
                let (more, outcome) = self.run(&mut buf[used..], plain, got);
                (used + more, outcome)
            }
            Engine::Records(records) => match records.open(buf, plain) {
                Ok(opened) => {
                    got.peer_closed |= opened.peer_closed;
                    (opened.used, Ok(()))
                }
                Err(e) => (0, Err(e.into())),
            },
            Engine::Gone => (0, Err(TlsError::NotReady)),
        }
    }

    /// Moves a finished TLS 1.3 connection to our own records: rustls
    /// hands over the traffic keys and keeps only its key schedule.
    fn take_over(&mut self) -> Result<(), TlsError> {
        let Engine::Rustls(conn) = std::mem::replace(&mut self.engine, Engine::Gone) else {
            return Err(TlsError::NotReady);
        };
        let (secrets, kernel) = conn.dangerous_into_kernel_connection()?;
        self.engine = Engine::Records(Box::new(Records::new(secrets, kernel)?));
        Ok(())
    }

    /// After an error: queues an alert (the one rustls prepared, handed the
    /// same bytes as the failed call; or one of ours chosen by the error,
    /// encrypted once the handshake is over). Nothing is sent after it.
    fn fail(&mut self, e: TlsError, rest: &mut [u8]) -> TlsError {
        self.compact();
        let before = self.outgoing.len();
        match &mut self.engine {
            Engine::Rustls(conn) => {
                let UnbufferedStatus { state, .. } = conn.process_tls_records(rest);
                if let Ok(ConnectionState::EncodeTlsData(mut alert)) = state {
                    encode(&mut self.outgoing, |b| alert.encode(b));
                }
                if self.outgoing.len() == before && conn.is_handshaking() {
                    // Before the handshake ends an alert is a plain record.
                    let alert = match &e {
                        TlsError::Protocol(rustls::Error::InvalidMessage(_)) => {
                            PLAIN_ALERT_DECODE_ERROR
                        }
                        _ => PLAIN_ALERT_HANDSHAKE_FAILURE,
                    };
                    self.outgoing.extend_from_slice(alert);
                }
            }
            Engine::Records(records) => {
                if let TlsError::Record(RecordError {
                    alert: Some(alert), ..
                }) = &e
                {
                    let _ = records.seal_alert(*alert, &mut self.outgoing);
                }
            }
            Engine::Gone => {}
        }
        self.close_queued = true;
        e
    }

    /// Encrypts `parts` in order and appends the records to `into` (the
    /// layer's own queue if it holds unsent bytes, so their order is kept;
    /// otherwise whatever buffer the caller writes from). `incoming` is
    /// what rustls has not let go of (at most a partial record).
    fn encrypt(
        engine: &mut Engine,
        incoming: &mut Vec<u8>,
        parts: [&[u8]; 2],
        into: &mut Vec<u8>,
    ) -> Result<(), TlsError> {
        let conn = match engine {
            Engine::Records(records) => return Ok(records.seal(&parts, into)?),
            Engine::Rustls(conn) => conn,
            Engine::Gone => return Err(TlsError::NotReady),
        };
        for plain in parts.into_iter().filter(|p| !p.is_empty()) {
            Self::encrypt_rustls(conn, incoming, plain, into)?;
        }
        Ok(())
    }

    /// TLS 1.2: rustls seals, one record per part.
    fn encrypt_rustls(
        conn: &mut UnbufferedServerConnection,
        incoming: &mut Vec<u8>,
        plain: &[u8],
        into: &mut Vec<u8>,
    ) -> Result<(), TlsError> {
        let guess = plain.len() + RECORD_OVERHEAD * (plain.len() / MAX_PLAIN + 1);
        write_rustls(conn, incoming, into, |w, into| {
            encrypt_into(into, guess, |b| w.encrypt(plain, b))
        })
    }

    /// Encrypts what the connection owes (`parts`, in order) and writes
    /// all ciphertext owed in one write. `scratch` is the loop's buffer:
    /// when nothing is held from before, records are built there and only
    /// what the socket does not take is copied into the layer. Once a
    /// close_notify or a fatal alert is queued, nothing more is sealed.
    pub fn flush(
        &mut self,
        parts: [&[u8]; 2],
        scratch: &mut Vec<u8>,
        w: &mut impl Write,
    ) -> Result<io::Result<usize>, TlsError> {
        let held = self.pending() > 0 || self.close_queued;
        if held || parts.iter().all(|p| p.is_empty()) {
            if !self.close_queued && parts.iter().any(|p| !p.is_empty()) {
                self.compact();
                Self::encrypt(
                    &mut self.engine,
                    &mut self.incoming,
                    parts,
                    &mut self.outgoing,
                )?;
            }
            return Ok(self.write_to(w));
        }
        scratch.clear();
        Self::encrypt(&mut self.engine, &mut self.incoming, parts, scratch)?;
        let result = w.write(scratch);
        let taken = *result.as_ref().unwrap_or(&0);
        self.outgoing.extend_from_slice(&scratch[taken..]);
        Ok(result)
    }

    /// Queues a close_notify alert after whatever is owed. Idempotent.
    pub fn close_notify(&mut self) {
        if self.close_queued || self.is_handshaking() {
            return;
        }
        self.close_queued = true;
        self.compact();
        match &mut self.engine {
            Engine::Records(records) => {
                let _ = records.seal_alert(records::ALERT_CLOSE_NOTIFY, &mut self.outgoing);
            }
            Engine::Rustls(conn) => {
                let _ = write_rustls(conn, &mut self.incoming, &mut self.outgoing, |w, into| {
                    encrypt_into(into, RECORD_OVERHEAD + 2, |b| w.queue_close_notify(b))
                });
            }
            Engine::Gone => {}
        }
    }

    /// Ciphertext bytes waiting for the socket.
    pub fn pending(&self) -> usize {
        self.outgoing.len() - self.sent
    }

    /// One write of the ciphertext owed; frees the buffer once all is out.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<usize> {
        if self.pending() == 0 {
            return Ok(0);
        }
        let n = w.write(&self.outgoing[self.sent..])?;
        self.sent += n;
        if self.sent == self.outgoing.len() {
            self.outgoing = Vec::new();
            self.sent = 0;
        }
        Ok(n)
    }

    /// Drops written bytes before appending, so the buffer's size follows
    /// what is unsent.
    fn compact(&mut self) {
        if self.sent > 0 {
            self.outgoing.drain(..self.sent);
            self.sent = 0;
        }
    }

    /// Bytes held by this layer's buffers, for tests.
    #[cfg(test)]
    pub fn buffered_capacity(&self) -> usize {
        self.incoming.capacity() + self.outgoing.capacity()
    }
}

/// TLS 1.2 through rustls: runs `f` once rustls is ready for application
/// records, after queuing into `into` whatever must go before them. Like
/// every call into rustls, it is handed the bytes it has not discarded.
fn write_rustls(
    conn: &mut UnbufferedServerConnection,
    incoming: &mut Vec<u8>,
    into: &mut Vec<u8>,
    f: impl FnOnce(&mut WriteTraffic<'_, ServerConnectionData>, &mut Vec<u8>) -> Result<(), TlsError>,
) -> Result<(), TlsError> {
    let mut f = Some(f);
    loop {
        let UnbufferedStatus { discard, state } = conn.process_tls_records(incoming);
        let done = match state? {
            ConnectionState::WriteTraffic(mut w) => match f.take() {
                Some(f) => Some(f(&mut w, into)),
                None => Some(Ok(())),
            },
            ConnectionState::EncodeTlsData(mut e) => {
                encode(into, |b| e.encode(b));
                None
            }
            ConnectionState::TransmitTlsData(t) => {
                t.done();
                None
            }
            _ => Some(Err(TlsError::NotReady)),
        };
        incoming.drain(..discard);
        if let Some(result) = done {
            return result;
        }
    }
}

/// Runs the records in `buf` through rustls: plaintext to `plain`,
/// handshake records to `out`. Returns how many bytes of `buf` were used
/// (the rest is a partial record).
fn process(
    conn: &mut UnbufferedServerConnection,
    buf: &mut [u8],
    out: &mut Vec<u8>,
    plain: &mut impl FnMut(&[u8]),
    got: &mut Received,
) -> (usize, Result<(), TlsError>) {
    let mut used = 0;
    loop {
        let UnbufferedStatus { mut discard, state } = conn.process_tls_records(&mut buf[used..]);
        let state = match state {
            Ok(state) => state,
            Err(e) => return (used, Err(e.into())),
        };
        let mut idle = false;
        match state {
            ConnectionState::ReadTraffic(mut records) => {
                while let Some(record) = records.next_record() {
                    match record {
                        Ok(record) => {
                            discard += record.discard;
                            plain(record.payload);
                        }
                        Err(e) => return (used, Err(e.into())),
                    }
                }
            }
            ConnectionState::EncodeTlsData(mut e) => encode(out, |b| e.encode(b)),
            // The loop sends `out` in order when it flushes; rustls only
            // needs to know not to queue those records again.
            ConnectionState::TransmitTlsData(t) => t.done(),
            ConnectionState::PeerClosed => got.peer_closed = true,
            // Early data is not enabled, so none can arrive; what is left
            // means: wait for more bytes from the peer.
            _ => idle = true,
        }
        used += discard;
        if idle {
            return (used, Ok(()));
        }
    }
}

/// Appends one handshake record to `out`, growing it as rustls asks.
fn encode(out: &mut Vec<u8>, mut f: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>) {
    let start = out.len();
    let mut room = 512;
    loop {
        out.resize(start + room, 0);
        match f(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return;
            }
            Err(EncodeError::InsufficientSize(e)) => room = e.required_size,
            Err(EncodeError::AlreadyEncoded) => {
                out.truncate(start);
                return;
            }
        }
    }
}

/// Appends encrypted records to `out`, first trying `guess` bytes of room.
fn encrypt_into(
    out: &mut Vec<u8>,
    guess: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> Result<(), TlsError> {
    let start = out.len();
    let mut room = guess;
    loop {
        out.resize(start + room, 0);
        match f(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(e)) if e.required_size > room => {
                room = e.required_size
            }
            Err(e) => {
                out.truncate(start);
                return Err(TlsError::Protocol(rustls::Error::General(e.to_string())));
            }
        }
    }
}
