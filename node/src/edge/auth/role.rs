//! Roles and the role each client-port RPC needs.
//!
//! Roles are ordered: `admin` may do everything `write` may, `write` everything `read` may.
//! - `read`: Get, Scan, Watch, Status, Members, LeaseTimeToLive, LeaseLeases.
//! - `write`: Put, Delete, Txn (a transaction's reads need no more than its writes),
//!   LeaseGrant, LeaseRevoke, LeaseKeepAlive.
//! - `admin`: Scale (the declared replica count, hence membership), Backup (every key) and
//!   Compact (the history other clients may still read).
//!
//! etcd's API on the etcd port follows the same lines: reads (Range, Watch, TimeToLive,
//! Leases, MemberList, Status, Alarm list) need `read`; writes and leases `write`; Compact,
//! Snapshot and the membership and maintenance calls `admin`.
//!
//! etcd's Authenticate is open too (it is how an etcd client gets a token).
//!
//! gRPC health and reflection stay open: they reveal no keys or values, and the kubelet's
//! probes carry no credentials. Any other path (a method added later, a made-up path) needs
//! `admin`, so a new RPC is closed until it is placed in the table.

use std::fmt;
use std::str::FromStr;

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    /// True when this role may call something that needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is none of `read`, `write`, `admin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?} (expected read, write or admin)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(UnknownRole(other.to_string())),
        }
    }
}

/// What a request path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials needed (health, reflection).
    Open,
    /// A known method that needs at least this role; `method` is its path (a bounded label).
    Needs { role: Role, method: &'static str },
    /// A path the table does not know: treated as needing `admin`.
    Unknown,
}

/// Every RPC of `petkv.v1`, and of etcd's v3 API on the etcd port, and the role it needs.
pub const METHODS: [(&str, Role); 57] = [
    ("/petkv.v1.KV/Get", Role::Read),
    ("/petkv.v1.KV/Scan", Role::Read),
    ("/petkv.v1.KV/Watch", Role::Read),
    ("/petkv.v1.KV/Compact", Role::Admin),
    ("/petkv.v1.Cluster/Status", Role::Read),
    ("/petkv.v1.Cluster/Members", Role::Read),
    ("/petkv.v1.KV/Put", Role::Write),
    ("/petkv.v1.KV/Delete", Role::Write),
    ("/petkv.v1.KV/Txn", Role::Write),
    ("/petkv.v1.Lease/LeaseGrant", Role::Write),
    ("/petkv.v1.Lease/LeaseRevoke", Role::Write),
    ("/petkv.v1.Lease/LeaseKeepAlive", Role::Write),
    ("/petkv.v1.Lease/LeaseTimeToLive", Role::Read),
    ("/petkv.v1.Lease/LeaseLeases", Role::Read),
    ("/petkv.v1.Cluster/Scale", Role::Admin),
    ("/petkv.v1.Cluster/Backup", Role::Admin),
    ("/etcdserverpb.KV/Range", Role::Read),
    ("/etcdserverpb.KV/RangeStream", Role::Read),
    ("/etcdserverpb.KV/Put", Role::Write),
    ("/etcdserverpb.KV/DeleteRange", Role::Write),
    ("/etcdserverpb.KV/Txn", Role::Write),
    ("/etcdserverpb.KV/Compact", Role::Admin),
    ("/etcdserverpb.Watch/Watch", Role::Read),
    ("/etcdserverpb.Lease/LeaseGrant", Role::Write),
    ("/etcdserverpb.Lease/LeaseRevoke", Role::Write),
    ("/etcdserverpb.Lease/LeaseKeepAlive", Role::Write),
    ("/etcdserverpb.Lease/LeaseTimeToLive", Role::Read),
    ("/etcdserverpb.Lease/LeaseLeases", Role::Read),
    ("/etcdserverpb.Cluster/MemberList", Role::Read),
    ("/etcdserverpb.Cluster/MemberAdd", Role::Admin),
    ("/etcdserverpb.Cluster/MemberRemove", Role::Admin),
    ("/etcdserverpb.Cluster/MemberUpdate", Role::Admin),
    ("/etcdserverpb.Cluster/MemberPromote", Role::Admin),
    ("/etcdserverpb.Maintenance/Status", Role::Read),
    ("/etcdserverpb.Maintenance/Alarm", Role::Read),
    ("/etcdserverpb.Maintenance/Snapshot", Role::Admin),
    ("/etcdserverpb.Maintenance/Defragment", Role::Admin),
    ("/etcdserverpb.Maintenance/Hash", Role::Admin),
    ("/etcdserverpb.Maintenance/HashKV", Role::Admin),
    ("/etcdserverpb.Maintenance/MoveLeader", Role::Admin),
    ("/etcdserverpb.Maintenance/Downgrade", Role::Admin),
    ("/etcdserverpb.Auth/AuthStatus", Role::Read),
    ("/etcdserverpb.Auth/AuthEnable", Role::Admin),
    ("/etcdserverpb.Auth/AuthDisable", Role::Admin),
    ("/etcdserverpb.Auth/UserAdd", Role::Admin),
    ("/etcdserverpb.Auth/UserGet", Role::Admin),
    ("/etcdserverpb.Auth/UserList", Role::Admin),
    ("/etcdserverpb.Auth/UserDelete", Role::Admin),
    ("/etcdserverpb.Auth/UserChangePassword", Role::Admin),
    ("/etcdserverpb.Auth/UserGrantRole", Role::Admin),
    ("/etcdserverpb.Auth/UserRevokeRole", Role::Admin),
    ("/etcdserverpb.Auth/RoleAdd", Role::Admin),
    ("/etcdserverpb.Auth/RoleGet", Role::Admin),
    ("/etcdserverpb.Auth/RoleList", Role::Admin),
    ("/etcdserverpb.Auth/RoleDelete", Role::Admin),
    ("/etcdserverpb.Auth/RoleGrantPermission", Role::Admin),
    ("/etcdserverpb.Auth/RoleRevokePermission", Role::Admin),
];

/// Services whose every method is open.
const OPEN_SERVICES: [&str; 4] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    // How an etcd client turns a name and password into a token: it has none before.
    ETCD_AUTHENTICATE,
];

/// etcd's Authenticate, open like the services above.
const ETCD_AUTHENTICATE: &str = "/etcdserverpb.Auth/Authenticate";

/// The methods of the open services that the client and etcd ports serve.
const OPEN_METHODS: [&str; 5] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ETCD_AUTHENTICATE,
];

/// The method at `path` if the client port serves it: the one table the auth, limit and
/// metrics layers name methods by. Any other path (a client chooses it freely, and may not
/// even be authenticated) is `None`, so it can never become a metrics label.
pub fn known_method(path: &str) -> Option<&'static str> {
    METHODS.iter().map(|&(method, _)| method).chain(OPEN_METHODS).find(|m| *m == path)
}

/// What a request to `path` (`/package.Service/Method`) needs.
pub fn access(path: &str) -> Access {
    if OPEN_SERVICES.iter().any(|s| path.starts_with(s)) {
        return Access::Open;
    }
    METHODS
        .iter()
        .find(|(m, _)| *m == path)
        .map(|&(method, role)| Access::Needs { role, method })
        .unwrap_or(Access::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_admin_over_write_over_read() {
        assert!(Role::Admin.allows(Role::Write) && Role::Admin.allows(Role::Read) && Role::Admin.allows(Role::Admin));
        assert!(Role::Write.allows(Role::Read) && Role::Write.allows(Role::Write));
        assert!(!Role::Write.allows(Role::Admin));
        assert!(!Role::Read.allows(Role::Write) && !Role::Read.allows(Role::Admin));
        for role in [Role::Read, Role::Write, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert_eq!("Admin".parse::<Role>(), Err(UnknownRole("Admin".into())), "names are exact");
    }

    #[test]
    fn each_method_needs_its_role() {
        let needs = |path| match access(path) {
            Access::Needs { role, method } => {
                assert_eq!(method, path);
                Some(role)
            }
            _ => None,
        };
        assert_eq!(needs("/petkv.v1.KV/Get"), Some(Role::Read));
        assert_eq!(needs("/petkv.v1.KV/Scan"), Some(Role::Read));
        assert_eq!(needs("/petkv.v1.Cluster/Status"), Some(Role::Read));
        assert_eq!(needs("/petkv.v1.Cluster/Members"), Some(Role::Read));
        assert_eq!(needs("/petkv.v1.KV/Put"), Some(Role::Write));
        assert_eq!(needs("/petkv.v1.KV/Delete"), Some(Role::Write));
        assert_eq!(needs("/petkv.v1.Cluster/Scale"), Some(Role::Admin));
        assert_eq!(needs("/petkv.v1.Cluster/Backup"), Some(Role::Admin));
        assert_eq!(needs("/petkv.v1.KV/Watch"), Some(Role::Read));
        assert_eq!(needs("/petkv.v1.KV/Txn"), Some(Role::Write));
        assert_eq!(needs("/petkv.v1.KV/Compact"), Some(Role::Admin));
    }

    #[test]
    fn health_and_reflection_are_open_and_anything_else_is_unknown() {
        assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(access("/grpc.health.v1.Health/Watch"), Access::Open);
        assert_eq!(access("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), Access::Open);
        for path in
            ["/petkv.v1.KV/Defragment", "/petkv.v1.KV/get", "/petkv.v1.KV/Get/", "/", "/grpc.health.v1.Healthz/Check"]
        {
            assert_eq!(access(path), Access::Unknown, "{path}");
        }
    }
}
