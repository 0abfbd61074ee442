//! `ipw token`: join tokens for enrolling agents, and viewer tokens for the dashboard.

use super::render::table::{render_table, when};
use super::{Admin, refused};
use clap::Subcommand;
use ipw_proto::v1::{CreateTokenRequest, CreateTokenResponse, ListTokensRequest, RevokeRequest};
use std::time::Duration;

/// `ipw token ...`
#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Creates a join token (or with --viewer a dashboard login); it is shown once.
    Create {
        /// How long the token stays valid (e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// A viewer token: it logs in to the read-only dashboard, and can never join an agent
        /// or call an admin method.
        #[arg(long, conflicts_with_all = ["uses", "auto_approve"])]
        viewer: bool,
        /// How many agents may join with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Agents joining with this token are approved at once.
        #[arg(long)]
        auto_approve: bool,
        /// A note for other operators.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Lists join and viewer tokens (never the tokens themselves) with their uses and state.
    List,
    /// Revokes a join token (no one more joins with it; agents it enrolled keep working) or a
    /// viewer token (its dashboard sessions end at their next request).
    Revoke {
        /// The token id (from `ipw token list`).
        id: String,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// Runs one `ipw token` command.
pub async fn run(admin: &mut Admin, url: &str, cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create { ttl, viewer, uses, auto_approve, description } => {
            let max_uses = if viewer { 0 } else { uses };
            let request =
                CreateTokenRequest { ttl_seconds: ttl.as_secs().max(1), max_uses, auto_approve, description, viewer };
            let t = admin.create_token(request).await.map_err(refused(url))?.into_inner();
            if t.viewer { print_viewer(&t) } else { print_join(&t) }
        }
        TokenCmd::List => {
            let tokens = admin.list_tokens(ListTokensRequest {}).await.map_err(refused(url))?.into_inner().tokens;
            let now = chrono::Utc::now().timestamp_micros();
            let rows = tokens.into_iter().map(|t| {
                let state = if t.revoked_unix_us > 0 {
                    format!("revoked ({})", t.revoked_reason)
                } else if t.expires_unix_us <= now {
                    "expired".into()
                } else if !t.viewer && t.uses >= t.max_uses {
                    "used up".into()
                } else {
                    format!("valid until {}", when(t.expires_unix_us))
                };
                let (kind, uses) =
                    if t.viewer { ("viewer", "-".into()) } else { ("join", format!("{}/{}", t.uses, t.max_uses)) };
                vec![t.token_id, kind.into(), uses, state, t.description]
            });
            print!("{}", render_table(&["ID", "KIND", "USES", "STATE", "DESCRIPTION"], rows));
        }
        TokenCmd::Revoke { id, reason } => {
            let t = admin.revoke_token(RevokeRequest { id, reason }).await.map_err(refused(url))?.into_inner();
            if t.viewer {
                println!(
                    "revoked viewer token {} ({}); its dashboard sessions have ended",
                    t.token_id, t.revoked_reason
                );
            } else {
                println!(
                    "revoked join token {} ({}); it was used {} of {} times",
                    t.token_id, t.revoked_reason, t.uses, t.max_uses
                );
            }
        }
    }
    Ok(())
}

fn print_join(t: &CreateTokenResponse) {
    let expires = chrono::DateTime::from_timestamp_micros(t.expires_unix_us).unwrap_or_default();
    println!("token {}", t.token);
    println!(
        "expires {} · {} use(s){}",
        expires.to_rfc3339(),
        t.max_uses,
        if t.auto_approve { " · auto-approve" } else { "" }
    );
    let trust =
        if t.ca_cert_hash.is_empty() { "--insecure".to_owned() } else { format!("--ca-cert-hash {}", t.ca_cert_hash) };
    println!("join with:  ipw-agent join {} --token {} {trust}", t.join_url, t.token);
}

fn print_viewer(t: &CreateTokenResponse) {
    let expires = chrono::DateTime::from_timestamp_micros(t.expires_unix_us).unwrap_or_default();
    println!("viewer token {}", t.token);
    println!(
        "expires {} · read-only dashboard login; it cannot join an agent (id {})",
        expires.to_rfc3339(),
        t.token_id
    );
    if t.dashboard_login_url.is_empty() {
        println!("this coordinator serves no dashboard: start it with --metrics-listen (without --no-dashboard)");
    } else {
        println!("log in at:  {}", t.dashboard_login_url);
    }
}
