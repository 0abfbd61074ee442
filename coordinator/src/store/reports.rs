//! Reading the analysis views: `ipw_summary` rows, per-query points and the IPW-over-time
//! series, under a chosen scoring.

use super::{Error, Result, results, runs};
use crate::domain::report::{Report, SummaryRow};
use ipw_proto::v1::{QueryPoint, TimePoint};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// The report of `run_ids` (every run when empty) under `scoring` (each run's latest when
/// `None`); with `with_points`, also the per-query points and the series over time.
pub async fn report(pool: &PgPool, run_ids: &[Uuid], scoring: Option<Uuid>, with_points: bool) -> Result<Report> {
    for id in run_ids {
        runs::info(pool, *id).await?;
    }
    if let Some(id) = scoring
        && !results::scoring_exists(pool, id).await?
    {
        return Err(Error::NotFound(format!("no scoring {id}")));
    }
    // The views read the chosen scoring from a setting local to this transaction.
    let mut tx = pool.begin().await?;
    let chosen = scoring.map(|s| s.to_string()).unwrap_or_default();
    sqlx::query!("SELECT set_config('ipw.scoring', $1, true)", chosen).fetch_one(&mut *tx).await?;
    let rows = summary(&mut tx, run_ids).await?;
    let (points, over_time) =
        if with_points { (points(&mut tx, run_ids).await?, over_time(&mut tx).await?) } else { Default::default() };
    tx.commit().await?;
    Ok(Report { rows, points, over_time })
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

/// Each error-free result: output tokens, energy, latency.
async fn points(tx: &mut Transaction<'_, Postgres>, run_ids: &[Uuid]) -> Result<Vec<QueryPoint>> {
    let rows = sqlx::query!(
        "SELECT run_id, model, hardware_class, tokens_out, energy_j, latency_s FROM query_results
         WHERE (cardinality($1::uuid[]) = 0 OR run_id = ANY($1)) AND error IS NULL ORDER BY result_id",
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
