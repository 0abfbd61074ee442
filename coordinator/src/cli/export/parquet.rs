//! Apache Parquet: typed columns (see `domain::export::Kind`), Snappy-compressed, one row
//! group per 65,536 results, so memory holds one row group at most.

use super::{RowWriter, parse};
use crate::domain::export::{COLUMNS, Kind};
use anyhow::Context;
use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::Value;
use std::sync::Arc;

/// Results per row group.
const ROW_GROUP: usize = 65_536;

/// A Parquet file.
pub struct Parquet {
    writer: ArrowWriter<std::fs::File>,
    schema: SchemaRef,
    columns: Vec<Builder>,
    rows: usize,
}

impl Parquet {
    /// Writes into `file`, with the export's schema.
    pub fn new(file: std::fs::File) -> anyhow::Result<Self> {
        let fields = COLUMNS.iter().map(|c| Field::new(c.name, data_type(c.kind), true)).collect::<Vec<_>>();
        let schema = Arc::new(Schema::new(fields));
        let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
        Ok(Self { writer, schema, columns: COLUMNS.iter().map(|c| Builder::new(c.kind)).collect(), rows: 0 })
    }

    /// Writes the rows so far as one row group.
    fn flush(&mut self) -> anyhow::Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(Builder::finish).collect();
        self.writer.write(&RecordBatch::try_new(self.schema.clone(), arrays)?)?;
        self.writer.flush()?;
        self.rows = 0;
        Ok(())
    }
}

impl RowWriter for Parquet {
    fn write(&mut self, rows: &[String]) -> anyhow::Result<()> {
        for row in rows {
            let row = parse(row)?;
            for (column, builder) in COLUMNS.iter().zip(&mut self.columns) {
                let value = row.get(column.name).filter(|v| !v.is_null());
                builder.append(value).with_context(|| format!("column {}", column.name))?;
            }
            self.rows += 1;
            if self.rows == ROW_GROUP {
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

/// One column being filled, row by row: only the current row group is held.
enum Builder {
    Text(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl Builder {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Text => Builder::Text(StringBuilder::new()),
            Kind::Int => Builder::Int(Int64Builder::new()),
            Kind::Float => Builder::Float(Float64Builder::new()),
            Kind::Bool => Builder::Bool(BooleanBuilder::new()),
            Kind::Timestamp => Builder::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
        }
    }

    /// Appends a value (`None` for NULL); a value of the wrong type is an error naming it.
    fn append(&mut self, value: Option<&Value>) -> anyhow::Result<()> {
        let wrong = |v: &Value| anyhow::anyhow!("{v} is not of the column's type");
        match self {
            Builder::Text(b) => b.append_option(value.map(|v| v.as_str().ok_or_else(|| wrong(v))).transpose()?),
            Builder::Int(b) => b.append_option(value.map(|v| v.as_i64().ok_or_else(|| wrong(v))).transpose()?),
            Builder::Float(b) => b.append_option(value.map(|v| v.as_f64().ok_or_else(|| wrong(v))).transpose()?),
            Builder::Bool(b) => b.append_option(value.map(|v| v.as_bool().ok_or_else(|| wrong(v))).transpose()?),
            Builder::Timestamp(b) => b.append_option(
                value
                    .map(|v| {
                        let text = v.as_str().ok_or_else(|| wrong(v))?;
                        let at = chrono::DateTime::parse_from_rfc3339(text)
                            .with_context(|| format!("{text} is not an RFC 3339 instant"))?;
                        anyhow::Ok(at.timestamp_micros())
                    })
                    .transpose()?,
            ),
        }
        Ok(())
    }

    /// The column's array so far; the builder starts empty again.
    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Float(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
        }
    }
}
