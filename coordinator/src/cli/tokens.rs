//! `ipw token`: join tokens for enrolling agents.

use super::render::table::{render_table, when};
use super::{Admin, refused};
use clap::Subcommand;
use ipw_proto::v1::{CreateTokenRequest, ListTokensRequest, RevokeRequest};
use std::time::Duration;

/// `ipw token ...`
#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Creates a join token; it is shown once.
    Create {
        /// How long the token stays valid (e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
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
    /// Lists join tokens (never the tokens themselves) with their uses and state.
    List,
    /// Revokes a join token: no one more joins with it. Agents it enrolled keep working.
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
        TokenCmd::Create { ttl, uses, auto_approve, description } => {
            let request =
                CreateTokenRequest { ttl_seconds: ttl.as_secs().max(1), max_uses: uses, auto_approve, description };
            let t = admin.create_token(request).await.map_err(refused(url))?.into_inner();
            let expires = chrono::DateTime::from_timestamp_micros(t.expires_unix_us).unwrap_or_default();
            println!("token {}", t.token);
            println!(
                "expires {} · {} use(s){}",
                expires.to_rfc3339(),
                t.max_uses,
                if t.auto_approve { " · auto-approve" } else { "" }
            );
            let trust = if t.ca_cert_hash.is_empty() {
                "--insecure".to_owned()
            } else {
                format!("--ca-cert-hash {}", t.ca_cert_hash)
            };
            println!("join with:  ipw-agent join {} --token {} {trust}", t.join_url, t.token);
        }
        TokenCmd::List => {
            let tokens = admin.list_tokens(ListTokensRequest {}).await.map_err(refused(url))?.into_inner().tokens;
            let now = chrono::Utc::now().timestamp_micros();
            let rows = tokens.into_iter().map(|t| {
                let state = if t.revoked_unix_us > 0 {
                    format!("revoked ({})", t.revoked_reason)
                } else if t.expires_unix_us <= now {
                    "expired".into()
                } else if t.uses >= t.max_uses {
                    "used up".into()
                } else {
                    format!("valid until {}", when(t.expires_unix_us))
                };
                vec![t.token_id, format!("{}/{}", t.uses, t.max_uses), state, t.description]
            });
            print!("{}", render_table(&["ID", "USES", "STATE", "DESCRIPTION"], rows));
        }
        TokenCmd::Revoke { id, reason } => {
            let t = admin.revoke_token(RevokeRequest { id, reason }).await.map_err(refused(url))?.into_inner();
            println!(
                "revoked join token {} ({}); it was used {} of {} times",
                t.token_id, t.revoked_reason, t.uses, t.max_uses
            );
        }
    }
    Ok(())
}
