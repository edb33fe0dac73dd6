//! Who may do what on the client port: client identities from bearer tokens or from TLS
//! client certificates, roles, and the tower layer that refuses a request before it reaches
//! the API.
//!
//! - [`role`]: the roles (`read` ⊂ `write` ⊂ `admin`) and which one each RPC needs.
//! - [`tokens`]: the tokens file (`--auth-tokens`): `TOKEN ROLE [NAME]` lines (tokens kept in
//!   memory as SHA-256 digests, compared in constant time) and `cert:SUBJECT ROLE [NAME]`
//!   lines (client certificates); reloaded when it changes.
//! - [`certificate`]: the subject name of a client certificate (CN, else first DNS name).
//! - [`layer`]: [`AuthLayer`], the check on the client port (one place for every RPC).
//!
//! A token travels as `authorization: Bearer <token>` ([`petkv_client::auth`], which the
//! client library sends). Off by default: a node without `--auth-tokens` serves every request,
//! as before. The peer
//! port is governed by mutual TLS ([`crate::edge::tls`]), not by this; the HTTP port serves no keys
//! or values. A follower that forwards a request to the leader passes the client's
//! `authorization` metadata along, and the leader checks it again. A client identified by
//! its certificate cannot be forwarded that way (its TLS session ends at the follower): the
//! follower, which verified the certificate, sends its subject name as [`FORWARDED_CERT`],
//! and the leader believes it only over a connection whose own client certificate names a pod
//! of the set (the follower dials with its pod certificate), then applies its own mapping. No
//! node trusts a marker a client could forge.

pub mod certificate;
pub mod layer;
pub mod role;
pub mod tokens;

pub use layer::{AuthLayer, Authenticated, Credential, CurrentTokens};
pub use role::{Access, Role};
pub use tokens::{Identity, Tokens, TokensError, TokensFile};

/// The metadata key (binary: any UTF-8 subject) with which a pod forwarding a request states
/// the subject name of the client certificate it verified.
pub const FORWARDED_CERT: &str = "x-petkv-forwarded-cert-bin";
