//! The cluster harness (see the crate README).
