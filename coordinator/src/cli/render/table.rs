//! Plain text for a terminal: the report as one block per row, and the padded tables and
//! summaries of the other commands.

use super::{opt, readable};
use crate::domain::analysis::Table;
use crate::domain::report::SummaryRow;
use ipw_proto::v1::{RunRow, RunStatus, SweepInfo};
use std::fmt::Write as _;

/// The report for a terminal: one block per (run, hardware class).
pub fn report(rows: &[SummaryRow]) -> String {
    let mut s = String::new();
    if rows.is_empty() {
        s.push_str("no results yet\n");
    }
    for r in rows {
        let mut lines: Vec<(&str, String)> = vec![
            ("run", r.run_id.to_string()),
            ("model / workload", format!("{} / {}", r.model, r.workload)),
            ("hardware class", r.hardware_class.clone()),
            ("queries", format!("{} ({} errors, {} unscored)", r.queries, r.errors, r.unscored)),
            (
                "accuracy (95% CI)",
                format!(
                    "{} ({} to {}), {} of {} scored",
                    opt(r.accuracy.map(|a| a * 100.0), "%", 1),
                    opt(r.accuracy_ci_low.map(|a| a * 100.0), "%", 1),
                    opt(r.accuracy_ci_high.map(|a| a * 100.0), "%", 1),
                    r.correct,
                    r.scored
                ),
            ),
            (
                "latency mean / p50 / p95",
                format!(
                    "{} / {} / {}",
                    opt(r.latency_mean_s, " s", 2),
                    opt(r.latency_p50_s, " s", 2),
                    opt(r.latency_p95_s, " s", 2)
                ),
            ),
            (
                "TTFT mean / p50 / p95",
                format!(
                    "{} / {} / {}",
                    opt(r.ttft_mean_s.map(|v| v * 1e3), " ms", 0),
                    opt(r.ttft_p50_s.map(|v| v * 1e3), " ms", 0),
                    opt(r.ttft_p95_s.map(|v| v * 1e3), " ms", 0)
                ),
            ),
            ("output tokens/s (per query)", opt(r.output_tokens_per_s, "", 1)),
            ("output tokens (total)", r.tokens_out.to_string()),
            (
                "energy per query (raw / dynamic)",
                format!("{} / {}", opt(r.joules_per_query, " J", 2), opt(r.dynamic_joules_per_query, " J", 2)),
            ),
            (
                "mean power (raw / dynamic)",
                format!("{} / {}", opt(r.mean_power_w, " W", 2), opt(r.mean_dynamic_power_w, " W", 2)),
            ),
            ("tokens per joule", opt(r.tokens_per_joule, "", 2)),
            ("IPW (accuracy / W)", opt(r.ipw, "", 5)),
            ("IPJ (accuracy / J)", opt(r.ipj, "", 5)),
            ("power source (scope)", power(r)),
            ("scoring", r.scoring_id.map(|id| id.to_string()).unwrap_or_default()),
        ];
        if r.joules_per_query.is_none() {
            lines.push(("energy n/a because", r.energy_null_reason.clone().unwrap_or_default()));
        }
        lines.extend(operating_point(r));
        let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        s.push('\n');
        for (k, v) in lines {
            let _ = writeln!(s, "  {k:<width$}  {v}");
        }
    }
    s
}

/// The engine's operating point: per-token latencies, the load, the steady-state window and
/// its figures, coverage, goodput and whether the run passed the stability rules.
fn operating_point(r: &SummaryRow) -> Vec<(&'static str, String)> {
    let ms = |v: Option<f64>| opt(v.map(|v| v * 1e3), " ms", 1);
    let load = match (r.load_pattern.as_deref(), r.load_target) {
        (Some("closed"), Some(t)) => format!("closed loop, {t} in flight"),
        (Some(p), Some(t)) => format!("{p} arrivals at {t}/s, {} late starts", r.late_starts.unwrap_or(0)),
        _ => "n/a".into(),
    };
    vec![
        ("ITL p50 / p95, TPOT", format!("{} / {}, {}", ms(r.itl_p50_s), ms(r.itl_p95_s), ms(r.tpot_mean_s))),
        (
            "energy per query (prefill / decode)",
            format!("{} / {}", opt(r.prefill_joules_per_query, " J", 2), opt(r.decode_joules_per_query, " J", 2)),
        ),
        ("load", load),
        (
            "steady window",
            format!(
                "{} ({} paused), mean load {}, {} queries inside",
                opt(r.steady_s, " s", 1),
                opt(r.paused_s, " s", 1),
                opt(r.steady_load_mean, "", 2),
                r.steady_queries
            ),
        ),
        (
            "steady power / J per output token / IPW",
            format!(
                "{} / {} / {}",
                opt(r.steady_power_w, " W", 2),
                opt(r.steady_joules_per_output_token, " J", 4),
                opt(r.steady_ipw, "", 5)
            ),
        ),
        ("steady output tokens/s", opt(r.steady_output_tokens_per_s, "", 1)),
        ("power coverage", opt(r.power_coverage.map(|c| c * 100.0), "%", 1)),
        (
            "goodput (SLO attainment)",
            format!("{} ({})", opt(r.goodput_per_s, "/s", 2), opt(r.slo_attainment.map(|a| a * 100.0), "%", 1)),
        ),
        (
            "repeats (CV reached)",
            match (r.repeats, r.repeat_cv) {
                (Some(n), cv) => format!(
                    "{n} runs, CV {} of {}",
                    opt(cv.map(|c| c * 100.0), "%", 2),
                    r.repeat_cv_metric.as_deref().unwrap_or("")
                ),
                (None, _) => "run once".into(),
            },
        ),
        (
            "stability",
            match (r.stable, &r.instability) {
                (Some(true), _) => "stable".into(),
                (Some(false), why) => format!("UNSTABLE: {}", why.as_deref().unwrap_or("")),
                (None, _) => "n/a (no session recorded)".into(),
            },
        ),
    ]
}

/// A plain table: a header row, then one row per item, columns padded to fit.
pub fn render_table(headers: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.into_iter().collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([headers[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut s = line(headers.to_vec());
    for r in &rows {
        s.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    s
}

/// A research table for a terminal: one block per row, a column per line.
pub fn analysis(t: &Table) -> String {
    if t.rows.is_empty() {
        return "no rows\n".into();
    }
    let width = t.columns.iter().map(|c| c.len()).max().unwrap_or(0);
    let blocks: Vec<String> = t
        .rows
        .iter()
        .map(|r| {
            let lines = t
                .columns
                .iter()
                .map(|c| format!("{c:<width$}  {}\n", readable(r.get(c).unwrap_or(&serde_json::Value::Null))));
            lines.collect()
        })
        .collect();
    blocks.join("\n")
}

/// A time in the protocol's microseconds as RFC 3339, or empty.
pub fn when(unix_us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(unix_us).map(|t| t.to_rfc3339()).unwrap_or_default()
}

/// A sweep: its state, schedule, and each run's progress and ETA.
pub fn render_sweep(s: &SweepInfo) -> String {
    let mut out = String::new();
    let id = if s.sweep_id.is_empty() { "(not fired yet)" } else { &s.sweep_id };
    let _ = writeln!(out, "sweep {} \"{}\" [{}]", id, s.name, s.status);
    if !s.cron.is_empty() {
        let _ = writeln!(out, "schedule {} ({}), next firing {}", s.cron, s.timezone, when(s.next_fire_unix_us));
    }
    let rows = s.runs.iter().map(|r| {
        let pct = if r.expected_results > 0 { 100.0 * r.results as f64 / r.expected_results as f64 } else { 0.0 };
        let eta = match r.eta_seconds {
            Some(secs) if secs <= 0.0 => "done".to_owned(),
            Some(secs) => humantime::format_duration(std::time::Duration::from_secs(secs.round() as u64)).to_string(),
            None => "n/a".to_owned(),
        };
        vec![
            r.run_id.clone(),
            r.model.clone(),
            r.hardware_class.clone(),
            r.concurrency.to_string(),
            r.status.clone(),
            format!("{}/{} ({pct:.0}%)", r.results, r.expected_results),
            eta,
        ]
    });
    out.push_str(&render_table(&["RUN", "MODEL", "HARDWARE CLASS", "CONCURRENCY", "STATUS", "RESULTS", "ETA"], rows));
    out
}

/// `ipw run list`: one line per run, newest first.
pub fn render_runs(runs: &[RunRow]) -> String {
    if runs.is_empty() {
        return "no runs match\n".into();
    }
    let rows = runs.iter().map(|r| {
        vec![
            r.run_id.clone(),
            r.status.clone(),
            r.workload.clone(),
            r.model.clone(),
            if r.hardware_class.is_empty() { "any".into() } else { r.hardware_class.clone() },
            r.concurrency.to_string(),
            r.queries.to_string(),
            format!("{}/{} ({} leased)", r.shards_completed, r.shards, r.shards_leased),
            when(r.created_unix_us),
        ]
    });
    let headers =
        ["RUN", "STATUS", "WORKLOAD", "MODEL", "HARDWARE", "CONCURRENCY", "QUERIES", "SHARDS DONE", "CREATED"];
    render_table(&headers, rows)
}

/// `ipw run status`: a one-screen summary.
pub fn render_status(st: &RunStatus) -> String {
    let mut s = String::new();
    if let Some(run) = &st.run {
        let _ = writeln!(s, "run {}  [{}]  model {}  workload {}", run.run_id, st.status, run.model, run.workload);
    }
    let pct = if st.expected_results > 0 { 100.0 * st.results as f64 / st.expected_results as f64 } else { 0.0 };
    let _ = writeln!(s, "results  {}/{} ({pct:.0}%), {} errors", st.results, st.expected_results, st.errors);
    let _ = writeln!(
        s,
        "shards   {} completed, {} leased, {} pending, {} failed",
        st.shards_completed, st.shards_leased, st.shards_pending, st.shards_failed
    );
    for f in &st.failures {
        let _ = writeln!(s, "  failed {f}");
    }
    if st.duplicate_attempts > 0 {
        let _ = writeln!(
            s,
            "         {} duplicate attempts (queries measured again after a lease moved; the first commit is kept)",
            st.duplicate_attempts
        );
    }
    if let Some(w) = &st.steady {
        let load = w.load_mean.map_or("n/a".into(), |m| format!("{m:.2}"));
        let verdict =
            if w.instability.is_empty() { "stable".to_owned() } else { format!("unstable: {}", w.instability) };
        let _ = writeln!(
            s,
            "steady   {:.1} s ({:.1} s paused), {} load {load} of {}, {verdict}",
            w.steady_s, w.paused_s, w.load_pattern, w.load_target
        );
        if w.late_starts > 0 {
            let _ = writeln!(s, "         {} requests started more than 10 ms late", w.late_starts);
        }
    }
    for a in &st.agents {
        let _ = writeln!(
            s,
            "  agent {} ({}): {} shards completed, {} results",
            a.agent_name, a.agent_id, a.shards_completed, a.results
        );
    }
    s
}

/// "source (scope)", or the source alone when the scope is unknown.
fn power(r: &SummaryRow) -> String {
    let source = r.power_source.clone().unwrap_or_default();
    match r.power_scope.as_deref() {
        None | Some("") => source,
        Some(scope) => format!("{source} ({scope})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_to_their_widest_cell() {
        let t = render_table(&["ID", "NAME"], [vec!["1".into(), "long-name".into()], vec!["22".into(), "x".into()]]);
        assert_eq!(t, "ID  NAME\n1   long-name\n22  x\n");
    }
}
