//! Reading the analysis views: `ipw_summary` rows, per-query points and the IPW-over-time
//! series, under a chosen scoring.

use super::{Error, Result, results, runs};
use crate::domain::report::{MAX_POINTS, POINT_GRID, Report, SummaryRow};
use ipw_proto::v1::{PointBin, QueryPoint, TimePoint};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// The report of `run_ids` (every run when empty) under `scoring` (each run's latest when
/// `None`); with `with_points`, also the per-query points and the series over time.
pub async fn report(pool: &PgPool, run_ids: &[Uuid], scoring: Option<Uuid>, with_points: bool) -> Result<Report> {
    check_exist(pool, run_ids, scoring).await?;
    let mut tx = pool.begin().await?;
    read_under(&mut tx, scoring).await?;
    let rows = summary(&mut tx, run_ids).await?;
    let mut report = Report { rows, ..Default::default() };
    if with_points {
        if measured_points(&mut tx, run_ids).await? <= MAX_POINTS {
            report.points = points(&mut tx, run_ids).await?;
        } else {
            report.point_bins = point_bins(&mut tx, run_ids).await?;
        }
        report.over_time = over_time(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(report)
}

/// Every run of `run_ids`, and `scoring` when given, exists; NotFound names the first that
/// does not.
pub async fn check_exist(pool: &PgPool, run_ids: &[Uuid], scoring: Option<Uuid>) -> Result<()> {
    for id in run_ids {
        runs::info(pool, *id).await?;
    }
    match scoring {
        Some(id) if !results::scoring_exists(pool, id).await? => Err(Error::NotFound(format!("no scoring {id}"))),
        _ => Ok(()),
    }
}

/// Makes the views read `scoring` (each run's latest when `None`) for the rest of `tx`: they
/// take it from a setting local to the transaction.
pub async fn read_under(tx: &mut Transaction<'_, Postgres>, scoring: Option<Uuid>) -> Result<()> {
    let chosen = scoring.map(|s| s.to_string()).unwrap_or_default();
    sqlx::query!("SELECT set_config('ipw.scoring', $1, true)", chosen).fetch_one(&mut **tx).await?;
    // The views' cost estimates are large even when stored summaries make them cheap, and
    // JIT-compiling their plans took longer than running them.
    sqlx::query!("SELECT set_config('jit', 'off', true)").fetch_one(&mut **tx).await?;
    Ok(())
}

/// The `ipw_summary` rows of the runs (every run when empty). Every column of the view, by
/// name, into [`SummaryRow`].
async fn summary(tx: &mut Transaction<'_, Postgres>, run_ids: &[Uuid]) -> Result<Vec<SummaryRow>> {
    Ok(sqlx::query_as::<_, SummaryRow>(
        "SELECT * FROM ipw_summary
         WHERE cardinality($1::uuid[]) = 0 OR run_id = ANY($1)
         ORDER BY model, hardware_class, run_id",
    )
    .bind(run_ids)
    .fetch_all(&mut **tx)
    .await?)
}

/// How many error-free results with energy the runs hold.
async fn measured_points(tx: &mut Transaction<'_, Postgres>, run_ids: &[Uuid]) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM results
           WHERE (cardinality($1::uuid[]) = 0 OR run_id = ANY($1)) AND error IS NULL AND energy_j IS NOT NULL"#,
        run_ids
    )
    .fetch_one(&mut **tx)
    .await?)
}

/// Each error-free result with energy: output tokens, energy, latency.
async fn points(tx: &mut Transaction<'_, Postgres>, run_ids: &[Uuid]) -> Result<Vec<QueryPoint>> {
    let rows = sqlx::query!(
        "SELECT run_id, model, hardware_class, tokens_out, energy_j, latency_s FROM query_results
         WHERE (cardinality($1::uuid[]) = 0 OR run_id = ANY($1)) AND error IS NULL AND energy_j IS NOT NULL
         ORDER BY result_id",
        run_ids
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|p| QueryPoint {
            run_id: p.run_id.map(|u| u.to_string()).unwrap_or_default(),
            model: p.model.unwrap_or_default(),
            hardware_class: p.hardware_class.unwrap_or_default(),
            tokens_out: p.tokens_out.unwrap_or(0) as u32,
            energy_j: p.energy_j,
            latency_s: p.latency_s,
        })
        .collect())
}

/// The same results counted in a [`POINT_GRID`] from zero to their largest output tokens and
/// energy, per (model, hardware class): the database does the counting, so any number of
/// results fits in a few thousand cells.
async fn point_bins(tx: &mut Transaction<'_, Postgres>, run_ids: &[Uuid]) -> Result<Vec<PointBin>> {
    let rows = sqlx::query!(
        r#"WITH p AS (SELECT r.agent_id, r.run_id, r.tokens_out::float8 AS t, r.energy_j AS e FROM results r
                      WHERE (cardinality($1::uuid[]) = 0 OR r.run_id = ANY($1))
                        AND r.error IS NULL AND r.energy_j IS NOT NULL),
                top AS (SELECT greatest(max(t), 1) AS t, greatest(max(e), 1e-9) AS e FROM p),
                cells AS (SELECT p.agent_id, p.run_id,
                                 least(floor(p.t / top.t * $2::int)::int, $2::int - 1) AS bx,
                                 least(floor(p.e / top.e * $3::int)::int, $3::int - 1) AS by, count(*) AS n
                          FROM p, top GROUP BY 1, 2, 3, 4)
           SELECT m.name AS "model!", a.hardware_class AS "hardware_class!", c.bx AS "bx!", c.by AS "by!",
                  sum(c.n)::bigint AS "n!", max(top.t) AS "top_t!", max(top.e) AS "top_e!"
           FROM cells c, top, runs ru, models m, agents a
           WHERE ru.id = c.run_id AND m.id = ru.model_id AND a.id = c.agent_id
           GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"#,
        run_ids,
        POINT_GRID.0,
        POINT_GRID.1
    )
    .fetch_all(&mut **tx)
    .await?;
    let (gx, gy) = (f64::from(POINT_GRID.0), f64::from(POINT_GRID.1));
    Ok(rows
        .into_iter()
        .map(|c| PointBin {
            model: c.model,
            hardware_class: c.hardware_class,
            tokens_lo: f64::from(c.bx) * c.top_t / gx,
            tokens_hi: f64::from(c.bx + 1) * c.top_t / gx,
            energy_lo: f64::from(c.by) * c.top_e / gy,
            energy_hi: f64::from(c.by + 1) * c.top_e / gy,
            count: c.n as u64,
        })
        .collect())
}

/// `ipw_over_time`, every series.
async fn over_time(tx: &mut Transaction<'_, Postgres>) -> Result<Vec<TimePoint>> {
    let rows = sqlx::query!(
        "SELECT day, model, workload, hardware_class, runs, ipw, accuracy FROM ipw_over_time
         ORDER BY day, model, hardware_class"
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|t| TimePoint {
            day: t.day.map(|d| d.to_string()).unwrap_or_default(),
            model: t.model.unwrap_or_default(),
            workload: t.workload.unwrap_or_default(),
            hardware_class: t.hardware_class.unwrap_or_default(),
            runs: t.runs.unwrap_or(0) as u64,
            ipw: t.ipw,
            accuracy: t.accuracy,
        })
        .collect())
}

/// One result as the run page's per-query table shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRow {
    /// Its result id, the page's cursor.
    pub result_id: i64,
    /// The id the workload file gave the query.
    pub external_id: String,
    /// The query's category, if any.
    pub category: Option<String>,
    /// Scored correct or wrong; `None` when unscored.
    pub correct: Option<bool>,
    /// The engine's error, if it failed.
    pub error: Option<String>,
    /// Seconds.
    pub latency_s: f64,
    /// Time to first token, seconds.
    pub ttft_s: Option<f64>,
    /// Prompt tokens.
    pub tokens_in: i32,
    /// Output tokens.
    pub tokens_out: i32,
    /// Joules; `None` with `energy_null_reason`.
    pub energy_j: Option<f64>,
    /// Why energy is unknown.
    pub energy_null_reason: Option<String>,
    /// The response text.
    pub response: String,
}

/// The run's results after result id `after`, in id order, at most `limit`: a page of the
/// per-query table, read by keyset so a late page costs what the first does.
pub async fn query_page(pool: &PgPool, run_id: Uuid, after: i64, limit: i64) -> Result<Vec<QueryRow>> {
    let rows = sqlx::query!(
        r#"SELECT qr.result_id AS "result_id!", qr.query_external_id AS "external_id!", qr.category, qr.correct,
                  qr.error, qr.latency_s AS "latency_s!", qr.ttft_s, qr.tokens_in AS "tokens_in!",
                  qr.tokens_out AS "tokens_out!", qr.energy_j, qr.energy_null_reason, r.response
           FROM query_results qr JOIN results r ON r.id = qr.result_id
           WHERE qr.run_id = $1 AND qr.result_id > $2
           ORDER BY qr.result_id LIMIT $3"#,
        run_id,
        after,
        limit
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| QueryRow {
            result_id: r.result_id,
            external_id: r.external_id,
            category: r.category,
            correct: r.correct,
            error: r.error,
            latency_s: r.latency_s,
            ttft_s: r.ttft_s,
            tokens_in: r.tokens_in,
            tokens_out: r.tokens_out,
            energy_j: r.energy_j,
            energy_null_reason: r.energy_null_reason,
            response: r.response,
        })
        .collect())
}
