//! `LineBuf`: bytes in, complete lines out. Enforces the line-length cap
//! with a discard mode that never buffers an over-long line, and never
//! searches the same bytes twice. Knows nothing of sockets or UTF-8.

use memchr::memchr;

/// What `LineBuf::next_line` yields.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete line without its LF (and without the CR of a CRLF).
    Full(&'a [u8]),
    /// A line passed the cap. Yielded once per over-long line; the rest of
    /// it, up to its LF, is dropped as it arrives.
    TooLong,
}

/// Pending input of one connection. Holds no allocation while empty, so an
/// idle connection costs only the struct.
#[derive(Debug, Default)]
pub struct LineBuf {
    buf: Vec<u8>,
    /// Start of the bytes not yet handed out.
    start: usize,
    /// Bytes from `start` already searched for LF without finding one.
    scanned: usize,
    /// Inside an over-long line: drop input up to the next LF.
    discarding: bool,
}

impl LineBuf {
    /// Appends input. In discard mode the over-long line's bytes are
    /// dropped here, before they are stored.
    pub fn push(&mut self, mut data: &[u8]) {
        if self.discarding {
            match memchr(b'\n', data) {
                Some(i) => {
                    self.discarding = false;
                    data = &data[i + 1..];
                }
                None => return,
            }
        }
        if data.is_empty() {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete line, a `TooLong` marker, or `None` when more bytes
    /// are needed. `max` is the longest line allowed, terminator excluded.
    /// A buffer found fully drained is freed here, since a line handed out
    /// earlier may have borrowed it until now.
    pub fn next_line(&mut self, max: usize) -> Option<Line<'_>> {
        if self.start == self.buf.len() {
            if self.buf.capacity() > 0 {
                self.clear();
            }
            return None;
        }
        let pending = &self.buf[self.start..];
        if let Some(i) = memchr(b'\n', &pending[self.scanned..]) {
            let begin = self.start;
            let lf = begin + self.scanned + i;
            self.start = lf + 1;
            self.scanned = 0;
            let mut line = &self.buf[begin..lf];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            return Some(if line.len() > max {
                Line::TooLong
            } else {
                Line::Full(line)
            });
        }
        let (len, last) = (pending.len(), pending.last().copied());
        self.scanned = len;
        // One byte of slack: a CR that may be the start of a CRLF.
        let over = len > max + 1 || (len == max + 1 && last != Some(b'\r'));
        if !over {
            return None;
        }
        self.clear();
        self.discarding = true;
        Some(Line::TooLong)
    }

    /// The peer will send no more: what is left becomes a final line, read
    /// by `next_line` like any other. A discarded tail stays discarded.
    pub fn finish(&mut self) {
        if self.discarding {
            self.discarding = false;
        } else if self.start < self.buf.len() && self.buf.last() != Some(&b'\n') {
            self.buf.push(b'\n');
        }
    }

    /// Whether a complete line (or an over-long marker) may be waiting.
    /// Cheap: only says no when nothing at all is buffered.
    pub fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }

    /// The next complete line without handing it out (`next_line` then
    /// yields it), or `None` if no LF has come yet.
    pub fn peek_line(&mut self) -> Option<&[u8]> {
        if self.discarding {
            return None;
        }
        let pending = &self.buf[self.start..];
        let i = memchr(b'\n', &pending[self.scanned..])?;
        let line = &pending[..self.scanned + i];
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }

    /// The bytes not yet handed out (an unfinished line).
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Takes the bytes not yet handed out as lines (after a protocol
    /// switch, they belong to the next layer).
    pub fn take_pending(&mut self) -> Vec<u8> {
        let rest = if self.discarding {
            Vec::new()
        } else {
            self.buf[self.start..].to_vec()
        };
        self.clear();
        self.discarding = false;
        rest
    }

    /// Bytes held, for tests and memory accounting.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    fn clear(&mut self) {
        self.buf = Vec::new();
        self.start = 0;
        self.scanned = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` one at a time and collects every line as a string
    /// (`TooLong` shown as "<too long>").
    fn lines(max: usize, chunks: &[&[u8]]) -> (Vec<String>, LineBuf) {
        let mut buf = LineBuf::default();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.push(chunk);
            while let Some(line) = buf.next_line(max) {
                out.push(match line {
                    Line::Full(l) => String::from_utf8_lossy(l).into_owned(),
                    Line::TooLong => "<too long>".to_string(),
                });
            }
        }
        (out, buf)
    }

    #[test]
    fn several_lines_in_one_read_and_crlf() {
        let (out, buf) = lines(100, &[b"one\ntwo\r\nthree\n"]);
        assert_eq!(out, ["one", "two", "three"]);
        assert_eq!(buf.capacity(), 0, "a drained buffer holds no memory");
    }

    #[test]
    fn a_line_split_across_many_reads() {
        let text = b"hello there, this arrives one byte at a time\r\n";
        let chunks: Vec<&[u8]> = text.chunks(1).collect();
        let (out, _) = lines(100, &chunks);
        assert_eq!(out, ["hello there, this arrives one byte at a time"]);
    }

    #[test]
    fn empty_lines_and_lone_cr_are_lines() {
        let (out, _) = lines(10, &[b"\n\r\n\n"]);
        assert_eq!(out, ["", "", ""]);
    }

    #[test]
    fn exactly_max_is_allowed_with_or_without_cr() {
        let (out, _) = lines(5, &[b"12345\n", b"12345\r", b"\n", b"123456\n"]);
        assert_eq!(out, ["12345", "12345", "<too long>"]);
    }

    #[test]
    fn over_long_line_yields_one_error_when_the_limit_passes() {
        let mut buf = LineBuf::default();
        buf.push(b"123");
        assert_eq!(buf.next_line(5), None);
        buf.push(b"456");
        // Six bytes without LF: could still be 5 + CR? No: the 6th is '6'.
        assert_eq!(buf.next_line(5), Some(Line::TooLong));
        assert_eq!(buf.capacity(), 0, "the over-long line is not kept");
        buf.push(b"789");
        assert_eq!(buf.next_line(5), None, "one error per over-long line");
        buf.push(b"0\nok\n");
        assert_eq!(buf.next_line(5), Some(Line::Full(b"ok")));
        assert_eq!(buf.next_line(5), None);
    }

    #[test]
    fn a_ten_megabyte_line_is_never_buffered() {
        let mut buf = LineBuf::default();
        let chunk = vec![b'x'; 64 * 1024];
        let mut errors = 0;
        for _ in 0..160 {
            buf.push(&chunk);
            while let Some(line) = buf.next_line(4096) {
                assert_eq!(line, Line::TooLong);
                errors += 1;
            }
            assert!(buf.capacity() <= chunk.len(), "held {}", buf.capacity());
        }
        buf.push(b"tail\nnext line\n");
        assert_eq!(buf.next_line(4096), Some(Line::Full(b"next line")));
        assert_eq!(errors, 1);
    }

    #[test]
    fn invalid_utf8_passes_through_as_bytes() {
        let (out, _) = lines(10, &[b"\xff\xfe\n"]);
        assert_eq!(out, ["\u{fffd}\u{fffd}"]);
    }

    #[test]
    fn finish_turns_the_tail_into_a_last_line() {
        let mut buf = LineBuf::default();
        buf.push(b"a\nlast words");
        buf.finish();
        assert_eq!(buf.next_line(20), Some(Line::Full(b"a")));
        assert_eq!(buf.next_line(20), Some(Line::Full(b"last words")));
        assert_eq!(buf.next_line(20), None);
        buf.finish();
        assert_eq!(buf.next_line(20), None, "nothing left, no empty line");
        let mut discarding = LineBuf::default();
        discarding.push(b"far too long");
        assert_eq!(discarding.next_line(3), Some(Line::TooLong));
        discarding.push(b" still");
        discarding.finish();
        assert_eq!(discarding.next_line(3), None);
    }

    #[test]
    fn lines_left_for_later_stay_in_order() {
        // The server may stop taking lines (rate limit) and push more later.
        let mut buf = LineBuf::default();
        buf.push(b"1\n2\n3");
        assert_eq!(buf.next_line(9), Some(Line::Full(b"1")));
        buf.push(b"\n4\n");
        let rest: Vec<_> = std::iter::from_fn(|| match buf.next_line(9) {
            Some(Line::Full(l)) => Some(l.to_vec()),
            _ => None,
        })
        .collect();
        assert_eq!(rest, [b"2".to_vec(), b"3".to_vec(), b"4".to_vec()]);
    }
}
