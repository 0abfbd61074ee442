//! CSV: a header of every column, then one line per result; NULL is an empty cell.

use super::{RowWriter, parse};
use crate::cli::render::csv::cell;
use crate::domain::export::COLUMNS;
use std::io::{BufWriter, Write};

/// A CSV file.
pub struct Csv {
    out: BufWriter<std::fs::File>,
}

impl Csv {
    /// Writes the header into `file`.
    pub fn new(file: std::fs::File) -> anyhow::Result<Self> {
        let mut out = BufWriter::with_capacity(1 << 20, file);
        writeln!(out, "{}", COLUMNS.iter().map(|c| c.name).collect::<Vec<_>>().join(","))?;
        Ok(Self { out })
    }
}

impl RowWriter for Csv {
    fn write(&mut self, rows: &[String]) -> anyhow::Result<()> {
        for row in rows {
            let row = parse(row)?;
            let cells: Vec<String> =
                COLUMNS.iter().map(|c| cell(row.get(c.name).unwrap_or(&serde_json::Value::Null))).collect();
            writeln!(self.out, "{}", cells.join(","))?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        super::close(self.out)
    }
}
