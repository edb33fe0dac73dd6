//! Whether a failed request was certainly not applied, the one classification the server and
//! the client share.
//!
//! A server marks an error it answers before proposing a write (no leader, a full volume, a
//! stepping-down leader) with [`NOT_APPLIED`] ([`not_applied`]); a follower that forwarded a
//! write keeps the mark on the leader's answer, and adds it when the connection to the leader
//! was never made. The client reports a write as failed only when every attempt is
//! [`is_not_applied`]; otherwise its outcome is unknown ([`crate::ClientError::OutcomeUnknown`]).

use tonic::metadata::MetadataValue;
use tonic::{Code, ConnectError, Status};

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
    status.metadata().contains_key(NOT_APPLIED) || (status.code() == Code::Unavailable && never_connected(status))
}

/// True when the error came from making the connection (tonic's [`ConnectError`] in its source
/// chain: the connector failed, so no request bytes were sent). Only this process can tell: a
/// status that crossed the wire has no source, which is why a forwarding node marks it.
fn never_connected(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<ConnectError>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::pb::v1::kv_client::KvClient;
    use crate::pb::v1::GetRequest;

    fn connect_failure(detail: &str) -> Status {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, detail.to_string());
        Status::from_error(Box::new(ConnectError(Box::new(io))))
    }

    #[test]
    fn only_a_marked_error_or_a_connection_never_made_is_not_applied() {
        assert!(is_not_applied(&not_applied(Status::unavailable("no leader"))));
        assert!(is_not_applied(&not_applied(Status::resource_exhausted("volume full"))));
        let refused = connect_failure("connection refused");
        assert_eq!(refused.code(), Code::Unavailable);
        assert!(is_not_applied(&refused));
        // The connection was made: the request may have reached the log, whatever the text says.
        assert!(!is_not_applied(&Status::unavailable("connection reset")));
        assert!(!is_not_applied(&Status::unavailable("tcp connect error: connection refused")));
        assert!(!is_not_applied(&Status::deadline_exceeded("timed out")));
    }

    #[tokio::test]
    async fn a_request_to_a_port_nobody_listens_on_was_never_sent() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
        let channel = crate::tls::dial::lazy_channel(&addr.to_string(), None, |e| e.timeout(Duration::from_secs(2)))
            .expect("channel");
        let status = KvClient::new(channel).get(GetRequest::default()).await.expect_err("nobody listens");
        assert!(is_not_applied(&status), "{status:?}");
    }
}
