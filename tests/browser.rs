//! The headless-Chromium client the dashboard tests use (`support/browser.rs`), against a tiny
//! site served here: a page whose external script follows an event stream (SSE) to "100%" and
//! sorts a table on a header click, a login form that sets an HttpOnly cookie, and a page whose
//! inline script its CSP `script-src 'self'` blocks. Screenshots land in
//! `target/test-artefacts/browser/<test>/`. `scripts/test` provides Chromium
//! (`IPW_TEST_CHROMIUM`); without it these tests fail, saying how to install it.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use ipw_e2e::browser::{Browser, artefact_dir};
use std::convert::Infallible;
use std::path::Path;
use std::time::Duration;
use tokio_stream::StreamExt as _;

const INDEX: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>browser test</title><script src="/app.js" defer></script></head>
<body><h1>Progress <span id="p">0%</span></h1>
<table id="t"><thead><tr><th><button data-col="0">Name</button></th><th><button data-col="1">IPW</button></th></tr></thead>
<tbody><tr><td>beta</td><td>0.5</td></tr><tr><td>alpha</td><td>2.25</td></tr><tr><td>gamma</td><td>10</td></tr></tbody></table>
</body></html>"#;

/// Follows /events into #p, closing the stream at 100% (or EventSource would reconnect and
/// start again); sorts #t by a header's column, numbers as numbers.
const APP_JS: &str = r#"
const src = new EventSource('/events');
src.onmessage = (e) => { document.getElementById('p').textContent = e.data; if (e.data === '100%') src.close(); };
for (const b of document.querySelectorAll('#t th button')) {
  b.addEventListener('click', () => {
    const col = Number(b.dataset.col), body = document.querySelector('#t tbody');
    const key = (r) => { const t = r.cells[col].textContent; return isNaN(t) ? t : Number(t); };
    const rows = [...body.rows].sort((x, y) => (key(x) < key(y) ? -1 : key(x) > key(y) ? 1 : 0));
    body.append(...rows);
    b.parentElement.setAttribute('aria-sort', 'ascending');
  });
}
"#;

const LOGIN: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>login</title></head>
<body><form id="login" method="post" action="/login"><input name="user"><button>Log in</button></form></body></html>"#;

const INLINE: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>csp</title>
<script>document.title = 'inline ran';</script></head><body>inline</body></html>"#;

const CSP: &str = "default-src 'self'; script-src 'self'";

fn html(csp: &str, body: &'static str) -> Response {
    ([(header::CONTENT_SECURITY_POLICY, csp.to_string())], axum::response::Html(body)).into_response()
}

/// Serves the test site on a free port; returns its origin (`http://127.0.0.1:PORT`).
async fn serve() -> anyhow::Result<String> {
    let app = axum::Router::new()
        .route("/", get(|| async { html(CSP, INDEX) }))
        .route("/app.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], APP_JS) }))
        .route("/events", get(events))
        .route("/login", get(|| async { html(CSP, LOGIN) }).post(login))
        .route("/whoami", get(whoami))
        .route("/inline", get(|| async { html(CSP, INLINE) }))
        // Chromium asks for it on every page; a 404 would be logged as a console error.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let origin = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(origin)
}

/// 0% to 100% in five events, 150 ms apart.
async fn events() -> Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>> {
    let steps = tokio_stream::iter([0, 25, 50, 75, 100]).throttle(Duration::from_millis(150));
    Sse::new(steps.map(|p| Ok(Event::default().data(format!("{p}%")))))
}

/// `user=NAME` sets an HttpOnly session cookie and redirects to /whoami.
async fn login(body: String) -> Response {
    let Some(user) = body.strip_prefix("user=").filter(|u| u.chars().all(|c| c.is_ascii_alphanumeric())) else {
        return (StatusCode::BAD_REQUEST, "want user=NAME").into_response();
    };
    let cookie = format!("session={user}; Path=/; HttpOnly; SameSite=Strict");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/whoami")).into_response()
}

/// Echoes the Cookie header the browser sent.
async fn whoami(headers: HeaderMap) -> Response {
    let cookie = headers.get(header::COOKIE).and_then(|v| v.to_str().ok()).unwrap_or("none");
    let cookie: String = cookie.chars().filter(|c| c.is_ascii_alphanumeric() || "=; ".contains(*c)).collect();
    let body = format!(
        r#"<!doctype html><html><head><title>whoami</title></head><body><p id="who">{cookie}</p></body></html>"#
    );
    ([(header::CONTENT_SECURITY_POLICY, CSP)], axum::response::Html(body)).into_response()
}

/// A PNG's width, from its IHDR chunk; fails if `path` is not a PNG.
fn png_width(path: &Path) -> anyhow::Result<u32> {
    let bytes = std::fs::read(path)?;
    anyhow::ensure!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 24, "{} is not a PNG", path.display());
    Ok(u32::from_be_bytes(bytes[16..20].try_into()?))
}

/// The page follows the event stream to 100% without reloading, a header click sorts the
/// table, screenshots come out at 1280 and 390 px, and every request went to the test server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_updates_live_sorts_and_stays_on_its_origin() -> anyhow::Result<()> {
    let origin = serve().await?;
    let browser = Browser::launch().await?;
    let page = browser.new_page(1280, 800).await?;
    page.goto(&format!("{origin}/")).await?;
    assert_eq!(page.eval("document.title").await?, "browser test");
    page.eval("window.__noReload = 1").await?;
    let navigations = page.navigations();
    let progress = page.wait_for("document.getElementById('p').textContent === '100%'", Duration::from_secs(10)).await;
    progress.map_err(|e| e.context(format!("page errors: {:?}", page.console_errors())))?;
    assert_eq!(page.eval("window.__noReload").await?, 1, "the page reloaded");
    assert_eq!(page.navigations(), navigations, "the main frame navigated while following the stream");

    let column = "[...document.querySelectorAll('#t tbody tr')].map(r => r.cells[1].textContent)";
    assert_eq!(page.eval(column).await?, serde_json::json!(["0.5", "2.25", "10"]));
    page.click("#t th button[data-col='0']").await?;
    let names = "[...document.querySelectorAll('#t tbody tr')].map(r => r.cells[0].textContent)";
    assert_eq!(page.eval(names).await?, serde_json::json!(["alpha", "beta", "gamma"]));
    assert!(page.click("#no-such-thing").await.is_err(), "a click on nothing is an error");

    let dir = artefact_dir("live_page")?;
    for (width, height) in [(1280, 800), (390, 844)] {
        page.set_viewport(width, height).await?;
        let shot = dir.join(format!("index-{width}.png"));
        page.screenshot(&shot).await?;
        assert_eq!(png_width(&shot)?, width, "{}", shot.display());
        assert_eq!(page.eval("window.innerWidth").await?, width, "the page is laid out at {width} px");
    }

    let urls = page.requested_urls();
    for path in ["/", "/app.js", "/events"] {
        assert!(urls.contains(&format!("{origin}{path}")), "{path} was requested: {urls:?}");
    }
    assert!(urls.iter().all(|u| u.starts_with(&format!("{origin}/"))), "a request left {origin}: {urls:?}");
    assert_eq!(page.console_errors(), Vec::<String>::new());
    assert_eq!(page.csp_violations(), Vec::<String>::new());
    Ok(())
}

/// A login form posts to the server, which sets an HttpOnly cookie that the browser then
/// sends; JavaScript cannot read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_form_sets_a_cookie_the_browser_sends() -> anyhow::Result<()> {
    let origin = serve().await?;
    let browser = Browser::launch().await?;
    let page = browser.new_page(1280, 800).await?;
    page.goto(&format!("{origin}/login")).await?;
    page.fill("input[name=user]", "alice").await?;
    page.submit("#login").await?;
    assert_eq!(page.eval("location.pathname").await?, "/whoami");
    assert_eq!(page.eval("document.getElementById('who').textContent").await?, "session=alice");
    assert_eq!(page.eval("document.cookie").await?, "", "the session cookie is HttpOnly");
    let cookies = page.cookies().await?;
    let session = cookies.iter().find(|c| c["name"] == "session").expect("the session cookie is set");
    assert_eq!((&session["value"], &session["httpOnly"]), (&"alice".into(), &true.into()));

    page.set_cookie(&origin, "extra", "1").await?;
    page.goto(&format!("{origin}/whoami")).await?;
    let sent = page.eval("document.getElementById('who').textContent").await?;
    assert!(sent.as_str().is_some_and(|s| s.contains("session=alice") && s.contains("extra=1")), "{sent}");
    page.screenshot(&artefact_dir("login")?.join("whoami-1280.png")).await?;
    assert_eq!(page.console_errors(), Vec::<String>::new());
    Ok(())
}

/// An inline script under `script-src 'self'` is blocked, and the page records the violation:
/// the check the dashboard tests rely on to prove their pages have none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csp_violation_is_recorded() -> anyhow::Result<()> {
    let origin = serve().await?;
    let browser = Browser::launch().await?;
    let page = browser.new_page(1280, 800).await?;
    page.goto(&format!("{origin}/inline")).await?;
    assert_eq!(page.eval("document.title").await?, "csp", "the inline script was blocked");
    // The report may trail the load event.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while page.csp_violations().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let violations = page.csp_violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations[0].contains("script-src"), "{violations:?}");
    assert!(page.console_errors().iter().any(|e| e.contains("Content Security Policy")));
    drop(browser);
    let gone = page.eval("1").await.expect_err("the browser is gone");
    assert!(format!("{gone:#}").contains("the Browser was dropped"), "{gone:#}");
    Ok(())
}

/// A missing binary, or one that is not Chromium, is a clear error rather than a hang.
#[tokio::test]
async fn a_missing_or_broken_chromium_is_a_clear_error() {
    let missing = Browser::launch_at(Path::new("/nonexistent/chromium")).await.err().expect("no such binary");
    let text = format!("{missing:#}");
    assert!(text.contains("IPW_TEST_CHROMIUM") && text.contains("apt-get install"), "{text}");
    let broken = Browser::launch_at(Path::new("/bin/true")).await.err().expect("/bin/true speaks no CDP");
    let text = format!("{broken:#}");
    assert!(text.contains("closed its DevTools pipe"), "{text}");
}
