//! The largest request the client port decodes, and the status a larger one gets.
//!
//! The limit follows the request limits ([`max_message_bytes`]): the largest key plus the
//! largest value plus [`MESSAGE_HEADROOM`] for the other fields and protobuf framing, so a
//! request the validation would refuse anyway is refused before its body is buffered. tonic
//! checks the gRPC frame's length prefix before it reads the message and answers
//! `OUT_OF_RANGE`; [`oversized_layer`] turns that answer into `RESOURCE_EXHAUSTED` (what the
//! gRPC spec and grpc-go use for "message larger than max") naming the flags that set the
//! limit, and counts it in `petkv_oversized_requests_total`.

use std::sync::Arc;

use tonic::body::Body;
use tonic::codegen::http;
use tonic::{Code, Status};
use tower::util::MapResponseLayer;

use crate::api::validation::Limits;
use crate::edge::metrics::Metrics;

/// Room for everything in a request besides its key and value bytes.
pub const MESSAGE_HEADROOM: usize = 64 * 1024;

/// The piece of tonic's message for a frame over the decoding limit.
const TONIC_TOO_LARGE: &str = "message length too large";

/// The client port's decoding limit for requests within `limits`.
pub fn max_message_bytes(limits: &Limits) -> usize {
    limits.max_key_bytes.saturating_add(limits.max_value_bytes).saturating_add(MESSAGE_HEADROOM)
}

/// The status for a request tonic refused as too large, or `None` for any other status.
pub fn oversized(status: &Status) -> Option<Status> {
    (status.code() == Code::OutOfRange && status.message().contains(TONIC_TOO_LARGE)).then(|| {
        Status::resource_exhausted(format!(
            "request too large for the client port ({}); the limit is --max-key-bytes + --max-value-bytes + {} KiB",
            status.message(),
            MESSAGE_HEADROOM / 1024
        ))
    })
}

/// The client port's layer that rewrites tonic's answer to an oversized request (tower's
/// `MapResponse` around the routes). It looks at the `grpc-status` of "trailers-only" answers,
/// which is how a unary handler's decoding error comes back.
pub fn oversized_layer(
    metrics: Arc<Metrics>,
) -> MapResponseLayer<impl FnOnce(http::Response<Body>) -> http::Response<Body> + Clone> {
    MapResponseLayer::new(move |response: http::Response<Body>| {
        match Status::from_header_map(response.headers()).as_ref().and_then(oversized) {
            Some(status) => {
                metrics.record_oversized();
                status.into_http()
            }
            None => response,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_key_plus_value_plus_headroom() {
        let limits = Limits { max_key_bytes: 4096, max_value_bytes: 1 << 20, max_scan_limit: 10 };
        assert_eq!(max_message_bytes(&limits), 4096 + (1 << 20) + 64 * 1024);
        let huge = Limits { max_key_bytes: usize::MAX, ..limits };
        assert_eq!(max_message_bytes(&huge), usize::MAX, "saturates");
    }

    #[test]
    fn only_tonics_too_large_answer_is_rewritten() {
        let tonic = Status::out_of_range(
            "Error, decoded message length too large: found 2097157 bytes, the limit is: 1118208 bytes",
        );
        let rewritten = oversized(&tonic).unwrap();
        assert_eq!(rewritten.code(), Code::ResourceExhausted);
        assert!(rewritten.message().contains("found 2097157 bytes"), "{}", rewritten.message());
        assert!(rewritten.message().contains("--max-value-bytes"), "{}", rewritten.message());
        assert!(oversized(&Status::out_of_range("scan past the end")).is_none());
        assert!(oversized(&Status::invalid_argument(TONIC_TOO_LARGE)).is_none());
    }
}
