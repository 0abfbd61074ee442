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

/// Bytes buffered before they are sent to the `COPY`.
const COPY_CHUNK_BYTES: usize = 1 << 20;

/// Parsed queries written into `queries` through one `COPY ... FROM STDIN` (text format),
/// inside the import's transaction: PostgreSQL's fastest way in, and still all or nothing.
/// `query!` cannot check a `COPY`; the import tests and the unit test of [`copy_text`] do.
pub struct QueryCopy<'c> {
    copy: PgCopyIn<&'c mut PgConnection>,
    buf: Vec<u8>,
    workload_id: String,
}

impl<'c> QueryCopy<'c> {
    /// Starts the `COPY` on `conn` (a transaction) for `workload_id`.
    pub async fn begin(conn: &'c mut PgConnection, workload_id: Uuid) -> Result<Self> {
        let copy = conn
            .copy_in_raw(
                "COPY queries (workload_id, external_id, line_no, prompt, choices, answer, category, scorer, tolerance)
                 FROM STDIN",
            )
            .await?;
        Ok(Self { copy, buf: Vec::with_capacity(COPY_CHUNK_BYTES + 64 * 1024), workload_id: workload_id.to_string() })
    }

    /// Adds one query; sends the buffer when it is full.
    pub async fn push(&mut self, q: &NewQuery) -> Result<()> {
        let line_no = i32::try_from(q.line_no).unwrap_or(i32::MAX).to_string();
        let choices = q.choices.as_ref().map(|c| serde_json::to_string(c).expect("strings are JSON"));
        let tolerance = q.tolerance.map(|t| t.to_string());
        let fields = [
            Some(self.workload_id.as_str()),
            Some(q.external_id.as_str()),
            Some(line_no.as_str()),
            Some(q.prompt.as_str()),
            choices.as_deref(),
            Some(q.answer.as_str()),
            q.category.as_deref(),
            Some(q.scorer.as_str()),
            tolerance.as_deref(),
        ];
        copy_text(&mut self.buf, &fields);
        if self.buf.len() >= COPY_CHUNK_BYTES {
            self.copy.send(self.buf.as_slice()).await?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Sends what is left and ends the `COPY`: the rows written.
    pub async fn finish(mut self) -> Result<u64> {
        if !self.buf.is_empty() {
            self.copy.send(self.buf.as_slice()).await?;
        }
        Ok(self.copy.finish().await?)
    }

    /// Ends the `COPY` unfinished, so the connection can roll the transaction back.
    pub async fn abort(self, why: &str) {
        let _ = self.copy.abort(why).await;
    }
}

/// Appends one row in `COPY`'s text format: fields separated by tabs, `\N` for NULL, and
/// backslash, tab, newline and carriage return escaped.
pub fn copy_text(buf: &mut Vec<u8>, fields: &[Option<&str>]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            buf.push(b'\t');
        }
        let Some(text) = field else {
            buf.extend_from_slice(b"\\N");
            continue;
        };
        for &b in text.as_bytes() {
            match b {
                b'\\' => buf.extend_from_slice(b"\\\\"),
                b'\t' => buf.extend_from_slice(b"\\t"),
                b'\n' => buf.extend_from_slice(b"\\n"),
                b'\r' => buf.extend_from_slice(b"\\r"),
                _ => buf.push(b),
            }
        }
    }
    buf.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::copy_text;

    #[test]
    fn copy_text_escapes_what_copy_would_read_as_structure() {
        let mut buf = Vec::new();
        copy_text(&mut buf, &[Some("a\tb\nc\\d\re"), None, Some("")]);
        assert_eq!(buf, b"a\\tb\\nc\\\\d\\re\t\\N\t\n");
    }
}
