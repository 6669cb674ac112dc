//! chatd: a chat server for many users on one thread.
//!
//! Clients speak a line protocol over TCP (see `docs/protocol.md`), as
//! plain text lines or as JSON objects, one per line, in the same rooms,
//! with or without TLS on the same port: they choose a name, talk in
//! rooms, send direct messages and set a status. One `mio` event loop
//! serves every connection; slow work runs on helper threads.
//!
//! # Layout
//!
//! The folders are the layers. Dependencies point one way:
//! `bin/chatd → server → wire`, `server → chat → wire`,
//! `server → store → chat`, `bin/chat-client → client → wire`, and
//! `bin/chat-bench → loadgen`.
//!
//! - [`wire`]: the vocabulary ([`wire::proto`]: commands from clients,
//!   events to them, protocol errors, the text codec), the JSON-lines
//!   codec ([`wire::json`]) and line framing ([`wire::lines`]). Bytes and
//!   types only: no sockets, no chat rules.
//! - [`chat`]: the chat state (users, rooms, statuses, accounts, history,
//!   login throttles) and routing. Takes "connection N said this",
//!   returns "send this event to these connections", "close that one" and
//!   "run this job". No sockets, no bytes, no clock of its own.
//! - [`server`]: the event loop and each connection's stack of layers:
//!   detection of what the client speaks ([`server::detect`]), TLS
//!   ([`server::tls`]), then line framing and a codec; timers, the log.
//!   Encodes each broadcast once per mode, flushes once per turn, reaps.
//!   Counts for operators ([`server::metrics`]) and serves the counts and
//!   a health check over HTTP from its own threads ([`server::exporter`]).
//!   No chat rules.
//! - [`store`]: SQLite, the storage and password threads, and what they
//!   run. Never touches the loop's state; answers come back through the
//!   loop's waker.
//! - [`client`]: the terminal client, `chat-client`: one loop over the
//!   socket (plain or TLS) and stdin around socket-free parts (what server
//!   lines mean, the line editor, the screen, the transcript).
//! - [`config`]: the `--config` file of `chatd`: TOML read into the
//!   flags it stands for (checked by the flags' own parsers), and what
//!   changed between two readings. Text in, arguments out; depends on
//!   nothing of the server.
//! - [`cluster`]: one chat across several nodes through NATS JetStream:
//!   the subjects, buckets and encodings, and the link thread with its
//!   own small runtime that hands batches to the loop through its waker.
//! - [`loadgen`]: the load generator behind `chat-bench` and the benches:
//!   subscribers and a publisher on one `mio` loop, against chatd or
//!   Redis. Uses none of the server's modules.
//!
//! The core (`wire`, `chat`, and the connection layers) is tested
//! directly; `tests/` talks to a real server over TCP.

#![warn(rust_2018_idioms, unreachable_pub)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod chat;
pub mod client;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod loadgen;
pub mod server;
pub mod store;
pub mod wire;
