//! `/compare`: two (model, hardware class) points on one workload side by side: `attribution`
//! (the IPW ratio split into a model and a hardware factor, with the cells never measured named)
//! and `coverage` (the share each answered, and that either did).

use crate::dashboard::auth::Viewer;
use crate::dashboard::layout::{page, table};
use crate::dashboard::{Dashboard, Failure};
use crate::store::research::{self, Point};
use axum::extract::State;
use http::Uri;
use maud::{Markup, html};
use std::sync::Arc;

/// `model @ hardware class`, as the pickers write a point.
fn encode(p: &Point) -> String {
    format!("{} @ {}", p.model, p.hardware_class)
}

fn decode(s: &str) -> Option<Point> {
    let (model, hardware_class) = s.split_once(" @ ")?;
    Some(Point { model: model.to_owned(), hardware_class: hardware_class.to_owned() })
}

/// The compare page: pickers, then both analyses once two points and a workload are chosen.
pub async fn show(State(d): State<Arc<Dashboard>>, viewer: Viewer, uri: Uri) -> Result<Markup, Failure> {
    let pool = &d.ready()?.pool;
    let (mut a, mut b, mut workload) = (None, None, None);
    for (k, v) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "a" => a = decode(&v),
            "b" => b = decode(&v),
            "workload" if !v.is_empty() => workload = Some(v.into_owned()),
            _ => {}
        }
    }
    let points = research::points(pool).await?;
    let chosen = match (&a, &b, &workload) {
        (Some(a), Some(b), Some(w)) => {
            Some((research::attribution(pool, a, b, w).await?, research::coverage(pool, a, b, w).await?))
        }
        _ => None,
    };
    let content = html! {
        h1 { "Compare two points" }
        form.filters method="get" action="/compare" {
            (picker("a", "Point A", &points, a.as_ref()))
            (picker("b", "Point B", &points, b.as_ref()))
            label { "Workload "
                select name="workload" {
                    @for w in workloads(&points) { option selected[workload.as_deref() == Some(w)] { (w) } }
                }
            }
            button type="submit" { "Compare" }
        }
        @if let Some((attribution, coverage)) = &chosen {
            h2 { "Attribution" }
            p { "IPW(B) / IPW(A) = model factor × hardware factor (two-factor Shapley over the 2×2 grid of A's and B's models on A's and B's hardware). "
                "A cell never measured leaves both factors empty and is named under missing." }
            (table(attribution))
            h2 { "Coverage" }
            p { "Over the queries both points' latest completed runs scored: the share each answered correctly, and the share either did (best-of-local)." }
            (table(coverage))
        } @else {
            p { "Choose two points and a workload." }
        }
    };
    Ok(page("Compare", Some("/compare"), Some(&viewer), content))
}

fn workloads(points: &[(Point, String)]) -> Vec<&str> {
    let mut w: Vec<&str> = points.iter().map(|(_, w)| w.as_str()).collect();
    w.dedup();
    w
}

fn picker(name: &str, label: &str, points: &[(Point, String)], chosen: Option<&Point>) -> Markup {
    let mut options: Vec<&Point> = points.iter().map(|(p, _)| p).collect();
    options.sort_by_key(|p| encode(p));
    options.dedup();
    html! {
        label { (label) " "
            select name=(name) {
                @for p in options { option selected[chosen == Some(p)] { (encode(p)) } }
            }
        }
    }
}
