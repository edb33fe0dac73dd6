//! The `petkv` command line: `serve`, `wait-primary`, and the client subcommands.
//!
//! Every flag can also be set by a `PETKV_*` environment variable (shown in `--help`), which
//! is how the Kubernetes manifests configure the node.

pub mod output;
pub mod serve;
pub mod txn;

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use petkv_client::tls::{ClientTls, IdentityFiles, TlsError, TlsFiles};
use petkv_client::{Client, ClientError};

/// Default client port.
pub const DEFAULT_CLIENT_PORT: u16 = 7379;
/// Default peer (Raft) port.
pub const DEFAULT_PEER_PORT: u16 = 7380;
/// Default HTTP port (`/metrics`, `/healthz`, `/readyz`).
pub const DEFAULT_HTTP_PORT: u16 = 7381;

#[derive(Debug, Parser)]
#[command(name = "petkv", version, about = "A replicated key-value store that runs as a Kubernetes StatefulSet")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node. Its hostname (petkv-0, petkv-1, …) decides its identity.
    Serve(Box<serve::ServeArgs>),
    /// Init-container step: wait until the set's cluster answers (or return at once if the
    /// volume already has state).
    WaitPrimary(serve::WaitPrimaryArgs),
    /// Write a key.
    Put {
        key: String,
        value: String,
        /// Only write if the key's mod revision equals this (0 = the key must not exist).
        #[arg(long)]
        if_mod_revision: Option<u64>,
        /// Attach the key to this lease: it is deleted when the lease ends.
        #[arg(long)]
        lease: Option<u64>,
        /// Also print the key as it was before the write (its value, revisions and version).
        #[arg(long)]
        prev_kv: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Read a key.
    Get {
        key: String,
        #[arg(long, value_enum, default_value_t = ConsistencyArg::Linearizable, env = "PETKV_CONSISTENCY")]
        consistency: ConsistencyArg,
        /// Read the key as it was at this revision (0 = the latest).
        #[arg(long, default_value_t = 0)]
        rev: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a key.
    Delete {
        key: String,
        /// Only delete if the key's mod revision equals this.
        #[arg(long)]
        if_mod_revision: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List keys by prefix or range.
    Scan {
        /// Keys starting with this prefix.
        #[arg(long, conflicts_with_all = ["start", "end"])]
        prefix: Option<String>,
        /// First key of the range (inclusive).
        #[arg(long)]
        start: Option<String>,
        /// End of the range (exclusive).
        #[arg(long)]
        end: Option<String>,
        /// Keys per page (0 = the server's default).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// Follow page tokens until the range is exhausted.
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value_t = ConsistencyArg::Linearizable, env = "PETKV_CONSISTENCY")]
        consistency: ConsistencyArg,
        /// Read the range as it was at this revision (0 = the latest; with --all every page
        /// reads the revision of the first).
        #[arg(long, default_value_t = 0)]
        rev: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stream the changes to a key (or every key with a prefix, or a range) as they happen;
    /// resumes on another endpoint from the last revision if a stream ends.
    Watch {
        key: String,
        /// Watch every key that starts with KEY (an empty KEY: every key).
        #[arg(long, conflicts_with = "end")]
        prefix: bool,
        /// Watch the range [KEY, END).
        #[arg(long)]
        end: Option<String>,
        /// Start at this revision (0 = the next change); earlier changes are replayed from the
        /// history.
        #[arg(long, default_value_t = 0)]
        rev: u64,
        /// Show each key's value before the change.
        #[arg(long)]
        prev_kv: bool,
        /// Print a progress line when nothing changed for this many milliseconds (0 = never).
        #[arg(long, default_value_t = 0)]
        progress_ms: u32,
        /// Stop after this many events (0 = never).
        #[arg(long, default_value_t = 0)]
        max_events: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Take a lock (waiting for it), hold it until interrupted or until COMMAND exits, then
    /// release it. Its key lives under a lease, so a holder that dies loses the lock within
    /// the TTL.
    Lock {
        name: String,
        /// The lease's TTL, in seconds.
        #[arg(long, default_value_t = 10)]
        ttl: u64,
        /// Run this while holding the lock; its exit status is the command's.
        #[arg(last = true)]
        command: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Campaign in election NAME with PROPOSAL: wait until elected, print it, lead until
    /// interrupted, then resign. With --listen, print the leader's proposal at every change
    /// instead.
    Elect {
        name: String,
        #[arg(required_unless_present = "listen")]
        proposal: Option<String>,
        #[arg(long, conflicts_with = "proposal")]
        listen: bool,
        /// The lease's TTL, in seconds: a leader that dies is replaced within it.
        #[arg(long, default_value_t = 10)]
        ttl: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Leases: keys that disappear when their owner stops keeping the lease alive.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Drop the history before a revision: reads and watches of older revisions are refused
    /// from then on.
    Compact {
        revision: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Compare-and-write atomically: compares, then the success or the failure operations (put,
    /// del, get), at one revision. Read from --file or stdin, in the text form
    /// (`version("k") = 0`, a blank line, `put k v`, a blank line, `get k`) or as JSON; exit
    /// status 3 when the failure branch ran.
    Txn {
        /// The transaction (`-` or none: stdin).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Status of the node behind the first endpoint that answers.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Declare the set's replica count (what `kubectl scale` sets in Kubernetes): ordinals below
    /// it become members, the others are removed (a pod beyond it leaves on SIGTERM).
    Scale {
        replicas: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Every member of the cluster, each with its own status.
    Members {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Take a consistent backup of the cluster (every write acknowledged before it, at one Raft
    /// index) into a checked file.
    Backup(BackupArgs),
    /// Write a development CA and the certificates a set needs (per pod, and one for the CLI)
    /// into a directory; a CA already there is reused. With --client NAME: only a client
    /// certificate for user NAME (its Common Name), for `cert:NAME ROLE` in the tokens file.
    Certs(CertsArgs),
    /// Stage a backup on ordinal 0's empty volume: its next `petkv serve` starts a new cluster
    /// holding the backup's data. Does nothing on other ordinals (they join it empty).
    Restore(RestoreArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// Write the backup to this file.
    #[arg(long, required_unless_present = "out_dir", conflicts_with = "out_dir")]
    pub out: Option<std::path::PathBuf>,
    /// Write the backup into this directory as petkv-backup-<UTC time>-<raft index>.snap and keep
    /// only the newest --keep backups there.
    #[arg(long, env = "PETKV_BACKUP_DIR")]
    pub out_dir: Option<std::path::PathBuf>,
    /// Backups to keep in --out-dir (older ones are removed after the new one checked out).
    #[arg(long, env = "PETKV_BACKUP_KEEP", default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: u32,
    /// Time the whole backup may take, in seconds.
    #[arg(long, env = "PETKV_BACKUP_DEADLINE_SECS", default_value_t = 600)]
    pub deadline_secs: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, Args)]
pub struct CertsArgs {
    /// Where the files go (created if missing): ca.pem, ca-key.pem, <set>-<i>.pem,
    /// <set>-<i>-key.pem, client.pem, client-key.pem.
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Pods to issue certificates for (ordinals 0..replicas).
    #[arg(long, default_value_t = 3)]
    pub replicas: u32,
    /// The StatefulSet's name.
    #[arg(long, default_value = "petkv")]
    pub set: String,
    /// The headless Service (the StatefulSet's serviceName).
    #[arg(long, default_value = "petkv-peers")]
    pub service: String,
    /// The client Service, also named in the pods' certificates.
    #[arg(long, default_value = "petkv")]
    pub client_service: String,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Another name (DNS name or IP address) for every pod's certificate; repeatable.
    #[arg(long = "extra-san")]
    pub extra_sans: Vec<String>,
    /// Validity of the certificates, in days.
    #[arg(long, default_value_t = crate::edge::tls::certs::DEFAULT_VALID_DAYS)]
    pub days: u32,
    /// Replace existing certificates (the CA is always kept).
    #[arg(long)]
    pub force: bool,
    /// Issue only a client certificate for this user (Common Name NAME, files
    /// client-NAME.pem and client-NAME-key.pem) with the CA in --out; repeatable. Pods'
    /// certificates are not touched.
    #[arg(long = "client", value_name = "NAME")]
    pub clients: Vec<String>,
}

impl CertsArgs {
    pub fn spec(&self) -> crate::edge::tls::certs::SetCerts {
        crate::edge::tls::certs::SetCerts {
            set: self.set.clone(),
            replicas: self.replicas,
            service: self.service.clone(),
            client_service: Some(self.client_service.clone()),
            namespace: self.namespace.clone(),
            cluster_domain: self.cluster_domain.clone(),
            shared_names: self.extra_sans.clone(),
            pod_names: Default::default(),
            valid_days: self.days,
            existing: self.existing(),
        }
    }

    /// What to do about certificates already there.
    pub fn existing(&self) -> crate::edge::tls::certs::Existing {
        if self.force {
            crate::edge::tls::certs::Existing::Replace
        } else {
            crate::edge::tls::certs::Existing::Refuse
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The backup file (from `petkv backup`).
    #[arg(long)]
    pub from: std::path::PathBuf,
    /// The volume to stage it on.
    #[arg(long, env = "PETKV_DATA_DIR", default_value = "/var/lib/petkv")]
    pub data_dir: std::path::PathBuf,
    /// The pod whose volume this is (default: the hostname); only ordinal 0 stages the backup.
    /// A pod that is not a member, like the restore Job's, names it: --hostname petkv-0.
    #[arg(long, env = "PETKV_HOSTNAME")]
    pub hostname: Option<String>,
    /// Succeed without change on a volume that already holds the cluster restored from this very
    /// backup (a re-run). A volume with any other state is refused, with or without this flag.
    #[arg(long)]
    pub if_empty: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table, env = "PETKV_OUTPUT")]
    pub output: OutputFormat,
}

/// The pod name to use: the `--hostname` flag if given, else the machine's hostname.
pub fn hostname_or_machines(flag: Option<&str>) -> String {
    flag.map(str::to_string).unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned())
}

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Client endpoints (host:port), comma separated; the client fails over to the next one.
    #[arg(long, env = "PETKV_ENDPOINTS", value_delimiter = ',', default_value = "127.0.0.1:7379")]
    pub endpoints: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table, env = "PETKV_OUTPUT")]
    pub output: OutputFormat,
    /// Overall time a request may take, failovers included, in milliseconds.
    #[arg(long = "timeout-ms", env = "PETKV_TIMEOUT_MS", default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Talk TLS, trusting this CA bundle (PEM) for the nodes' certificates.
    #[arg(long = "ca", env = "PETKV_CA")]
    pub client_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) to present: for nodes that require one (--tls-client-auth),
    /// or as this client's identity (a `cert:NAME ROLE` line in their tokens file). Needs --key.
    #[arg(long = "cert", env = "PETKV_CERT", requires_all = ["client_key", "client_ca"])]
    pub client_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long = "key", env = "PETKV_KEY", requires_all = ["client_cert", "client_ca"])]
    pub client_key: Option<std::path::PathBuf>,
    /// Read a bearer token from this file (its first line) and send it with every request,
    /// for nodes started with --auth-tokens.
    #[arg(long = "token-file", env = "PETKV_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<std::path::PathBuf>,
    /// The bearer token itself (prefer --token-file or the environment: a command line is
    /// visible to other users of the machine).
    #[arg(long = "token", env = "PETKV_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ClientArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The TLS settings, if the client talks TLS (--ca given).
    pub fn tls(&self) -> Result<Option<ClientTls>, TlsError> {
        let Some(ca) = &self.client_ca else { return Ok(None) };
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some(IdentityFiles { cert: cert.clone(), key: key.clone() }),
            _ => None,
        };
        ClientTls::from_files(TlsFiles { ca: ca.clone(), identity }).map(Some)
    }

    /// The bearer token to send, if any (--token, or the first line of --token-file).
    pub fn token(&self) -> Result<Option<String>, ClientError> {
        if let Some(token) = &self.token {
            return Ok(Some(token.clone()));
        }
        let Some(path) = &self.token_file else { return Ok(None) };
        let text = std::fs::read_to_string(path)
            .map_err(|e| ClientError::BadToken(format!("cannot read the token file {}: {e}", path.display())))?;
        match text.lines().map(str::trim).find(|l| !l.is_empty()) {
            Some(token) => Ok(Some(token.to_string())),
            None => Err(ClientError::BadToken(format!("the token file {} is empty", path.display()))),
        }
    }

    /// A client with these endpoints, TLS settings, credentials and timeout.
    pub fn client(&self) -> Result<Client, ClientError> {
        self.client_with_timeout(self.timeout())
    }

    /// [`ClientArgs::client`] with another overall timeout (a backup's deadline).
    pub fn client_with_timeout(&self, timeout: Duration) -> Result<Client, ClientError> {
        let tls = self.tls()?;
        let client = Client::with_tls(&self.endpoints, timeout, tls.as_ref())?;
        match self.token()? {
            Some(token) => client.with_token(&token),
            None => Ok(client),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConsistencyArg {
    Linearizable,
    Stale,
}

impl From<ConsistencyArg> for petkv_client::pb::v1::Consistency {
    fn from(c: ConsistencyArg) -> Self {
        match c {
            ConsistencyArg::Linearizable => petkv_client::pb::v1::Consistency::Linearizable,
            ConsistencyArg::Stale => petkv_client::pb::v1::Consistency::Stale,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn tls_flags_come_in_complete_sets() {
        let serve = |extra: &[&str]| {
            let args = ["petkv", "serve", "--hostname", "petkv-0", "--peers", "0=127.0.0.1:7380"];
            Cli::try_parse_from(args.iter().chain(extra))
        };
        assert!(serve(&["--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"]).is_ok());
        assert!(serve(&["--tls-cert", "c", "--tls-key", "k"]).is_err(), "no CA");
        assert!(serve(&["--peer-tls-cert", "c", "--peer-tls-ca", "a"]).is_err(), "no key");
        assert!(serve(&["--tls-client-auth"]).is_err(), "client auth without TLS");
        let get = |extra: &[&str]| Cli::try_parse_from(["petkv", "get", "k"].iter().chain(extra));
        assert!(get(&["--ca", "a", "--cert", "c", "--key", "k"]).is_ok());
        assert!(get(&["--cert", "c", "--key", "k"]).is_err(), "a client certificate needs the CA");
    }
}

/// `petkv lease …`.
#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease of TTL seconds; prints its id.
    Grant {
        ttl_seconds: u64,
        /// Ask for this id (0: the cluster picks one).
        #[arg(long, default_value_t = 0)]
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Keep a lease alive until interrupted (a renewal every third of its TTL); with --once,
    /// renew it once.
    KeepAlive {
        id: u64,
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a lease: its keys are deleted.
    Revoke {
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A lease's remaining TTL (on the leader's clock), and with --keys its keys.
    Ttl {
        id: u64,
        #[arg(long)]
        keys: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Every lease.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
}
