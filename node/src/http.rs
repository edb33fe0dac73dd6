//! The HTTP port (default 7381): owns the axum router and its handlers.
//!
//! - `GET /metrics`: every metric of [`crate::metrics`] in OpenMetrics text, the Raft gauges
//!   refreshed at scrape time.
//! - `GET /healthz`: 200 `ok` while the process answers (liveness).
//! - `GET /readyz`: 200 `ok` when [`Node::is_ready`], else 503 with a one-line reason.
//!
//! It never reveals keys or values. It is bound at start-up with the other two ports (a bind
//! failure stops the node) and shut down with the client port.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::metrics::CONTENT_TYPE;
use crate::node::Node;

/// The HTTP port's routes.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(node)
}

/// Serves the HTTP port on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
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
