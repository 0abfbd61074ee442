//! `/runs/{id}`: one run. Its progress (live until it ends), shards, errors, duplicates, steady
//! window and provenance; its figures with a table behind each; the per-query table, paged on
//! the server; and its results as CSV.

use super::runs::progress;
use crate::cli::export::csv;
use crate::cli::render::svg;
use crate::dashboard::auth::Viewer;
use crate::dashboard::events::{self, Update};
use crate::dashboard::layout::{page, table};
use crate::dashboard::{Dashboard, Failure};
use crate::domain::analysis::Table;
use crate::store::reports::{self, QueryRow};
use crate::store::{self, research, runs, sessions};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::{StatusCode, Uri, header};
use ipw_proto::v1::RunStatus;
use maud::{Markup, html};
use std::sync::Arc;
use uuid::Uuid;

/// Results per page of the per-query table.
const PAGE: i64 = 50;
/// The figures: (file, what it shows, for its text alternative): `svg::FIGURES`, then power.
const FIGURES: [(&str, &str); 5] = [
    ("ipw_by_model_hardware.svg", "IPW per model and hardware class"),
    ("accuracy_vs_energy.svg", "Accuracy against energy per query, with the Pareto frontier"),
    ("energy_vs_output_tokens.svg", "Energy per query against output tokens"),
    ("ipw_over_time.svg", "IPW over time"),
    ("power_over_time.svg", "Power over time per agent, with the query and steady windows shaded"),
];

fn no_such_run(id: &str) -> Response {
    crate::dashboard::layout::message(StatusCode::NOT_FOUND, "No such run", &format!("{id:?} is not a run id."))
}

/// The run page.
pub async fn show(
    State(d): State<Arc<Dashboard>>,
    viewer: Viewer,
    Path(raw): Path<String>,
    uri: Uri,
) -> Result<Response, Failure> {
    let Ok(id) = Uuid::parse_str(&raw) else { return Ok(no_such_run(&raw)) };
    let pool = &d.ready()?.pool;
    let status = match runs::status(pool, id).await {
        Ok(s) => s,
        Err(store::Error::NotFound(m)) => {
            return Ok(crate::dashboard::layout::message(StatusCode::NOT_FOUND, "No such run", &m));
        }
        Err(e) => return Err(e.into()),
    };
    let after = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "after")
        .and_then(|(_, v)| v.parse::<i64>().ok())
        .unwrap_or(0);
    let queries = reports::query_page(pool, id, after, PAGE).await?;
    let provenance = research::provenance(pool, id).await?;
    let sources = research::sources(pool, &[id]).await?;
    let report = reports::report(pool, &[id], None, false).await?;
    let content = html! {
        h1 { "Run " (id) }
        div #run-status data-live=(format!("/events/runs/{id}")) aria-live="polite" { (status_block(&status)) }
        p { a.button href=(format!("/runs/{id}/export.csv")) download { "Export results (CSV)" } }
        h2 { "Figures" }
        div.figures { @for (file, about) in FIGURES {
            figure {
                img src=(format!("/runs/{id}/figures/{file}")) alt=(about) loading="lazy" width="960" height="600" data-refresh;
                figcaption { (about) }
            }
        } }
        details { summary { "The figures' data as a table" } (summary_table(&report)) }
        h2 { "Power sources" }
        p { "Each source over the session's steady window, its share of the IPW scope's, the node's and the wall's energy, and whether gpu ≤ node ≤ wall held within their stated errors." }
        (table_or_none(&sources))
        h2 { "Provenance" }
        (table_or_none(&provenance))
        h2 #queries { "Queries" }
        (query_table(&queries))
        @if queries.len() as i64 == PAGE {
            p { a href=(format!("/runs/{id}?after={}#queries", queries.last().map(|q| q.result_id).unwrap_or(0))) { "Next " (PAGE) " →" } }
        }
        @if after > 0 { p { a href=(format!("/runs/{id}#queries")) { "← First page" } } }
    };
    Ok(page(&format!("Run {}", &id.to_string()[..8]), Some("/runs"), Some(&viewer), content).into_response())
}

/// The status block again whenever it changes, until the run ends.
pub async fn events(
    State(d): State<Arc<Dashboard>>,
    _viewer: Viewer,
    Path(raw): Path<String>,
) -> Result<Response, Failure> {
    let Ok(id) = Uuid::parse_str(&raw) else { return Ok(no_such_run(&raw)) };
    let pool = d.ready()?.pool.clone();
    Ok(events::live(move || {
        let pool = pool.clone();
        async move {
            let s = runs::status(&pool, id).await?;
            let last = matches!(s.status.as_str(), "completed" | "failed" | "cancelled");
            Ok::<_, store::Error>(Update { id: "run-status".to_owned(), html: status_block(&s), last })
        }
    })
    .into_response())
}

/// Progress, ETA, shards, errors, duplicates and the steady window.
pub fn status_block(s: &RunStatus) -> Markup {
    let run = s.run.as_ref();
    let elapsed = (chrono::Utc::now().timestamp_micros() - s.created_unix_us) as f64 / 1e6;
    let eta = (s.results > 0 && s.results < s.expected_results && s.status == "running")
        .then(|| elapsed / s.results as f64 * (s.expected_results - s.results) as f64);
    html! {
        dl.status {
            dt { "Model / workload" } dd { (run.map(|r| r.model.as_str()).unwrap_or("")) " / " (run.map(|r| r.workload.as_str()).unwrap_or("")) }
            dt { "Status" } dd.run-state { (s.status) }
            dt { "Results" } dd { (s.results) " of " (s.expected_results) " " (progress(s.results, s.expected_results)) }
            dt { "ETA" } dd { @match eta { Some(e) => (format!("{:.0} s at the pace since the run was created", e)), None => "n/a" } }
            dt { "Shards" } dd { (s.shards_completed) " completed, " (s.shards_leased) " leased, " (s.shards_pending) " pending, " (s.shards_failed) " failed" }
            dt { "Errors" } dd { (s.errors) }
            dt { "Duplicate attempts" } dd { (s.duplicate_attempts) }
            dt { "Steady window" } dd { @match &s.steady {
                Some(w) => {
                    (format!("{:.1} s over {} sessions", w.steady_s, w.sessions))
                    @if w.instability.is_empty() { " — stable" } @else { " — unstable: " (w.instability) }
                }
                None => "none yet",
            } }
            @if !s.agents.is_empty() { dt { "Agents" } dd { @for a in &s.agents { (a.agent_name) ": " (a.results) " results" br; } } }
        }
        @if !s.failures.is_empty() { ul.failures { @for f in &s.failures { li { (f) } } } }
    }
}

fn summary_table(report: &crate::domain::report::Report) -> Markup {
    html! {
        table { thead { tr { th scope="col" { "Model" } th scope="col" { "Hardware class" } th scope="col" { "Accuracy" } th scope="col" { "J/query" } th scope="col" { "Mean W" } th scope="col" { "IPW" } } }
            tbody { @for r in &report.rows { tr {
                td { (r.model) } td { (r.hardware_class) }
                td { (crate::cli::render::opt(r.accuracy, "", 3)) } td { (crate::cli::render::opt(r.joules_per_query, "", 2)) }
                td { (crate::cli::render::opt(r.mean_power_w, "", 2)) } td { (crate::cli::render::opt(r.ipw, "", 5)) }
            } } }
        }
    }
}

/// A table of the run's, or a line saying there is nothing yet.
fn table_or_none(t: &Table) -> Markup {
    html! { @if t.rows.is_empty() { p { "None recorded yet." } } @else { (table(t)) } }
}

fn query_table(rows: &[QueryRow]) -> Markup {
    html! {
        @if rows.is_empty() { p { "No results on this page." } }
        @else { div.table-wrap { table #query-table {
            thead { tr {
                th scope="col" { "Query" } th scope="col" { "Category" } th scope="col" { "Correct" } th scope="col" { "Latency (s)" }
                th scope="col" { "TTFT (s)" } th scope="col" { "Tokens in / out" } th scope="col" { "Energy (J)" } th scope="col" { "Response" }
            } }
            tbody { @for q in rows { tr {
                th scope="row" { (q.external_id) }
                td { (q.category.as_deref().unwrap_or("")) }
                td { @match (q.correct, &q.error) { (_, Some(e)) => { "error: " (e) }, (Some(true), _) => "yes", (Some(false), _) => "no", (None, _) => "unscored" } }
                td.num { (format!("{:.2}", q.latency_s)) }
                td.num { (crate::cli::render::opt(q.ttft_s, "", 3)) }
                td.num { (q.tokens_in) " / " (q.tokens_out) }
                td.num { @match q.energy_j { Some(e) => (format!("{e:.2}")), None => { "n/a: " (q.energy_null_reason.as_deref().unwrap_or("")) } } }
                td { details { summary { (q.response.chars().take(60).collect::<String>()) } pre { (q.response) } } }
            } } }
        } } }
    }
}

/// One of the run's figures, drawn now.
pub async fn figure(
    State(d): State<Arc<Dashboard>>,
    _viewer: Viewer,
    Path((raw, file)): Path<(String, String)>,
) -> Result<Response, Failure> {
    let Ok(id) = Uuid::parse_str(&raw) else { return Ok(no_such_run(&raw)) };
    if !FIGURES.iter().any(|(f, _)| *f == file) {
        return Ok(crate::dashboard::layout::message(StatusCode::NOT_FOUND, "No such figure", &file));
    }
    let pool = &d.ready()?.pool;
    let dir = tempfile::tempdir().map_err(|e| Failure::Draw(e.to_string()))?;
    if file == "power_over_time.svg" {
        let sessions = sessions::power_over_time(pool, id).await?;
        svg::power::power_over_time(&sessions, &dir.path().join(&file)).map_err(|e| Failure::Draw(e.to_string()))?;
    } else {
        let report = reports::report(pool, &[id], None, true).await?;
        svg::write_one(&report, &file, &dir.path().join(&file)).map_err(Failure::Draw)?;
    }
    let body = std::fs::read(dir.path().join(&file)).map_err(|e| Failure::Draw(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "no-store")], body).into_response())
}

/// Every result of the run as CSV, with the export's columns, streamed.
pub async fn export(
    State(d): State<Arc<Dashboard>>,
    _viewer: Viewer,
    Path(raw): Path<String>,
) -> Result<Response, Failure> {
    let Ok(id) = Uuid::parse_str(&raw) else { return Ok(no_such_run(&raw)) };
    let pool = d.ready()?.pool.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<String>>(4);
    tokio::spawn(async move {
        if let Err(e) = store::exports::rows(&pool, &[id], None, tx).await {
            tracing::warn!(error = %e, run = %id, "the dashboard's export stopped");
        }
    });
    let header_line = csv::header();
    let lines = futures::stream::once(async move { Ok::<_, std::io::Error>(header_line) }).chain(
        tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|batch| Ok(batch.iter().map(|row| csv_line(row)).collect::<String>())),
    );
    let headers = [
        (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
        (header::CONTENT_DISPOSITION, format!("attachment; filename=\"run-{id}.csv\"")),
    ];
    Ok((headers, Body::from_stream(lines)).into_response())
}

fn csv_line(row: &str) -> String {
    csv::line(&serde_json::from_str(row).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_lists_every_report_figure_and_power() {
        let names: Vec<&str> = FIGURES.iter().map(|(f, _)| *f).collect();
        let mut want: Vec<&str> = svg::FIGURES.iter().map(|(f, _)| *f).collect();
        want.push("power_over_time.svg");
        assert_eq!(names, want);
    }
}
