//! `petkv certs`: a development CA and the certificates a set needs, issued with rcgen.
//!
//! For a set `<set>` of `replicas` pods behind the headless Service `<service>` in
//! `<namespace>`, it writes into one directory:
//!
//! | file | what |
//! |---|---|
//! | `ca.pem`, `ca-key.pem` | the CA (kept: a second run reuses it to issue more or new certificates) |
//! | `<set>-<i>.pem`, `<set>-<i>-key.pem` | pod `i`: server and client certificate (serverAuth and clientAuth) |
//! | `client.pem`, `client-key.pem` | a client certificate for the CLI and the backup job (clientAuth) |
//! | `client-<name>.pem`, `client-<name>-key.pem` | with `--client <name>` ([`write_clients`]): a user's client certificate, Common Name `<name>` (a `cert:<name> ROLE` line of the tokens file gives it a role) |
//!
//! A pod's certificate names the pod every way it is dialed: `<set>-<i>`, then
//! `<set>-<i>.<service>`, `.<namespace>`, `.svc` and `.svc.<cluster domain>` (the peer port;
//! the last one is what [`super::PeerNameRule`] checks), the client Service the same ways
//! (clients reaching any pod through it), and `localhost`, `127.0.0.1` and `::1` for local
//! runs; plus any extra names. Files are written whole or not at all (a temporary file renamed
//! into place), keys readable by the owner only, and an existing certificate is replaced only
//! when asked: a running node picks the new one up by itself ([`super::reload`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use time::OffsetDateTime;

/// How long a new CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates are valid from a little before they were made (clocks differ).
const BACKDATE: Duration = Duration::from_secs(3600);
/// File names of the CA.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
/// File names of the client certificate.
pub const CLIENT_CERT: &str = "client.pem";
pub const CLIENT_KEY: &str = "client-key.pem";

/// What can go wrong issuing or writing certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
    #[error("the CA in {cert} and {key} cannot be used: {detail}")]
    BadCa { cert: PathBuf, key: PathBuf, detail: String },
    #[error("{existing} exists but {missing} does not: give both CA files, or neither for a new CA")]
    HalfCa { existing: PathBuf, missing: PathBuf },
    #[error("{0} already exists; pass --force to replace the certificates (the CA is kept)")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}

/// A certificate authority that can issue certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// One issued certificate and its key.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
}

/// What a leaf certificate is for.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub common_name: String,
    /// Subject alternative names: DNS names, or IP addresses written as such.
    pub names: Vec<String>,
    /// serverAuth (a node's ports) besides clientAuth.
    pub server: bool,
    pub valid_for: Duration,
}

/// Default validity of a leaf certificate.
pub const DEFAULT_VALID_DAYS: u32 = 365;

impl LeafSpec {
    /// A node's certificate: serves both ports and authenticates the node when it dials.
    pub fn server(common_name: &str, names: &[String]) -> Self {
        Self {
            common_name: common_name.to_string(),
            names: names.to_vec(),
            server: true,
            valid_for: days(DEFAULT_VALID_DAYS),
        }
    }

    /// A client's certificate (the CLI, the backup job): client authentication only.
    pub fn client(common_name: &str) -> Self {
        Self {
            common_name: common_name.to_string(),
            names: Vec::new(),
            server: false,
            valid_for: days(DEFAULT_VALID_DAYS),
        }
    }
}

fn days(n: u32) -> Duration {
    Duration::from_secs(u64::from(n) * 24 * 3600)
}

fn generate_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> CertError {
    let what = what.into();
    move |source| CertError::Generate { what, source }
}

/// A random positive serial number (RFC 5280: at most 20 octets, positive).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, valid_for: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + valid_for;
}

impl Authority {
    /// A new self-signed CA.
    pub fn generate(common_name: &str) -> Result<Self, CertError> {
        let key = KeyPair::generate().map_err(generate_err("the CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key).map_err(generate_err("the CA certificate"))?;
        Ok(Self { issuer: Issuer::new(params, key), cert_pem: cert.pem() })
    }

    /// An existing CA from its certificate and key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, rcgen::Error> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self { issuer, cert_pem: cert_pem.to_string() })
    }

    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a certificate with a new key and a new random serial number.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Issued, CertError> {
        let what = format!("the certificate of {}", spec.common_name);
        let key = KeyPair::generate().map_err(generate_err(format!("the key of {}", spec.common_name)))?;
        let mut params = CertificateParams::new(spec.names.clone()).map_err(generate_err(what.clone()))?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, spec.common_name.as_str());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if spec.server {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        validity(&mut params, spec.valid_for);
        let cert = params.signed_by(&key, &self.issuer).map_err(generate_err(what))?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), cert_der: cert.der().to_vec() })
    }
}

/// What `petkv certs` issues.
#[derive(Debug, Clone)]
pub struct SetCerts {
    /// The StatefulSet's name (pods `<set>-0`, `<set>-1`, …).
    pub set: String,
    pub replicas: u32,
    /// The headless Service (the StatefulSet's `serviceName`).
    pub service: String,
    /// The client Service, also named in every pod's certificate.
    pub client_service: Option<String>,
    pub namespace: String,
    pub cluster_domain: String,
    /// Extra names in every pod's certificate.
    pub shared_names: Vec<String>,
    /// Extra names in one pod's certificate (the harness: the pod's own address).
    pub pod_names: BTreeMap<u32, Vec<String>>,
    pub valid_days: u32,
    /// What to do about certificates already in the directory (the CA is always kept).
    pub existing: Existing,
}

/// What [`write_set`] does with a certificate whose files exist already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Existing {
    /// Fail before writing anything.
    #[default]
    Refuse,
    /// Issue a new one in its place (a rotation).
    Replace,
    /// Leave it; issue only the missing ones (new ordinals).
    Keep,
}

impl Default for SetCerts {
    fn default() -> Self {
        Self {
            set: "petkv".into(),
            replicas: 3,
            service: "petkv-peers".into(),
            client_service: Some("petkv".into()),
            namespace: "default".into(),
            cluster_domain: "cluster.local".into(),
            shared_names: Vec::new(),
            pod_names: BTreeMap::new(),
            valid_days: DEFAULT_VALID_DAYS,
            existing: Existing::Refuse,
        }
    }
}

impl SetCerts {
    /// The headless Service's domain: what `--peer-domain` says in Kubernetes.
    pub fn peer_domain(&self) -> String {
        format!("{}.{}.svc.{}", self.service, self.namespace, self.cluster_domain)
    }

    /// Every name pod `ordinal`'s certificate carries.
    pub fn names_of(&self, ordinal: u32) -> Vec<String> {
        let pod = format!("{}-{ordinal}", self.set);
        let ns = &self.namespace;
        let forms = |host: &str| {
            vec![
                host.to_string(),
                format!("{host}.{ns}"),
                format!("{host}.{ns}.svc"),
                format!("{host}.{ns}.svc.{}", self.cluster_domain),
            ]
        };
        let mut names = vec![pod.clone()];
        names.extend(forms(&format!("{pod}.{}", self.service)));
        if let Some(client) = &self.client_service {
            names.extend(forms(client));
        }
        names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
        names.extend(self.shared_names.iter().cloned());
        names.extend(self.pod_names.get(&ordinal).into_iter().flatten().cloned());
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        names
    }

    fn check(&self) -> Result<(), CertError> {
        if self.replicas == 0 {
            return Err(CertError::Invalid("--replicas must be at least 1".into()));
        }
        if self.valid_days == 0 {
            return Err(CertError::Invalid("--days must be at least 1".into()));
        }
        let first = format!("{}-0", self.set);
        crate::pod::identity::parse_hostname(&first)
            .map_err(|_| CertError::Invalid(format!("--set {:?} does not give pod names like {first}", self.set)))?;
        Ok(())
    }
}

/// The files of the client certificate of user `name` in the certificates directory.
pub fn client_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (dir.join(format!("client-{name}.pem")), dir.join(format!("client-{name}-key.pem")))
}

/// A user name for a client certificate: its Common Name, and part of its file names, so
/// letters, digits, `.`, `_`, `@` and `-`, not starting with `.` or `-`.
fn check_client_name(name: &str) -> Result<(), CertError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
    if name.is_empty() || name.starts_with(['.', '-']) || !name.chars().all(allowed) {
        return Err(CertError::Invalid(format!(
            "--client {name:?}: a user name is letters, digits, '.', '_', '@' and '-' (not first)"
        )));
    }
    Ok(())
}

/// Issues a client certificate for each of `names` (Common Name = the name, clientAuth only)
/// into `dir` (created if missing), with the CA found there or a new one; existing ones are
/// refused, replaced or kept as `existing` says. Pods' certificates are left alone.
pub fn write_clients(dir: &Path, names: &[String], valid_days: u32, existing: Existing) -> Result<Written, CertError> {
    if valid_days == 0 {
        return Err(CertError::Invalid("--days must be at least 1".into()));
    }
    names.iter().try_for_each(|n| check_client_name(n))?;
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write { path: dir.to_path_buf(), source })?;
    let leaves = names
        .iter()
        .map(|name| {
            let (cert, key) = client_files(dir, name);
            let mut leaf = LeafSpec::client(name);
            leaf.valid_for = days(valid_days);
            (cert, key, leaf)
        })
        .collect();
    // A CA made here is named for the directory's purpose, not a set.
    let spec = SetCerts { set: "petkv".into(), namespace: "clients".into(), ..Default::default() };
    issue_leaves(dir, &spec, leaves, existing)
}

/// The files of pod `ordinal` in the certificates directory.
pub fn pod_files(dir: &Path, set: &str, ordinal: u32) -> (PathBuf, PathBuf) {
    (dir.join(format!("{set}-{ordinal}.pem")), dir.join(format!("{set}-{ordinal}-key.pem")))
}

/// What [`write_set`] did.
#[derive(Debug, Clone)]
pub struct Written {
    /// Whether a new CA was made (else the one in the directory was used).
    pub new_ca: bool,
    /// Every certificate and key written, CA first.
    pub files: Vec<PathBuf>,
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Read { path: path.to_path_buf(), source })
}

/// Writes `text` to `path` whole and durably (a node reading the file sees the old or the new
/// content, never half of one). `secret` files are readable by their owner only.
fn write_whole(path: &Path, text: &str, secret: bool) -> Result<(), CertError> {
    let mode = if secret { 0o600 } else { 0o644 };
    crate::support::durable::write_atomically_with_mode(path, text.as_bytes(), Some(mode))
        .map_err(|source| CertError::Write { path: path.to_path_buf(), source })
}

/// The CA in `dir`, or a new one written there.
fn ca_in(dir: &Path, spec: &SetCerts, written: &mut Written) -> Result<Authority, CertError> {
    let (cert, key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    match (cert.exists(), key.exists()) {
        (true, true) => {
            return Authority::from_pem(&read(&cert)?, &read(&key)?).map_err(|e| CertError::BadCa {
                cert,
                key,
                detail: e.to_string(),
            })
        }
        (true, false) => return Err(CertError::HalfCa { existing: cert, missing: key }),
        (false, true) => return Err(CertError::HalfCa { existing: key, missing: cert }),
        (false, false) => {}
    }
    let ca = Authority::generate(&format!("petkv CA for {}.{}", spec.set, spec.namespace))?;
    write_whole(&key, &ca.key_pem(), true)?;
    write_whole(&cert, &ca.cert_pem(), false)?;
    written.new_ca = true;
    written.files.extend([cert, key]);
    Ok(ca)
}

/// Issues the set's certificates into `dir` (created if missing), with the CA found there or
/// a new one; certificates already there are refused, replaced or kept as `spec.existing` says.
pub fn write_set(dir: &Path, spec: &SetCerts) -> Result<Written, CertError> {
    spec.check()?;
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write { path: dir.to_path_buf(), source })?;
    let mut leaves: Vec<(PathBuf, PathBuf, LeafSpec)> = (0..spec.replicas)
        .map(|o| {
            let (cert, key) = pod_files(dir, &spec.set, o);
            let mut leaf = LeafSpec::server(&format!("{}-{o}", spec.set), &spec.names_of(o));
            leaf.valid_for = days(spec.valid_days);
            (cert, key, leaf)
        })
        .collect();
    let mut client = LeafSpec::client(&format!("{}-client", spec.set));
    client.valid_for = days(spec.valid_days);
    leaves.push((dir.join(CLIENT_CERT), dir.join(CLIENT_KEY), client));
    issue_leaves(dir, spec, leaves, spec.existing)
}

/// Issues `leaves` (certificate file, key file, what) with the CA in `dir`, or a new one made
/// for `spec`; certificates already there are refused, replaced or kept as `existing` says.
fn issue_leaves(
    dir: &Path,
    spec: &SetCerts,
    mut leaves: Vec<(PathBuf, PathBuf, LeafSpec)>,
    existing: Existing,
) -> Result<Written, CertError> {
    let exists = |(cert, key, _): &(PathBuf, PathBuf, LeafSpec)| cert.exists() || key.exists();
    match existing {
        Existing::Refuse => {
            if let Some(existing) = leaves.iter().flat_map(|(c, k, _)| [c, k]).find(|p| p.exists()) {
                return Err(CertError::Exists(existing.clone()));
            }
        }
        Existing::Keep => leaves.retain(|leaf| !exists(leaf)),
        Existing::Replace => {}
    }
    let mut written = Written { new_ca: false, files: Vec::new() };
    let ca = ca_in(dir, spec, &mut written)?;
    for (cert, key, leaf) in leaves {
        let issued = ca.issue(&leaf)?;
        write_whole(&key, &issued.key_pem, true)?;
        write_whole(&cert, &issued.cert_pem, false)?;
        written.files.extend([cert, key]);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    #[test]
    fn pod_certificates_name_the_pod_every_way_it_is_dialed() {
        let spec = SetCerts { namespace: "db".into(), ..Default::default() };
        let names = spec.names_of(1);
        for want in [
            "petkv-1",
            "petkv-1.petkv-peers",
            "petkv-1.petkv-peers.db.svc.cluster.local",
            "petkv.db.svc",
            "localhost",
            "127.0.0.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
        }
        assert_eq!(spec.peer_domain(), "petkv-peers.db.svc.cluster.local");
    }

    #[test]
    fn a_second_run_reuses_the_ca_and_refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SetCerts { replicas: 2, ..Default::default() };
        let first = write_set(dir.path(), &spec).unwrap();
        assert!(first.new_ca);
        assert!(dir.path().join("petkv-1-key.pem").exists() && dir.path().join(CLIENT_CERT).exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("petkv-0-key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "keys are the owner's only");
        let ca_before = std::fs::read(dir.path().join(CA_CERT)).unwrap();
        let pod_before = std::fs::read(dir.path().join("petkv-0.pem")).unwrap();

        let err = write_set(dir.path(), &spec).unwrap_err();
        assert!(matches!(err, CertError::Exists(_)), "{err}");
        assert_eq!(std::fs::read(dir.path().join("petkv-0.pem")).unwrap(), pod_before, "nothing touched");

        let grown = SetCerts { replicas: 3, existing: Existing::Keep, ..spec.clone() };
        let kept = write_set(dir.path(), &grown).unwrap();
        assert_eq!(kept.files, vec![dir.path().join("petkv-2.pem"), dir.path().join("petkv-2-key.pem")]);
        assert_eq!(std::fs::read(dir.path().join("petkv-0.pem")).unwrap(), pod_before, "kept");

        let again = write_set(dir.path(), &SetCerts { existing: Existing::Replace, ..spec }).unwrap();
        assert!(!again.new_ca);
        assert_eq!(std::fs::read(dir.path().join(CA_CERT)).unwrap(), ca_before, "the CA is kept");
        assert_ne!(std::fs::read(dir.path().join("petkv-0.pem")).unwrap(), pod_before, "a new certificate");
    }

    #[test]
    fn user_client_certificates_are_issued_with_the_sets_ca() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), &SetCerts { replicas: 1, ..Default::default() }).unwrap();
        let pod_before = std::fs::read(dir.path().join("petkv-0.pem")).unwrap();
        let names = vec!["alice".to_string(), "backup@ops".to_string()];
        let written = write_clients(dir.path(), &names, 30, Existing::Refuse).unwrap();
        assert!(!written.new_ca, "the set's CA is used");
        let (cert, key) = client_files(dir.path(), "alice");
        assert_eq!(written.files[..2], [cert.clone(), key]);
        let der = CertificateDer::from_pem_file(&cert).unwrap();
        assert_eq!(crate::edge::auth::certificate::subject_name(&der).as_deref(), Some("alice"));
        assert_eq!(std::fs::read(dir.path().join("petkv-0.pem")).unwrap(), pod_before, "pods untouched");

        let err = write_clients(dir.path(), &names[..1], 30, Existing::Refuse).unwrap_err();
        assert!(matches!(err, CertError::Exists(_)), "{err}");
        assert!(write_clients(dir.path(), &names[..1], 30, Existing::Replace).is_ok());
        for bad in ["", "../x", "-rf", "a b", ".hidden", "a/b"] {
            let err = write_clients(dir.path(), &[bad.to_string()], 30, Existing::Refuse).unwrap_err();
            assert!(matches!(err, CertError::Invalid(_)), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_missing_half_of_the_ca_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CA_CERT), "x").unwrap();
        let err = write_set(dir.path(), &SetCerts::default()).unwrap_err();
        assert!(matches!(err, CertError::HalfCa { .. }), "{err}");
        assert!(!dir.path().join("petkv-0.pem").exists());
    }
}

/// `petkv_client::tls::Material` on certificates issued here: what loads, and the errors of
/// files that do not.
#[cfg(test)]
mod material_tests {
    use std::path::{Path, PathBuf};

    use petkv_client::tls::{IdentityFiles, Material, TlsError, TlsFiles};

    use super::{Authority, LeafSpec};

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_matching_pair_and_ca_load() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::generate("test CA").unwrap();
        let leaf = ca.issue(&LeafSpec::server("petkv-0", &["petkv-0".into()])).unwrap();
        let files = TlsFiles {
            ca: write(dir.path(), "ca.pem", &ca.cert_pem()),
            identity: Some(IdentityFiles {
                cert: write(dir.path(), "c.pem", &leaf.cert_pem),
                key: write(dir.path(), "k.pem", &leaf.key_pem),
            }),
        };
        let m = Material::load(&files).unwrap();
        assert!(m.identity.is_some());
    }

    #[test]
    fn bad_files_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::generate("test CA").unwrap();
        let a = ca.issue(&LeafSpec::server("petkv-0", &["petkv-0".into()])).unwrap();
        let b = ca.issue(&LeafSpec::server("petkv-1", &["petkv-1".into()])).unwrap();
        let ca_path = write(dir.path(), "ca.pem", &ca.cert_pem());
        let files = |cert: &str, key: &str| TlsFiles {
            ca: ca_path.clone(),
            identity: Some(IdentityFiles {
                cert: write(dir.path(), "c.pem", cert),
                key: write(dir.path(), "k.pem", key),
            }),
        };
        let err = Material::load(&files(&a.cert_pem, &b.key_pem)).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        let half = &a.cert_pem[..a.cert_pem.len() / 2];
        let err = Material::load(&files(half, &a.key_pem)).unwrap_err();
        assert!(err.to_string().contains("c.pem"), "{err}");
        let err = Material::load(&files("", &a.key_pem)).unwrap_err();
        assert!(matches!(err, TlsError::Empty { .. }), "{err}");
        let missing = TlsFiles { ca: dir.path().join("nope.pem"), identity: None };
        let err = Material::load(&missing).unwrap_err();
        assert!(err.to_string().contains("nope.pem"), "{err}");
    }
}
