//! `workloads` and `queries`: importing a workload and finding one.

use super::{Error, Result, on_unique_violation};
use crate::domain::workload::{Format, NewQuery};
use ipw_proto::v1::ImportWorkloadResponse;
use sqlx::postgres::PgCopyIn;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A workload, by name or id.
pub struct Workload {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// How many queries it holds.
    pub n_queries: i32,
}

/// Finds a workload by name or id, or says how to import one.
pub async fn find(conn: &mut PgConnection, key: &str) -> Result<Workload> {
    sqlx::query_as!(Workload, "SELECT id, name, n_queries FROM workloads WHERE name = $1 OR id::text = $1", key.trim())
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no workload \"{key}\"; import it first (`ipw workload import`)")))
}

/// Every workload, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<ImportWorkloadResponse>> {
    let rows =
        sqlx::query!("SELECT id, name, format, n_queries FROM workloads ORDER BY imported_at").fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .map(|w| ImportWorkloadResponse {
            workload_id: w.id.to_string(),
            name: w.name,
            format: w.format,
            queries: w.n_queries as u64,
        })
        .collect())
}

/// Starts an import: the workload's row, empty until [`finish_import`]. `nothing` is appended
/// to the error, since the caller rolls the whole import back.
pub async fn begin_import(conn: &mut PgConnection, name: &str, source: &str, nothing: &str) -> Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO workloads (id, name, format, source, n_queries) VALUES ($1, $2, 'generic', $3, 0)",
        id,
        name,
        source
    )
    .execute(conn)
    .await
    .map_err(|e| {
        on_unique_violation(e, || Error::AlreadyExists(format!("a workload named \"{name}\" already exists{nothing}")))
    })?;
    Ok(id)
}

/// Records the parsed format and the number of queries imported.
pub async fn finish_import(conn: &mut PgConnection, workload_id: Uuid, format: Format, queries: i32) -> Result<()> {
    sqlx::query!(
        "UPDATE workloads SET n_queries = $2, format = $3 WHERE id = $1",
        workload_id,
        queries,
        format.as_str()
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Parsed queries written into `queries` through one `COPY ... FROM STDIN` in the binary
/// format, inside the import's transaction: PostgreSQL's fastest way in (no escaping, no text
/// to parse back), and still all or nothing. Rows are encoded apart ([`encode_query`]), so
/// parsing and loading can run at once. `query!` cannot check a `COPY`; the import tests and
/// the unit test of [`CopyRow`] do.
pub struct QueryCopy<'c> {
    copy: PgCopyIn<&'c mut PgConnection>,
}

impl<'c> QueryCopy<'c> {
    /// Starts the `COPY` on `conn` (a transaction).
    pub async fn begin(conn: &'c mut PgConnection) -> Result<Self> {
        let mut copy = conn
            .copy_in_raw(
                "COPY queries (workload_id, external_id, line_no, prompt, choices, answer, category, scorer, tolerance,
                               messages, max_tokens)
                 FROM STDIN WITH (FORMAT binary)",
            )
            .await?;
        copy.send(COPY_BINARY_HEADER).await?;
        Ok(Self { copy })
    }

    /// Sends rows [`encode_query`] wrote.
    pub async fn send(&mut self, rows: &[u8]) -> Result<()> {
        self.copy.send(rows).await?;
        Ok(())
    }

    /// Sends the trailer and ends the `COPY`: the rows written.
    pub async fn finish(mut self) -> Result<u64> {
        self.copy.send(&(-1i16).to_be_bytes()[..]).await?;
        Ok(self.copy.finish().await?)
    }

    /// Ends the `COPY` unfinished, so the connection can roll the transaction back.
    pub async fn abort(self, why: &str) {
        let _ = self.copy.abort(why).await;
    }
}

/// Bytes of encoded rows worth sending at once.
pub const COPY_CHUNK_BYTES: usize = 1 << 20;

/// Appends one query of `workload_id` to `buf` as a binary `COPY` row of [`QueryCopy`].
pub fn encode_query(buf: &mut Vec<u8>, workload_id: Uuid, q: &NewQuery) {
    let choices = q.choices.as_ref().map(|c| serde_json::to_string(c).expect("strings are JSON"));
    let messages = q.messages.as_ref().map(|m| serde_json::to_string(m).expect("strings are JSON"));
    let mut row = CopyRow::new(buf, 11);
    row.uuid(workload_id);
    row.text(Some(&q.external_id));
    row.int4(Some(i32::try_from(q.line_no).unwrap_or(i32::MAX)));
    row.text(Some(&q.prompt));
    row.jsonb(choices.as_deref());
    row.text(Some(&q.answer));
    row.text(q.category.as_deref());
    row.text(Some(q.scorer.as_str()));
    row.float8(q.tolerance);
    row.jsonb(messages.as_deref());
    row.int4(q.max_tokens);
}

/// The binary `COPY` signature, flags (none) and header extension length (none).
const COPY_BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// One row of a binary `COPY`: the field count, then each field as its length (-1 for NULL)
/// and its bytes in the type's binary send format.
pub struct CopyRow<'b> {
    buf: &'b mut Vec<u8>,
}

impl<'b> CopyRow<'b> {
    /// Starts a row of `fields` fields in `buf`.
    pub fn new(buf: &'b mut Vec<u8>, fields: i16) -> Self {
        buf.extend_from_slice(&fields.to_be_bytes());
        Self { buf }
    }

    fn field(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            None => self.buf.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                self.buf.extend_from_slice(&(b.len() as i32).to_be_bytes());
                self.buf.extend_from_slice(b);
            }
        }
    }

    /// A `text` field (UTF-8 as it is).
    pub fn text(&mut self, value: Option<&str>) {
        self.field(value.map(str::as_bytes));
    }

    /// A `jsonb` field: format version 1, then the JSON text.
    pub fn jsonb(&mut self, json: Option<&str>) {
        match json {
            None => self.field(None),
            Some(j) => {
                self.buf.extend_from_slice(&(j.len() as i32 + 1).to_be_bytes());
                self.buf.push(1);
                self.buf.extend_from_slice(j.as_bytes());
            }
        }
    }

    /// An `int4` field.
    pub fn int4(&mut self, value: Option<i32>) {
        self.field(value.map(i32::to_be_bytes).as_ref().map(|b| b.as_slice()));
    }

    /// A `float8` field.
    pub fn float8(&mut self, value: Option<f64>) {
        self.field(value.map(|v| v.to_be_bytes()).as_ref().map(|b| b.as_slice()));
    }

    /// A `uuid` field.
    pub fn uuid(&mut self, value: Uuid) {
        self.field(Some(value.as_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::CopyRow;

    #[test]
    fn a_binary_copy_row_is_its_field_count_then_each_length_and_bytes() {
        let mut buf = Vec::new();
        let mut row = CopyRow::new(&mut buf, 4);
        row.text(Some("ab"));
        row.text(None);
        row.int4(Some(7));
        row.jsonb(Some("[]"));
        assert_eq!(
            buf,
            [
                &[0, 4][..],
                &[0, 0, 0, 2, b'a', b'b'],
                &[255; 4],
                &[0, 0, 0, 4, 0, 0, 0, 7],
                &[0, 0, 0, 3, 1, b'[', b']']
            ]
            .concat()
        );
    }
}
