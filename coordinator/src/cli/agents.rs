//! `ipw agents`: enrolled agents.

use super::render::table::render_table;
use super::{Admin, refused};
use clap::Subcommand;
use ipw_proto::v1::{ApproveAgentRequest, ListAgentsRequest, RevokeRequest};

/// `ipw agents ...`
#[derive(Subcommand, Debug)]
pub enum AgentsCmd {
    /// Lists agents with their status and hardware class.
    List,
    /// Approves a pending agent, by id or unique name.
    Approve {
        /// Agent id or name.
        id: String,
    },
    /// Revokes an agent: every call it makes is refused from now on and its leases go back
    /// to the queue. Its committed results are kept.
    Revoke {
        /// Agent id or name.
        id: String,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// Runs one `ipw agents` command.
pub async fn run(admin: &mut Admin, url: &str, cmd: AgentsCmd) -> anyhow::Result<()> {
    match cmd {
        AgentsCmd::Revoke { id, reason } => {
            let a = admin.revoke_agent(RevokeRequest { id, reason }).await.map_err(refused(url))?.into_inner();
            println!("revoked {} ({}): its calls are refused from now on", a.name, a.id);
        }
        AgentsCmd::List => {
            let agents = admin.list_agents(ListAgentsRequest {}).await.map_err(refused(url))?.into_inner().agents;
            let rows = agents.into_iter().map(|a| vec![a.id, a.name, a.status, a.hardware_class]);
            print!("{}", render_table(&["ID", "NAME", "STATUS", "HARDWARE CLASS"], rows));
        }
        AgentsCmd::Approve { id } => {
            let a = admin.approve_agent(ApproveAgentRequest { agent_id: id }).await.map_err(refused(url))?.into_inner();
            println!("approved {} ({})", a.name, a.id);
        }
    }
    Ok(())
}
