//! Everything that names openraft lives below this module, so the next openraft bump touches
//! one place.
//!
//! - [`types`]: the Raft type configuration (node id, node address, command and response).
//! - [`codec`]: how openraft's messages are encoded on the wire and on disk (postcard).
//! - [`network`]: the client side of the peer transport, one cached channel per peer.
//! - [`service`]: the server side of the peer transport (Raft RPCs, join, start-up probes).
//! - [`settings`]: Raft timings and snapshot policy.

pub mod codec;
pub mod network;
pub mod service;
pub mod settings;
pub mod types;

pub use types::*;
