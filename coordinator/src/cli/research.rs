//! `ipw leaderboard`, `ipw routing`, `ipw weighted` and `ipw capacity`: the research
//! functions and views, printed in any report format.

use super::render::{self, Format};
use super::{Admin, refused};
use crate::domain::analysis::Table;
use ipw_proto::v1::analysis_request::Kind;
use ipw_proto::v1::{AnalysisRequest, CapacityQuery, LeaderboardQuery, RoutingQuery, WeightedQuery};

/// `ipw routing`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct RoutingArgs {
    /// The candidate runs, in tie-break order (comma-separated or repeated).
    #[arg(long = "runs", value_delimiter = ',', required = true)]
    pub runs: Vec<String>,
    /// The run that serves what no candidate answered, and the baseline.
    #[arg(long)]
    pub fallback: String,
    /// What the router minimises: energy or cost.
    #[arg(long, default_value = "energy")]
    pub objective: String,
    /// How often the router makes the oracle's choice, from 0 to 1.
    #[arg(long, default_value_t = 1.0)]
    pub router_accuracy: f64,
    /// Seed of the router's draws.
    #[arg(long, default_value_t = 0)]
    pub seed: i32,
}

impl RoutingArgs {
    /// The query at router accuracy `p`.
    pub fn query(&self, p: f64) -> Kind {
        Kind::Routing(RoutingQuery {
            run_ids: self.runs.clone(),
            fallback_run_id: self.fallback.clone(),
            objective: self.objective.clone(),
            router_accuracy: p,
            seed: self.seed,
        })
    }
}

/// Runs one analysis.
pub async fn analyze(admin: &mut Admin, url: &str, kind: Kind) -> anyhow::Result<Table> {
    let wire = admin.analyze(AnalysisRequest { kind: Some(kind) }).await.map_err(refused(url))?.into_inner();
    Ok(Table::from_wire(wire)?)
}

/// `ipw leaderboard [RUNS]`.
pub async fn leaderboard(admin: &mut Admin, url: &str, runs: Vec<String>, format: Format) -> anyhow::Result<()> {
    let t = analyze(admin, url, Kind::Leaderboard(LeaderboardQuery { run_ids: runs })).await?;
    print!("{}", render::render_analysis(&t, format));
    Ok(())
}

/// `ipw routing`.
pub async fn routing(admin: &mut Admin, url: &str, args: RoutingArgs, format: Format) -> anyhow::Result<()> {
    let t = analyze(admin, url, args.query(args.router_accuracy)).await?;
    print!("{}", render::render_analysis(&t, format));
    Ok(())
}

/// `ipw weighted NAME`.
pub async fn weighted(admin: &mut Admin, url: &str, weights: String, format: Format) -> anyhow::Result<()> {
    let t = analyze(admin, url, Kind::Weighted(WeightedQuery { weights })).await?;
    print!("{}", render::render_analysis(&t, format));
    Ok(())
}

/// `ipw capacity`.
pub async fn capacity(admin: &mut Admin, url: &str, format: Format) -> anyhow::Result<()> {
    let t = analyze(admin, url, Kind::Capacity(CapacityQuery {})).await?;
    print!("{}", render::render_analysis(&t, format));
    Ok(())
}
