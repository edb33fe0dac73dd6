//! The identity a client certificate claims: its subject name, as `cert:` lines of the tokens
//! file name it ([`super::tokens`]).
//!
//! The subject name is the certificate's Common Name, or, for a certificate without one, its
//! first DNS subject alternative name (as etcd's `--client-cert-auth` takes the CN as the user
//! name). Only certificates that rustls has already verified against the client port's CA
//! bundle are looked at; this module parses, it does not verify.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The subject name of a DER certificate, if it has one (a CN or a DNS name) that is UTF-8.
pub fn subject_name(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let common_name = cert.subject().iter_common_name().find_map(|cn| cn.as_str().ok()).filter(|cn| !cn.is_empty());
    if let Some(cn) = common_name {
        return Some(cn.to_string());
    }
    let names = cert.subject_alternative_name().ok()??;
    names.value.general_names.iter().find_map(|name| match name {
        GeneralName::DNSName(dns) if !dns.is_empty() => Some(dns.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::tls::certs::{Authority, LeafSpec};

    #[test]
    fn the_common_name_else_the_first_dns_name_names_the_certificate() {
        let ca = Authority::generate("test CA").unwrap();
        let alice = ca.issue(&LeafSpec::client("alice")).unwrap();
        assert_eq!(subject_name(&alice.cert_der).as_deref(), Some("alice"));
        let pod = ca.issue(&LeafSpec::server("petkv-0", &["petkv-0".into(), "localhost".into()])).unwrap();
        assert_eq!(subject_name(&pod.cert_der).as_deref(), Some("petkv-0"));
        let no_cn = ca.issue(&LeafSpec::server("", &["svc.example".into(), "other.example".into()])).unwrap();
        assert_eq!(subject_name(&no_cn.cert_der).as_deref(), Some("svc.example"));
        assert_eq!(subject_name(b"not a certificate"), None);
    }
}
