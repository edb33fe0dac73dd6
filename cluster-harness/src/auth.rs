//! The set's tokens file when it runs with authentication (`up --auth`): one admin token for
//! the harness's own connections (readiness, status, scaling, the workload and checker), and a
//! write and a read token for the user. Written once into `<state_dir>/auth/tokens` (mode
//! 0600) and handed to every pod as `PETKV_AUTH_TOKENS`.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Names of the three identities in the file.
pub const HARNESS: &str = "harness";
pub const USER_WRITE: &str = "user-write";
pub const USER_READ: &str = "user-read";

/// The set's tokens.
#[derive(Debug, Clone)]
pub struct ClusterAuth {
    file: PathBuf,
    pub admin: String,
    pub write: String,
    pub read: String,
}

fn random_token() -> String {
    (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

impl ClusterAuth {
    /// The tokens in `<dir>/auth/tokens`, issued now if the file is not there yet.
    pub fn issue_or_open(dir: &Path) -> anyhow::Result<Self> {
        let file = Self::file_in(dir);
        if file.exists() {
            return Self::open(&file);
        }
        let auth = Self { file: file.clone(), admin: random_token(), write: random_token(), read: random_token() };
        let dir = file.parent().unwrap_or(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let text = format!(
            "# petkv-harness tokens: TOKEN ROLE NAME\n{} admin {HARNESS}\n{} write {USER_WRITE}\n{} read {USER_READ}\n",
            auth.admin, auth.write, auth.read
        );
        write_private(&file, &text)?;
        Ok(auth)
    }

    /// The tokens already issued into `<dir>/auth/tokens`.
    pub fn open_in(dir: &Path) -> anyhow::Result<Self> {
        Self::open(&Self::file_in(dir))
    }

    fn file_in(dir: &Path) -> PathBuf {
        dir.join("auth").join("tokens")
    }

    fn open(file: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
        let token_of = |name: &str| {
            text.lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .find(|f| f.len() == 3 && f[2] == name)
                .map(|f| f[0].to_string())
                .with_context(|| format!("{} has no token named {name}", file.display()))
        };
        Ok(Self {
            file: file.to_path_buf(),
            admin: token_of(HARNESS)?,
            write: token_of(USER_WRITE)?,
            read: token_of(USER_READ)?,
        })
    }

    /// The tokens file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The environment that turns authentication on for a pod.
    pub fn pod_env(&self) -> Vec<(String, String)> {
        vec![("PETKV_AUTH_TOKENS".to_string(), self.file.display().to_string())]
    }
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("write {}", path.display()))
}
