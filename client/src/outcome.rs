//! Whether a failed request was certainly not applied, the one classification the server and
//! the client share.
//!
//! A server marks an error it answers before proposing a write (no leader, a full volume, a
//! stepping-down leader) with [`NOT_APPLIED`] ([`not_applied`]); a follower that forwarded a
//! write keeps the mark on the leader's answer, and adds it when the connection to the leader
//! was never made. The client reports a write as failed only when every attempt is
//! [`is_not_applied`]; otherwise its outcome is unknown ([`crate::ClientError::OutcomeUnknown`]).

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::tls::dial::{TCP_CONNECT_ERROR, TLS_HANDSHAKE_ERROR};

/// Metadata key on an error that guarantees the write was not proposed (so a client may
/// report it as failed rather than "outcome unknown").
pub const NOT_APPLIED: &str = "x-petkv-not-applied";

/// Marks an error as "this write was certainly not applied".
pub fn not_applied(mut status: Status) -> Status {
    status.metadata_mut().insert(NOT_APPLIED, MetadataValue::from_static("1"));
    status
}

/// True when an error guarantees the request was not applied: the server said so, or the
/// connection was never made (TCP, or the TLS handshake, failed).
pub fn is_not_applied(status: &Status) -> bool {
    let never_connected = |m: &str| m.contains(TCP_CONNECT_ERROR) || m.contains(TLS_HANDSHAKE_ERROR);
    status.metadata().contains_key(NOT_APPLIED)
        || (status.code() == Code::Unavailable && never_connected(status.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_marked_error_or_a_connection_never_made_is_not_applied() {
        assert!(is_not_applied(&not_applied(Status::unavailable("no leader"))));
        assert!(is_not_applied(&not_applied(Status::resource_exhausted("volume full"))));
        assert!(is_not_applied(&Status::unavailable(format!("{TCP_CONNECT_ERROR}: connection refused"))));
        assert!(is_not_applied(&Status::unavailable(format!("{TLS_HANDSHAKE_ERROR}: unknown issuer"))));
        // The connection was made: the request may have reached the log.
        assert!(!is_not_applied(&Status::unavailable("connection reset")));
        assert!(!is_not_applied(&Status::deadline_exceeded("timed out")));
        // Only UNAVAILABLE says the connection failed.
        assert!(!is_not_applied(&Status::internal(TCP_CONNECT_ERROR)));
    }
}
