//! The systemd unit: a system unit (multi-user.target) or a user unit (default.target) that
//! keeps `ipw-agent run` running, with the stop semantics of deploy/systemd/ipw-agent.service.

use super::{Scope, Service};
use anyhow::bail;
use std::fmt::Write;

/// Renders the unit for `s`.
pub fn render(s: &Service) -> anyhow::Result<String> {
    let mut u = String::new();
    writeln!(u, "# Written by `ipw-agent service install` (ipw-agent {}).", crate::VERSION)?;
    writeln!(u, "# `ipw-agent service print` shows what it would write now; settings can also go in a")?;
    writeln!(u, "# drop-in (`systemctl edit ipw-agent`), whose Environment= lines replace these.")?;
    writeln!(u, "[Unit]\nDescription=ipw-fleet agent")?;
    if s.scope == Scope::System {
        // A user manager has no network-online.target.
        writeln!(u, "Wants=network-online.target\nAfter=network-online.target")?;
    }
    writeln!(u, "\n[Service]\nType=simple")?;
    if let Some(user) = &s.user {
        writeln!(u, "User={}", escape(user, false)?)?;
    }
    for (key, value) in s.environment()? {
        writeln!(u, "Environment=\"{key}={}\"", escape(&value, false)?)?;
    }
    let argv = s.argv()?.iter().map(|a| exec_word(a)).collect::<anyhow::Result<Vec<_>>>()?;
    writeln!(u, "ExecStart={}", argv.join(" "))?;
    writeln!(u, "Restart=always\nRestartSec=5")?;
    if s.scope == Scope::System && s.spool_dir.starts_with("/var/lib/ipw-agent") {
        // systemd creates /var/lib/ipw-agent and gives it to User= at every start.
        writeln!(u, "StateDirectory=ipw-agent")?;
    }
    u.push_str(
        "# `systemctl stop` sends SIGTERM to the agent only (not to a managed llama-server, which the\n\
         # agent stops itself once its queries are in): it finishes or abandons the queries in flight\n\
         # within --shutdown-grace (30 s), uploads, gives its leases back and exits 0. Whatever is\n\
         # still running after TimeoutStopSec is killed.\n\
         KillMode=mixed\nKillSignal=SIGTERM\nTimeoutStopSec=90\n",
    );
    let target = if s.scope == Scope::System { "multi-user.target" } else { "default.target" };
    writeln!(u, "\n[Install]\nWantedBy={target}")?;
    Ok(u)
}

/// `value` escaped for systemd: `\` and `"` as C escapes (for use inside double quotes), `%`
/// doubled (a specifier otherwise), and `$` doubled in a command line (a variable otherwise).
/// A line break would end the setting, so control characters are refused.
fn escape(value: &str, exec: bool) -> anyhow::Result<String> {
    if value.chars().any(char::is_control) {
        bail!("{value:?} holds a control character, which a systemd unit cannot carry");
    }
    let mut e = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => e.push_str(r"\\"),
            '"' => e.push_str("\\\""),
            '%' => e.push_str("%%"),
            '$' if exec => e.push_str("$$"),
            c => e.push(c),
        }
    }
    Ok(e)
}

/// One ExecStart= word, double-quoted when systemd would otherwise split or unquote it.
fn exec_word(word: &str) -> anyhow::Result<String> {
    let e = escape(word, true)?;
    let quote = word.is_empty() || word == ";" || word.chars().any(|c| c.is_whitespace() || "\"'\\".contains(c));
    Ok(if quote { format!("\"{e}\"") } else { e })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

    /// Sections, keys and their values (in order), as systemd reads a unit: comments skipped.
    fn parse(text: &str) -> Unit {
        let mut unit = Unit::new();
        let mut section = String::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with(['#', ';'])) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
                unit.entry(section.clone()).or_default();
                continue;
            }
            let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line}"));
            unit.get_mut(&section).expect("a key before any section").entry(k.into()).or_default().push(v.into());
        }
        unit
    }

    /// Splits a setting's value into words as systemd does (quotes, C escapes), then undoes
    /// `%%` and, for a command line, `$$`.
    fn words(value: &str, exec: bool) -> Vec<String> {
        let (mut words, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
        let mut chars = value.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => (quoted, any) = (!quoted, true),
                '\\' => cur.push(chars.next().expect("a lone backslash")),
                c if c.is_whitespace() && !quoted => {
                    if any || !cur.is_empty() {
                        words.push(std::mem::take(&mut cur));
                    }
                    any = false;
                }
                c => cur.push(c),
            }
        }
        assert!(!quoted, "unbalanced quotes in {value}");
        if any || !cur.is_empty() {
            words.push(cur);
        }
        let unescape = |w: String| {
            let w = w.replace("%%", "%");
            if exec { w.replace("$$", "$") } else { w }
        };
        words.into_iter().map(unescape).collect()
    }

    fn service() -> Service {
        Service {
            scope: Scope::System,
            binary: "/usr/local/bin/ipw-agent".into(),
            run_args: vec!["--engine".into(), "managed".into(), "--model-dir".into(), "/srv/models".into()],
            user: Some("ipw".into()),
            config: "/etc/ipw-agent/agent.json".into(),
            spool_dir: "/var/lib/ipw-agent/spool".into(),
            engine_url: "http://127.0.0.1:8080".into(),
            metrics_listen: Some("127.0.0.1:9465".parse().unwrap()),
            log_dir: None,
        }
    }

    #[test]
    fn a_system_unit_has_the_shipped_semantics_and_the_exact_command() {
        let unit = parse(&render(&service()).unwrap());
        let one = |section: &str, key: &str| -> String {
            let values = &unit[section][key];
            assert_eq!(values.len(), 1, "{section}.{key}: {values:?}");
            values[0].clone()
        };
        assert_eq!(
            one("Service", "ExecStart"),
            "/usr/local/bin/ipw-agent run --engine managed --model-dir /srv/models"
        );
        for (section, key, value) in [
            ("Unit", "After", "network-online.target"),
            ("Unit", "Wants", "network-online.target"),
            ("Service", "Type", "simple"),
            ("Service", "User", "ipw"),
            ("Service", "Restart", "always"),
            ("Service", "RestartSec", "5"),
            ("Service", "KillMode", "mixed"),
            ("Service", "KillSignal", "SIGTERM"),
            ("Service", "TimeoutStopSec", "90"),
            ("Service", "StateDirectory", "ipw-agent"),
            ("Install", "WantedBy", "multi-user.target"),
        ] {
            assert_eq!(one(section, key), value, "{section}.{key}");
        }
        let env: Vec<String> = unit["Service"]["Environment"].iter().flat_map(|v| words(v, false)).collect();
        assert_eq!(
            env,
            [
                "IPW_AGENT_CONFIG=/etc/ipw-agent/agent.json",
                "IPW_SPOOL_DIR=/var/lib/ipw-agent/spool",
                "IPW_ENGINE_URL=http://127.0.0.1:8080",
                "IPW_METRICS_LISTEN=127.0.0.1:9465",
            ]
        );
    }

    #[test]
    fn paths_with_spaces_quotes_percents_and_dollars_are_quoted() {
        let s = Service {
            binary: "/opt/ipw fleet/ipw-agent".into(),
            run_args: vec!["--model-alias".into(), r#"it's "x" 100% $HOME \n"#.into(), ";".into()],
            config: "/home/a b/.config/ipw-agent/agent.json".into(),
            spool_dir: PathBuf::from("/home/a b/50% \"spool\""),
            ..service()
        };
        let text = render(&s).unwrap();
        let unit = parse(&text);
        let exec = &unit["Service"]["ExecStart"][0];
        assert_eq!(exec, r#""/opt/ipw fleet/ipw-agent" run --model-alias "it's \"x\" 100%% $$HOME \\n" ";""#);
        let argv: Vec<String> = ["/opt/ipw fleet/ipw-agent", "run"].into_iter().map(String::from).collect();
        assert_eq!(words(exec, true), [argv, s.run_args.clone()].concat());
        let env = &unit["Service"]["Environment"];
        assert_eq!(env[0], r#""IPW_AGENT_CONFIG=/home/a b/.config/ipw-agent/agent.json""#);
        assert_eq!(words(&env[1], false), [r#"IPW_SPOOL_DIR=/home/a b/50% "spool""#]);
        // Outside /var/lib/ipw-agent, systemd is not asked to manage the state directory.
        assert!(!unit["Service"].contains_key("StateDirectory"), "{text}");
    }

    #[test]
    fn a_user_unit_has_no_user_and_starts_with_the_session() {
        let s = Service { scope: Scope::User, user: None, metrics_listen: None, ..service() };
        let unit = parse(&render(&s).unwrap());
        assert!(!unit["Service"].contains_key("User"));
        assert!(!unit["Unit"].contains_key("After"));
        assert_eq!(unit["Install"]["WantedBy"], ["default.target"]);
        assert_eq!(unit["Service"]["Environment"].len(), 3, "no metrics address unless given");
    }

    #[test]
    fn a_line_break_is_refused() {
        let s = Service { engine_url: "http://x\nExecStartPre=/bin/evil".into(), ..service() };
        assert!(render(&s).unwrap_err().to_string().contains("control character"));
    }
}
