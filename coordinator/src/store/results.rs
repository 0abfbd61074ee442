//! `results`, `scores` and `duplicate_attempts`: result batches written idempotently, and
//! scores written in batches by ingest and by `ipw score`.
//!
//! A batch is one transaction: one multi-row insert for the results (idempotent on
//! `(run, query, repetition)`), one for their scores. Nothing is acknowledged before commit.

use super::{Error, Result};
use crate::domain::results::ValidResult;
use crate::domain::scoring::Scorer;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

/// One result's score under one scoring.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRow {
    /// The scoring this belongs to.
    pub scoring_id: Uuid,
    /// The result scored.
    pub result_id: i64,
    /// The scorer used.
    pub scorer: Scorer,
    /// What the scorer read out of the response.
    pub extracted: Option<String>,
    /// The verdict; `None` when judging failed.
    pub correct: Option<bool>,
    /// The judge's raw replies.
    pub verdict: Option<String>,
    /// Why there is no verdict.
    pub error: Option<String>,
}

/// Inserts score rows with one statement. Rows already there (a retried scoring) are kept.
pub async fn insert_scores(conn: &mut PgConnection, rows: &[ScoreRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let scoring_ids: Vec<Uuid> = rows.iter().map(|r| r.scoring_id).collect();
    let result_ids: Vec<i64> = rows.iter().map(|r| r.result_id).collect();
    let scorers: Vec<String> = rows.iter().map(|r| r.scorer.as_str().to_owned()).collect();
    let extracted: Vec<Option<String>> = rows.iter().map(|r| r.extracted.clone()).collect();
    let correct: Vec<Option<bool>> = rows.iter().map(|r| r.correct).collect();
    let verdicts: Vec<Option<String>> = rows.iter().map(|r| r.verdict.clone()).collect();
    let errors: Vec<Option<String>> = rows.iter().map(|r| r.error.clone()).collect();
    sqlx::query!(
        "INSERT INTO scores (scoring_id, result_id, scorer, extracted, correct, verdict, error)
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::bool[], $6::text[], $7::text[])
         ON CONFLICT (scoring_id, result_id) DO NOTHING",
        &scoring_ids,
        &result_ids,
        &scorers,
        &extracted as &[Option<String>],
        &correct as &[Option<bool>],
        &verdicts as &[Option<String>],
        &errors as &[Option<String>],
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// How a committed batch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchOutcome {
    /// Newly recorded results.
    pub inserted: u32,
    /// Results already recorded by an earlier upload or attempt; not counted again (another
    /// attempt's measurements are kept in `duplicate_attempts`).
    pub duplicates: u32,
}

/// One column of a batch, for an `UNNEST` bind.
fn column<T>(batch: &[ValidResult], f: impl Fn(&ValidResult) -> T) -> Vec<T> {
    batch.iter().map(f).collect()
}

/// The batch's key columns: run, shard, query, repetition, start.
struct Keys {
    run_ids: Vec<Uuid>,
    shard_ids: Vec<Uuid>,
    query_ids: Vec<i64>,
    repetitions: Vec<i32>,
    started_ats: Vec<chrono::DateTime<chrono::Utc>>,
}

impl Keys {
    fn of(batch: &[ValidResult]) -> Self {
        Self {
            run_ids: column(batch, |r| r.run_id),
            shard_ids: column(batch, |r| r.shard_id),
            query_ids: column(batch, |r| r.query_id),
            repetitions: column(batch, |r| r.repetition),
            started_ats: column(batch, |r| r.started_at),
        }
    }
}

/// Writes one validated batch inside `tx`: checks that every result belongs to a shard this
/// agent leased and to a query sampled into that shard, inserts the new ones in one
/// statement, scores them, and records duplicate attempts.
#[tracing::instrument(
    name = "db",
    skip_all,
    fields(otel.name = "INSERT results", otel.kind = "client", db.system = "postgresql", db.operation.name = "INSERT")
)]
pub async fn insert_batch(
    tx: &mut Transaction<'_, Postgres>,
    agent_id: Uuid,
    batch: &[ValidResult],
) -> Result<BatchOutcome> {
    if batch.is_empty() {
        return Ok(BatchOutcome::default());
    }
    let keys = Keys::of(batch);
    check_membership(tx, agent_id, batch, &keys).await?;
    let inserted = insert_new(tx, agent_id, batch, &keys).await?;
    score_on_ingest(tx, &inserted).await?;
    if inserted.len() < batch.len() {
        record_duplicates(tx, agent_id, &keys).await?;
    }
    let inserted = inserted.len() as u32;
    Ok(BatchOutcome { inserted, duplicates: batch.len() as u32 - inserted })
}

/// Ownership and membership, for the whole batch in one round trip: the first offender.
async fn check_membership(
    tx: &mut Transaction<'_, Postgres>,
    agent_id: Uuid,
    batch: &[ValidResult],
    keys: &Keys,
) -> Result<()> {
    let offender = sqlx::query!(
        r#"SELECT u.ord AS "ord!", u.leased IS NULL AS "not_leased!", u.shard_id AS "shard_id!"
           FROM (SELECT x.*, (SELECT true FROM lease_attempts la
                              WHERE la.shard_id = x.shard_id AND la.agent_id = $5 LIMIT 1) AS leased
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::int[]) WITH ORDINALITY
                      AS x(run_id, shard_id, query_id, repetition, ord)) u
           LEFT JOIN run_queries rq
                  ON rq.run_id = u.run_id AND rq.query_id = u.query_id AND rq.shard_id = u.shard_id
           LEFT JOIN runs r ON r.id = u.run_id
           WHERE u.leased IS NULL OR rq.query_id IS NULL OR u.repetition >= r.repetitions
           ORDER BY u.ord
           LIMIT 1"#,
        &keys.run_ids,
        &keys.shard_ids,
        &keys.query_ids,
        &keys.repetitions,
        agent_id,
    )
    .fetch_optional(&mut **tx)
    .await?;
    let Some(o) = offender else { return Ok(()) };
    let index = o.ord as usize - 1;
    if o.not_leased {
        return Err(Error::Forbidden(format!("result {index}: shard {} was never leased to this agent", o.shard_id)));
    }
    let r = &batch[index];
    Err(Error::Invalid(format!(
        "result {index}: query {} repetition {} is not part of shard {} of run {}",
        r.query_id, r.repetition, r.shard_id, r.run_id
    )))
}

/// A result the batch inserted, with what scoring it needs.
struct Inserted {
    id: i64,
    ok: bool,
    scorer: String,
    answer: String,
    tolerance: Option<f64>,
    response: String,
    scoring_id: Uuid,
}

/// Inserts the results not yet recorded. Every newly inserted row comes back with what
/// scoring needs; conflicts (retries) do not.
async fn insert_new(
    tx: &mut Transaction<'_, Postgres>,
    agent_id: Uuid,
    batch: &[ValidResult],
    keys: &Keys,
) -> Result<Vec<Inserted>> {
    Ok(sqlx::query_as!(
        Inserted,
        r#"WITH new AS (
            INSERT INTO results (run_id, shard_id, query_id, repetition, agent_id, started_at, latency_s,
                                 ttft_s, mean_itl_s, tokens_in, tokens_out, response, finish_reason, error,
                                 energy_j, dynamic_energy_j, power_source, power_scope, sample_hz,
                                 energy_attribution, energy_null_reason, prefill_energy_j, decode_energy_j,
                                 itl_p50_s, itl_p95_s, tpot_s, session_id, in_steady_window, start_delay_s,
                                 rate_limited)
            SELECT u.run_id, u.shard_id, u.query_id, u.repetition, $5, u.started_at, u.latency_s,
                   u.ttft_s, u.mean_itl_s, u.tokens_in, u.tokens_out, u.response, u.finish_reason, u.error,
                   u.energy_j, u.dynamic_energy_j, u.power_source, u.power_scope, u.sample_hz,
                   u.energy_attribution, u.energy_null_reason, u.prefill_energy_j, u.decode_energy_j,
                   u.itl_p50_s, u.itl_p95_s, u.tpot_s, u.session_id, u.in_steady_window, u.start_delay_s,
                   u.rate_limited
            FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::int[], $6::timestamptz[], $7::float8[],
                        $8::float8[], $9::float8[], $10::int[], $11::int[], $12::text[], $13::text[], $14::text[],
                        $15::float8[], $16::float8[], $17::text[], $18::text[], $19::float8[],
                        $20::text[], $21::text[], $22::float8[], $23::float8[], $24::float8[], $25::float8[],
                        $26::float8[], $27::uuid[], $28::bool[], $29::float8[], $30::int[])
                 AS u(run_id, shard_id, query_id, repetition, started_at, latency_s,
                      ttft_s, mean_itl_s, tokens_in, tokens_out, response, finish_reason, error,
                      energy_j, dynamic_energy_j, power_source, power_scope, sample_hz,
                      energy_attribution, energy_null_reason, prefill_energy_j, decode_energy_j,
                      itl_p50_s, itl_p95_s, tpot_s, session_id, in_steady_window, start_delay_s,
                      rate_limited)
            ON CONFLICT (run_id, query_id, repetition) DO NOTHING
            RETURNING id, run_id, query_id, response, error
         )
         SELECT new.id AS "id!", new.error IS NULL AS "ok!", q.scorer AS "scorer!", q.answer AS "answer!",
                q.tolerance AS "tolerance?", new.response AS "response!", sc.id AS "scoring_id!"
         FROM new JOIN queries q ON q.id = new.query_id
         JOIN scorings sc ON sc.run_id = new.run_id AND sc.kind = 'ingest'"#,
        &keys.run_ids,
        &keys.shard_ids,
        &keys.query_ids,
        &keys.repetitions,
        agent_id,
        &keys.started_ats,
        &column(batch, |r| r.latency_s),
        &column(batch, |r| r.ttft_s) as &[Option<f64>],
        &column(batch, |r| r.mean_itl_s) as &[Option<f64>],
        &column(batch, |r| r.tokens_in),
        &column(batch, |r| r.tokens_out),
        &column(batch, |r| r.response.clone()),
        &column(batch, |r| r.finish_reason.clone()),
        &column(batch, |r| r.error.clone()) as &[Option<String>],
        &column(batch, |r| r.energy_j) as &[Option<f64>],
        &column(batch, |r| r.dynamic_energy_j) as &[Option<f64>],
        &column(batch, |r| r.power_source.clone()),
        &column(batch, |r| r.power_scope.clone()),
        &column(batch, |r| r.sample_hz),
        &column(batch, |r| r.energy_attribution.as_str().to_owned()),
        &column(batch, |r| r.energy_null_reason.clone()) as &[Option<String>],
        &column(batch, |r| r.prefill_energy_j) as &[Option<f64>],
        &column(batch, |r| r.decode_energy_j) as &[Option<f64>],
        &column(batch, |r| r.itl_p50_s) as &[Option<f64>],
        &column(batch, |r| r.itl_p95_s) as &[Option<f64>],
        &column(batch, |r| r.tpot_s) as &[Option<f64>],
        &column(batch, |r| r.session_id) as &[Option<Uuid>],
        &column(batch, |r| r.in_steady_window),
        &column(batch, |r| r.start_delay_s) as &[Option<f64>],
        &column(batch, |r| r.rate_limited),
    )
    .fetch_all(&mut **tx)
    .await?)
}

/// Scores what was inserted with the query's builtin scorer. Errored results stay unscored:
/// they count as wrong in the views, but were never judged. Judge-scored queries wait for
/// `ipw score --judge-...`.
async fn score_on_ingest(tx: &mut Transaction<'_, Postgres>, inserted: &[Inserted]) -> Result<()> {
    let mut rows = Vec::with_capacity(inserted.len());
    for row in inserted.iter().filter(|row| row.ok) {
        let scorer = super::stored_scorer(&row.scorer)?;
        if let Some(score) = scorer.score(&row.response, &row.answer, row.tolerance) {
            rows.push(ScoreRow {
                scoring_id: row.scoring_id,
                result_id: row.id,
                scorer,
                extracted: score.extracted,
                correct: Some(score.correct),
                verdict: None,
                error: None,
            });
        }
    }
    insert_scores(tx, &rows).await
}

/// Most other attempts recorded per (run, query, repetition): enough to see that a query was
/// measured again, and a bound on what an agent varying `started_at` can write.
pub const MAX_DUPLICATE_ATTEMPTS: i64 = 16;

/// What was not inserted was already there. A copy of the committed measurement (same
/// agent, same start) is a retry; anything else measured the query again, and is counted,
/// up to [`MAX_DUPLICATE_ATTEMPTS`] per query and repetition.
async fn record_duplicates(tx: &mut Transaction<'_, Postgres>, agent_id: Uuid, keys: &Keys) -> Result<()> {
    sqlx::query!(
        "INSERT INTO duplicate_attempts (run_id, query_id, repetition, agent_id, shard_id, started_at)
         SELECT u.run_id, u.query_id, u.repetition, $5, u.shard_id, u.started_at
         FROM (SELECT *, row_number() OVER (PARTITION BY run_id, query_id, repetition) AS nth
               FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::int[], $6::timestamptz[])
                    AS x(run_id, shard_id, query_id, repetition, started_at)) u
         JOIN results r ON r.run_id = u.run_id AND r.query_id = u.query_id AND r.repetition = u.repetition
         WHERE NOT (r.agent_id = $5 AND r.started_at = u.started_at)
           AND u.nth + (SELECT count(*) FROM duplicate_attempts d
                        WHERE d.run_id = u.run_id AND d.query_id = u.query_id AND d.repetition = u.repetition) <= $7
         ON CONFLICT DO NOTHING",
        &keys.run_ids,
        &keys.shard_ids,
        &keys.query_ids,
        &keys.repetitions,
        agent_id,
        &keys.started_ats,
        MAX_DUPLICATE_ATTEMPTS,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A re-scoring, as recorded before it starts.
#[derive(Debug, Clone)]
pub struct NewScoring {
    /// The run scored.
    pub run_id: Uuid,
    /// The judge's model, when there is a judge.
    pub judge_model: Option<String>,
    /// The judge's endpoint.
    pub judge_endpoint: Option<String>,
    /// What the endpoint reported about itself.
    pub judge_version: Option<String>,
    /// The SHA-256 of the judge prompt.
    pub judge_prompt_hash: Option<String>,
    /// How the judge's two verdicts combine.
    pub judge_strictness: Option<ipw_proto::kinds::Strictness>,
    /// Whether every query is judged, not only `judge` ones.
    pub judge_all: bool,
}

/// Records a new scoring of a run; it stays invisible to the views until it is finished.
pub async fn new_scoring(pool: &sqlx::PgPool, s: &NewScoring) -> Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO scorings (id, run_id, kind, judge_model, judge_endpoint, judge_version, judge_prompt_hash,
                               judge_strictness, judge_all)
         VALUES ($1, $2, 'rescore', $3, $4, $5, $6, $7, $8)",
        id,
        s.run_id,
        s.judge_model,
        s.judge_endpoint,
        s.judge_version,
        s.judge_prompt_hash,
        s.judge_strictness.map(|x| x.as_str()),
        s.judge_all,
    )
    .execute(pool)
    .await?;
    Ok(id)
}

/// A result to score, with its query.
#[derive(Debug, Clone)]
pub struct ToScore {
    /// The result.
    pub result_id: i64,
    /// The model's response.
    pub response: String,
    /// The query's prompt.
    pub prompt: String,
    /// Its options, for multiple choice.
    pub choices: Option<Vec<String>>,
    /// Its category.
    pub category: Option<String>,
    /// Its scorer.
    pub scorer: Scorer,
    /// The reference answer.
    pub answer: String,
    /// Relative tolerance, for numeric answers.
    pub tolerance: Option<f64>,
}

/// The run's error-free results after `after`, in id order, at most `limit`.
pub async fn to_score(pool: &sqlx::PgPool, run_id: Uuid, after: i64, limit: i64) -> Result<Vec<ToScore>> {
    let rows = sqlx::query!(
        "SELECT r.id, r.response, q.prompt, q.choices, q.category, q.scorer, q.answer, q.tolerance
         FROM results r JOIN queries q ON q.id = r.query_id
         WHERE r.run_id = $1 AND r.id > $2 AND r.error IS NULL
         ORDER BY r.id LIMIT $3",
        run_id,
        after,
        limit
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(ToScore {
                result_id: r.id,
                response: r.response,
                prompt: r.prompt,
                choices: r.choices.and_then(|c| serde_json::from_value(c).ok()),
                category: r.category,
                scorer: super::stored_scorer(&r.scorer)?,
                answer: r.answer,
                tolerance: r.tolerance,
            })
        })
        .collect()
}

/// Marks a scoring complete with its counts: from now on the views may read it.
pub async fn finish_scoring(pool: &sqlx::PgPool, scoring_id: Uuid, scored: u64, failed: u64) -> Result<()> {
    sqlx::query!(
        "UPDATE scorings SET completed_at = now(), scored = $2, failed = $3 WHERE id = $1",
        scoring_id,
        scored as i32,
        failed as i32
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether a scoring exists.
pub async fn scoring_exists(pool: &sqlx::PgPool, scoring_id: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM scorings WHERE id = $1) AS "e!""#, scoring_id)
        .fetch_one(pool)
        .await?)
}
