//! The set's tokens file when it runs with authentication (`up --auth`): one admin token for
//! the harness's own connections (readiness, status, scaling, the workload and checker), and a
//! write and a read token for the user. Written once into `<state_dir>/auth/tokens` (mode
//! 0600) and handed to every pod as `PETKV_AUTH_TOKENS`. [`ClusterAuth::rewrite`] replaces
//! the file's content while the pods run (they read it again when it changes).

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
        write_private(&file, &auth.text(&[], true))?;
        Ok(auth)
    }

    /// The file's text: the harness's token, the user tokens unless left out, and `extra` lines.
    fn text(&self, extra: &[String], with_user_tokens: bool) -> String {
        let mut text = format!("# petkv-harness tokens: TOKEN ROLE NAME\n{} admin {HARNESS}\n", self.admin);
        if with_user_tokens {
            text.push_str(&format!("{} write {USER_WRITE}\n{} read {USER_READ}\n", self.write, self.read));
        }
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Replaces the file, whole (a temporary file renamed into place, mode 0600), with the
    /// harness's token, the user tokens unless `with_user_tokens` is false, and `extra` lines
    /// (more tokens, `cert:SUBJECT ROLE` lines). The pods pick it up within their reload
    /// interval; [`ClusterAuth::open_in`] still finds the file's tokens afterwards only if the
    /// user tokens were kept.
    pub fn rewrite(&self, extra: &[String], with_user_tokens: bool) -> anyhow::Result<()> {
        use std::io::Write;
        let dir = self.file.parent().unwrap_or(Path::new("."));
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir).with_context(|| format!("create a file in {}", dir.display()))?;
        tmp.write_all(self.text(extra, with_user_tokens).as_bytes())
            .with_context(|| format!("write {}", tmp.path().display()))?;
        tmp.persist(&self.file).with_context(|| format!("replace {}", self.file.display()))?;
        Ok(())
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
