//! The HTTP port (default 7381): owns the axum router and its handlers.
//!
//! - `GET /metrics`: every metric of [`crate::edge::metrics`] in OpenMetrics text, the Raft gauges
//!   refreshed at scrape time.
//! - `GET /healthz`: 200 `ok` while the process answers (liveness).
//! - `GET /readyz`: 200 `ok` when [`Node::is_ready`], else 503 with a one-line reason.
//!
//! It never reveals keys or values. It is bound at start-up with the other two ports (a bind
//! failure stops the node) and shut down with the client port.
//!
//! Bounded like the client port ([`crate::edge::limits`]): at most `--max-http-connections` open
//! connections (more are closed right after accept), [`HTTP_MAX_INFLIGHT`] requests at once
//! (more get 503 at once), bodies of at most [`HTTP_MAX_BODY_BYTES`] (413; the routes take
//! none) and [`HTTP_REQUEST_TIMEOUT`] per request (408). hyper's HTTP/1 header read timeout
//! (30 s) reaps connections that never finish their headers.

use std::future::Future;
use std::sync::Arc;

use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::edge::limits::connections::GatedListener;
use crate::edge::limits::{HTTP_MAX_BODY_BYTES, HTTP_MAX_INFLIGHT, HTTP_REQUEST_TIMEOUT};
use crate::edge::metrics::CONTENT_TYPE;
use crate::node::Node;

/// The HTTP port's routes, with the request caps.
pub fn router(node: Arc<Node>) -> Router {
    let caps = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
            (StatusCode::SERVICE_UNAVAILABLE, "too many requests in flight; retry\n")
        }))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(HTTP_MAX_INFLIGHT))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, HTTP_REQUEST_TIMEOUT))
        .layer(RequestBodyLimitLayer::new(HTTP_MAX_BODY_BYTES));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(caps)
        .with_state(node)
}

/// Serves the HTTP port on `listener` until `shutdown` completes.
pub async fn serve(
    listener: GatedListener,
    node: Arc<Node>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(node)).with_graceful_shutdown(shutdown).await
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    node.prometheus.refresh(&node);
    match node.prometheus.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding the metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "encoding the metrics failed\n").into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(node): State<Arc<Node>>) -> Response {
    match node.readiness() {
        Ok(()) => "ok\n".into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")).into_response(),
    }
}
