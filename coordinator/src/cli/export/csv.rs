//! CSV: a header of every column, then one line per result; NULL is an empty cell.

use super::{RowWriter, parse};
use crate::cli::render::csv::cell;
use crate::domain::export::COLUMNS;
use std::io::{BufWriter, Write};

/// The header line: every column's name.
pub fn header() -> String {
    COLUMNS.iter().map(|c| c.name).collect::<Vec<_>>().join(",") + "\n"
}

/// One result's line, in the columns' order.
pub fn line(row: &serde_json::Map<String, serde_json::Value>) -> String {
    let cells: Vec<String> =
        COLUMNS.iter().map(|c| cell(row.get(c.name).unwrap_or(&serde_json::Value::Null))).collect();
    cells.join(",") + "\n"
}

/// A CSV file.
pub struct Csv {
    out: BufWriter<std::fs::File>,
}

impl Csv {
    /// Writes the header into `file`.
    pub fn new(file: std::fs::File) -> anyhow::Result<Self> {
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(header().as_bytes())?;
        Ok(Self { out })
    }
}

impl RowWriter for Csv {
    fn write(&mut self, rows: &[String]) -> anyhow::Result<()> {
        for row in rows {
            self.out.write_all(line(&parse(row)?).as_bytes())?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        super::close(self.out)
    }
}
