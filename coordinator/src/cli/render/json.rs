//! JSON: an array of objects, every column, NULL as null, keys in sorted order.

use crate::domain::analysis::Table;
use crate::domain::report::SummaryRow;

/// Every column of every row, pretty-printed.
pub fn report(rows: &[SummaryRow]) -> String {
    let objects: Vec<serde_json::Map<String, serde_json::Value>> =
        rows.iter().map(|r| r.cells().into_iter().map(|(k, v)| (k.to_owned(), v)).collect()).collect();
    serde_json::to_string_pretty(&objects).expect("JSON values serialize") + "\n"
}

/// A research table: an array of objects, every column.
pub fn analysis(t: &Table) -> String {
    serde_json::to_string_pretty(&t.rows).expect("JSON values serialize") + "\n"
}
