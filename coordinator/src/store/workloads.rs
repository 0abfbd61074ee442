//! `workloads` and `queries`: importing a workload and finding one.

use super::{Error, Result, on_unique_violation};
use crate::domain::workload::{Format, NewQuery};
use ipw_proto::v1::ImportWorkloadResponse;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A workload, by name or id.
pub struct Workload {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// How many queries it holds.
    pub n_queries: i32,
}

/// Finds a workload by name or id, or says how to import one.
pub async fn find(conn: &mut PgConnection, key: &str) -> Result<Workload> {
    sqlx::query_as!(Workload, "SELECT id, name, n_queries FROM workloads WHERE name = $1 OR id::text = $1", key.trim())
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no workload \"{key}\"; import it first (`ipw workload import`)")))
}

/// Every workload, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<ImportWorkloadResponse>> {
    let rows =
        sqlx::query!("SELECT id, name, format, n_queries FROM workloads ORDER BY imported_at").fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .map(|w| ImportWorkloadResponse {
            workload_id: w.id.to_string(),
            name: w.name,
            format: w.format,
            queries: w.n_queries as u64,
        })
        .collect())
}

/// Starts an import: the workload's row, empty until [`finish_import`]. `nothing` is appended
/// to the error, since the caller rolls the whole import back.
pub async fn begin_import(conn: &mut PgConnection, name: &str, source: &str, nothing: &str) -> Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO workloads (id, name, format, source, n_queries) VALUES ($1, $2, 'generic', $3, 0)",
        id,
        name,
        source
    )
    .execute(conn)
    .await
    .map_err(|e| {
        on_unique_violation(e, || Error::AlreadyExists(format!("a workload named \"{name}\" already exists{nothing}")))
    })?;
    Ok(id)
}

/// Records the parsed format and the number of queries imported.
pub async fn finish_import(conn: &mut PgConnection, workload_id: Uuid, format: Format, queries: i32) -> Result<()> {
    sqlx::query!(
        "UPDATE workloads SET n_queries = $2, format = $3 WHERE id = $1",
        workload_id,
        queries,
        format.as_str()
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts parsed queries with one statement.
pub async fn insert_queries(conn: &mut PgConnection, workload_id: Uuid, queries: &[NewQuery]) -> Result<()> {
    if queries.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&NewQuery) -> String| queries.iter().map(f).collect::<Vec<String>>();
    let line_nos: Vec<i32> = queries.iter().map(|q| i32::try_from(q.line_no).unwrap_or(i32::MAX)).collect();
    let choices: Vec<Option<String>> = queries
        .iter()
        .map(|q| q.choices.as_ref().map(|c| serde_json::to_string(c).expect("strings are JSON")))
        .collect();
    let categories: Vec<Option<String>> = queries.iter().map(|q| q.category.clone()).collect();
    let tolerances: Vec<Option<f64>> = queries.iter().map(|q| q.tolerance).collect();
    sqlx::query!(
        "INSERT INTO queries (workload_id, external_id, line_no, prompt, choices, answer, category, scorer, tolerance)
         SELECT $1, u.external_id, u.line_no, u.prompt, u.choices::jsonb, u.answer, u.category, u.scorer, u.tolerance
         FROM UNNEST($2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::float8[])
              AS u(external_id, line_no, prompt, choices, answer, category, scorer, tolerance)",
        workload_id,
        &col(|q| q.external_id.clone()),
        &line_nos,
        &col(|q| q.prompt.clone()),
        &choices as &[Option<String>],
        &col(|q| q.answer.clone()),
        &categories as &[Option<String>],
        &col(|q| q.scorer.as_str().to_owned()),
        &tolerances as &[Option<f64>],
    )
    .execute(conn)
    .await?;
    Ok(())
}
