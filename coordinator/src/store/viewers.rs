//! `viewer_tokens` and `dashboard_keys`: who may look at the dashboard (read-only tokens,
//! stored as hashes), and the key its cookies are signed with. A viewer token is in no other
//! table, so it can never join and never pass the admin gate.

use super::{Error, Result, unix_us};
use chrono::{DateTime, Utc};
use ipw_proto::v1::TokenInfo;
use sqlx::PgPool;
use uuid::Uuid;

/// A new viewer token, as stored.
#[derive(Debug, Clone)]
pub struct NewViewer<'a> {
    /// The token's SHA-256.
    pub hash: Vec<u8>,
    /// A note for other operators.
    pub description: &'a str,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// The admin credential that created it.
    pub created_by: &'a str,
}

/// Stores a viewer token; returns its id.
pub async fn create(pool: &PgPool, v: &NewViewer<'_>) -> Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO viewer_tokens (id, token_hash, description, expires_at, created_by) VALUES ($1, $2, $3, $4, $5)",
        id,
        v.hash,
        v.description,
        v.expires_at,
        v.created_by
    )
    .execute(pool)
    .await?;
    Ok(id)
}

/// A row of `viewer_tokens` as the CLI sees it (never the hash).
struct ViewerRow {
    id: Uuid,
    description: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    revoked_reason: Option<String>,
}

impl From<ViewerRow> for TokenInfo {
    fn from(t: ViewerRow) -> Self {
        TokenInfo {
            token_id: t.id.to_string(),
            description: t.description,
            created_unix_us: unix_us(t.created_at),
            expires_unix_us: unix_us(t.expires_at),
            revoked_unix_us: t.revoked_at.map(unix_us).unwrap_or(0),
            revoked_reason: t.revoked_reason.unwrap_or_default(),
            viewer: true,
            ..TokenInfo::default()
        }
    }
}

/// Every viewer token, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<TokenInfo>> {
    let rows = sqlx::query_as!(
        ViewerRow,
        "SELECT id, description, created_at, expires_at, revoked_at, revoked_reason FROM viewer_tokens
         ORDER BY created_at"
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(TokenInfo::from).collect())
}

/// Revokes a viewer token (a second revocation keeps the first time and reason); `None`
/// when no viewer token has this id. Its sessions end at their next request.
pub async fn revoke(pool: &PgPool, id: Uuid, reason: &str) -> Result<Option<TokenInfo>> {
    let row = sqlx::query_as!(
        ViewerRow,
        "UPDATE viewer_tokens SET revoked_at = coalesce(revoked_at, now()),
                                  revoked_reason = coalesce(revoked_reason, $2)
         WHERE id = $1
         RETURNING id, description, created_at, expires_at, revoked_at, revoked_reason",
        id,
        reason,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(TokenInfo::from))
}

/// A live viewer token: neither revoked nor expired.
#[derive(Debug, Clone)]
pub struct LiveViewer {
    /// Its id.
    pub id: Uuid,
    /// Its description, to greet the viewer by.
    pub description: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// The live viewer token with this hash, if any.
pub async fn live_by_hash(pool: &PgPool, token_hash: &[u8]) -> Result<Option<LiveViewer>> {
    Ok(sqlx::query_as!(
        LiveViewer,
        "SELECT id, description, expires_at FROM viewer_tokens
         WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now()",
        token_hash
    )
    .fetch_optional(pool)
    .await?)
}

/// The live viewer token with this id, if any: a session is good only while its token is.
pub async fn live_by_id(pool: &PgPool, id: Uuid) -> Result<Option<LiveViewer>> {
    Ok(sqlx::query_as!(
        LiveViewer,
        "SELECT id, description, expires_at FROM viewer_tokens
         WHERE id = $1 AND revoked_at IS NULL AND expires_at > now()",
        id
    )
    .fetch_optional(pool)
    .await?)
}

/// The key the dashboard signs with: `fresh` is stored if no replica stored one before, and
/// whichever was stored first is returned, so every replica signs with the same key.
pub async fn signing_key(pool: &PgPool, fresh: &[u8]) -> Result<Vec<u8>> {
    sqlx::query!("INSERT INTO dashboard_keys (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING", fresh)
        .execute(pool)
        .await?;
    sqlx::query_scalar!("SELECT key FROM dashboard_keys WHERE id = 1")
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::Precondition("the dashboard's signing key is missing after it was stored".into()))
}
