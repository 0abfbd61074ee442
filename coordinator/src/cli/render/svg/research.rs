//! `ipw plot`'s research figures: the hybrid-routing curve, cost against accuracy with its
//! Pareto frontier, and weighted against unweighted IPW. Each draws tables of the research
//! SQL as fetched; a point whose figure is NULL is left out, never drawn as 0, and the notes
//! under the chart say which and why.

use super::{
    LINE_HEIGHT, PALETTE, PlotResult, SIZE, axis_top, draw_frontier, draw_lines, framed, legend, legend_at,
    series_name, unavailable, wrap,
};
use crate::cli::research::Objective;
use crate::domain::analysis::Table;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// What the research figures draw, as `ipw plot` fetched it.
#[derive(Debug, Default, Clone)]
pub struct Research {
    /// The leaderboard of the plotted runs.
    pub leaderboard: Table,
    /// The routing simulation over router accuracies, when a fallback was given.
    pub routing: Option<RoutingFigure>,
    /// The weight set's name and `ipw_weighted`'s rows, when a weight set was given.
    pub weighted: Option<(String, Table)>,
}

/// The routing simulation at each router accuracy, for each objective asked.
#[derive(Debug, Clone)]
pub struct RoutingFigure {
    /// The fallback run: the baseline of the savings.
    pub fallback: String,
    /// Seed of the router's draws.
    pub seed: i32,
    /// One curve per objective.
    pub curves: Vec<RoutingCurve>,
}

/// One objective's simulation: `routing(...)`'s table at each router accuracy p.
#[derive(Debug, Clone)]
pub struct RoutingCurve {
    /// What the router minimised.
    pub objective: Objective,
    /// (p, the table), by p.
    pub points: Vec<(f64, Table)>,
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Writes the research figures into `dir`: cost against accuracy always, the routing curve
/// and weighted IPW when asked for. Returns the files written.
pub fn write_all(r: &Research, dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    let mut draw = |name: &str, f: &dyn Fn(&Path) -> PlotResult| {
        let path = dir.join(name);
        f(&path).map_err(|e| format!("drawing {}: {e}", path.display()))?;
        written.push(path);
        Ok::<(), String>(())
    };
    draw("cost_vs_accuracy.svg", &|p| cost_vs_accuracy(&r.leaderboard, p))?;
    if let Some(routing) = &r.routing {
        draw("routing.svg", &|p| routing_curve(routing, p))?;
    }
    if let Some((name, t)) = &r.weighted {
        draw("weighted_ipw.svg", &|p| weighted_ipw(name, t, p))?;
    }
    Ok(written)
}

/// A figure with `notes` wrapped under its chart, taller by as much: the whole canvas, and
/// the chart's area.
fn canvas<'a>(path: &'a Path, notes: &[String]) -> Result<(Area<'a>, Area<'a>), Box<dyn std::error::Error>> {
    let lines: Vec<String> = notes.iter().flat_map(|n| wrap(n)).collect();
    let under = if lines.is_empty() { 0 } else { lines.len() as u32 * LINE_HEIGHT as u32 + 20 };
    let root = SVGBackend::new(path, (SIZE.0, SIZE.1 + under)).into_drawing_area();
    root.fill(&WHITE)?;
    let (chart, below) = root.split_vertically(SIZE.1);
    draw_lines(&below, &lines, 5)?;
    Ok((root, chart))
}

/// A run id as notes name it: its first eight characters.
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// "a @ cpu:x (mmlu)": how a leaderboard row is named.
fn row_label(t: &Table, i: usize) -> String {
    let name = series_name(t.text(i, "model").unwrap_or("?"), t.text(i, "hardware_class").unwrap_or("?"));
    format!("{name} ({})", t.text(i, "workload").unwrap_or("?"))
}

/// The columns of `routing(...)` for an objective: the savings, the fallback's total, and
/// each run's count of results lacking the figure.
fn routing_columns(o: Objective) -> [&'static str; 3] {
    match o {
        Objective::Energy => ["energy_savings_pct", "fallback_energy_j", "lacks_energy"],
        Objective::Cost => ["cost_savings_pct", "fallback_cost", "lacks_cost"],
    }
}

/// One objective's curve: savings and accuracy kept in percent, by p, and notes naming the
/// points left out and why.
#[derive(Default)]
struct Curve {
    savings: Vec<(f64, Option<f64>)>,
    kept: Vec<(f64, Option<f64>)>,
    notes: Vec<String>,
}

fn curve(c: &RoutingCurve) -> Curve {
    let [savings, fallback_total, lacks] = routing_columns(c.objective);
    let what = c.objective.as_str();
    let mut out = Curve::default();
    let mut unknown: Vec<(String, Vec<String>)> = Vec::new();
    let mut lacking: Vec<String> = Vec::new();
    for (p, t) in &c.points {
        let s = t.number(0, savings);
        out.savings.push((*p, s));
        out.kept.push((*p, t.number(0, "accuracy_kept").map(|k| 100.0 * k)));
        if s.is_none() {
            let why = match t.number(0, fallback_total) {
                None => format!("the fallback alone lacks {what} on some query"),
                Some(0.0) => format!("the fallback alone used no {what}"),
                Some(_) => format!("a query was routed to a result lacking {what}"),
            };
            match unknown.iter_mut().find(|(w, _)| *w == why) {
                Some((_, ps)) => ps.push(format!("{p:.1}")),
                None => unknown.push((why, vec![format!("{p:.1}")])),
            }
        }
        for i in 0..t.rows.len() {
            let id = short(t.text(i, "run_id").unwrap_or("?")).to_owned();
            if t.number(i, lacks).is_some_and(|n| n > 0.0) && !lacking.contains(&id) {
                lacking.push(id);
            }
        }
    }
    for (why, ps) in unknown {
        out.notes.push(format!("Left out at p = {}, {what} savings unknown: {why}.", ps.join(", ")));
    }
    if !lacking.is_empty() {
        out.notes.push(format!("Runs with results lacking {what}: {}.", lacking.join(", ")));
    }
    let no_kept: Vec<String> = out.kept.iter().filter(|k| k.1.is_none()).map(|k| format!("{:.1}", k.0)).collect();
    if !no_kept.is_empty() {
        out.notes.push(format!(
            "Accuracy kept ({what} router) unknown at p = {}: the fallback alone answered no query correctly.",
            no_kept.join(", ")
        ));
    }
    out
}

/// The runs of known points between unknown ones, so a line never bridges a gap.
fn segments(points: &[(f64, Option<f64>)]) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for (x, y) in points {
        match y {
            Some(y) => out.last_mut().expect("one segment at least").push((*x, *y)),
            None if out.last().is_some_and(|s| !s.is_empty()) => out.push(Vec::new()),
            None => {}
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Savings (and accuracy kept) against router accuracy p, one line per objective.
fn routing_curve(r: &RoutingFigure, path: &Path) -> PlotResult {
    let title =
        format!("Hybrid routing: savings against router accuracy (fallback {}, seed {})", short(&r.fallback), r.seed);
    let curves: Vec<(Objective, Curve)> = r.curves.iter().map(|c| (c.objective, curve(c))).collect();
    let mut notes = vec![
        "Savings: 100 x (1 - routed total / the fallback's alone). Accuracy kept: the routed accuracy as a \
         percentage of the fallback's alone."
            .to_owned(),
    ];
    notes.extend(curves.iter().flat_map(|(_, c)| c.notes.iter().cloned()));
    let known: Vec<f64> =
        curves.iter().flat_map(|(_, c)| c.savings.iter().chain(&c.kept).filter_map(|p| p.1)).collect();
    if curves.iter().all(|(_, c)| c.savings.iter().all(|p| p.1.is_none())) {
        return unavailable(path, &title, &notes[1..].join(" "), "no router accuracy gave a known saving");
    }
    let (lo, hi) = known.iter().fold((0.0_f64, 100.0_f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let pad = (hi - lo) * 0.05;
    let (root, area) = canvas(path, &notes)?;
    let mut chart = framed(&area, &title, -0.02..1.02, (lo - pad)..(hi + pad))?;
    chart
        .configure_mesh()
        .x_desc("router accuracy p (how often the router makes the oracle's choice)")
        .y_desc("percent")
        .draw()?;
    for (i, (objective, c)) in curves.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let known = |ps: &[(f64, Option<f64>)]| ps.iter().filter_map(|(x, y)| Some((*x, (*y)?))).collect::<Vec<_>>();
        chart
            .draw_series(known(&c.savings).into_iter().map(|p| Circle::new(p, 4, color.filled())))?
            .label(format!("{} savings (%)", objective.as_str()))
            .legend(move |(x, y)| PathElement::new(vec![(x - 10, y), (x + 10, y)], color.stroke_width(2)));
        for s in segments(&c.savings) {
            chart.draw_series(LineSeries::new(s, color.stroke_width(2)))?;
        }
        let faint = color.mix(0.6);
        chart
            .draw_series(known(&c.kept).into_iter().map(|p| Cross::new(p, 4, faint.stroke_width(2))))?
            .label(format!("accuracy kept, {} router (%)", objective.as_str()))
            .legend(move |(x, y)| Cross::new((x, y), 4, faint.stroke_width(2)));
        for s in segments(&c.kept) {
            chart.draw_series(DashedLineSeries::new(s, 6, 4, faint.stroke_width(2)))?;
        }
    }
    // Savings rise with p and accuracy kept sits near 100%: the lower right is usually free.
    legend_at(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present()?;
    Ok(())
}

/// A leaderboard row with a cost and an accuracy.
struct Costed {
    label: String,
    cost: f64,
    accuracy: f64,
    /// Costed at an API price (a remote engine), not at the electricity price.
    api: bool,
    /// "3 of 4 queries: why", when the cost per query is over the costed queries only.
    partial: Option<String>,
}

/// The rows with a cost and an accuracy, in the first such row's currency; the currency;
/// and each row left out, with why.
fn costed(t: &Table) -> (Vec<Costed>, Option<String>, Vec<String>) {
    let (mut points, mut currency, mut left_out) = (Vec::new(), None::<String>, Vec::new());
    for i in 0..t.rows.len() {
        let label = row_label(t, i);
        let why = match (t.number(i, "cost_per_query"), t.number(i, "accuracy")) {
            (None, _) => t.text(i, "cost_null_reason").unwrap_or("no cost").to_owned(),
            (_, None) => "no scored answer, so no accuracy".to_owned(),
            (Some(cost), Some(accuracy)) => {
                let here = t.text(i, "currency").unwrap_or("an unknown currency");
                let first = currency.get_or_insert_with(|| here.to_owned());
                if first == here {
                    let (costed, queries) = (t.number(i, "costed"), t.number(i, "queries"));
                    let partial = (costed < queries).then(|| {
                        let why = t.text(i, "cost_null_reason").unwrap_or("no cost");
                        format!("{} of {} queries: {why}", costed.unwrap_or(0.0), queries.unwrap_or(0.0))
                    });
                    let api = t.text(i, "cost_basis") == Some("api");
                    points.push(Costed { label, cost, accuracy, api, partial });
                    continue;
                }
                format!("priced in {here}, not {first}")
            }
        };
        left_out.push(format!("{label}: {why}"));
    }
    (points, currency, left_out)
}

/// A tick of money: a fraction of a cent in scientific notation (a query may cost 4e-6).
fn money(x: &f64) -> String {
    match x.abs() {
        0.0 => "0".to_owned(),
        a if a < 0.01 => format!("{x:.1e}"),
        _ => format!("{}", (x * 1e4).round() / 1e4),
    }
}

/// Accuracy against cost per query, one point per leaderboard row (model x hardware class x
/// workload), with the Pareto frontier: remote rows at the API price, local rows at the
/// electricity price.
fn cost_vs_accuracy(t: &Table, path: &Path) -> PlotResult {
    const TITLE: &str = "Accuracy against cost per query";
    const BASIS: &str = "remote rows (triangles) cost their tokens at the API price, local rows (circles) the \
                         electricity they drew at the electricity price";
    let (points, currency, left_out) = costed(t);
    if points.is_empty() {
        let why = match t.rows.is_empty() {
            true => "The leaderboard has no row: no completed run among those asked.".to_owned(),
            false => format!("No row has a cost per query, so this figure is empty: {}.", left_out.join("; ")),
        };
        return unavailable(path, TITLE, &why, &format!("cost: {BASIS}"));
    }
    let currency = currency.unwrap_or_default();
    let mut notes = vec![format!("Cost in {currency}: {BASIS}.")];
    let partial: Vec<String> =
        points.iter().filter_map(|p| Some(format!("{} ({})", p.label, p.partial.as_ref()?))).collect();
    if !partial.is_empty() {
        notes.push(format!("Cost per query over the costed queries only: {}.", partial.join("; ")));
    }
    if !left_out.is_empty() {
        notes.push(format!("Left out: {}.", left_out.join("; ")));
    }
    let (root, area) = canvas(path, &notes)?;
    let top = axis_top(points.iter().map(|p| p.cost));
    let mut chart = framed(&area, &format!("{TITLE} ({currency})"), 0.0..top, 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_label_formatter(&money)
        .x_desc(format!("cost per query ({currency})"))
        .y_desc("accuracy (fraction correct)")
        .draw()?;
    for (i, p) in points.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let at = (p.cost, p.accuracy);
        match p.api {
            true => chart
                .draw_series(std::iter::once(TriangleMarker::new(at, 8, color.filled())))?
                .label(format!("{}, API price", p.label))
                .legend(move |(x, y)| TriangleMarker::new((x, y), 6, color.filled())),
            false => chart
                .draw_series(std::iter::once(Circle::new(at, 6, color.filled())))?
                .label(format!("{}, electricity", p.label))
                .legend(move |(x, y)| Circle::new((x, y), 5, color.filled())),
        };
    }
    draw_frontier(&mut chart, &points.iter().map(|p| (p.cost, p.accuracy)).collect::<Vec<_>>())?;
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

/// Why a row of `ipw_weighted` has no IPW or no weighted IPW.
fn weighted_null_reason(t: &Table, i: usize) -> &'static str {
    if t.number(i, "mean_power_w").is_none() {
        "power unknown, so no IPW"
    } else if t.number(i, "weighted_accuracy").is_none() {
        "no scored result in a category with a weight"
    } else {
        "no scored result with a measured power"
    }
}

/// (label, IPW, weighted IPW) per run with both, labelled model @ hardware class (and the run
/// where two runs share that); and each run left out, with why.
fn weighted_points(t: &Table) -> (Vec<(String, f64, f64)>, Vec<String>) {
    let names: Vec<String> = (0..t.rows.len())
        .map(|i| series_name(t.text(i, "model").unwrap_or("?"), t.text(i, "hardware_class").unwrap_or("?")))
        .collect();
    let (mut points, mut left_out) = (Vec::new(), Vec::new());
    for (i, name) in names.iter().enumerate() {
        let label = match names.iter().filter(|n| *n == name).count() {
            1 => name.clone(),
            _ => format!("{name}, run {}", short(t.text(i, "run_id").unwrap_or("?"))),
        };
        match (t.number(i, "ipw"), t.number(i, "weighted_ipw")) {
            (Some(ipw), Some(weighted)) => points.push((label, ipw, weighted)),
            _ => left_out.push(format!("{label}: {}", weighted_null_reason(t, i))),
        }
    }
    (points, left_out)
}

/// Weighted against unweighted IPW, one point per run, with the line y = x.
fn weighted_ipw(name: &str, t: &Table, path: &Path) -> PlotResult {
    let title = format!("Weighted against unweighted IPW (weights: {name})");
    let (points, left_out) = weighted_points(t);
    if points.is_empty() {
        let why = match t.rows.is_empty() {
            true => "No run among those asked has results.".to_owned(),
            false => format!("No run has both IPW and weighted IPW, so this figure is empty: {}.", left_out.join("; ")),
        };
        return unavailable(path, &title, &why, &format!("weights: {name}"));
    }
    let mut notes = vec![
        "Weighted IPW is the weighted accuracy (over the categories with a weight) per watt. Above the line \
         y = x, a run does better on the weighted tasks than on the workload as sampled."
            .to_owned(),
    ];
    if !left_out.is_empty() {
        notes.push(format!("Left out: {}.", left_out.join("; ")));
    }
    let top = axis_top(points.iter().flat_map(|p| [p.1, p.2]));
    let (root, area) = canvas(path, &notes)?;
    let mut chart = framed(&area, &title, 0.0..top, 0.0..top)?;
    chart.configure_mesh().x_desc("IPW (accuracy per watt, 1/W)").y_desc("weighted IPW (1/W)").draw()?;
    let grey = BLACK.mix(0.5);
    chart
        .draw_series(DashedLineSeries::new([(0.0, 0.0), (top, top)], 6, 4, grey.stroke_width(1)))?
        .label("y = x")
        .legend(move |(x, y)| PathElement::new(vec![(x - 10, y), (x + 10, y)], grey.stroke_width(1)));
    for (i, (label, ipw, weighted)) in points.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(std::iter::once(Circle::new((*ipw, *weighted), 6, color.filled())))?
            .label(label.clone())
            .legend(move |(x, y)| Circle::new((x, y), 5, color.filled()));
    }
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn table(rows: Vec<Value>) -> Table {
        let rows: Vec<serde_json::Map<String, Value>> =
            rows.into_iter().map(|r| r.as_object().expect("an object").clone()).collect();
        let columns = rows.first().map(|r| r.keys().cloned().collect()).unwrap_or_default();
        Table { columns, rows }
    }

    /// Every text of the SVG, joined by spaces (notes wrap over several `<text>`s).
    fn text(svg: &str) -> String {
        let doc = roxmltree::Document::parse(svg).expect("well-formed SVG");
        let texts: Vec<&str> =
            doc.descendants().filter(|n| n.has_tag_name("text")).filter_map(|n| n.text().map(str::trim)).collect();
        texts.join(" ")
    }

    fn count(svg: &str, tag: &str) -> usize {
        roxmltree::Document::parse(svg).unwrap().descendants().filter(|n| n.has_tag_name(tag)).count()
    }

    fn leaderboard_row(
        model: &str,
        hw: &str,
        cost: Option<f64>,
        accuracy: f64,
        basis: &str,
        why: Option<&str>,
    ) -> Value {
        json!({"model": model, "hardware_class": hw, "workload": "fx", "accuracy": accuracy,
               "cost_per_query": cost, "currency": cost.map(|_| "USD"), "cost_basis": basis,
               "cost_null_reason": why})
    }

    /// `routing(...)` at p: the candidate A (lacking `lacks` results' energy) and the fallback F.
    fn routed(savings: Option<f64>, fallback_total: Option<f64>, lacks: u32, kept: Option<f64>) -> Table {
        let row = |id: &str, lacks: u32| {
            json!({"run_id": id, "lacks_energy": lacks, "lacks_cost": 0, "accuracy_kept": kept,
                   "energy_savings_pct": savings, "fallback_energy_j": fallback_total,
                   "cost_savings_pct": savings.map(|s| s / 2.0), "fallback_cost": fallback_total.map(|f| f * 1e-7)})
        };
        table(vec![row("aaaaaaaa-0000-7000-8000-000000000000", lacks), row("ffffffff-0000-7000-8000-000000000000", 0)])
    }

    fn curve_of(objective: Objective, at: impl Fn(usize) -> Table) -> RoutingCurve {
        RoutingCurve { objective, points: (0..11).map(|i| (i as f64 / 10.0, at(i))).collect() }
    }

    fn weighted_row(model: &str, ipw: Option<f64>, weighted: Option<f64>, power: Option<f64>) -> Value {
        json!({"run_id": format!("{model}-run-id"), "model": model, "hardware_class": "cpu:x", "ipw": ipw,
               "weighted_ipw": weighted, "mean_power_w": power, "weighted_accuracy": weighted.map(|_| 0.5)})
    }

    #[test]
    fn research_figures_draw_their_series_the_frontier_and_say_what_they_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let research = Research {
            leaderboard: table(vec![
                leaderboard_row("big", "remote:api", Some(35e-6), 0.75, "api", None),
                leaderboard_row("small", "cpu:local", Some(4e-6), 0.5, "electricity", None),
                {
                    // Costed over 3 of its 4 queries.
                    let why = Some("energy unknown: no readable power source");
                    let mut mid = leaderboard_row("mid", "cpu:local", Some(20e-6), 0.25, "electricity", why);
                    mid["costed"] = json!(3);
                    mid["queries"] = json!(4);
                    mid
                },
                leaderboard_row(
                    "tiny",
                    "cpu:local",
                    None,
                    0.5,
                    "electricity",
                    Some("energy unknown: no readable power source"),
                ),
            ]),
            routing: Some(RoutingFigure {
                fallback: "ffffffff-0000-7000-8000-000000000000".into(),
                seed: 7,
                curves: vec![
                    // At p = 0.3 a query went to a result of A with no energy.
                    curve_of(Objective::Energy, |i| match i {
                        3 => routed(None, Some(250.0), 1, Some(0.9)),
                        _ => routed(Some(6.0 * i as f64), Some(250.0), 1, Some(0.9)),
                    }),
                    curve_of(Objective::Cost, |i| routed(Some(6.0 * i as f64), Some(250.0), 0, Some(1.0))),
                ],
            }),
            weighted: Some((
                "tasks".into(),
                table(vec![
                    weighted_row("m1", Some(0.03), Some(0.031), Some(20.0)),
                    weighted_row("m2", None, None, None),
                ]),
            )),
        };
        let files = write_all(&research, dir.path()).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.file_name().unwrap().to_str().unwrap()).collect();
        assert_eq!(names, ["cost_vs_accuracy.svg", "routing.svg", "weighted_ipw.svg"]);
        if let Ok(keep) = std::env::var("IPW_KEEP_PLOTS") {
            for f in &files {
                std::fs::copy(f, Path::new(&keep).join(f.file_name().unwrap())).unwrap();
            }
        }

        let cost = std::fs::read_to_string(&files[0]).unwrap();
        let t = text(&cost);
        for want in [
            "Accuracy against cost per query (USD)",
            "cost per query (USD)",
            "big @ remote:api (fx), API price",
            "small @ cpu:local (fx), electricity",
            "Pareto frontier",
            "Cost in USD: remote rows (triangles) cost their tokens at the API price, local rows (circles)",
            "Left out: tiny @ cpu:local (fx): energy unknown: no readable power source.",
            "Cost per query over the costed queries only: mid @ cpu:local (fx) (3 of 4 queries: energy unknown: \
             no readable power source).",
        ] {
            assert!(t.contains(want), "{want:?} in {t}");
        }
        assert!(!t.contains("mid @ cpu:local (fx): "), "a partly costed row is drawn, not left out");
        // The frontier: small (4e-6, 0.5) and big (35e-6, 0.75), ringed; mid is beaten.
        assert_eq!(count(&cost, "circle"), 2 + 2 + 2, "two local points, their legend marks, two rings");
        assert!(count(&cost, "polygon") >= 2, "the remote row's triangle and its legend mark");

        let routing = std::fs::read_to_string(&files[1]).unwrap();
        let t = text(&routing);
        for want in [
            "Hybrid routing: savings against router accuracy (fallback ffffffff, seed 7)",
            "router accuracy p",
            "energy savings (%)",
            "cost savings (%)",
            "accuracy kept, energy router (%)",
            "Left out at p = 0.3, energy savings unknown: a query was routed to a result lacking energy.",
            "Runs with results lacking energy: aaaaaaaa.",
        ] {
            assert!(t.contains(want), "{want:?} in {t}");
        }
        assert_eq!(count(&routing, "circle"), 10 + 11, "a point per known saving, none for p = 0.3");

        let weighted = std::fs::read_to_string(&files[2]).unwrap();
        let t = text(&weighted);
        for want in [
            "Weighted against unweighted IPW (weights: tasks)",
            "y = x",
            "m1 @ cpu:x",
            "weighted IPW (1/W)",
            "Left out: m2 @ cpu:x: power unknown, so no IPW.",
        ] {
            assert!(t.contains(want), "{want:?} in {t}");
        }
    }

    #[test]
    fn without_costs_savings_or_weighted_ipw_the_research_figures_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let research = Research {
            leaderboard: table(vec![leaderboard_row(
                "big",
                "remote:api",
                None,
                0.75,
                "api",
                Some("no price of model big when it ran (ipw price set)"),
            )]),
            routing: Some(RoutingFigure {
                fallback: "ffffffff-0000-7000-8000-000000000000".into(),
                seed: 0,
                curves: vec![curve_of(Objective::Energy, |_| routed(None, None, 0, Some(1.0)))],
            }),
            weighted: Some(("tasks".into(), table(vec![weighted_row("m", Some(0.03), None, Some(20.0))]))),
        };
        let files = write_all(&research, dir.path()).unwrap();
        let t = text(&std::fs::read_to_string(&files[0]).unwrap());
        assert!(
            t.contains("No row has a cost per query, so this figure is empty: big @ remote:api (fx): no price of model big when it ran (ipw price set)."),
            "{t}"
        );
        assert!(t.contains("cost: remote rows (triangles) cost their tokens at the API price"), "{t}");
        let t = text(&std::fs::read_to_string(&files[1]).unwrap());
        assert!(
            t.contains("Left out at p = 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, energy savings unknown: the fallback alone lacks energy on some query."),
            "{t}"
        );
        let t = text(&std::fs::read_to_string(&files[2]).unwrap());
        assert!(
            t.contains("No run has both IPW and weighted IPW, so this figure is empty: m @ cpu:x: no scored result in a category with a weight."),
            "{t}"
        );
    }

    #[test]
    fn without_a_fallback_or_weights_only_cost_against_accuracy_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_all(&Research::default(), dir.path()).unwrap();
        assert_eq!(files, [dir.path().join("cost_vs_accuracy.svg")]);
        let t = text(&std::fs::read_to_string(&files[0]).unwrap());
        assert!(t.contains("The leaderboard has no row: no completed run among those asked."), "{t}");
    }

    #[test]
    fn a_line_never_bridges_an_unknown_point() {
        let s = segments(&[(0.0, Some(1.0)), (0.1, None), (0.2, Some(2.0)), (0.3, Some(3.0)), (0.4, None)]);
        assert_eq!(s, [vec![(0.0, 1.0)], vec![(0.2, 2.0), (0.3, 3.0)]]);
        assert!(segments(&[(0.0, None)]).is_empty());
    }

    #[test]
    fn money_ticks_keep_a_fraction_of_a_cent() {
        let ticks: Vec<String> = [0.0, 5e-6, 3.5e-5, 0.25, 12.0].iter().map(money).collect();
        assert_eq!(ticks, ["0", "5.0e-6", "3.5e-5", "0.25", "12"]);
    }
}
