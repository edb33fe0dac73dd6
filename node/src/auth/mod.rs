//! Who may do what on the client port: client identities from bearer tokens, roles, and the
//! tower layer that refuses a request before it reaches the API.
//!
//! - [`role`]: the roles (`read` ⊂ `write` ⊂ `admin`) and which one each RPC needs.
//! - [`tokens`]: the tokens file (`--auth-tokens`): `token role [name]` lines, kept in memory
//!   as SHA-256 digests and compared in constant time.
//! - [`layer`]: [`AuthLayer`], the check on the client port (one place for every RPC).
//!
//! Off by default: a node without `--auth-tokens` serves every request, as before. The peer
//! port is governed by mutual TLS ([`crate::tls`]), not by this; the HTTP port serves no keys
//! or values. A follower that forwards a request to the leader passes the client's
//! `authorization` metadata along, and the leader checks it again: no node trusts a marker a
//! client could forge.

pub mod layer;
pub mod role;
pub mod tokens;

pub use layer::AuthLayer;
pub use role::{Access, Role};
pub use tokens::{Identity, Tokens, TokensError};

/// The metadata key that carries a bearer token (`authorization: Bearer <token>`).
pub const AUTHORIZATION: &str = "authorization";

/// The `authorization` value for `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
