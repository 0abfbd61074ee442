//! The agent's identity after `join`: a JSON file readable by its owner only.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What `ipw-agent join` stores and `ipw-agent run` reads. Its `Debug` leaves the secrets out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// The coordinator's URL.
    pub coordinator: String,
    /// This agent's id.
    pub agent_id: String,
    /// `<agent-id>.<secret>`, sent on every call.
    pub credential: String,
    /// Display name.
    pub name: String,
    /// Labels given at join time.
    pub labels: BTreeMap<String, String>,
    /// The hardware class the coordinator assigned.
    pub hardware_class: String,
    /// The coordinator's CA (PEM), learned at join from the pinned fingerprint; absent for a
    /// plain-text (`--insecure`) coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// This agent's client certificate and key (PEM), for coordinators that require mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<(String, String)>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The agent id is public; the secret half of the credential and the key are not.
        f.debug_struct("AgentConfig")
            .field("coordinator", &self.coordinator)
            .field("agent_id", &self.agent_id)
            .field("credential", &"<redacted>")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("hardware_class", &self.hardware_class)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<CA certificate>"))
            .field("client_cert", &self.client_cert.as_ref().map(|_| "<certificate and redacted key>"))
            .finish()
    }
}

/// `/etc/ipw-agent/agent.json` for root (a service), else `$XDG_CONFIG_HOME/ipw-agent/agent.json`.
pub fn default_config_path() -> PathBuf {
    if is_root() {
        return PathBuf::from("/etc/ipw-agent/agent.json");
    }
    xdg_dir("XDG_CONFIG_HOME", ".config").join("ipw-agent/agent.json")
}

/// `/var/lib/ipw-agent/spool` for root, else `$XDG_STATE_HOME/ipw-agent/spool`.
pub fn default_spool_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/ipw-agent/spool");
    }
    xdg_dir("XDG_STATE_HOME", ".local/state").join("ipw-agent/spool")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn xdg_dir(var: &str, fallback: &str) -> PathBuf {
    if let Some(d) = std::env::var_os(var).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(fallback)
}

/// The client certificate and key the coordinator sent (two PEM strings, empty for plain
/// text), as the config keeps them.
pub fn client_cert_from(cert_pem: String, key_pem: String) -> Option<(String, String)> {
    (!cert_pem.is_empty()).then_some((cert_pem, key_pem))
}

impl AgentConfig {
    /// How to reach the coordinator over TLS; `None` for plain text.
    pub fn client_tls(&self) -> Option<ipw_proto::tls::ClientTls> {
        self.ca_pem
            .as_ref()
            .map(|ca| ipw_proto::tls::ClientTls { ca_pem: ca.clone(), identity: self.client_cert.clone() })
    }

    /// Reads the file written by `join`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}; run `ipw-agent join URL --token T` first", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid agent config", path.display()))
    }

    /// Writes the file atomically with mode 0600: it holds the agent's credential.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        ipw_proto::files::write_private(path, serde_json::to_string_pretty(self)?.as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn saved_config_is_owner_only_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/agent.json");
        let c = AgentConfig {
            coordinator: "http://127.0.0.1:7443".into(),
            agent_id: "a".into(),
            credential: "a.secret".into(),
            name: "box".into(),
            labels: [("rack".to_owned(), "3".to_owned())].into(),
            hardware_class: "cpu:x:2c:24GiB".into(),
            ca_pem: Some("-----BEGIN CERTIFICATE-----".into()),
            client_cert: Some(("CERT".into(), "PRIVATE KEY".into())),
        };
        // A leftover temporary file from a crash, world-readable, does not lend its mode.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path.with_extension("json.tmp"), "{}").unwrap();
        std::fs::set_permissions(path.with_extension("json.tmp"), std::fs::Permissions::from_mode(0o644)).unwrap();
        c.save(&path).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret") && !shown.contains("PRIVATE KEY"), "{shown}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(AgentConfig::load(&path).unwrap(), c);
    }
}
