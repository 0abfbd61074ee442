//! `/leaderboard`: the `leaderboard` view over the completed runs the filters select, sorted by
//! any column on the server (so it works without script), and `/leaderboard.csv`: exactly the
//! view's rows for the same filters, with the view's columns.

use crate::cli::render::csv;
use crate::dashboard::auth::Viewer;
use crate::dashboard::layout::page;
use crate::dashboard::{Dashboard, Failure};
use crate::domain::analysis::Table;
use crate::store::research::{self, LeaderboardFilter};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{Uri, header};
use maud::{Markup, html};
use serde_json::Value;
use std::sync::Arc;

/// The columns shown, in order: (column of the view, heading). The CSV has every column.
const SHOWN: [(&str, &str); 15] = [
    ("model", "Model"),
    ("hardware_class", "Hardware class"),
    ("workload", "Workload"),
    ("engine_remote", "Remote"),
    ("queries", "Queries"),
    ("accuracy", "Accuracy"),
    ("ipw", "IPW"),
    ("ipj", "IPJ"),
    ("joules_per_query", "J/query"),
    ("tokens_per_joule", "Tokens/J"),
    ("cost_per_query", "Cost/query"),
    ("cost_per_correct", "Cost/correct"),
    ("ttft_p50_s", "TTFT p50 (s)"),
    ("latency_p50_s", "Latency p50 (s)"),
    ("latency_p95_s", "Latency p95 (s)"),
];

/// The page's query string: the filters, and the sort.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Params {
    /// Which runs.
    pub filter: LeaderboardFilter,
    /// The column sorted on (one of [`SHOWN`]).
    pub sort: Option<String>,
    /// Ascending rather than descending.
    pub ascending: bool,
    /// What could not be read, said on the page rather than ignored.
    pub problems: Vec<String>,
}

impl Params {
    /// Reads `workload`, `from`, `to` (YYYY-MM-DD), `label` (key=value), `sort` and `dir`.
    pub fn parse(query: Option<&str>) -> Self {
        let mut p = Params::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let v = v.trim().to_owned();
            if v.is_empty() {
                continue;
            }
            match k.as_ref() {
                "workload" => p.filter.workload = Some(v),
                "from" | "to" => match chrono::NaiveDate::parse_from_str(&v, "%Y-%m-%d") {
                    Ok(d) if k == "from" => p.filter.from = Some(d),
                    Ok(d) => p.filter.to = Some(d),
                    Err(_) => p.problems.push(format!("{k} {v:?} is not a date (YYYY-MM-DD): not applied")),
                },
                "label" => match v.split_once('=') {
                    Some((key, value)) if !key.is_empty() => p.filter.label = Some((key.to_owned(), value.to_owned())),
                    _ => p.problems.push(format!("label {v:?} is not key=value: not applied")),
                },
                "sort" if SHOWN.iter().any(|(c, _)| *c == v) => p.sort = Some(v),
                "sort" => p.problems.push(format!("cannot sort by {v:?}")),
                "dir" => p.ascending = v == "asc",
                _ => {}
            }
        }
        p
    }

    /// The query string of these filters (no sort), for links.
    fn filter_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        let f = &self.filter;
        if let Some(w) = &f.workload {
            q.append_pair("workload", w);
        }
        if let Some(d) = f.from {
            q.append_pair("from", &d.to_string());
        }
        if let Some(d) = f.to {
            q.append_pair("to", &d.to_string());
        }
        if let Some((k, v)) = &f.label {
            q.append_pair("label", &format!("{k}={v}"));
        }
        q.finish()
    }

    /// The link that sorts by `column`: descending first, then flipping.
    fn sort_link(&self, column: &str) -> String {
        let flip = self.sort.as_deref() == Some(column) && !self.ascending;
        let base = self.filter_query();
        let sep = if base.is_empty() { "" } else { "&" };
        format!("/leaderboard?{base}{sep}sort={column}&dir={}", if flip { "asc" } else { "desc" })
    }
}

/// Sorts the rows by `column`, NULLs last either way.
pub fn sort_rows(table: &mut Table, column: &str, ascending: bool) {
    let key = |v: Option<&Value>| -> (bool, f64, String) {
        match v {
            None | Some(Value::Null) => (true, 0.0, String::new()),
            Some(Value::Number(n)) => (false, n.as_f64().unwrap_or(0.0), String::new()),
            Some(other) => (false, 0.0, other.as_str().map(str::to_owned).unwrap_or_else(|| other.to_string())),
        }
    };
    table.rows.sort_by(|a, b| {
        let (ka, kb) = (key(a.get(column)), key(b.get(column)));
        let order = ka.1.total_cmp(&kb.1).then_with(|| ka.2.cmp(&kb.2));
        ka.0.cmp(&kb.0).then(if ascending { order } else { order.reverse() })
    });
}

/// The leaderboard page.
pub async fn show(State(d): State<Arc<Dashboard>>, viewer: Viewer, uri: Uri) -> Result<Markup, Failure> {
    let params = Params::parse(uri.query());
    let mut table = research::leaderboard_filtered(&d.ready()?.pool, &params.filter).await?;
    if let Some(column) = &params.sort {
        sort_rows(&mut table, column, params.ascending);
    }
    Ok(page("Leaderboard", Some("/leaderboard"), Some(&viewer), content(&table, &params)))
}

/// The view's rows for the filters, as CSV with the view's columns.
pub async fn csv(State(d): State<Arc<Dashboard>>, _viewer: Viewer, uri: Uri) -> Result<Response, Failure> {
    let params = Params::parse(uri.query());
    let table = research::leaderboard_filtered(&d.ready()?.pool, &params.filter).await?;
    let headers = [
        (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
        (header::CONTENT_DISPOSITION, "attachment; filename=\"leaderboard.csv\""),
    ];
    Ok((headers, csv::analysis(&table)).into_response())
}

fn content(table: &Table, params: &Params) -> Markup {
    let f = &params.filter;
    let csv_href = format!("/leaderboard.csv?{}", params.filter_query());
    html! {
        h1 { "Leaderboard" }
        p { "One row per model × hardware class × workload over the completed runs selected; "
            "accuracy with its 95% Wilson interval, IPW = accuracy / mean power (W), IPJ = accuracy / mean energy (J). "
            "n/a: never measured or priced (see the CSV's reason columns)." }
        form.filters method="get" action="/leaderboard" {
            label { "Workload " input name="workload" value=[f.workload.as_deref()]; }
            label { "From " input type="date" name="from" value=[f.from.map(|d| d.to_string())]; }
            label { "To " input type="date" name="to" value=[f.to.map(|d| d.to_string())]; }
            label { "Agent label " input name="label" placeholder="key=value" value=[f.label.as_ref().map(|(k, v)| format!("{k}={v}"))]; }
            button type="submit" { "Filter" }
            a.button href=(csv_href) download { "Export CSV" }
        }
        @for problem in &params.problems { p.problem role="alert" { (problem) } }
        @if table.rows.is_empty() {
            p { "No completed run matches." }
        } @else {
            div.table-wrap {
                table #leaderboard {
                    caption { (table.rows.len()) " rows" @if let Some(s) = &params.sort { ", sorted by " (s) (if params.ascending { " ascending" } else { " descending" }) } }
                    thead { tr { @for (column, heading) in SHOWN {
                        th scope="col" aria-sort=[sort_state(params, column)] data-column=(column) {
                            a href=(params.sort_link(column)) { (heading) }
                        }
                    } } }
                    tbody { @for row in &table.rows { tr { @for (column, _) in SHOWN { td data-column=(column) { (cell(row, column)) } } } } }
                }
            }
        }
    }
}

fn sort_state(params: &Params, column: &str) -> Option<&'static str> {
    (params.sort.as_deref() == Some(column)).then_some(if params.ascending { "ascending" } else { "descending" })
}

/// A cell for reading; accuracy carries its interval.
fn cell(row: &serde_json::Map<String, Value>, column: &str) -> String {
    let v = row.get(column).unwrap_or(&Value::Null);
    if column == "accuracy" && !v.is_null() {
        let n = |c: &str| row.get(c).and_then(Value::as_f64);
        return match (v.as_f64(), n("accuracy_ci_low"), n("accuracy_ci_high")) {
            (Some(a), Some(lo), Some(hi)) => format!("{a:.3} ({lo:.3}–{hi:.3})"),
            _ => crate::cli::render::readable(v),
        };
    }
    match v {
        Value::Bool(b) => (if *b { "yes" } else { "no" }).to_owned(),
        _ => crate::cli::render::readable(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_and_sort_read_from_the_query_and_bad_ones_are_said() {
        let p = Params::parse(Some("workload=mmlu-pro&from=2026-01-02&to=nope&label=lab%3Da&sort=ipw&dir=asc"));
        assert_eq!(p.filter.workload.as_deref(), Some("mmlu-pro"));
        assert_eq!(p.filter.from, chrono::NaiveDate::from_ymd_opt(2026, 1, 2));
        assert_eq!(p.filter.label, Some(("lab".to_owned(), "a".to_owned())));
        assert_eq!((p.sort.as_deref(), p.ascending), (Some("ipw"), true));
        assert_eq!(p.problems, vec!["to \"nope\" is not a date (YYYY-MM-DD): not applied"]);
        assert!(Params::parse(Some("sort=drop table")).problems[0].starts_with("cannot sort by"));
    }

    #[test]
    fn rows_sort_by_a_column_with_nulls_last() {
        let mut t = Table {
            columns: vec!["model".into(), "ipw".into()],
            rows: [
                json!({"model": "a", "ipw": 0.2}),
                json!({"model": "b", "ipw": null}),
                json!({"model": "c", "ipw": 0.5}),
            ]
            .into_iter()
            .map(|v| v.as_object().unwrap().clone())
            .collect(),
        };
        sort_rows(&mut t, "ipw", false);
        let order: Vec<&str> = t.rows.iter().map(|r| r["model"].as_str().unwrap()).collect();
        assert_eq!(order, ["c", "a", "b"]);
        sort_rows(&mut t, "ipw", true);
        let order: Vec<&str> = t.rows.iter().map(|r| r["model"].as_str().unwrap()).collect();
        assert_eq!(order, ["a", "c", "b"]);
    }
}
