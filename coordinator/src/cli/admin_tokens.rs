//! `ipw admin-token`: named, revocable credentials for operators and their tools.

use super::render::table::{render_table, when};
use super::{Admin, refused};
use clap::Subcommand;
use ipw_proto::v1::{CreateAdminTokenRequest, ListAdminTokensRequest, RevokeAdminTokenRequest};

/// `ipw admin-token ...`
#[derive(Subcommand, Debug)]
pub enum AdminTokenCmd {
    /// Creates an admin credential; the token is shown once.
    Create {
        /// Its name, as the audit log records its actions (e.g. ci, alice).
        #[arg(long)]
        name: String,
    },
    /// Lists admin credentials (never the tokens).
    List,
    /// Revokes one: its next call is refused. The last live one cannot be revoked.
    Revoke {
        /// The credential's name.
        name: String,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// Runs one `ipw admin-token` command.
pub async fn run(admin: &mut Admin, url: &str, cmd: AdminTokenCmd) -> anyhow::Result<()> {
    match cmd {
        AdminTokenCmd::Create { name } => {
            let r = admin.create_admin_token(CreateAdminTokenRequest { name }).await.map_err(refused(url))?;
            let r = r.into_inner();
            println!(
                "admin token {} for \"{}\" (shown once; pass it as --admin-token or IPW_ADMIN_TOKEN)",
                r.token, r.name
            );
        }
        AdminTokenCmd::List => {
            let tokens =
                admin.list_admin_tokens(ListAdminTokensRequest {}).await.map_err(refused(url))?.into_inner().tokens;
            let rows = tokens.into_iter().map(|t| {
                let state = if t.revoked_unix_us > 0 {
                    format!("revoked {} ({})", when(t.revoked_unix_us), t.revoked_reason)
                } else {
                    "live".into()
                };
                vec![t.name, when(t.created_unix_us), t.created_by, state]
            });
            print!("{}", render_table(&["NAME", "CREATED", "BY", "STATE"], rows));
        }
        AdminTokenCmd::Revoke { name, reason } => {
            let t = admin.revoke_admin_token(RevokeAdminTokenRequest { name, reason }).await.map_err(refused(url))?;
            println!("revoked admin credential \"{}\"", t.into_inner().name);
        }
    }
    Ok(())
}
