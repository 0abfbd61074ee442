//! The Helm chart, `helm/ipw-fleet`: the manifests `helm template` renders for given values
//! (replicas, probes, Secrets mounted rather than written into env, the agent DaemonSet on GPU
//! nodes with a durable spool, ServiceMonitors), the render failing without a database, the
//! values schema refusing bad values, and `helm lint`. `scripts/test` provisions `helm`
//! (`IPW_TEST_HELM`); no cluster is needed.

use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A database URL whose password must never appear in a pod spec.
const DATABASE_URL: &str = "postgres://ipw:s3cret-password@db.example:5432/ipw";
const CA_SECRET: &str = "fleet-ca";
const ADMIN_SECRET: &str = "fleet-admin";
const ADMIN_KEY: &str = "token";
const JOIN_SECRET: &str = "fleet-join";
const CA_HASH: &str = "sha256:267d0c7f4b7e5a4e0f1d2c3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f70819";

/// The coordinator with an external database, the CA and admin token from existing Secrets.
fn base() -> Vec<String> {
    [
        format!("externalDatabase.url={DATABASE_URL}"),
        format!("coordinator.tls.existingSecret={CA_SECRET}"),
        format!("coordinator.adminToken.existingSecret={ADMIN_SECRET}"),
        format!("coordinator.adminToken.key={ADMIN_KEY}"),
    ]
    .into()
}

/// `base()`, three replicas, agents on GPU nodes, scraping and traces.
fn full() -> Vec<String> {
    let mut sets = base();
    sets.extend(
        [
            "coordinator.replicas=3",
            "agent.enabled=true",
            &format!("agent.joinToken.existingSecret={JOIN_SECRET}"),
            &format!("agent.caCertHash={CA_HASH}"),
            "agent.runtimeClassName=nvidia-cdi",
            "agent.nodeSelector.ipw/pool=gpu",
            "agent.tolerations[0].key=ipw/gpu-only",
            "agent.tolerations[0].operator=Exists",
            "agent.tolerations[0].effect=NoSchedule",
            "serviceMonitor.enabled=true",
            "otel.endpoint=http://otel-collector.monitoring.svc:4317",
        ]
        .map(String::from),
    );
    sets
}

fn helm() -> String {
    std::env::var("IPW_TEST_HELM").expect(
        "IPW_TEST_HELM is unset: run the tests with scripts/test, which provisions helm (scripts/provision-helm)",
    )
}

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../helm/ipw-fleet")
}

/// Runs `helm <args> <chart> --set s...`.
fn run_helm(args: &[&str], sets: &[String]) -> anyhow::Result<Output> {
    let mut cmd = Command::new(helm());
    cmd.args(args).arg(chart());
    for set in sets {
        cmd.args(["--set", set]);
    }
    Ok(cmd.output()?)
}

/// `helm template` of release `ipw` in namespace `fleet`.
const TEMPLATE: &[&str] = &["template", "--namespace", "fleet", "ipw"];

/// The documents `helm template` renders for `sets`.
fn render(sets: &[String]) -> anyhow::Result<Vec<Value>> {
    let out = run_helm(TEMPLATE, sets)?;
    anyhow::ensure!(out.status.success(), "helm template failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(std::str::from_utf8(&out.stdout)?) {
        let doc = Value::deserialize(doc)?;
        if !doc.is_null() {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// The error of a render that must fail.
fn render_error(sets: &[String]) -> anyhow::Result<String> {
    let out = run_helm(TEMPLATE, sets)?;
    anyhow::ensure!(!out.status.success(), "helm template succeeded with {sets:?}");
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The one document of `kind`.
fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Every container of a pod spec, init containers included.
fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    items(&pod["initContainers"]).iter().chain(items(&pod["containers"]))
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    containers(pod).find(|c| c["name"] == name).unwrap_or_else(|| panic!("no container {name}"))
}

/// The literal value of an env var (None when absent or taken from elsewhere).
fn env<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    items(&c["env"]).iter().find(|e| e["name"] == name).and_then(|e| e["value"].as_str())
}

fn volume<'a>(pod: &'a Value, name: &Value) -> &'a Value {
    items(&pod["volumes"]).iter().find(|v| &v["name"] == name).unwrap_or_else(|| panic!("no volume {name}"))
}

/// The mount that holds `path` (the deepest), and its volume.
fn mount_of<'a>(pod: &'a Value, c: &'a Value, path: &str) -> (&'a Value, &'a Value) {
    let mount = items(&c["volumeMounts"])
        .iter()
        .filter(|m| m["mountPath"].as_str().is_some_and(|p| Path::new(path).starts_with(p)))
        .max_by_key(|m| m["mountPath"].as_str().map_or(0, str::len))
        .unwrap_or_else(|| panic!("no volume of container {} holds {path}", c["name"]));
    (mount, volume(pod, &mount["name"]))
}

/// The pod specs of the Deployments, StatefulSets and DaemonSets rendered.
fn pod_specs(docs: &[Value]) -> Vec<&Value> {
    docs.iter()
        .filter(|d| ["Deployment", "StatefulSet", "DaemonSet"].iter().any(|k| d["kind"] == *k))
        .map(|d| &d["spec"]["template"]["spec"])
        .collect()
}

/// The port number a probe's `port` names, on container `c`.
fn probe_port(c: &Value, probe: &Value) -> Option<u64> {
    let port = &probe["httpGet"]["port"];
    port.as_u64()
        .or_else(|| items(&c["ports"]).iter().find(|p| &p["name"] == port).and_then(|p| p["containerPort"].as_u64()))
}

#[test]
fn the_coordinator_deployment_has_the_replicas_given() -> anyhow::Result<()> {
    let docs = render(&full())?;
    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3, "coordinator.replicas=3");
    let mut sets = base();
    sets.push("coordinator.replicas=5".into());
    assert_eq!(one(&render(&sets)?, "Deployment")["spec"]["replicas"], 5);
    assert_eq!(one(&render(&base())?, "Deployment")["spec"]["replicas"], 2, "the default is 2 replicas");
    Ok(())
}

/// The probes of `c` hit /healthz and /readyz on the port its metrics listener serves.
fn assert_probes(c: &Value, metrics_port: u64) {
    let name = &c["name"];
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let probe = &c[probe];
        assert_eq!(probe["httpGet"]["path"], path, "{name}: the probe path");
        assert_eq!(probe_port(c, probe), Some(metrics_port), "{name}: {path} must be probed on the metrics port");
    }
    let listen = env(c, "IPW_METRICS_LISTEN").unwrap_or_else(|| panic!("{name}: no IPW_METRICS_LISTEN"));
    assert!(listen.ends_with(&format!(":{metrics_port}")), "{name}: metrics listen on {listen}");
}

#[test]
fn probes_hit_healthz_and_readyz_on_the_metrics_port() -> anyhow::Result<()> {
    let docs = render(&full())?;
    let coordinator = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_probes(container(coordinator, "coordinator"), 9464);
    let agent = &one(&docs, "DaemonSet")["spec"]["template"]["spec"];
    assert_probes(container(agent, "agent"), 9465);

    let mut sets = full();
    sets.extend(["coordinator.metricsPort=9100", "agent.metricsPort=9101"].map(String::from));
    let docs = render(&sets)?;
    assert_probes(container(&one(&docs, "Deployment")["spec"]["template"]["spec"], "coordinator"), 9100);
    assert_probes(container(&one(&docs, "DaemonSet")["spec"]["template"]["spec"], "agent"), 9101);
    Ok(())
}

/// The read-only Secret volume that holds `path` in container `c`; returns its Secret's name.
fn secret_holding<'a>(pod: &'a Value, c: &'a Value, path: &str) -> &'a str {
    let (mount, volume) = mount_of(pod, c, path);
    assert_eq!(mount["readOnly"], true, "{path} must be mounted read-only");
    volume["secret"]["secretName"].as_str().unwrap_or_else(|| panic!("{path} is not on a Secret volume: {volume}"))
}

#[test]
fn the_ca_and_the_admin_token_are_read_only_secret_volumes_the_coordinator_reads() -> anyhow::Result<()> {
    let docs = render(&full())?;
    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    let c = container(pod, "coordinator");

    let tls_dir = env(c, "IPW_TLS_DIR").expect("IPW_TLS_DIR names the CA's folder");
    assert_eq!(secret_holding(pod, c, tls_dir), CA_SECRET);
    let (mount, volume) = mount_of(pod, c, tls_dir);
    assert_eq!(mount["mountPath"], tls_dir, "the CA Secret is the whole folder");
    let files: Vec<&Value> = items(&volume["secret"]["items"]).iter().map(|i| &i["path"]).collect();
    assert!(files.is_empty() || files == ["ca.pem", "ca.key"], "the folder holds ca.pem and ca.key: {files:?}");

    let token_file = env(c, "IPW_ADMIN_TOKEN_FILE").expect("IPW_ADMIN_TOKEN_FILE names the token's file");
    assert_eq!(secret_holding(pod, c, token_file), ADMIN_SECRET);
    let (mount, volume) = mount_of(pod, c, token_file);
    let relative = Path::new(token_file).strip_prefix(mount["mountPath"].as_str().unwrap_or_default())?;
    let item = items(&volume["secret"]["items"]).iter().find(|i| i["path"] == relative.to_str().unwrap_or_default());
    assert_eq!(item.map(|i| &i["key"]), Some(&Value::from(ADMIN_KEY)), "the file is the Secret's key {ADMIN_KEY}");

    // Without an existing Secret the chart makes one, and the coordinator reads that.
    let docs = render(&[
        format!("externalDatabase.url={DATABASE_URL}"),
        format!("coordinator.tls.existingSecret={CA_SECRET}"),
    ])?;
    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    let c = container(pod, "coordinator");
    let name = secret_holding(pod, c, env(c, "IPW_ADMIN_TOKEN_FILE").unwrap_or_default());
    let secret =
        named(&docs, "Secret", name).unwrap_or_else(|| panic!("the admin token Secret {name} is not rendered"));
    assert!(secret["data"]["admin-token"].as_str().is_some_and(|t| t.len() >= 44), "a token of 32+ characters");
    Ok(())
}

/// Env names that hold secrets; `_FILE` and `_DIR` ones hold a path to them instead.
fn names_a_secret(name: &str) -> bool {
    ["TOKEN", "PASSWORD", "DATABASE_URL", "SECRET", "KEY"].iter().any(|w| name.to_uppercase().contains(w))
}

/// No env var of any container of `docs` carries a secret as a literal value.
fn assert_no_literal_secrets(docs: &[Value]) {
    for pod in pod_specs(docs) {
        for c in containers(pod) {
            for e in items(&c["env"]) {
                let name = e["name"].as_str().unwrap_or_default();
                if !names_a_secret(name) {
                    continue;
                }
                if name.ends_with("_FILE") || name.ends_with("_DIR") {
                    let path = e["value"].as_str().unwrap_or_default();
                    secret_holding(pod, c, path);
                    continue;
                }
                assert!(e.get("value").is_none(), "{}: {name} has a literal value", c["name"]);
                assert!(
                    e["valueFrom"]["secretKeyRef"]["name"].is_string(),
                    "{}: {name} is not from a Secret",
                    c["name"]
                );
            }
        }
        let spec = pod.to_string();
        assert!(!spec.contains("s3cret-password"), "the database password is in a pod spec: {spec}");
    }
}

#[test]
fn no_container_env_holds_a_secret_as_a_literal_value() -> anyhow::Result<()> {
    let docs = render(&full())?;
    assert_no_literal_secrets(&docs);
    let coordinator = container(&one(&docs, "Deployment")["spec"]["template"]["spec"], "coordinator");
    let url = items(&coordinator["env"]).iter().find(|e| e["name"] == "IPW_DATABASE_URL");
    assert!(url.is_some_and(|e| e["valueFrom"]["secretKeyRef"].is_object()), "IPW_DATABASE_URL from a Secret");

    // The bundled PostgreSQL: its password and the URL built on it are Secrets too.
    let sets = ["postgresql.enabled=true", "coordinator.tls.existingSecret=fleet-ca", "agent.enabled=true"]
        .map(String::from)
        .into_iter()
        .chain([format!("agent.joinToken.existingSecret={JOIN_SECRET}"), format!("agent.caCertHash={CA_HASH}")])
        .collect::<Vec<_>>();
    let docs = render(&sets)?;
    assert_no_literal_secrets(&docs);
    let postgres = container(&one(&docs, "StatefulSet")["spec"]["template"]["spec"], "postgresql");
    assert!(env(postgres, "POSTGRES_PASSWORD").is_none());
    Ok(())
}

/// The join init container: guarded by the config file, the token read from a Secret file.
fn assert_joins_once(pod: &Value) {
    let join = container(pod, "join");
    let command: Vec<&str> = items(&join["command"]).iter().filter_map(Value::as_str).collect();
    assert!(command.iter().any(|a| a.contains(r#"[ -f "$IPW_AGENT_CONFIG" ] ||"#)), "join is guarded: {command:?}");
    let token_file = command.iter().skip_while(|a| **a != "--token-file").nth(1).expect("join --token-file");
    assert_eq!(secret_holding(pod, join, token_file), JOIN_SECRET);
    assert!(command.windows(2).any(|w| w == ["--ca-cert-hash", CA_HASH]), "join pins the CA: {command:?}");
    assert!(command.contains(&"https://ipw-ipw-fleet-coordinator.fleet.svc:7443"), "the in-cluster URL: {command:?}");
}

#[test]
fn the_agent_daemonset_runs_on_gpu_nodes_with_a_durable_spool() -> anyhow::Result<()> {
    let docs = render(&full())?;
    let pod = &one(&docs, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(pod["runtimeClassName"], "nvidia-cdi");
    assert_eq!(pod["nodeSelector"]["ipw/pool"], "gpu");
    assert_eq!(pod["tolerations"][0]["key"], "ipw/gpu-only");
    assert!(pod["terminationGracePeriodSeconds"].as_u64().is_some_and(|s| s >= 60), "time to finish queries");
    assert_joins_once(pod);

    let agent = container(pod, "agent");
    for var in ["IPW_SPOOL_DIR", "IPW_AGENT_CONFIG"] {
        let path = env(agent, var).unwrap_or_else(|| panic!("{var} is set"));
        let (mount, volume) = mount_of(pod, agent, path);
        assert_ne!(mount["readOnly"], true, "{var} must be writable");
        assert!(volume["hostPath"]["path"].is_string(), "{var} ({path}) must be on a hostPath: {volume}");
    }
    assert_eq!(env(agent, "OTEL_EXPORTER_OTLP_ENDPOINT"), Some("http://otel-collector.monitoring.svc:4317"));
    let coordinator = container(&one(&docs, "Deployment")["spec"]["template"]["spec"], "coordinator");
    assert_eq!(env(coordinator, "OTEL_EXPORTER_OTLP_ENDPOINT"), Some("http://otel-collector.monitoring.svc:4317"));

    // On a shared claim, each node keeps its own folder.
    let mut sets = full();
    sets.extend(["agent.persistence.type=pvc", "agent.persistence.pvc.existingClaim=agents"].map(String::from));
    let docs = render(&sets)?;
    let pod = &one(&docs, "DaemonSet")["spec"]["template"]["spec"];
    let agent = container(pod, "agent");
    let (mount, volume) = mount_of(pod, agent, env(agent, "IPW_SPOOL_DIR").unwrap_or_default());
    assert_eq!(volume["persistentVolumeClaim"]["claimName"], "agents");
    assert_eq!(mount["subPathExpr"], "$(NODE_NAME)");

    assert!(of_kind(&render(&base())?, "DaemonSet").is_empty(), "agents are off by default");
    Ok(())
}

#[test]
fn service_monitors_are_rendered_only_when_enabled() -> anyhow::Result<()> {
    let docs = render(&full())?;
    let monitors = of_kind(&docs, "ServiceMonitor");
    assert_eq!(monitors.len(), 2, "one for the coordinators, one for the agents");
    for monitor in monitors {
        assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
        let selector = monitor["spec"]["selector"]["matchLabels"].as_object().expect("a label selector");
        let service = of_kind(&docs, "Service")
            .into_iter()
            .find(|s| selector.iter().all(|(k, v)| &s["metadata"]["labels"][k] == v))
            .unwrap_or_else(|| panic!("{} selects no Service", monitor["metadata"]["name"]));
        let endpoint = &monitor["spec"]["endpoints"][0];
        assert_eq!(endpoint["path"], "/metrics");
        assert!(items(&service["spec"]["ports"]).iter().any(|p| p["name"] == endpoint["port"]), "{service}");
    }
    let mut sets = full();
    sets.push("serviceMonitor.enabled=false".into());
    assert!(of_kind(&render(&sets)?, "ServiceMonitor").is_empty());
    Ok(())
}

#[test]
fn rendering_without_exactly_one_database_fails_with_a_clear_message() -> anyhow::Result<()> {
    let none = render_error(&[format!("coordinator.tls.existingSecret={CA_SECRET}")])?;
    assert!(none.contains("configure exactly one database") && none.contains("found none"), "{none}");
    let mut both = base();
    both.push("postgresql.enabled=true".into());
    let both = render_error(&both)?;
    assert!(both.contains("found externalDatabase.url, postgresql.enabled"), "{both}");
    Ok(())
}

#[test]
fn the_values_schema_rejects_bad_values() -> anyhow::Result<()> {
    for (bad, says) in [
        ("coordinator.replicas=-1", "coordinator.replicas"),
        ("logFormat=xml", "logFormat"),
        ("agent.caCertHash=md5:abc", "agent.caCertHash"),
    ] {
        let mut sets = full();
        sets.push(bad.into());
        let error = render_error(&sets)?;
        assert!(error.contains("schema") && error.contains(says), "{bad}: {error}");
    }
    Ok(())
}

#[test]
fn helm_lint_passes() -> anyhow::Result<()> {
    let out = run_helm(&["lint", "--strict"], &full())?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("0 chart(s) failed"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same lint does catch a value the schema refuses.
    let mut bad = full();
    bad.push("logFormat=xml".into());
    assert!(!run_helm(&["lint", "--strict"], &bad)?.status.success(), "helm lint accepted logFormat=xml");
    Ok(())
}
