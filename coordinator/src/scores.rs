//! Writing scores: one multi-row insert for a batch, used by ingest and by `ipw score`.

use uuid::Uuid;

/// One result's score under one scoring.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRow {
    /// The scoring this belongs to.
    pub scoring_id: Uuid,
    /// The result scored.
    pub result_id: i64,
    /// mcq, numeric, exact or judge.
    pub scorer: &'static str,
    /// What the scorer read out of the response.
    pub extracted: Option<String>,
    /// The verdict; `None` when judging failed.
    pub correct: Option<bool>,
    /// The judge's raw replies.
    pub verdict: Option<String>,
    /// Why there is no verdict.
    pub error: Option<String>,
}

/// Inserts the rows with one statement. Rows already there (a retried scoring) are kept.
pub async fn insert(conn: &mut sqlx::PgConnection, rows: &[ScoreRow]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO scores (scoring_id, result_id, scorer, extracted, correct, verdict, error)
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::bool[], $6::text[], $7::text[])
         ON CONFLICT (scoring_id, result_id) DO NOTHING",
    )
    .bind(rows.iter().map(|r| r.scoring_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.result_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.scorer).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.extracted.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.correct).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.verdict.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.error.clone()).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}
