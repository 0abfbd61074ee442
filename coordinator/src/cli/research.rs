//! `ipw leaderboard`, `ipw routing`, `ipw weighted`, `ipw capacity` and `ipw report
//! --sources`: the research functions and views, printed in any report format.

use super::render::svg::research::{Research, RoutingCurve, RoutingFigure};
use super::render::{self, Format};
use super::{Admin, refused};
use crate::domain::analysis::Table;
use ipw_proto::v1::analysis_request::Kind;
use ipw_proto::v1::{AnalysisRequest, CapacityQuery, LeaderboardQuery, RoutingQuery, SourcesQuery, WeightedQuery};

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

/// What a simulated router minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Objective {
    /// Joules.
    Energy,
    /// Money: API price or electricity.
    Cost,
}

impl Objective {
    /// As `routing(...)` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Objective::Energy => "energy",
            Objective::Cost => "cost",
        }
    }
}

/// `ipw plot`'s research figures: the routing curve (with a fallback) and weighted IPW (with
/// a weight set); cost against accuracy is always drawn.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PlotResearchArgs {
    /// The routing curve's candidate runs, in tie-break order (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub routing_runs: Vec<String>,
    /// The routing curve's fallback and baseline; without it no routing curve is drawn.
    #[arg(long, requires = "routing_runs")]
    pub routing_fallback: Option<String>,
    /// What the router minimises, one curve each: energy, cost, or energy,cost.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "energy")]
    pub routing_objective: Vec<Objective>,
    /// Seed of the router's draws.
    #[arg(long, default_value_t = 0)]
    pub routing_seed: i32,
    /// A weight set (see `ipw weights import`): also draw weighted against unweighted IPW.
    #[arg(long)]
    pub weights: Option<String>,
}

/// The router accuracies of the routing curve: 0, 0.1, ..., 1.
pub const ROUTER_ACCURACIES: usize = 11;

/// Fetches what the research figures draw: the leaderboard of `runs` (every completed run
/// when empty), the routing simulation at each router accuracy, and the weighted IPW of
/// `runs` (every run when empty).
pub async fn figures(admin: &mut Admin, url: &str, runs: &[String], a: &PlotResearchArgs) -> anyhow::Result<Research> {
    let leaderboard = analyze(admin, url, Kind::Leaderboard(LeaderboardQuery { run_ids: runs.to_vec() })).await?;
    let routing = match &a.routing_fallback {
        Some(fallback) => Some(routing_curves(admin, url, a, fallback).await?),
        None => None,
    };
    let weighted = match &a.weights {
        Some(name) => {
            let mut t = analyze(admin, url, Kind::Weighted(WeightedQuery { weights: name.clone() })).await?;
            if !runs.is_empty() {
                let asked = |id: Option<&serde_json::Value>| {
                    id.and_then(|v| v.as_str()).is_some_and(|id| runs.iter().any(|r| r.eq_ignore_ascii_case(id)))
                };
                t.rows.retain(|row| asked(row.get("run_id")));
            }
            Some((name.clone(), t))
        }
        None => None,
    };
    Ok(Research { leaderboard, routing, weighted })
}

/// The routing simulation at each router accuracy, one curve per objective asked.
async fn routing_curves(
    admin: &mut Admin,
    url: &str,
    a: &PlotResearchArgs,
    fallback: &str,
) -> anyhow::Result<RoutingFigure> {
    let mut curves: Vec<RoutingCurve> = Vec::new();
    for &objective in &a.routing_objective {
        if curves.iter().any(|c| c.objective == objective) {
            continue;
        }
        let args = RoutingArgs {
            runs: a.routing_runs.clone(),
            fallback: fallback.to_owned(),
            objective: objective.as_str().to_owned(),
            router_accuracy: 1.0,
            seed: a.routing_seed,
        };
        let mut points = Vec::with_capacity(ROUTER_ACCURACIES);
        for i in 0..ROUTER_ACCURACIES {
            let p = i as f64 / (ROUTER_ACCURACIES - 1) as f64;
            points.push((p, analyze(admin, url, args.query(p)).await?));
        }
        curves.push(RoutingCurve { objective, points });
    }
    Ok(RoutingFigure { fallback: fallback.to_owned(), seed: a.routing_seed, curves })
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

/// `ipw report --sources`: every run's sessions when `runs` is empty.
pub async fn sources(admin: &mut Admin, url: &str, runs: Vec<String>, format: Format) -> anyhow::Result<()> {
    let t = analyze(admin, url, Kind::Sources(SourcesQuery { run_ids: runs })).await?;
    print!("{}", render::render_analysis(&t, format));
    Ok(())
}

/// `ipw capacity`.
pub async fn capacity(admin: &mut Admin, url: &str, format: Format) -> anyhow::Result<()> {
    let t = analyze(admin, url, Kind::Capacity(CapacityQuery {})).await?;
    print!("{}", render::render_analysis(&t, format));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Plot {
        #[command(flatten)]
        research: PlotResearchArgs,
    }

    #[test]
    fn plot_flags_read_objectives_and_refuse_a_fallback_without_candidates() {
        let p = Plot::try_parse_from(["plot", "--routing-runs", "A,B", "--routing-fallback", "F"]).unwrap().research;
        assert_eq!((p.routing_runs, p.routing_fallback.as_deref()), (vec!["A".into(), "B".into()], Some("F")));
        assert_eq!((p.routing_objective, p.routing_seed, p.weights), (vec![Objective::Energy], 0, None));
        let p = Plot::try_parse_from(["plot", "--routing-objective", "energy,cost", "--weights", "tasks"]).unwrap();
        assert_eq!(p.research.routing_objective, [Objective::Energy, Objective::Cost]);
        let e = Plot::try_parse_from(["plot", "--routing-fallback", "F"]).unwrap_err().to_string();
        assert!(e.contains("--routing-runs"), "{e}");
        let e = Plot::try_parse_from(["plot", "--routing-objective", "speed"]).unwrap_err().to_string();
        assert!(e.contains("'speed'") && e.contains("energy") && e.contains("cost"), "{e}");
    }
}
