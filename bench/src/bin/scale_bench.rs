//! `ipw-scale-bench`: the coordinator and PostgreSQL at a million queries, each figure beside
//! its baseline measured in the same run (see BENCHMARKS.md, "Scale").
//!
//! Steps: import of a generated workload against `COPY` of the same rows; `ipw run create`
//! of the whole workload; lease throughput with many agents asking at once; ingest through
//! gRPC by a load generator against `COPY` of the same result rows; and report, view and
//! plot times at one run of synthetic results and again with `--runs` such runs.

use anyhow::Context;
use clap::Parser;
use ipw_bench::scale::stats::median;
use ipw_bench::scale::{agents, data, fleet::Fleet};
use serde_json::json;
use std::path::{Path, PathBuf};
use uuid::Uuid;

#[derive(Parser, Debug)]
#[command(about = "The coordinator and PostgreSQL at scale, against raw PostgreSQL")]
struct Args {
    /// Folder with the release binaries `ipw-coordinator` and `ipw`.
    #[arg(long, default_value = "target/release")]
    bin: PathBuf,
    /// The MMLU-Pro questions to repeat into the workload.
    #[arg(long, default_value = "../shared/data/mmlu-pro-test.jsonl")]
    source: PathBuf,
    /// Lines in the generated workload (and queries per run).
    #[arg(long, default_value_t = 1_000_000)]
    queries: usize,
    /// Queries per shard.
    #[arg(long, default_value_t = 100)]
    shard_size: usize,
    /// Agents asking for leases at once.
    #[arg(long, default_value_t = 100)]
    lease_agents: usize,
    /// Leases handed out in the lease benchmark.
    #[arg(long, default_value_t = 5000)]
    leases: usize,
    /// Agents uploading at once in the ingest benchmark.
    #[arg(long, default_value_t = 8)]
    ingest_agents: usize,
    /// Shards whose results each simulated agent uploads in one batch (a session holds a few
    /// shards at once; the agent uploads what it has every second).
    #[arg(long, default_value = "1,4")]
    batch_shards: String,
    /// Results uploaded in the ingest benchmark.
    #[arg(long, default_value_t = 100_000)]
    ingest_results: usize,
    /// Runs of synthetic results for the report and view timings at scale (`--queries` each).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Repeats of each report and view timing; the median is kept.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Where to write every figure as JSON.
    #[arg(long, default_value = "bench/scale-results.json")]
    out: PathBuf,
}

const MODEL: &str = "bench-model";
const WORKLOAD: &str = "scale";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let work = tempfile::Builder::new().prefix("ipw-scale-").tempdir()?;
    let fleet = Fleet::start(&args.bin, work.path(), &[]).await?;
    let mut figures = serde_json::Map::new();
    figures.insert("import".into(), import(&fleet, &args, work.path()).await?);
    let (run, secs) = fleet.create_run(WORKLOAD, MODEL, args.queries, args.shard_size, 1)?;
    say(&format!("run create: {} queries in {secs:.2} s", args.queries));
    figures.insert("run_create".into(), json!({ "queries": args.queries, "shard_size": args.shard_size, "s": secs }));
    let token = fleet.join_token(args.lease_agents.max(args.ingest_agents))?;
    let fleet_agents = agents::enroll(&fleet.url, &token, args.lease_agents.max(args.ingest_agents)).await?;
    let leases = agents::lease_throughput(&fleet_agents[..args.lease_agents], &run, MODEL, args.leases).await?;
    say(&format!("leases: {leases:?}"));
    figures.insert("lease".into(), serde_json::to_value(&leases)?);
    figures.insert("ingest".into(), ingest(&fleet, &args, &fleet_agents[..args.ingest_agents]).await?);
    figures.insert("views".into(), views(&fleet, &args, &run, work.path()).await?);
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(figures))?;
    std::fs::write(&args.out, &text).with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("{text}");
    Ok(())
}

/// Progress, on standard error.
fn say(line: &str) {
    eprintln!("[scale] {line}");
}

/// `ipw workload import` of the generated workload against `COPY` of the rows it wrote.
async fn import(fleet: &Fleet, args: &Args, work: &Path) -> anyhow::Result<serde_json::Value> {
    let file = work.join("workload.jsonl");
    let bytes = data::write_workload(&args.source, &file, args.queries)?;
    let (secs, _) = fleet.ipw(&["workload", "import", file.to_str().context("path")?, "--name", WORKLOAD])?;
    let id = data::workload_id(&fleet.pool, WORKLOAD).await?;
    let (text_s, binary_s, rows) = data::copy_queries_baseline(&fleet.pool, id).await?;
    say(&format!("import: {secs:.2} s; COPY of the same {rows} rows: {text_s:.2} s (text), {binary_s:.2} s (binary)"));
    std::fs::remove_file(&file)?;
    // Against the faster of the two formats.
    let copy_s = text_s.min(binary_s);
    Ok(json!({ "lines": args.queries, "bytes": bytes, "import_s": secs, "copy_text_s": text_s,
               "copy_binary_s": binary_s, "rate_vs_faster_copy": copy_s / secs }))
}

/// The load generator's uploads, for each batch size, against `COPY` of the same result rows.
async fn ingest(
    fleet: &Fleet,
    args: &Args,
    agents: &[ipw_agent::client::Coordinator],
) -> anyhow::Result<serde_json::Value> {
    let model = "bench-ingest";
    let mut figures = Vec::new();
    for (i, shards) in args.batch_shards.split(',').enumerate() {
        let shards: usize = shards.trim().parse().context("--batch-shards takes numbers, e.g. 1,4")?;
        let seed = 7 + i as u64;
        let (run, _) = fleet.create_run(WORKLOAD, model, args.ingest_results, args.shard_size, seed)?;
        let (twin, _) = fleet.create_run(WORKLOAD, model, args.ingest_results, args.shard_size, seed)?;
        let got = agents::ingest(agents, &run, model, shards).await?;
        anyhow::ensure!(
            got.inserted == args.ingest_results as u64,
            "{} of {} results inserted",
            got.inserted,
            args.ingest_results
        );
        let (copy_s, rows) = data::copy_results_baseline(&fleet.pool, run.parse()?, twin.parse()?).await?;
        let copy_per_s = rows as f64 / copy_s;
        say(&format!(
            "ingest, {shards} shard(s) per batch: {:.0}/s through gRPC; COPY of the same rows {copy_per_s:.0}/s",
            got.per_s
        ));
        figures.push(json!({ "shards_per_batch": shards, "results_per_batch": shards * args.shard_size,
                             "figures": got, "copy_per_s": copy_per_s, "ratio_vs_copy": got.per_s / copy_per_s }));
    }
    Ok(serde_json::Value::Array(figures))
}

/// Report, view and plot times with one run of synthetic results, then with `--runs`.
async fn views(fleet: &Fleet, args: &Args, first: &str, work: &Path) -> anyhow::Result<serde_json::Value> {
    let agent: Uuid = sqlx::query_scalar("SELECT id FROM agents ORDER BY name LIMIT 1").fetch_one(&fleet.pool).await?;
    let mut runs = vec![first.to_owned()];
    data::fill_synthetic(&fleet.pool, first.parse()?, agent).await?;
    let mut stored = vec![data::wait_for_summary(&fleet.pool, first.parse()?, 600.0).await?];
    let one = time_views(fleet, args, &runs, work).await?;
    for seed in 2..=args.runs as u64 {
        let (run, _) = fleet.create_run(WORKLOAD, MODEL, args.queries, args.shard_size, seed)?;
        data::fill_synthetic(&fleet.pool, run.parse()?, agent).await?;
        stored.push(data::wait_for_summary(&fleet.pool, run.parse()?, 600.0).await?);
        say(&format!("filled run {seed} of {}", args.runs));
        runs.push(run);
    }
    let all = if args.runs > 1 { time_views(fleet, args, &runs, work).await? } else { json!(null) };
    Ok(json!({ "one_run": one, "all_runs": all, "results_per_run": args.queries, "runs": args.runs,
               "summary_stored_after_completion_s": median(&stored) }))
}

/// The medians of `ipw report` and `ipw_summary` for the first run, `ipw_summary` whole, and
/// `ipw plot` of every run in `runs`.
async fn time_views(fleet: &Fleet, args: &Args, runs: &[String], work: &Path) -> anyhow::Result<serde_json::Value> {
    let first = &runs[0];
    // The bulk inserts before leave dirty pages behind; timed reads should not wait on their
    // writeback.
    sqlx::query("CHECKPOINT").execute(&fleet.pool).await?;
    let (mut report, mut one, mut whole) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.repeats {
        report.push(fleet.ipw(&["report", first])?.0);
        one.push(
            data::time_query(&fleet.pool, &format!("SELECT * FROM ipw_summary WHERE run_id = '{first}'")).await?.0,
        );
        whole.push(data::time_query(&fleet.pool, "SELECT * FROM ipw_summary").await?.0);
    }
    let out = work.join("plots");
    let mut plot_args = vec!["plot", "--out", out.to_str().context("path")?];
    plot_args.extend(runs.iter().map(String::as_str));
    let plot = match fleet.ipw_measured(&plot_args) {
        Ok((secs, _, peak)) => json!({ "s": secs, "peak_memory_bytes": peak }),
        Err(e) => json!({ "error": e.to_string() }),
    };
    let file = work.join("export.parquet");
    let (export_s, _, export_peak) =
        fleet.ipw_measured(&["export", first, "--format", "parquet", "--out", file.to_str().context("path")?])?;
    let export_bytes = std::fs::metadata(&file)?.len();
    std::fs::remove_file(&file)?;
    let figures = json!({
        "results": runs.len() * args.queries,
        "export_first_run_parquet_s": export_s,
        "export_bytes": export_bytes,
        "export_peak_memory_bytes": export_peak,
        "report_s": median(&report),
        "summary_one_run_s": median(&one),
        "summary_all_runs_s": median(&whole),
        "plot": plot,
    });
    say(&format!("views at {} results: {figures}", runs.len() * args.queries));
    Ok(figures)
}
