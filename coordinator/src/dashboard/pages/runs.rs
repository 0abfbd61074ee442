//! `/runs` and `/sweeps`: runs with their progress, live; sweeps with their runs.

use crate::dashboard::auth::Viewer;
use crate::dashboard::events::{self, Update};
use crate::dashboard::layout::page;
use crate::dashboard::{Dashboard, Failure};
use crate::store::run_list::{self, RunFilter};
use crate::store::{self, sweeps};
use axum::extract::State;
use axum::response::IntoResponse;
use ipw_proto::v1::RunRow;
use maud::{Markup, html};
use std::sync::Arc;

const REGION: &str = "runs-table";
/// Runs listed, newest first.
const LIMIT: i64 = 200;

fn filter() -> RunFilter {
    RunFilter { limit: LIMIT, ..RunFilter::default() }
}

/// The runs page.
pub async fn show(State(d): State<Arc<Dashboard>>, viewer: Viewer) -> Result<Markup, Failure> {
    let runs = run_list::list(&d.ready()?.pool, &filter()).await?;
    let content = html! {
        h1 { "Runs" }
        p { "The " (LIMIT) " newest runs. Progress counts shards completed; a run's page has its results, errors, steady window and provenance." }
        div #(REGION) data-live="/events/runs" aria-live="polite" { (runs_table(&runs)) }
    };
    Ok(page("Runs", Some("/runs"), Some(&viewer), content))
}

/// The runs table again whenever it changes.
pub async fn events(State(d): State<Arc<Dashboard>>, _viewer: Viewer) -> Result<impl IntoResponse, Failure> {
    let pool = d.ready()?.pool.clone();
    Ok(events::live(move || {
        let pool = pool.clone();
        async move {
            let runs = run_list::list(&pool, &filter()).await?;
            Ok::<_, store::Error>(Update { id: REGION.to_owned(), html: runs_table(&runs), last: false })
        }
    }))
}

/// Runs, one row each, with a progress bar of shards completed.
pub fn runs_table(runs: &[RunRow]) -> Markup {
    html! {
        @if runs.is_empty() { p { "No run yet (ipw run create)." } }
        @else {
            div.table-wrap { table #runs {
                caption { (runs.len()) " runs" }
                thead { tr {
                    th scope="col" { "Run" } th scope="col" { "Model" } th scope="col" { "Workload" }
                    th scope="col" { "Status" } th scope="col" { "Queries" } th scope="col" { "Shards" } th scope="col" { "Progress" }
                } }
                tbody { @for r in runs {
                    tr data-run=(r.run_id) {
                        th scope="row" { a href=(format!("/runs/{}", r.run_id)) { (&r.run_id[..8]) } }
                        td { (r.model) } td { (r.workload) } td { (r.status) } td.num { (r.queries) }
                        td.num { (r.shards_completed) " / " (r.shards) @if r.shards_leased > 0 { " (" (r.shards_leased) " leased)" } }
                        td { (progress(r.shards_completed as u64, r.shards as u64)) }
                    }
                } }
            } }
        }
    }
}

/// A progress bar with its percentage in words beside it.
pub fn progress(done: u64, total: u64) -> Markup {
    let pct = if total == 0 { 0.0 } else { 100.0 * done as f64 / total as f64 };
    html! {
        progress value=(done) max=(total.max(1)) aria-label=(format!("{pct:.0}% done")) { (format!("{pct:.0}%")) }
        " " span.pct { (format!("{pct:.0}%")) }
    }
}

/// The sweeps page.
pub async fn sweeps(State(d): State<Arc<Dashboard>>, viewer: Viewer) -> Result<Markup, Failure> {
    let mut conn = d.ready()?.pool.acquire().await.map_err(store::Error::from)?;
    let sweeps = sweeps::list(&mut conn).await?;
    let content = html! {
        h1 { "Sweeps" }
        @if sweeps.is_empty() { p { "No sweep yet (ipw sweep create)." } }
        @for s in &sweeps {
            section.sweep {
                h2 { (s.name) " " small { "[" (s.status) "]" } }
                @if !s.cron.is_empty() { p { "Schedule " code { (s.cron) } " (" (s.timezone) ")" } }
                @if s.runs.is_empty() { p { "Not fired yet." } }
                @else { div.table-wrap { table {
                    thead { tr { th scope="col" { "Run" } th scope="col" { "Model" } th scope="col" { "Hardware" } th scope="col" { "Results" } th scope="col" { "Progress" } th scope="col" { "ETA" } } }
                    tbody { @for r in &s.runs { tr {
                        th scope="row" { a href=(format!("/runs/{}", r.run_id)) { (&r.run_id[..8.min(r.run_id.len())]) } }
                        td { (r.model) } td { (r.hardware_class) } td.num { (r.results) " / " (r.expected_results) }
                        td { (progress(r.results, r.expected_results)) }
                        td { @match r.eta_seconds { Some(e) => (format!("{e:.0} s")), None => "n/a" } }
                    } } }
                } } }
            }
        }
    };
    Ok(page("Sweeps", Some("/sweeps"), Some(&viewer), content))
}
