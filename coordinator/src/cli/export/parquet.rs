//! Apache Parquet: typed columns (see `domain::export::Kind`), Snappy-compressed, one row
//! group per 65,536 results, so memory holds one row group at most.

use super::{RowWriter, parse};
use crate::domain::export::{COLUMNS, Kind};
use anyhow::Context;
use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Results per row group.
const ROW_GROUP: usize = 65_536;

/// A Parquet file.
pub struct Parquet {
    writer: ArrowWriter<std::fs::File>,
    schema: SchemaRef,
    pending: Vec<Map<String, Value>>,
}

impl Parquet {
    /// Writes into `file`, with the export's schema.
    pub fn new(file: std::fs::File) -> anyhow::Result<Self> {
        let schema = Arc::new(Schema::new(
            COLUMNS.iter().map(|c| Field::new(c.name, data_type(c.kind), true)).collect::<Vec<_>>(),
        ));
        let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
        Ok(Self { writer, schema, pending: Vec::with_capacity(ROW_GROUP) })
    }

    /// Writes the pending rows as one batch.
    fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let columns =
            COLUMNS.iter().map(|c| column(c.name, c.kind, &self.pending)).collect::<anyhow::Result<Vec<_>>>()?;
        self.writer.write(&RecordBatch::try_new(self.schema.clone(), columns)?)?;
        self.writer.flush()?;
        self.pending.clear();
        Ok(())
    }
}

impl RowWriter for Parquet {
    fn write(&mut self, rows: &[String]) -> anyhow::Result<()> {
        for row in rows {
            self.pending.push(parse(row)?);
            if self.pending.len() == ROW_GROUP {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.flush()?;
        let file = self.writer.into_inner()?;
        file.sync_all()?;
        Ok(())
    }
}

fn data_type(kind: Kind) -> DataType {
    match kind {
        Kind::Text => DataType::Utf8,
        Kind::Int => DataType::Int64,
        Kind::Float => DataType::Float64,
        Kind::Bool => DataType::Boolean,
        Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    }
}

/// One column of `rows` as an Arrow array; a value of the wrong type is an error naming it.
fn column(name: &str, kind: Kind, rows: &[Map<String, Value>]) -> anyhow::Result<ArrayRef> {
    let values = rows.iter().map(|r| r.get(name).filter(|v| !v.is_null()));
    let wrong = |v: &Value| anyhow::anyhow!("column {name}: {v} is not {kind:?}");
    Ok(match kind {
        Kind::Text => Arc::new(
            values
                .map(|v| v.map(|v| v.as_str().map(str::to_owned).ok_or_else(|| wrong(v))).transpose())
                .collect::<anyhow::Result<StringArray>>()?,
        ),
        Kind::Int => Arc::new(
            values
                .map(|v| v.map(|v| v.as_i64().ok_or_else(|| wrong(v))).transpose())
                .collect::<anyhow::Result<Int64Array>>()?,
        ),
        Kind::Float => Arc::new(
            values
                .map(|v| v.map(|v| v.as_f64().ok_or_else(|| wrong(v))).transpose())
                .collect::<anyhow::Result<Float64Array>>()?,
        ),
        Kind::Bool => Arc::new(
            values
                .map(|v| v.map(|v| v.as_bool().ok_or_else(|| wrong(v))).transpose())
                .collect::<anyhow::Result<BooleanArray>>()?,
        ),
        Kind::Timestamp => {
            let micros = values
                .map(|v| {
                    v.map(|v| {
                        let text = v.as_str().ok_or_else(|| wrong(v))?;
                        let at = chrono::DateTime::parse_from_rfc3339(text)
                            .with_context(|| format!("column {name}: {text} is not an RFC 3339 instant"))?;
                        Ok(at.timestamp_micros())
                    })
                    .transpose()
                })
                .collect::<anyhow::Result<Vec<Option<i64>>>>()?;
            Arc::new(TimestampMicrosecondArray::from(micros).with_timezone("UTC"))
        }
    })
}
