//! `/`: who is logged in, and the sections of the dashboard.

use crate::dashboard::auth::Viewer;
use crate::dashboard::layout::{NAV, page};
use maud::{Markup, html};

/// What each section shows, in the order of [`NAV`].
const ABOUT: [&str; 5] = [
    "Every agent: its state, its lease, its queries per second and its power, live.",
    "Each run's progress, shards, errors and provenance.",
    "Sweeps in progress and on a schedule.",
    "IPW and accuracy per (model, hardware), sortable and filtered, with a CSV export.",
    "Two (model, hardware) points side by side: attribution and coverage.",
];

/// The home page.
pub async fn show(viewer: Viewer) -> Markup {
    let expires = viewer.expires();
    let content = html! {
        h1 { "ipw-fleet dashboard" }
        p {
            "Logged in with the " (viewer.session.kind.name()) " token "
            strong { (if viewer.name.is_empty() { "(no description)" } else { &viewer.name }) }
            " until " time datetime=(expires.to_rfc3339()) { (expires.format("%Y-%m-%d %H:%M UTC")) } "."
        }
        ul.sections {
            @for ((href, label), about) in NAV.iter().zip(ABOUT) {
                li { h2 { a href=(href) { (label) } } p { (about) } }
            }
        }
    };
    page("Dashboard", None, Some(&viewer), content)
}
