//! `chat-client`: the terminal client. One `mio` loop is the one place
//! where the socket, the user's input and the screen meet; the pieces it
//! drives are socket-free and tested alone: [`session`] (what lines mean,
//! our name, secrets), [`editor`] (keys and the line being typed),
//! [`screen`] (drawing), [`transcript`] (for `/save` and `--log`), plus
//! [`term`] (raw mode, restored on every way out).
//!
//! Two modes, chosen at start: **terminal mode** when both stdin and stdout
//! are terminals (raw mode, line editor, colours unless `NO_COLOR` is set),
//! and **pipe mode** otherwise (lines in, lines out, no escapes at all).
//!
//! stdin is read by a small thread that hands chunks to the loop through a
//! bounded channel and a `mio::Waker`: epoll refuses regular files and
//! `/dev/null`, and setting `O_NONBLOCK` on a terminal would change it for
//! the shell too. Signals (resize, interrupt) wake the loop the same way.

pub mod editor;
pub mod screen;
pub mod session;
pub mod transcript;

