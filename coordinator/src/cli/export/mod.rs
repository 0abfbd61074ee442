//! `ipw export`: every result of some runs, with its score and provenance, into a file for
//! researchers: CSV, JSON lines or Parquet, one file per format here. Rows arrive streamed and
//! are written as they come, so a run of any size exports in bounded memory; the file appears
//! under its name only once it is complete.

pub mod csv;
mod jsonl;
mod parquet;

use super::progress::Progress;
use super::{Admin, refused};
use anyhow::Context;
use ipw_proto::v1::ExportRequest;
use std::path::{Path, PathBuf};

/// The file formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// Comma-separated, a header of every column; NULL is an empty cell.
    Csv,
    /// One JSON object per line; NULL is null.
    Jsonl,
    /// Apache Parquet, typed columns, Snappy-compressed.
    Parquet,
}

/// A file format rows are written in.
trait RowWriter {
    /// Writes rows, each a JSON object keyed by the export's column names.
    fn write(&mut self, rows: &[String]) -> anyhow::Result<()>;
    /// Ends the file.
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
}

/// Exports `runs` into `out`; returns the rows written.
pub async fn export(
    admin: &mut Admin,
    url: &str,
    runs: Vec<String>,
    scoring: Option<String>,
    format: ExportFormat,
    out: &Path,
) -> anyhow::Result<u64> {
    let request = ExportRequest { run_ids: runs, scoring_id: scoring.unwrap_or_default() };
    let mut stream = admin.export_results(request).await.map_err(refused(url))?.into_inner();
    let partial = partial_path(out);
    let file = std::fs::File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut writer: Box<dyn RowWriter> = match format {
        ExportFormat::Csv => Box::new(csv::Csv::new(file)?),
        ExportFormat::Jsonl => Box::new(jsonl::Jsonl::new(file)),
        ExportFormat::Parquet => Box::new(parquet::Parquet::new(file)?),
    };
    let mut progress: Option<Progress> = None;
    let mut written = 0u64;
    let outcome = async {
        while let Some(chunk) = stream.message().await.map_err(refused(url))? {
            let bar = progress
                .get_or_insert_with(|| Progress::rows(&format!("exporting to {}", out.display()), chunk.total_rows));
            writer.write(&chunk.rows_json)?;
            written += chunk.rows_json.len() as u64;
            bar.add(chunk.rows_json.len() as u64);
        }
        writer.finish()
    }
    .await;
    if let Some(bar) = &progress {
        bar.finish();
    }
    if let Err(e) = outcome {
        let _ = std::fs::remove_file(&partial);
        return Err(e.context(format!("nothing was written to {}", out.display())));
    }
    std::fs::rename(&partial, out)
        .with_context(|| format!("cannot move {} to {}", partial.display(), out.display()))?;
    Ok(written)
}

/// Where the file is written until it is complete: beside it, so the rename is atomic.
fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

/// Flushes a buffered file and syncs it to disk, before it is moved under its name.
fn close(mut out: std::io::BufWriter<std::fs::File>) -> anyhow::Result<()> {
    use std::io::Write;
    out.flush()?;
    out.get_ref().sync_all()?;
    Ok(())
}

/// A row's object, or an error naming what came instead.
fn parse(row: &str) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_str(row) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => anyhow::bail!("the coordinator sent a row that is not a JSON object: {row:.200}"),
    }
}
