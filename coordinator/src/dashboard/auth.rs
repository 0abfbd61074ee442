//! Logging in to the dashboard: a viewer token or an admin credential is exchanged for a
//! signed session cookie; the [`Viewer`] extractor checks that cookie, and the credential
//! behind it in the database, on every request.
//!
//! - The session cookie is `v1.<kind>.<credential id>.<expiry>.<HMAC-SHA256>`, HttpOnly,
//!   SameSite=Strict, Path=/, and Secure when `--dashboard-secure-cookies` is given or the
//!   request came through a TLS proxy (`X-Forwarded-Proto: https`). It lasts at most
//!   [`MAX_SESSION_SECS`], and never past the token's own expiry.
//! - CSRF: the login form is guarded by a signed double-submit token (a cookie and a form
//!   field that must be equal and carry our signature), later forms by a token derived from
//!   the session; every POST must also come from our own origin (`Origin`,
//!   `Sec-Fetch-Site`).
//! - Failed logins are rate-limited per client address.

use super::{Dashboard, Failure, Ready, layout};
use crate::infra::auth::{MIN_ADMIN_TOKEN_CHARS, constant_time_eq, hash_secret};
use crate::store::{admin, viewers};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use maud::{Markup, html};
use ring::hmac;
use std::net::SocketAddr;
use std::sync::Arc;
use uuid::Uuid;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "ipw_session";
/// The login form's CSRF cookie's name.
pub const CSRF_COOKIE: &str = "ipw_csrf";
/// The longest a session lasts, in seconds (12 h).
pub const MAX_SESSION_SECS: i64 = 12 * 3600;
/// How long a login form may be filled in, in seconds.
pub const LOGIN_FORM_SECS: i64 = 600;

/// The key that signs sessions and CSRF tokens (HMAC-SHA256).
#[derive(Debug)]
pub struct SessionKey(hmac::Key);

impl SessionKey {
    /// A key from its bytes (32 random bytes, from `dashboard_keys`).
    pub fn new(bytes: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// The hex signature of `payload` for `purpose`: a signature for one purpose (a CSRF
    /// token) is never good for another (a session).
    fn sign(&self, purpose: &str, payload: &str) -> String {
        hex::encode(hmac::sign(&self.0, format!("{purpose}\n{payload}").as_bytes()))
    }

    /// Whether `tag` is the signature of `payload` for `purpose` (in constant time).
    fn verify(&self, purpose: &str, payload: &str, tag: &str) -> bool {
        hex::decode(tag)
            .is_ok_and(|tag| hmac::verify(&self.0, format!("{purpose}\n{payload}").as_bytes(), &tag).is_ok())
    }
}

/// Which credential a session was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A viewer token (`viewer_tokens`).
    Viewer,
    /// An admin credential (`admin_credentials`).
    Admin,
}

impl Kind {
    fn code(self) -> &'static str {
        match self {
            Kind::Viewer => "v",
            Kind::Admin => "a",
        }
    }

    /// `viewer` or `admin`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Viewer => "viewer",
            Kind::Admin => "admin",
        }
    }
}

/// What a session cookie says: who, until when (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// The kind of credential.
    pub kind: Kind,
    /// The credential's id (in its table).
    pub id: Uuid,
    /// When the session ends, in Unix seconds.
    pub expires: i64,
}

/// Why a session cookie was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Not `v1.<kind>.<id>.<expiry>.<signature>`.
    #[error("malformed session cookie")]
    Malformed,
    /// The signature is not ours: forged or altered.
    #[error("the session cookie's signature is not valid")]
    Forged,
    /// Past its expiry.
    #[error("the session has expired")]
    Expired,
}

impl Session {
    fn payload(&self) -> String {
        format!("v1.{}.{}.{}", self.kind.code(), self.id, self.expires)
    }

    /// The cookie's value.
    pub fn encode(&self, key: &SessionKey) -> String {
        let payload = self.payload();
        let tag = key.sign("session", &payload);
        format!("{payload}.{tag}")
    }

    /// Reads a cookie's value: ours (the signature checks) and not expired at `now`.
    pub fn decode(value: &str, key: &SessionKey, now: i64) -> Result<Self, SessionError> {
        let (payload, tag) = value.rsplit_once('.').ok_or(SessionError::Malformed)?;
        if !key.verify("session", payload, tag) {
            return Err(SessionError::Forged);
        }
        let parts: Vec<&str> = payload.split('.').collect();
        let [version, kind, id, expires] = parts[..] else { return Err(SessionError::Malformed) };
        let kind = match kind {
            "v" => Kind::Viewer,
            "a" => Kind::Admin,
            _ => return Err(SessionError::Malformed),
        };
        let id = Uuid::parse_str(id).map_err(|_| SessionError::Malformed)?;
        let expires: i64 = expires.parse().map_err(|_| SessionError::Malformed)?;
        if version != "v1" {
            return Err(SessionError::Malformed);
        }
        if expires <= now {
            return Err(SessionError::Expired);
        }
        Ok(Session { kind, id, expires })
    }

    /// The token a form posted in this session must carry (logout): derived from the
    /// cookie, so nothing is stored, and unknown to another site.
    pub fn csrf(cookie: &str, key: &SessionKey) -> String {
        key.sign("csrf-session", cookie)
    }
}

/// A login form's CSRF token, good until `now` + [`LOGIN_FORM_SECS`]: `<nonce>.<expiry>.<signature>`.
pub fn login_csrf(key: &SessionKey, now: i64) -> String {
    let payload = format!("{}.{}", hex::encode(rand::random::<[u8; 16]>()), now + LOGIN_FORM_SECS);
    let tag = key.sign("csrf-login", &payload);
    format!("{payload}.{tag}")
}

/// Whether a login's CSRF cookie and form field are one token, ours and not expired.
pub fn login_csrf_ok(key: &SessionKey, cookie: Option<&str>, field: Option<&str>, now: i64) -> bool {
    let (Some(cookie), Some(field)) = (cookie, field) else { return false };
    let Some((payload, tag)) = cookie.rsplit_once('.') else { return false };
    let expires = payload.split_once('.').and_then(|(_, e)| e.parse::<i64>().ok());
    constant_time_eq(cookie.as_bytes(), field.as_bytes())
        && key.verify("csrf-login", payload, tag)
        && expires.is_some_and(|e| e > now)
}

fn now() -> i64 {
    Utc::now().timestamp()
}

/// The value of cookie `name`, from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// A `Set-Cookie` value: HttpOnly and SameSite=Strict always, Secure when asked.
fn set_cookie(name: &str, value: &str, path: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}");
    HeaderValue::from_str(&cookie).expect("cookie values are ASCII")
}

impl Dashboard {
    /// Whether cookies should be Secure for this request.
    fn secure(&self, headers: &HeaderMap) -> bool {
        self.settings.secure_cookies
            || headers.get("x-forwarded-proto").is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"))
    }
}

/// Whether a POST comes from our own pages: a browser says where a request comes from in
/// `Sec-Fetch-Site` and `Origin`; a request from another site is refused whatever it carries.
/// Without either header (not a browser) the CSRF token alone decides. `Origin: null` says
/// nothing: our own forms send it, since our pages' `Referrer-Policy` is `no-referrer`.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN).filter(|o| o.as_bytes() != b"null") else { return true };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return false };
    let origin = origin.as_bytes();
    origin == format!("http://{host}").as_bytes() || origin == format!("https://{host}").as_bytes()
}

/// Someone logged in: a live viewer token or admin credential behind a valid session.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The session.
    pub session: Session,
    /// The viewer token's description, or the admin credential's name.
    pub name: String,
    /// The token forms posted in this session carry (see [`Session::csrf`]).
    pub csrf: String,
}

impl Viewer {
    /// When the session ends.
    pub fn expires(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.session.expires, 0).unwrap_or_default()
    }
}

impl FromRequestParts<Arc<Dashboard>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut http::request::Parts, d: &Arc<Dashboard>) -> Result<Self, Response> {
        let ready = d.ready().map_err(IntoResponse::into_response)?;
        let refuse = |had_cookie| refusal(parts.uri.path(), had_cookie, d.secure(&parts.headers));
        let Some(value) = cookie(&parts.headers, SESSION_COOKIE) else { return Err(refuse(false)) };
        let Ok(session) = Session::decode(value, &ready.key, now()) else { return Err(refuse(true)) };
        // The credential itself must still be live: revoking or expiring it ends its sessions.
        let name = match session.kind {
            Kind::Viewer => viewers::live_by_id(&ready.pool, session.id).await.map(|v| v.map(|v| v.description)),
            Kind::Admin => admin::live_name_by_id(&ready.pool, session.id).await,
        };
        let Some(name) = name.map_err(|e| Failure::from(e).into_response())? else { return Err(refuse(true)) };
        Ok(Viewer { session, name, csrf: Session::csrf(value, &ready.key) })
    }
}

/// No live session: pages send the browser to the login form, the data endpoints (`/api/`,
/// `/events`) answer 401. A cookie that failed is cleared.
fn refusal(path: &str, had_cookie: bool, secure: bool) -> Response {
    let mut response = if path.starts_with("/api/") || path == "/events" || path.starts_with("/events/") {
        (StatusCode::UNAUTHORIZED, "log in to the dashboard first: /login\n").into_response()
    } else {
        Redirect::to("/login").into_response()
    };
    if had_cookie {
        response.headers_mut().append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", "/", 0, secure));
    }
    response
}

/// `GET /login`: the form, with a fresh CSRF token in a cookie and a hidden field.
pub async fn login_form(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Result<Response, Failure> {
    let ready = d.ready()?;
    Ok(login_page(&d, ready, &headers, StatusCode::OK, None))
}

fn login_page(d: &Dashboard, ready: &Ready, headers: &HeaderMap, status: StatusCode, error: Option<&str>) -> Response {
    let csrf = login_csrf(&ready.key, now());
    let content: Markup = html! {
        h1 { "Log in" }
        @if let Some(error) = error { p.error role="alert" { (error) } }
        form method="post" action="/login" {
            input type="hidden" name="csrf" value=(csrf);
            p {
                label for="token" { "Viewer token or admin token" }
                br;
                input #token type="password" name="token" autocomplete="off" required autofocus;
            }
            p { button type="submit" { "Log in" } }
        }
        p.hint { "An operator makes a viewer token with " code { "ipw token create --viewer" } "." }
    };
    let cookie = set_cookie(CSRF_COOKIE, &csrf, "/login", LOGIN_FORM_SECS, d.secure(headers));
    (status, [(header::SET_COOKIE, cookie)], layout::page("Log in", None, None, content)).into_response()
}

/// The fields of a posted form that we read.
#[derive(Debug, Default)]
struct Posted {
    token: Option<String>,
    csrf: Option<String>,
}

fn parse_form(body: &[u8]) -> Posted {
    let mut posted = Posted::default();
    for (k, v) in form_urlencoded::parse(body) {
        match &*k {
            "token" => posted.token = Some(v.into_owned()),
            "csrf" => posted.csrf = Some(v.into_owned()),
            _ => {}
        }
    }
    posted
}

/// `POST /login`: from our own form (origin and CSRF token), at most so many failures per
/// address; a live viewer token or admin credential gets a session cookie.
pub async fn login(
    State(d): State<Arc<Dashboard>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    let ready = d.ready()?;
    if !same_origin(&headers) {
        return Ok((StatusCode::FORBIDDEN, "a login must come from the dashboard's own page\n").into_response());
    }
    let posted = parse_form(&body);
    if !login_csrf_ok(&ready.key, cookie(&headers, CSRF_COOKIE), posted.csrf.as_deref(), now()) {
        let why = "The login form expired or did not come from this dashboard; try again.";
        return Ok(login_page(&d, ready, &headers, StatusCode::FORBIDDEN, Some(why)));
    }
    if let Err(wait) = d.login_limiter.check(peer.ip()) {
        tracing::warn!(%peer, "dashboard login refused: rate limit");
        let retry = wait.as_secs_f64().ceil().max(1.0);
        let text = format!("Too many failed logins from {}; try again in {retry} s.", peer.ip());
        let mut response = layout::message(StatusCode::TOO_MANY_REQUESTS, "Too many attempts", &text);
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry as u64));
        return Ok(response);
    }
    let Some(session) = credential(ready, posted.token.as_deref().unwrap_or_default()).await? else {
        tracing::info!(%peer, "dashboard login refused: not a live viewer or admin token");
        let why = "That is not a live viewer or admin token (a join token cannot log in).";
        return Ok(login_page(&d, ready, &headers, StatusCode::UNAUTHORIZED, Some(why)));
    };
    d.login_limiter.refund(peer.ip());
    tracing::info!(%peer, kind = session.kind.name(), credential = %session.id, "dashboard login");
    let max_age = session.expires - now();
    let secure = d.secure(&headers);
    let cookies = [
        set_cookie(SESSION_COOKIE, &session.encode(&ready.key), "/", max_age, secure),
        set_cookie(CSRF_COOKIE, "", "/login", 0, secure),
    ];
    let mut response = Redirect::to("/").into_response();
    for c in cookies {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(response)
}

/// The session a token opens: a live viewer token (until it expires, 12 h at most) or a
/// live admin credential (12 h). Join tokens and agent credentials are in neither table.
async fn credential(ready: &Ready, token: &str) -> Result<Option<Session>, Failure> {
    let token = token.trim();
    // Every token we issue is 64 characters; a short one would only cost a query.
    if token.len() < MIN_ADMIN_TOKEN_CHARS {
        return Ok(None);
    }
    let hash = hash_secret(token);
    let longest = now() + MAX_SESSION_SECS;
    if let Some(v) = viewers::live_by_hash(&ready.pool, &hash).await? {
        return Ok(Some(Session { kind: Kind::Viewer, id: v.id, expires: v.expires_at.timestamp().min(longest) }));
    }
    Ok(admin::live_by_hash(&ready.pool, &hash).await?.map(|(id, _)| Session {
        kind: Kind::Admin,
        id,
        expires: longest,
    }))
}

/// `POST /logout`: from our own page in this session; clears the session cookie. (The
/// cookie is not stored server side: revoking the token is what ends a stolen session.)
pub async fn logout(State(d): State<Arc<Dashboard>>, viewer: Viewer, headers: HeaderMap, body: Bytes) -> Response {
    let posted = parse_form(&body);
    let csrf_ok = posted.csrf.is_some_and(|c| constant_time_eq(c.as_bytes(), viewer.csrf.as_bytes()));
    if !same_origin(&headers) || !csrf_ok {
        return (StatusCode::FORBIDDEN, "a logout must come from the dashboard's own page\n").into_response();
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", "/", 0, d.secure(&headers)));
    response
}

/// `GET /api/session`: who is logged in, until when (JSON), for scripts.
pub async fn session(viewer: Viewer) -> Response {
    let body = serde_json::json!({
        "kind": viewer.session.kind.name(),
        "name": viewer.name,
        "expires": viewer.expires().to_rfc3339(),
    });
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SessionKey {
        SessionKey::new(&[7u8; 32])
    }

    #[test]
    fn a_session_round_trips_and_any_changed_byte_is_refused() {
        let s = Session { kind: Kind::Viewer, id: Uuid::new_v4(), expires: 2_000 };
        let value = s.encode(&key());
        assert_eq!(Session::decode(&value, &key(), 1_000), Ok(s));
        for i in 0..value.len() {
            let mut bytes = value.clone().into_bytes();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            let changed = String::from_utf8(bytes).unwrap();
            assert!(Session::decode(&changed, &key(), 1_000).is_err(), "byte {i} changed: {changed}");
        }
        // An admin session and a later expiry cannot be claimed by editing the payload.
        let tag = value.rsplit_once('.').unwrap().1;
        let claimed = format!("v1.a.{}.9999999999.{tag}", s.id);
        assert_eq!(Session::decode(&claimed, &key(), 1_000), Err(SessionError::Forged));
    }

    #[test]
    fn another_key_an_expiry_or_garbage_is_refused() {
        let s = Session { kind: Kind::Admin, id: Uuid::new_v4(), expires: 2_000 };
        let value = s.encode(&key());
        assert_eq!(Session::decode(&value, &SessionKey::new(&[8u8; 32]), 1_000), Err(SessionError::Forged));
        assert_eq!(Session::decode(&value, &key(), 2_000), Err(SessionError::Expired));
        assert_eq!(Session::decode("", &key(), 0), Err(SessionError::Malformed));
        assert_eq!(Session::decode("v1.v.x.1.zz", &key(), 0), Err(SessionError::Forged));
        // Signed by us, but not a session: a CSRF token's signature is for another purpose.
        let csrf = login_csrf(&key(), 0);
        assert!(Session::decode(&csrf, &key(), 0).is_err());
    }

    #[test]
    fn the_login_csrf_token_must_be_ours_in_both_places_and_fresh() {
        let t = login_csrf(&key(), 100);
        assert!(login_csrf_ok(&key(), Some(&t), Some(&t), 100));
        assert!(!login_csrf_ok(&key(), Some(&t), None, 100), "no field");
        assert!(!login_csrf_ok(&key(), None, Some(&t), 100), "no cookie");
        let other = login_csrf(&key(), 100);
        assert!(!login_csrf_ok(&key(), Some(&t), Some(&other), 100), "two different tokens");
        assert!(!login_csrf_ok(&key(), Some(&t), Some(&t), 100 + LOGIN_FORM_SECS), "expired");
        let theirs = login_csrf(&SessionKey::new(&[9u8; 32]), 100);
        assert!(!login_csrf_ok(&key(), Some(&theirs), Some(&theirs), 100), "signed with another key");
        let session_csrf = Session::csrf("cookie", &key());
        assert_ne!(session_csrf, Session::csrf("another cookie", &key()));
    }

    #[test]
    fn cookies_are_read_from_every_header_and_set_http_only_and_strict() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; ipw_csrf=x.y.z"));
        h.append(header::COOKIE, HeaderValue::from_static("ipw_session=s"));
        assert_eq!(cookie(&h, CSRF_COOKIE), Some("x.y.z"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("s"));
        assert_eq!(cookie(&h, "b"), None);
        let set = set_cookie(SESSION_COOKIE, "v", "/", 60, false);
        assert_eq!(set, "ipw_session=v; Path=/; Max-Age=60; HttpOnly; SameSite=Strict");
        assert!(set_cookie(SESSION_COOKIE, "v", "/", 60, true).to_str().unwrap().ends_with("; Secure"));
    }

    #[test]
    fn posts_from_another_site_are_refused() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(same_origin(&headers(&[("host", "dash:9464")])), "no browser headers");
        assert!(same_origin(&headers(&[("host", "dash:9464"), ("origin", "http://dash:9464")])));
        assert!(same_origin(&headers(&[("host", "dash:9464"), ("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[("host", "dash:9464"), ("origin", "http://evil.example")])));
        // What a browser sends for our own form under `Referrer-Policy: no-referrer`.
        assert!(same_origin(&headers(&[("host", "dash:9464"), ("origin", "null"), ("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[("host", "dash:9464"), ("origin", "null"), ("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("host", "dash:9464"), ("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("host", "dash:9464"), ("sec-fetch-site", "same-site")])));
    }

    #[test]
    fn pages_redirect_to_the_login_and_data_endpoints_answer_401() {
        let page = refusal("/runs", false, false);
        assert_eq!(page.status(), StatusCode::SEE_OTHER);
        assert_eq!(page.headers()[header::LOCATION], "/login");
        assert!(page.headers().get(header::SET_COOKIE).is_none());
        assert_eq!(refusal("/api/session", true, false).status(), StatusCode::UNAUTHORIZED);
        let events = refusal("/events", true, false);
        assert_eq!(events.status(), StatusCode::UNAUTHORIZED);
        assert!(
            events.headers()[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"),
            "a bad cookie is cleared"
        );
    }
}
