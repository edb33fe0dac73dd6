//! [`AuthLayer`]: the client port's single check of who may call what.
//!
//! It sits in front of every service on the client port (inside the metrics layer, so a
//! refusal is also counted as a request with its code). For each request it looks up what the
//! path needs ([`super::role::access`]); an open path passes. Otherwise the request must carry
//! `authorization: Bearer <token>` with a token from the tokens file, whose role must allow the
//! method:
//! - no credentials, a malformed header or a token the file does not hold: `UNAUTHENTICATED`;
//! - a role too low for the method: `PERMISSION_DENIED`.
//!
//! Each refusal is logged at warn (the identity's name when known, the remote address, the
//! method; never the token) and counted in `petkv_auth_refusals_total{reason, method}`.
//! Requests forwarded by a follower carry the client's `authorization` metadata
//! ([`crate::api::forward`]) and are checked here again like any other.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tonic::Status;

use super::role::{access, Access, Role};
use super::tokens::{Identity, Tokens};
use super::AUTHORIZATION;
use crate::metrics::{AuthRefusal, Metrics, UNKNOWN_METHOD};

/// Tower layer for the client port's `Server::builder().layer(...)`.
#[derive(Clone)]
pub struct AuthLayer {
    tokens: Option<Arc<Tokens>>,
    metrics: Arc<Metrics>,
}

impl AuthLayer {
    /// Checks requests against `tokens`; with none, lets every request through (auth off).
    pub fn new(tokens: Option<Arc<Tokens>>, metrics: Arc<Metrics>) -> Self {
        Self { tokens, metrics }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, tokens: self.tokens.clone(), metrics: self.metrics.clone() }
    }
}

/// The service [`AuthLayer`] wraps around the client port's routes.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    tokens: Option<Arc<Tokens>>,
    metrics: Arc<Metrics>,
}

/// Why a request was refused, before it became a [`Status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoCredentials,
    UnknownToken,
    RoleTooLow { identity: Identity, needed: Role },
}

impl Refusal {
    fn kind(&self) -> AuthRefusal {
        match self {
            Refusal::NoCredentials | Refusal::UnknownToken => AuthRefusal::Unauthenticated,
            Refusal::RoleTooLow { .. } => AuthRefusal::PermissionDenied,
        }
    }

    fn status(&self, method: &str) -> Status {
        match self {
            Refusal::NoCredentials => {
                Status::unauthenticated("credentials required: send `authorization: Bearer <token>`")
            }
            Refusal::UnknownToken => Status::unauthenticated("unknown token"),
            Refusal::RoleTooLow { identity, needed } => {
                Status::permission_denied(format!("role {} may not call {method} (needs {needed})", identity.role))
            }
        }
    }
}

/// The decision for one request: the identity it is served for (`None` on an open path).
pub fn decide<B>(tokens: &Tokens, req: &http::Request<B>) -> Result<Option<Identity>, (Refusal, &'static str)> {
    let (needed, method) = match access(req.uri().path()) {
        Access::Open => return Ok(None),
        Access::Needs { role, method } => (role, method),
        Access::Unknown => (Role::Admin, UNKNOWN_METHOD),
    };
    let token = match req.headers().get(AUTHORIZATION) {
        None => return Err((Refusal::NoCredentials, method)),
        Some(value) => value.to_str().ok().and_then(bearer_token),
    };
    let identity = token.and_then(|t| tokens.identify(t)).ok_or((Refusal::UnknownToken, method))?;
    if !identity.role.allows(needed) {
        return Err((Refusal::RoleTooLow { identity: identity.clone(), needed }, method));
    }
    Ok(Some(identity.clone()))
}

/// The token of a `Bearer <token>` header value (the scheme is case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The client's address, over TLS or not (tonic's `Request::remote_addr` knows where each
/// transport keeps it; only called for a refusal).
fn remote_addr<B>(req: &http::Request<B>) -> Option<SocketAddr> {
    let mut probe = http::Request::new(());
    *probe.extensions_mut() = req.extensions().clone();
    tonic::Request::from_http(probe).remote_addr()
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for AuthService<S>
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
        let Some(tokens) = &self.tokens else { return Box::pin(self.inner.call(req)) };
        match decide(tokens, &req) {
            Ok(_) => Box::pin(self.inner.call(req)),
            Err((refusal, method)) => {
                let remote = remote_addr(&req).map(|a| a.to_string()).unwrap_or_else(|| "unknown".into());
                let status = refusal.status(method);
                match &refusal {
                    Refusal::RoleTooLow { identity, .. } => {
                        tracing::warn!(identity = %identity.name, role = %identity.role, %remote, method, "permission denied")
                    }
                    _ => tracing::warn!(%remote, method, reason = status.message(), "unauthenticated request refused"),
                }
                self.metrics.record_auth_refusal(refusal.kind(), method);
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const READER: &str = "reader-0123456789abcdef";
    const WRITER: &str = "writer-0123456789abcdef";
    const ADMIN: &str = "admin-0123456789abcdef";

    fn tokens() -> Tokens {
        Tokens::parse(&format!("{READER} read r\n{WRITER} write w\n{ADMIN} admin a\n"), Path::new("t")).unwrap()
    }

    fn request(path: &str, authorization: Option<&str>) -> http::Request<()> {
        let mut b = http::Request::builder().uri(path);
        if let Some(a) = authorization {
            b = b.header(AUTHORIZATION, a);
        }
        b.body(()).unwrap()
    }

    fn outcome(path: &str, authorization: Option<&str>) -> Result<Option<String>, Refusal> {
        decide(&tokens(), &request(path, authorization)).map(|i| i.map(|i| i.name)).map_err(|(r, _)| r)
    }

    #[test]
    fn requests_are_allowed_by_role_and_refused_without_credentials() {
        let bearer = |t: &str| format!("Bearer {t}");
        assert_eq!(outcome("/grpc.health.v1.Health/Check", None), Ok(None), "health is open");
        assert_eq!(outcome("/petkv.v1.KV/Get", None), Err(Refusal::NoCredentials));
        assert_eq!(outcome("/petkv.v1.KV/Get", Some(&bearer("nope-0123456789abcdef"))), Err(Refusal::UnknownToken));
        assert_eq!(outcome("/petkv.v1.KV/Get", Some(READER)), Err(Refusal::UnknownToken), "no scheme");
        assert_eq!(outcome("/petkv.v1.KV/Get", Some("Basic abc")), Err(Refusal::UnknownToken));
        assert_eq!(outcome("/petkv.v1.KV/Get", Some(&bearer(READER))), Ok(Some("r".into())));
        assert_eq!(outcome("/petkv.v1.KV/Get", Some(&format!("bearer  {READER}"))), Ok(Some("r".into())));
        assert!(matches!(
            outcome("/petkv.v1.KV/Put", Some(&bearer(READER))),
            Err(Refusal::RoleTooLow { needed: Role::Write, .. })
        ));
        assert_eq!(outcome("/petkv.v1.KV/Put", Some(&bearer(WRITER))), Ok(Some("w".into())));
        assert!(matches!(
            outcome("/petkv.v1.Cluster/Scale", Some(&bearer(WRITER))),
            Err(Refusal::RoleTooLow { needed: Role::Admin, .. })
        ));
        assert_eq!(outcome("/petkv.v1.Cluster/Backup", Some(&bearer(ADMIN))), Ok(Some("a".into())));
        assert!(matches!(
            outcome("/petkv.v1.KV/Unheard", Some(&bearer(WRITER))),
            Err(Refusal::RoleTooLow { needed: Role::Admin, .. })
        ));
    }

    #[test]
    fn refusal_messages_name_the_role_and_method_but_not_the_token() {
        let denied =
            Refusal::RoleTooLow { identity: Identity { name: "r".into(), role: Role::Read }, needed: Role::Write };
        let status = denied.status("/petkv.v1.KV/Put");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(status.message(), "role read may not call /petkv.v1.KV/Put (needs write)");
        assert_eq!(Refusal::UnknownToken.status("/petkv.v1.KV/Get").code(), tonic::Code::Unauthenticated);
    }
}
