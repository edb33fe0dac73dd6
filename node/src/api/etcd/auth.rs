//! etcd's `Auth` service on petkv's authentication: a user is a line of the tokens file
//! (`--auth-tokens`, `TOKEN ROLE NAME`) and its password is its token.
//!
//! - Authenticate(name, password): the token back when `password` is a token of the file whose
//!   line names `name`; etcd's clients then send it as their `token` metadata, which the auth
//!   layer takes as it takes `authorization: Bearer` ([`crate::edge::auth`]). Roles are petkv's
//!   (read, write, admin), checked per RPC as on the client port.
//! - AuthStatus: whether a tokens file is in use.
//! - Users, roles, AuthEnable/AuthDisable: refused; they are the tokens file's lines, which the
//!   node reads again when the file changes.

use tonic::{Request, Response, Status};

use super::EtcdApi;
use crate::pb::etcd::etcdserverpb::auth_server::Auth as EtcdAuth;
use crate::pb::etcd::etcdserverpb::{
    AuthDisableRequest, AuthDisableResponse, AuthEnableRequest, AuthEnableResponse, AuthRoleAddRequest,
    AuthRoleAddResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse, AuthRoleGetRequest, AuthRoleGetResponse,
    AuthRoleGrantPermissionRequest, AuthRoleGrantPermissionResponse, AuthRoleListRequest, AuthRoleListResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse, AuthStatusRequest, AuthStatusResponse,
    AuthUserAddRequest, AuthUserAddResponse, AuthUserChangePasswordRequest, AuthUserChangePasswordResponse,
    AuthUserDeleteRequest, AuthUserDeleteResponse, AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest,
    AuthUserGrantRoleResponse, AuthUserListRequest, AuthUserListResponse, AuthUserRevokeRoleRequest,
    AuthUserRevokeRoleResponse, AuthenticateRequest, AuthenticateResponse,
};

/// etcd's answer to a name and password it does not know.
pub const AUTH_FAILED: &str = "etcdserver: authentication failed, invalid user ID or password";
/// etcd's answer to Authenticate while authentication is off.
pub const AUTH_NOT_ENABLED: &str = "etcdserver: authentication is not enabled";

fn managed_by_file() -> Status {
    Status::failed_precondition(
        "etcdserver: petkv's users and roles are the lines of its tokens file (--auth-tokens: TOKEN ROLE NAME); \
         edit the file, which every node reads again when it changes",
    )
}

#[tonic::async_trait]
impl EtcdAuth for EtcdApi {
    async fn authenticate(&self, req: Request<AuthenticateRequest>) -> Result<Response<AuthenticateResponse>, Status> {
        let Some(tokens) = &self.tokens else { return Err(Status::failed_precondition(AUTH_NOT_ENABLED)) };
        let a = req.into_inner();
        let known = tokens.current().identify(&a.password).is_some_and(|identity| identity.name == a.name);
        if !known {
            return Err(Status::invalid_argument(AUTH_FAILED));
        }
        Ok(Response::new(AuthenticateResponse {
            header: Some(self.header(self.node().sm.current_revision())),
            token: a.password,
        }))
    }

    async fn auth_status(&self, _: Request<AuthStatusRequest>) -> Result<Response<AuthStatusResponse>, Status> {
        Ok(Response::new(AuthStatusResponse {
            header: Some(self.header(self.node().sm.current_revision())),
            enabled: self.tokens.is_some(),
            auth_revision: 0,
        }))
    }

    async fn auth_enable(&self, _: Request<AuthEnableRequest>) -> Result<Response<AuthEnableResponse>, Status> {
        Err(managed_by_file())
    }

    async fn auth_disable(&self, _: Request<AuthDisableRequest>) -> Result<Response<AuthDisableResponse>, Status> {
        Err(managed_by_file())
    }

    async fn user_add(&self, _: Request<AuthUserAddRequest>) -> Result<Response<AuthUserAddResponse>, Status> {
        Err(managed_by_file())
    }

    async fn user_get(&self, _: Request<AuthUserGetRequest>) -> Result<Response<AuthUserGetResponse>, Status> {
        Err(managed_by_file())
    }

    async fn user_list(&self, _: Request<AuthUserListRequest>) -> Result<Response<AuthUserListResponse>, Status> {
        Err(managed_by_file())
    }

    async fn user_delete(&self, _: Request<AuthUserDeleteRequest>) -> Result<Response<AuthUserDeleteResponse>, Status> {
        Err(managed_by_file())
    }

    async fn user_change_password(
        &self,
        _: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        Err(managed_by_file())
    }

    async fn user_grant_role(
        &self,
        _: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        Err(managed_by_file())
    }

    async fn user_revoke_role(
        &self,
        _: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        Err(managed_by_file())
    }

    async fn role_add(&self, _: Request<AuthRoleAddRequest>) -> Result<Response<AuthRoleAddResponse>, Status> {
        Err(managed_by_file())
    }

    async fn role_get(&self, _: Request<AuthRoleGetRequest>) -> Result<Response<AuthRoleGetResponse>, Status> {
        Err(managed_by_file())
    }

    async fn role_list(&self, _: Request<AuthRoleListRequest>) -> Result<Response<AuthRoleListResponse>, Status> {
        Err(managed_by_file())
    }

    async fn role_delete(&self, _: Request<AuthRoleDeleteRequest>) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        Err(managed_by_file())
    }

    async fn role_grant_permission(
        &self,
        _: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        Err(managed_by_file())
    }

    async fn role_revoke_permission(
        &self,
        _: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        Err(managed_by_file())
    }
}
