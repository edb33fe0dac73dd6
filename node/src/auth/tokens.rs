//! The tokens file (`--auth-tokens FILE`) and the lookup of a presented bearer token.
//!
//! One token per line: `TOKEN ROLE [NAME]`, separated by spaces or tabs. `ROLE` is `read`,
//! `write` or `admin`; `NAME` (default `token-<line number>`) is who the token belongs to, as
//! logs name it. Blank lines and lines starting with `#` are ignored. A token is at least
//! [`MIN_TOKEN_LEN`] characters of visible ASCII (it travels in a gRPC header); a token that
//! appears twice is an error. The file is read once, at start.
//!
//! Only SHA-256 digests of the tokens stay in memory. A presented token is hashed and compared
//! with every digest in constant time ([`subtle`]), so neither the time taken nor an error
//! message says how close a guess came; errors never quote a token.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::role::{Role, UnknownRole};

/// Shortest token accepted in the file.
pub const MIN_TOKEN_LEN: usize = 16;

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Role,
}

/// A tokens file that cannot be used. Never quotes a token.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read the tokens file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} line {line}: {detail}")]
    Line { path: PathBuf, line: usize, detail: String },
    #[error("the tokens file {path} holds no tokens")]
    Empty { path: PathBuf },
}

/// The known tokens, as digests.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<([u8; 32], Identity)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("count", &self.entries.len()).finish_non_exhaustive()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Reads and parses a tokens file.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| TokensError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    /// Parses the text of a tokens file; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, TokensError> {
        let mut entries: Vec<([u8; 32], Identity)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let bad = |detail: String| TokensError::Line { path: path.to_path_buf(), line, detail };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = trimmed.split_whitespace().collect();
            let (token, role, name) = match fields.as_slice() {
                [token, role] => (*token, *role, format!("token-{line}")),
                [token, role, name] => (*token, *role, name.to_string()),
                _ => return Err(bad(format!("expected `TOKEN ROLE [NAME]`, found {} fields", fields.len()))),
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(bad(format!("the token is shorter than {MIN_TOKEN_LEN} characters")));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad("the token holds characters other than visible ASCII".into()));
            }
            let role = role
                .parse::<Role>()
                .map_err(|UnknownRole(r)| bad(format!("unknown role {r:?} (read, write or admin)")))?;
            let digest = digest(token);
            if let Some((_, first)) = entries.iter().find(|(d, _)| *d == digest) {
                return Err(bad(format!("the same token as {:?} (each token names one identity)", first.name)));
            }
            entries.push((digest, Identity { name, role }));
        }
        if entries.is_empty() {
            return Err(TokensError::Empty { path: path.to_path_buf() });
        }
        Ok(Self { entries })
    }

    /// The identity a presented token belongs to. Compares against every known token, in
    /// constant time each.
    pub fn identify(&self, token: &str) -> Option<&Identity> {
        let presented = digest(token);
        let mut found = None;
        for (known, identity) in &self.entries {
            if bool::from(known.ct_eq(&presented)) {
                found = Some(identity);
            }
        }
        found
    }

    /// How many tokens the file holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Tokens, TokensError> {
        Tokens::parse(text, Path::new("tokens"))
    }

    #[test]
    fn lines_give_tokens_roles_and_names() {
        let tokens = parse(
            "# who may do what\n\
             \n\
             reader-0123456789abcdef read alice\n\
             \twriter-0123456789abcdef   write\n\
             admin-0123456789abcdef admin ops # not a comment: a fourth field\n",
        );
        let err = tokens.unwrap_err().to_string();
        assert!(err.contains("line 5") && err.contains("found 10 fields"), "{err}");

        let tokens = parse(
            "# who may do what\n\nreader-0123456789abcdef read alice\n\twriter-0123456789abcdef   write\nadmin-0123456789abcdef admin ops\n",
        )
        .unwrap();
        assert_eq!(tokens.len(), 3);
        assert_eq!(
            tokens.identify("reader-0123456789abcdef"),
            Some(&Identity { name: "alice".into(), role: Role::Read })
        );
        assert_eq!(
            tokens.identify("writer-0123456789abcdef"),
            Some(&Identity { name: "token-4".into(), role: Role::Write })
        );
        assert_eq!(tokens.identify("admin-0123456789abcdef").map(|i| i.role), Some(Role::Admin));
        assert_eq!(tokens.identify("admin-0123456789abcde"), None, "a prefix is not the token");
        assert_eq!(tokens.identify(""), None);
        assert!(!format!("{tokens:?}").contains("0123456789"), "Debug shows no token");
    }

    #[test]
    fn bad_files_are_refused_with_the_line_and_without_the_token() {
        let secret = "s3cret-0123456789abcdef";
        for (text, expected) in [
            (format!("{secret} superuser"), "unknown role \"superuser\""),
            (secret.to_string(), "found 1 fields"),
            ("short read".to_string(), "shorter than 16"),
            (format!("{secret} read a\n{secret} admin b"), "line 2: the same token as \"a\""),
            ("# only comments\n\n".to_string(), "holds no tokens"),
        ] {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(!err.contains(secret), "the error quotes the token: {err}");
        }
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let err = Tokens::load(Path::new("/nonexistent/petkv-tokens")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/petkv-tokens"), "{err}");
    }
}
