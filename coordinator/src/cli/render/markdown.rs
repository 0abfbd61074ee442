//! Markdown: a table of the main columns, for papers and notes.

use super::{opt, readable};
use crate::domain::analysis::Table;
use crate::domain::report::SummaryRow;
use std::fmt::Write as _;

/// The main columns of every row.
pub fn report(rows: &[SummaryRow]) -> String {
    let mut s = String::from(
        "| model | hardware class | n | accuracy (95% CI) | J/query | mean W | IPW | IPJ | p50 latency (s) | steady W | steady IPW | stable |\n\
         |---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} ({}–{}) | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.model,
            r.hardware_class,
            r.queries,
            opt(r.accuracy, "", 3),
            opt(r.accuracy_ci_low, "", 3),
            opt(r.accuracy_ci_high, "", 3),
            opt(r.joules_per_query, "", 2),
            opt(r.mean_power_w, "", 2),
            opt(r.ipw, "", 5),
            opt(r.ipj, "", 5),
            opt(r.latency_p50_s, "", 2),
            opt(r.steady_power_w, "", 2),
            opt(r.steady_ipw, "", 5),
            match r.stable {
                Some(true) => "yes".to_owned(),
                Some(false) => format!("no: {}", r.instability.as_deref().unwrap_or("")),
                None => "n/a".to_owned(),
            },
        );
    }
    s
}

/// A research table: every column, NULL as `n/a`.
pub fn analysis(t: &Table) -> String {
    let mut s = format!("| {} |\n|{}\n", t.columns.join(" | "), "---|".repeat(t.columns.len()));
    for r in &t.rows {
        let cells: Vec<String> = t
            .columns
            .iter()
            .map(|c| readable(r.get(c).unwrap_or(&serde_json::Value::Null)).replace('|', "\\|"))
            .collect();
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    s
}
