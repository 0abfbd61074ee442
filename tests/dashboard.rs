//! The dashboard's door: a viewer token or an admin credential logs in for a signed,
//! HttpOnly, SameSite=Strict cookie; nothing else does, and the cookie opens nothing once
//! forged or once its token expired or was revoked. A viewer token joins no agent and calls
//! no admin method. Every HTML response carries a CSP without inline script. All over raw
//! HTTP against a real coordinator process.

use ipw_coordinator::cli::Admin;
use ipw_coordinator::dashboard::layout::CSP;
use ipw_e2e::{CoordinatorProcess, HttpResponse, free_addr, fresh_database_url, http_request};
use ipw_proto::v1::{CreateTokenRequest, CreateTokenResponse, ListAgentsRequest, ListTokensRequest, RevokeRequest};
use std::net::SocketAddr;
use std::time::Duration;
use tonic::Code;

/// A coordinator serving its dashboard on `ops`, with an admin client and a pool.
struct Dashboard {
    coordinator: CoordinatorProcess,
    ops: SocketAddr,
    admin: Admin,
    pool: sqlx::PgPool,
    _dir: tempfile::TempDir,
}

impl Dashboard {
    async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let database_url = fresh_database_url().await?;
        let ops = free_addr()?;
        let flags = [format!("--metrics-listen={ops}")];
        let coordinator =
            CoordinatorProcess::start_with(dir.path().join("coordinator"), &database_url, "10m", &flags, &[]).await?;
        // The dashboard answers 503 until the coordinator has reached the database; the gRPC
        // port listens a moment before the CA that admin clients read is written.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let admin = loop {
            if get(ops, "/login", None).await.map(|r| r.status).ok() == Some(200)
                && let Ok(admin) = coordinator.admin().await
            {
                break admin;
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "the dashboard did not serve /login in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let pool = sqlx::PgPool::connect(&database_url).await?;
        Ok(Self { coordinator, ops, admin, pool, _dir: dir })
    }

    async fn viewer_token(&mut self, ttl: Duration) -> anyhow::Result<CreateTokenResponse> {
        let request = CreateTokenRequest {
            ttl_seconds: ttl.as_secs(),
            viewer: true,
            description: "e2e".into(),
            ..Default::default()
        };
        Ok(self.admin.create_token(request).await?.into_inner())
    }

    fn admin_token(&self) -> anyhow::Result<String> {
        let file = ipw_coordinator::infra::paths::admin_token_file(&self.coordinator.data_dir);
        Ok(std::fs::read_to_string(file)?.trim().to_owned())
    }
}

/// Every dashboard response carries the security headers, and HTML the exact policy.
fn checked(r: HttpResponse) -> HttpResponse {
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert_eq!(csp, CSP, "{r:?}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{r:?}");
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{r:?}");
    if r.header("content-type").is_some_and(|t| t.starts_with("text/html")) {
        assert!(!r.body.contains("<script>") && !r.body.contains(" style="), "inline script or style: {}", r.body);
    }
    r
}

async fn get(ops: SocketAddr, path: &str, session: Option<&str>) -> anyhow::Result<HttpResponse> {
    let cookie = session.map(|s| format!("ipw_session={s}"));
    let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("Cookie", c.as_str())).collect();
    Ok(checked(http_request(ops, "GET", path, &headers, "").await?))
}

/// The value a `Set-Cookie` of the response gives cookie `name`, and the whole header.
fn set_cookie<'a>(r: &'a HttpResponse, name: &str) -> Option<(&'a str, &'a str)> {
    r.all("set-cookie").into_iter().find_map(|c| {
        let value = c.strip_prefix(name)?.strip_prefix('=')?;
        Some((value.split(';').next().unwrap_or_default(), c))
    })
}

/// `name="csrf" value="…"` of the page's form.
fn form_csrf(html: &str) -> Option<String> {
    let at = html.find(r#"name="csrf" value=""#)? + r#"name="csrf" value=""#.len();
    Some(html[at..].split('"').next()?.to_owned())
}

/// A login form's CSRF token, from GET /login: the cookie and the hidden field agree.
async fn login_csrf(ops: SocketAddr) -> anyhow::Result<String> {
    let form = get(ops, "/login", None).await?;
    assert_eq!(form.status, 200);
    let (cookie, header) = set_cookie(&form, "ipw_csrf").expect("GET /login sets the CSRF cookie");
    assert!(header.contains("HttpOnly") && header.contains("SameSite=Strict"), "{header}");
    assert_eq!(form_csrf(&form.body).as_deref(), Some(cookie), "the field is the cookie");
    Ok(cookie.to_owned())
}

/// POST /login with `token` and these extra headers; `csrf` goes in both cookie and field.
async fn post_login(
    ops: SocketAddr,
    token: &str,
    csrf: Option<&str>,
    extra: &[(&str, &str)],
) -> anyhow::Result<HttpResponse> {
    let cookie = csrf.map(|c| format!("ipw_csrf={c}"));
    let origin = format!("http://{ops}");
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded"), ("Origin", origin.as_str())];
    headers.extend(cookie.iter().map(|c| ("Cookie", c.as_str())));
    headers.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    headers.extend_from_slice(extra);
    let body = match csrf {
        Some(c) => format!("token={token}&csrf={c}"),
        None => format!("token={token}"),
    };
    Ok(checked(http_request(ops, "POST", "/login", &headers, &body).await?))
}

/// Logs in with `token` through the form; the session cookie's value, or the refusal.
async fn login(ops: SocketAddr, token: &str) -> anyhow::Result<Result<String, HttpResponse>> {
    let csrf = login_csrf(ops).await?;
    let r = post_login(ops, token, Some(&csrf), &[]).await?;
    match set_cookie(&r, "ipw_session") {
        Some((value, _)) if r.status == 303 => Ok(Ok(value.to_owned())),
        _ => Ok(Err(r)),
    }
}

fn redirected_to_login(r: &HttpResponse) -> bool {
    r.status == 303 && r.header("location") == Some("/login")
}

/// A viewer logs in and the cookie opens the dashboard, until the token expires or is
/// revoked; a forged cookie and no cookie open nothing; logout needs the page's token.
#[tokio::test]
async fn a_viewer_token_opens_the_dashboard_until_it_expires_or_is_revoked() -> anyhow::Result<()> {
    let mut d = Dashboard::start().await?;
    let ops = d.ops;
    let token = d.viewer_token(Duration::from_secs(3600)).await?;
    assert!(token.viewer && token.token.len() == 64, "{token:?}");
    assert_eq!(token.dashboard_login_url, format!("http://{ops}/login"));

    // No cookie: pages go to the login form, data endpoints answer 401; health stays open.
    assert!(redirected_to_login(&get(ops, "/", None).await?));
    assert_eq!(get(ops, "/api/session", None).await?.status, 401);
    assert_eq!(http_request(ops, "GET", "/healthz", &[], "").await?.status, 200);

    let csrf = login_csrf(ops).await?;
    let r = post_login(ops, &token.token, Some(&csrf), &[]).await?;
    assert_eq!((r.status, r.header("location")), (303, Some("/")), "{r:?}");
    let (session, header) = set_cookie(&r, "ipw_session").expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(header.split("; ").any(|a| a == attribute), "{attribute} in {header}");
    }
    assert!(!header.contains("Secure"), "plain HTTP without --dashboard-secure-cookies: {header}");
    let max_age: i64 = header.split("; ").find_map(|a| a.strip_prefix("Max-Age=")?.parse().ok()).expect("Max-Age");
    assert!((3500..=3600).contains(&max_age), "the session ends with the token: {max_age}");
    let session = session.to_owned();

    let home = get(ops, "/", Some(&session)).await?;
    assert_eq!(home.status, 200, "{home:?}");
    assert!(home.header("content-type").is_some_and(|t| t.starts_with("text/html")));
    for link in ["/fleet", "/runs", "/sweeps", "/leaderboard", "/compare"] {
        assert!(home.body.contains(&format!(r#"href="{link}""#)), "{link} in {}", home.body);
    }
    assert!(home.body.contains(r#"<html lang="en">"#) && home.body.contains(r##"href="#main""##));
    assert!(home.body.contains(r#"<script src="/static/dashboard.js?v="#), "{}", home.body);
    let me = get(ops, "/api/session", Some(&session)).await?;
    assert_eq!(me.status, 200);
    let me: serde_json::Value = serde_json::from_str(&me.body)?;
    assert_eq!((me["kind"].as_str(), me["name"].as_str()), (Some("viewer"), Some("e2e")));
    let js = get(ops, "/static/dashboard.js", None).await?;
    assert!(js.status == 200 && js.header("content-type").is_some_and(|t| t.starts_with("text/javascript")));
    let missing = get(ops, "/nothing-here", Some(&session)).await?;
    assert_eq!(missing.status, 404, "a path nothing serves is a clean 404");

    // A forged cookie: one byte of the signature changed.
    let mut forged = session.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged)?;
    assert!(redirected_to_login(&get(ops, "/", Some(&forged)).await?));
    assert_eq!(get(ops, "/api/session", Some(&forged)).await?.status, 401);

    // Logout needs the page's token; then the browser's cookie is cleared.
    let cookie = format!("ipw_session={session}");
    let origin = format!("http://{ops}");
    let headers = [("Cookie", cookie.as_str()), ("Origin", origin.as_str())];
    assert_eq!(http_request(ops, "POST", "/logout", &headers, "csrf=nope").await?.status, 403);
    let body = format!("csrf={}", form_csrf(&home.body).expect("the logout form's token"));
    let out = checked(http_request(ops, "POST", "/logout", &headers, &body).await?);
    assert!(redirected_to_login(&out), "{out:?}");
    assert!(set_cookie(&out, "ipw_session").is_some_and(|(v, h)| v.is_empty() && h.contains("Max-Age=0")));

    // The token expires: the cookie minted before is refused, and so is a new login.
    sqlx::query("UPDATE viewer_tokens SET created_at = now() - interval '2 hours', expires_at = now() - interval '1 second' WHERE id = $1::uuid")
        .bind(&token.token_id)
        .execute(&d.pool)
        .await?;
    assert!(redirected_to_login(&get(ops, "/", Some(&session)).await?), "an expired token's session is over");
    assert_eq!(get(ops, "/api/session", Some(&session)).await?.status, 401);
    let refused = login(ops, &token.token).await?.expect_err("an expired token cannot log in");
    assert_eq!(refused.status, 401, "{refused:?}");

    // Revoked through `ipw token revoke`: its live session ends at the next request.
    let other = d.viewer_token(Duration::from_secs(600)).await?;
    let session = login(ops, &other.token).await?.map_err(|r| anyhow::anyhow!("login refused: {r:?}"))?;
    assert_eq!(get(ops, "/", Some(&session)).await?.status, 200);
    let revoked = d.admin.revoke_token(RevokeRequest { id: other.token_id, reason: "test".into() }).await?;
    assert!(revoked.into_inner().viewer);
    assert!(redirected_to_login(&get(ops, "/", Some(&session)).await?));
    Ok(())
}

/// Only viewer tokens and admin credentials log in; a viewer token joins no agent and calls
/// no admin method.
#[tokio::test]
async fn a_join_token_cannot_log_in_and_a_viewer_token_cannot_join_or_administer() -> anyhow::Result<()> {
    let mut d = Dashboard::start().await?;
    let ops = d.ops;
    let viewer = d.viewer_token(Duration::from_secs(600)).await?.token;
    let join = d.admin.create_token(CreateTokenRequest { max_uses: 5, ..Default::default() }).await?.into_inner();

    let refused = login(ops, &join.token).await?.expect_err("a join token cannot log in");
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("a join token cannot log in"), "{}", refused.body);
    assert!(set_cookie(&refused, "ipw_session").is_none());

    let admin = login(ops, &d.admin_token()?).await?.map_err(|r| anyhow::anyhow!("admin login refused: {r:?}"))?;
    let me: serde_json::Value = serde_json::from_str(&get(ops, "/api/session", Some(&admin)).await?.body)?;
    assert_eq!((me["kind"].as_str(), me["name"].as_str()), (Some("admin"), Some("initial")));

    let trust = ipw_agent::join::Trust::Pinned(d.coordinator.fingerprint()?);
    let e = ipw_agent::join::join(&d.coordinator.url, &trust, &viewer, "viewer-box", Default::default())
        .await
        .expect_err("a viewer token cannot join");
    assert!(format!("{e:#}").contains("join token not recognised"), "{e:#}");
    let agents: i64 = sqlx::query_scalar("SELECT count(*) FROM agents").fetch_one(&d.pool).await?;
    assert_eq!(agents, 0);

    let mut as_viewer = ipw_coordinator::cli::connect(&d.coordinator.url, Some(&d.coordinator.tls()?), &viewer).await?;
    let e = as_viewer.list_agents(ListAgentsRequest {}).await.expect_err("a viewer is no admin");
    assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());
    let e = as_viewer.create_token(CreateTokenRequest { viewer: true, ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "a viewer cannot make itself more tokens: {}", e.message());

    let e = d.admin.create_token(CreateTokenRequest { viewer: true, max_uses: 3, ..Default::default() }).await;
    let e = e.expect_err("a viewer token has no uses");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("drop --uses"), "{}", e.message());
    let listed = d.admin.list_tokens(ListTokensRequest {}).await?.into_inner().tokens;
    let kinds: Vec<bool> = listed.iter().map(|t| t.viewer).collect();
    assert_eq!(kinds, [true, false], "both tokens, oldest first: {listed:?}");
    Ok(())
}

/// A login posted without the form's token, or from another site, is refused before any
/// token is checked; failed logins from one address are limited.
#[tokio::test]
async fn login_needs_our_form_and_origin_and_failures_are_rate_limited() -> anyhow::Result<()> {
    let mut d = Dashboard::start().await?;
    let ops = d.ops;
    let viewer = d.viewer_token(Duration::from_secs(600)).await?.token;
    let csrf = login_csrf(ops).await?;

    let no_csrf = post_login(ops, &viewer, None, &[]).await?;
    assert_eq!(no_csrf.status, 403, "{no_csrf:?}");
    let cookie = format!("ipw_csrf={csrf}");
    let field_only = post_login(ops, &viewer, None, &[("Cookie", &cookie)]).await?;
    assert_eq!(field_only.status, 403, "the cookie without the field");
    let foreign = post_login(ops, &viewer, Some(&csrf), &[("Origin", "http://evil.example")]).await?;
    assert_eq!(foreign.status, 403);
    let cross = post_login(ops, &viewer, Some(&csrf), &[("Sec-Fetch-Site", "cross-site")]).await?;
    assert_eq!(cross.status, 403);
    for r in [&no_csrf, &field_only, &foreign, &cross] {
        assert!(set_cookie(r, "ipw_session").is_none(), "{r:?}");
    }

    // Successes do not count (a browser posting our form under `Referrer-Policy: no-referrer`
    // sends `Origin: null`); ten failures do, and then even the right token waits.
    let browser = [("Origin", "null"), ("Sec-Fetch-Site", "same-origin")];
    for _ in 0..3 {
        assert_eq!(post_login(ops, &viewer, Some(&csrf), &browser).await?.status, 303);
    }
    let wrong = "0".repeat(64);
    for i in 0..ipw_coordinator::dashboard::LOGIN_BURST {
        assert_eq!(post_login(ops, &wrong, Some(&csrf), &[]).await?.status, 401, "failure {i}");
    }
    let limited = post_login(ops, &viewer, Some(&csrf), &[]).await?;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert!(limited.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)));
    Ok(())
}

/// The same CSV cell by cell; numbers equal to within rounding, since PostgreSQL may sum a
/// column in another order for another plan of the same query.
fn same_csv(got: &str, want: &str) {
    let (got, want): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
    assert_eq!(got.len(), want.len(), "rows: {got:?} against {want:?}");
    for (g, w) in got.iter().zip(&want) {
        let (gc, wc): (Vec<&str>, Vec<&str>) = (g.split(',').collect(), w.split(',').collect());
        assert_eq!(gc.len(), wc.len(), "{g} against {w}");
        for (a, b) in gc.iter().zip(&wc) {
            match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(x), Ok(y)) => assert!((x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1.0), "{a} against {b}"),
                _ => assert_eq!(a, b, "{g} against {w}"),
            }
        }
    }
}

/// A run started with the page open: two metered agents (FIXTURE powercap counters, so IPW
/// exists) share it, and a second model runs after it.
async fn start_two_agent_runs(
    d: &mut Dashboard,
    dir: &std::path::Path,
) -> anyhow::Result<(uuid::Uuid, uuid::Uuid, Vec<tokio::process::Child>, ipw_e2e::PowercapFixture)> {
    let slice = dir.join("slice.jsonl");
    let text = std::fs::read_to_string(ipw_e2e::mmlu_pro())?;
    std::fs::write(&slice, text.lines().take(100).collect::<Vec<_>>().join("\n"))?;
    ipw_coordinator::cli::workloads::import_workload(&mut d.admin, &slice, "slice").await?;
    let run = |model: &str, sample: u32| ipw_proto::v1::CreateRunRequest {
        workload: "slice".into(),
        model: model.into(),
        sample,
        seed: 3,
        concurrency: 2,
        shard_size: 2,
        repetitions: 1,
        params: Some(ipw_proto::v1::GenerationParams { max_tokens: 16, temperature: 0.0, top_p: 1.0 }),
        ..Default::default()
    };
    let first = d.admin.create_run(run("SmolLM2-135M-Instruct", 12)).await?.into_inner();
    let second = d.admin.create_run(run("smol-b", 8)).await?.into_inner();
    let request = CreateTokenRequest { ttl_seconds: 600, max_uses: 2, auto_approve: true, ..Default::default() };
    let join = d.admin.create_token(request).await?.into_inner();
    let trust = ipw_agent::join::Trust::Pinned(join.ca_cert_hash.clone());
    let powercap = ipw_e2e::PowercapFixture::start(dir, 20.0)?;
    let mut children = Vec::new();
    for name in ["agent-a", "agent-b"] {
        let agent = ipw_agent::join::join(&d.coordinator.url, &trust, &join.token, name, Default::default()).await?;
        let mut cmd = ipw_e2e::metered_agent_service_process(dir, &agent, &powercap.root)?;
        cmd.args(["--model-alias", "smol-b"]).stdout(std::process::Stdio::null());
        children.push(cmd.spawn()?);
    }
    Ok((uuid::Uuid::parse_str(&first.run_id)?, uuid::Uuid::parse_str(&second.run_id)?, children, powercap))
}

/// In headless Chromium: a viewer logs in; the fleet page lists both agents; the run's
/// progress reaches 100% with no reload; the leaderboard sorts by IPW; its CSV is the view's
/// rows; no request leaves the coordinator and no CSP rule is broken. Screenshots of every page
/// at 1280 and 390 px land in `target/test-artefacts/browser/dashboard/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_watches_a_two_agent_run_in_a_real_browser() -> anyhow::Result<()> {
    use ipw_e2e::browser::{Browser, artefact_dir};
    let mut d = Dashboard::start().await?;
    let dir = tempfile::tempdir()?;
    let token = d.viewer_token(Duration::from_secs(3600)).await?.token;
    let origin = format!("http://{}", d.ops);
    let browser = Browser::launch().await?;
    let page = browser.new_page(1280, 900).await?;
    let shots = artefact_dir("dashboard")?;

    page.goto(&format!("{origin}/login")).await?;
    page.fill("#token", &token).await?;
    page.submit("form[action='/login']").await?;
    assert_eq!(page.eval("location.pathname").await?, "/", "logged in, at home");

    let (first, second, mut agents, _powercap) = start_two_agent_runs(&mut d, dir.path()).await?;
    page.goto(&format!("{origin}/runs/{first}")).await?;
    let loads = page.navigations();
    let done = "document.querySelector('#run-status .run-state')?.textContent === 'completed' \
                && document.querySelector('#run-status .pct')?.textContent === '100%'";
    page.wait_for(done, Duration::from_secs(180)).await?;
    assert_eq!(page.navigations(), loads, "the progress moved to 100% without a reload");
    page.screenshot(&shots.join("run-live-1280.png")).await?;
    page.goto(&format!("{origin}/runs/{first}")).await?;
    page.wait_for("[...document.images].every(i => i.complete)", Duration::from_secs(30)).await?;
    page.screenshot(&shots.join("run-1280.png")).await?;

    page.goto(&format!("{origin}/fleet")).await?;
    let names = "[...document.querySelectorAll('#fleet tbody th')].map(e => e.textContent).sort().join(',')";
    assert_eq!(
        page.wait_for(&format!("{names} === 'agent-a,agent-b' && {names}"), Duration::from_secs(10)).await?,
        "agent-a,agent-b"
    );
    page.screenshot(&shots.join("fleet-1280.png")).await?;

    ipw_e2e::wait_for_results(&d.pool, second, 8).await?;
    let second_done = "SELECT status = 'completed' FROM runs WHERE id = $1";
    for _ in 0..100 {
        if sqlx::query_scalar::<_, bool>(second_done).bind(second).fetch_one(&d.pool).await? {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    page.goto(&format!("{origin}/leaderboard")).await?;
    page.click("th[data-column='ipw'] a").await?;
    let sorted = "document.readyState === 'complete' \
                  && document.querySelector('#leaderboard caption')?.textContent.includes('sorted by ipw descending')";
    page.wait_for(sorted, Duration::from_secs(10)).await?;
    let ipw: Vec<f64> = serde_json::from_value(
        page.eval("[...document.querySelectorAll('#leaderboard tbody td[data-column=ipw]')].map(e => parseFloat(e.textContent))")
            .await?,
    )?;
    assert_eq!(ipw.len(), 2, "two models on one hardware class");
    assert!(ipw.windows(2).all(|w| w[0] >= w[1]), "sorted by IPW, highest first: {ipw:?}");
    page.screenshot(&shots.join("leaderboard-1280.png")).await?;

    let csv = page.eval("fetch('/leaderboard.csv').then(r => r.text())").await?;
    let view = ipw_coordinator::store::research::leaderboard(&d.pool, &[]).await?;
    let want = ipw_coordinator::cli::render::csv::analysis(&view);
    same_csv(csv.as_str().unwrap_or_default(), &want);
    assert_eq!(csv.as_str().unwrap_or_default().lines().count(), 3, "a header and two rows");

    // Compare the two models on their one hardware class: attribution and coverage appear.
    page.goto(&format!("{origin}/compare")).await?;
    page.eval("document.querySelector('select[name=a]').selectedIndex = 0; document.querySelector('select[name=b]').selectedIndex = 1")
        .await?;
    page.submit("form[action='/compare']").await?;
    let compared =
        "document.body.textContent.includes('model_factor') && document.body.textContent.includes('best-of-local')";
    page.wait_for(compared, Duration::from_secs(10)).await?;
    page.screenshot(&shots.join("compare-1280.png")).await?;

    for (path, name) in [("/", "home"), ("/runs", "runs"), ("/sweeps", "sweeps")] {
        page.goto(&format!("{origin}{path}")).await?;
        page.screenshot(&shots.join(format!("{name}-1280.png"))).await?;
    }
    page.set_viewport(390, 844).await?;
    for (path, name) in
        [("/fleet".to_owned(), "fleet"), (format!("/runs/{first}"), "run"), ("/leaderboard".to_owned(), "leaderboard")]
    {
        page.goto(&format!("{origin}{path}")).await?;
        let overflow = page.eval("document.documentElement.scrollWidth > window.innerWidth + 1").await?;
        assert_eq!(overflow, false, "{path} fits 390 px without scrolling the page sideways");
        page.screenshot(&shots.join(format!("{name}-390.png"))).await?;
    }

    // data: URLs are the browser's own (the date input's icon): they reach no host.
    let foreign: Vec<String> =
        page.requested_urls().into_iter().filter(|u| !u.starts_with(&origin) && !u.starts_with("data:")).collect();
    assert!(foreign.is_empty(), "requests beyond the coordinator: {foreign:?}");
    assert!(page.csp_violations().is_empty(), "{:?}", page.csp_violations());
    assert!(page.console_errors().is_empty(), "{:?}", page.console_errors());
    for a in &mut agents {
        a.kill().await?;
    }
    Ok(())
}
