//! `ipw report`, `ipw plot` and `ipw score`: reading the analysis views, and scoring again.

use super::render::{self, Format};
use super::research::PlotResearchArgs;
use super::{Admin, refused};
use crate::domain::report::Report;
use ipw_proto::kinds::Strictness;
use ipw_proto::v1::{ReportRequest, ScoreRunRequest};
use std::path::{Path, PathBuf};

/// Fetches the report of `runs` (every run when empty) under `scoring` (each run's latest
/// when `None`).
pub async fn fetch(
    admin: &mut Admin,
    url: &str,
    runs: Vec<String>,
    scoring: Option<String>,
    with_points: bool,
) -> anyhow::Result<Report> {
    let request = ReportRequest { run_ids: runs, scoring_id: scoring.unwrap_or_default(), with_points };
    let wire = admin.get_report(request).await.map_err(refused(url))?.into_inner();
    Ok(Report::from_wire(wire)?)
}

/// `ipw report`: prints the report in `format`.
pub async fn report(
    admin: &mut Admin,
    url: &str,
    runs: Vec<String>,
    scoring: Option<String>,
    format: Format,
) -> anyhow::Result<()> {
    let report = fetch(admin, url, runs, scoring, false).await?;
    print!("{}", render::render_report(&report, format));
    Ok(())
}

/// `ipw plot`: writes the SVG figures into `out`, the research figures among them; returns
/// the files written.
pub async fn plot(
    admin: &mut Admin,
    url: &str,
    runs: Vec<String>,
    scoring: Option<String>,
    out: &Path,
    research: &PlotResearchArgs,
) -> anyhow::Result<Vec<PathBuf>> {
    let figures = super::research::figures(admin, url, &runs, research).await?;
    let report = fetch(admin, url, runs, scoring, true).await?;
    let mut files = render::svg::write_all(&report, out).map_err(anyhow::Error::msg)?;
    files.extend(render::svg::research::write_all(&figures, out).map_err(anyhow::Error::msg)?);
    for f in &files {
        println!("wrote {}", f.display());
    }
    if figures.routing.is_none() && !research.routing_runs.is_empty() {
        println!("no routing curve: it needs --routing-fallback");
    }
    Ok(files)
}

/// `ipw score`'s settings.
#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    /// The run id.
    pub run: String,
    /// An OpenAI-compatible endpoint to use as the judge.
    #[arg(long)]
    pub judge_url: Option<String>,
    /// The judge's model name.
    #[arg(long)]
    pub judge_model: Option<String>,
    /// strict: both answer orders must agree; lenient: either.
    #[arg(long, value_enum, default_value = "strict")]
    pub strictness: Strictness,
    /// Judge calls in flight at once.
    #[arg(long, default_value_t = 4)]
    pub judge_concurrency: u32,
    /// Judge every query, not only those whose scorer is `judge`.
    #[arg(long)]
    pub judge_all: bool,
}

/// `ipw score`: scores a run again and prints what the scoring did.
pub async fn score(admin: &mut Admin, url: &str, a: ScoreArgs) -> anyhow::Result<()> {
    if a.judge_url.is_some() != a.judge_model.is_some() {
        anyhow::bail!("a judge needs both --judge-url and --judge-model");
    }
    if a.judge_all && a.judge_url.is_none() {
        anyhow::bail!("--judge-all needs a judge (--judge-url and --judge-model)");
    }
    let request = ScoreRunRequest {
        run_id: a.run,
        judge_url: a.judge_url.unwrap_or_default(),
        judge_model: a.judge_model.unwrap_or_default(),
        strictness: a.strictness.as_str().to_owned(),
        judge_concurrency: a.judge_concurrency,
        judge_all: a.judge_all,
    };
    let r = admin.score_run(request).await.map_err(refused(url))?.into_inner();
    println!(
        "scoring {}: {} scored, {} correct, {} failed (left unscored)",
        r.scoring_id, r.scored, r.correct, r.failed
    );
    if !r.judge_version.is_empty() {
        println!("judge: {}", r.judge_version);
    }
    for f in &r.failures {
        println!("  {f}");
    }
    Ok(())
}
