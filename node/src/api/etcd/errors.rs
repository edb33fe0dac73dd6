//! petkv's statuses as etcd's: the codes and message strings of etcd's `rpctypes`, which
//! client libraries match on (a compacted revision, a lease not found, no leader, no space).
//! Any other status keeps its code and says what petkv said, after etcd's `etcdserver: `.

use tonic::{Code, Status};

pub const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
pub const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
pub const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
pub const LEASE_EXISTS: &str = "etcdserver: lease already exists";
pub const NO_LEADER: &str = "etcdserver: no leader";
pub const LEADER_CHANGED: &str = "etcdserver: leader changed";
pub const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";
pub const TIMEOUT: &str = "etcdserver: request timed out";
pub const KEY_NOT_FOUND: &str = "etcdserver: key not found";
pub const EMPTY_KEY: &str = "etcdserver: key is not provided";
pub const VALUE_PROVIDED: &str = "etcdserver: value is provided";
pub const LEASE_PROVIDED: &str = "etcdserver: lease is provided";
pub const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
pub const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";

/// The leadership moved while the request was served; the client retries.
pub fn leader_changed() -> Status {
    Status::unavailable(LEADER_CHANGED)
}

/// `status` from petkv's handlers as etcd would have answered.
pub fn to_etcd(status: Status) -> Status {
    let message = status.message();
    match status.code() {
        Code::FailedPrecondition if message.contains("has been compacted") => Status::out_of_range(COMPACTED),
        Code::OutOfRange if message.contains("future revision") => Status::out_of_range(FUTURE_REV),
        Code::NotFound if message.contains("lease") => Status::not_found(LEASE_NOT_FOUND),
        Code::AlreadyExists if message.contains("lease") => Status::failed_precondition(LEASE_EXISTS),
        Code::Unavailable if message.contains("no leader") => Status::unavailable(NO_LEADER),
        Code::Unavailable if message.contains("leadership moved") || message.contains("stepping down") => {
            Status::unavailable(LEADER_CHANGED)
        }
        Code::ResourceExhausted if message.contains("reserve") => Status::resource_exhausted(NO_SPACE),
        Code::DeadlineExceeded => Status::unavailable(TIMEOUT),
        Code::InvalidArgument if message.contains("key must not be empty") => Status::invalid_argument(EMPTY_KEY),
        Code::InvalidArgument if message.contains("more than once") => Status::invalid_argument(DUPLICATE_KEY),
        Code::InvalidArgument if message.contains("entries, over the limit") => Status::invalid_argument(TOO_MANY_OPS),
        code if message.starts_with("etcdserver: ") => Status::new(code, message),
        code => Status::new(code, format!("etcdserver: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::revision_status;
    use crate::store::command::RevisionError;

    #[test]
    fn revision_errors_read_as_etcds() {
        let compacted = to_etcd(revision_status(RevisionError::Compacted { requested: 1, compacted: 5 }));
        assert_eq!((compacted.code(), compacted.message()), (Code::OutOfRange, COMPACTED));
        let future = to_etcd(revision_status(RevisionError::Future { requested: 9, current: 5 }));
        assert_eq!((future.code(), future.message()), (Code::OutOfRange, FUTURE_REV));
    }

    #[test]
    fn other_statuses_keep_their_code_and_say_etcdserver() {
        let s = to_etcd(Status::permission_denied("role read may not call Put"));
        assert_eq!((s.code(), s.message()), (Code::PermissionDenied, "etcdserver: role read may not call Put"));
        let lease = to_etcd(crate::api::lease::lease_status(crate::store::command::LeaseError::NotFound(7)));
        assert_eq!((lease.code(), lease.message()), (Code::NotFound, LEASE_NOT_FOUND));
    }
}
