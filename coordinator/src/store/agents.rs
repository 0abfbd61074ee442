//! `agents` and `accelerators`: enrolment, approval, revocation, credentials.

use super::{Error, Result, on_unique_violation, stored, unix_us};
use chrono::{DateTime, Utc};
use ipw_proto::kinds::AgentStatus;
use ipw_proto::v1::{AgentInfo, HardwareInfo};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use std::collections::HashMap;
use uuid::Uuid;

/// A row of `agents` as the CLI sees it.
struct AgentRow {
    id: Uuid,
    name: String,
    status: String,
    hardware_class: String,
    labels: serde_json::Value,
    joined_at: DateTime<Utc>,
    last_seen_at: Option<DateTime<Utc>>,
    agent_version: String,
}

impl From<AgentRow> for AgentInfo {
    fn from(a: AgentRow) -> Self {
        AgentInfo {
            id: a.id.to_string(),
            name: a.name,
            status: a.status,
            hardware_class: a.hardware_class,
            labels: serde_json::from_value::<HashMap<String, String>>(a.labels).unwrap_or_default(),
            joined_unix_us: unix_us(a.joined_at),
            last_seen_unix_us: a.last_seen_at.map(unix_us).unwrap_or(0),
            agent_version: a.agent_version,
        }
    }
}

/// Every agent, in the order they joined.
pub async fn list(pool: &PgPool) -> Result<Vec<AgentInfo>> {
    let rows = sqlx::query_as!(
        AgentRow,
        "SELECT id, name, status, hardware_class, labels, joined_at, last_seen_at, agent_version
         FROM agents ORDER BY joined_at"
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(AgentInfo::from).collect())
}

/// Finds an agent by id, or by a name only one agent has. A key shaped like an id is only
/// ever an id: a name cannot stand in for another agent's id.
async fn find(pool: &PgPool, key: &str) -> Result<AgentRow> {
    let key = key.trim();
    if let Ok(id) = Uuid::parse_str(key) {
        return sqlx::query_as!(
            AgentRow,
            "SELECT id, name, status, hardware_class, labels, joined_at, last_seen_at, agent_version
             FROM agents WHERE id = $1",
            id
        )
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no agent with id {id}; see `ipw agents list`")));
    }
    let mut matches = sqlx::query_as!(
        AgentRow,
        "SELECT id, name, status, hardware_class, labels, joined_at, last_seen_at, agent_version
         FROM agents WHERE name = $1",
        key
    )
    .fetch_all(pool)
    .await?;
    match matches.len() {
        0 => Err(Error::NotFound(format!("no agent with id or name \"{key}\"; see `ipw agents list`"))),
        1 => Ok(matches.remove(0)),
        n => {
            let ids: Vec<String> = matches.iter().map(|a| a.id.to_string()).collect();
            Err(Error::Invalid(format!("{n} agents are named \"{key}\"; name one by id: {}", ids.join(", "))))
        }
    }
}

/// Approves an agent (by id or unique name); a revoked one must join again.
pub async fn approve(pool: &PgPool, key: &str) -> Result<AgentInfo> {
    let agent = find(pool, key).await?;
    if stored::<AgentStatus>(&agent.status)? == AgentStatus::Revoked {
        return Err(Error::Precondition(format!("agent {} was revoked; it must join again", agent.id)));
    }
    let row = sqlx::query_as!(
        AgentRow,
        "UPDATE agents SET status = 'approved', approved_at = coalesce(approved_at, now())
         WHERE id = $1
         RETURNING id, name, status, hardware_class, labels, joined_at, last_seen_at, agent_version",
        agent.id
    )
    .fetch_one(pool)
    .await?;
    tracing::info!(agent = %row.id, name = %row.name, "agent approved");
    Ok(row.into())
}

/// Revokes an agent (by id or unique name): its calls are refused from now on, and its
/// leases go back to the queue now rather than when they would have run out.
pub async fn revoke(pool: &PgPool, key: &str, reason: &str) -> Result<AgentInfo> {
    let agent = find(pool, key).await?;
    let mut tx = pool.begin().await?;
    let row = sqlx::query_as!(
        AgentRow,
        "UPDATE agents SET status = 'revoked', revoked_at = coalesce(revoked_at, now()),
                           revoked_reason = coalesce(revoked_reason, $2)
         WHERE id = $1
         RETURNING id, name, status, hardware_class, labels, joined_at, last_seen_at, agent_version",
        agent.id,
        reason
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!("UPDATE shards SET lease_expires_at = now() WHERE lease_owner = $1 AND status = 'leased'", agent.id)
        .execute(&mut *tx)
        .await?;
    // Every replica reloads its set of revoked certificates on this, at commit.
    sqlx::query!("SELECT pg_notify($1, $2)", crate::infra::revoked::CHANNEL, agent.id.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::warn!(agent = %row.id, name = %row.name, reason, "agent revoked");
    Ok(row.into())
}

/// The SHA-256s of every client certificate issued to a revoked agent (its current one and,
/// after a rotation, its previous one).
pub async fn revoked_cert_hashes(pool: &PgPool) -> Result<Vec<Vec<u8>>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT h AS "h!" FROM agents, unnest(ARRAY[client_cert_sha256, previous_client_cert_sha256]) AS h
           WHERE status = 'revoked' AND h IS NOT NULL"#
    )
    .fetch_all(pool)
    .await?)
}

/// A newly joined agent.
#[derive(Debug, Clone)]
pub struct NewAgent<'a> {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: &'a str,
    /// Pending, or approved when the token auto-approves.
    pub status: AgentStatus,
    /// The SHA-256 of its credential's secret.
    pub credential_hash: Vec<u8>,
    /// The token it joined with.
    pub join_token_id: Uuid,
    /// Its labels.
    pub labels: &'a HashMap<String, String>,
    /// Its hardware class, computed here.
    pub hardware_class: &'a str,
    /// What it reported about its machine.
    pub hardware: &'a HardwareInfo,
    /// Its build.
    pub agent_version: &'a str,
    /// The SHA-256 of the client certificate issued to it, when serving TLS.
    pub client_cert_sha256: Option<Vec<u8>>,
}

/// Stores a joined agent and its accelerators.
pub async fn insert(conn: &mut PgConnection, a: &NewAgent<'_>) -> Result<()> {
    let hw = a.hardware;
    sqlx::query!(
        "INSERT INTO agents (id, name, status, credential_hash, join_token_id, labels, hardware_class,
                             hostname, os, kernel, cpu_model, cpu_cores, memory_bytes, agent_version,
                             approved_at, client_cert_sha256)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                 CASE WHEN $3 = 'approved' THEN now() END, $15)",
        a.id,
        a.name,
        a.status.as_str(),
        a.credential_hash,
        a.join_token_id,
        serde_json::to_value(a.labels).expect("a string map is JSON"),
        a.hardware_class,
        hw.hostname,
        hw.os,
        hw.kernel,
        hw.cpu_model,
        i32::try_from(hw.cpu_cores).unwrap_or(i32::MAX),
        i64::try_from(hw.memory_bytes).unwrap_or(i64::MAX),
        a.agent_version,
        a.client_cert_sha256,
    )
    .execute(&mut *conn)
    .await?;
    for acc in &hw.accelerators {
        sqlx::query!(
            "INSERT INTO accelerators (agent_id, idx, vendor, model, memory_bytes, driver_version, device_uuid)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            a.id,
            acc.index as i32,
            acc.vendor,
            acc.model,
            i64::try_from(acc.memory_bytes).unwrap_or(i64::MAX),
            acc.driver_version,
            acc.uuid,
        )
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            on_unique_violation(e, || Error::Invalid(format!("accelerator index {} appears twice", acc.index)))
        })?;
    }
    Ok(())
}

/// What an agent call is checked against.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The SHA-256 of the credential's secret.
    pub credential_hash: Vec<u8>,
    /// Where the agent stands.
    pub status: AgentStatus,
    /// Why it was revoked, if it was.
    pub revoked_reason: Option<String>,
    /// The SHA-256 of the client certificate issued to it.
    pub client_cert_sha256: Option<Vec<u8>>,
    /// The credential before the last rotation, valid until the new one is first used.
    pub previous_credential_hash: Option<Vec<u8>>,
    /// The client certificate before the last rotation, likewise.
    pub previous_client_cert_sha256: Option<Vec<u8>>,
}

/// The stored credential of `agent_id`, if there is such an agent.
pub async fn credential(pool: &PgPool, agent_id: Uuid) -> Result<Option<Credential>> {
    let row = sqlx::query!(
        "SELECT credential_hash, status, revoked_reason, client_cert_sha256, previous_credential_hash,
                previous_client_cert_sha256
         FROM agents WHERE id = $1",
        agent_id
    )
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(Credential {
            credential_hash: r.credential_hash,
            status: stored(&r.status)?,
            revoked_reason: r.revoked_reason,
            client_cert_sha256: r.client_cert_sha256,
            previous_credential_hash: r.previous_credential_hash,
            previous_client_cert_sha256: r.previous_client_cert_sha256,
        })
    })
    .transpose()
}

/// The agent used its new credential: the previous one stops working.
pub async fn forget_previous_credential(pool: &PgPool, agent_id: Uuid, credential_hash: &[u8]) -> Result<()> {
    sqlx::query!(
        "UPDATE agents SET previous_credential_hash = NULL, previous_client_cert_sha256 = NULL
         WHERE id = $1 AND credential_hash = $2",
        agent_id,
        credential_hash
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Holds an approved agent's row until the transaction ends, so that it cannot be revoked
/// meanwhile; a revoked or unapproved agent is refused.
pub async fn lock_approved(tx: &mut Transaction<'_, Postgres>, agent_id: Uuid) -> Result<()> {
    let status = sqlx::query_scalar!("SELECT status FROM agents WHERE id = $1 FOR SHARE", agent_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no agent {agent_id}")))?;
    match stored::<AgentStatus>(&status)? {
        AgentStatus::Approved => Ok(()),
        other => Err(Error::Forbidden(format!("agent {agent_id} is {other}; its results are refused"))),
    }
}

/// Replaces an agent's credential and client certificate. The ones the caller presented
/// (`used`: the credential's hash and the certificate's) stay valid until the new credential
/// is first used, so a reply lost on the way leaves the agent with a working credential;
/// any other is void at once.
pub async fn rotate_credential(
    pool: &PgPool,
    agent_id: Uuid,
    credential_hash: &[u8],
    client_cert_sha256: Option<&[u8]>,
    used: (&[u8], Option<&[u8]>),
) -> Result<()> {
    sqlx::query!(
        "UPDATE agents SET credential_hash = $2, client_cert_sha256 = $3, credential_rotated_at = now(),
                           previous_credential_hash = $4, previous_client_cert_sha256 = $5
         WHERE id = $1",
        agent_id,
        credential_hash,
        client_cert_sha256,
        used.0,
        used.1,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that the agent was heard from.
pub async fn touch(conn: &mut PgConnection, agent_id: Uuid) -> Result<()> {
    sqlx::query!("UPDATE agents SET last_seen_at = now() WHERE id = $1", agent_id).execute(conn).await?;
    Ok(())
}
