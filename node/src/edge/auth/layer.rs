//! [`AuthLayer`]: the client port's single check of who may call what.
//!
//! It sits in front of every service on the client port (inside the metrics layer, so a
//! refusal is also counted as a request with its code). For each request it looks up what the
//! path needs ([`super::role::access`]); an open path passes. Otherwise the caller is
//! identified ([`decide`]), first match wins:
//! 1. a request carrying [`FORWARDED_CERT`] (a follower forwarding for a client that it
//!    authenticated by certificate): believed only over a connection whose verified client
//!    certificate names a pod of the set (the same rule as the peer port's); the asserted
//!    subject is then looked up in this node's own tokens file;
//! 2. `authorization: Bearer <token>`, or etcd's `token: <token>`: a token from the tokens file;
//! 3. a verified client certificate (TLS on the client port): its subject name
//!    ([`super::certificate`]) looked up in the `cert:` lines of the tokens file.
//!
//! Refusals:
//! - no credentials, a malformed header, a token the file does not hold, a certificate whose
//!   subject the file does not map, an identity assertion from a connection that is not a pod
//!   of the set: `UNAUTHENTICATED`;
//! - a role too low for the method: `PERMISSION_DENIED`.
//!
//! Each refusal is logged at warn (the identity's name when known, the remote address, the
//! method; never the token) and counted in `petkv_auth_refusals_total{reason, method}`. An
//! accepted request carries its [`Authenticated`] identity in its extensions, which
//! [`crate::api::forward`] reads to forward it. The tokens file is read again when it changes
//! ([`crate::edge::reload`]); each request is checked against the identities in use when it arrives.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use petkv_client::auth::AUTHORIZATION;
use rustls_pki_types::CertificateDer;
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

use super::certificate::subject_name;
use super::role::{access, Access, Role};
use super::tokens::{Identity, Tokens, TokensFile};
use super::FORWARDED_CERT;
use crate::edge::metrics::{AuthRefusal, Metrics, UNKNOWN_METHOD};
use crate::edge::reload::Reloaded;
use crate::edge::tls::verify::names_a_pod;
use crate::edge::tls::PeerNameRule;

/// The metadata in which etcd's clients send the token Authenticate gave them (on the etcd
/// port, a petkv token: [`crate::api::etcd::auth`]).
pub const ETCD_TOKEN: &str = "token";

/// The tokens file in use, reloaded when it changes.
pub type CurrentTokens = Arc<Reloaded<TokensFile>>;

/// Tower layer for the client port's `Server::builder().layer(...)`.
#[derive(Clone)]
pub struct AuthLayer {
    tokens: Option<CurrentTokens>,
    pods: PeerNameRule,
    metrics: Arc<Metrics>,
}

impl AuthLayer {
    /// Checks requests against `tokens`; with none, lets every request through (auth off).
    /// `pods` tells which client certificates are the set's own pods (trusted to forward a
    /// certificate identity).
    pub fn new(tokens: Option<CurrentTokens>, pods: PeerNameRule, metrics: Arc<Metrics>) -> Self {
        Self { tokens, pods, metrics }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, tokens: self.tokens.clone(), pods: self.pods.clone(), metrics: self.metrics.clone() }
    }
}

/// The service [`AuthLayer`] wraps around the client port's routes.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    tokens: Option<CurrentTokens>,
    pods: PeerNameRule,
    metrics: Arc<Metrics>,
}

/// How an accepted request's caller was identified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A bearer token (forwarded as the `authorization` header it came in).
    Token,
    /// A client certificate with this subject name, verified here or by the forwarding pod.
    Certificate(String),
}

/// Who an accepted request is served for: in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub identity: Identity,
    pub credential: Credential,
}

/// Why a request was refused, before it became a [`Status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoCredentials,
    UnknownToken,
    /// A verified certificate whose subject the tokens file does not map.
    UnknownCertificate {
        subject: String,
    },
    /// A verified certificate without a CN or DNS name to go by.
    NamelessCertificate,
    /// A forwarded certificate identity over a connection that is not a pod of the set.
    UntrustedForward,
    RoleTooLow {
        identity: Identity,
        needed: Role,
    },
}

impl Refusal {
    fn kind(&self) -> AuthRefusal {
        match self {
            Refusal::RoleTooLow { .. } => AuthRefusal::PermissionDenied,
            _ => AuthRefusal::Unauthenticated,
        }
    }

    fn status(&self, method: &str) -> Status {
        match self {
            Refusal::NoCredentials => Status::unauthenticated(
                "credentials required: send `authorization: Bearer <token>` or present a client certificate",
            ),
            Refusal::UnknownToken => Status::unauthenticated("unknown token"),
            Refusal::UnknownCertificate { subject } => Status::unauthenticated(format!(
                "the client certificate {subject:?} has no role here (no `cert:{subject}` line in the tokens file)"
            )),
            Refusal::NamelessCertificate => {
                Status::unauthenticated("the client certificate has no Common Name nor DNS name to identify it by")
            }
            Refusal::UntrustedForward => Status::unauthenticated(format!(
                "{FORWARDED_CERT} is accepted only from a pod of the set (a client certificate naming one)"
            )),
            Refusal::RoleTooLow { identity, needed } => {
                Status::permission_denied(format!("role {} may not call {method} (needs {needed})", identity.role))
            }
        }
    }
}

/// The verified client certificate of a request's connection (leaf first), if it has one.
fn client_certificate<B>(req: &http::Request<B>) -> Option<CertificateDer<'static>> {
    let info = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>()?;
    info.peer_certs()?.first().cloned()
}

/// The subject a forwarding pod asserts ([`FORWARDED_CERT`], binary metadata), if any.
fn forwarded_subject<B>(req: &http::Request<B>) -> Option<Result<String, ()>> {
    if !req.headers().contains_key(FORWARDED_CERT) {
        return None;
    }
    let metadata = tonic::metadata::MetadataMap::from_headers(req.headers().clone());
    let value = metadata.get_bin(FORWARDED_CERT)?;
    Some(value.to_bytes().ok().and_then(|b| String::from_utf8(b.to_vec()).ok()).ok_or(()))
}

/// The decision for one request: who it is served for (`None` on an open path).
/// `certificate` is the connection's verified client certificate, if any; `pods` names the
/// set's pods, whose forwarded certificate identities are believed.
pub fn decide<B>(
    tokens: &Tokens,
    pods: &PeerNameRule,
    req: &http::Request<B>,
    certificate: Option<&CertificateDer<'_>>,
) -> Result<Option<Authenticated>, (Refusal, &'static str)> {
    let (needed, method) = match access(req.uri().path()) {
        Access::Open => return Ok(None),
        Access::Needs { role, method } => (role, method),
        Access::Unknown => (Role::Admin, UNKNOWN_METHOD),
    };
    let refuse = |refusal| (refusal, method);
    let by_certificate = |subject: String| match tokens.identify_certificate(&subject) {
        Some(identity) => {
            Ok(Authenticated { identity: identity.clone(), credential: Credential::Certificate(subject) })
        }
        None => Err(refuse(Refusal::UnknownCertificate { subject })),
    };
    let authenticated = if let Some(asserted) = forwarded_subject(req) {
        let from_a_pod = certificate.is_some_and(|c| names_a_pod(pods, c).unwrap_or(false));
        match (from_a_pod, asserted) {
            (true, Ok(subject)) => by_certificate(subject)?,
            _ => return Err(refuse(Refusal::UntrustedForward)),
        }
    } else if let Some(value) = req.headers().get(AUTHORIZATION) {
        let token = value.to_str().ok().and_then(bearer_token);
        let identity = token.and_then(|t| tokens.identify(t)).ok_or(refuse(Refusal::UnknownToken))?;
        Authenticated { identity: identity.clone(), credential: Credential::Token }
    } else if let Some(value) = req.headers().get(ETCD_TOKEN) {
        let identity =
            value.to_str().ok().and_then(|t| tokens.identify(t.trim())).ok_or(refuse(Refusal::UnknownToken))?;
        Authenticated { identity: identity.clone(), credential: Credential::Token }
    } else if let Some(certificate) = certificate {
        by_certificate(subject_name(certificate).ok_or(refuse(Refusal::NamelessCertificate))?)?
    } else {
        return Err(refuse(Refusal::NoCredentials));
    };
    if !authenticated.identity.role.allows(needed) {
        return Err(refuse(Refusal::RoleTooLow { identity: authenticated.identity, needed }));
    }
    Ok(Some(authenticated))
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

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let Some(tokens) = &self.tokens else { return Box::pin(self.inner.call(req)) };
        let certificate = client_certificate(&req);
        match decide(&tokens.peek(), &self.pods, &req, certificate.as_ref()) {
            Ok(authenticated) => {
                if let Some(authenticated) = authenticated {
                    req.extensions_mut().insert(authenticated);
                }
                Box::pin(self.inner.call(req))
            }
            Err((refusal, method)) => {
                let remote = remote_addr(&req).map(|a| a.to_string()).unwrap_or_else(|| "unknown".into());
                let status = refusal.status(method);
                match &refusal {
                    Refusal::RoleTooLow { identity, .. } => {
                        tracing::warn!(identity = %identity.name, role = %identity.role, %remote, method, "permission denied")
                    }
                    Refusal::UnknownCertificate { subject } => {
                        tracing::warn!(certificate = %subject, %remote, method, "unauthenticated request refused: unmapped certificate")
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

    use petkv_client::auth::bearer;

    use super::*;
    use crate::edge::tls::certs::{Authority, LeafSpec};

    const READER: &str = "reader-0123456789abcdef";
    const WRITER: &str = "writer-0123456789abcdef";
    const ADMIN: &str = "admin-0123456789abcdef";

    fn tokens() -> Tokens {
        Tokens::parse(
            &format!("{READER} read r\n{WRITER} write w\n{ADMIN} admin a\ncert:alice read\ncert:bob write bobby\n"),
            Path::new("t"),
        )
        .unwrap()
    }

    fn pods() -> PeerNameRule {
        PeerNameRule::new("petkv", None)
    }

    fn request(path: &str, authorization: Option<&str>) -> http::Request<()> {
        let mut b = http::Request::builder().uri(path);
        if let Some(a) = authorization {
            b = b.header(AUTHORIZATION, a);
        }
        b.body(()).unwrap()
    }

    /// A request stating that a pod verified a certificate with `subject`.
    fn forwarded(path: &str, subject: &str) -> http::Request<()> {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert_bin(FORWARDED_CERT, tonic::metadata::MetadataValue::from_bytes(subject.as_bytes()));
        let mut http = request(path, None);
        *http.headers_mut() = metadata.into_headers();
        http
    }

    fn outcome(path: &str, authorization: Option<&str>) -> Result<Option<String>, Refusal> {
        decide(&tokens(), &pods(), &request(path, authorization), None)
            .map(|i| i.map(|i| i.identity.name))
            .map_err(|(r, _)| r)
    }

    fn with_certificate(
        req: &http::Request<()>,
        certificate: &CertificateDer<'_>,
    ) -> Result<Option<Authenticated>, Refusal> {
        decide(&tokens(), &pods(), req, Some(certificate)).map_err(|(r, _)| r)
    }

    #[test]
    fn requests_are_allowed_by_role_and_refused_without_credentials() {
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
        assert_eq!(outcome("/petkv.v1.KV/Get", Some("Bearer cert:alice")), Err(Refusal::UnknownToken));
    }

    #[test]
    fn client_certificates_are_identified_by_subject_and_a_token_goes_first() {
        let ca = Authority::generate("test CA").unwrap();
        let cert = |name: &str| CertificateDer::from(ca.issue(&LeafSpec::client(name)).unwrap().cert_der);
        let (alice, bob, carol) = (cert("alice"), cert("bob"), cert("carol"));

        let got = with_certificate(&request("/petkv.v1.KV/Get", None), &alice).unwrap().unwrap();
        assert_eq!(got.identity, Identity { name: "alice".into(), role: Role::Read });
        assert_eq!(got.credential, Credential::Certificate("alice".into()));
        assert!(matches!(
            with_certificate(&request("/petkv.v1.KV/Put", None), &alice),
            Err(Refusal::RoleTooLow { needed: Role::Write, .. })
        ));
        let got = with_certificate(&request("/petkv.v1.KV/Put", None), &bob).unwrap().unwrap();
        assert_eq!((got.identity.name.as_str(), got.identity.role), ("bobby", Role::Write));
        assert_eq!(
            with_certificate(&request("/petkv.v1.KV/Get", None), &carol),
            Err(Refusal::UnknownCertificate { subject: "carol".into() }),
            "verified but not in the file"
        );
        // A token, when sent, is what counts (an unknown one is not rescued by the certificate).
        let got =
            with_certificate(&request("/petkv.v1.KV/Put", Some(&format!("Bearer {WRITER}"))), &alice).unwrap().unwrap();
        assert_eq!(got.credential, Credential::Token);
        assert_eq!(
            with_certificate(&request("/petkv.v1.KV/Get", Some("Bearer nope-0123456789abcdef")), &bob),
            Err(Refusal::UnknownToken)
        );
    }

    #[test]
    fn a_forwarded_certificate_subject_is_believed_only_from_a_pod() {
        let ca = Authority::generate("test CA").unwrap();
        let pod = CertificateDer::from(ca.issue(&LeafSpec::server("petkv-1", &["petkv-1".into()])).unwrap().cert_der);
        let other_set = CertificateDer::from(ca.issue(&LeafSpec::server("kv-1", &["kv-1".into()])).unwrap().cert_der);
        let named_like_a_pod = CertificateDer::from(ca.issue(&LeafSpec::client("petkv-1")).unwrap().cert_der);

        let got = with_certificate(&forwarded("/petkv.v1.KV/Put", "bob"), &pod).unwrap().unwrap();
        assert_eq!(got.credential, Credential::Certificate("bob".into()));
        assert!(matches!(
            with_certificate(&forwarded("/petkv.v1.KV/Put", "alice"), &pod),
            Err(Refusal::RoleTooLow { needed: Role::Write, .. })
        ));
        assert_eq!(
            with_certificate(&forwarded("/petkv.v1.KV/Get", "mallory"), &pod),
            Err(Refusal::UnknownCertificate { subject: "mallory".into() })
        );
        for (what, certificate) in [("another set", &other_set), ("a CN without a DNS name", &named_like_a_pod)] {
            assert_eq!(
                with_certificate(&forwarded("/petkv.v1.KV/Put", "bob"), certificate),
                Err(Refusal::UntrustedForward),
                "{what}"
            );
        }
        let no_certificate = decide(&tokens(), &pods(), &forwarded("/petkv.v1.KV/Put", "bob"), None);
        assert_eq!(no_certificate.map_err(|(r, _)| r), Err(Refusal::UntrustedForward));
        // Even with a good token next to it: a forged statement is refused, not ignored.
        let mut forged = forwarded("/petkv.v1.KV/Put", "bob");
        forged.headers_mut().insert(AUTHORIZATION, format!("Bearer {WRITER}").parse().unwrap());
        assert_eq!(decide(&tokens(), &pods(), &forged, None).map_err(|(r, _)| r), Err(Refusal::UntrustedForward));
    }

    #[test]
    fn refusal_messages_name_the_role_and_method_but_not_the_token() {
        let denied =
            Refusal::RoleTooLow { identity: Identity { name: "r".into(), role: Role::Read }, needed: Role::Write };
        let status = denied.status("/petkv.v1.KV/Put");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(status.message(), "role read may not call /petkv.v1.KV/Put (needs write)");
        assert_eq!(Refusal::UnknownToken.status("/petkv.v1.KV/Get").code(), tonic::Code::Unauthenticated);
        let unmapped = Refusal::UnknownCertificate { subject: "carol".into() }.status("/petkv.v1.KV/Get");
        assert_eq!(unmapped.code(), tonic::Code::Unauthenticated);
        assert!(unmapped.message().contains("cert:carol"), "{}", unmapped.message());
        assert_eq!(Refusal::UntrustedForward.status("/petkv.v1.KV/Get").code(), tonic::Code::Unauthenticated);
    }
}
