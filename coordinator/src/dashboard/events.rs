//! Server-sent events for live regions: a page marks an element `data-live=URL`, the script
//! opens an `EventSource` on it, and each event replaces the element's content with HTML the
//! server rendered (escaped by maud). One stream reads the database every few seconds and
//! sends only what changed; it ends when the coordinator shuts down or the region is final.

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use maud::Markup;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

/// How often a live region is read again.
pub const EVERY: Duration = Duration::from_secs(2);

/// One update of a live region: the element's id, its new content, and whether it is final
/// (the stream then ends: a finished run does not change).
#[derive(Debug, Clone)]
pub struct Update {
    /// The element whose content is replaced.
    pub id: String,
    /// Its new content.
    pub html: Markup,
    /// No later update will differ.
    pub last: bool,
}

/// The SSE response: `read` is called every [`EVERY`]; an update is sent when its HTML
/// differs from the last one sent, and the stream ends after a `last` update, or when `read`
/// fails (the browser reconnects, and the page says it is stale meanwhile).
pub fn live<F, Fut, E>(read: F) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Update, E>> + Send + 'static,
    E: std::fmt::Display + 'static,
{
    let stream = async_stream(read);
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn async_stream<F, Fut, E>(read: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Update, E>> + Send + 'static,
    E: std::fmt::Display + 'static,
{
    futures::stream::unfold((read, None::<String>, false), |(read, sent, done)| async move {
        if done {
            return None;
        }
        if sent.is_some() {
            tokio::time::sleep(EVERY).await;
        }
        loop {
            let update = match read().await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(error = %e, "a live region could not be read");
                    return None;
                }
            };
            let html = update.html.into_string();
            if sent.as_deref() != Some(html.as_str()) || update.last {
                let data = serde_json::json!({ "id": update.id, "html": html, "last": update.last }).to_string();
                let event = Event::default().data(data);
                return Some((Ok(event), (read, Some(html), update.last)));
            }
            tokio::time::sleep(EVERY).await;
        }
    })
}
