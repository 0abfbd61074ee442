//! CSV: a header of every column, then one line per row. NULL is an empty cell.

use crate::domain::analysis::Table;
use crate::domain::report::SummaryRow;

/// Every column of every row.
pub fn report(rows: &[SummaryRow]) -> String {
    let mut s = SummaryRow::COLUMNS.join(",") + "\n";
    for r in rows {
        let cells: Vec<String> = r.cells().into_iter().map(|(_, v)| cell(&v)).collect();
        s.push_str(&(cells.join(",") + "\n"));
    }
    s
}

/// A research table: every column, in the SQL's order. Arrays are JSON text.
pub fn analysis(t: &Table) -> String {
    let mut s = t.columns.join(",") + "\n";
    for r in &t.rows {
        let cells: Vec<String> = t
            .columns
            .iter()
            .map(|c| match r.get(c) {
                Some(v @ serde_json::Value::Array(_)) => cell(&serde_json::Value::String(v.to_string())),
                Some(v) => cell(v),
                None => String::new(),
            })
            .collect();
        s.push_str(&(cells.join(",") + "\n"));
    }
    s
}

/// One cell, quoted when it holds a comma, a quote or a line break.
pub(crate) fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) if s.contains([',', '"', '\n']) => format!("\"{}\"", s.replace('"', "\"\"")),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
