//! Drawing in a terminal: incoming lines scroll by above, the line being
//! typed stays below them, wrapped to the terminal's width by display
//! columns (wide characters take two). Produces bytes only; it never
//! touches a file descriptor, so it is tested against a terminal emulator.

use std::fmt::Write as _;

use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

use super::editor::Editor;
use super::session::{Kind, Shown, needs_escape};

/// Width used when the terminal does not say.
pub const DEFAULT_WIDTH: usize = 80;
/// Height used when the terminal does not say.
pub const DEFAULT_HEIGHT: usize = 24;
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

    /// Moves to the next row if `w` columns do not fit on this one.
    fn make_room(&mut self, w: usize) {
        if self.col > 0 && self.col + w > self.width {
            self.newline();
        }
    }

    /// Draws one grapheme cluster.
    fn put(&mut self, g: &str, style: Style) {
        if g == "\t" {
            // A tab is drawn as spaces to the next stop, or the row's end.
            self.make_room(1);
            self.set_style(style);
            let n = (TAB_STOP - self.col % TAB_STOP).min(self.width - self.col);
            self.out.resize(self.out.len() + n, b' ');
            self.col += n;
            return;
        }
        let w = cluster_width(g);
        self.make_room(w);
        self.set_style(style);
        if g.width() == 0 {
            // Nothing for it to combine with, or nothing to see: on a
            // space, it takes the column `cluster_width` gives it.
            self.out.push(b' ');
        }
        self.out.extend_from_slice(g.as_bytes());
        self.col += w;
    }
}

/// Where the input area is on screen after it was drawn.
#[derive(Clone, Debug)]
struct Drawn {
    /// Row of the cursor, counted from the area's first row.
    cursor_row: usize,
    /// The columns of each character drawn on the rows before the
    /// cursor's, then on the cursor's row before it, with the cursor as
    /// one more column: what a terminal that reflows on resize moves.
    rows: Vec<Vec<usize>>,
}

impl Drawn {
    /// Rows from the area's first to the cursor once the terminal is
    /// `width` columns wide, at most: a terminal that reflows (tmux, VTE,
    /// kitty...) splits each drawn row that no longer fits, one that does
    /// not (xterm) leaves them as they were.
    fn cursor_row_after_resize(&self, width: usize) -> usize {
        let reflowed: usize = self
            .rows
            .iter()
            .map(|row| {
                let mut flow = Flow::new(width);
                for &w in row {
                    flow.place(w);
                }
                flow.row + 1
            })
            .sum();
        self.cursor_row.max(reflowed - 1)
    }
}

/// Where characters land as rows fill up, without drawing them.
#[derive(Clone, Copy, Debug)]
struct Flow {
    width: usize,
    row: usize,
    col: usize,
}

impl Flow {
    fn new(width: usize) -> Flow {
        Flow {
            width: width.max(1),
            row: 0,
            col: 0,
        }
    }

    /// Places something `w` columns wide, on the next row if it does not
    /// fit on this one (a wide character is never split). Returns where.
    fn place(&mut self, w: usize) -> (usize, usize) {
        if self.col > 0 && self.col + w > self.width {
            self.row += 1;
            self.col = 0;
        }
        let at = (self.row, self.col);
        self.col += w;
        at
    }
}

/// Columns a grapheme cluster takes on screen (not a tab): its width as
/// `unicode-width` gives it for the whole cluster (a flag or an emoji ZWJ
/// sequence is two, not the sum of its parts), but at least one: a cluster
/// that would take none (an accent with nothing before it to go on, a
/// zero-width space) is drawn on a space of its own, so that it can be
/// seen, and the cursor stands on it before it is deleted.
pub fn cluster_width(g: &str) -> usize {
    g.width().max(1)
}

/// A grapheme cluster of the input area, laid out.
struct Glyph<'a> {
    row: usize,
    col: usize,
    g: &'a str,
    width: usize,
    style: Style,
}

/// The prompt and the visible part of the line, laid out in rows.
struct Layout<'a> {
    glyphs: Vec<Glyph<'a>>,
    cursor: (usize, usize),
    rows: usize,
}

fn layout_input<'a>(width: usize, editor: &'a Editor, prompt: &'a Prompt) -> Layout<'a> {
    let mut flow = Flow::new(width);
    let mut glyphs = Vec::new();
    let mut put = |flow: &mut Flow, g: &'a str, style: Style| {
        // Prompts and input hold no tabs; a stray one is a space. A typed
        // or pasted direction override or mark would reorder what the
        // terminal shows, so it is drawn as U+FFFD (and still sent).
        let g = if g == "\t" {
            " "
        } else if g.chars().any(needs_escape) {
            "\u{fffd}"
        } else {
            g
        };
        let width = cluster_width(g);
        let (row, col) = flow.place(width);
        glyphs.push(Glyph {
            row,
            col,
            g,
            width,
            style,
        });
    };
    for g in prompt.text.graphemes(true) {
        put(&mut flow, g, prompt.style);
    }
    let hidden = editor.hidden_from().unwrap_or(usize::MAX);
    let mut cursor = None;
    for (at, g) in editor.clusters() {
        if at >= hidden {
            break;
        }
        // Of a cluster across the start of the hidden part (a space, then
        // an accent), only what comes before it.
        let g = &g[..g.len().min(hidden - at)];
        if at == editor.cursor() {
            // Where the cluster under the cursor goes.
            let mut ahead = flow;
            cursor = Some(ahead.place(cluster_width(g)));
        }
        put(&mut flow, g, PLAIN);
    }
    // Past the last visible cluster. On a full row the terminal would
    // hold the cursor at the last column, so it goes to the next row.
    let cursor = cursor.unwrap_or_else(|| flow.place(1));
    Layout {
        rows: flow.row.max(cursor.0) + 1,
        glyphs,
        cursor,
    }
}

/// The rows of a layout `rows` tall that fit in `room` rows with the
/// cursor's row among them, and whether a marker row for hidden text goes
/// above and below.
fn window(rows: usize, cursor_row: usize, room: usize) -> (std::ops::Range<usize>, bool, bool) {
    let room = room.max(1);
    if rows <= room {
        return (0..rows, false, false);
    }
    if room < 3 {
        // No room for markers: the rows up to the cursor's.
        let first = (cursor_row + 1).saturating_sub(room);
        return (first..first + room, false, false);
    }
    // The cursor's row as low as it goes, a marker where text is hidden.
    let end = cursor_row + 1;
    let below = end < rows;
    let content = room - usize::from(below);
    if end <= content {
        // Nothing hidden above: fill down from the top.
        return (0..room - 1, false, true);
    }
    (end - (content - 1)..end, true, below)
}

/// The terminal screen as the client uses it.
#[derive(Debug)]
pub struct Screen {
    width: usize,
    height: usize,
    colour: bool,
    drawn: Option<Drawn>,
}

impl Screen {
    pub fn new(width: usize, height: usize, colour: bool) -> Screen {
        Screen {
            width: width.max(1),
            height: height.max(1),
            colour,
            drawn: None,
        }
    }

    /// Erases the input area, leaving the cursor where the area began.
    fn erase_input(&mut self, out: &mut Vec<u8>) {
        if let Some(d) = self.drawn.take() {
            move_up(out, d.cursor_row);
            // Not `ESC [ J` from here: at the screen's top-left corner tmux
            // takes that for clearing the screen and keeps a copy of it in
            // the scrollback. This row, then all below it (a cursor on the
            // last row does not move down, and clears its own row again).
            out.extend_from_slice(b"\r\x1b[2K\x1b7\x1b[B\x1b[J\x1b8");
        }
    }

    /// Shows `lines` above the input line, which is then drawn again.
    pub fn show(&mut self, out: &mut Vec<u8>, lines: &[Shown], editor: &Editor, prompt: &Prompt) {
        out.extend_from_slice(b"\x1b[?25l");
        self.erase_input(out);
        for shown in lines {
            let mut pen = Pen::new(out, self.width, self.colour);
            for (style, text) in runs(shown) {
                for g in text.graphemes(true) {
                    pen.put(g, style);
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

    /// The terminal is now `width` columns by `height` rows. Its rows are
    /// ours, ended by CRLF: a terminal may have split them to the new
    /// width (tmux and most others do; xterm does not), so the cursor may
    /// now be further below the area's first row. The area is erased from
    /// the furthest that row can be; in a terminal that does not reflow, a
    /// narrower window may so lose a few rows of conversation above it.
    pub fn resize(
        &mut self,
        out: &mut Vec<u8>,
        width: usize,
        height: usize,
        editor: &Editor,
        prompt: &Prompt,
    ) {
        self.width = width.max(1);
        self.height = height.max(1);
        if let Some(d) = &mut self.drawn {
            d.cursor_row = d.cursor_row_after_resize(self.width);
        }
        self.redraw(out, editor, prompt);
    }

    /// Clears the screen, then draws the input. The terminal's scrollback
    /// (what was there before the client) is left alone.
    pub fn clear(&mut self, out: &mut Vec<u8>, editor: &Editor, prompt: &Prompt) {
        out.extend_from_slice(b"\x1b[?25l\x1b[H\x1b[2J");
        self.drawn = None;
        self.draw_input_here(out, editor, prompt);
    }

    /// Leaves the terminal as found: no input area, plain attributes, the
    /// cursor visible at the start of an empty row.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.erase_input(out);
        out.extend_from_slice(b"\x1b[0m\x1b[?25h");
    }

    /// Draws the prompt and the line from the cursor's current position
    /// (the start of a row), then puts the cursor where the editor's is.
    /// A line taller than the window leaves a row for what is above it:
    /// only a window of rows around the cursor is drawn, with a marker
    /// row where text is hidden.
    fn draw_input_here(&mut self, out: &mut Vec<u8>, editor: &Editor, prompt: &Prompt) {
        let layout = layout_input(self.width, editor, prompt);
        let (shown, above, below) = window(layout.rows, layout.cursor.0, self.height - 1);
        let mut pen = Pen::new(out, self.width, self.colour);
        let mut drawn_rows: Vec<Vec<usize>> = Vec::new();
        let marker = |pen: &mut Pen<'_>, text: String| {
            // ASCII, one column a character.
            for g in text.graphemes(true).take(pen.width) {
                pen.put(g, DIM);
            }
            text.graphemes(true)
                .take(pen.width)
                .map(|_| 1)
                .collect::<Vec<_>>()
        };
        if above {
            let n = shown.start;
            let s = if n == 1 { "" } else { "s" };
            drawn_rows.push(marker(&mut pen, format!("... {n} row{s} above")));
            pen.newline();
        }
        let mut glyphs = layout
            .glyphs
            .iter()
            .skip_while(|g| g.row < shown.start)
            .peekable();
        let cursor_row = drawn_rows.len() + layout.cursor.0 - shown.start;
        for row in shown.clone() {
            if row > shown.start {
                pen.newline();
            }
            let mut widths = Vec::new();
            while let Some(g) = glyphs.next_if(|g| g.row == row) {
                pen.put(g.g, g.style);
                if row < layout.cursor.0 || (row == layout.cursor.0 && g.col < layout.cursor.1) {
                    widths.push(g.width);
                }
            }
            if row <= layout.cursor.0 {
                if row == layout.cursor.0 {
                    widths.push(1);
                }
                drawn_rows.push(widths);
            }
        }
        if below {
            let n = layout.rows - shown.end;
            let s = if n == 1 { "" } else { "s" };
            pen.newline();
            marker(&mut pen, format!("... {n} row{s} below"));
        }
        pen.set_style(PLAIN);
        let up = pen.row - cursor_row;
        let out = pen.out;
        move_up(out, up);
        out.push(b'\r');
        if layout.cursor.1 > 0 {
            let _ = write!(Sink(out), "\x1b[{}C", layout.cursor.1);
        }
        self.drawn = Some(Drawn {
            cursor_row,
            rows: drawn_rows,
        });
        out.extend_from_slice(b"\x1b[?25h");
    }
}

fn move_up(out: &mut Vec<u8>, rows: usize) {
    if rows > 0 {
        let _ = write!(Sink(out), "\x1b[{rows}A");
    }
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
                screen: Screen::new(COLS.into(), ROWS.into(), colour),
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
    fn typed_direction_overrides_reach_the_terminal_only_as_a_placeholder() {
        let mut t = Term::new(false);
        for c in "a\u{202e}b\u{200f}c".chars() {
            t.editor.handle(Key::Char(c));
        }
        let mut out = Vec::new();
        t.screen.redraw(&mut out, &t.editor, &t.prompt);
        let drawn = String::from_utf8(out).unwrap();
        assert!(!drawn.contains(['\u{202e}', '\u{200f}']), "{drawn:?}");
        assert!(drawn.contains("al> a\u{fffd}b\u{fffd}c"), "{drawn:?}");
        assert_eq!(t.editor.text(), "a\u{202e}b\u{200f}c", "sent as typed");
    }

    #[test]
    fn the_cursor_moves_over_a_letter_and_its_accent_at_once() {
        let mut t = Term::new(false);
        t.typed("cafe\u{301}");
        assert_eq!(t.text(), ["al> cafe\u{301}"]);
        assert_eq!(t.cursor(), (0, 8));
        t.key(Key::Left);
        assert_eq!(t.cursor(), (0, 7), "one Left, one column");
        t.key(Key::Delete);
        assert_eq!((t.text(), t.cursor()), (vec!["al> caf".into()], (0, 7)));
        // An accent with no letter before it is drawn on a space of its
        // own, not on the prompt, and takes a column.
        t.key(Key::Home);
        t.typed("\u{301}");
        assert_eq!(t.text(), ["al>  \u{301}caf"]);
        assert_eq!(t.cursor(), (0, 5));
        t.key(Key::Backspace);
        assert_eq!((t.text(), t.cursor()), (vec!["al> caf".into()], (0, 4)));
    }

    #[test]
    fn emoji_sequences_take_the_columns_of_the_whole() {
        const FLAG: &str = "\u{1f1eb}\u{1f1f7}";
        const HEART: &str = "\u{2764}\u{fe0f}";
        let mut t = Term::new(false);
        t.typed(&format!("{FLAG}{HEART}x"));
        assert_eq!(t.text(), [format!("al> {FLAG}{HEART}x")]);
        assert_eq!(t.cursor(), (0, 9));
        t.key(Key::Left);
        t.key(Key::Left);
        assert_eq!(t.cursor(), (0, 6));
        t.key(Key::Left);
        assert_eq!(t.cursor(), (0, 4));
        // A flag is never split at the end of a row, in the input or in
        // a line shown above it.
        t.key(Key::End);
        t.typed(&"x".repeat(10));
        t.typed(FLAG);
        assert_eq!(t.text()[1], FLAG);
        assert_eq!(t.cursor(), (1, 2));
        t.show(&format!("<bob> {}{HEART}", "y".repeat(13)));
        assert_eq!(
            t.text(),
            [
                format!("<bob> {}", "y".repeat(13)),
                HEART.into(),
                format!("al> {FLAG}{HEART}{}", "x".repeat(11)),
                FLAG.into()
            ]
        );
        assert_eq!(t.cursor(), (3, 2));
    }

    #[test]
    fn an_emoji_zwj_sequence_is_laid_out_two_columns_wide() {
        // vt100 draws each emoji of the sequence, as terminals that do not
        // join them do; the layout is checked instead.
        const FAMILY: &str = "\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}";
        assert_eq!(cluster_width(FAMILY), 2);
        let prompt = Prompt {
            text: "al> ".into(),
            style: PLAIN,
        };
        let mut e = Editor::new();
        for c in format!("{FAMILY}{FAMILY}x").chars() {
            e.handle(Key::Char(c));
        }
        e.handle(Key::Left);
        e.handle(Key::Left);
        let layout = layout_input(COLS.into(), &e, &prompt);
        assert_eq!(layout.cursor, (0, 6));
        let glyphs: Vec<_> = layout.glyphs[4..]
            .iter()
            .map(|g| (g.g, g.col, g.width))
            .collect();
        assert_eq!(glyphs, [(FAMILY, 4, 2), (FAMILY, 6, 2), ("x", 8, 1)]);
    }

    /// What a terminal that reflows on resize (tmux, VTE...) does when it
    /// becomes `cols` wide: each row ended by CRLF stays a line of its
    /// own, split into pieces when it no longer fits (a wide character is
    /// never split), and the cursor stays on the character it was on.
    fn reflowed(old: &vt100::Parser, cols: u16) -> vt100::Parser {
        let s = old.screen();
        let (old_rows, old_cols) = (s.size().0.get(), s.size().1.get());
        let (crow, ccol) = s.cursor_position();
        let mut lines: Vec<String> = Vec::new();
        let mut cursor = (0, 0);
        for r in 0..old_rows {
            // The row's cells as far as something was written.
            let mut cells = Vec::new();
            let mut col = 0;
            while col < old_cols {
                let cell = s.cell(r, col).unwrap();
                let w: u16 = if cell.is_wide() { 2 } else { 1 };
                cells.push((col, cell.contents().to_string(), usize::from(w)));
                col += w;
            }
            while cells.last().is_some_and(|(_, c, _)| c.is_empty()) {
                cells.pop();
            }
            let mut flow = Flow::new(cols.into());
            let mut pieces = vec![String::new()];
            for (col, c, w) in &cells {
                if (r, *col) == (crow, ccol) {
                    let mut ahead = flow;
                    let at = ahead.place(1);
                    cursor = (lines.len() + at.0, at.1);
                }
                let (row, _) = flow.place(*w);
                if row == pieces.len() {
                    pieces.push(String::new());
                }
                pieces[row].push_str(if c.is_empty() { " " } else { c });
            }
            if r == crow && ccol >= cells.last().map_or(0, |(c, _, w)| c + *w as u16) {
                // The cursor after the written part of its row.
                let mut ahead = flow;
                for _ in cells.last().map_or(0, |(c, _, w)| c + *w as u16)..ccol {
                    ahead.place(1);
                }
                let at = ahead.place(1);
                cursor = (lines.len() + at.0, at.1);
                while pieces.len() <= at.0 {
                    pieces.push(String::new());
                }
            }
            lines.extend(pieces);
        }
        // Blank rows below everything stay blank rows, not lines.
        let used = lines
            .iter()
            .rposition(|l| !l.trim().is_empty())
            .map_or(0, |i| i + 1);
        lines.truncate(used.max(cursor.0 + 1));
        let rows = u16::try_from(lines.len()).unwrap();
        let mut p = vt100::Parser::new(nz(rows.max(old_rows)), nz(cols), 0);
        p.process(lines.join("\r\n").as_bytes());
        // Rows that no longer fit scroll off the top.
        p.screen_mut().set_size(nz(old_rows), nz(cols));
        let cursor = (cursor.0 as u16, cursor.1 as u16);
        p.process(format!("\x1b[{};{}H", cursor.0 + 1, cursor.1 + 1).as_bytes());
        p
    }

    fn resize_to(t: &mut Term, cols: u16, reflow: bool) {
        if reflow {
            t.parser = reflowed(&t.parser, cols);
        } else {
            t.parser.screen_mut().set_size(nz(ROWS), nz(cols));
        }
        let mut out = Vec::new();
        t.screen
            .resize(&mut out, cols.into(), ROWS.into(), &t.editor, &t.prompt);
        t.feed(out);
    }

    fn rows_at(t: &Term, cols: u16) -> Vec<String> {
        let mut rows: Vec<String> = t
            .parser
            .screen()
            .rows(0, cols)
            .map(|r| r.trim_end().to_string())
            .collect();
        while rows.last().is_some_and(String::is_empty) {
            rows.pop();
        }
        rows
    }

    #[test]
    fn resizing_a_terminal_that_reflows_leaves_no_piece_of_the_old_input() {
        let mut t = Term::new(false);
        t.show("<bob> one");
        t.show("<bob> two");
        t.typed("abcdefghijklmnopqrstuvwxyz");
        assert_eq!(
            t.text(),
            [
                "<bob> one",
                "<bob> two",
                "al> abcdefghijklmnop",
                "qrstuvwxyz"
            ]
        );
        resize_to(&mut t, 10, true);
        assert_eq!(
            rows_at(&t, 10),
            [
                "<bob> one",
                "<bob> two",
                "al> abcdef",
                "ghijklmnop",
                "qrstuvwxyz"
            ]
        );
        assert_eq!(t.cursor(), (5, 0));
        // Editing goes on at the new width.
        t.key(Key::Backspace);
        assert_eq!(
            rows_at(&t, 10)[2..],
            ["al> abcdef", "ghijklmnop", "qrstuvwxy"]
        );
        assert_eq!(t.cursor(), (4, 9));
        // Wider again: rows ended by CRLF are not joined back.
        resize_to(&mut t, 30, true);
        assert_eq!(
            rows_at(&t, 30),
            ["<bob> one", "<bob> two", "al> abcdefghijklmnopqrstuvwxy"]
        );
        assert_eq!(t.cursor(), (2, 29));
    }

    #[test]
    fn resizing_a_terminal_that_does_not_reflow_leaves_no_piece_of_the_old_input() {
        let mut t = Term::new(false);
        for line in ["<bob> one", "<bob> two", "<bob> three"] {
            t.show(line);
        }
        t.typed("abcdefghijklmnopqrstuvwxyz");
        resize_to(&mut t, 10, false);
        // The cursor may have been up to 3 rows below the area's top, so
        // that much is erased: here two rows of conversation go with it.
        assert_eq!(
            rows_at(&t, 10),
            ["<bob> one", "al> abcdef", "ghijklmnop", "qrstuvwxyz"]
        );
        assert_eq!(t.cursor(), (4, 0));
        resize_to(&mut t, 30, false);
        assert_eq!(
            rows_at(&t, 30),
            ["<bob> one", "al> abcdefghijklmnopqrstuvwxyz"]
        );
        assert_eq!(t.cursor(), (2, 0));
    }

    #[test]
    fn a_line_taller_than_the_window_is_drawn_around_the_cursor() {
        let mut t = Term::new(false);
        t.show("<bob> hi");
        // 4 + 200 columns: 11 rows at 20 columns, in an 8-row window.
        let digits = "0123456789".repeat(20);
        t.typed(&digits);
        let row = |i: usize| digits[16 + (i - 1) * 20..][..20].to_string();
        // At most 7 rows: a marker, then the rows up to the cursor's.
        let mut want = vec!["... 5 rows above".to_string()];
        want.extend((5..10).map(row));
        want.push(digits[196..].into());
        assert_eq!(t.text()[1..], want);
        assert_eq!(t.text()[0], "<bob> hi");
        assert_eq!(t.cursor(), (7, 4));

        // At the start: the first rows, and a marker for the rest.
        t.key(Key::Home);
        let mut want = vec![format!("al> {}", &digits[..16])];
        want.extend((1..6).map(row));
        want.push("... 5 rows below".to_string());
        assert_eq!(t.text()[1..], want);
        assert_eq!(t.cursor(), (1, 4));

        // A message arrives: the window moves down whole (the screen
        // scrolls), nothing is left behind.
        t.show("<bob> more");
        assert_eq!(t.text()[0], "<bob> more");
        assert_eq!(t.text()[1..], want);
        assert_eq!(t.cursor(), (1, 4));

        // Back at the end, four characters fewer: ten full rows, and the
        // cursor at the start of an eleventh.
        t.key(Key::End);
        for _ in 0..4 {
            t.key(Key::Backspace);
        }
        let mut want = vec!["<bob> more".to_string(), "... 5 rows above".to_string()];
        want.extend((5..10).map(row));
        assert_eq!(t.text(), want);
        assert_eq!(t.cursor(), (7, 0));
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
        let mut screen = Screen::new(20, 8, false);
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
    fn clear_empties_the_screen_but_not_the_scrollback() {
        let mut t = Term::new(false);
        t.show("<bob> hi");
        t.typed("draft");
        let mut out = Vec::new();
        t.screen.clear(&mut out, &t.editor, &t.prompt);
        // `ESC [ 3 J` would also wipe what the terminal kept from before.
        assert!(!out.windows(4).any(|w| w == b"\x1b[3J"), "{out:?}");
        t.feed(out);
        assert_eq!(t.text(), ["al> draft"]);
        assert_eq!(t.cursor(), (0, 9));
    }

    #[test]
    fn tabs_are_spaces_to_the_next_stop() {
        let mut t = Term::new(false);
        t.show("<b> a\tb");
        assert_eq!(t.text()[0], "<b> a   b");
    }
}
