//! The launchd property list: a LaunchDaemon (system) or LaunchAgent (user) that keeps
//! `ipw-agent run` running, with the keys of deploy/launchd/com.ipw-fleet.agent*.plist.

use super::{LABEL, Scope, Service, utf8};
use anyhow::Context;
use plist::{Dictionary, Value};

/// Renders the plist for `s` as XML. `s.log_dir` is required: launchd has no journal.
pub fn render(s: &Service) -> anyhow::Result<String> {
    let log_dir = s.log_dir.as_deref().context("a launchd service needs a log directory")?;
    let mut d = Dictionary::new();
    let mut put = |key: &str, value: Value| d.insert(key.to_owned(), value);
    put("Label", LABEL.to_owned().into());
    put("ProgramArguments", Value::Array(s.argv()?.into_iter().map(Value::from).collect()));
    if let Some(user) = &s.user {
        put("UserName", user.clone().into());
    }
    put("EnvironmentVariables", s.environment()?.into_iter().collect::<Dictionary>().into());
    if s.scope == Scope::System {
        // Otherwise a daemon starts in /; the spool's parent is the agent's own.
        if let Some(parent) = s.spool_dir.parent() {
            put("WorkingDirectory", utf8(parent)?.to_owned().into());
        }
    }
    put("RunAtLoad", true.into());
    // Restart whenever it exits; ThrottleInterval spaces restarts, as systemd's RestartSec.
    put("KeepAlive", true.into());
    put("ThrottleInterval", 5.into());
    // SIGTERM, then up to 90 s for the agent's 30 s drain and upload, then SIGKILL.
    put("ExitTimeOut", 90.into());
    // Never Background, whose CPU and I/O throttling would skew latency and energy.
    put("ProcessType", "Standard".to_owned().into());
    put("StandardOutPath", utf8(&log_dir.join("agent.log"))?.to_owned().into());
    put("StandardErrorPath", utf8(&log_dir.join("agent.err.log"))?.to_owned().into());
    let mut xml = Vec::new();
    let options = plist::XmlWriteOptions::default().indent(b' ', 2);
    Value::Dictionary(d).to_writer_xml_with_options(&mut xml, &options)?;
    let xml = String::from_utf8(xml).context("the plist writer wrote something other than UTF-8")?;
    // The plist crate writes no comments: say where the file came from, as the shipped ones do.
    let note = format!(
        "<!-- Written by `ipw-agent service install` (ipw-agent {}); `ipw-agent service print`\n     \
         shows what it would write now. -->\n",
        crate::VERSION
    );
    let at = xml.find("<plist").context("the plist writer wrote no <plist> element")?;
    Ok(format!("{}{note}{}\n", &xml[..at], xml[at..].trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(scope: Scope) -> Service {
        Service {
            scope,
            binary: "/Users/a b/bin/ipw-agent".into(),
            run_args: vec!["--model-alias".into(), "<R&D>".into()],
            user: (scope == Scope::System).then(|| "_ipwagent".into()),
            config: "/Users/a b/Library/Application Support/ipw-agent/agent.json".into(),
            spool_dir: "/usr/local/var/lib/ipw-agent/spool".into(),
            engine_url: "http://127.0.0.1:8080".into(),
            metrics_listen: Some("127.0.0.1:9465".parse().unwrap()),
            log_dir: Some("/usr/local/var/log/ipw-agent".into()),
        }
    }

    fn parse(text: &str) -> Dictionary {
        Value::from_reader_xml(text.as_bytes()).unwrap().into_dictionary().expect("a dictionary")
    }

    #[test]
    fn a_daemon_plist_parses_back_with_the_shipped_keys() {
        let text = render(&service(Scope::System)).unwrap();
        assert!(text.starts_with("<?xml") && text.contains("<!-- Written by `ipw-agent service install`"), "{text}");
        let d = parse(&text);
        let s = |k: &str| d.get(k).and_then(Value::as_string).unwrap_or_else(|| panic!("{k} in {text}"));
        let n = |k: &str| d.get(k).and_then(Value::as_signed_integer).unwrap_or_else(|| panic!("{k} in {text}"));
        let b = |k: &str| d.get(k).and_then(Value::as_boolean).unwrap_or_else(|| panic!("{k} in {text}"));
        assert_eq!(s("Label"), "com.ipw-fleet.agent");
        let argv: Vec<&str> =
            d["ProgramArguments"].as_array().unwrap().iter().map(|v| v.as_string().unwrap()).collect();
        assert_eq!(argv, ["/Users/a b/bin/ipw-agent", "run", "--model-alias", "<R&D>"]);
        assert_eq!(s("UserName"), "_ipwagent");
        let env = d["EnvironmentVariables"].as_dictionary().unwrap();
        let var = |k: &str| env.get(k).and_then(Value::as_string);
        assert_eq!(var("IPW_AGENT_CONFIG"), Some("/Users/a b/Library/Application Support/ipw-agent/agent.json"));
        assert_eq!(var("IPW_SPOOL_DIR"), Some("/usr/local/var/lib/ipw-agent/spool"));
        assert_eq!(var("IPW_ENGINE_URL"), Some("http://127.0.0.1:8080"));
        assert_eq!(var("IPW_METRICS_LISTEN"), Some("127.0.0.1:9465"));
        assert!(b("KeepAlive") && b("RunAtLoad"));
        assert_eq!((n("ExitTimeOut"), n("ThrottleInterval")), (90, 5));
        assert_eq!(s("ProcessType"), "Standard");
        assert_eq!(s("WorkingDirectory"), "/usr/local/var/lib/ipw-agent");
        assert_eq!(s("StandardOutPath"), "/usr/local/var/log/ipw-agent/agent.log");
        assert_eq!(s("StandardErrorPath"), "/usr/local/var/log/ipw-agent/agent.err.log");
    }

    #[test]
    fn an_agent_plist_has_no_user_name_nor_working_directory() {
        let d = parse(&render(&service(Scope::User)).unwrap());
        assert!(!d.contains_key("UserName") && !d.contains_key("WorkingDirectory"));
        assert_eq!(d["ExitTimeOut"].as_signed_integer(), Some(90));
        let env = d["EnvironmentVariables"].as_dictionary().unwrap();
        assert_eq!(
            env.keys().collect::<Vec<_>>(),
            ["IPW_AGENT_CONFIG", "IPW_SPOOL_DIR", "IPW_ENGINE_URL", "IPW_METRICS_LISTEN"]
        );
    }
}
