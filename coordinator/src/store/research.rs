//! The research functions and views, each read whole as JSON rows: their columns are declared
//! once, by the SQL (`migrations/0019`–`0022`), and cross to the CLI as they are; the column
//! order comes from PostgreSQL's description of the query.

use super::Result;
use super::pricing::rule_broken;
use crate::domain::analysis::Table;
use sqlx::PgPool;
use uuid::Uuid;

/// `rows` (each `row_to_json`'s text) under `columns`.
fn table(columns: Vec<String>, rows: Vec<String>) -> Result<Table> {
    Table::from_json_rows(columns, &rows).map_err(|e| super::Error::Db(sqlx::Error::Decode(Box::new(e))))
}

/// The columns `sql` returns, as PostgreSQL describes them.
async fn columns(pool: &PgPool, sql: &'static str) -> Result<Vec<String>> {
    use sqlx::{Column, Executor, SqlSafeStr};
    let described = pool.describe(sql.into_sql_str()).await?;
    Ok(described.columns().iter().map(|c| c.name().to_owned()).collect())
}

/// `leaderboard_of(runs)`; every completed run when `runs` is empty (the `leaderboard` view).
pub async fn leaderboard(pool: &PgPool, runs: &[Uuid]) -> Result<Table> {
    if !runs.is_empty() {
        return leaderboard_of(pool, runs).await;
    }
    let rows =
        sqlx::query_scalar!(r#"SELECT row_to_json(t)::text AS "row!" FROM leaderboard t"#).fetch_all(pool).await?;
    table(columns(pool, "SELECT * FROM leaderboard").await?, rows)
}

/// `leaderboard_of(runs)`: no rows when `runs` is empty.
async fn leaderboard_of(pool: &PgPool, runs: &[Uuid]) -> Result<Table> {
    let rows = sqlx::query_scalar!(r#"SELECT row_to_json(t)::text AS "row!" FROM leaderboard_of($1) t"#, runs)
        .fetch_all(pool)
        .await?;
    table(columns(pool, "SELECT * FROM leaderboard").await?, rows)
}

/// What `routing(...)` takes.
#[derive(Debug, Clone)]
pub struct Routing {
    /// The candidate runs, in tie-break order.
    pub runs: Vec<Uuid>,
    /// The run for queries no candidate answered, and the baseline.
    pub fallback: Uuid,
    /// `energy` or `cost`.
    pub objective: String,
    /// How often the router makes the oracle's choice (0 to 1).
    pub router_accuracy: f64,
    /// Seed of the router's draws.
    pub seed: i32,
}

/// `routing(runs, fallback, objective, router_accuracy, seed)`: one row per candidate run.
pub async fn routing(pool: &PgPool, r: &Routing) -> Result<Table> {
    let rows = sqlx::query_scalar!(
        r#"SELECT row_to_json(t)::text AS "row!" FROM routing($1, $2, $3, $4, $5) t"#,
        &r.runs,
        r.fallback,
        r.objective,
        r.router_accuracy,
        r.seed
    )
    .fetch_all(pool)
    .await
    .map_err(rule_broken)?;
    let sql = "SELECT * FROM routing('{}'::uuid[], NULL::uuid, NULL::text, NULL::float8, NULL::int)";
    table(columns(pool, sql).await?, rows)
}

/// `ipw_weighted(name)`: per run, plain and weighted accuracy and IPW.
pub async fn weighted(pool: &PgPool, name: &str) -> Result<Table> {
    let rows = sqlx::query_scalar!(r#"SELECT row_to_json(t)::text AS "row!" FROM ipw_weighted($1) t"#, name)
        .fetch_all(pool)
        .await
        .map_err(rule_broken)?;
    table(columns(pool, "SELECT * FROM ipw_weighted(NULL::text)").await?, rows)
}

/// The `fleet_capacity` view.
pub async fn capacity(pool: &PgPool) -> Result<Table> {
    let rows =
        sqlx::query_scalar!(r#"SELECT row_to_json(t)::text AS "row!" FROM fleet_capacity t"#).fetch_all(pool).await?;
    table(columns(pool, "SELECT * FROM fleet_capacity").await?, rows)
}

/// `source_report(runs)`: each session's sources over one window, with their ratios and the
/// cross-check between scopes (every run when `runs` is empty).
pub async fn sources(pool: &PgPool, runs: &[Uuid]) -> Result<Table> {
    let rows = sqlx::query_scalar!(r#"SELECT row_to_json(t)::text AS "row!" FROM source_report($1) t"#, runs)
        .fetch_all(pool)
        .await?;
    table(columns(pool, "SELECT * FROM source_report('{}'::uuid[])").await?, rows)
}

/// Which completed runs a leaderboard covers: the dashboard's filters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaderboardFilter {
    /// Only this workload (by name).
    pub workload: Option<String>,
    /// Runs created on or after this day.
    pub from: Option<chrono::NaiveDate>,
    /// Runs created on or before this day.
    pub to: Option<chrono::NaiveDate>,
    /// Only runs measured by an agent with this label, `key=value`.
    pub label: Option<(String, String)>,
}

/// The completed runs `f` selects.
pub async fn runs_matching(pool: &PgPool, f: &LeaderboardFilter) -> Result<Vec<Uuid>> {
    let (key, value) = f.label.clone().unzip();
    Ok(sqlx::query_scalar!(
        r#"SELECT r.id FROM runs r JOIN workloads w ON w.id = r.workload_id
           WHERE r.status = 'completed'
             AND ($1::text IS NULL OR w.name = $1)
             AND ($2::date IS NULL OR r.created_at >= $2::date)
             AND ($3::date IS NULL OR r.created_at < $3::date + 1)
             AND ($4::text IS NULL OR EXISTS (
                 SELECT 1 FROM run_provenance p JOIN agents a ON a.id = p.agent_id
                 WHERE p.run_id = r.id AND a.labels ->> $4 = $5))
           ORDER BY r.created_at, r.id"#,
        f.workload,
        f.from,
        f.to,
        key,
        value
    )
    .fetch_all(pool)
    .await?)
}

/// The leaderboard of the completed runs `f` selects: exactly `leaderboard_of` over them.
pub async fn leaderboard_filtered(pool: &PgPool, f: &LeaderboardFilter) -> Result<Table> {
    leaderboard_of(pool, &runs_matching(pool, f).await?).await
}

/// A (model, hardware class) point with completed runs on a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// The model.
    pub model: String,
    /// The hardware class.
    pub hardware_class: String,
}

/// Every (model, hardware class, workload) with a completed run, for the compare page's pickers.
pub async fn points(pool: &PgPool) -> Result<Vec<(Point, String)>> {
    let rows = sqlx::query!(
        r#"SELECT DISTINCT m.name AS model, a.hardware_class, w.name AS workload
           FROM runs r JOIN models m ON m.id = r.model_id JOIN workloads w ON w.id = r.workload_id
           JOIN run_provenance p ON p.run_id = r.id JOIN agents a ON a.id = p.agent_id
           WHERE r.status = 'completed'
           ORDER BY w.name, m.name, a.hardware_class"#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (Point { model: r.model, hardware_class: r.hardware_class }, r.workload)).collect())
}

/// `attribution(a, b, workload)`: the IPW ratio split into model and hardware factors, naming
/// the cells of the 2x2 grid never measured.
pub async fn attribution(pool: &PgPool, a: &Point, b: &Point, workload: &str) -> Result<Table> {
    let rows = sqlx::query_scalar!(
        r#"SELECT row_to_json(t)::text AS "row!" FROM attribution($1, $2, $3, $4, $5) t"#,
        a.model,
        a.hardware_class,
        b.model,
        b.hardware_class,
        workload
    )
    .fetch_all(pool)
    .await
    .map_err(rule_broken)?;
    table(columns(pool, "SELECT * FROM attribution(NULL, NULL, NULL, NULL, NULL)").await?, rows)
}

/// `coverage` of the latest completed run of each point on `workload`.
pub async fn coverage(pool: &PgPool, a: &Point, b: &Point, workload: &str) -> Result<Table> {
    let rows = sqlx::query_scalar!(
        r#"WITH latest AS (
               SELECT DISTINCT ON (m.name, ag.hardware_class) r.id
               FROM runs r JOIN models m ON m.id = r.model_id JOIN workloads w ON w.id = r.workload_id
               JOIN run_provenance p ON p.run_id = r.id JOIN agents ag ON ag.id = p.agent_id
               WHERE r.status = 'completed' AND w.name = $5
                 AND ((m.name = $1 AND ag.hardware_class = $2) OR (m.name = $3 AND ag.hardware_class = $4))
               ORDER BY m.name, ag.hardware_class, r.created_at DESC)
           SELECT row_to_json(t)::text AS "row!" FROM coverage(ARRAY(SELECT id FROM latest)) t"#,
        a.model,
        a.hardware_class,
        b.model,
        b.hardware_class,
        workload
    )
    .fetch_all(pool)
    .await?;
    table(columns(pool, "SELECT * FROM coverage('{}'::uuid[])").await?, rows)
}

/// What each agent ran `run_id` with (`run_provenance_by_run`), one row per agent.
pub async fn provenance(pool: &PgPool, run_id: Uuid) -> Result<Table> {
    let rows = sqlx::query_scalar!(
        r#"SELECT row_to_json(t)::text AS "row!" FROM run_provenance_by_run t WHERE t.run_id = $1 ORDER BY t.agent_name"#,
        run_id
    )
    .fetch_all(pool)
    .await?;
    table(columns(pool, "SELECT * FROM run_provenance_by_run").await?, rows)
}
