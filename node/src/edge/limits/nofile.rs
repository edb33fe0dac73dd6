//! The process's open-file limit: raised from its soft value to the hard one at start, as Go
//! programs (etcd) do, so the connection caps rather than `EMFILE` decide how many clients a
//! node holds.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The soft `RLIMIT_NOFILE` before and after the attempt to raise it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    pub before: u64,
    pub now: u64,
}

/// Raises the soft open-file limit to the hard limit. An error leaves the limit as it was.
pub fn raise_to_hard() -> nix::Result<NofileLimit> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let (now, _) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(NofileLimit { before: soft, now })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let limit = raise_to_hard().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((limit.now, soft), (hard, hard));
        assert!(limit.before <= limit.now);
    }
}
