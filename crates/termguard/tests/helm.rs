//! The Helm chart `deploy/helm/termguard` and the plain manifests rendered from it
//! (`deploy/manifests/`), checked against termguard itself and against the real control plane.
//!
//! * The chart and `termguard run --help` cannot drift: every flag is a documented `run.*`
//!   value with termguard's default, and every value reaches its flag.
//! * `deploy/manifests/termguard.yaml` is what the chart renders, so the ClusterRole the real
//!   control plane binds to the `termguard` user (scripts/cluster.sh) is the chart's.
//! * On the real control plane (`scripts/cluster.sh`, named by `TERMGUARD_CLUSTER_DIR`): every
//!   rendered manifest is accepted by a server-side dry run, then applied; kube-scheduler places
//!   the two replicas as the chart says; termguard started on the host with the rendered
//!   Deployment's arguments and environment, as the chart's ServiceAccount, drains a node on a
//!   lifecycle notice of the AWS test peer and completes the lifecycle action.
//!
//! helm is `$TERMGUARD_HELM` (set by scripts/test.sh) or `scripts/helm.sh build` (built from its
//! Go module on first use).

#[path = "common/cluster.rs"]
#[macro_use]
mod cluster;
#[path = "common/moto.rs"]
mod moto;

use cluster::{Backend, TestCluster};
use moto::Moto;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

type Result<T = ()> = anyhow::Result<T>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chart() -> PathBuf {
    root().join("deploy/helm/termguard")
}

/// The helm binary: `$TERMGUARD_HELM`, else the one `scripts/helm.sh build` prints.
fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Some(h) = std::env::var_os("TERMGUARD_HELM") {
            return PathBuf::from(h);
        }
        let out = Command::new(root().join("scripts/helm.sh"))
            .arg("build")
            .output()
            .expect("scripts/helm.sh runs");
        assert!(
            out.status.success(),
            "scripts/helm.sh build failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        PathBuf::from(path)
    })
}

/// `helm template RELEASE CHART --namespace NS --values (values)`: stdout, or stderr as the error.
fn render(release: &str, namespace: &str, values: &Value) -> Result<String> {
    let file = tempfile("values", "json");
    std::fs::write(&file, values.to_string())?;
    let out = Command::new(helm())
        .args(["template", release])
        .arg(chart())
        .args(["--namespace", namespace, "--values"])
        .arg(&file)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Every YAML document of a multi-document text, as JSON (empty documents left out).
fn documents(yaml: &str) -> Result<Vec<Value>> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(yaml) {
        let v = Value::deserialize(de)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// The one document of `kind`.
fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in the rendered chart");
    found[0]
}

fn tempfile(tag: &str, ext: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "helm-{tag}-{}-{}.{ext}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}

/// `--some-flag` -> `someFlag`.
fn camel(flag: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in flag.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// One option of `termguard run --help`.
#[derive(Debug)]
struct Flag {
    name: String,
    takes_value: bool,
    default: Option<String>,
}

/// The options of `termguard run --help` (long help), `--help` itself left out.
fn run_flags() -> Vec<Flag> {
    let out = Command::new(env!("CARGO_BIN_EXE_termguard"))
        .args(["run", "--help"])
        .output()
        .expect("termguard run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut flags: Vec<Flag> = Vec::new();
    for line in help.lines() {
        let t = line.trim();
        // "--queue-url <QUEUE_URL>", "-h, --help", "--log-json"
        let opt = t.strip_prefix("-h, ").unwrap_or(t);
        if line.starts_with("  ") && !line.starts_with("          ") && opt.starts_with("--") {
            let mut parts = opt.split_whitespace();
            let name = parts.next().unwrap_or_default().trim_start_matches("--");
            flags.push(Flag {
                name: name.to_string(),
                takes_value: parts.next().is_some_and(|v| v.starts_with('<')),
                default: None,
            });
        } else if let (Some(d), Some(last)) = (t.strip_prefix("[default: "), flags.last_mut()) {
            last.default = Some(d.trim_end_matches(']').to_string());
        }
    }
    flags.retain(|f| f.name != "help");
    assert!(
        flags.len() >= 15 && flags.iter().any(|f| f.name == "queue-url"),
        "termguard run --help parsed into {flags:?}:\n{help}"
    );
    flags
}

fn values_yaml() -> (String, Value) {
    let text = std::fs::read_to_string(chart().join("values.yaml")).expect("values.yaml");
    let v: Value = serde_yaml_ng::from_str(&text).expect("values.yaml is YAML");
    (text, v)
}

/// The doc comment (`# -- ...` and its continuation lines) right above each key of
/// values.yaml, by dotted path.
fn documented_keys(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut doc: Option<String> = None;
    for line in text.lines() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        if let Some(d) = t.strip_prefix("# -- ") {
            doc = Some(d.to_string());
        } else if let Some(d) = t.strip_prefix('#') {
            if let Some(doc) = doc.as_mut() {
                doc.push(' ');
                doc.push_str(d.trim());
            }
        } else if let Some((key, _)) = t.split_once(':').filter(|(k, _)| {
            !k.is_empty() && !k.starts_with('-') && k.chars().all(|c| c.is_ascii_alphanumeric())
        }) {
            while stack.last().is_some_and(|(i, _)| *i >= indent) {
                stack.pop();
            }
            stack.push((indent, key.to_string()));
            if let Some(d) = doc.take() {
                let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
                out.insert(path.join("."), d);
            }
        } else {
            doc = None;
        }
    }
    out
}

#[test]
fn every_run_flag_is_a_documented_chart_value_with_termguards_default() {
    let flags = run_flags();
    let (text, values) = values_yaml();
    let docs = documented_keys(&text);
    let readme = std::fs::read_to_string(chart().join("README.md")).expect("chart README");
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart().join("values.schema.json")).expect("schema"),
    )
    .expect("values.schema.json is JSON");
    let run = values["run"].as_object().expect("values.yaml has run:");

    let from_help: BTreeSet<String> = flags.iter().map(|f| camel(&f.name)).collect();
    let in_values: BTreeSet<String> = run.keys().cloned().collect();
    assert_eq!(
        from_help, in_values,
        "termguard run's flags (left) and the chart's run.* values (right) differ"
    );
    // A boolean the chart turns on by its own choice, said in its comment.
    let chart_choices = ["log-json"];
    for f in &flags {
        let key = camel(&f.name);
        let value = &run[&key];
        let doc = docs
            .get(&format!("run.{key}"))
            .unwrap_or_else(|| panic!("run.{key} has no `# --` comment in values.yaml"));
        assert!(
            doc.contains(&format!("`--{}", f.name)),
            "run.{key}'s comment names its flag --{}: {doc}",
            f.name
        );
        match (&f.default, f.takes_value) {
            (Some(d), _) => assert_eq!(
                value
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or(value.to_string()),
                *d,
                "run.{key}: the chart's default is not termguard's"
            ),
            (None, true) => assert!(
                *value == json!("") || *value == json!([]),
                "run.{key}: empty (termguard's default), not {value}"
            ),
            (None, false) => {
                assert!(value.is_boolean(), "run.{key} is a boolean");
                if !chart_choices.contains(&f.name.as_str()) {
                    assert_eq!(value, false, "run.{key}: off, as in termguard");
                }
            }
        }
        assert!(
            readme.contains(&format!("| `run.{key}` |")),
            "the chart README's table lists run.{key}"
        );
        let typed = &schema["properties"]["run"]["properties"][&key];
        let want = if f.takes_value {
            if value.is_u64() {
                "integer"
            } else if value.is_array() {
                "array" // a repeatable flag: its values, comma-joined
            } else {
                "string"
            }
        } else {
            "boolean"
        };
        assert_eq!(typed["type"], want, "values.schema.json types run.{key}");
    }
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["properties"]["run"]["additionalProperties"], false);
    // Every documented value is in the README's table, and the table lists nothing else.
    let rows: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once("` |").map(|(k, _)| k.to_string()))
        .collect();
    let documented: BTreeSet<String> = docs.keys().cloned().collect();
    assert_eq!(
        documented, rows,
        "values.yaml's documented keys (left), README rows (right)"
    );
    // And every top-level value is typed by the schema.
    for key in values.as_object().expect("values").keys() {
        assert!(
            schema["properties"][key].is_object(),
            "values.schema.json has {key}"
        );
    }
}

/// The `--flag[=value]` arguments after `run`, by flag.
fn flags_of(args: &[String]) -> BTreeMap<String, Option<String>> {
    assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
    args[1..]
        .iter()
        .map(|a| {
            let a = a.strip_prefix("--").expect("every argument is a --flag");
            match a.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (a.to_string(), None),
            }
        })
        .collect()
}

fn container(docs: &[Value]) -> &Value {
    &of_kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn args_of(docs: &[Value]) -> Vec<String> {
    container(docs)["args"]
        .as_array()
        .expect("container args")
        .iter()
        .map(|a| a.as_str().expect("string argument").to_string())
        .collect()
}

#[test]
fn every_run_value_reaches_its_flag() -> Result {
    let set = json!({
        "queueUrl": "https://sqs.eu-west-1.amazonaws.com/111122223333/q",
        "clusterName": "prod-1",
        "managedAsgTag": "team=infra",
        "drainOnRebalance": true,
        "completeLaunch": true,
        "launchTimeout": "7m",
        "deadlineMargin": "3s",
        "maxInFlight": 17,
        "receivers": 2,
        "maxConcurrentDrains": 5,
        "visibilityTimeout": "45s",
        "healthListen": "0.0.0.0:9191",
        "noEvents": true,
        "log": "termguard=debug,kube=warn",
        "logJson": false,
        "webhookUrl": "https://hooks.example.com/T1",
        "webhookTemplate": "/etc/termguard/webhook.json",
        "webhookEvents": ["drain-started", "completed-at-deadline"],
        "config": "/etc/termguard/config.yaml",
        "kubeconfig": "/etc/termguard/kubeconfig",
        "context": "ops"
    });
    let flags = run_flags();
    let docs = documents(&render("tg", "ops", &json!({"run": set}))?)?;
    let got = flags_of(&args_of(&docs));
    let mut want = BTreeMap::new();
    for f in &flags {
        let v = &set[camel(&f.name)];
        match v {
            Value::Bool(true) => {
                want.insert(f.name.clone(), None);
            }
            Value::Bool(false) => {}
            Value::String(s) => {
                want.insert(f.name.clone(), Some(s.clone()));
            }
            Value::Array(items) => {
                let joined: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
                want.insert(f.name.clone(), Some(joined.join(",")));
            }
            other => {
                want.insert(f.name.clone(), Some(other.to_string()));
            }
        }
    }
    assert_eq!(got, want);
    // The --health-listen port is the container's, which the probes and the Service name.
    let c = container(&docs);
    assert_eq!(c["ports"][0]["containerPort"], 9191);
    assert_eq!(c["ports"][0]["name"], "http");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "http");
    assert_eq!(
        of_kind(&docs, "Service")["spec"]["ports"][0]["targetPort"],
        "http"
    );

    // With the defaults: only the flags with a value, and no queue URL is an error.
    let defaults = flags_of(&args_of(&documents(&render(
        "tg",
        "ops",
        &json!({"run": {"queueUrl": "https://q"}}),
    )?)?));
    for f in &flags {
        assert_eq!(
            defaults.contains_key(&f.name),
            f.default.is_some() || f.name == "queue-url" || f.name == "log-json",
            "--{} with the chart's defaults: {defaults:?}",
            f.name
        );
    }
    let missing = render("tg", "ops", &json!({})).expect_err("no queue URL");
    assert!(
        missing.to_string().contains("run.queueUrl is required"),
        "{missing}"
    );
    // The schema refuses a value of the wrong type, and a key the chart does not know.
    let typo = render(
        "tg",
        "ops",
        &json!({"run": {"queueUrl": "q", "recievers": 3}}),
    );
    assert!(typo.is_err_and(|e| e.to_string().contains("recievers")));
    let wrong = render(
        "tg",
        "ops",
        &json!({"run": {"queueUrl": "q", "receivers": "4"}}),
    );
    assert!(wrong.is_err_and(|e| e.to_string().contains("/run/receivers")));
    Ok(())
}

#[test]
fn the_plain_manifests_are_the_chart_rendered() -> Result {
    let out = Command::new(root().join("scripts/render-manifests.sh"))
        .arg("--check")
        .env("TERMGUARD_HELM", helm())
        .output()?;
    assert!(
        out.status.success(),
        "deploy/manifests/termguard.yaml is stale; run scripts/render-manifests.sh:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(root().join("deploy/manifests/termguard.yaml"))?;
    let docs = documents(&text)?;
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    let want: BTreeSet<&str> = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
    ]
    .into();
    assert_eq!(kinds, want);
    // The chart runs the termguard it ships with (appVersion is the default image tag).
    let chart_yaml: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart().join("Chart.yaml"))?)?;
    assert_eq!(chart_yaml["appVersion"], env!("CARGO_PKG_VERSION"));
    assert!(
        of_kind(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .is_some_and(|i| i.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))))
    );
    // scripts/cluster.sh and scripts/rbac-check.py read the ClusterRole named termguard here.
    assert_eq!(
        of_kind(&docs, "ClusterRole")["metadata"]["name"],
        "termguard"
    );
    let sa = of_kind(&docs, "ServiceAccount");
    assert!(sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].is_string());
    let d = of_kind(&docs, "Deployment");
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    let anti =
        &pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        anti["labelSelector"]["matchLabels"],
        d["spec"]["selector"]["matchLabels"]
    );
    let spread = &pod["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(
        spread["labelSelector"]["matchLabels"],
        d["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        of_kind(&docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        d["spec"]["selector"]["matchLabels"]
    );
    Ok(())
}

#[test]
fn the_service_monitor_scrapes_metrics_through_the_service() -> Result {
    let values = json!({"run": {"queueUrl": "q"}, "serviceMonitor": {"enabled": true, "labels": {"release": "kps"}}});
    let docs = documents(&render("tg", "mon", &values)?)?;
    let sm = of_kind(&docs, "ServiceMonitor");
    let svc = of_kind(&docs, "Service");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["labels"]["release"], "kps");
    // It selects the Service by labels the Service has, in its namespace, on its port's name.
    for (k, v) in sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(&svc["metadata"]["labels"][k], v, "the Service has {k}");
    }
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"],
        json!(["mon"])
    );
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    // Off by default (it needs prometheus-operator's CRDs), and never without the Service.
    let plain = documents(&render("tg", "mon", &json!({"run": {"queueUrl": "q"}}))?)?;
    assert!(plain.iter().all(|d| d["kind"] != "ServiceMonitor"));
    let orphan = json!({"run": {"queueUrl": "q"}, "serviceMonitor": {"enabled": true}, "service": {"enabled": false}});
    assert!(render("tg", "mon", &orphan).is_err());
    Ok(())
}

// ------------------------------------------------------------------------------------------
// The real control plane.

/// `kubectl --kubeconfig ADMIN ARGS` (the real kubectl 1.32): stdout, or the error.
fn kubectl(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn kubectl_json(dir: &Path, args: &[&str]) -> Result<Value> {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    Ok(serde_json::from_str(&kubectl(dir, &a)?)?)
}

/// Deletes what the test applied (its namespace and its cluster-scoped objects) when dropped,
/// failed test or not, and waits for it to go: the next real-backend test starts by waiting
/// for every pod of the cluster to be gone.
struct Applied {
    dir: PathBuf,
    manifest: PathBuf,
}

impl Drop for Applied {
    fn drop(&mut self) {
        let manifest = self.manifest.to_string_lossy().into_owned();
        if let Err(e) = kubectl(
            &self.dir,
            &[
                "delete",
                "-f",
                &manifest,
                "--ignore-not-found",
                "--wait=true",
                "--timeout=120s",
            ],
        ) {
            eprintln!("cleaning up the chart's objects: {e}");
        }
    }
}

/// A kubeconfig for the admin kubeconfig's cluster, authenticated by `token`.
fn kubeconfig_with_token(dir: &Path, token: &str) -> Result<PathBuf> {
    let admin = std::fs::read_to_string(dir.join("kubeconfig"))?;
    let mut replaced = 0;
    let text: Vec<String> = admin
        .lines()
        .map(|l| match l.split_once("token: ") {
            Some((indent, _)) if indent.trim().is_empty() => {
                replaced += 1;
                format!("{indent}token: {token}")
            }
            _ => l.to_string(),
        })
        .collect();
    anyhow::ensure!(
        replaced == 1,
        "one token in {}",
        dir.join("kubeconfig").display()
    );
    let path = tempfile("sa", "kubeconfig");
    std::fs::write(&path, text.join("\n") + "\n")?;
    Ok(path)
}

const WORKLOADS: &str = "
  - {kind: Deployment, name: web, replicas: 12, shutdownMs: 800, requests: {cpu: 250m}}
  - {kind: DaemonSet, name: agent, namespace: kube-system, tolerations: [{operator: Exists}]}
";

fn ns_of(pod: &Value) -> String {
    pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn owned_by_daemonset(pod: &Value) -> bool {
    pod["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|o| o.iter().any(|r| r["kind"] == "DaemonSet"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_applied_to_the_real_control_plane_runs_a_drain() -> Result {
    if !cluster::real_available("the_chart_applied_to_the_real_control_plane_runs_a_drain") {
        return Ok(());
    }
    let moto = Moto::start().await;
    let fleet = moto.fleet("helm", 6, 30, &[]).await;
    let mut nodes = BTreeMap::new();
    let mut scenario =
        String::from("name: helm\ndefaults: {startupMs: 50, shutdownMs: 200}\nnodes:\n");
    for (i, inst) in fleet.instances.iter().enumerate() {
        let name = format!("ip-10-0-9-{}.ec2.internal", 10 + i);
        scenario.push_str(&format!(
            "  - {{name: {name}, zone: {}, instanceId: {}, group: helm}}\n",
            inst.zone, inst.id
        ));
        nodes.insert(inst.id.clone(), name);
    }
    scenario.push_str("workloads:");
    scenario.push_str(WORKLOADS);
    let c = TestCluster::start_settled(Backend::Real, &scenario).await;
    let dir = c.real_dir().expect("real backend").to_path_buf();

    // Names of its own, so the cluster's ClusterRole `termguard` (bound to the `termguard`
    // user by scripts/cluster.sh, used by every other real-backend test) is left alone.
    let name = format!("termguard-helm-{}", std::process::id());
    let ns = name.clone();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let health = format!("127.0.0.1:{port}");
    let role_arn = "arn:aws:iam::123456789012:role/termguard-helm-test";
    let values = json!({
        "fullnameOverride": name,
        "createNamespace": true,
        // The host process stands in for a pod: it listens on loopback, on a free port.
        "run": {"queueUrl": fleet.queue_url, "clusterName": "test-cluster", "healthListen": health},
        "aws": {"region": "us-east-1"},
        "extraEnv": [{"name": "AWS_ENDPOINT_URL", "value": moto.url}],
        "serviceAccount": {"roleArn": role_arn},
    });
    let rendered = render("helm-test", &ns, &values)?;
    let docs = documents(&rendered)?;
    let manifest = tempfile("rendered", "yaml");
    std::fs::write(&manifest, &rendered)?;
    let manifest_s = manifest.to_string_lossy().into_owned();
    let ns_file = tempfile("namespace", "yaml");
    std::fs::write(
        &ns_file,
        serde_json::to_string(of_kind(&docs, "Namespace"))?,
    )?;
    let ns_file_s = ns_file.to_string_lossy().into_owned();
    let applied = Applied {
        dir: dir.clone(),
        manifest: manifest.clone(),
    };
    let apply = [
        "apply",
        "--server-side",
        "--field-manager=termguard-helm-test",
    ];

    // A server-side dry run checks each object against the API server's schemas and admission
    // without persisting it; the namespaced ones need their Namespace to exist, so it goes first.
    let dry = kubectl(
        &dir,
        &[&apply[..], &["--dry-run=server", "-f", &ns_file_s]].concat(),
    )?;
    assert!(dry.contains("serverside-applied (server dry run)"), "{dry}");
    kubectl(&dir, &[&apply[..], &["-f", &ns_file_s]].concat())?;
    let dry = kubectl(
        &dir,
        &[&apply[..], &["--dry-run=server", "-f", &manifest_s]].concat(),
    )?;
    assert_eq!(
        dry.matches("serverside-applied (server dry run)").count(),
        docs.len(),
        "every rendered object passes the server's dry run:\n{dry}"
    );
    let out = kubectl(&dir, &[&apply[..], &["-f", &manifest_s]].concat())?;
    assert_eq!(
        out.matches("serverside-applied").count(),
        docs.len(),
        "{out}"
    );

    // Each object is there as rendered.
    for d in &docs {
        let kind = d["kind"].as_str().unwrap_or_default().to_lowercase();
        let obj_name = d["metadata"]["name"].as_str().unwrap_or_default();
        let mut args = vec!["get", kind.as_str(), obj_name];
        if let Some(n) = d["metadata"]["namespace"].as_str() {
            args.extend(["-n", n]);
        }
        let live = kubectl_json(&dir, &args)?;
        assert_eq!(live["metadata"]["name"], obj_name, "{kind} {obj_name}");
    }
    let sa = kubectl_json(&dir, &["get", "serviceaccount", &name, "-n", &ns])?;
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        role_arn
    );
    // The chart's ClusterRole is rule for rule the one the other tests run termguard under.
    let ours = kubectl_json(&dir, &["get", "clusterrole", &name])?;
    let shipped = kubectl_json(&dir, &["get", "clusterrole", "termguard"])?;
    assert_eq!(ours["rules"], shipped["rules"]);
    let binding = kubectl_json(&dir, &["get", "clusterrolebinding", &name])?;
    assert_eq!(binding["roleRef"]["name"], name.as_str());
    assert_eq!(binding["subjects"][0]["namespace"], ns.as_str());

    // kube-scheduler places the two replicas on two nodes in two zones (required
    // anti-affinity, zone spread); KWOK runs them, and the budget then allows one disruption.
    let selector = "app.kubernetes.io/instance=helm-test";
    let scheduled = cluster::eventually(Duration::from_secs(90), || {
        let dir = dir.clone();
        let ns = ns.clone();
        async move {
            let Ok(pods) = kubectl_json(&dir, &["get", "pods", "-n", &ns, "-l", selector]) else {
                return false;
            };
            let items = pods["items"].as_array().cloned().unwrap_or_default();
            items.len() == 2 && items.iter().all(|p| p["status"]["phase"] == "Running")
        }
    })
    .await;
    assert!(
        scheduled,
        "two running replicas:\n{}",
        kubectl(&dir, &["get", "pods,events", "-n", &ns, "-o", "wide"]).unwrap_or_default()
    );
    let pods = kubectl_json(&dir, &["get", "pods", "-n", &ns, "-l", selector])?;
    let pods = pods["items"].as_array().cloned().unwrap_or_default();
    let mut zones = BTreeSet::new();
    let mut on = BTreeSet::new();
    for p in &pods {
        let node = p["spec"]["nodeName"].as_str().unwrap_or_default();
        on.insert(node.to_string());
        let n = c.node(node).await;
        zones.insert(
            n["metadata"]["labels"]["topology.kubernetes.io/zone"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
        assert_eq!(p["spec"]["priorityClassName"], "system-cluster-critical");
        assert!(p["spec"]["priority"].as_i64().unwrap_or(0) >= 2_000_000_000);
    }
    assert_eq!(on.len(), 2, "one replica per node: {on:?}");
    assert_eq!(zones.len(), 2, "replicas in two zones: {zones:?}");
    let budget_ready = cluster::eventually(Duration::from_secs(30), || {
        let dir = dir.clone();
        let (ns, name) = (ns.clone(), name.clone());
        async move {
            kubectl_json(&dir, &["get", "pdb", &name, "-n", &ns])
                .is_ok_and(|p| p["status"]["disruptionsAllowed"] == 1)
        }
    })
    .await;
    assert!(
        budget_ready,
        "the PodDisruptionBudget allows one disruption"
    );

    // termguard, as the image would run it: the rendered Deployment's arguments and
    // environment (the downward API's fields filled in for the first replica, which this
    // process plays), the ServiceAccount's own token in place of the in-cluster one, and test
    // credentials in place of IRSA's web identity. Nothing else of the host's environment.
    let me = &pods[0];
    let me_name = me["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let me_node = me["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let token = kubectl(
        &dir,
        &["create", "token", &name, "-n", &ns, "--duration=1h"],
    )?;
    let kubeconfig = kubeconfig_with_token(&dir, token.trim())?;
    let ctr = container(&docs);
    let args = args_of(&docs);
    let mut env: Vec<(String, String)> = Vec::new();
    for e in ctr["env"].as_array().expect("container env") {
        let key = e["name"].as_str().expect("env name").to_string();
        let value = match (
            &e["value"],
            e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        ) {
            (Value::String(v), _) => v.clone(),
            (_, Some("metadata.name")) => me_name.clone(),
            (_, Some("metadata.namespace")) => ns.clone(),
            other => panic!("an env var the test cannot fill in: {e} ({other:?})"),
        };
        env.push((key, value));
    }
    assert!(env.contains(&("AWS_ENDPOINT_URL".into(), moto.url.clone())));
    let log = tempfile("termguard", "log");
    let audit_from = cluster::audit_len(&dir);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_termguard"))
        .args(&args)
        .env_clear()
        .envs(env)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KUBECONFIG", &kubeconfig)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()?;
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    moto::wait_ready(&health, &log, &mut child).await?;
    // --log-json, from the chart's defaults.
    assert!(logs().lines().any(|l| l.starts_with('{')), "{}", logs());

    let action = moto.scale_in(&fleet.group).await?;
    let instance = action["instance_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let node = nodes[&instance].clone();
    let to_move: Vec<Value> = c
        .pods_on(&node)
        .await
        .into_iter()
        .filter(|p| !owned_by_daemonset(p) && p["metadata"]["name"] != me_name.as_str())
        .collect();
    assert!(!to_move.is_empty(), "the chosen node runs workload pods");
    let ended = moto
        .wait_action_ended(
            action["token"].as_str().unwrap_or_default(),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(ended["state"], "completed", "{ended}\n{}", logs());
    assert_eq!(ended["result"], "CONTINUE", "{ended}");
    assert_eq!(ended["ended_by"], "CompleteLifecycleAction", "{ended}");
    let n = c.node(&node).await;
    assert_eq!(n["spec"]["unschedulable"], true);
    assert_eq!(
        n["metadata"]["annotations"]["termguard.io/drain-phase"],
        "drained"
    );
    for p in &to_move {
        assert!(
            c.pod(&ns_of(p), p["metadata"]["name"].as_str().unwrap_or(""))
                .await
                .is_none_or(|now| cluster::uid(&now) != cluster::uid(p)),
            "{} left the node",
            p["metadata"]["name"]
        );
    }
    if node == me_node {
        // Its own pod is never evicted by its own drain: it leaves with the instance.
        assert!(c.pod(&ns, &me_name).await.is_some(), "own pod kept");
    }
    // All of it under the chart's ClusterRole, through its binding: nothing refused, the
    // evictions made as the ServiceAccount.
    let user = format!("system:serviceaccount:{ns}:{name}");
    let refused: Vec<String> = cluster::audit_events(&dir, audit_from, &user)
        .filter(|e| e["responseStatus"]["code"] == 403)
        .map(|e| format!("{} {}", e["verb"], e["requestURI"]))
        .collect();
    assert!(
        refused.is_empty(),
        "refused to the chart's ServiceAccount: {refused:?}"
    );
    let evicted = cluster::accepted_evictions(&dir, audit_from, &user);
    assert!(
        to_move.iter().all(|p| evicted.contains_key(&format!(
            "{}/{}",
            ns_of(p),
            p["metadata"]["name"].as_str().unwrap_or("")
        ))),
        "every pod evicted as {user}: {evicted:?}"
    );

    let pid = child.id().expect("running").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await?;
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
    assert!(status.success(), "exit {status:?}\n{}", logs());
    drop(applied);
    // Cleaned up: nothing of the chart is left, the cluster's own ClusterRole is.
    assert!(kubectl(&dir, &["get", "clusterrole", &name]).is_err());
    assert!(kubectl(&dir, &["get", "namespace", &ns]).is_err());
    kubectl(&dir, &["get", "clusterrole", "termguard"])?;
    Ok(())
}
