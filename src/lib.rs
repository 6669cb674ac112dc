//! chatd: a chat server for many users on one thread.
pub mod chat;
pub mod lines;
pub mod proto;
