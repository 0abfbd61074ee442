//! The page layout (head, skip link, navigation, the logout form), the embedded stylesheet
//! and script, and the security headers every dashboard response carries.

use super::auth::Viewer;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use maud::{DOCTYPE, Markup, html};
use std::sync::LazyLock;

/// The Content-Security-Policy of every dashboard response: first-party scripts, styles
/// and requests only, no inline script or style, never framed.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Where the stylesheet is served.
pub const CSS_PATH: &str = "/static/dashboard.css";
/// Where the script is served.
pub const JS_PATH: &str = "/static/dashboard.js";

const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");

/// A version of each asset for its URL (`?v=`), so a new build is fetched at once while an
/// unchanged one is cached for a year.
static CSS_VERSION: LazyLock<String> = LazyLock::new(|| version(CSS));
static JS_VERSION: LazyLock<String> = LazyLock::new(|| version(JS));

fn version(asset: &str) -> String {
    hex::encode(&crate::infra::auth::sha256(asset.as_bytes())[..6])
}

/// The sections of the navigation, in order: (path, label).
pub const NAV: [(&str, &str); 5] = [
    ("/fleet", "Fleet"),
    ("/runs", "Runs"),
    ("/sweeps", "Sweeps"),
    ("/leaderboard", "Leaderboard"),
    ("/compare", "Compare"),
];

/// A whole page: `content` under the navigation (marking `current`, a path of [`NAV`]),
/// with the logout form when someone is logged in.
pub fn page(title: &str, current: Option<&str>, viewer: Option<&Viewer>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · ipw-fleet" }
                // No favicon: without this the browser asks for /favicon.ico on every page.
                link rel="icon" href="data:,";
                link rel="stylesheet" href=(format!("{CSS_PATH}?v={}", *CSS_VERSION));
                script src=(format!("{JS_PATH}?v={}", *JS_VERSION)) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    a.brand href="/" { "ipw-fleet" }
                    @if let Some(viewer) = viewer {
                        nav aria-label="Sections" {
                            ul {
                                @for (href, label) in NAV {
                                    li { a href=(href) aria-current=[(current == Some(href)).then_some("page")] { (label) } }
                                }
                            }
                        }
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(viewer.csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main #main tabindex="-1" { (content) }
            }
        }
    }
}

/// A research table (see `domain::analysis`) with every column, in the SQL's order; NULL
/// reads `n/a`, arrays are joined.
pub fn table(t: &crate::domain::analysis::Table) -> Markup {
    html! {
        div.table-wrap { table {
            thead { tr { @for c in &t.columns { th scope="col" { (c) } } } }
            tbody { @for r in &t.rows { tr { @for c in &t.columns {
                td { (crate::cli::render::readable(r.get(c).unwrap_or(&serde_json::Value::Null))) }
            } } } }
        } }
    }
}

/// A page with one message, for errors: no navigation, a link home.
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    let content = html! {
        h1 { (title) }
        p { (text) }
        p { a href="/" { "Back to the dashboard" } }
    };
    (status, page(title, None, None, content)).into_response()
}

/// Paths no route serves (sections not built yet among them).
pub async fn not_found(uri: http::Uri) -> Response {
    message(StatusCode::NOT_FOUND, "Not found", &format!("Nothing is served at {}.", uri.path()))
}

/// The stylesheet, cached for a year (its URL changes with it).
pub async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

/// The script, cached for a year (its URL changes with it).
pub async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers =
        [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")];
    (headers, body).into_response()
}

/// Sets the security headers on every dashboard response, and keeps pages out of caches
/// unless the handler said otherwise (the assets).
pub async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_no_inline_script_or_style() {
        assert!(!CSP.contains("unsafe-inline") && !CSP.contains("unsafe-eval"), "{CSP}");
        assert!(CSP.contains("script-src 'self'") && CSP.contains("frame-ancestors 'none'"), "{CSP}");
    }

    #[test]
    fn a_page_has_a_language_a_viewport_a_skip_link_and_no_inline_script() {
        let html = page("T", None, None, html! { p { "<b>" } }).into_string();
        assert!(html.starts_with("<!DOCTYPE html><html lang=\"en\">"), "{html}");
        assert!(html.contains(r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#), "{html}");
        assert!(html.contains(r##"<a class="skip" href="#main">"##), "{html}");
        assert!(html.contains("&lt;b&gt;"), "text is escaped: {html}");
        assert!(html.contains(&format!(r#"<script src="{JS_PATH}?v="#)), "{html}");
        assert!(!html.contains("<script>") && !html.contains("style="), "no inline script or style: {html}");
        assert!(!html.contains("/logout"), "no logout form without a viewer: {html}");
    }
}
