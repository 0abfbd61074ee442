//! `admin_credentials` and `admin_audit`: named, revocable admin credentials (stored as
//! hashes) and the record of what each did.

use super::{Error, Result, on_unique_violation};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// The name of the credential the coordinator starts with.
pub const INITIAL: &str = "initial";

/// Registers the start-up token as `initial`: a new one replaces the stored hash, unless an
/// operator revoked `initial`, which a restart does not undo.
pub async fn register_initial(pool: &PgPool, token_hash: &[u8]) -> Result<()> {
    sqlx::query!(
        "INSERT INTO admin_credentials (id, name, token_hash) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET token_hash = EXCLUDED.token_hash
         WHERE admin_credentials.revoked_at IS NULL",
        Uuid::now_v7(),
        INITIAL,
        token_hash
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The name of the live credential with this hash, if any.
pub async fn credential_name(pool: &PgPool, token_hash: &[u8]) -> Result<Option<String>> {
    Ok(sqlx::query_scalar!(
        "SELECT name FROM admin_credentials WHERE token_hash = $1 AND revoked_at IS NULL",
        token_hash
    )
    .fetch_optional(pool)
    .await?)
}

/// The id and name of the live credential with this hash, if any (a dashboard login).
pub async fn live_by_hash(pool: &PgPool, token_hash: &[u8]) -> Result<Option<(Uuid, String)>> {
    let row =
        sqlx::query!("SELECT id, name FROM admin_credentials WHERE token_hash = $1 AND revoked_at IS NULL", token_hash)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|r| (r.id, r.name)))
}

/// The name of the live credential with this id, if any: a dashboard session made with an
/// admin credential is good only while the credential is.
pub async fn live_name_by_id(pool: &PgPool, id: Uuid) -> Result<Option<String>> {
    Ok(sqlx::query_scalar!("SELECT name FROM admin_credentials WHERE id = $1 AND revoked_at IS NULL", id)
        .fetch_optional(pool)
        .await?)
}

/// Stores a new credential named `name`, created by `by`.
pub async fn create(pool: &PgPool, name: &str, token_hash: &[u8], by: &str) -> Result<()> {
    sqlx::query!(
        "INSERT INTO admin_credentials (id, name, token_hash, created_by) VALUES ($1, $2, $3, $4)",
        Uuid::now_v7(),
        name,
        token_hash,
        by
    )
    .execute(pool)
    .await
    .map_err(|e| on_unique_violation(e, || Error::AlreadyExists(format!("an admin credential \"{name}\" exists"))))?;
    Ok(())
}

/// One admin credential, never its token.
#[derive(Debug, Clone)]
pub struct CredentialRow {
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Which credential created it.
    pub created_by: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Why.
    pub revoked_reason: Option<String>,
}

/// Every admin credential, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<CredentialRow>> {
    Ok(sqlx::query_as!(
        CredentialRow,
        "SELECT name, created_at, created_by, revoked_at, revoked_reason FROM admin_credentials ORDER BY created_at"
    )
    .fetch_all(pool)
    .await?)
}

/// Revokes the credential `name`; the last live one cannot be, or no one could get in.
pub async fn revoke(pool: &PgPool, name: &str, reason: &str) -> Result<CredentialRow> {
    let mut tx = pool.begin().await?;
    // Serializes revocations, so two cannot each leave the other as the last.
    sqlx::query!("LOCK TABLE admin_credentials IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await?;
    let live: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM admin_credentials WHERE revoked_at IS NULL AND name <> $1"#,
        name
    )
    .fetch_one(&mut *tx)
    .await?;
    if live == 0 {
        return Err(Error::Precondition(format!(
            "\"{name}\" is the last live admin credential; create another first (ipw admin-token create)"
        )));
    }
    let row = sqlx::query_as!(
        CredentialRow,
        "UPDATE admin_credentials SET revoked_at = coalesce(revoked_at, now()), revoked_reason = coalesce(revoked_reason, $2)
         WHERE name = $1
         RETURNING name, created_at, created_by, revoked_at, revoked_reason",
        name,
        reason
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| Error::NotFound(format!("no admin credential \"{name}\"; see `ipw admin-token list`")))?;
    tx.commit().await?;
    Ok(row)
}

/// Records an admin action.
pub async fn record(pool: &PgPool, credential: &str, action: &str, target: &str, peer: Option<&str>) -> Result<()> {
    sqlx::query!(
        "INSERT INTO admin_audit (credential, action, target, peer) VALUES ($1, $2, $3, $4)",
        credential,
        action,
        target,
        peer
    )
    .execute(pool)
    .await?;
    Ok(())
}
