//! The line editor: keys from a raw terminal in, an edited line and its
//! history out. Decodes the bytes a terminal sends for keys, and edits by
//! grapheme cluster (never by byte or by `char`: an accent typed after its
//! letter, a flag, an emoji family are each one unit). Knows nothing of
//! the screen or the socket.

use std::collections::{HashMap, VecDeque};

use unicode_segmentation::{GraphemeCursor, UnicodeSegmentation};

/// Most bytes one input line may hold. A paste past it is cut here; the
/// server's own limit (`--max-line`, 4096 by default) is usually lower and
/// answers with an error.
pub const MAX_INPUT_BYTES: usize = 64 * 1024;
/// Lines kept for Up/Down.
pub const MAX_HISTORY: usize = 500;
/// Longest escape sequence the decoder waits for; anything longer is noise.
const MAX_ESCAPE: usize = 32;

/// One key press, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Backspace,
    Delete,
    Left,
    Right,
    Home,
    End,
    Up,
    Down,
    WordLeft,
    WordRight,
    /// Ctrl-U: delete from the start of the line to the cursor.
    KillToStart,
    /// Ctrl-K: delete from the cursor to the end of the line.
    KillToEnd,
    /// Ctrl-W: delete the word before the cursor.
    KillWord,
    /// Ctrl-C.
    Interrupt,
    /// Ctrl-D.
    Eof,
}

/// Turns terminal input bytes into keys. Keeps an incomplete UTF-8
/// character or escape sequence until the rest arrives.
#[derive(Debug, Default)]
pub struct KeyDecoder {
    pending: Vec<u8>,
}

impl KeyDecoder {
    pub fn new() -> KeyDecoder {
        KeyDecoder::default()
    }

    /// Decodes `input`, appending the keys to `keys`.
    pub fn feed(&mut self, input: &[u8], keys: &mut Vec<Key>) {
        self.pending.extend_from_slice(input);
        let mut at = 0;
        while at < self.pending.len() {
            match decode_one(&self.pending[at..]) {
                Decoded::Key(key, used) => {
                    keys.push(key);
                    at += used;
                }
                Decoded::Skip(used) => at += used,
                Decoded::Incomplete => break,
            }
        }
        self.pending.drain(..at);
        if self.pending == [0x1b] {
            // A terminal sends a whole escape sequence in one write: an ESC
            // that ends a read is the Escape key alone, which does nothing.
            // Kept, it would swallow the next key typed (`b` as Alt-b).
            self.pending.clear();
        }
    }
}

enum Decoded {
    Key(Key, usize),
    /// Bytes that mean nothing to the editor.
    Skip(usize),
    Incomplete,
}

fn decode_one(b: &[u8]) -> Decoded {
    use Decoded::{Incomplete, Key as K, Skip};
    let key = match b[0] {
        0x1b => return decode_escape(b),
        b'\r' | b'\n' => Key::Enter,
        0x7f | 0x08 => Key::Backspace,
        0x01 => Key::Home,
        0x05 => Key::End,
        0x02 => Key::Left,
        0x06 => Key::Right,
        0x10 => Key::Up,
        0x0e => Key::Down,
        0x15 => Key::KillToStart,
        0x0b => Key::KillToEnd,
        0x17 => Key::KillWord,
        0x03 => Key::Interrupt,
        0x04 => Key::Eof,
        c if c < 0x20 => return Skip(1),
        c if c < 0x80 => Key::Char(char::from(c)),
        lead => {
            let len = match lead {
                0xc2..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf4 => 4,
                _ => return Skip(1),
            };
            if b.len() < len {
                // A continuation byte where a lead is due means garbage.
                return if b[1..].iter().all(|&c| c & 0xc0 == 0x80) {
                    Incomplete
                } else {
                    Skip(1)
                };
            }
            return match std::str::from_utf8(&b[..len]) {
                Ok(s) => match s.chars().next() {
                    Some(c) if !c.is_control() => K(Key::Char(c), len),
                    _ => Skip(len),
                },
                Err(_) => Skip(1),
            };
        }
    };
    K(key, 1)
}

/// `ESC [ params final` (CSI), `ESC O final` (SS3), or Alt with a key.
fn decode_escape(b: &[u8]) -> Decoded {
    use Decoded::{Incomplete, Key as K, Skip};
    let Some(&second) = b.get(1) else {
        return Incomplete;
    };
    match second {
        b'[' => {
            let body = &b[2..];
            let Some(end) = body.iter().position(|c| (0x40..=0x7e).contains(c)) else {
                return if b.len() > MAX_ESCAPE {
                    Skip(b.len())
                } else {
                    Incomplete
                };
            };
            let used = 2 + end + 1;
            let params = &body[..end];
            // `1;5C` is Ctrl-Right: the second number is the modifier.
            let mut nums = params.split(|&c| c == b';');
            let first = nums.next().unwrap_or_default();
            let modified = nums.next().is_some_and(|m| m != b"1" && !m.is_empty());
            let key = match (body[end], first) {
                (b'A', _) => Key::Up,
                (b'B', _) => Key::Down,
                (b'C', _) if modified => Key::WordRight,
                (b'D', _) if modified => Key::WordLeft,
                (b'C', _) => Key::Right,
                (b'D', _) => Key::Left,
                (b'H', _) => Key::Home,
                (b'F', _) => Key::End,
                (b'~', b"1" | b"7") => Key::Home,
                (b'~', b"4" | b"8") => Key::End,
                (b'~', b"3") => Key::Delete,
                _ => return Skip(used),
            };
            K(key, used)
        }
        b'O' => {
            let Some(&third) = b.get(2) else {
                return Incomplete;
            };
            let key = match third {
                b'A' => Key::Up,
                b'B' => Key::Down,
                b'C' => Key::Right,
                b'D' => Key::Left,
                b'H' => Key::Home,
                b'F' => Key::End,
                _ => return Skip(3),
            };
            K(key, 3)
        }
        b'b' => K(Key::WordLeft, 2),
        b'f' => K(Key::WordRight, 2),
        0x7f => K(Key::KillWord, 2),
        // ESC then ESC: the first was the Escape key alone.
        0x1b => Skip(1),
        // Alt with anything else, or Escape then a key: keep the key.
        _ => Skip(1),
    }
}

/// What a key did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing changed on screen.
    Unchanged,
    /// The line or the cursor changed: redraw.
    Changed,
    /// Enter: the line, now cleared from the editor.
    Submit(String),
    /// Ctrl-C, or Ctrl-D on an empty line.
    Quit,
}

/// The line being typed, the cursor in it, and history. The line is
/// edited by grapheme cluster (what a reader takes for one character: `e`
/// with a combining accent, a flag, an emoji joined with ZWJ), so the
/// cursor always stands between two clusters, never inside one.
#[derive(Debug, Default)]
pub struct Editor {
    line: String,
    /// A byte offset into `line`, on a cluster boundary.
    cursor: usize,
    history: VecDeque<String>,
    /// The history entry shown while browsing with Up/Down; `None` for the
    /// line being typed before browsing began.
    browsing: Option<usize>,
    /// That line, put aside while a history entry is shown.
    fresh: String,
    /// Edits to recalled history entries, by index, kept while browsing
    /// (as readline does) until a line is submitted.
    drafts: HashMap<usize, String>,
    /// Hide the whole line (a password is being typed).
    secret: bool,
}

impl Editor {
    pub fn new() -> Editor {
        Editor::default()
    }

    pub fn text(&self) -> &str {
        &self.line
    }

    /// The line's grapheme clusters, each with its byte offset: the units
    /// the cursor moves by and the screen lays out.
    pub fn clusters(&self) -> impl Iterator<Item = (usize, &str)> {
        self.line.grapheme_indices(true)
    }

    /// The cursor, as a byte offset into `text()` (a cluster boundary).
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    pub fn set_secret(&mut self, secret: bool) {
        self.secret = secret;
    }

    /// Where the hidden part of the line starts (a byte offset), if any:
    /// all of it for a password, the arguments of `/register` and
    /// `/passwd`.
    pub fn hidden_from(&self) -> Option<usize> {
        if self.secret {
            return Some(0);
        }
        let mut at = super::session::secret_args_at(&self.line)?.min(self.line.len());
        // After a space wider than one byte (U+3000), `at` is inside it.
        while !self.line.is_char_boundary(at) {
            at += 1;
        }
        Some(at)
    }

    /// Adds a sent line to history (the caller leaves secrets out). While
    /// history is browsed or an entry has a draft, none is dropped, so
    /// that the entries keep their places; the oldest go at the next line
    /// after that.
    pub fn remember(&mut self, line: &str) {
        if line.trim().is_empty() || self.history.back().is_some_and(|l| l == line) {
            return;
        }
        self.history.push_back(line.to_string());
        let in_use = self.browsing.is_some() || !self.drafts.is_empty();
        while !in_use && self.history.len() > MAX_HISTORY {
            self.history.pop_front();
        }
    }

    pub fn handle(&mut self, key: Key) -> Outcome {
        let before = (self.cursor, self.line.len());
        match key {
            Key::Char(c) => {
                if self.line.len() + c.len_utf8() > MAX_INPUT_BYTES {
                    return Outcome::Unchanged;
                }
                self.line.insert(self.cursor, c);
                // `c` may join the cluster after it (an `e` before a lone
                // accent): the cursor goes past the whole of it.
                self.cursor = self.boundary_at_or_after(self.cursor + c.len_utf8());
                return Outcome::Changed;
            }
            Key::Enter => {
                let line = std::mem::take(&mut self.line);
                self.cursor = 0;
                // The recalled entries are as they were; the line sent
                // goes to history as typed (by the caller).
                self.browsing = None;
                self.fresh.clear();
                self.drafts.clear();
                return Outcome::Submit(line);
            }
            Key::Backspace if self.cursor > 0 => {
                let start = self.prev(self.cursor);
                self.remove(start..self.cursor);
            }
            Key::Delete if self.cursor < self.line.len() => {
                let end = self.next(self.cursor);
                self.remove(self.cursor..end);
            }
            Key::Left => self.cursor = self.prev(self.cursor),
            Key::Right => self.cursor = self.next(self.cursor),
            Key::Home => self.cursor = 0,
            Key::End => self.cursor = self.line.len(),
            Key::WordLeft => self.cursor = self.word_start(),
            Key::WordRight => {
                let mut i = self.cursor;
                while i < self.line.len() && self.space_at(i) {
                    i = self.next(i);
                }
                while i < self.line.len() && !self.space_at(i) {
                    i = self.next(i);
                }
                self.cursor = i;
            }
            Key::KillToStart => self.remove(0..self.cursor),
            Key::KillToEnd => self.remove(self.cursor..self.line.len()),
            Key::KillWord => {
                let start = self.word_start();
                self.remove(start..self.cursor);
            }
            Key::Up => return self.browse_up(),
            Key::Down => return self.browse_down(),
            Key::Interrupt => return Outcome::Quit,
            Key::Eof if self.line.is_empty() => return Outcome::Quit,
            Key::Eof => return self.handle(Key::Delete),
            Key::Backspace | Key::Delete => {}
        }
        if (self.cursor, self.line.len()) == before {
            Outcome::Unchanged
        } else {
            Outcome::Changed
        }
    }

    /// The cluster boundary before `at` (0 at the start).
    fn prev(&self, at: usize) -> usize {
        GraphemeCursor::new(at, self.line.len(), true)
            .prev_boundary(&self.line, 0)
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// The cluster boundary after `at` (the end at the end).
    fn next(&self, at: usize) -> usize {
        GraphemeCursor::new(at, self.line.len(), true)
            .next_boundary(&self.line, 0)
            .ok()
            .flatten()
            .unwrap_or(self.line.len())
    }

    fn is_boundary(&self, at: usize) -> bool {
        GraphemeCursor::new(at, self.line.len(), true)
            .is_boundary(&self.line, 0)
            .unwrap_or(true)
    }

    fn boundary_at_or_after(&self, at: usize) -> usize {
        if self.is_boundary(at) {
            at
        } else {
            self.next(at)
        }
    }

    /// Whether the cluster starting at `at` is white space.
    fn space_at(&self, at: usize) -> bool {
        self.line[at..].starts_with(char::is_whitespace)
    }

    fn word_start(&self) -> usize {
        let mut i = self.cursor;
        while i > 0 && self.space_at(self.prev(i)) {
            i = self.prev(i);
        }
        while i > 0 && !self.space_at(self.prev(i)) {
            i = self.prev(i);
        }
        i
    }

    /// Removes `range` (whole clusters) and leaves the cursor where it
    /// was. What is left may join across the gap (a letter, then an accent
    /// that followed a removed zero-width space): the cursor then goes to
    /// the start of the joined cluster.
    fn remove(&mut self, range: std::ops::Range<usize>) {
        self.line.replace_range(range.clone(), "");
        self.cursor = range.start;
        if !self.is_boundary(self.cursor) {
            self.cursor = self.prev(self.cursor);
        }
    }

    fn set_line(&mut self, line: String) {
        self.cursor = line.len();
        self.line = line;
    }

    /// Puts the line shown aside before another is shown: the new line,
    /// or an edit of the history entry shown.
    fn put_aside(&mut self) {
        let line = std::mem::take(&mut self.line);
        match self.browsing {
            None => self.fresh = line,
            Some(i) if self.history.get(i) == Some(&line) => {
                self.drafts.remove(&i);
            }
            Some(i) => {
                self.drafts.insert(i, line);
            }
        }
    }

    /// Shows history entry `i` (its draft if it was edited), or the new
    /// line.
    fn recall(&mut self, to: Option<usize>) {
        self.put_aside();
        let line = match to {
            None => std::mem::take(&mut self.fresh),
            Some(i) => match self.drafts.get(&i) {
                Some(draft) => draft.clone(),
                None => self.history[i].clone(),
            },
        };
        self.browsing = to;
        self.set_line(line);
    }

    fn browse_up(&mut self) -> Outcome {
        let to = match self.browsing {
            Some(0) => return Outcome::Unchanged,
            Some(i) => i - 1,
            None if self.history.is_empty() => return Outcome::Unchanged,
            None => self.history.len() - 1,
        };
        self.recall(Some(to));
        Outcome::Changed
    }

    fn browse_down(&mut self) -> Outcome {
        let Some(i) = self.browsing else {
            return Outcome::Unchanged;
        };
        let to = Some(i + 1).filter(|&to| to < self.history.len());
        self.recall(to);
        Outcome::Changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(bytes: &[u8]) -> Vec<Key> {
        let mut d = KeyDecoder::new();
        let mut out = Vec::new();
        d.feed(bytes, &mut out);
        out
    }

    fn typed(e: &mut Editor, s: &str) {
        for c in s.chars() {
            e.handle(Key::Char(c));
        }
    }

    #[test]
    fn decodes_keys_and_sequences() {
        use Key::*;
        assert_eq!(keys(b"a\r\x7f"), [Char('a'), Enter, Backspace]);
        assert_eq!(
            keys(b"\x1b[A\x1b[B\x1b[C\x1b[D\x1bOH\x1b[F"),
            [Up, Down, Right, Left, Home, End]
        );
        assert_eq!(keys(b"\x1b[1~\x1b[4~\x1b[3~"), [Home, End, Delete]);
        assert_eq!(
            keys(b"\x1b[1;5C\x1b[1;5D\x1bb"),
            [WordRight, WordLeft, WordLeft]
        );
        assert_eq!(
            keys(b"\x03\x04\x15\x0b\x17"),
            [Interrupt, Eof, KillToStart, KillToEnd, KillWord]
        );
        assert_eq!(
            keys("é世😀".as_bytes()),
            [Char('é'), Char('世'), Char('😀')]
        );
        // Unknown sequences, stray controls and bad bytes are dropped.
        assert_eq!(
            keys(b"\x1b[200~x\x1b[Zy\x07\xffz"),
            [Char('x'), Char('y'), Char('z')]
        );
        // Escape alone, then a key: the key is kept.
        assert_eq!(keys(b"\x1bx"), [Char('x')]);
    }

    #[test]
    fn split_sequences_wait_for_the_rest() {
        let mut d = KeyDecoder::new();
        let mut out = Vec::new();
        let mut feed = |bytes: &[u8]| d.feed(bytes, &mut out);
        feed(b"a\x1b[");
        for b in b"1;5C" {
            feed(std::slice::from_ref(b));
        }
        for b in "世".as_bytes() {
            feed(std::slice::from_ref(b));
        }
        assert_eq!(out, [Key::Char('a'), Key::WordRight, Key::Char('世')]);
    }

    #[test]
    fn escape_alone_at_the_end_of_a_read_is_the_escape_key() {
        let mut d = KeyDecoder::new();
        let mut out = Vec::new();
        d.feed(b"x\x1b", &mut out);
        d.feed(b"b", &mut out);
        d.feed(b"\x1b", &mut out);
        d.feed(b"[A", &mut out);
        assert_eq!(
            out,
            [
                Key::Char('x'),
                Key::Char('b'),
                Key::Char('['),
                Key::Char('A')
            ]
        );
    }

    #[test]
    fn edits_by_character() {
        let mut e = Editor::new();
        typed(&mut e, "héllo wörld");
        for _ in 0..5 {
            e.handle(Key::Left);
        }
        e.handle(Key::Backspace);
        typed(&mut e, "_");
        assert_eq!(e.text(), "héllo_wörld");
        e.handle(Key::Home);
        e.handle(Key::Delete);
        typed(&mut e, "H");
        e.handle(Key::End);
        typed(&mut e, "!");
        assert_eq!(e.text(), "Héllo_wörld!");
        e.handle(Key::WordLeft);
        assert_eq!(e.cursor(), 0);
        assert_eq!(e.handle(Key::Left), Outcome::Unchanged);
        e.handle(Key::End);
        e.handle(Key::KillWord);
        assert_eq!(e.text(), "");
        typed(&mut e, "a b c");
        e.handle(Key::Left);
        e.handle(Key::KillToStart);
        assert_eq!((e.text(), e.cursor()), ("c", 0));
        e.handle(Key::KillToEnd);
        assert_eq!(e.text(), "");
    }

    #[test]
    fn a_letter_and_its_combining_accent_are_one_unit() {
        let mut e = Editor::new();
        typed(&mut e, "cafe\u{301}!");
        e.handle(Key::Left);
        e.handle(Key::Left);
        assert_eq!(e.cursor(), 3, "one Left crosses `!`, one crosses `é`");
        e.handle(Key::End);
        e.handle(Key::Left);
        // Backspace takes the accent with its letter: no stray `caf́!`.
        e.handle(Key::Backspace);
        assert_eq!((e.text(), e.cursor()), ("caf!", 3));
        // An accent typed after its letter, then Delete before them both.
        e.handle(Key::Home);
        e.handle(Key::Right);
        typed(&mut e, "a\u{300}");
        assert_eq!(e.text(), "ca\u{300}af!");
        e.handle(Key::Left);
        assert_eq!(e.cursor(), 1);
        e.handle(Key::Delete);
        assert_eq!((e.text(), e.cursor()), ("caf!", 1));
    }

    #[test]
    fn a_letter_typed_before_a_lone_accent_takes_it() {
        let mut e = Editor::new();
        typed(&mut e, "\u{301}x");
        e.handle(Key::Home);
        assert_eq!(e.handle(Key::Right), Outcome::Changed);
        assert_eq!(e.cursor(), 2, "a lone accent is a unit of its own");
        e.handle(Key::Home);
        typed(&mut e, "e");
        // The cursor goes past the cluster `e` now starts, never inside.
        assert_eq!((e.text(), e.cursor()), ("e\u{301}x", 3));
        // Backspace that leaves a letter and an accent side by side: they
        // join, and the cursor stands before them.
        let mut e = Editor::new();
        typed(&mut e, "e\u{200b}\u{301}");
        e.handle(Key::Left);
        e.handle(Key::Backspace);
        assert_eq!((e.text(), e.cursor()), ("e\u{301}", 0));
    }

    #[test]
    fn emoji_sequences_are_one_unit() {
        const FLAG: &str = "\u{1f1eb}\u{1f1f7}";
        const FAMILY: &str = "\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}";
        const HEART: &str = "\u{2764}\u{fe0f}";
        for emoji in [FLAG, FAMILY, HEART, "\u{1f44d}\u{1f3fd}"] {
            let mut e = Editor::new();
            typed(&mut e, &format!("a{emoji}b"));
            e.handle(Key::Left);
            e.handle(Key::Left);
            assert_eq!(e.cursor(), 1, "{emoji:?}");
            let clusters: Vec<_> = e.clusters().collect();
            assert_eq!(clusters, [(0, "a"), (1, emoji), (1 + emoji.len(), "b")]);
            e.handle(Key::Delete);
            assert_eq!(e.text(), "ab", "{emoji:?}");
            e.handle(Key::End);
            e.handle(Key::Left);
            typed(&mut e, emoji);
            e.handle(Key::Backspace);
            assert_eq!(e.text(), "ab", "{emoji:?}");
        }
        // Two flags: the regional indicators pair up from the start.
        let mut e = Editor::new();
        typed(&mut e, &format!("{FLAG}{FLAG}"));
        e.handle(Key::Left);
        assert_eq!(e.cursor(), FLAG.len());
        e.handle(Key::KillToEnd);
        assert_eq!(e.text(), FLAG);
        // Ctrl-U and Ctrl-W take whole clusters too.
        typed(&mut e, &format!(" x{FAMILY}y"));
        e.handle(Key::Left);
        e.handle(Key::Left);
        e.handle(Key::KillWord);
        assert_eq!(e.text(), format!("{FLAG} {FAMILY}y"));
        e.handle(Key::Right);
        e.handle(Key::KillToStart);
        assert_eq!((e.text(), e.cursor()), ("y", 0));
    }

    #[test]
    fn enter_submits_and_ctrl_d_quits_only_when_empty() {
        let mut e = Editor::new();
        typed(&mut e, "ab");
        e.handle(Key::Home);
        assert_eq!(e.handle(Key::Eof), Outcome::Changed);
        assert_eq!(e.handle(Key::Enter), Outcome::Submit("b".into()));
        assert_eq!((e.text(), e.cursor()), ("", 0));
        assert_eq!(e.handle(Key::Eof), Outcome::Quit);
        assert_eq!(e.handle(Key::Interrupt), Outcome::Quit);
    }

    #[test]
    fn history_goes_up_and_back_down_to_the_draft() {
        let mut e = Editor::new();
        e.remember("one");
        e.remember("two");
        e.remember("two");
        typed(&mut e, "dra");
        e.handle(Key::Up);
        assert_eq!(e.text(), "two");
        e.handle(Key::Up);
        assert_eq!(e.text(), "one");
        assert_eq!(e.handle(Key::Up), Outcome::Unchanged);
        e.handle(Key::Down);
        assert_eq!(e.text(), "two");
        e.handle(Key::Down);
        assert_eq!(e.text(), "dra");
        assert_eq!(e.handle(Key::Down), Outcome::Unchanged);
    }

    #[test]
    fn edits_to_recalled_lines_are_kept_until_a_line_is_sent() {
        let mut e = Editor::new();
        e.remember("one");
        e.remember("two");
        typed(&mut e, "new");
        e.handle(Key::Up);
        e.handle(Key::Backspace);
        typed(&mut e, "in");
        assert_eq!(e.text(), "twin");
        e.handle(Key::Up);
        assert_eq!(e.text(), "one");
        typed(&mut e, "!");
        e.handle(Key::Down);
        assert_eq!(e.text(), "twin", "the edit was kept");
        e.handle(Key::Down);
        assert_eq!(e.text(), "new");
        e.handle(Key::Up);
        e.handle(Key::Up);
        assert_eq!(e.text(), "one!");
        // Undoing an edit by hand leaves the entry as it was.
        e.handle(Key::Backspace);
        e.handle(Key::Down);
        e.handle(Key::Up);
        assert_eq!(e.text(), "one");
        e.handle(Key::Down);
        // The line is sent as typed; the caller remembers it, and the
        // entries recalled are as they were again.
        assert_eq!(e.handle(Key::Enter), Outcome::Submit("twin".into()));
        e.remember("twin");
        for want in ["twin", "two", "one"] {
            e.handle(Key::Up);
            assert_eq!(e.text(), want);
        }
        e.handle(Key::Down);
        e.handle(Key::Down);
        e.handle(Key::Down);
        assert_eq!(e.text(), "", "the line typed before browsing was sent");
    }

    #[test]
    fn a_line_remembered_while_browsing_moves_no_draft() {
        let mut e = Editor::new();
        for i in 0..MAX_HISTORY {
            e.remember(&i.to_string());
        }
        e.handle(Key::Up);
        e.handle(Key::Up);
        typed(&mut e, "x");
        assert_eq!(e.text(), "498x");
        e.handle(Key::Down);
        // A held line whose turn came while browsing.
        e.remember("late");
        e.handle(Key::Up);
        assert_eq!(e.text(), "498x");
        e.handle(Key::Down);
        e.handle(Key::Down);
        assert_eq!(e.text(), "late");
        // Back at the new line, with a draft still kept.
        e.handle(Key::Down);
        e.remember("later");
        for want in ["later", "late", "499", "498x"] {
            e.handle(Key::Up);
            assert_eq!(e.text(), want);
        }
        e.handle(Key::Enter);
        e.remember("next");
        assert_eq!(e.history.len(), MAX_HISTORY);
        assert_eq!(e.history.back().map(String::as_str), Some("next"));
    }

    #[test]
    fn secrets_are_hidden_from_where_they_start() {
        let mut e = Editor::new();
        typed(&mut e, "/register");
        assert_eq!(e.hidden_from(), None);
        typed(&mut e, " hunter22");
        assert_eq!(e.hidden_from(), Some(10));
        e.handle(Key::Enter);
        e.set_secret(true);
        typed(&mut e, "x");
        assert_eq!(e.hidden_from(), Some(0));
        // After a space of more than one byte, from the next character.
        let mut e = Editor::new();
        typed(&mut e, "/passwd\u{3000}pw");
        assert_eq!(e.hidden_from(), Some(10));
    }

    #[test]
    fn input_is_capped() {
        let mut e = Editor::new();
        for _ in 0..MAX_INPUT_BYTES {
            e.handle(Key::Char('x'));
        }
        assert_eq!(e.handle(Key::Char('y')), Outcome::Unchanged);
        e.handle(Key::Backspace);
        assert_eq!(e.handle(Key::Char('é')), Outcome::Unchanged);
        assert_eq!(e.handle(Key::Char('y')), Outcome::Changed);
    }
}
