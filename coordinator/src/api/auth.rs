//! Who is calling: the bearer token of a request, the agent it names, the admin token.

use super::State;
use crate::infra::auth::{AgentCredential, constant_time_eq, hash_secret, sha256};
use crate::store::agents;
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
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The agent.
    pub id: Uuid,
    /// Where it stands (never revoked: those are refused).
    pub status: AgentStatus,
}

/// Checks the request's agent credential against its stored hash, and the client certificate
/// against the one issued to the agent: a certificate presented must be the agent's own, and
/// with mTLS required one must be presented. Revoked agents are refused, every call.
pub async fn authenticate<T>(state: &State, request: &Request<T>) -> Result<Caller, Status> {
    let cred = AgentCredential::parse(bearer(request)?)?;
    let row = agents::credential(&state.pool, cred.agent_id)
        .await?
        .ok_or_else(|| Status::unauthenticated(format!("unknown agent {}; join again", cred.agent_id)))?;
    if !constant_time_eq(&row.credential_hash, &hash_secret(&cred.secret)) {
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
    let presented = request.peer_certs().and_then(|certs| certs.first().map(|c| sha256(c)));
    match (presented, row.client_cert_sha256) {
        (Some(p), Some(issued)) if constant_time_eq(&p, &issued) => {}
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
    Ok(Caller { id: cred.agent_id, status: row.status })
}

/// An interceptor that lets through only calls bearing the admin token.
pub fn admin_check(admin_token: &str) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
    let admin_hash = hash_secret(admin_token);
    move |req: Request<()>| {
        let token = bearer(&req)?;
        if constant_time_eq(&hash_secret(token), &admin_hash) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("admin token rejected"))
        }
    }
}
