//! chatd: a chat server for many users on one thread.
pub mod chat;
pub mod conn;
pub mod lines;
pub mod logger;
pub mod proto;
pub mod server;
