//! The tokens file (`--auth-tokens FILE`): who may do what, by bearer token or by client
//! certificate, and the lookup of a presented credential.
//!
//! One identity per line, fields separated by spaces or tabs:
//! - `TOKEN ROLE [NAME]`: a bearer token. `NAME` (default `token-<line number>`) is who the
//!   token belongs to, as logs name it. A token is at least [`MIN_TOKEN_LEN`] characters of
//!   visible ASCII (it travels in a gRPC header).
//! - `cert:SUBJECT ROLE [NAME]`: a client certificate (verified against the client port's CA
//!   bundle) whose subject name is `SUBJECT`: its Common Name, or, without one, its first DNS
//!   name ([`super::certificate`]). Compared exactly (case matters). `NAME` defaults to
//!   `SUBJECT`. Needs TLS on the client port.
//!
//! `ROLE` is `read`, `write` or `admin`. Blank lines and lines starting with `#` are ignored.
//! A token or a subject that appears twice is an error, and so is a file with neither. The
//! file is read at start and again whenever it changes ([`TokensFile`] is a
//! [`crate::edge::reload::Source`]): a file that does not parse keeps the identities in use.
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
/// The prefix of a line that maps a client certificate's subject to a role.
pub const CERT_PREFIX: &str = "cert:";

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
    #[error("the tokens file {path} holds no tokens and no certificates")]
    Empty { path: PathBuf },
    #[error(
        "the tokens file {path} maps client certificates (`cert:` lines) but the client port has no TLS \
         (--tls-cert, --tls-key, --tls-ca)"
    )]
    CertificatesWithoutTls { path: PathBuf },
}

/// The known tokens, as digests, and the known certificate subjects.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<([u8; 32], Identity)>,
    certificates: Vec<(String, Identity)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("tokens", &self.entries.len())
            .field("certificates", &self.certificates.len())
            .finish_non_exhaustive()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Reads and parses a tokens file (for a client port with TLS: `cert:` lines allowed).
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        use crate::edge::reload::Source;
        let file = TokensFile { path: path.to_path_buf(), client_tls: true };
        file.build(&file.read()?)
    }

    /// Parses the text of a tokens file; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, TokensError> {
        let mut entries: Vec<([u8; 32], Identity)> = Vec::new();
        let mut certificates: Vec<(String, Identity)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let bad = |detail: String| TokensError::Line { path: path.to_path_buf(), line, detail };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = trimmed.split_whitespace().collect();
            let (credential, role, name) = match fields.as_slice() {
                [credential, role] => (*credential, *role, None),
                [credential, role, name] => (*credential, *role, Some(name.to_string())),
                _ => {
                    return Err(bad(format!(
                        "expected `TOKEN ROLE [NAME]` or `cert:SUBJECT ROLE [NAME]`, found {} fields",
                        fields.len()
                    )))
                }
            };
            let role = role
                .parse::<Role>()
                .map_err(|UnknownRole(r)| bad(format!("unknown role {r:?} (read, write or admin)")))?;
            if let Some(subject) = credential.strip_prefix(CERT_PREFIX) {
                if subject.is_empty() {
                    return Err(bad("`cert:` names no certificate subject".into()));
                }
                if let Some((_, first)) = certificates.iter().find(|(s, _)| s == subject) {
                    return Err(bad(format!("the certificate subject {subject:?} again (first as {:?})", first.name)));
                }
                let name = name.unwrap_or_else(|| subject.to_string());
                certificates.push((subject.to_string(), Identity { name, role }));
                continue;
            }
            let (token, name) = (credential, name.unwrap_or_else(|| format!("token-{line}")));
            if token.len() < MIN_TOKEN_LEN {
                return Err(bad(format!("the token is shorter than {MIN_TOKEN_LEN} characters")));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad("the token holds characters other than visible ASCII".into()));
            }
            let digest = digest(token);
            if let Some((_, first)) = entries.iter().find(|(d, _)| *d == digest) {
                return Err(bad(format!("the same token as {:?} (each token names one identity)", first.name)));
            }
            entries.push((digest, Identity { name, role }));
        }
        if entries.is_empty() && certificates.is_empty() {
            return Err(TokensError::Empty { path: path.to_path_buf() });
        }
        Ok(Self { entries, certificates })
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

    /// The identity a verified client certificate with subject name `subject` belongs to.
    pub fn identify_certificate(&self, subject: &str) -> Option<&Identity> {
        self.certificates.iter().find(|(s, _)| s == subject).map(|(_, identity)| identity)
    }

    /// How many tokens the file holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many certificate subjects the file maps.
    pub fn certificates(&self) -> usize {
        self.certificates.len()
    }
}

/// The tokens file as a [`crate::edge::reload::Source`]: read at start, and again when it changes.
#[derive(Debug, Clone)]
pub struct TokensFile {
    pub path: PathBuf,
    /// Whether the client port serves TLS (without it, `cert:` lines are refused).
    pub client_tls: bool,
}

impl crate::edge::reload::Source for TokensFile {
    type Contents = Vec<u8>;
    type Value = Tokens;
    type Error = TokensError;
    const KIND: &'static str = "tokens file";
    const TAKES_EFFECT: &'static str = "new tokens and certificate roles in use for new requests";

    fn read(&self) -> Result<Vec<u8>, TokensError> {
        std::fs::read(&self.path).map_err(|source| TokensError::Read { path: self.path.clone(), source })
    }

    fn build(&self, contents: &Vec<u8>) -> Result<Tokens, TokensError> {
        let text = std::str::from_utf8(contents).map_err(|e| TokensError::Line {
            path: self.path.clone(),
            line: contents[..e.valid_up_to()].iter().filter(|b| **b == b'\n').count() + 1,
            detail: "not UTF-8 text".into(),
        })?;
        let tokens = Tokens::parse(text, &self.path)?;
        if tokens.certificates() > 0 && !self.client_tls {
            return Err(TokensError::CertificatesWithoutTls { path: self.path.clone() });
        }
        Ok(tokens)
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
            ("# only comments\n\n".to_string(), "holds no tokens and no certificates"),
        ] {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(!err.contains(secret), "the error quotes the token: {err}");
        }
    }

    #[test]
    fn cert_lines_map_certificate_subjects_to_roles() {
        let tokens = parse(
            "cert:alice read\n\
             cert:backup.petkv.example admin backup-job\n\
             reader-0123456789abcdef read carol\n",
        )
        .unwrap();
        assert_eq!((tokens.len(), tokens.certificates()), (1, 2));
        assert_eq!(tokens.identify_certificate("alice"), Some(&Identity { name: "alice".into(), role: Role::Read }));
        assert_eq!(
            tokens.identify_certificate("backup.petkv.example"),
            Some(&Identity { name: "backup-job".into(), role: Role::Admin })
        );
        assert_eq!(tokens.identify_certificate("Alice"), None, "subjects are exact");
        assert_eq!(tokens.identify_certificate("carol"), None, "a token's name is not a certificate");
        assert_eq!(tokens.identify("cert:alice"), None, "a cert line is not a token");
        assert_eq!(tokens.identify("reader-0123456789abcdef").map(|i| i.name.as_str()), Some("carol"));

        let only_certs = parse("cert:alice write\n").unwrap();
        assert!(only_certs.is_empty() && only_certs.certificates() == 1, "a file of certificates only is fine");

        for (text, expected) in [
            ("cert: read", "line 1: `cert:` names no certificate subject"),
            ("cert:alice root", "unknown role \"root\""),
            (
                "cert:alice read a\ncert:alice admin b",
                "line 2: the certificate subject \"alice\" again (first as \"a\")",
            ),
            ("cert:alice read a b", "found 4 fields"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn cert_lines_need_tls_on_the_client_port_and_bad_bytes_name_the_line() {
        use crate::edge::reload::Source;
        let file = |client_tls| TokensFile { path: "tokens".into(), client_tls };
        let text = b"reader-0123456789abcdef read\ncert:alice read\n".to_vec();
        let err = file(false).build(&text).unwrap_err();
        assert!(matches!(err, TokensError::CertificatesWithoutTls { .. }), "{err}");
        assert_eq!(file(true).build(&text).unwrap().certificates(), 1);
        assert_eq!(file(false).build(&b"reader-0123456789abcdef read\n".to_vec()).unwrap().len(), 1);
        let err = file(true).build(&b"reader-0123456789abcdef read\ncert:\xff read\n".to_vec()).unwrap_err();
        assert!(err.to_string().contains("line 2: not UTF-8"), "{err}");
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let err = Tokens::load(Path::new("/nonexistent/petkv-tokens")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/petkv-tokens"), "{err}");
    }
}
