//! The columns of `ipw export`, declared once: each result with its run, agent, score and
//! the provenance its agent reported. The server selects them by name, the wire carries each
//! row as a JSON object, and every file format (`cli/export/`) is written from this list.

/// What a column holds, as the file formats type it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text (ids and timestamps are sent as text and typed by the format).
    Text,
    /// A 64-bit integer.
    Int,
    /// A double.
    Float,
    /// True or false.
    Bool,
    /// An instant, ISO 8601 with its offset; parquet stores microseconds since the epoch, UTC.
    Timestamp,
}

/// One exported column: its name and where it comes from in the source query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// The name in every format.
    pub name: &'static str,
    /// What it holds.
    pub kind: Kind,
    /// Its expression over `query_results qr` and `run_provenance_by_run p`.
    pub source: &'static str,
}

const fn col(name: &'static str, kind: Kind, source: &'static str) -> Column {
    Column { name, kind, source }
}

/// Every exported column, in file order.
pub const COLUMNS: &[Column] = &[
    col("result_id", Kind::Int, "qr.result_id"),
    col("run_id", Kind::Text, "qr.run_id"),
    col("run_created_at", Kind::Timestamp, "qr.run_created_at"),
    col("model", Kind::Text, "qr.model"),
    col("workload", Kind::Text, "qr.workload"),
    col("query_id", Kind::Int, "qr.query_id"),
    col("query_external_id", Kind::Text, "qr.query_external_id"),
    col("category", Kind::Text, "qr.category"),
    col("repetition", Kind::Int, "qr.repetition"),
    col("agent_id", Kind::Text, "qr.agent_id"),
    col("agent_name", Kind::Text, "qr.agent_name"),
    col("hardware_class", Kind::Text, "qr.hardware_class"),
    col("started_at", Kind::Timestamp, "qr.started_at"),
    col("latency_s", Kind::Float, "qr.latency_s"),
    col("ttft_s", Kind::Float, "qr.ttft_s"),
    col("mean_itl_s", Kind::Float, "qr.mean_itl_s"),
    col("itl_p50_s", Kind::Float, "qr.itl_p50_s"),
    col("itl_p95_s", Kind::Float, "qr.itl_p95_s"),
    col("tpot_s", Kind::Float, "qr.tpot_s"),
    col("start_delay_s", Kind::Float, "qr.start_delay_s"),
    col("tokens_in", Kind::Int, "qr.tokens_in"),
    col("tokens_out", Kind::Int, "qr.tokens_out"),
    col("error", Kind::Text, "qr.error"),
    col("scoring_id", Kind::Text, "qr.scoring_id"),
    col("scorer", Kind::Text, "qr.scorer"),
    col("extracted", Kind::Text, "qr.extracted"),
    col("correct", Kind::Bool, "qr.correct"),
    col("acc", Kind::Int, "qr.acc"),
    col("meets_slo", Kind::Bool, "qr.meets_slo"),
    col("energy_j", Kind::Float, "qr.energy_j"),
    col("dynamic_energy_j", Kind::Float, "qr.dynamic_energy_j"),
    col("prefill_energy_j", Kind::Float, "qr.prefill_energy_j"),
    col("decode_energy_j", Kind::Float, "qr.decode_energy_j"),
    col("power_w", Kind::Float, "qr.power_w"),
    col("power_source", Kind::Text, "qr.power_source"),
    col("power_scope", Kind::Text, "qr.power_scope"),
    col("sample_hz", Kind::Float, "qr.sample_hz"),
    col("energy_attribution", Kind::Text, "qr.energy_attribution"),
    col("energy_null_reason", Kind::Text, "qr.energy_null_reason"),
    col("session_id", Kind::Text, "qr.session_id"),
    col("in_steady_window", Kind::Bool, "qr.in_steady_window"),
    col("rate_limited", Kind::Int, "r.rate_limited"),
    col("agent_version", Kind::Text, "p.agent_version"),
    col("engine_remote", Kind::Bool, "coalesce(p.engine_remote, false)"),
    col("engine_name", Kind::Text, "p.engine_name"),
    col("engine_version", Kind::Text, "p.engine_version"),
    col("engine_model", Kind::Text, "p.engine_model"),
    col("model_sha256", Kind::Text, "p.model_sha256"),
    col("quantization", Kind::Text, "p.quantization"),
    col("driver_version", Kind::Text, "p.driver_version"),
    col("os", Kind::Text, "p.os"),
    col("kernel", Kind::Text, "p.kernel"),
    col("cpu_model", Kind::Text, "p.cpu_model"),
    col("power_limit_w", Kind::Float, "p.power_limit_w"),
];

/// The select list: each column's source under its name.
pub fn select_list() -> String {
    COLUMNS.iter().map(|c| format!("{} AS {}", c.source, c.name)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_names_are_unique_and_plain_identifiers() {
        let mut names: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COLUMNS.len());
    }
}
