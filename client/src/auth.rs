//! Bearer tokens on the wire: a client sends `authorization: Bearer <token>`
//! ([`crate::Client::with_token`]); a node started with `--auth-tokens` looks the token up.

/// The metadata key that carries a bearer token (`authorization: Bearer <token>`).
pub const AUTHORIZATION: &str = "authorization";

/// The `authorization` value for `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_sent_as_a_bearer_credential() {
        assert_eq!(bearer("abc"), "Bearer abc");
    }
}
