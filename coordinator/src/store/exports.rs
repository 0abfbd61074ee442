//! Reading results out for `ipw export`: each result with its score and provenance, as JSON
//! objects keyed by the columns of `domain::export`, streamed in batches.

use super::Result;
use crate::domain::export::select_list;
use futures::TryStreamExt;
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Rows per batch sent on.
const BATCH: usize = 2000;

/// How many results the runs hold.
pub async fn count(pool: &PgPool, run_ids: &[Uuid]) -> Result<i64> {
    Ok(sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM results WHERE run_id = ANY($1)"#, run_ids)
        .fetch_one(pool)
        .await?)
}

/// Streams every result of `run_ids` under `scoring` (each run's latest when `None`), in
/// result order, into `sink` in batches; stops early when the receiver is gone. The database
/// streams the rows, so memory stays bounded whatever their number.
pub async fn rows(
    pool: &PgPool,
    run_ids: &[Uuid],
    scoring: Option<Uuid>,
    sink: mpsc::Sender<Vec<String>>,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    super::reports::read_under(&mut tx, scoring).await?;
    // The select list is built from constant column declarations only.
    let sql = format!(
        "SELECT row_to_json(x)::text FROM (
             SELECT {} FROM query_results qr
             JOIN results r ON r.id = qr.result_id
             LEFT JOIN run_provenance_by_run p ON p.run_id = qr.run_id AND p.agent_id = qr.agent_id
             WHERE qr.run_id = ANY($1) ORDER BY qr.result_id) x",
        select_list()
    );
    let mut stream = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).bind(run_ids).fetch(&mut *tx);
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(row) = stream.try_next().await? {
        batch.push(row);
        if batch.len() == BATCH && sink.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))).await.is_err() {
            return Ok(());
        }
    }
    if !batch.is_empty() {
        let _ = sink.send(batch).await;
    }
    Ok(())
}
