//! `join_tokens`: created by operators, consumed by `Join`. Only the token's hash is stored.

use super::{Error, Result, unix_us};
use chrono::{DateTime, Utc};
use ipw_proto::v1::TokenInfo;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A new join token, as stored.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    /// The token's SHA-256.
    pub hash: Vec<u8>,
    /// A note for other operators.
    pub description: &'a str,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// How many agents may join with it.
    pub max_uses: i32,
    /// Whether agents joining with it are approved at once.
    pub auto_approve: bool,
}

/// Stores a token; returns its id.
pub async fn create(pool: &PgPool, t: &NewToken<'_>) -> Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO join_tokens (id, token_hash, description, expires_at, max_uses, auto_approve)
         VALUES ($1, $2, $3, $4, $5, $6)",
        id,
        t.hash,
        t.description,
        t.expires_at,
        t.max_uses,
        t.auto_approve
    )
    .execute(pool)
    .await?;
    Ok(id)
}

/// A row of `join_tokens` as the CLI sees it (never the hash).
struct TokenRow {
    id: Uuid,
    description: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    max_uses: i32,
    uses: i32,
    auto_approve: bool,
    revoked_at: Option<DateTime<Utc>>,
    revoked_reason: Option<String>,
}

impl From<TokenRow> for TokenInfo {
    fn from(t: TokenRow) -> Self {
        TokenInfo {
            token_id: t.id.to_string(),
            description: t.description,
            created_unix_us: unix_us(t.created_at),
            expires_unix_us: unix_us(t.expires_at),
            max_uses: t.max_uses as u32,
            uses: t.uses as u32,
            auto_approve: t.auto_approve,
            revoked_unix_us: t.revoked_at.map(unix_us).unwrap_or(0),
            revoked_reason: t.revoked_reason.unwrap_or_default(),
            viewer: false,
        }
    }
}

/// Every token, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<TokenInfo>> {
    let rows = sqlx::query_as!(
        TokenRow,
        "SELECT id, description, created_at, expires_at, max_uses, uses, auto_approve, revoked_at, revoked_reason
         FROM join_tokens ORDER BY created_at"
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(TokenInfo::from).collect())
}

/// Revokes a token (a second revocation keeps the first time and reason).
pub async fn revoke(pool: &PgPool, id: Uuid, reason: &str) -> Result<TokenInfo> {
    let row = sqlx::query_as!(
        TokenRow,
        "UPDATE join_tokens SET revoked_at = coalesce(revoked_at, now()),
                                revoked_reason = coalesce(revoked_reason, $2)
         WHERE id = $1
         RETURNING id, description, created_at, expires_at, max_uses, uses, auto_approve, revoked_at, revoked_reason",
        id,
        reason,
    )
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::NotFound(format!("no join or viewer token {id}; see `ipw token list`")))?;
    Ok(row.into())
}

/// A token that was valid and has just been used once.
#[derive(Debug, Clone, Copy)]
pub struct Consumed {
    /// Its id.
    pub id: Uuid,
    /// Whether agents joining with it are approved at once.
    pub auto_approve: bool,
}

/// Uses a token once, if it is valid; otherwise says exactly why not: unknown, revoked,
/// expired or used up.
pub async fn consume(conn: &mut PgConnection, token_hash: &[u8]) -> Result<Consumed> {
    let token = sqlx::query_as!(
        Consumed,
        "UPDATE join_tokens SET uses = uses + 1
         WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now() AND uses < max_uses
         RETURNING id, auto_approve",
        token_hash
    )
    .fetch_optional(&mut *conn)
    .await?;
    match token {
        Some(t) => Ok(t),
        None => Err(refusal(conn, token_hash).await?),
    }
}

/// Why a token cannot be used.
async fn refusal(conn: &mut PgConnection, token_hash: &[u8]) -> Result<Error> {
    let row = sqlx::query!(
        "SELECT expires_at, max_uses, uses, revoked_at, revoked_reason, expires_at <= now() AS \"expired!\"
         FROM join_tokens WHERE token_hash = $1",
        token_hash
    )
    .fetch_optional(conn)
    .await?;
    let why = match row {
        None => "join token not recognised; ask an operator for a new one (`ipw token create`)".to_owned(),
        Some(t) if t.revoked_at.is_some() => {
            format!("join token was revoked ({}); ask for a new one", t.revoked_reason.unwrap_or_default())
        }
        Some(t) if t.expired => format!("join token expired at {}; ask for a new one", t.expires_at.to_rfc3339()),
        Some(t) => format!("join token is used up ({} of {} uses)", t.uses, t.max_uses),
    };
    Ok(Error::Unauthenticated(why))
}
