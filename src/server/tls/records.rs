//! TLS 1.3 records after the handshake (RFC 8446 section 5), sealed and
//! opened here with the traffic keys rustls negotiated. rustls keeps
//! what only it can do (the key schedule, for key updates); the rest of
//! its connection state is dropped, so an idle TLS connection costs its
//! two keys and little else. Socket-free.
//!
//! What a record may carry after the handshake: application data, an
//! alert (close_notify ends the peer's side; any other ends the
//! connection), or a KeyUpdate (answered with our own when the peer asks).
//! Anything else is a protocol error, answered with an encrypted alert.

use std::fmt;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};

/// A record header: content type, legacy version, length.
pub const HEADER: usize = 5;
/// The AEAD tag every protected record ends with.
const TAG: usize = 16;
/// Bytes a record adds to its plaintext (header, content type, tag).
pub const RECORD_OVERHEAD: usize = HEADER + 1 + TAG;
/// The largest plaintext a record carries.
pub const MAX_PLAIN: usize = 1 << 14;
/// The largest protected record body the peer may send (plaintext, its
/// content type and padding, and the tag).
const MAX_BODY: usize = MAX_PLAIN + 256;
const NONCE_LEN: usize = 12;

const APPLICATION_DATA: u8 = 0x17;
const ALERT: u8 = 0x15;
const HANDSHAKE: u8 = 0x16;
const KEY_UPDATE: u8 = 24;

/// Alert descriptions we send.
pub const ALERT_CLOSE_NOTIFY: u8 = 0;
const ALERT_UNEXPECTED_MESSAGE: u8 = 10;
const ALERT_BAD_RECORD_MAC: u8 = 20;
const ALERT_RECORD_OVERFLOW: u8 = 22;
const ALERT_DECODE_ERROR: u8 = 50;
const ALERT_INTERNAL_ERROR: u8 = 80;

/// Records sealed under one key before we move to the next (a KeyUpdate),
/// well inside every suite's confidentiality limit.
const REKEY_MARGIN: u64 = 1 << 16;
/// KeyUpdates, or empty application-data records, the peer may send in a
/// row without data between them: each costs us work (a key derivation,
/// a decryption) and yields nothing, so a flood of them is refused.
pub const MAX_IDLE_RECORDS: u32 = 32;

/// Why the records cannot go on; the alert to send says the same (none
/// when the peer ended it with an alert of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub alert: Option<u8>,
    pub what: &'static str,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }
}

fn error(alert: u8, what: &'static str) -> RecordError {
    RecordError {
        alert: Some(alert),
        what,
    }
}

/// One direction's key, the IV its nonces come from, and its sequence.
/// The key is kept as rustls handed it (a few dozen bytes, wiped when
/// dropped) and expanded for the AEAD only while in use: an expanded key
/// is over 600 bytes, and an idle connection need not hold one for the
/// direction it rarely uses.
struct Direction {
    secrets: ConnectionTrafficSecrets,
    key: Option<LessSafeKey>,
    iv: [u8; NONCE_LEN],
    seq: u64,
}

impl Direction {
    fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> Result<Direction, RecordError> {
        let iv = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { iv, .. }
            | ConnectionTrafficSecrets::Aes256Gcm { iv, .. }
            | ConnectionTrafficSecrets::Chacha20Poly1305 { iv, .. } => iv.as_ref(),
            _ => {
                return Err(error(
                    ALERT_INTERNAL_ERROR,
                    "a cipher suite chatd does not seal",
                ));
            }
        };
        let iv: [u8; NONCE_LEN] = iv
            .try_into()
            .map_err(|_| error(ALERT_INTERNAL_ERROR, "unusable traffic IV"))?;
        Ok(Direction {
            secrets,
            key: None,
            iv,
            seq,
        })
    }

    /// The expanded key, made now if it is not held.
    fn key(&mut self) -> Result<&LessSafeKey, RecordError> {
        if self.key.is_none() {
            let (alg, key) = match &self.secrets {
                ConnectionTrafficSecrets::Aes128Gcm { key, .. } => (&aead::AES_128_GCM, key),
                ConnectionTrafficSecrets::Aes256Gcm { key, .. } => (&aead::AES_256_GCM, key),
                ConnectionTrafficSecrets::Chacha20Poly1305 { key, .. } => {
                    (&aead::CHACHA20_POLY1305, key)
                }
                _ => {
                    return Err(error(
                        ALERT_INTERNAL_ERROR,
                        "a cipher suite chatd does not seal",
                    ));
                }
            };
            let key = UnboundKey::new(alg, key.as_ref())
                .map_err(|_| error(ALERT_INTERNAL_ERROR, "unusable traffic key"))?;
            self.key = Some(LessSafeKey::new(key));
        }
        match &self.key {
            Some(key) => Ok(key),
            None => Err(error(ALERT_INTERNAL_ERROR, "no traffic key")),
        }
    }

    /// The per-record nonce: the IV with the sequence number XORed into
    /// its last eight bytes. Each sequence number is used once.
    fn next_nonce(&mut self) -> Nonce {
        let mut nonce = self.iv;
        for (n, s) in nonce[NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *n ^= s;
        }
        self.seq += 1;
        Nonce::assume_unique_for_key(nonce)
    }
}

/// What opening records brought besides plaintext.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// Bytes of the buffer used (whole records); the rest is a partial one.
    pub used: usize,
    /// The peer sent close_notify.
    pub peer_closed: bool,
}

/// The record layer of one TLS 1.3 connection after its handshake.
pub struct Records {
    kernel: KernelConnection<ServerConnectionData>,
    tx: Direction,
    rx: Direction,
    /// Sealed records after which we change keys.
    rekey_at: u64,
    peer_closed: bool,
    /// KeyUpdates and empty records from the peer since its last data.
    idle_records: u32,
    /// The peer asked for a KeyUpdate: ours goes before our next record.
    owe_key_update: bool,
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Records(tx {}, rx {})", self.tx.seq, self.rx.seq)
    }
}

impl Records {
    pub fn new(
        secrets: ExtractedSecrets,
        kernel: KernelConnection<ServerConnectionData>,
    ) -> Result<Records, RecordError> {
        let limit = kernel
            .negotiated_cipher_suite()
            .tls13()
            .map(|s| s.common.confidentiality_limit)
            .ok_or(error(ALERT_INTERNAL_ERROR, "not a TLS 1.3 suite"))?;
        let (tx_seq, tx) = secrets.tx;
        let (rx_seq, rx) = secrets.rx;
        Ok(Records {
            kernel,
            tx: Direction::new(tx_seq, tx)?,
            rx: Direction::new(rx_seq, rx)?,
            rekey_at: limit.saturating_sub(REKEY_MARGIN).max(1),
            peer_closed: false,
            idle_records: 0,
            owe_key_update: false,
        })
    }

    /// Seals `parts`, in order, as application data appended to `out`:
    /// one record per 16 KiB of their total, so what a connection is owed
    /// in a turn (its own bytes and its share of the broadcasts) goes out
    /// as one record, not one per part.
    pub fn seal(&mut self, parts: &[&[u8]], out: &mut Vec<u8>) -> Result<(), RecordError> {
        let mut left: usize = parts.iter().map(|p| p.len()).sum();
        out.reserve(left + (left / MAX_PLAIN + 1) * RECORD_OVERHEAD);
        let mut parts = parts.iter().copied();
        let mut current: &[u8] = &[];
        while left > 0 {
            if self.owe_key_update || self.tx.seq >= self.rekey_at {
                self.update_tx(out)?;
            }
            let len = left.min(MAX_PLAIN);
            self.seal_record(APPLICATION_DATA, len, out, |out| {
                let mut need = len;
                while need > 0 {
                    while current.is_empty() {
                        // `left` was summed from these parts, so one is
                        // there; if not, stop (the length check refuses the
                        // record) rather than spin.
                        match parts.next() {
                            Some(part) => current = part,
                            None => return,
                        }
                    }
                    let take = need.min(current.len());
                    out.extend_from_slice(&current[..take]);
                    current = &current[take..];
                    need -= take;
                }
            })?;
            left -= len;
        }
        Ok(())
    }

    /// Seals an alert (close_notify, or the reason we end the connection).
    pub fn seal_alert(&mut self, description: u8, out: &mut Vec<u8>) -> Result<(), RecordError> {
        let level = if description == ALERT_CLOSE_NOTIFY {
            1
        } else {
            2
        };
        self.seal_record(ALERT, 2, out, |out| {
            out.extend_from_slice(&[level, description])
        })
    }

    /// Appends one record of content `kind` whose `len` plaintext bytes
    /// `fill` appends, sealed in place.
    fn seal_record(
        &mut self,
        kind: u8,
        len: usize,
        out: &mut Vec<u8>,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), RecordError> {
        let body = u16::try_from(len + 1 + TAG)
            .map_err(|_| error(ALERT_INTERNAL_ERROR, "record too long"))?;
        let [hi, lo] = body.to_be_bytes();
        let header = [APPLICATION_DATA, 0x03, 0x03, hi, lo];
        let start = out.len();
        out.extend_from_slice(&header);
        fill(out);
        if out.len() != start + HEADER + len {
            out.truncate(start);
            return Err(error(ALERT_INTERNAL_ERROR, "a record's length changed"));
        }
        out.push(kind);
        let nonce = self.tx.next_nonce();
        let tag = self
            .tx
            .key()?
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[start + HEADER..])
            .map_err(|_| error(ALERT_INTERNAL_ERROR, "sealing failed"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Sends a KeyUpdate under the current key, then moves to the next.
    fn update_tx(&mut self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        self.owe_key_update = false;
        // KeyUpdate, 1 byte long: update_not_requested.
        self.seal_record(HANDSHAKE, 5, out, |out| {
            out.extend_from_slice(&[KEY_UPDATE, 0, 0, 1, 0])
        })?;
        let (seq, secrets) = self
            .kernel
            .update_tx_secret()
            .map_err(|_| error(ALERT_INTERNAL_ERROR, "no next sending key"))?;
        self.tx = Direction::new(seq, secrets)?;
        Ok(())
    }

    /// Opens the whole records at the front of `buf` in place; plaintext
    /// goes to `plain`. Stops at a partial record. The receiving key is
    /// expanded for the batch and let go after it: a client sends far less
    /// often than it is sent to. Nothing is sent from here: a KeyUpdate
    /// the peer asks for goes before our next record.
    pub fn open(
        &mut self,
        buf: &mut [u8],
        plain: &mut impl FnMut(&[u8]),
    ) -> Result<Opened, RecordError> {
        let opened = self.open_records(buf, plain);
        self.rx.key = None;
        opened
    }

    fn open_records(
        &mut self,
        buf: &mut [u8],
        plain: &mut impl FnMut(&[u8]),
    ) -> Result<Opened, RecordError> {
        let mut opened = Opened::default();
        loop {
            let rest = &mut buf[opened.used..];
            let Some(header) = rest.get(..HEADER) else {
                return Ok(opened);
            };
            let header: [u8; HEADER] = [header[0], header[1], header[2], header[3], header[4]];
            if header[0] != APPLICATION_DATA {
                return Err(error(
                    ALERT_UNEXPECTED_MESSAGE,
                    "an unprotected record after the handshake",
                ));
            }
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if len > MAX_BODY {
                return Err(error(ALERT_RECORD_OVERFLOW, "a record over the size limit"));
            }
            if len < TAG + 1 {
                return Err(error(
                    ALERT_DECODE_ERROR,
                    "a record too short to be protected",
                ));
            }
            let Some(body) = rest.get_mut(HEADER..HEADER + len) else {
                return Ok(opened);
            };
            let nonce = self.rx.next_nonce();
            let inner = self
                .rx
                .key()?
                .open_in_place(nonce, Aad::from(header), body)
                .map_err(|_| error(ALERT_BAD_RECORD_MAC, "a record that does not decrypt"))?;
            // Content, type and padding together stay within a record's
            // plaintext limit (RFC 8446 section 5.4).
            if inner.len() > MAX_PLAIN + 1 {
                return Err(error(ALERT_RECORD_OVERFLOW, "a record over the size limit"));
            }
            // The content type is the last non-zero byte; zeros after it
            // are padding.
            let Some(end) = inner.iter().rposition(|&b| b != 0) else {
                return Err(error(
                    ALERT_UNEXPECTED_MESSAGE,
                    "a record without a content type",
                ));
            };
            let (data, kind) = (&inner[..end], inner[end]);
            match kind {
                APPLICATION_DATA if self.peer_closed => {
                    return Err(error(ALERT_UNEXPECTED_MESSAGE, "data after close_notify"));
                }
                APPLICATION_DATA if data.is_empty() => self.idle_record()?,
                APPLICATION_DATA => {
                    self.idle_records = 0;
                    plain(data)
                }
                ALERT => match data {
                    [_, ALERT_CLOSE_NOTIFY] => {
                        self.peer_closed = true;
                        opened.peer_closed = true;
                    }
                    // A fatal alert ends the connection at once, with
                    // nothing sent back (RFC 8446 section 6.2).
                    [_, _] => {
                        return Err(RecordError {
                            alert: None,
                            what: "the peer sent an alert",
                        });
                    }
                    _ => return Err(error(ALERT_DECODE_ERROR, "a malformed alert")),
                },
                HANDSHAKE => self.handshake(data)?,
                _ => return Err(error(ALERT_UNEXPECTED_MESSAGE, "an unexpected record type")),
            }
            opened.used += HEADER + len;
        }
    }

    /// Handshake messages after the handshake: a client may only send
    /// KeyUpdate. Each must fill its record exactly (a key change may not
    /// fall inside a record).
    fn handshake(&mut self, data: &[u8]) -> Result<(), RecordError> {
        match data {
            [KEY_UPDATE, 0, 0, 1, request @ (0 | 1)] => {
                self.idle_record()?;
                let (seq, secrets) = self
                    .kernel
                    .update_rx_secret()
                    .map_err(|_| error(ALERT_INTERNAL_ERROR, "no next receiving key"))?;
                self.rx = Direction::new(seq, secrets)?;
                // Answered before our next record, once however often it
                // was asked (RFC 8446 section 4.6.3 allows that): a peer
                // that asks and never reads makes nothing pile up.
                self.owe_key_update |= *request == 1;
                Ok(())
            }
            [KEY_UPDATE, ..] => Err(error(ALERT_DECODE_ERROR, "a malformed KeyUpdate")),
            _ => Err(error(
                ALERT_UNEXPECTED_MESSAGE,
                "a handshake message after the handshake",
            )),
        }
    }

    /// One more record that carried no data.
    fn idle_record(&mut self) -> Result<(), RecordError> {
        self.idle_records += 1;
        if self.idle_records > MAX_IDLE_RECORDS {
            return Err(error(
                ALERT_UNEXPECTED_MESSAGE,
                "too many records without data in a row",
            ));
        }
        Ok(())
    }

    /// Records sealed under the current sending key, for tests.
    #[cfg(test)]
    pub fn sealed(&self) -> u64 {
        self.tx.seq
    }

    /// Changes keys after `n` more records instead of near the suite's
    /// limit, so tests can see it happen.
    #[cfg(test)]
    pub fn rekey_after(&mut self, n: u64) {
        self.rekey_at = self.tx.seq + n;
    }
}
