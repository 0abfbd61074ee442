//! Result ingest: validating what agents send, and writing it in batches.
//!
//! A batch is one transaction: one multi-row insert for the results (idempotent on
//! `(run, query, repetition)`), one for their scores. Nothing is acknowledged before commit.

use crate::scores::{self, ScoreRow};
use crate::scoring::Scorer;
use ipw_proto::v1::QueryResult;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

/// Longest response text accepted, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Longest error, reason or label text accepted, in bytes.
pub const MAX_SHORT_TEXT_BYTES: usize = 4096;
/// Most results accepted in one batch.
pub const MAX_BATCH_RESULTS: usize = 10_000;

/// Power source kinds; a result measured by several joins them with '+'.
pub const POWER_SOURCES: &[&str] =
    &["nvml-counter", "nvml-power", "rapl", "amd-hwmon", "apple-ioreport", "powermetrics"];
const ATTRIBUTIONS: &[&str] = &["time-share", "token-share"];

/// Text as PostgreSQL can store it: a NUL (which a model may emit) becomes U+FFFD rather than
/// costing the whole batch a database error. Nothing else changes.
fn storable(s: &str) -> String {
    if s.contains('\0') { s.replace('\0', "\u{FFFD}") } else { s.to_owned() }
}

/// A result that passed validation, in database types.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidResult {
    /// The run.
    pub run_id: Uuid,
    /// The shard it was leased in.
    pub shard_id: Uuid,
    /// The query.
    pub query_id: i64,
    /// Which repetition of the query.
    pub repetition: i32,
    /// Wall-clock start.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// End-to-end latency in seconds.
    pub latency_s: f64,
    /// Time to first token in seconds.
    pub ttft_s: Option<f64>,
    /// Mean inter-token latency in seconds.
    pub mean_itl_s: Option<f64>,
    /// Prompt tokens, per the server.
    pub tokens_in: i32,
    /// Completion tokens, per the server.
    pub tokens_out: i32,
    /// The response text.
    pub response: String,
    /// The server's finish reason.
    pub finish_reason: String,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// Raw energy in joules.
    pub energy_j: Option<f64>,
    /// Energy minus idle power times duration.
    pub dynamic_energy_j: Option<f64>,
    /// Where the energy came from.
    pub power_source: String,
    /// What the power source covers.
    pub power_scope: String,
    /// Sampling rate in Hz.
    pub sample_hz: f64,
    /// How concurrent queries split an interval's energy.
    pub energy_attribution: String,
    /// Why energy is missing.
    pub energy_null_reason: Option<String>,
}

/// Checks one result on its own (ownership and membership are checked against the database).
/// The error names the field.
pub fn validate(r: &QueryResult) -> Result<ValidResult, String> {
    let uuid = |field: &str, s: &str| Uuid::parse_str(s).map_err(|_| format!("{field} \"{s}\" is not a UUID"));
    let finite_nonneg = |field: &str, v: f64| {
        if v.is_finite() && v >= 0.0 { Ok(v) } else { Err(format!("{field} must be a finite number >= 0, got {v}")) }
    };
    let short = |field: &str, s: &str| {
        if s.len() <= MAX_SHORT_TEXT_BYTES {
            Ok(storable(s))
        } else {
            Err(format!("{field} is longer than {MAX_SHORT_TEXT_BYTES} bytes"))
        }
    };
    let run_id = uuid("run_id", &r.run_id)?;
    let shard_id = uuid("shard_id", &r.shard_id)?;
    let repetition = i32::try_from(r.repetition).map_err(|_| "repetition out of range".to_owned())?;
    let started_at = chrono::DateTime::from_timestamp_micros(r.started_unix_us)
        .ok_or_else(|| format!("started_unix_us {} is not a valid time", r.started_unix_us))?;
    let latency_s = finite_nonneg("latency_s", r.latency_s)?;
    let ttft_s = r.ttft_s.map(|v| finite_nonneg("ttft_s", v)).transpose()?;
    if ttft_s.is_some_and(|t| t > latency_s) {
        return Err(format!("ttft_s {} exceeds latency_s {latency_s}", ttft_s.unwrap_or_default()));
    }
    let mean_itl_s = r.mean_itl_s.map(|v| finite_nonneg("mean_itl_s", v)).transpose()?;
    let tokens = |field: &str, v: u32| i32::try_from(v).map_err(|_| format!("{field} out of range"));
    if r.response.len() > MAX_RESPONSE_BYTES {
        return Err(format!("response is longer than {MAX_RESPONSE_BYTES} bytes"));
    }
    let energy = r.energy.clone().unwrap_or_default();
    let power_source = if energy.source.is_empty() { "none".to_owned() } else { energy.source.clone() };
    if power_source != "none" && !power_source.split('+').all(|k| POWER_SOURCES.contains(&k)) {
        return Err(format!(
            "unknown power source \"{power_source}\"; expected none, or one or more of {} joined with '+'",
            POWER_SOURCES.join(", ")
        ));
    }
    let energy_attribution =
        if energy.attribution.is_empty() { "time-share".to_owned() } else { energy.attribution.clone() };
    if !ATTRIBUTIONS.contains(&energy_attribution.as_str()) {
        return Err(format!("unknown energy attribution \"{energy_attribution}\""));
    }
    let energy_j = energy.energy_j.map(|v| finite_nonneg("energy_j", v)).transpose()?;
    let dynamic_energy_j = match energy.dynamic_energy_j {
        Some(v) if !v.is_finite() => {
            return Err(format!("dynamic_energy_j must be finite, got {v}"));
        }
        v => v,
    };
    match (energy_j, power_source.as_str(), energy.null_reason.trim().is_empty()) {
        (Some(_), "none", _) => return Err("energy_j is set but power source is \"none\"".into()),
        (None, _, true) => return Err("energy_j is missing and no null_reason says why".into()),
        _ => {}
    }
    Ok(ValidResult {
        run_id,
        shard_id,
        query_id: r.query_id,
        repetition,
        started_at,
        latency_s,
        ttft_s,
        mean_itl_s,
        tokens_in: tokens("tokens_in", r.tokens_in)?,
        tokens_out: tokens("tokens_out", r.tokens_out)?,
        response: storable(&r.response),
        finish_reason: short("finish_reason", &r.finish_reason)?,
        error: (!r.error.is_empty()).then(|| short("error", &r.error)).transpose()?,
        energy_j,
        dynamic_energy_j,
        power_source,
        power_scope: short("energy.scope", &energy.scope)?,
        sample_hz: finite_nonneg("energy.sample_hz", energy.sample_hz)?,
        energy_attribution,
        energy_null_reason: energy_j.is_none().then(|| short("energy.null_reason", &energy.null_reason)).transpose()?,
    })
}

/// A result the batch inserted, with what scoring it needs.
#[derive(sqlx::FromRow)]
struct Inserted {
    id: i64,
    ok: bool,
    scorer: String,
    answer: String,
    tolerance: Option<f64>,
    response: String,
    scoring_id: Uuid,
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

/// Why a batch was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A result does not belong where it claims to.
    #[error("result {index}: {message}")]
    Invalid {
        /// Position in the batch.
        index: usize,
        /// What was wrong.
        message: String,
    },
    /// The agent never held a lease on a shard it reports for.
    #[error("result {index}: shard {shard_id} was never leased to this agent")]
    NotYourShard {
        /// Position in the batch.
        index: usize,
        /// The shard.
        shard_id: Uuid,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Writes one validated batch inside `tx`: checks that every result belongs to a shard this
/// agent leased and to a query sampled into that shard, inserts the new ones in one
/// statement, and scores them.
pub async fn insert_batch(
    tx: &mut Transaction<'_, Postgres>,
    agent_id: Uuid,
    batch: &[ValidResult],
) -> Result<BatchOutcome, IngestError> {
    if batch.is_empty() {
        return Ok(BatchOutcome::default());
    }
    fn column<T>(batch: &[ValidResult], f: impl Fn(&ValidResult) -> T) -> Vec<T> {
        batch.iter().map(f).collect()
    }
    let run_ids: Vec<Uuid> = column(batch, |r| r.run_id);
    let shard_ids: Vec<Uuid> = column(batch, |r| r.shard_id);
    let query_ids: Vec<i64> = batch.iter().map(|r| r.query_id).collect();
    let repetitions: Vec<i32> = batch.iter().map(|r| r.repetition).collect();
    let started_ats = column(batch, |r| r.started_at);

    // Ownership and membership, for the whole batch in one round trip: the first offender.
    let offender: Option<(i64, bool, Uuid)> = sqlx::query_as(
        "SELECT u.ord, la.shard_id IS NULL AS not_leased, u.shard_id
         FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::int[]) WITH ORDINALITY
              AS u(run_id, shard_id, query_id, repetition, ord)
         LEFT JOIN (SELECT DISTINCT shard_id FROM lease_attempts WHERE agent_id = $5) la
                ON la.shard_id = u.shard_id
         LEFT JOIN run_queries rq
                ON rq.run_id = u.run_id AND rq.query_id = u.query_id AND rq.shard_id = u.shard_id
         LEFT JOIN runs r ON r.id = u.run_id
         WHERE la.shard_id IS NULL OR rq.query_id IS NULL OR u.repetition >= r.repetitions
         ORDER BY u.ord
         LIMIT 1",
    )
    .bind(&run_ids)
    .bind(&shard_ids)
    .bind(&query_ids)
    .bind(&repetitions)
    .bind(agent_id)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some((ord, not_leased, shard_id)) = offender {
        let index = ord as usize - 1;
        if not_leased {
            return Err(IngestError::NotYourShard { index, shard_id });
        }
        let r = &batch[index];
        return Err(IngestError::Invalid {
            index,
            message: format!(
                "query {} repetition {} is not part of shard {} of run {}",
                r.query_id, r.repetition, r.shard_id, r.run_id
            ),
        });
    }

    // Every newly inserted row comes back with what scoring needs; conflicts (retries) do not.
    let inserted: Vec<Inserted> = sqlx::query_as(
        "WITH new AS (
            INSERT INTO results (run_id, shard_id, query_id, repetition, agent_id, started_at, latency_s,
                                 ttft_s, mean_itl_s, tokens_in, tokens_out, response, finish_reason, error,
                                 energy_j, dynamic_energy_j, power_source, power_scope, sample_hz,
                                 energy_attribution, energy_null_reason)
            SELECT u.run_id, u.shard_id, u.query_id, u.repetition, $5, u.started_at, u.latency_s,
                   u.ttft_s, u.mean_itl_s, u.tokens_in, u.tokens_out, u.response, u.finish_reason, u.error,
                   u.energy_j, u.dynamic_energy_j, u.power_source, u.power_scope, u.sample_hz,
                   u.energy_attribution, u.energy_null_reason
            FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::int[], $6::timestamptz[], $7::float8[],
                        $8::float8[], $9::float8[], $10::int[], $11::int[], $12::text[], $13::text[], $14::text[],
                        $15::float8[], $16::float8[], $17::text[], $18::text[], $19::float8[],
                        $20::text[], $21::text[])
                 AS u(run_id, shard_id, query_id, repetition, started_at, latency_s,
                      ttft_s, mean_itl_s, tokens_in, tokens_out, response, finish_reason, error,
                      energy_j, dynamic_energy_j, power_source, power_scope, sample_hz,
                      energy_attribution, energy_null_reason)
            ON CONFLICT (run_id, query_id, repetition) DO NOTHING
            RETURNING id, run_id, query_id, response, error
         )
         SELECT new.id, new.error IS NULL AS ok, q.scorer, q.answer, q.tolerance, new.response, sc.id AS scoring_id
         FROM new JOIN queries q ON q.id = new.query_id
         JOIN scorings sc ON sc.run_id = new.run_id AND sc.kind = 'ingest'",
    )
    .bind(&run_ids)
    .bind(&shard_ids)
    .bind(&query_ids)
    .bind(&repetitions)
    .bind(agent_id)
    .bind(&started_ats)
    .bind(column(batch, |r| r.latency_s))
    .bind(column(batch, |r| r.ttft_s))
    .bind(column(batch, |r| r.mean_itl_s))
    .bind(column(batch, |r| r.tokens_in))
    .bind(column(batch, |r| r.tokens_out))
    .bind(column(batch, |r| r.response.clone()))
    .bind(column(batch, |r| r.finish_reason.clone()))
    .bind(column(batch, |r| r.error.clone()))
    .bind(column(batch, |r| r.energy_j))
    .bind(column(batch, |r| r.dynamic_energy_j))
    .bind(column(batch, |r| r.power_source.clone()))
    .bind(column(batch, |r| r.power_scope.clone()))
    .bind(column(batch, |r| r.sample_hz))
    .bind(column(batch, |r| r.energy_attribution.clone()))
    .bind(column(batch, |r| r.energy_null_reason.clone()))
    .fetch_all(&mut **tx)
    .await?;

    // Errored results stay unscored: they count as wrong in the views, but were never judged.
    // Judge-scored queries wait for `ipw score --judge-...`.
    let rows: Vec<ScoreRow> = inserted
        .iter()
        .filter(|row| row.ok)
        .filter_map(|row| {
            let scorer = Scorer::parse(&row.scorer).expect("queries.scorer is constrained to known scorers");
            let score = scorer.score(&row.response, &row.answer, row.tolerance)?;
            Some(ScoreRow {
                scoring_id: row.scoring_id,
                result_id: row.id,
                scorer: scorer.as_str(),
                extracted: score.extracted,
                correct: Some(score.correct),
                verdict: None,
                error: None,
            })
        })
        .collect();
    scores::insert(tx, &rows).await?;

    // What was not inserted was already there. A copy of the committed measurement (same
    // agent, same start) is a retry; anything else measured the query again, and is counted.
    if inserted.len() < batch.len() {
        sqlx::query(
            "INSERT INTO duplicate_attempts (run_id, query_id, repetition, agent_id, shard_id, started_at)
             SELECT u.run_id, u.query_id, u.repetition, $5, u.shard_id, u.started_at
             FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::int[], $6::timestamptz[])
                  AS u(run_id, shard_id, query_id, repetition, started_at)
             JOIN results r ON r.run_id = u.run_id AND r.query_id = u.query_id AND r.repetition = u.repetition
             WHERE NOT (r.agent_id = $5 AND r.started_at = u.started_at)
             ON CONFLICT DO NOTHING",
        )
        .bind(&run_ids)
        .bind(&shard_ids)
        .bind(&query_ids)
        .bind(&repetitions)
        .bind(agent_id)
        .bind(&started_ats)
        .execute(&mut **tx)
        .await?;
    }

    let inserted = inserted.len() as u32;
    Ok(BatchOutcome { inserted, duplicates: batch.len() as u32 - inserted })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipw_proto::v1::Energy;

    fn ok_result() -> QueryResult {
        QueryResult {
            shard_id: Uuid::new_v4().to_string(),
            run_id: Uuid::new_v4().to_string(),
            query_id: 7,
            repetition: 0,
            started_unix_us: 1_700_000_000_000_000,
            latency_s: 2.0,
            ttft_s: Some(0.1),
            mean_itl_s: Some(0.01),
            tokens_in: 100,
            tokens_out: 50,
            response: "The answer is (A)".into(),
            finish_reason: "stop".into(),
            error: String::new(),
            energy: Some(Energy { source: "none".into(), null_reason: "no power source".into(), ..Default::default() }),
        }
    }

    #[test]
    fn a_well_formed_result_passes() {
        let v = validate(&ok_result()).unwrap();
        assert_eq!(v.energy_j, None);
        assert_eq!(v.energy_null_reason.as_deref(), Some("no power source"));
        assert_eq!(v.energy_attribution, "time-share");
        assert_eq!(v.error, None);
    }

    #[test]
    fn nul_characters_become_replacement_characters() {
        let mut r = ok_result();
        r.response = "a\0b".into();
        r.error = "e\0".into();
        let v = validate(&r).unwrap();
        assert_eq!((v.response.as_str(), v.error.as_deref()), ("a\u{FFFD}b", Some("e\u{FFFD}")));
    }

    #[test]
    fn several_sources_are_joined_with_plus() {
        let mut r = ok_result();
        r.energy = Some(Energy { energy_j: Some(3.0), source: "nvml-counter+rapl".into(), ..Default::default() });
        assert_eq!(validate(&r).unwrap().power_source, "nvml-counter+rapl");
        r.energy.as_mut().unwrap().source = "rapl+guess".into();
        assert!(validate(&r).unwrap_err().contains("unknown power source"));
    }

    #[test]
    fn malformed_results_are_refused_by_field() {
        type Mutation = Box<dyn Fn(&mut QueryResult)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|r| r.run_id = "x".into()), "run_id"),
            (Box::new(|r| r.latency_s = f64::NAN), "latency_s"),
            (Box::new(|r| r.ttft_s = Some(3.0)), "exceeds latency_s"),
            (Box::new(|r| r.energy = None), "no null_reason"),
            (Box::new(|r| r.energy.as_mut().unwrap().energy_j = Some(1.0)), "power source is \"none\""),
            (Box::new(|r| r.energy.as_mut().unwrap().source = "guess".into()), "unknown power source"),
            (Box::new(|r| r.response = "x".repeat(MAX_RESPONSE_BYTES + 1)), "response"),
            (Box::new(|r| r.repetition = u32::MAX), "repetition"),
        ];
        for (mutate, want) in cases {
            let mut r = ok_result();
            mutate(&mut r);
            let e = validate(&r).unwrap_err();
            assert!(e.contains(want), "{e} should mention {want}");
        }
    }
}
