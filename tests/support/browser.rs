//! Headless Chromium for the browser tests, driven by a minimal Chrome DevTools Protocol client.
//!
//! The binary comes from `IPW_TEST_CHROMIUM`, which `scripts/test` sets (installing Debian's
//! `chromium` when it is missing). The protocol runs over `--remote-debugging-pipe`: the
//! browser reads NUL-terminated JSON on its fd 3 and writes on its fd 4. Messages stay
//! `serde_json::Value`, so fields a newer Chromium adds cannot break the client.
//!
//! Each [`Page`] records what a test asserts on: every URL it requested, console errors and
//! uncaught exceptions, and Content-Security-Policy violations. Screenshots belong in
//! [`artefact_dir`], `target/test-artefacts/browser/<test>/`.

use anyhow::{Context, anyhow, bail};
use base64::prelude::{BASE64_STANDARD, Engine as _};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::unix::pipe;
use tokio::sync::{oneshot, watch};

/// How long one protocol call may take, and a page load.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Why a call failed when Chromium has gone.
const PIPE_CLOSED: &str = "Chromium closed its DevTools pipe (it exited or crashed)";
/// How often [`Page::wait_for`] re-evaluates its condition.
const POLL: Duration = Duration::from_millis(100);

const INSTALL: &str = "run the tests with scripts/test, which installs Chromium, or install it \
     (Debian/Ubuntu, as root: apt-get install -y --no-install-recommends chromium fonts-liberation) \
     and set IPW_TEST_CHROMIUM to its path";

/// Flags for a headless run as root in a container with no outside network: no sandbox (root),
/// no GPU, no /dev/shm (small in containers), no background fetches (refused here, and noise).
const FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--remote-debugging-pipe",
];

/// Where a browser test leaves its artefacts (screenshots): `target/test-artefacts/browser/<test>/`,
/// created if missing.
pub fn artefact_dir(test: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test binary> -> target
    let target = exe.ancestors().nth(3).context("tests run from target/<profile>/deps")?;
    let dir = target.join("test-artefacts/browser").join(test);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// What one page has done, from its protocol events.
#[derive(Default)]
struct PageLog {
    requested: Vec<String>,
    errors: Vec<String>,
    csp: Vec<String>,
    /// Main-frame documents committed, and the latest one's loader.
    navigations: u64,
    main_loader: Option<String>,
    /// Loaders whose `load` event fired.
    loaded: HashSet<String>,
    crashed: bool,
}

impl PageLog {
    fn record(&mut self, method: &str, p: &Value) {
        match method {
            "Network.requestWillBeSent" => {
                self.requested.extend(p["request"]["url"].as_str().map(String::from));
            }
            "Runtime.exceptionThrown" => {
                let d = &p["exceptionDetails"];
                let text = d["exception"]["description"].as_str().or(d["text"].as_str()).unwrap_or("exception");
                self.errors.push(format!("uncaught: {text}"));
            }
            "Runtime.consoleAPICalled" if p["type"] == "error" => {
                let args = p["args"].as_array().into_iter().flatten();
                let parts: Vec<String> = args
                    .map(|a| a["value"].as_str().map(String::from).unwrap_or_else(|| a["description"].to_string()))
                    .collect();
                self.errors.push(format!("console.error: {}", parts.join(" ")));
            }
            "Log.entryAdded" => {
                let e = &p["entry"];
                let text = format!("{} ({})", e["text"].as_str().unwrap_or(""), e["url"].as_str().unwrap_or(""));
                if text.contains("Content Security Policy") {
                    self.csp.push(text.clone());
                }
                if e["level"] == "error" {
                    self.errors.push(format!("{}: {text}", e["source"].as_str().unwrap_or("log")));
                }
            }
            "Page.frameNavigated" if p["frame"].get("parentId").is_none() => {
                self.navigations += 1;
                self.main_loader = p["frame"]["loaderId"].as_str().map(String::from);
            }
            "Page.lifecycleEvent" if p["name"] == "load" => {
                self.loaded.extend(p["loaderId"].as_str().map(String::from));
            }
            "Inspector.targetCrashed" => {
                self.crashed = true;
                self.errors.push("the page crashed".into());
            }
            _ => {}
        }
    }
}

type Reply = Result<Value, String>;

#[derive(Default)]
struct Shared {
    pending: HashMap<u64, oneshot::Sender<Reply>>,
    pages: HashMap<String, PageLog>,
    /// Why the pipe closed, once it has.
    closed: Option<String>,
}

/// One protocol connection: calls out, replies and events in (read by one task).
struct Conn {
    writer: tokio::sync::Mutex<pipe::Sender>,
    shared: Mutex<Shared>,
    next_id: AtomicU64,
    /// Bumped on every recorded event, so waiters re-check.
    events: watch::Sender<u64>,
    stderr: PathBuf,
}

impl Conn {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `method` (to a page's session, or to the browser) and waits for its result.
    async fn call(&self, method: &str, params: Value, session: Option<&str>) -> anyhow::Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut shared = self.lock();
            if let Some(why) = &shared.closed {
                bail!("{method}: {why}");
            }
            shared.pending.insert(id, tx);
        }
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = s.into();
        }
        let mut bytes = serde_json::to_vec(&msg)?;
        bytes.push(0);
        let sent = async {
            self.writer.lock().await.write_all(&bytes).await?;
            anyhow::Ok(rx.await)
        };
        match tokio::time::timeout(CALL_TIMEOUT, sent).await {
            Ok(Ok(Ok(Ok(result)))) => Ok(result),
            Ok(Ok(Ok(Err(error)))) => bail!("{method} failed: {error}"),
            Ok(Ok(Err(_))) => bail!("{method}: {}", self.closed_reason()),
            // The pipe may break before the reader has seen it close: the same cause either way.
            Ok(Err(e))
                if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
            {
                bail!("{method}: {PIPE_CLOSED}")
            }
            Ok(Err(e)) => bail!("{method}: writing to Chromium: {e}; {}", self.closed_reason()),
            Err(_) => {
                self.lock().pending.remove(&id);
                bail!("{method}: no answer from Chromium in {CALL_TIMEOUT:?}")
            }
        }
    }

    fn closed_reason(&self) -> String {
        self.lock().closed.clone().unwrap_or_else(|| "Chromium dropped the call".into())
    }

    fn dispatch(&self, mut msg: Value) {
        let mut shared = self.lock();
        if let Some(id) = msg["id"].as_u64() {
            let reply = match msg.get("error") {
                Some(e) => Err(e["message"].as_str().map(String::from).unwrap_or_else(|| e.to_string())),
                None => Ok(msg["result"].take()),
            };
            if let Some(tx) = shared.pending.remove(&id) {
                let _ = tx.send(reply);
            }
        } else if let (Some(method), Some(session)) = (msg["method"].as_str(), msg["sessionId"].as_str()) {
            shared.pages.entry(session.to_string()).or_default().record(method, &msg["params"]);
            drop(shared);
            self.events.send_modify(|n| *n += 1);
        }
    }

    /// The pipe is gone: fails every call in flight and every later one, naming why (the
    /// first reason stays).
    fn close(&self, why: String) {
        if self.lock().closed.is_some() {
            return;
        }
        let tail = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect();
        let why = format!("{why}; Chromium's stderr ends with:\n{}", tail.join("\n"));
        let mut shared = self.lock();
        shared.closed = Some(why.clone());
        for (_, tx) in shared.pending.drain() {
            let _ = tx.send(Err(why.clone()));
        }
        drop(shared);
        self.events.send_modify(|n| *n += 1);
    }

    /// Reads NUL-terminated messages until the browser closes its end.
    async fn read_loop(self: Arc<Self>, mut rx: pipe::Receiver) {
        let (mut buf, mut scanned) = (Vec::new(), 0);
        let mut chunk = vec![0u8; 64 * 1024];
        let why = loop {
            match rx.read(&mut chunk).await {
                Ok(0) => break PIPE_CLOSED.to_string(),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => break format!("reading Chromium's DevTools pipe: {e}"),
            }
            while let Some(end) = buf[scanned..].iter().position(|&b| b == 0).map(|i| scanned + i) {
                match serde_json::from_slice::<Value>(&buf[..end]) {
                    Ok(msg) => self.dispatch(msg),
                    Err(e) => eprintln!("chromium sent a message that is not JSON ({e}); ignored"),
                }
                buf.drain(..=end);
                scanned = 0;
            }
            scanned = buf.len();
        };
        self.close(why);
    }
}

/// A headless Chromium process, killed (with its whole process group) on drop.
pub struct Browser {
    conn: Arc<Conn>,
    child: tokio::process::Child,
    reader: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

/// Pipe ends for the child, moved onto its fds 3 and 4 between fork and exec.
fn child_fds(command: &mut tokio::process::Command, reads: &OwnedFd, writes: &OwnedFd) {
    let (reads, writes) = (reads.as_raw_fd(), writes.as_raw_fd());
    // SAFETY: only async-signal-safe calls (fcntl, dup2, prctl) run between fork and exec.
    unsafe {
        command.pre_exec(move || {
            use nix::libc::{F_DUPFD_CLOEXEC, dup2, fcntl};
            // Copies above fd 4 first: a pipe end may itself be fd 3 or 4. dup2 clears
            // close-on-exec on its target, so only fds 3 and 4 reach Chromium.
            let r = fcntl(reads, F_DUPFD_CLOEXEC, 10);
            let w = fcntl(writes, F_DUPFD_CLOEXEC, 10);
            if r < 0 || w < 0 || dup2(r, 3) < 0 || dup2(w, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // A test process that dies without dropping the Browser takes Chromium with it.
            nix::sys::prctl::set_pdeathsig(Some(nix::sys::signal::Signal::SIGKILL)).map_err(std::io::Error::from)
        });
    }
}

impl Browser {
    /// Starts the Chromium at `IPW_TEST_CHROMIUM`.
    pub async fn launch() -> anyhow::Result<Browser> {
        let path =
            std::env::var_os("IPW_TEST_CHROMIUM").ok_or_else(|| anyhow!("IPW_TEST_CHROMIUM is unset: {INSTALL}"))?;
        Self::launch_at(Path::new(&path)).await
    }

    /// Starts the Chromium at `path` with a fresh profile and checks that it answers.
    pub async fn launch_at(path: &Path) -> anyhow::Result<Browser> {
        use nix::fcntl::OFlag;
        let profile = tempfile::tempdir()?;
        let stderr = profile.path().join("chromium.stderr");
        // Close-on-exec from the start, so processes other tests spawn never inherit them.
        let (child_reads, to_browser) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let (from_browser, child_writes) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let mut command = tokio::process::Command::new(path);
        command
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().join("profile").display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr)?)
            .process_group(0)
            .kill_on_drop(true);
        child_fds(&mut command, &child_reads, &child_writes);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start Chromium at {} (IPW_TEST_CHROMIUM): {INSTALL}", path.display()))?;
        drop((child_reads, child_writes));
        let conn = Arc::new(Conn {
            writer: tokio::sync::Mutex::new(pipe::Sender::from_owned_fd(to_browser)?),
            shared: Mutex::default(),
            next_id: AtomicU64::new(1),
            events: watch::Sender::new(0),
            stderr,
        });
        let reader = tokio::spawn(conn.clone().read_loop(pipe::Receiver::from_owned_fd(from_browser)?));
        let browser = Browser { conn, child, reader, _profile: profile };
        browser
            .conn
            .call("Browser.getVersion", json!({}), None)
            .await
            .with_context(|| format!("{} did not answer as Chromium", path.display()))?;
        Ok(browser)
    }

    /// Opens a tab with a `width` x `height` viewport, recording its requests, console
    /// errors and CSP violations from the start. Tabs share cookies, like a user's.
    pub async fn new_page(&self, width: u32, height: u32) -> anyhow::Result<Page> {
        let target = self.conn.call("Target.createTarget", json!({"url": "about:blank"}), None).await?;
        let target = target["targetId"].as_str().context("Target.createTarget gave no targetId")?;
        let attached =
            self.conn.call("Target.attachToTarget", json!({"targetId": target, "flatten": true}), None).await?;
        let session = attached["sessionId"].as_str().context("Target.attachToTarget gave no sessionId")?;
        let page = Page { conn: self.conn.clone(), session: session.to_string(), width: Mutex::new(width) };
        for domain in ["Page", "Network", "Runtime", "Log"] {
            page.call(&format!("{domain}.enable"), json!({})).await?;
        }
        page.call("Page.setLifecycleEventsEnabled", json!({"enabled": true})).await?;
        page.set_viewport(width, height).await?;
        Ok(page)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: the renderer and GPU processes too.
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
        self.reader.abort();
        // Pages that outlive their browser fail at once rather than time out.
        self.conn.close("the Browser was dropped".into());
    }
}

/// One tab of a [`Browser`].
pub struct Page {
    conn: Arc<Conn>,
    session: String,
    /// The viewport's width, for full-page screenshots.
    width: Mutex<u32>,
}

/// A JavaScript string literal holding `s`.
fn js_str(s: &str) -> String {
    Value::from(s).to_string()
}

impl Page {
    async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.conn.call(method, params, Some(&self.session)).await
    }

    fn log<T>(&self, f: impl FnOnce(&PageLog) -> T) -> T {
        let shared = self.conn.lock();
        f(shared.pages.get(&self.session).unwrap_or(&PageLog::default()))
    }

    /// Waits (at most `timeout`) until `done` holds for this page's log; `what` names it in
    /// the error.
    async fn wait_log(&self, what: &str, timeout: Duration, done: impl Fn(&PageLog) -> bool) -> anyhow::Result<()> {
        let mut events = self.conn.events.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(why) = self.conn.lock().closed.clone() {
                bail!("waiting for {what}: {why}");
            }
            if self.log(|l| l.crashed) {
                bail!("waiting for {what}: the page crashed");
            }
            if self.log(&done) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, events.changed()).await.is_err() {
                bail!("waited {timeout:?} for {what}");
            }
        }
    }

    /// Navigates to `url` and waits for its `load` event.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        let nav = self.call("Page.navigate", json!({"url": url})).await?;
        if let Some(error) = nav["errorText"].as_str() {
            bail!("navigating to {url}: {error}");
        }
        // No loader: a same-document navigation, which loads nothing.
        let Some(loader) = nav["loaderId"].as_str() else { return Ok(()) };
        self.wait_log(&format!("{url} to load"), LOAD_TIMEOUT, |l| l.loaded.contains(loader)).await
    }

    /// Evaluates `js` in the page (awaiting a promise) and returns its value (null for
    /// undefined); a thrown exception is an error.
    pub async fn eval(&self, js: &str) -> anyhow::Result<Value> {
        let r = self
            .call("Runtime.evaluate", json!({"expression": js, "returnByValue": true, "awaitPromise": true}))
            .await?;
        if let Some(d) = r.get("exceptionDetails") {
            let text = d["exception"]["description"].as_str().or(d["text"].as_str()).unwrap_or("exception");
            bail!("evaluating `{js}`: {text}");
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// Re-evaluates `js` until its value is truthy and returns that value; fails after
    /// `timeout` with the last value (or error) seen.
    pub async fn wait_for(&self, js: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match self.eval(js).await {
                Ok(v) if truthy(&v) => return Ok(v),
                Ok(v) => v.to_string(),
                Err(e) => format!("{e:#}"),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!("`{js}` was still {last} after {timeout:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Clicks the first element matching `selector`; fails if there is none.
    pub async fn click(&self, selector: &str) -> anyhow::Result<()> {
        let js = format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return false; e.click(); return true; }})()",
            js_str(selector)
        );
        anyhow::ensure!(self.eval(&js).await? == true, "no element matches {selector}");
        Ok(())
    }

    /// Types `value` into the input matching `selector` (firing `input` and `change`).
    pub async fn fill(&self, selector: &str, value: &str) -> anyhow::Result<()> {
        let js = format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return false; e.value = {};
               e.dispatchEvent(new Event('input', {{bubbles: true}}));
               e.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()",
            js_str(selector),
            js_str(value)
        );
        anyhow::ensure!(self.eval(&js).await? == true, "no element matches {selector}");
        Ok(())
    }

    /// Submits the form matching `selector` as its submit button would, and waits until the
    /// document it leads to (after any redirects) has loaded.
    pub async fn submit(&self, selector: &str) -> anyhow::Result<()> {
        let before = self.navigations();
        let js = format!(
            "(() => {{ const f = document.querySelector({}); if (!f) return false; f.requestSubmit(); return true; }})()",
            js_str(selector)
        );
        anyhow::ensure!(self.eval(&js).await? == true, "no form matches {selector}");
        self.wait_log(&format!("the page {selector} submits to, to load"), LOAD_TIMEOUT, |l| {
            l.navigations > before && l.main_loader.as_ref().is_some_and(|m| l.loaded.contains(m))
        })
        .await
    }

    /// Sets the viewport; narrower than 600 px emulates a phone (a mobile viewport).
    pub async fn set_viewport(&self, width: u32, height: u32) -> anyhow::Result<()> {
        let params = json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600});
        self.call("Emulation.setDeviceMetricsOverride", params).await?;
        *self.width.lock().unwrap_or_else(|e| e.into_inner()) = width;
        Ok(())
    }

    /// Saves a PNG of the whole page (the viewport's width, the content's height) to `path`.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let metrics = self.call("Page.getLayoutMetrics", json!({})).await?;
        let height = metrics["cssContentSize"]["height"].as_f64().context("Page.getLayoutMetrics gave no height")?;
        let width = *self.width.lock().unwrap_or_else(|e| e.into_inner());
        let clip = json!({"x": 0, "y": 0, "width": width, "height": height.ceil(), "scale": 1});
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png", "clip": clip, "captureBeyondViewport": true}))
            .await?;
        let data = shot["data"].as_str().context("Page.captureScreenshot gave no data")?;
        let png = BASE64_STANDARD.decode(data).context("Page.captureScreenshot gave data that is not base64")?;
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// Sets a cookie for `url` (for cookies a test makes itself; a login form sets its own).
    pub async fn set_cookie(&self, url: &str, name: &str, value: &str) -> anyhow::Result<()> {
        let r = self.call("Network.setCookie", json!({"url": url, "name": name, "value": value})).await?;
        anyhow::ensure!(r["success"] != false, "Chromium refused cookie {name} for {url}");
        Ok(())
    }

    /// The cookies the browser would send to the current page, HttpOnly ones included.
    pub async fn cookies(&self) -> anyhow::Result<Vec<Value>> {
        let r = self.call("Network.getCookies", json!({})).await?;
        Ok(r["cookies"].as_array().cloned().unwrap_or_default())
    }

    /// Every URL this page has requested, in order (documents, scripts, event streams, ...).
    pub fn requested_urls(&self) -> Vec<String> {
        self.log(|l| l.requested.clone())
    }

    /// Uncaught exceptions, `console.error` calls and error-level log entries (failed loads,
    /// CSP violations).
    pub fn console_errors(&self) -> Vec<String> {
        self.log(|l| l.errors.clone())
    }

    /// Content-Security-Policy violations reported to the console.
    pub fn csp_violations(&self) -> Vec<String> {
        self.log(|l| l.csp.clone())
    }

    /// How many documents the main frame has committed (a reload adds one).
    pub fn navigations(&self) -> u64 {
        self.log(|l| l.navigations)
    }
}

/// JavaScript's truthiness, for [`Page::wait_for`].
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}
