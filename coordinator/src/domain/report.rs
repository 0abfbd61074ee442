//! The report row: the columns of the `ipw_summary` view, declared once.
//!
//! [`SummaryRow`] is read from the view by name (`sqlx::FromRow`), crosses gRPC as a JSON
//! object (NULL stays null), and every output format is derived from it: CSV and JSON take
//! its fields in declaration order, and the table and Markdown renderers read its fields.
//! Adding a column to `ipw_summary` means adding it to the view and here; a test checks that
//! the two hold the same columns.

use super::Invalid;
use ipw_proto::v1::{PointBin, QueryPoint, TimePoint};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most measured points a report sends one by one; past this, they are binned on the server
/// (a figure cannot show more, and a million points would not fit one gRPC message).
pub const MAX_POINTS: i64 = 20_000;
/// The grid binned points are counted in: output tokens by energy.
pub const POINT_GRID: (i32, i32) = (60, 40);

/// A report: summary rows, and for plots the per-query points and the series over time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// One row per (run, model, workload, hardware class).
    pub rows: Vec<SummaryRow>,
    /// Per-query points, for scatter plots.
    pub points: Vec<QueryPoint>,
    /// IPW by day, for the longitudinal plot.
    pub over_time: Vec<TimePoint>,
    /// The points counted in a grid instead, when there are too many to send one by one.
    pub point_bins: Vec<PointBin>,
}

impl Report {
    /// The report as it crosses gRPC.
    pub fn to_wire(self) -> ipw_proto::v1::Report {
        ipw_proto::v1::Report {
            rows_json: self.rows.iter().map(SummaryRow::to_wire).collect(),
            points: self.points,
            over_time: self.over_time,
            point_bins: self.point_bins,
        }
    }

    /// The report from the wire; a malformed row is an error naming it.
    pub fn from_wire(wire: ipw_proto::v1::Report) -> Result<Self, Invalid> {
        let rows =
            wire.rows_json.iter().enumerate().map(|(i, r)| SummaryRow::from_wire(i, r)).collect::<Result<_, _>>()?;
        Ok(Self { rows, points: wire.points, over_time: wire.over_time, point_bins: wire.point_bins })
    }
}

/// Declares [`SummaryRow`] and its column list from one list of fields, so the columns'
/// order (CSV's header, the cells) always follows the declaration.
macro_rules! summary_row {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)+ }) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)+
        }

        impl $name {
            /// The column names, in declaration order (as CSV carries them).
            pub const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),+];

            /// The row as (column, value) pairs in declaration order; NULL is `Value::Null`.
            pub fn cells(&self) -> Vec<(&'static str, serde_json::Value)> {
                vec![$((stringify!($field), serde_json::to_value(&self.$field).expect("a column serializes"))),+]
            }
        }
    };
}

summary_row! {
    /// One row of `ipw_summary`: a (run, model, workload, hardware class). `None` is SQL NULL:
    /// a figure that cannot be computed (no power source, nothing scored), never a made-up zero.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
    pub struct SummaryRow {
        /// The run.
        pub run_id: Uuid,
        /// The model, as the engine served it.
        pub model: String,
        /// The workload's name.
        pub workload: String,
        /// The agents' hardware class.
        pub hardware_class: String,
        /// Results recorded.
        pub queries: i64,
        /// Results whose request failed.
        pub errors: i64,
        /// Results with a verdict under the chosen scoring.
        pub scored: i64,
        /// Results without one.
        pub unscored: i64,
        /// Results scored correct.
        pub correct: i64,
        /// Mean accuracy of the scored results.
        pub accuracy: Option<f64>,
        /// Wilson 95% interval, low end.
        pub accuracy_ci_low: Option<f64>,
        /// Wilson 95% interval, high end.
        pub accuracy_ci_high: Option<f64>,
        /// Mean end-to-end latency of successful requests, s.
        pub latency_mean_s: Option<f64>,
        /// Median latency, s.
        pub latency_p50_s: Option<f64>,
        /// 95th percentile latency, s.
        pub latency_p95_s: Option<f64>,
        /// Mean time to first token, s.
        pub ttft_mean_s: Option<f64>,
        /// Median time to first token, s.
        pub ttft_p50_s: Option<f64>,
        /// 95th percentile time to first token, s.
        pub ttft_p95_s: Option<f64>,
        /// Mean per-query output tokens per second.
        pub output_tokens_per_s: Option<f64>,
        /// Output tokens in all.
        pub tokens_out: i64,
        /// Mean raw energy per query, J.
        pub joules_per_query: Option<f64>,
        /// Mean energy per query above idle, J.
        pub dynamic_joules_per_query: Option<f64>,
        /// Mean raw power, W.
        pub mean_power_w: Option<f64>,
        /// Mean power above idle, W.
        pub mean_dynamic_power_w: Option<f64>,
        /// Output tokens per joule.
        pub tokens_per_joule: Option<f64>,
        /// Intelligence per watt: mean accuracy / mean power.
        pub ipw: Option<f64>,
        /// Intelligence per joule: mean accuracy / mean energy.
        pub ipj: Option<f64>,
        /// The power sources the energy came from, comma-separated.
        pub power_source: Option<String>,
        /// What they cover (gpu, cpu-package, soc).
        pub power_scope: Option<String>,
        /// Why energy is missing, when it is.
        pub energy_null_reason: Option<String>,
        /// The scoring whose verdicts the accuracy rests on.
        pub scoring_id: Option<Uuid>,
        /// Mean energy per query from send to first token, J.
        pub prefill_joules_per_query: Option<f64>,
        /// Mean energy per query from first token to end, J.
        pub decode_joules_per_query: Option<f64>,
        /// Mean time per output token after the first, s.
        pub tpot_mean_s: Option<f64>,
        /// Median over queries of each query's median inter-token latency, s.
        pub itl_p50_s: Option<f64>,
        /// Median over queries of each query's 95th percentile inter-token latency, s.
        pub itl_p95_s: Option<f64>,
        /// Requests per second that met the run's SLOs (all requests without SLOs).
        pub goodput_per_s: Option<f64>,
        /// Share of requests that met the run's SLOs.
        pub slo_attainment: Option<f64>,
        /// Queries wholly inside their session's steady-state window.
        pub steady_queries: i64,
        /// Their attributed energy over their output tokens, J/token.
        pub steady_joules_per_output_token: Option<f64>,
        /// IPW over the queries inside the steady-state window.
        pub steady_ipw: Option<f64>,
        /// closed, poisson or constant.
        pub load_pattern: Option<String>,
        /// Requests in flight (closed loop) or arrivals per second (open loop) asked for.
        pub load_target: Option<f64>,
        /// Length of the steady-state windows, less pauses, summed over sessions, s.
        pub steady_s: Option<f64>,
        /// Idle re-measurements cut out of the windows, s.
        pub paused_s: Option<f64>,
        /// Time-weighted load over the windows.
        pub steady_load_mean: Option<f64>,
        /// Power over the windows, W.
        pub steady_power_w: Option<f64>,
        /// Output tokens per second over the windows.
        pub steady_output_tokens_per_s: Option<f64>,
        /// Share of query time covered by power samples.
        pub power_coverage: Option<f64>,
        /// Open loop: requests that started late.
        pub late_starts: Option<i64>,
        /// Whether the run passed the stability rules (NULL: no session recorded).
        pub stable: Option<bool>,
        /// Why it did not.
        pub instability: Option<String>,
        /// The first run of its group of repeats (`--repeat-until-cv`).
        pub repeat_group: Option<Uuid>,
        /// Runs in the group so far.
        pub repeats: Option<i64>,
        /// Coefficient of variation of the group's figure across its completed runs.
        pub repeat_cv: Option<f64>,
        /// Which figure the CV is taken over.
        pub repeat_cv_metric: Option<String>,
    }
}

impl SummaryRow {
    /// The row as it crosses gRPC: a JSON object.
    pub fn to_wire(&self) -> String {
        serde_json::to_string(self).expect("a summary row serializes")
    }

    /// A row from the wire; the error says which row and what was wrong.
    pub fn from_wire(index: usize, json: &str) -> Result<Self, Invalid> {
        serde_json::from_str(json).map_err(|e| Invalid(format!("report row {index} is malformed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_survive_the_wire_and_columns_keep_their_order() {
        let row = SummaryRow { model: "m".into(), queries: 3, accuracy: Some(0.5), ..Default::default() };
        let back = SummaryRow::from_wire(0, &row.to_wire()).unwrap();
        assert_eq!(back, row);
        assert_eq!(back.ipw, None);
        let names = SummaryRow::COLUMNS;
        assert_eq!(names.first(), Some(&"run_id"));
        assert_eq!(names.last(), Some(&"repeat_cv_metric"));
        assert_eq!(row.cells().iter().map(|c| c.0).collect::<Vec<_>>(), names);
        assert!(SummaryRow::from_wire(2, "{").unwrap_err().0.starts_with("report row 2"));
        // Figures come back bit for bit (serde_json's default float parsing is off by one ULP
        // for some values, such as 5/24).
        for v in [5.0 / 24.0, 0.1 + 0.2, 1.0 / 3.0, 2.0f64.sqrt(), f64::MIN_POSITIVE, 1e300 / 7.0] {
            let row = SummaryRow { accuracy: Some(v), ..Default::default() };
            assert_eq!(SummaryRow::from_wire(0, &row.to_wire()).unwrap().accuracy.map(f64::to_bits), Some(v.to_bits()));
        }
    }
}
