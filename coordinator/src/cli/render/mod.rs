//! Output formats, one file each. Every report format is derived from
//! [`SummaryRow`](crate::domain::report::SummaryRow): CSV and JSON take its columns in
//! declaration order, the table and Markdown read its fields.

pub mod csv;
pub mod json;
pub mod markdown;
pub mod svg;
pub mod table;

use crate::domain::analysis::Table;
use crate::domain::report::Report;

/// How `ipw report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One block per row, for a terminal.
    Table,
    /// Comma-separated, one line per row, every column.
    Csv,
    /// A JSON array of objects, every column.
    Json,
    /// A Markdown table of the main columns, for papers and notes.
    Markdown,
}

/// The report in the chosen format.
pub fn render_report(report: &Report, format: Format) -> String {
    match format {
        Format::Table => table::report(&report.rows),
        Format::Csv => csv::report(&report.rows),
        Format::Json => json::report(&report.rows),
        Format::Markdown => markdown::report(&report.rows),
    }
}

/// A research table (leaderboard, routing, weighted IPW, capacity) in the chosen format.
pub fn render_analysis(t: &Table, format: Format) -> String {
    match format {
        Format::Table => table::analysis(t),
        Format::Csv => csv::analysis(t),
        Format::Json => json::analysis(t),
        Format::Markdown => markdown::analysis(t),
    }
}

/// A cell for reading: NULL as `n/a`, numbers to six significant digits, arrays joined.
pub(crate) fn readable(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "n/a".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f != 0.0 && (f.abs() < 1e-3 || f.abs() >= 1e7) {
                format!("{f:.5e}")
            } else {
                format!("{}", (f * 1e6).round() / 1e6)
            }
        }
        Value::Array(a) if a.is_empty() => "none".into(),
        Value::Array(a) => a.iter().map(readable).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// A figure with its unit and digits, or `n/a` for NULL.
pub(crate) fn opt(v: Option<f64>, unit: &str, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}{unit}")).unwrap_or_else(|| "n/a".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::report::SummaryRow;

    #[test]
    fn unknown_energy_reads_na_with_its_reason() {
        let report = Report {
            rows: vec![SummaryRow {
                hardware_class: "cpu:x:2c:24GiB".into(),
                queries: 2,
                accuracy: Some(0.5),
                latency_mean_s: Some(1.234),
                energy_null_reason: Some("no readable power source".into()),
                power_source: Some("none".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render_report(&report, Format::Table);
        assert!(text.contains("accuracy"));
        assert!(text.contains("50.0%"));
        assert!(text.contains("1.23 s"));
        assert!(text.lines().any(|l| l.contains("energy per query") && l.ends_with("n/a")));
        assert!(text.lines().any(|l| l.contains("energy n/a because") && l.ends_with("no readable power source")));
        let ipw_line = text.lines().find(|l| l.trim_start().starts_with("IPW")).unwrap();
        assert!(ipw_line.ends_with("n/a"), "{ipw_line}");
    }

    #[test]
    fn csv_json_and_markdown_carry_every_figure() {
        let run_id = uuid::Uuid::now_v7();
        let report = Report {
            rows: vec![SummaryRow {
                run_id,
                model: "m, v2".into(),
                hardware_class: "gpu:nvidia:H100:80GiB:x1".into(),
                queries: 4,
                correct: 2,
                scored: 4,
                accuracy: Some(0.5),
                ipw: Some(0.0025),
                mean_power_w: Some(200.0),
                ..Default::default()
            }],
            ..Default::default()
        };
        let csv = render_report(&report, Format::Csv);
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(header.len(), SummaryRow::COLUMNS.len());
        let row = lines.next().unwrap();
        assert!(row.starts_with(&format!("{run_id},\"m, v2\",,gpu:nvidia:H100:80GiB:x1,4,")), "{row}");
        let json: serde_json::Value = serde_json::from_str(&render_report(&report, Format::Json)).unwrap();
        assert_eq!(json[0]["ipw"], 0.0025);
        assert_eq!(json[0]["joules_per_query"], serde_json::Value::Null);
        let md = render_report(&report, Format::Markdown);
        assert!(
            md.contains("| m, v2 | gpu:nvidia:H100:80GiB:x1 | 4 | 0.500 (n/a–n/a) | n/a | 200.00 | 0.00250 |"),
            "{md}"
        );
    }
}
