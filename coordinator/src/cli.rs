//! The `ipw` CLI's pieces that are not argument parsing: the admin client, the workload
//! uploader and the renderers.

use anyhow::Context;
use ipw_proto::BearerAuth;
use ipw_proto::v1::admin_client::AdminClient;
use ipw_proto::v1::{ImportWorkloadResponse, Report, RunStatus, WorkloadChunk, WorkloadLine};
use std::fmt::Write as _;
use std::path::Path;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// An admin client that sends the admin token on every call.
pub type Admin = AdminClient<InterceptedService<Channel, BearerAuth>>;

/// Connects to the coordinator's admin service.
pub async fn connect(url: &str, admin_token: &str) -> anyhow::Result<Admin> {
    let channel = Channel::from_shared(url.to_owned())
        .with_context(|| format!("{url} is not a valid coordinator URL"))?
        .connect()
        .await
        .with_context(|| {
            format!("cannot reach the coordinator at {url}; is ipw-coordinator running?")
        })?;
    let auth = BearerAuth::new(admin_token)
        .context("the admin token has characters that cannot be sent")?;
    Ok(AdminClient::with_interceptor(channel, auth)
        .max_decoding_message_size(crate::server::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::server::MAX_MESSAGE_BYTES))
}

/// Lines per import chunk; chunks are streamed so a file of any size fits in little memory.
const IMPORT_CHUNK_LINES: usize = 1000;

/// Streams a JSONL workload file to the coordinator, which imports it in one transaction.
/// A line that is not UTF-8 is reported here, by number, before anything is sent.
pub async fn import_workload(
    admin: &mut Admin,
    file: &Path,
    name: &str,
) -> anyhow::Result<ImportWorkloadResponse> {
    use std::io::BufRead;
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<WorkloadChunk>(4);
    let source = file.display().to_string();
    let name = name.to_owned();
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut chunk = WorkloadChunk {
            name,
            source,
            ..Default::default()
        };
        for (i, line) in std::io::BufReader::new(f).split(b'\n').enumerate() {
            let line_no = i as u64 + 1;
            let bytes = line.with_context(|| format!("reading line {line_no}"))?;
            let text = String::from_utf8(bytes).map_err(|_| {
                anyhow::anyhow!("line {line_no}: not valid UTF-8; nothing was imported")
            })?;
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
    let call = admin
        .import_workload(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    // A local read error means the stream ended early: the server rolled back, and ours is the
    // real reason.
    reader.await.expect("workload reader panicked")?;
    Ok(call
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner())
}

fn opt(v: Option<f64>, unit: &str, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}{unit}"))
        .unwrap_or_else(|| "n/a".into())
}

/// The run report as a terminal table: one block per hardware class.
pub fn render_report(report: &Report) -> String {
    let mut s = String::new();
    if let Some(run) = &report.run {
        let _ = writeln!(
            s,
            "run {}  model {}  workload {}  ({} queries, {} shards)",
            run.run_id, run.model, run.workload, run.queries, run.shards
        );
    }
    if report.rows.is_empty() {
        s.push_str("no results yet\n");
    }
    for r in &report.rows {
        let mut rows: Vec<(&str, String)> = vec![
            ("hardware class", r.hardware_class.clone()),
            ("queries", r.queries.to_string()),
            ("errors", r.errors.to_string()),
            (
                "accuracy",
                opt(r.accuracy.map(|a| a * 100.0), "%", 1) + &format!(" ({} scored)", r.scored),
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
            (
                "output tokens/s (per query)",
                opt(r.output_tokens_per_s, "", 1),
            ),
            ("output tokens (total)", r.tokens_out.to_string()),
            (
                "energy per query (raw / dynamic)",
                format!(
                    "{} / {}",
                    opt(r.energy_per_query_j, " J", 2),
                    opt(r.dynamic_energy_per_query_j, " J", 2)
                ),
            ),
            (
                "mean power (raw / dynamic)",
                format!(
                    "{} / {}",
                    opt(r.mean_power_w, " W", 2),
                    opt(r.mean_dynamic_power_w, " W", 2)
                ),
            ),
            ("IPW (accuracy / W)", opt(r.ipw, "", 5)),
            ("IPJ (accuracy / J)", opt(r.ipj, "", 5)),
            (
                "power source (scope)",
                format!("{} ({})", r.power_source, r.power_scope),
            ),
        ];
        if r.energy_per_query_j.is_none() {
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
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut s = line(headers.to_vec());
    for r in &rows {
        s.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    s
}

/// `ipw run status`: a one-screen summary.
pub fn render_status(st: &RunStatus) -> String {
    let mut s = String::new();
    if let Some(run) = &st.run {
        let _ = writeln!(
            s,
            "run {}  [{}]  model {}  workload {}",
            run.run_id, st.status, run.model, run.workload
        );
    }
    let pct = if st.expected_results > 0 {
        100.0 * st.results as f64 / st.expected_results as f64
    } else {
        0.0
    };
    let _ = writeln!(
        s,
        "results  {}/{} ({pct:.0}%), {} errors",
        st.results, st.expected_results, st.errors
    );
    let _ = writeln!(
        s,
        "shards   {} completed, {} leased, {} pending, {} failed",
        st.shards_completed, st.shards_leased, st.shards_pending, st.shards_failed
    );
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
    use ipw_proto::v1::{ReportRow, RunInfo};

    #[test]
    fn tables_pad_columns_to_their_widest_cell() {
        let t = render_table(
            &["ID", "NAME"],
            [
                vec!["1".into(), "long-name".into()],
                vec!["22".into(), "x".into()],
            ],
        );
        assert_eq!(t, "ID  NAME\n1   long-name\n22  x\n");
    }

    #[test]
    fn unknown_energy_reads_na_with_its_reason() {
        let report = Report {
            run: Some(RunInfo {
                run_id: "r".into(),
                workload: "w".into(),
                model: "m".into(),
                queries: 2,
                shards: 1,
            }),
            rows: vec![ReportRow {
                hardware_class: "cpu:x:2c:24GiB".into(),
                queries: 2,
                accuracy: Some(0.5),
                latency_mean_s: Some(1.234),
                energy_null_reason: "no readable power source".into(),
                power_source: "none".into(),
                ..Default::default()
            }],
        };
        let text = render_report(&report);
        assert!(text.contains("accuracy"));
        assert!(text.contains("50.0%"));
        assert!(text.contains("1.23 s"));
        assert!(
            text.lines()
                .any(|l| l.contains("energy per query") && l.ends_with("n/a"))
        );
        assert!(
            text.lines().any(
                |l| l.contains("energy n/a because") && l.ends_with("no readable power source")
            )
        );
        let ipw_line = text
            .lines()
            .find(|l| l.trim_start().starts_with("IPW"))
            .unwrap();
        assert!(ipw_line.ends_with("n/a"), "{ipw_line}");
    }
}
