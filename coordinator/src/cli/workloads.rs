//! `ipw workload`: importing and listing query workloads.

use super::progress::Progress;
use super::render::table::render_table;
use super::{Admin, refused};
use crate::domain::workload::{FieldMap, Unit};
use anyhow::Context;
use clap::Subcommand;
use ipw_proto::v1::{ImportWorkloadResponse, ListWorkloadsRequest, WorkloadChunk, WorkloadLine};
use std::path::{Path, PathBuf};

/// `ipw workload ...`
#[derive(Subcommand, Debug)]
pub enum WorkloadCmd {
    /// Imports a workload file (JSONL or Parquet); all or nothing
    ///
    /// Formats (the first record fixes which; a bad line or row is named and nothing is
    /// imported):
    ///   mmlu-pro  {question_id, question, options, answer, category?}  scored mcq
    ///   generic   {id?, prompt, answer, choices?, category?, scorer?, tolerance?, max_tokens?}
    ///   chat      the generic record with messages: [{role, content}, ...] (system, user,
    ///             assistant; the last the user's) in place of prompt, sent to the engine as
    ///             it is; the last user message is kept as the prompt, for display.
    /// Scoring: mcq with choices (answer a letter), exact otherwise, or the named scorer.
    /// id defaults to the line (row) number; max_tokens (a positive integer) overrides the
    /// run's budget for that query. A Parquet file (recognised by content) is read row by row,
    /// its columns as the fields.
    #[command(verbatim_doc_comment)]
    Import {
        /// The JSONL or Parquet file.
        file: PathBuf,
        /// Name to refer to the workload by.
        #[arg(long)]
        name: String,
        /// Reads targets from fields of other names, e.g. prompt=question,answer=gold. Targets:
        /// prompt, messages, answer, choices, category, id, max_tokens, scorer, tolerance; a
        /// target not named is read from the field of its own name, other fields are ignored.
        #[arg(long, value_name = "TARGET=FIELD,...")]
        map: Option<String>,
    },
    /// Lists imported workloads.
    List,
}

/// Runs one `ipw workload` command.
pub async fn run(admin: &mut Admin, url: &str, cmd: WorkloadCmd) -> anyhow::Result<()> {
    match cmd {
        WorkloadCmd::Import { file, name, map } => {
            let map = FieldMap::parse(map.as_deref().unwrap_or_default()).context("--map")?;
            let w = import_workload_mapped(admin, &file, &name, &map).await?;
            println!("imported {} {} queries as workload \"{}\" ({})", w.queries, w.format, w.name, w.workload_id);
        }
        WorkloadCmd::List => {
            let ws = admin.list_workloads(ListWorkloadsRequest {}).await.map_err(refused(url))?.into_inner().workloads;
            let rows = ws.into_iter().map(|w| vec![w.workload_id, w.name, w.format, w.queries.to_string()]);
            print!("{}", render_table(&["ID", "NAME", "FORMAT", "QUERIES"], rows));
        }
    }
    Ok(())
}

/// Lines (or rows) per import chunk; chunks are streamed so a file of any size fits in little
/// memory.
const IMPORT_CHUNK_LINES: usize = 1000;

/// Streams a workload file to the coordinator, which imports it in one transaction.
pub async fn import_workload(admin: &mut Admin, file: &Path, name: &str) -> anyhow::Result<ImportWorkloadResponse> {
    import_workload_mapped(admin, file, name, &FieldMap::default()).await
}

/// Streams a workload file, JSONL or Parquet, to the coordinator, which reads its records
/// through `map` and imports them in one transaction. What cannot be read here (a line that
/// is not UTF-8, a Parquet row that does not decode) is reported by number before it is sent.
pub async fn import_workload_mapped(
    admin: &mut Admin,
    file: &Path,
    name: &str,
    map: &FieldMap,
) -> anyhow::Result<ImportWorkloadResponse> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let parquet = is_parquet(&f).with_context(|| format!("reading {}", file.display()))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<WorkloadChunk>(4);
    let first = WorkloadChunk {
        name: name.to_owned(),
        source: file.display().to_string(),
        field_map: map.pairs().map(|(t, f)| (t.to_owned(), f.to_owned())).collect(),
        unit: if parquet { Unit::Row } else { Unit::Line }.as_str().to_owned(),
        ..Default::default()
    };
    let chunks = Chunks { chunk: first, tx };
    let what = format!("importing {}", file.display());
    let reader = tokio::task::spawn_blocking(move || match parquet {
        true => send_rows(f, &what, chunks),
        false => send_lines(f, &what, chunks),
    });
    let call = admin.import_workload(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
    // A local read error means the stream ended early: the server rolled back, and ours is the
    // real reason.
    reader.await.expect("workload reader panicked")?;
    Ok(call.map_err(|s| anyhow::anyhow!("{}", s.message()))?.into_inner())
}

/// Whether a file is Parquet: it starts with the format's magic bytes.
fn is_parquet(mut f: &std::fs::File) -> std::io::Result<bool> {
    use std::io::{Read, Seek};
    let mut magic = [0u8; 4];
    let parquet = f.read(&mut magic)? == 4 && &magic == b"PAR1";
    f.rewind()?;
    Ok(parquet)
}

/// The import stream being filled: records go into a chunk, sent when full.
struct Chunks {
    chunk: WorkloadChunk,
    tx: tokio::sync::mpsc::Sender<WorkloadChunk>,
}

impl Chunks {
    /// Adds a record; false once the server has given up (its error is the one to show).
    fn push(&mut self, line_no: u64, text: String) -> bool {
        self.chunk.lines.push(WorkloadLine { line_no, text });
        self.chunk.lines.len() < IMPORT_CHUNK_LINES || self.tx.blocking_send(std::mem::take(&mut self.chunk)).is_ok()
    }

    /// Sends the last chunk. Only a file read to its end is marked last; any error before
    /// leaves the stream unterminated, so the server rolls back.
    fn finish(mut self) {
        self.chunk.last = true;
        let _ = self.tx.blocking_send(self.chunk);
    }
}

/// Sends a JSONL file line by line. A line that is not UTF-8 is named.
fn send_lines(f: std::fs::File, what: &str, mut out: Chunks) -> anyhow::Result<()> {
    use std::io::BufRead;
    let mut progress = Progress::bytes(what, f.metadata()?.len());
    for (i, line) in std::io::BufReader::new(f).split(b'\n').enumerate() {
        let line_no = i as u64 + 1;
        let bytes = line.with_context(|| format!("reading line {line_no}"))?;
        progress.add(bytes.len() as u64 + 1);
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("line {line_no}: not valid UTF-8; nothing was imported"))?;
        if !out.push(line_no, text) {
            return Ok(());
        }
    }
    out.finish();
    progress.finish();
    Ok(())
}

/// Sends a Parquet file row by row, each row as a JSON object of its columns.
fn send_rows(f: std::fs::File, what: &str, mut out: Chunks) -> anyhow::Result<()> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(f).context("not a readable Parquet file; nothing was imported")?;
    let total = reader.metadata().file_metadata().num_rows();
    let mut progress = Progress::rows(what, u64::try_from(total).unwrap_or(0));
    for (i, row) in reader.into_iter().enumerate() {
        let row_no = i as u64 + 1;
        let row = row.with_context(|| format!("row {row_no}: cannot be read; nothing was imported"))?;
        progress.add(1);
        if !out.push(row_no, row.to_json_value().to_string()) {
            return Ok(());
        }
    }
    out.finish();
    progress.finish();
    Ok(())
}
