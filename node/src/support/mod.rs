//! Small pieces every part uses, each with one policy.
//!
//! - [`durable`]: writing a file atomically and durably (temp file, fsync, rename, fsync of
//!   the directory).
//! - [`sync`]: taking in-memory locks, with one policy for a poisoned lock.

pub mod durable;
pub mod sync;
