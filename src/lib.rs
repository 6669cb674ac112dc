//! chatd: a chat server for many users on one thread.
//!
//! Clients speak a line protocol over TCP (see `docs/protocol.md`), as
//! plain text lines or as JSON objects, one per line, in the same rooms:
//! they choose a name, talk in rooms, send direct messages and set a status.
//! One `mio` event loop serves every connection.
//!
//! # Layout
//!
//! Dependencies point one way: `bin/chatd → server → conn → lines, proto,
//! json`, `server → chat → proto`, and `bin/chat-client → client → proto`.
//!
//! - [`proto`]: the vocabulary. Commands from clients, events to them,
//!   protocol errors, and the text codec. No sockets, no recipients.
//! - [`json`]: the JSON-lines codec, decoding to the same commands and
//!   encoding the same events as the text codec.
//! - [`lines`]: bytes in, complete lines out, with the line-length cap.
//! - [`chat`]: the chat state (users, rooms, statuses) and routing. Takes
//!   "connection N said this", returns "send this event to these
//!   connections" and "close that one". No sockets, no clock of its own.
//! - [`conn`]: one connection's socket, buffers, rate budget and closing
//!   state.
//! - [`server`]: the event loop. Accept, read, frame, hand to the chat,
//!   encode each broadcast once per mode into the turn's shared log, flush
//!   once per turn, reap.
//! - [`logger`]: a stderr logger that can neither block nor crash the loop.
//! - [`client`]: the terminal client, `chat-client`: one loop over the
//!   socket and stdin around socket-free parts (what server lines mean,
//!   the line editor, the screen, the transcript).
//! - [`loadgen`]: the load generator behind `chat-bench` and the benches:
//!   subscribers and a publisher on one `mio` loop, against chatd or Redis.
//!   Uses none of the server's modules.
//!
//! The core (`proto`, `lines`, `chat`) is tested directly; `tests/` talks
//! to a real server over TCP.

#![warn(rust_2018_idioms, unreachable_pub)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod backend;
pub mod chat;
pub mod client;
pub mod conn;
pub mod history;
pub mod json;
pub mod lines;
pub mod loadgen;
pub mod logger;
pub mod password;
pub mod proto;
pub mod server;
pub mod store;
pub mod throttle;
