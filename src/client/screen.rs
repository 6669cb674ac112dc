//! Drawing in a terminal: incoming lines scroll by above, the line being
//! typed stays below them, wrapped to the terminal's width by display
//! columns (wide characters take two). Produces bytes only; it never
//! touches a file descriptor, so it is tested against a terminal emulator.

use std::fmt::Write as _;

use unicode_width::UnicodeWidthChar;

use super::editor::Editor;
use super::session::{Kind, Shown};

/// Width used when the terminal does not say.
pub const DEFAULT_WIDTH: usize = 80;
/// Columns between tab stops.
const TAB_STOP: usize = 8;
/// Foreground colours for names, picked by a hash of the name. Red is left
/// out: it means an error.
const NAME_COLOURS: [u8; 10] = [32, 33, 34, 35, 36, 92, 93, 94, 95, 96];

/// How a run of characters looks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Style {
    pub bold: bool,
    pub dim: bool,
    pub fg: Option<u8>,
}

const PLAIN: Style = Style {
    bold: false,
    dim: false,
    fg: None,
};
const DIM: Style = Style { dim: true, ..PLAIN };
const BOLD: Style = Style {
    bold: true,
    ..PLAIN
};
const RED: Style = Style {
    fg: Some(31),
    ..PLAIN
};

/// A name's colour: the same for a name every time, whatever its case
/// (names are unique ignoring case).
pub fn name_style(name: &str) -> Style {
    // FNV-1a: stable across runs and builds, unlike the std hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b.to_ascii_lowercase())).wrapping_mul(0x0100_0193);
    }
    Style {
        fg: Some(NAME_COLOURS[h as usize % NAME_COLOURS.len()]),
        ..PLAIN
    }
}

/// The prompt before the input line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    pub text: String,
    pub style: Style,
}

/// The styled runs of a shown line: before the name, the name, after it.
fn runs(shown: &Shown) -> Vec<(Style, &str)> {
    let text = shown.text.as_str();
    let whole = |style| vec![(style, text)];
    let (before, name, after) = match shown.name.clone() {
        Some(r) if text.get(r.clone()).is_some() => {
            (&text[..r.start], &text[r.clone()], &text[r.end..])
        }
        _ => ("", "", text),
    };
    let named = name_style(name);
    match shown.kind {
        Kind::Notice | Kind::Local => whole(DIM),
        Kind::Error | Kind::LocalError => whole(RED),
        Kind::Plain => whole(PLAIN),
        Kind::Message | Kind::Own | Kind::OwnDirect => {
            vec![(PLAIN, before), (named, name), (PLAIN, after)]
        }
        Kind::History => vec![(DIM, before), (named, name), (PLAIN, after)],
        Kind::Direct => vec![
            (BOLD, before),
            (
                Style {
                    bold: true,
                    ..named
                },
                name,
            ),
            (BOLD, after),
        ],
    }
}

/// Writes styled characters, wrapping at the width itself (rows end in
/// CRLF) so that it always knows where the cursor is.
struct Pen<'a> {
    out: &'a mut Vec<u8>,
    width: usize,
    colour: bool,
    row: usize,
    col: usize,
    style: Style,
}

impl Pen<'_> {
    fn new(out: &mut Vec<u8>, width: usize, colour: bool) -> Pen<'_> {
        Pen {
            out,
            width: width.max(1),
            colour,
            row: 0,
            col: 0,
            style: PLAIN,
        }
    }

    fn set_style(&mut self, style: Style) {
        if !self.colour || style == self.style {
            return;
        }
        let mut sgr = String::from("\x1b[0");
        if style.bold {
            sgr.push_str(";1");
        }
        if style.dim {
            sgr.push_str(";2");
        }
        if let Some(fg) = style.fg {
            let _ = write!(sgr, ";{fg}");
        }
        sgr.push('m');
        self.out.extend_from_slice(sgr.as_bytes());
        self.style = style;
    }

    fn newline(&mut self) {
        // Attributes do not run on into the next row.
        let style = self.style;
        self.set_style(PLAIN);
        self.out.extend_from_slice(b"\r\n");
        self.row += 1;
        self.col = 0;
        self.set_style(style);
    }

    /// Columns `c` takes where the pen stands.
    fn columns(&self, c: char) -> usize {
        match c {
            '\t' => TAB_STOP - self.col % TAB_STOP,
            c => c.width().unwrap_or(0),
        }
    }

    /// Moves to the next row if `c` does not fit on this one.
    fn make_room(&mut self, c: char) {
        let w = if c == '\t' { 1 } else { self.columns(c) };
        if self.col > 0 && self.col + w > self.width {
            self.newline();
        }
    }

    fn put(&mut self, c: char, style: Style) {
        self.make_room(c);
        self.set_style(style);
        if c == '\t' {
            // A tab is drawn as spaces to the next stop, or the row's end.
            let n = self.columns(c).min(self.width - self.col);
            self.out.resize(self.out.len() + n, b' ');
            self.col += n;
        } else {
            let mut buf = [0; 4];
            self.out
                .extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            self.col += self.columns(c);
        }
    }
}

/// Where the input area is on screen after it was drawn.
#[derive(Clone, Copy, Debug)]
struct Drawn {
    /// Row of the cursor, counted from the area's first row.
    cursor_row: usize,
}

/// The terminal screen as the client uses it.
#[derive(Debug)]
pub struct Screen {
    width: usize,
    colour: bool,
    drawn: Option<Drawn>,
}

impl Screen {
    pub fn new(width: usize, colour: bool) -> Screen {
        Screen {
            width: width.max(1),
            colour,
            drawn: None,
        }
    }

    /// Erases the input area, leaving the cursor where the area began.
    fn erase_input(&mut self, out: &mut Vec<u8>) {
        if let Some(d) = self.drawn.take() {
            if d.cursor_row > 0 {
                let _ = write!(Sink(out), "\x1b[{}A", d.cursor_row);
            }
            out.extend_from_slice(b"\r\x1b[J");
        }
    }

    /// Shows `lines` above the input line, which is then drawn again.
    pub fn show(&mut self, out: &mut Vec<u8>, lines: &[Shown], editor: &Editor, prompt: &Prompt) {
        out.extend_from_slice(b"\x1b[?25l");
        self.erase_input(out);
        for shown in lines {
            let mut pen = Pen::new(out, self.width, self.colour);
            for (style, text) in runs(shown) {
                for c in text.chars() {
                    pen.put(c, style);
                }
            }
            pen.newline();
        }
        self.draw_input_here(out, editor, prompt);
    }

    /// Draws the input line again (after an edit, or a new prompt).
    pub fn redraw(&mut self, out: &mut Vec<u8>, editor: &Editor, prompt: &Prompt) {
        self.show(out, &[], editor, prompt);
    }

    /// The terminal is now `width` columns wide. A terminal that reflows
    /// has re-wrapped the input area already, so the cursor's row within
    /// it is recomputed at the new width before it is erased.
    pub fn resize(&mut self, out: &mut Vec<u8>, width: usize, editor: &Editor, prompt: &Prompt) {
        self.width = width.max(1);
        if self.drawn.is_some() {
            let mut scratch = Vec::new();
            let cursor_row = draw_input(&mut scratch, self.width, false, editor, prompt);
            self.drawn = Some(Drawn { cursor_row });
        }
        self.redraw(out, editor, prompt);
    }

    /// Clears the whole screen and its scrollback, then draws the input.
    pub fn clear(&mut self, out: &mut Vec<u8>, editor: &Editor, prompt: &Prompt) {
        out.extend_from_slice(b"\x1b[?25l\x1b[H\x1b[2J\x1b[3J");
        self.drawn = None;
        self.draw_input_here(out, editor, prompt);
    }

    /// Leaves the terminal as found: no input area, plain attributes, the
    /// cursor visible at the start of an empty row.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.erase_input(out);
        out.extend_from_slice(b"\x1b[0m\x1b[?25h");
    }

    fn draw_input_here(&mut self, out: &mut Vec<u8>, editor: &Editor, prompt: &Prompt) {
        let cursor_row = draw_input(out, self.width, self.colour, editor, prompt);
        self.drawn = Some(Drawn { cursor_row });
        out.extend_from_slice(b"\x1b[?25h");
    }
}

/// Draws the prompt and the visible part of the line from the cursor's
/// current position (the start of a row), then puts the cursor where the
/// editor's is. Returns the cursor's row within the area.
fn draw_input(
    out: &mut Vec<u8>,
    width: usize,
    colour: bool,
    editor: &Editor,
    prompt: &Prompt,
) -> usize {
    let mut pen = Pen::new(out, width, colour);
    for c in prompt.text.chars() {
        pen.put(c, prompt.style);
    }
    pen.set_style(PLAIN);
    let hidden = editor.hidden_from().unwrap_or(usize::MAX);
    let mut at = None;
    for (i, &c) in editor.chars().iter().enumerate().take(hidden) {
        if i == editor.cursor() {
            pen.make_room(c);
            at = Some((pen.row, pen.col));
        }
        pen.put(c, PLAIN);
    }
    let (row, col) = match at {
        Some(at) => at,
        None => {
            // The cursor is past the last visible character. On a full row
            // the terminal would hold it at the last column, so move to
            // the next row now.
            if pen.col >= pen.width {
                pen.newline();
            }
            (pen.row, pen.col)
        }
    };
    let up = pen.row - row;
    let out = pen.out;
    if up > 0 {
        let _ = write!(Sink(out), "\x1b[{up}A");
    }
    out.push(b'\r');
    if col > 0 {
        let _ = write!(Sink(out), "\x1b[{col}C");
    }
    row
}

/// `write!` into a byte vector.
struct Sink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::editor::Key;
    use crate::client::session::{Session, classify};

    const COLS: u16 = 20;
    const ROWS: u16 = 8;

    fn nz(n: u16) -> std::num::NonZeroU16 {
        std::num::NonZeroU16::new(n).expect("a size is not zero")
    }

    /// A screen drawn into an emulated terminal.
    struct Term {
        parser: vt100::Parser,
        screen: Screen,
        editor: Editor,
        prompt: Prompt,
    }

    impl Term {
        fn new(colour: bool) -> Term {
            let mut t = Term {
                parser: vt100::Parser::new(nz(ROWS), nz(COLS), 0),
                screen: Screen::new(COLS.into(), colour),
                editor: Editor::new(),
                prompt: Prompt {
                    text: "al> ".into(),
                    style: name_style("al"),
                },
            };
            t.redraw();
            t
        }

        fn feed(&mut self, out: Vec<u8>) {
            self.parser.process(&out);
        }

        fn redraw(&mut self) {
            let mut out = Vec::new();
            self.screen.redraw(&mut out, &self.editor, &self.prompt);
            self.feed(out);
        }

        fn show(&mut self, line: &str) {
            let mut out = Vec::new();
            let shown = classify(line.to_string());
            self.screen
                .show(&mut out, &[shown], &self.editor, &self.prompt);
            self.feed(out);
        }

        fn typed(&mut self, s: &str) {
            for c in s.chars() {
                self.editor.handle(Key::Char(c));
            }
            self.redraw();
        }

        fn key(&mut self, key: Key) {
            self.editor.handle(key);
            self.redraw();
        }

        fn rows(&self) -> Vec<String> {
            self.parser.screen().rows(0, COLS).collect()
        }

        /// The screen's non-blank rows.
        fn text(&self) -> Vec<String> {
            let mut rows: Vec<String> = self
                .rows()
                .iter()
                .map(|r| r.trim_end().to_string())
                .collect();
            while rows.last().is_some_and(|r| r.trim().is_empty()) {
                rows.pop();
            }
            rows
        }

        fn cursor(&self) -> (u16, u16) {
            self.parser.screen().cursor_position()
        }
    }

    #[test]
    fn incoming_lines_go_above_the_line_being_typed() {
        let mut t = Term::new(true);
        t.typed("hello wo");
        t.show("<bob> hi");
        t.show("* carol has joined #lobby");
        assert_eq!(
            t.text(),
            ["<bob> hi", "* carol has joined #", "lobby", "al> hello wo"]
        );
        assert_eq!(t.cursor(), (3, 12));
        t.typed("rld");
        assert_eq!(t.text()[3], "al> hello world");
    }

    #[test]
    fn long_lines_wrap_by_columns_and_wide_characters_never_split() {
        let mut t = Term::new(false);
        // 19 columns, then a wide character that would straddle the edge.
        t.show("<bob> 1234567890123世界");
        assert_eq!(t.text(), ["<bob> 1234567890123", "世界", "al>"]);
        // The input wraps too, and the cursor follows by column.
        t.typed("世界世界世界世界世界");
        assert_eq!(t.text()[2..], ["al> 世界世界世界世界", "世界"]);
        assert_eq!(t.cursor(), (3, 4));
        t.key(Key::Left);
        t.key(Key::Left);
        t.key(Key::Left);
        assert_eq!(t.cursor(), (2, 18));
        // A message arrives: the two-row input is moved down whole.
        t.show("<bob> x");
        assert_eq!(t.text()[2..], ["<bob> x", "al> 世界世界世界世界", "世界"]);
        assert_eq!(t.cursor(), (3, 18));
    }

    #[test]
    fn a_full_row_puts_the_cursor_on_the_next() {
        let mut t = Term::new(false);
        t.typed(&"x".repeat(16));
        assert_eq!(t.text(), ["al> xxxxxxxxxxxxxxxx"]);
        assert_eq!(t.cursor(), (1, 0));
        t.show("<bob> y");
        assert_eq!(t.text(), ["<bob> y", "al> xxxxxxxxxxxxxxxx"]);
        assert_eq!(t.cursor(), (2, 0));
        t.key(Key::Backspace);
        assert_eq!(t.text(), ["<bob> y", "al> xxxxxxxxxxxxxxx"]);
        assert_eq!(t.cursor(), (1, 19));
    }

    #[test]
    fn resizing_redraws_the_input_at_the_new_width() {
        let mut t = Term::new(false);
        t.typed("abcdefghijklmnopqrstuvwxyz");
        // vt100 does not reflow on resize; start a 10-column terminal
        // showing what a reflowing one shows after the resize: the same
        // text re-wrapped, the cursor after it.
        t.parser = vt100::Parser::new(nz(ROWS), nz(10), 0);
        t.feed(b"<bob> before\r\nal> abcdefghijklmnopqrstuvwxyz\r\n".to_vec());
        let mut out = Vec::new();
        t.screen.resize(&mut out, 10, &t.editor, &t.prompt);
        t.feed(out);
        let rows: Vec<String> = t.parser.screen().rows(0, 10).collect();
        assert_eq!(
            rows[..6],
            [
                "<bob> befo",
                "re",
                "al> abcdef",
                "ghijklmnop",
                "qrstuvwxyz",
                ""
            ]
        );
        assert_eq!(t.cursor(), (5, 0));
        // Editing goes on at the new width.
        t.key(Key::Backspace);
        let rows: Vec<String> = t.parser.screen().rows(0, 10).collect();
        assert_eq!(rows[2..6], ["al> abcdef", "ghijklmnop", "qrstuvwxy", ""]);
        assert_eq!(t.cursor(), (4, 9));
    }

    #[test]
    fn secrets_are_not_drawn() {
        let mut t = Term::new(false);
        t.typed("/register hunter22");
        assert_eq!(t.text(), ["al> /register"]);
        assert_eq!(t.cursor(), (0, 14));
        t.editor.handle(Key::Enter);
        t.editor.set_secret(true);
        t.prompt.text = "password: ".into();
        t.typed("hunter22");
        assert_eq!(t.text(), ["password:"]);
    }

    #[test]
    fn colours_follow_the_kind_of_line_and_stay_on_their_row() {
        let mut t = Term::new(true);
        t.show("! no such user: x");
        t.show("*bob* psst");
        t.show("<bob> hi");
        let s = t.parser.screen();
        assert_eq!(s.cell(0, 0).unwrap().fgcolor(), vt100::Color::Idx(1));
        assert!(s.cell(1, 1).unwrap().bold());
        let bob = name_style("BOB").fg.unwrap();
        let idx = if bob >= 90 { bob - 90 + 8 } else { bob - 30 };
        assert_eq!(s.cell(2, 1).unwrap().fgcolor(), vt100::Color::Idx(idx));
        assert_eq!(s.cell(2, 6).unwrap().fgcolor(), vt100::Color::Default);
        // No colour at all when it is off.
        let mut plain = Vec::new();
        let mut screen = Screen::new(20, false);
        let mut session = Session::new();
        let line = session.on_server_line(b"! bad");
        screen.show(
            &mut plain,
            &[line],
            &Editor::new(),
            &Prompt {
                text: "> ".into(),
                style: BOLD,
            },
        );
        assert!(
            !String::from_utf8_lossy(&plain).contains("\x1b[0"),
            "{plain:?}"
        );
    }

    #[test]
    fn tabs_are_spaces_to_the_next_stop() {
        let mut t = Term::new(false);
        t.show("<b> a\tb");
        assert_eq!(t.text()[0], "<b> a   b");
    }
}
