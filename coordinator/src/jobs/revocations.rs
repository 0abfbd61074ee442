//! Keeps a replica's set of revoked client certificates current: loaded at start, and again
//! whenever a revocation is announced on [`CHANNEL`] by any replica.

use crate::infra::revoked::{CHANNEL, RevokedCerts};
use crate::store::{self, agents};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::time::Duration;

/// Loads the revoked certificates into `revoked`.
pub async fn load(pool: &PgPool, revoked: &RevokedCerts) -> store::Result<()> {
    revoked.replace(agents::revoked_cert_hashes(pool).await?);
    Ok(())
}

/// Listens for revocations and reloads the set on each, for ever. A lost connection is
/// re-opened (reloading, since announcements may have been missed meanwhile).
pub async fn follow(pool: PgPool, revoked: RevokedCerts) {
    loop {
        if let Err(e) = listen(&pool, &revoked).await {
            tracing::warn!(error = %e, "following revocations failed; retrying in 1 s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen(pool: &PgPool, revoked: &RevokedCerts) -> store::Result<()> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    // Listening first, then loading: a revocation between the two is not missed.
    load(pool, revoked).await?;
    loop {
        let announced = listener.recv().await?;
        tracing::info!(agent = announced.payload(), "agent revoked: its certificate is refused at the handshake");
        load(pool, revoked).await?;
    }
}
