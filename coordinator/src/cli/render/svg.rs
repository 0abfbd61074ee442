//! `ipw plot`: SVG figures from a report, drawn with plotters.
//!
//! Every figure has axes with units and names the power source and scope it rests on; when
//! energy is unknown it says so, and why, instead of drawing made-up points.

pub mod power;
pub mod research;

use crate::domain::report::{POINT_GRID, Report, SummaryRow as ReportRow};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

const SIZE: (u32, u32) = (960, 600);
/// Okabe and Ito's palette, told apart under the common colour-vision deficiencies.
const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
];

type PlotResult = Result<(), Box<dyn std::error::Error>>;
/// A figure: its file name and how to draw it.
pub type Figure = (&'static str, fn(&Report, &Path) -> PlotResult);

/// Every figure of a report, in order: its file name and how to draw it.
pub const FIGURES: [Figure; 4] = [
    ("ipw_by_model_hardware.svg", ipw_bars),
    ("accuracy_vs_energy.svg", accuracy_vs_energy),
    ("energy_vs_output_tokens.svg", energy_vs_tokens),
    ("ipw_over_time.svg", ipw_over_time),
];

/// Writes every figure into `dir`; returns the files written.
pub fn write_all(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    FIGURES.iter().map(|(name, _)| write_one(report, name, &dir.join(name))).collect()
}

/// Writes the figure called `name` (one of [`FIGURES`]) to `path`.
pub fn write_one(report: &Report, name: &str, path: &Path) -> Result<PathBuf, String> {
    let (_, draw) = FIGURES.iter().find(|(n, _)| *n == name).ok_or_else(|| format!("no figure called {name}"))?;
    draw(report, path).map_err(|e| format!("drawing {}: {e}", path.display()))?;
    Ok(path.to_owned())
}

/// "power: rapl (cpu-package)" for the rows, or why energy is unknown.
fn provenance(rows: &[&ReportRow]) -> String {
    let mut sources: Vec<String> = Vec::new();
    for r in rows {
        let source = r.power_source.as_deref().unwrap_or_default();
        let s = if source.is_empty() || source == "none" {
            "none".to_owned()
        } else {
            format!("{source} ({})", r.power_scope.as_deref().unwrap_or_default())
        };
        if !sources.contains(&s) {
            sources.push(s);
        }
    }
    format!("power: {}", if sources.is_empty() { "none".into() } else { sources.join(", ") })
}

/// How a (model, hardware class) is named in legends and on axes.
fn series_name(model: &str, hardware_class: &str) -> String {
    format!("{model} @ {hardware_class}")
}

fn label(r: &ReportRow) -> String {
    series_name(&r.model, &r.hardware_class)
}

/// Groups named points into series, in first-seen order.
fn by_series(points: impl Iterator<Item = (String, (f64, f64))>) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (name, point) in points {
        match series.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => v.push(point),
            None => series.push((name, vec![point])),
        }
    }
    series
}

/// An empty figure that says why there is nothing to draw.
fn unavailable(path: &Path, title: &str, why: &str, provenance: &str) -> PlotResult {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    root.draw(&Text::new(title.to_owned(), (40, 40), ("sans-serif", 24)))?;
    root.draw(&Text::new(provenance.to_owned(), (40, 75), ("sans-serif", 16)))?;
    draw_lines(&root, &wrap(why), 130)?;
    root.present()?;
    Ok(())
}

/// Characters in a wrapped line of prose under or instead of a chart.
const LINE_CHARS: usize = 100;
/// Pixels from one wrapped line to the next.
const LINE_HEIGHT: i32 = 22;

/// `text` cut into lines of at most [`LINE_CHARS`] at spaces (a longer word stays whole).
fn wrap(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + word.len() > LINE_CHARS {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Writes `lines` from the top `y` down, one under the other.
fn draw_lines(area: &DrawingArea<SVGBackend<'_>, Shift>, lines: &[String], y: i32) -> PlotResult {
    for (i, line) in lines.iter().enumerate() {
        area.draw(&Text::new(line.clone(), (40, y + i as i32 * LINE_HEIGHT), ("sans-serif", 15)))?;
    }
    Ok(())
}

fn null_reason(rows: &[&ReportRow]) -> String {
    let reasons: Vec<&str> =
        rows.iter().filter_map(|r| r.energy_null_reason.as_deref()).filter(|s| !s.is_empty()).collect();
    format!("No energy was measured, so this figure is empty: {}", reasons.first().copied().unwrap_or("no results"))
}

/// IPW by (model, hardware class): the whole run's bar, and beside it, lighter, the IPW of
/// the queries inside the steady-state window.
fn ipw_bars(report: &Report, path: &Path) -> PlotResult {
    const TITLE: &str = "IPW by model and hardware class (whole run | steady state)";
    let rows: Vec<&ReportRow> = report.rows.iter().collect();
    let bars: Vec<(String, f64, Option<f64>)> =
        rows.iter().filter_map(|r| r.ipw.map(|v| (label(r), v, r.steady_ipw))).collect();
    if bars.is_empty() {
        return unavailable(path, TITLE, &null_reason(&rows), &provenance(&rows));
    }
    let top = axis_top(bars.iter().flat_map(|(_, v, s)| [Some(*v), *s]).flatten());
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let mut chart = frame(&root, TITLE, &rows, 0.0..bars.len() as f64, 0.0..top)?;
    let names: Vec<String> = bars.iter().map(|(n, _, _)| n.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 { names.get(i).cloned().unwrap_or_default() } else { String::new() }
        })
        .x_desc("model @ hardware class")
        .y_desc("IPW (accuracy per watt, 1/W)")
        .draw()?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v, _))| {
            Rectangle::new([(i as f64 + 0.1, 0.0), (i as f64 + 0.5, *v)], PALETTE[i % PALETTE.len()].filled())
        }))?
        .label("whole run")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], PALETTE[0].filled()));
    chart
        .draw_series(bars.iter().enumerate().filter_map(|(i, (_, _, steady))| {
            let colour = PALETTE[i % PALETTE.len()].mix(0.45);
            steady.map(|s| Rectangle::new([(i as f64 + 0.5, 0.0), (i as f64 + 0.9, s)], colour.filled()))
        }))?
        .label("steady-state window")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], PALETTE[0].mix(0.45).filled()));
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
    root.present()?;
    Ok(())
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A white figure whose caption names what it shows and its power source, on f64 axes.
fn frame<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    rows: &[&ReportRow],
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    framed(root, &format!("{title} ({})", provenance(rows)), x, y)
}

/// A chart under `caption` on f64 axes, on an area already filled.
fn framed<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    Ok(ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(70)
        .y_label_area_size(90)
        .build_cartesian_2d(x, y)?)
}

/// The upper end of a value axis: 15% above the largest value, or 1 when every value is 0
/// (a collapsed axis would show no scale at all).
fn axis_top(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.fold(0.0, f64::max);
    if max > 0.0 { max * 1.15 } else { 1.0 }
}

/// The legend box, over the series that carry labels.
fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> PlotResult {
    legend_at(chart, SeriesLabelPosition::MiddleRight)
}

/// The legend box at `position`.
fn legend_at<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, position: SeriesLabelPosition) -> PlotResult {
    chart.configure_series_labels().position(position).background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    Ok(())
}

/// Points (price, accuracy) not beaten by another with a lower price and at least the
/// accuracy, ordered by price; the price is energy or money per query.
pub fn pareto_frontier(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<(f64, f64)> = points.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
    let mut frontier: Vec<(f64, f64)> = Vec::new();
    for p in sorted {
        if frontier.last().is_none_or(|last| p.1 > last.1) {
            frontier.push(p);
        }
    }
    frontier
}

/// Draws the Pareto frontier of (price, accuracy) `points`, labelled "Pareto frontier".
fn draw_frontier<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, points: &[(f64, f64)]) -> PlotResult {
    let frontier = pareto_frontier(points);
    // Rings mark the frontier's points, so a frontier of one point still shows.
    chart.draw_series(frontier.iter().map(|p| Circle::new(*p, 11, BLACK.stroke_width(2))))?;
    chart
        .draw_series(LineSeries::new(frontier, BLACK.stroke_width(2)))?
        .label("Pareto frontier")
        .legend(|(x, y)| PathElement::new(vec![(x - 10, y), (x + 10, y)], BLACK.stroke_width(2)));
    Ok(())
}

/// Accuracy against joules per query, one point per (model, hardware class), with the
/// Pareto frontier.
fn accuracy_vs_energy(report: &Report, path: &Path) -> PlotResult {
    const TITLE: &str = "Accuracy against energy per query";
    let rows: Vec<&ReportRow> = report.rows.iter().collect();
    let points: Vec<(String, f64, f64)> =
        rows.iter().filter_map(|r| Some((label(r), r.joules_per_query?, r.accuracy?))).collect();
    if points.is_empty() {
        return unavailable(path, TITLE, &null_reason(&rows), &provenance(&rows));
    }
    let max_j = axis_top(points.iter().map(|p| p.1));
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let mut chart = frame(&root, TITLE, &rows, 0.0..max_j, 0.0..1.0)?;
    chart.configure_mesh().x_desc("energy per query (J)").y_desc("accuracy (fraction correct)").draw()?;
    for (i, (name, j, acc)) in points.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(std::iter::once(Circle::new((*j, *acc), 6, color.filled())))?
            .label(name.clone())
            .legend(move |(x, y)| Circle::new((x, y), 5, color.filled()));
    }
    draw_frontier(&mut chart, &points.iter().map(|p| (p.1, p.2)).collect::<Vec<_>>())?;
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

/// Energy of each query against its output tokens, one series per (model, hardware class).
fn energy_vs_tokens(report: &Report, path: &Path) -> PlotResult {
    const TITLE: &str = "Energy against output tokens, per query";
    let rows: Vec<&ReportRow> = report.rows.iter().collect();
    if !report.point_bins.is_empty() {
        return energy_vs_tokens_density(report, &rows, path);
    }
    let measured: Vec<_> = report.points.iter().filter(|p| p.energy_j.is_some()).collect();
    if measured.is_empty() {
        return unavailable(path, TITLE, &null_reason(&rows), &provenance(&rows));
    }
    let max_t = measured.iter().map(|p| p.tokens_out as f64).fold(0.0, f64::max) * 1.1 + 1.0;
    let max_j = axis_top(measured.iter().filter_map(|p| p.energy_j));
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let mut chart = frame(&root, TITLE, &rows, 0.0..max_t, 0.0..max_j)?;
    chart.configure_mesh().x_desc("output tokens").y_desc("energy (J)").draw()?;
    let series =
        by_series(measured.iter().map(|p| {
            (series_name(&p.model, &p.hardware_class), (p.tokens_out as f64, p.energy_j.unwrap_or_default()))
        }));
    for (i, (name, pts)) in series.into_iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?
            .label(name)
            .legend(move |(x, y)| Circle::new((x, y), 4, color.filled()));
    }
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

/// The same figure when the points were binned on the server: each cell a square shaded by
/// how many results fall in it (darker is more, on a log scale), one color per series. The
/// caption says so, with the number of results and the grid.
fn energy_vs_tokens_density(report: &Report, rows: &[&ReportRow], path: &Path) -> PlotResult {
    let bins = &report.point_bins;
    let total: u64 = bins.iter().map(|b| b.count).sum();
    let most = bins.iter().map(|b| b.count).max().unwrap_or(1).max(2) as f64;
    let title = format!(
        "Energy against output tokens: {total} results binned on the server, {} x {} cells, darker is more",
        POINT_GRID.0, POINT_GRID.1
    );
    let max_t = bins.iter().map(|b| b.tokens_hi).fold(0.0, f64::max);
    let max_j = bins.iter().map(|b| b.energy_hi).fold(0.0, f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let mut chart = frame(&root, &title, rows, 0.0..max_t, 0.0..max_j)?;
    chart.configure_mesh().x_desc("output tokens").y_desc("energy (J)").draw()?;
    let series =
        by_series(bins.iter().enumerate().map(|(i, b)| (series_name(&b.model, &b.hardware_class), (i as f64, 0.0))));
    for (k, (name, members)) in series.into_iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let cells = members.into_iter().map(|(i, _)| &bins[i as usize]).map(|b| {
            let shade = 0.15 + 0.85 * (b.count as f64).ln() / most.ln();
            Rectangle::new([(b.tokens_lo, b.energy_lo), (b.tokens_hi, b.energy_hi)], color.mix(shade.min(1.0)).filled())
        });
        chart
            .draw_series(cells)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x - 4, y - 4), (x + 4, y + 4)], color.filled()));
    }
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

/// IPW by run day, one line per (model, hardware class): the longitudinal view.
fn ipw_over_time(report: &Report, path: &Path) -> PlotResult {
    const TITLE: &str = "IPW over time";
    let rows: Vec<&ReportRow> = report.rows.iter().collect();
    let points: Vec<_> = report.over_time.iter().filter(|t| t.ipw.is_some()).collect();
    if points.is_empty() {
        return unavailable(path, TITLE, &null_reason(&rows), &provenance(&rows));
    }
    let mut days: Vec<&str> = points.iter().map(|t| t.day.as_str()).collect();
    days.sort();
    days.dedup();
    let top = axis_top(points.iter().filter_map(|t| t.ipw));
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let mut chart = frame(&root, TITLE, &rows, -0.5..days.len() as f64 - 0.5, 0.0..top)?;
    chart
        .configure_mesh()
        .x_labels(days.len().max(2))
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 {
                days.get(i as usize).map(|d| d.to_string()).unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc("run date (UTC)")
        .y_desc("IPW (accuracy per watt, 1/W)")
        .draw()?;
    let lines = by_series(points.iter().map(|t| {
        let x = days.iter().position(|d| *d == t.day).unwrap_or(0) as f64;
        (series_name(&t.model, &t.hardware_class), (x, t.ipw.unwrap_or_default()))
    }));
    for (i, (name, pts)) in lines.into_iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x - 10, y), (x + 10, y)], color.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
    }
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipw_proto::v1::{QueryPoint, TimePoint};

    fn row(model: &str, hw: &str, acc: f64, joules: f64, ipw: f64) -> ReportRow {
        ReportRow {
            model: model.into(),
            hardware_class: hw.into(),
            accuracy: Some(acc),
            joules_per_query: Some(joules),
            ipw: Some(ipw),
            power_source: Some("nvml-counter".into()),
            power_scope: Some("gpu".into()),
            ..Default::default()
        }
    }

    fn texts(svg: &str) -> Vec<String> {
        let doc = roxmltree::Document::parse(svg).expect("well-formed SVG");
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(|t| t.trim().to_owned()))
            .collect()
    }

    #[test]
    fn an_all_zero_axis_still_has_a_scale() {
        assert_eq!(axis_top([0.0, 0.0].into_iter()), 1.0);
        assert!((axis_top([2.0, 1.0].into_iter()) - 2.3).abs() < 1e-12);
    }

    #[test]
    fn the_frontier_keeps_points_nobody_beats() {
        let f = pareto_frontier(&[(10.0, 0.5), (5.0, 0.4), (7.0, 0.3), (20.0, 0.9), (15.0, 0.5)]);
        assert_eq!(f, [(5.0, 0.4), (10.0, 0.5), (20.0, 0.9)]);
    }

    #[test]
    fn figures_are_well_formed_svg_with_their_series_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let report = Report {
            rows: vec![
                row("qwen-7b", "gpu:nvidia:H100:80GiB:x1", 0.62, 40.0, 0.0031),
                row("llama-3b", "cpu:epyc:2c:24GiB", 0.41, 90.0, 0.0012),
            ],
            points: (1..=20)
                .map(|i| QueryPoint {
                    model: "qwen-7b".into(),
                    hardware_class: "gpu:nvidia:H100:80GiB:x1".into(),
                    tokens_out: i * 10,
                    energy_j: Some(f64::from(i) * 2.0),
                    ..Default::default()
                })
                .collect(),
            point_bins: Vec::new(),
            over_time: ["2026-01-05", "2026-03-01"]
                .iter()
                .enumerate()
                .map(|(i, d)| TimePoint {
                    day: (*d).into(),
                    model: "qwen-7b".into(),
                    hardware_class: "gpu:nvidia:H100:80GiB:x1".into(),
                    ipw: Some(0.002 + i as f64 * 0.001),
                    runs: 1,
                    ..Default::default()
                })
                .collect(),
        };
        let files = write_all(&report, dir.path()).unwrap();
        assert_eq!(files.len(), 4);
        if let Ok(keep) = std::env::var("IPW_KEEP_PLOTS") {
            for f in &files {
                std::fs::copy(f, std::path::Path::new(&keep).join(f.file_name().unwrap())).unwrap();
            }
        }

        let bars = std::fs::read_to_string(&files[0]).unwrap();
        let t = texts(&bars);
        assert!(
            t.iter().any(|s| s.contains("IPW by model and hardware class") && s.contains("power: nvml-counter (gpu)")),
            "{t:?}"
        );
        assert!(t.iter().any(|s| s == "IPW (accuracy per watt, 1/W)"));
        assert!(t.iter().any(|s| s == "qwen-7b @ gpu:nvidia:H100:80GiB:x1"));
        // Two bars (plus the white background).
        let doc = roxmltree::Document::parse(&bars).unwrap();
        let filled_rects =
            doc.descendants().filter(|n| n.has_tag_name("rect") && n.attribute("fill") != Some("#FFFFFF")).count();
        assert!(filled_rects >= 2, "{filled_rects}");

        let scatter = std::fs::read_to_string(&files[1]).unwrap();
        let t = texts(&scatter);
        assert!(t.iter().any(|s| s == "energy per query (J)") && t.iter().any(|s| s == "accuracy (fraction correct)"));
        assert!(t.iter().any(|s| s == "Pareto frontier"));
        let energy = std::fs::read_to_string(&files[2]).unwrap();
        let circles =
            roxmltree::Document::parse(&energy).unwrap().descendants().filter(|n| n.has_tag_name("circle")).count();
        assert!(circles >= 20, "one point per query ({circles})");
        let t = texts(&std::fs::read_to_string(&files[3]).unwrap());
        assert!(t.iter().any(|s| s == "2026-01-05") && t.iter().any(|s| s == "run date (UTC)"), "{t:?}");
    }

    #[test]
    fn without_energy_the_figures_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let report = Report {
            rows: vec![ReportRow {
                model: "m".into(),
                power_source: Some("none".into()),
                energy_null_reason: Some("no readable power source; rapl: missing".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        for f in write_all(&report, dir.path()).unwrap() {
            let t = texts(&std::fs::read_to_string(&f).unwrap());
            assert!(
                t.iter().any(|s| s.contains("No energy was measured") && s.contains("no readable power source")),
                "{t:?}"
            );
            assert!(t.iter().any(|s| s == "power: none"));
        }
    }

    #[test]
    fn binned_points_are_drawn_as_a_density_and_the_caption_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let bin = |bx: f64, by: f64, count| ipw_proto::v1::PointBin {
            model: "qwen-7b".into(),
            hardware_class: "gpu:nvidia:H100:80GiB:x1".into(),
            tokens_lo: bx * 10.0,
            tokens_hi: bx * 10.0 + 10.0,
            energy_lo: by,
            energy_hi: by + 1.0,
            count,
        };
        let report = Report {
            rows: vec![row("qwen-7b", "gpu:nvidia:H100:80GiB:x1", 0.62, 40.0, 0.0031)],
            point_bins: vec![bin(0.0, 0.0, 900_000), bin(3.0, 2.0, 100_000)],
            ..Default::default()
        };
        let path = dir.path().join("energy.svg");
        energy_vs_tokens(&report, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("1000000 results binned on the server, 60 x 40 cells"), "{svg}");
        assert!(svg.matches("<rect").count() >= 3, "two cells and the legend: {svg}");
    }
}
