//! A table from one of the research functions or views, as it crosses to the CLI. Its columns
//! are declared once, by the SQL; nothing here lists them.

use super::Invalid;
use ipw_proto::v1::AnalysisTable;
use serde_json::{Map, Value};

/// Rows keyed by column, and the columns in the SQL's order.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Table {
    /// The columns, in the SQL's order.
    pub columns: Vec<String>,
    /// Each row, keyed by column; SQL NULL is `null`.
    pub rows: Vec<Map<String, Value>>,
}

impl Table {
    /// From the JSON text of each row (`row_to_json`).
    pub fn from_json_rows(columns: Vec<String>, rows: &[String]) -> Result<Self, Invalid> {
        let rows = rows
            .iter()
            .map(|r| serde_json::from_str::<Map<String, Value>>(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Invalid::new(format!("a row that is not a JSON object: {e}")))?;
        Ok(Self { columns, rows })
    }

    /// As it crosses gRPC.
    pub fn to_wire(&self) -> AnalysisTable {
        AnalysisTable {
            columns: self.columns.clone(),
            rows_json: self.rows.iter().map(|r| Value::Object(r.clone()).to_string()).collect(),
        }
    }

    /// From gRPC.
    pub fn from_wire(t: AnalysisTable) -> Result<Self, Invalid> {
        Self::from_json_rows(t.columns, &t.rows_json)
    }

    /// The number in `column` of `row`; `None` for NULL or a column that is not a number.
    pub fn number(&self, row: usize, column: &str) -> Option<f64> {
        self.rows.get(row)?.get(column)?.as_f64()
    }

    /// The text in `column` of `row`; `None` for NULL.
    pub fn text(&self, row: usize, column: &str) -> Option<&str> {
        self.rows.get(row)?.get(column)?.as_str()
    }
}
