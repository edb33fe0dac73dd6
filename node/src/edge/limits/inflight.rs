//! The cap on client-port requests in flight across all connections: a request that finds
//! every slot taken is answered at once with `RESOURCE_EXHAUSTED` ("too many requests", as
//! etcd does) instead of queueing, and counted in `petkv_requests_shed_total`.
//!
//! Like tower's `GlobalConcurrencyLimit` behind `LoadShed`, but a shed request gets a gRPC
//! status that says what happened and what to do (tonic turns tower's `Overloaded` into a
//! generic "too many active requests for the connection") and is counted; the metrics layer
//! outside sees it as an ordinary `RESOURCE_EXHAUSTED` answer. A slot is held until the
//! response headers are ready (a streamed body, a backup, is not counted after that), and
//! `petkv_inflight_requests` shows how many are taken.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tonic::codegen::http;
use tonic::Status;

use crate::edge::metrics::Metrics;

/// Tower layer for the client port's `Server::builder().layer(...)`.
#[derive(Clone)]
pub struct InflightLimitLayer {
    max: usize,
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl InflightLimitLayer {
    /// At most `max` requests in flight at once (at least 1).
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self { max, slots: Arc::new(Semaphore::new(max)), metrics }
    }
}

impl<S> tower::Layer<S> for InflightLimitLayer {
    type Service = InflightLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InflightLimit { inner, limit: self.clone() }
    }
}

/// The service [`InflightLimitLayer`] wraps around the client port's routes.
#[derive(Clone)]
pub struct InflightLimit<S> {
    inner: S,
    limit: InflightLimitLayer,
}

/// The answer to a request that found no free slot.
pub fn overloaded(max: usize) -> Status {
    Status::resource_exhausted(format!(
        "too many requests: this node already serves {max} requests (--max-inflight-requests); retry with backoff"
    ))
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for InflightLimit<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let metrics = self.limit.metrics.clone();
        match self.limit.slots.clone().try_acquire_owned() {
            Ok(slot) => {
                metrics.request_started();
                let response = self.inner.call(req);
                Box::pin(async move {
                    let _in_flight = InFlight { _slot: slot, metrics };
                    response.await
                })
            }
            Err(_) => {
                metrics.record_shed();
                Box::pin(std::future::ready(Ok(overloaded(self.limit.max).into_http())))
            }
        }
    }
}

/// A request holding a slot; gives it back (and lowers the gauge) when the response is ready
/// or the request is dropped (the client went away, the deadline passed).
struct InFlight {
    _slot: tokio::sync::OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.request_finished();
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer, Service};

    use super::*;

    /// Answers once the watched flag is true.
    #[derive(Clone)]
    struct Held(tokio::sync::watch::Receiver<bool>);

    impl Service<http::Request<()>> for Held {
        type Response = http::Response<()>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<http::Response<()>, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let mut release = self.0.clone();
            Box::pin(async move {
                let _ = release.wait_for(|go| *go).await;
                Ok(http::Response::new(()))
            })
        }
    }

    #[tokio::test]
    async fn a_request_over_the_cap_is_answered_resource_exhausted_at_once_and_counted() {
        let metrics = Arc::new(Metrics::new());
        let (release, held) = tokio::sync::watch::channel(false);
        let layer = InflightLimitLayer::new(2, metrics.clone());
        // One service per connection, as tonic builds them: the cap is shared.
        let (mut a, mut b) = (layer.layer(Held(held.clone())), layer.layer(Held(held)));
        let request = || http::Request::new(());
        let first = tokio::spawn(a.call(request()));
        let second = tokio::spawn(b.call(request()));
        let shed = b.call(request()).await.unwrap();
        assert_eq!(shed.headers().get("grpc-status").unwrap(), "8");
        let message = shed.headers().get("grpc-message").unwrap().to_str().unwrap().to_string();
        assert!(message.contains("--max-inflight-requests"), "{message}");
        let text = metrics.encode().unwrap();
        assert!(text.contains("petkv_requests_shed_total 1"), "{text}");
        assert!(text.contains("petkv_inflight_requests 2"), "{text}");
        release.send_replace(true);
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        // Slots are back.
        let after = metrics.encode().unwrap();
        assert!(after.contains("petkv_inflight_requests 0"), "{after}");
        let ok = a.call(request()).await.unwrap();
        assert!(ok.headers().get("grpc-status").is_none());
    }
}
