//! Certificate verifiers that always ask the current material ([`Reloading`]), so a rotated
//! CA bundle is trusted from the next handshake on.
//!
//! - [`CurrentServerVerifier`]: the client side: the server's certificate chains to the CA
//!   bundle and is valid for the name dialed (webpki).
//! - [`ClientCertCheck`]: the server side: the client's certificate chains to the CA bundle
//!   and, on the peer port, names a pod of the set ([`PeerNameRule`]).

use std::sync::Arc;

use petkv_client::tls::provider;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use super::{PeerNameRule, Reloading};

/// Handshake signature checks, the same on both sides and independent of the CA bundle (the
/// provider's algorithms, as webpki's verifiers use them): the three methods that
/// `ServerCertVerifier` and `ClientCertVerifier` share.
macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            algorithms().supported_schemes()
        }
    };
}

fn algorithms() -> rustls::crypto::WebPkiSupportedAlgorithms {
    provider().signature_verification_algorithms
}

/// Verifies servers against the current CA bundle.
#[derive(Debug)]
pub struct CurrentServerVerifier(pub Arc<Reloading>);

impl ServerCertVerifier for CurrentServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.0.current().server_verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    signature_checks!();
}

/// Checks a client certificate: it must chain to the current CA bundle and, with a
/// [`PeerNameRule`], name a pod of the set. `mandatory`: a client without one is refused (else
/// it gets through without a certificate, and whatever it presents is still verified).
#[derive(Debug)]
pub struct ClientCertCheck {
    material: Arc<Reloading>,
    names: Option<PeerNameRule>,
    mandatory: bool,
}

/// Whether a certificate (already verified to chain to the CA) names a pod of the set by
/// `rule`: one of its own (non-wildcard) DNS names names a pod, confirmed with webpki's name
/// check, as webpki asks for.
pub fn names_a_pod(rule: &PeerNameRule, end_entity: &CertificateDer<'_>) -> Result<bool, webpki::Error> {
    let cert = webpki::EndEntityCert::try_from(end_entity)?;
    Ok(cert
        .valid_dns_names()
        .filter(|n| rule.pod_of(n).is_some())
        .any(|n| ServerName::try_from(n).is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())))
}

impl ClientCertCheck {
    pub fn new(material: Arc<Reloading>, names: Option<PeerNameRule>, mandatory: bool) -> Self {
        Self { material, names, mandatory }
    }

    /// The peer name rule applied to a certificate that already chains to the CA.
    fn check_name(&self, rule: &PeerNameRule, end_entity: &CertificateDer<'_>) -> Result<(), Error> {
        let names_a_pod = names_a_pod(rule, end_entity)
            .map_err(|e| Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e)))))?;
        if names_a_pod {
            return Ok(());
        }
        Err(Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(NotAPodOfTheSet {
            wanted: rule.describe(),
        })))))
    }
}

/// A client certificate that chains to the CA but names no pod of the set.
#[derive(Debug, thiserror::Error)]
#[error("the client certificate names no pod of the set (wanted a DNS name {wanted})")]
pub struct NotAPodOfTheSet {
    pub wanted: String,
}

impl ClientCertVerifier for ClientCertCheck {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: a client sends the one certificate it has.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self.material.current().client_verifier.verify_client_cert(end_entity, intermediates, now)?;
        if let Some(rule) = &self.names {
            self.check_name(rule, end_entity)?;
        }
        Ok(verified)
    }

    signature_checks!();
}
