//! The web dashboard: read-only pages over the fleet, served on the operations listener
//! (`--metrics-listen`) beside `/metrics`, `/healthz` and `/readyz`.
//!
//! A viewer token (`ipw token create --viewer`) or an admin credential is exchanged at
//! `/login` for a signed session cookie ([`auth`]); every page is laid out by [`layout`],
//! which also sets the security headers on every response; the pages themselves are in
//! [`pages`] and read through `store/`. Nothing is kept in memory but the login rate limits:
//! sessions are checked against the database on every request, and the key that signs them
//! is in the database, so replicas are interchangeable.

pub mod auth;
pub mod events;
pub mod layout;
pub mod pages;

use crate::infra::rate_limit::RateLimiter;
use crate::store;
use axum::response::{IntoResponse, Response};
use sqlx::PgPool;
use std::sync::{Arc, OnceLock};

/// How the dashboard is served.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Mark cookies `Secure` even on plain HTTP: for a dashboard reached through a TLS proxy
    /// that does not send `X-Forwarded-Proto: https`. (With that header they are anyway.)
    pub secure_cookies: bool,
}

/// Failed logins allowed at once from one address, then [`LOGIN_PER_MINUTE`].
pub const LOGIN_BURST: u32 = 10;
/// Failed logins allowed per minute from one address, sustained.
pub const LOGIN_PER_MINUTE: u32 = 10;

/// The dashboard's state: its settings, the login rate limits, and once the database is
/// reached, the pool and the signing key.
#[derive(Debug)]
pub struct Dashboard {
    settings: Settings,
    login_limiter: RateLimiter,
    ready: OnceLock<Ready>,
}

/// What the dashboard needs from the database, once it is connected.
#[derive(Debug)]
struct Ready {
    pool: PgPool,
    key: auth::SessionKey,
}

impl Dashboard {
    /// A dashboard that answers 503 until [`Dashboard::connect`]: the operations listener
    /// starts before the database is reached.
    pub fn new(settings: Settings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            login_limiter: RateLimiter::new(LOGIN_BURST, LOGIN_PER_MINUTE),
            ready: OnceLock::new(),
        })
    }

    /// The database is connected and migrated: read the signing key (storing one if no
    /// replica has yet), and serve from now on.
    pub async fn connect(&self, pool: PgPool) -> anyhow::Result<()> {
        let fresh: [u8; 32] = rand::random();
        let key = store::viewers::signing_key(&pool, &fresh)
            .await
            .map_err(|e| anyhow::anyhow!("reading the dashboard's signing key: {e}"))?;
        let _ = self.ready.set(Ready { pool, key: auth::SessionKey::new(&key) });
        Ok(())
    }

    fn ready(&self) -> Result<&Ready, Failure> {
        self.ready.get().ok_or(Failure::Connecting)
    }
}

/// The dashboard's routes, for [`ipw_ops::http::spawn_with`].
pub fn router(dashboard: Arc<Dashboard>) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/", get(pages::home::show))
        .route("/fleet", get(pages::fleet::show))
        .route("/events/fleet", get(pages::fleet::events))
        .route("/runs", get(pages::runs::show))
        .route("/events/runs", get(pages::runs::events))
        .route("/runs/{id}", get(pages::run::show))
        .route("/events/runs/{id}", get(pages::run::events))
        .route("/runs/{id}/figures/{file}", get(pages::run::figure))
        .route("/runs/{id}/export.csv", get(pages::run::export))
        .route("/sweeps", get(pages::runs::sweeps))
        .route("/leaderboard", get(pages::leaderboard::show))
        .route("/leaderboard.csv", get(pages::leaderboard::csv))
        .route("/compare", get(pages::compare::show))
        .route("/favicon.ico", get(|| async { http::StatusCode::NO_CONTENT }))
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/api/session", get(auth::session))
        .route(layout::CSS_PATH, get(layout::css))
        .route(layout::JS_PATH, get(layout::js))
        .fallback(layout::not_found)
        .layer(axum::middleware::map_response(layout::security_headers))
        .with_state(dashboard)
}

/// Why the dashboard could not answer: the server's side, never the visitor's.
#[derive(Debug)]
pub enum Failure {
    /// The coordinator has not reached PostgreSQL yet.
    Connecting,
    /// A store call failed.
    Store(store::Error),
    /// A figure could not be drawn.
    Draw(String),
}

impl From<store::Error> for Failure {
    fn from(e: store::Error) -> Self {
        Failure::Store(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let text = match self {
            Failure::Connecting => "The coordinator is still connecting to PostgreSQL; try again in a moment.",
            Failure::Draw(e) => {
                tracing::error!(error = %e, "a dashboard figure could not be drawn");
                "The figure could not be drawn."
            }
            Failure::Store(e) => {
                tracing::error!(error = %e, "a dashboard request failed");
                "The dashboard could not read the database; try again in a moment."
            }
        };
        layout::message(http::StatusCode::SERVICE_UNAVAILABLE, "Not available", text)
    }
}
