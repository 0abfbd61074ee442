//! `ipw workload`: importing and listing query workloads.

use super::progress::Progress;
use super::render::table::render_table;
use super::{Admin, refused};
use anyhow::Context;
use clap::Subcommand;
use ipw_proto::v1::{ImportWorkloadResponse, ListWorkloadsRequest, WorkloadChunk, WorkloadLine};
use std::path::{Path, PathBuf};

/// `ipw workload ...`
#[derive(Subcommand, Debug)]
pub enum WorkloadCmd {
    /// Imports a JSONL file (MMLU-Pro, or generic {id, prompt, answer}); all or nothing.
    Import {
        /// The JSONL file.
        file: PathBuf,
        /// Name to refer to the workload by.
        #[arg(long)]
        name: String,
    },
    /// Lists imported workloads.
    List,
}

/// Runs one `ipw workload` command.
pub async fn run(admin: &mut Admin, url: &str, cmd: WorkloadCmd) -> anyhow::Result<()> {
    match cmd {
        WorkloadCmd::Import { file, name } => {
            let w = import_workload(admin, &file, &name).await?;
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

/// Lines per import chunk; chunks are streamed so a file of any size fits in little memory.
const IMPORT_CHUNK_LINES: usize = 1000;

/// Streams a JSONL workload file to the coordinator, which imports it in one transaction.
/// A line that is not UTF-8 is reported here, by number, before anything is sent.
pub async fn import_workload(admin: &mut Admin, file: &Path, name: &str) -> anyhow::Result<ImportWorkloadResponse> {
    use std::io::BufRead;
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut progress = Progress::bytes(&format!("importing {}", file.display()), f.metadata()?.len());
    let (tx, rx) = tokio::sync::mpsc::channel::<WorkloadChunk>(4);
    let source = file.display().to_string();
    let name = name.to_owned();
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut chunk = WorkloadChunk { name, source, ..Default::default() };
        for (i, line) in std::io::BufReader::new(f).split(b'\n').enumerate() {
            let line_no = i as u64 + 1;
            let bytes = line.with_context(|| format!("reading line {line_no}"))?;
            progress.add(bytes.len() as u64 + 1);
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
        progress.finish();
        Ok(())
    });
    let call = admin.import_workload(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
    // A local read error means the stream ended early: the server rolled back, and ours is the
    // real reason.
    reader.await.expect("workload reader panicked")?;
    Ok(call.map_err(|s| anyhow::anyhow!("{}", s.message()))?.into_inner())
}
