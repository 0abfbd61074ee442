//! The declarations that must agree with the schema: the report row with the `ipw_summary`
//! view, and each closed set of values with the `CHECK` constraint of the column storing it.

use ipw_coordinator::domain::report::SummaryRow;
use ipw_coordinator::infra::pool::connect_and_migrate;
use ipw_e2e::fresh_database;
use ipw_proto::kinds::{
    AgentStatus, Attribution, IpwScope, MissedPolicy, PowerKind, RunStatus, ShardStatus, Strictness, SweepStatus,
};

#[tokio::test]
async fn the_report_row_holds_exactly_the_columns_of_ipw_summary() -> anyhow::Result<()> {
    let pool = connect_and_migrate(fresh_database().await?).await?;
    let view: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns
         WHERE table_name = 'ipw_summary' ORDER BY ordinal_position",
    )
    .fetch_all(&pool)
    .await?;
    let mut view_sorted = view.clone();
    view_sorted.sort();
    let mut declared: Vec<String> = SummaryRow::COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    declared.sort();
    assert_eq!(declared, view_sorted, "SummaryRow and the ipw_summary view must name the same columns");
    Ok(())
}

/// The values a column's `CHECK (col IN (...))` admits, as PostgreSQL prints the constraint.
async fn checked_values(pool: &sqlx::PgPool, table: &str, column: &str) -> anyhow::Result<Vec<String>> {
    let defs: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c
         JOIN pg_class t ON t.oid = c.conrelid
         WHERE t.relname = $1 AND c.contype = 'c' AND pg_get_constraintdef(c.oid) LIKE '%' || $2 || '%ANY%'",
    )
    .bind(table)
    .bind(column)
    .fetch_all(pool)
    .await?;
    let def = defs.first().ok_or_else(|| anyhow::anyhow!("no CHECK (... IN ...) on {table}.{column}"))?;
    // e.g. CHECK ((status = ANY (ARRAY['pending'::text, 'approved'::text])))
    let mut values: Vec<String> = def.split('\'').skip(1).step_by(2).map(str::to_owned).collect();
    values.sort();
    Ok(values)
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn every_closed_set_matches_its_check_constraint() -> anyhow::Result<()> {
    let pool = connect_and_migrate(fresh_database().await?).await?;
    let cases: [(&str, &str, &[&str]); 9] = [
        ("agents", "status", AgentStatus::NAMES),
        ("runs", "status", RunStatus::NAMES),
        ("shards", "status", ShardStatus::NAMES),
        ("sweeps", "status", SweepStatus::NAMES),
        ("sweep_definitions", "missed_policy", MissedPolicy::NAMES),
        ("scorings", "judge_strictness", Strictness::NAMES),
        ("results", "energy_attribution", Attribution::NAMES),
        ("shard_telemetry", "attribution", Attribution::NAMES),
        ("measurement_sessions", "ipw_scope", IpwScope::NAMES),
    ];
    for (table, column, names) in cases {
        let stored = checked_values(&pool, table, column).await?;
        assert_eq!(stored, sorted(names), "{table}.{column} and ipw_proto::kinds disagree");
    }
    // Power sources are checked by a pattern: `none`, or kinds joined with '+'.
    let def: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'results_power_source_check'",
    )
    .fetch_one(&pool)
    .await?;
    let alternation = def.split("^(").nth(1).and_then(|s| s.split(')').next()).unwrap_or_default();
    let mut kinds: Vec<&str> = alternation.split('|').collect();
    kinds.sort();
    assert_eq!(kinds, sorted(PowerKind::NAMES), "results.power_source and ipw_proto::kinds disagree: {def}");
    Ok(())
}
