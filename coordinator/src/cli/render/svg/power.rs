//! Power over time for each agent of a run: watts from each source's cumulative energy, with
//! the time queries were running and the steady-state window shaded. For the dashboard's run page.

use super::{PALETTE, PlotResult, SIZE, axis_top, framed, legend, unavailable};
use crate::domain::telemetry::PowerOverTime;
use plotters::prelude::*;
use std::path::Path;

const TITLE: &str = "Power over time";

/// Watts between consecutive samples of a cumulative-joules series, at each interval's midpoint.
/// An interval whose counter went backwards (a reset) has no reading rather than a negative one.
pub fn watts(series: &[(f64, f64)]) -> Vec<(f64, f64)> {
    series
        .windows(2)
        .filter_map(|w| {
            let (dt, de) = (w[1].0 - w[0].0, w[1].1 - w[0].1);
            (dt > 0.0 && de >= 0.0).then(|| ((w[0].0 + w[1].0) / 2.0, de / dt))
        })
        .collect()
}

/// Intervals merged where they overlap, in order: the time any query ran.
pub fn busy(mut windows: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    windows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut merged: Vec<(f64, f64)> = Vec::new();
    for (from, to) in windows {
        match merged.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => merged.push((from, to)),
        }
    }
    merged
}

/// Draws the run's sessions into `path`: one line per (agent, source), on one time axis from
/// the earliest session's start. Says why when no session has a series.
pub fn power_over_time(sessions: &[PowerOverTime], path: &Path) -> PlotResult {
    let origin = sessions.iter().filter_map(|s| s.clock_zero).min();
    let offset = |s: &PowerOverTime| match (origin, s.clock_zero) {
        (Some(o), Some(z)) => (z - o).as_seconds_f64(),
        _ => 0.0,
    };
    let mut lines: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for s in sessions {
        for (source, series) in &s.sources {
            let w: Vec<(f64, f64)> = watts(series).into_iter().map(|(t, p)| (t + offset(s), p)).collect();
            if !w.is_empty() {
                lines.push((format!("{}: {source}", s.agent), w));
            }
        }
    }
    if lines.is_empty() {
        let why: Vec<&str> = sessions.iter().filter_map(|s| s.null_reason.as_deref()).collect();
        let why = if why.is_empty() { "no power series was recorded for this run".to_owned() } else { why.join("; ") };
        return unavailable(path, TITLE, &why, "power: none");
    }
    let points = lines.iter().flat_map(|(_, w)| w.iter());
    let t_max = points.clone().map(|p| p.0).fold(0.0, f64::max).max(1.0);
    let w_max = axis_top(points.map(|p| p.1));
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart =
        framed(&root, &format!("{TITLE} (light: queries running; darker: steady window)"), 0.0..t_max, 0.0..w_max)?;
    chart.configure_mesh().x_desc("time since the run's first session started (s)").y_desc("power (W)").draw()?;
    for s in sessions {
        let o = offset(s);
        let shade =
            |(a, b): (f64, f64), alpha: f64| Rectangle::new([(a + o, 0.0), (b + o, w_max)], BLUE.mix(alpha).filled());
        chart.draw_series(busy(s.queries.clone()).into_iter().map(|q| shade(q, 0.08)))?;
        chart.draw_series(s.steady.into_iter().map(|q| shade(q, 0.18)))?;
    }
    for (i, (name, w)) in lines.into_iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(w, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x - 10, y), (x + 10, y)], color.stroke_width(2)));
    }
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(agent: &str, sources: Vec<(String, Vec<(f64, f64)>)>, null_reason: Option<&str>) -> PowerOverTime {
        PowerOverTime {
            session_id: uuid::Uuid::nil(),
            agent: agent.into(),
            clock_zero: None,
            sources,
            queries: vec![(1.0, 3.0), (2.0, 4.0), (6.0, 7.0)],
            steady: Some((1.5, 3.5)),
            null_reason: null_reason.map(str::to_owned),
        }
    }

    #[test]
    fn watts_are_energy_differences_over_time_and_a_reset_reads_nothing() {
        let series = [(0.0, 0.0), (1.0, 20.0), (3.0, 60.0), (4.0, 5.0), (5.0, 25.0)];
        assert_eq!(watts(&series), vec![(0.5, 20.0), (2.0, 20.0), (4.5, 20.0)]);
    }

    #[test]
    fn overlapping_query_windows_merge() {
        assert_eq!(busy(vec![(2.0, 4.0), (1.0, 3.0), (6.0, 7.0)]), vec![(1.0, 4.0), (6.0, 7.0)]);
    }

    #[test]
    fn the_figure_names_each_agent_and_source_or_says_why_there_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("power.svg");
        let rapl = vec![("package-0 (cpu-package)".to_owned(), vec![(0.0, 0.0), (1.0, 20.0), (2.0, 40.0)])];
        power_over_time(&[session("agent-a", rapl, None)], &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("agent-a: package-0 (cpu-package)") && svg.contains("power (W)"), "{svg}");
        power_over_time(&[session("agent-b", vec![], Some("no readable power source"))], &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("no readable power source"), "{svg}");
    }
}
