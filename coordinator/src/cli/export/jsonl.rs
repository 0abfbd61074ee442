//! JSON lines: the rows as the coordinator sent them, one object per line.

use super::RowWriter;
use std::io::{BufWriter, Write};

/// A JSON-lines file.
pub struct Jsonl {
    out: BufWriter<std::fs::File>,
}

impl Jsonl {
    /// Writes into `file`.
    pub fn new(file: std::fs::File) -> Self {
        Self { out: BufWriter::with_capacity(1 << 20, file) }
    }
}

impl RowWriter for Jsonl {
    fn write(&mut self, rows: &[String]) -> anyhow::Result<()> {
        for row in rows {
            self.out.write_all(row.as_bytes())?;
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        super::close(self.out)
    }
}
