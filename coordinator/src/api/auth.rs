//! Who is calling: the bearer token of a request, the agent it names, the admin token.

use super::State;
use super::guard::{Admission, Limits, admitted, headers_only, limits_of};
use crate::infra::auth::{AgentCredential, MIN_ADMIN_TOKEN_CHARS, constant_time_eq, hash_secret, sha256};
use crate::store::{self, agents};
use ipw_proto::kinds::AgentStatus;
use tonic::{Request, Status};
use uuid::Uuid;

/// The bearer token of a request's `authorization` metadata.
pub fn bearer<T>(request: &tonic::Request<T>) -> Result<&str, Status> {
    let value = request
        .metadata()
        .get("authorization")
        .ok_or_else(|| Status::unauthenticated("missing `authorization` metadata"))?
        .to_str()
        .map_err(|_| Status::unauthenticated("`authorization` metadata is not ASCII"))?;
    value
        .strip_prefix("Bearer ")
        .ok_or_else(|| Status::unauthenticated("`authorization` must be `Bearer <credential>`"))
}

/// An agent whose credential checked out.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The agent.
    pub id: Uuid,
    /// Where it stands (never revoked: those are refused).
    pub status: AgentStatus,
    /// The SHA-256 of the credential secret it presented.
    pub credential_hash: Vec<u8>,
    /// The SHA-256 of the client certificate it presented, if any.
    pub client_cert_sha256: Option<Vec<u8>>,
}

/// Checks the request's agent credential against its stored hash, and the client certificate
/// against the one issued to the agent: a certificate presented must be the agent's own, and
/// with mTLS required one must be presented. Revoked agents are refused, every call. After a
/// rotation the previous credential (with its certificate) still works until the new one is
/// first used.
pub async fn authenticate<T>(state: &State, request: &Request<T>) -> Result<Caller, Status> {
    let cred = AgentCredential::parse(bearer(request)?)?;
    let row = agents::credential(&state.pool, cred.agent_id)
        .await?
        .ok_or_else(|| Status::unauthenticated(format!("unknown agent {}; join again", cred.agent_id)))?;
    let presented_hash = hash_secret(&cred.secret);
    let is_current = constant_time_eq(&row.credential_hash, &presented_hash);
    let is_previous =
        !is_current && row.previous_credential_hash.as_deref().is_some_and(|p| constant_time_eq(p, &presented_hash));
    if !is_current && !is_previous {
        return Err(Status::unauthenticated("agent credential rejected (rotated, or not this agent's)"));
    }
    // Unauthenticated, not PermissionDenied: the credential itself is void, and the agent
    // stops instead of waiting for an approval that will not come.
    if row.status == AgentStatus::Revoked {
        return Err(Status::unauthenticated(format!(
            "agent {} was revoked ({}); it must join again with a new token",
            cred.agent_id,
            row.revoked_reason.unwrap_or_default()
        )));
    }
    let issued = if is_current { row.client_cert_sha256 } else { row.previous_client_cert_sha256 };
    let presented = request.peer_certs().and_then(|certs| certs.first().map(|c| sha256(c)));
    match (&presented, issued) {
        (Some(p), Some(issued)) if constant_time_eq(p, &issued) => {}
        (Some(_), _) => {
            return Err(Status::unauthenticated(format!(
                "the client certificate presented is not the one issued to agent {}",
                cred.agent_id
            )));
        }
        (None, _) if state.require_client_cert => {
            return Err(Status::unauthenticated(
                "this coordinator requires the agent's client certificate (mTLS); join again to get one",
            ));
        }
        (None, _) => {}
    }
    if is_current && row.previous_credential_hash.is_some() {
        agents::forget_previous_credential(&state.pool, cred.agent_id, &presented_hash).await?;
    }
    Ok(Caller { id: cred.agent_id, status: row.status, credential_hash: presented_hash, client_cert_sha256: presented })
}

/// Admits agents to the agent service: an authenticated agent, approved unless the method
/// is one a pending agent may call, with the method's limits on its messages.
#[derive(Debug, Clone)]
pub struct AgentAdmission(pub State);

impl Admission for AgentAdmission {
    type Caller = Caller;

    async fn admit(&self, parts: &http::request::Parts) -> Result<(Caller, Option<&'static Limits>), Status> {
        let limits = limits_of(parts.uri.path())
            .ok_or_else(|| Status::unimplemented(format!("no method {}", parts.uri.path())))?;
        let caller = authenticate(&self.0, &headers_only(parts)).await?;
        if caller.status != AgentStatus::Approved && !limits.pending_may_call {
            return Err(Status::permission_denied(format!(
                "agent {} is {}; an operator must approve it first: ipw agents approve {}",
                caller.id, caller.status, caller.id
            )));
        }
        Ok((caller, Some(limits)))
    }
}

/// The agent a call came from (see [`AgentAdmission`]).
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    admitted(request)
}

/// An operator's call: the admin credential's name and where it came from.
#[derive(Debug, Clone)]
pub struct Operator {
    /// The credential's name (`initial` for the one made at first start).
    pub name: String,
    /// The peer address.
    pub peer: Option<std::net::SocketAddr>,
}

/// Admits operators to the admin service: a live, named admin credential.
#[derive(Debug, Clone)]
pub struct AdminAdmission(pub State);

impl Admission for AdminAdmission {
    type Caller = Operator;

    async fn admit(&self, parts: &http::request::Parts) -> Result<(Operator, Option<&'static Limits>), Status> {
        let request = headers_only(parts);
        let token = bearer(&request)?;
        // Start-up refuses short tokens, and `create` makes long ones: a short one never matches.
        if token.len() < MIN_ADMIN_TOKEN_CHARS {
            return Err(Status::unauthenticated("admin token rejected"));
        }
        let name = store::admin::credential_name(&self.0.pool, &hash_secret(token))
            .await?
            .ok_or_else(|| Status::unauthenticated("admin token rejected (unknown or revoked)"))?;
        Ok((Operator { name, peer: request.remote_addr() }, None))
    }
}

/// The operator a call came from (see [`AdminAdmission`]).
pub fn operator<T>(request: &Request<T>) -> Result<Operator, Status> {
    admitted(request)
}
