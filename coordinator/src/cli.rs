//! The `ipw` CLI's pieces that are not argument parsing: the admin client, the workload
//! uploader and the renderers.

use anyhow::Context;
use ipw_proto::BearerAuth;
use ipw_proto::tls::ClientTls;
use ipw_proto::v1::admin_client::AdminClient;
use ipw_proto::v1::{ImportWorkloadResponse, Report, ReportRow, RunStatus, SweepInfo, WorkloadChunk, WorkloadLine};
use std::fmt::Write as _;
use std::path::Path;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// An admin client that sends the admin token on every call.
pub type Admin = AdminClient<InterceptedService<Channel, BearerAuth>>;

/// Connects to the coordinator's admin service: over TLS trusting `tls`'s CA for `https://`,
/// in plain text for `http://`.
pub async fn connect(url: &str, tls: Option<&ClientTls>, admin_token: &str) -> anyhow::Result<Admin> {
    let channel = ipw_proto::tls::endpoint(url, tls)
        .map_err(anyhow::Error::msg)?
        .connect()
        .await
        .with_context(|| format!("cannot reach the coordinator at {url}; is ipw-coordinator running?"))?;
    let auth = BearerAuth::new(admin_token).context("the admin token has characters that cannot be sent")?;
    Ok(AdminClient::with_interceptor(channel, auth)
        .max_decoding_message_size(crate::server::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::server::MAX_MESSAGE_BYTES))
}

/// Lines per import chunk; chunks are streamed so a file of any size fits in little memory.
const IMPORT_CHUNK_LINES: usize = 1000;

/// Streams a JSONL workload file to the coordinator, which imports it in one transaction.
/// A line that is not UTF-8 is reported here, by number, before anything is sent.
pub async fn import_workload(admin: &mut Admin, file: &Path, name: &str) -> anyhow::Result<ImportWorkloadResponse> {
    use std::io::BufRead;
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<WorkloadChunk>(4);
    let source = file.display().to_string();
    let name = name.to_owned();
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut chunk = WorkloadChunk { name, source, ..Default::default() };
        for (i, line) in std::io::BufReader::new(f).split(b'\n').enumerate() {
            let line_no = i as u64 + 1;
            let bytes = line.with_context(|| format!("reading line {line_no}"))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("line {line_no}: not valid UTF-8; nothing was imported"))?;
            chunk.lines.push(WorkloadLine { line_no, text });
            if chunk.lines.len() == IMPORT_CHUNK_LINES {
                let full = std::mem::take(&mut chunk);
                if tx.blocking_send(full).is_err() {
                    return Ok(()); // the server gave up; its error is the one to show
                }
            }
        }
        // Only a file read to its end is marked last; any error above leaves the stream
        // unterminated, so the server rolls back.
        chunk.last = true;
        let _ = tx.blocking_send(chunk);
        Ok(())
    });
    let call = admin.import_workload(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
    // A local read error means the stream ended early: the server rolled back, and ours is the
    // real reason.
    reader.await.expect("workload reader panicked")?;
    Ok(call.map_err(|s| anyhow::anyhow!("{}", s.message()))?.into_inner())
}

fn opt(v: Option<f64>, unit: &str, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}{unit}")).unwrap_or_else(|| "n/a".into())
}

/// How `ipw report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One block per row, for a terminal.
    Table,
    /// Comma-separated, one line per row, every column.
    Csv,
    /// A JSON array of objects, every column.
    Json,
    /// A Markdown table of the main columns, for papers and notes.
    Markdown,
}

/// Every column of a report row, named as in `ipw_summary`, with JSON values (null = unknown).
pub fn columns(r: &ReportRow) -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::Value;
    let num = |v: Option<f64>| v.map(Value::from).unwrap_or(Value::Null);
    let text = |s: &str| if s.is_empty() { Value::Null } else { Value::from(s) };
    vec![
        ("run_id", text(&r.run_id)),
        ("model", text(&r.model)),
        ("workload", text(&r.workload)),
        ("hardware_class", text(&r.hardware_class)),
        ("queries", r.queries.into()),
        ("errors", r.errors.into()),
        ("scored", r.scored.into()),
        ("unscored", r.unscored.into()),
        ("correct", r.correct.into()),
        ("accuracy", num(r.accuracy)),
        ("accuracy_ci_low", num(r.accuracy_ci_low)),
        ("accuracy_ci_high", num(r.accuracy_ci_high)),
        ("latency_mean_s", num(r.latency_mean_s)),
        ("latency_p50_s", num(r.latency_p50_s)),
        ("latency_p95_s", num(r.latency_p95_s)),
        ("ttft_mean_s", num(r.ttft_mean_s)),
        ("ttft_p50_s", num(r.ttft_p50_s)),
        ("ttft_p95_s", num(r.ttft_p95_s)),
        ("output_tokens_per_s", num(r.output_tokens_per_s)),
        ("tokens_out", r.tokens_out.into()),
        ("joules_per_query", num(r.joules_per_query)),
        ("dynamic_joules_per_query", num(r.dynamic_joules_per_query)),
        ("mean_power_w", num(r.mean_power_w)),
        ("mean_dynamic_power_w", num(r.mean_dynamic_power_w)),
        ("tokens_per_joule", num(r.tokens_per_joule)),
        ("ipw", num(r.ipw)),
        ("ipj", num(r.ipj)),
        ("power_source", text(&r.power_source)),
        ("power_scope", text(&r.power_scope)),
        ("energy_null_reason", text(&r.energy_null_reason)),
        ("scoring_id", text(&r.scoring_id)),
    ]
}

/// The report in the chosen format.
pub fn render_report(report: &Report, format: Format) -> String {
    match format {
        Format::Table => render_table_blocks(report),
        Format::Json => {
            let rows: Vec<serde_json::Map<String, serde_json::Value>> =
                report.rows.iter().map(|r| columns(r).into_iter().map(|(k, v)| (k.to_owned(), v)).collect()).collect();
            serde_json::to_string_pretty(&rows).expect("JSON values serialize") + "\n"
        }
        Format::Csv => {
            let header: Vec<&str> =
                report.rows.first().map(columns).unwrap_or_default().iter().map(|(k, _)| *k).collect();
            let header = if header.is_empty() {
                columns(&ReportRow::default()).iter().map(|(k, _)| *k).collect()
            } else {
                header
            };
            let mut s = header.join(",") + "\n";
            for r in &report.rows {
                let cells: Vec<String> = columns(r).into_iter().map(|(_, v)| csv_cell(&v)).collect();
                s.push_str(&(cells.join(",") + "\n"));
            }
            s
        }
        Format::Markdown => {
            let mut s = String::from(
                "| model | hardware class | n | accuracy (95% CI) | J/query | mean W | IPW | IPJ | p50 latency (s) |\n\
                 |---|---|---:|---|---:|---:|---:|---:|---:|\n",
            );
            for r in &report.rows {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} ({}–{}) | {} | {} | {} | {} | {} |",
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
                );
            }
            s
        }
    }
}

fn csv_cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) if s.contains([',', '"', '\n']) => format!("\"{}\"", s.replace('"', "\"\"")),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The terminal form: one block per (run, hardware class).
fn render_table_blocks(report: &Report) -> String {
    let mut s = String::new();
    if report.rows.is_empty() {
        s.push_str("no results yet\n");
    }
    for r in &report.rows {
        let mut rows: Vec<(&str, String)> = vec![
            ("run", r.run_id.clone()),
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
            (
                "power source (scope)",
                if r.power_scope.is_empty() {
                    r.power_source.clone()
                } else {
                    format!("{} ({})", r.power_source, r.power_scope)
                },
            ),
            ("scoring", r.scoring_id.clone()),
        ];
        if r.joules_per_query.is_none() {
            rows.push(("energy n/a because", r.energy_null_reason.clone()));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        s.push('\n');
        for (k, v) in rows {
            let _ = writeln!(s, "  {k:<width$}  {v}");
        }
    }
    s
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
            r.status.clone(),
            format!("{}/{} ({pct:.0}%)", r.results, r.expected_results),
            eta,
        ]
    });
    out.push_str(&render_table(&["RUN", "MODEL", "HARDWARE CLASS", "STATUS", "RESULTS", "ETA"], rows));
    out
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
    for a in &st.agents {
        let _ = writeln!(
            s,
            "  agent {} ({}): {} shards completed, {} results",
            a.agent_name, a.agent_id, a.shards_completed, a.results
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_to_their_widest_cell() {
        let t = render_table(&["ID", "NAME"], [vec!["1".into(), "long-name".into()], vec!["22".into(), "x".into()]]);
        assert_eq!(t, "ID  NAME\n1   long-name\n22  x\n");
    }

    #[test]
    fn unknown_energy_reads_na_with_its_reason() {
        let report = Report {
            rows: vec![ReportRow {
                hardware_class: "cpu:x:2c:24GiB".into(),
                queries: 2,
                accuracy: Some(0.5),
                latency_mean_s: Some(1.234),
                energy_null_reason: "no readable power source".into(),
                power_source: "none".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render_report(&report, Format::Table);
        assert!(text.contains("accuracy"));
        assert!(text.contains("50.0%"));
        assert!(text.contains("1.23 s"));
        assert!(text.lines().any(|l| l.contains("energy per query") && l.ends_with("n/a")));
        assert!(text.lines().any(|l| l.contains("energy n/a because") && l.ends_with("no readable power source")));
        let ipw_line = text.lines().find(|l| l.trim_start().starts_with("IPW")).unwrap();
        assert!(ipw_line.ends_with("n/a"), "{ipw_line}");
    }

    #[test]
    fn csv_json_and_markdown_carry_every_figure() {
        let report = Report {
            rows: vec![ReportRow {
                run_id: "r1".into(),
                model: "m, v2".into(),
                hardware_class: "gpu:nvidia:H100:80GiB:x1".into(),
                queries: 4,
                correct: 2,
                scored: 4,
                accuracy: Some(0.5),
                ipw: Some(0.0025),
                mean_power_w: Some(200.0),
                ..Default::default()
            }],
            ..Default::default()
        };
        let csv = render_report(&report, Format::Csv);
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(header.len(), columns(&ReportRow::default()).len());
        let row = lines.next().unwrap();
        assert!(row.starts_with("r1,\"m, v2\",,gpu:nvidia:H100:80GiB:x1,4,"), "{row}");
        let json: serde_json::Value = serde_json::from_str(&render_report(&report, Format::Json)).unwrap();
        assert_eq!(json[0]["ipw"], 0.0025);
        assert_eq!(json[0]["joules_per_query"], serde_json::Value::Null);
        let md = render_report(&report, Format::Markdown);
        assert!(
            md.contains("| m, v2 | gpu:nvidia:H100:80GiB:x1 | 4 | 0.500 (n/a–n/a) | n/a | 200.00 | 0.00250 |"),
            "{md}"
        );
    }
}
