//! `/fleet`: every agent with its state, lease, load and power, kept live by server-sent
//! events (`/events/fleet`) rather than reloads.

use crate::dashboard::auth::Viewer;
use crate::dashboard::events::{self, Update};
use crate::dashboard::layout::page;
use crate::dashboard::{Dashboard, Failure};
use crate::domain::fleet::AgentLive;
use crate::store;
use axum::extract::State;
use axum::response::IntoResponse;
use chrono::Utc;
use maud::{Markup, html};
use std::sync::Arc;

/// The element the live updates replace.
const REGION: &str = "fleet-agents";

/// The fleet page.
pub async fn show(State(d): State<Arc<Dashboard>>, viewer: Viewer) -> Result<Markup, Failure> {
    let agents = store::fleet::live(&d.ready()?.pool).await?;
    let content = html! {
        h1 { "Fleet" }
        p { "Every enrolled agent. Power is each source's latest reading (the last second before the agent's heartbeat); "
            "n/a: the source has no reading, or the agent has none. Stale: no heartbeat for three intervals." }
        div #(REGION) data-live="/events/fleet" aria-live="polite" { (agents_table(&agents)) }
    };
    Ok(page("Fleet", Some("/fleet"), Some(&viewer), content))
}

/// The live region's stream: the table again whenever it changes.
pub async fn events(State(d): State<Arc<Dashboard>>, _viewer: Viewer) -> Result<impl IntoResponse, Failure> {
    let pool = d.ready()?.pool.clone();
    Ok(events::live(move || {
        let pool = pool.clone();
        async move {
            let agents = store::fleet::live(&pool).await?;
            Ok::<_, store::Error>(Update { id: REGION.to_owned(), html: agents_table(&agents), last: false })
        }
    }))
}

/// The agents as a table, one row each.
pub fn agents_table(agents: &[AgentLive]) -> Markup {
    let now = Utc::now();
    html! {
        @if agents.is_empty() { p { "No agent has joined yet (ipw token create, then ipw-agent join)." } }
        @else {
            div.table-wrap { table #fleet {
                caption { (agents.len()) " agents" }
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Labels" } th scope="col" { "Hardware class" }
                    th scope="col" { "Accelerators" } th scope="col" { "Status" } th scope="col" { "Last seen" }
                    th scope="col" { "Current lease" } th scope="col" { "In flight" } th scope="col" { "Queries/s" }
                    th scope="col" { "Power" }
                } }
                tbody { @for a in agents { (agent_row(a, now)) } }
            } }
        }
    }
}

fn agent_row(a: &AgentLive, now: chrono::DateTime<Utc>) -> Markup {
    let stale = a.is_stale(now);
    html! {
        tr data-agent=(a.name) {
            th scope="row" { (a.name) }
            td { @for (k, v) in &a.labels { span.label { (k) "=" (v) } " " } }
            td { (a.hardware_class) }
            td { @if a.accelerators.is_empty() { "none" } @else {
                @for x in &a.accelerators { (x.vendor) " " (x.model) " (" (x.memory_bytes >> 30) " GiB)" br; }
            } }
            td { (a.status.as_str()) @if stale { " " span.stale { "stale" } } }
            td { @match a.last_seen_at { Some(t) => time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S UTC")) }, None => "never" } }
            td { @if a.leases.is_empty() { "none" } @else {
                @for l in &a.leases { a href=(format!("/runs/{}", l.run_id)) { (l.model) " shard " (l.shard_index) } br; }
            } }
            td.num { @match &a.reported { Some(r) => (r.in_flight), None => "n/a" } }
            td.num { @match a.reported.as_ref().and_then(|r| r.queries_per_s) { Some(q) => (format!("{q:.2}")), None => "n/a" } }
            td { @match &a.reported {
                Some(r) if !r.power.is_empty() => {
                    @for p in &r.power {
                        (p.name) " (" (p.scope) "): " @match p.watts { Some(w) => (format!("{w:.1} W")), None => "n/a" } br;
                    }
                }
                _ => "n/a: no power source",
            } }
        }
    }
}
