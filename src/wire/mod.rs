//! The wire: the vocabulary (commands, events, protocol errors) and every
//! byte format clients speak. Socket-free and free of chat rules.

pub mod cidr;
pub mod json;
pub mod lines;
pub mod proto;
pub mod text;
pub mod ws;
