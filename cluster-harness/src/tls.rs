//! The set's certificates when the harness runs it with TLS (`up --tls`, `ClusterSpec::tls`):
//! issued into `<state dir>/tls/` by petkv's own `petkv certs` code
//! ([`petkv::edge::tls::certs::write_set`]), one certificate per pod naming the pod's address too,
//! and a client certificate that the harness's own connections (clients, readiness and status
//! probes, the workload and its checker) present. A state dir keeps its certificates: a
//! restarted `up`, or a scale-up, issues only the missing ones with the same CA.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use petkv::edge::tls::certs::{self, Existing, SetCerts};
use petkv_client::tls::{ClientTls, IdentityFiles, TlsFiles};

/// Directory of the certificates inside a state dir.
pub const TLS_DIR: &str = "tls";

/// The set's certificates and the harness's own TLS client.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    dir: PathBuf,
    set: String,
    client: ClientTls,
}

impl ClusterTls {
    /// Issues what is missing for pods `ordinals` of `set` into `<state_dir>/tls`; `names_of`
    /// gives the extra names (addresses) of each pod's certificate.
    pub fn issue(
        state_dir: &Path,
        set: &str,
        ordinals: std::ops::Range<u32>,
        names_of: impl Fn(u32) -> Vec<String>,
    ) -> anyhow::Result<Self> {
        let dir = state_dir.join(TLS_DIR);
        Self::issue_into(&dir, set, ordinals, names_of)?;
        Self::open(&dir, set)
    }

    fn issue_into(
        dir: &Path,
        set: &str,
        ordinals: std::ops::Range<u32>,
        names_of: impl Fn(u32) -> Vec<String>,
    ) -> anyhow::Result<()> {
        let spec = SetCerts {
            set: set.to_string(),
            replicas: ordinals.end,
            pod_names: ordinals.map(|o| (o, names_of(o))).collect::<BTreeMap<_, _>>(),
            existing: Existing::Keep,
            ..Default::default()
        };
        certs::write_set(dir, &spec)
            .with_context(|| format!("issuing the set's certificates into {}", dir.display()))?;
        Ok(())
    }

    /// The certificates already in `dir` (the harness's client identity is read now).
    pub fn open(dir: &Path, set: &str) -> anyhow::Result<Self> {
        let files = TlsFiles {
            ca: dir.join(certs::CA_CERT),
            identity: Some(IdentityFiles { cert: dir.join(certs::CLIENT_CERT), key: dir.join(certs::CLIENT_KEY) }),
        };
        let client = ClientTls::from_files(files).context("loading the harness's client certificate")?;
        Ok(Self { dir: dir.to_path_buf(), set: set.to_string(), client })
    }

    /// Issues the certificate of a pod added later (a scale-up), if it has none yet.
    pub fn add_pod(&self, ordinal: u32, names: Vec<String>) -> anyhow::Result<()> {
        Self::issue_into(
            &self.dir,
            &self.set,
            0..ordinal + 1,
            |o| if o == ordinal { names.clone() } else { Vec::new() },
        )
    }

    /// Where the certificates are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How the harness dials the pods' client ports.
    pub fn client(&self) -> &ClientTls {
        &self.client
    }

    /// The CA bundle.
    pub fn ca(&self) -> PathBuf {
        self.dir.join(certs::CA_CERT)
    }

    /// Pod `ordinal`'s certificate and key.
    pub fn pod_files(&self, ordinal: u32) -> (PathBuf, PathBuf) {
        certs::pod_files(&self.dir, &self.set, ordinal)
    }

    /// The environment that turns TLS on for pod `ordinal` (both ports, one certificate), read
    /// by `petkv serve` and by the `wait-primary` init step alike.
    pub fn pod_env(&self, ordinal: u32) -> Vec<(String, String)> {
        let (cert, key) = self.pod_files(ordinal);
        let (cert, key, ca) = (cert.display().to_string(), key.display().to_string(), self.ca().display().to_string());
        [
            ("PETKV_TLS_CERT", &cert),
            ("PETKV_TLS_KEY", &key),
            ("PETKV_TLS_CA", &ca),
            ("PETKV_PEER_TLS_CERT", &cert),
            ("PETKV_PEER_TLS_KEY", &key),
            ("PETKV_PEER_TLS_CA", &ca),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
    }
}
