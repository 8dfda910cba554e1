//! Support for the chart tests: helm, kubectl, identities with their own kubeconfig, and the
//! operator binary as a child process.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::{Api, Client};
use onus::crd::{ResponsibilityPolicy, ResponsibilityPolicyStatus};
use onus_testenv::ControlPlane;
use serde_json::{Value, json};

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/onus");
pub const CRD_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crds/responsibilitypolicy.yaml"
);
pub const CHART_CRD_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/onus/crds/responsibilitypolicy.yaml"
);
pub const DEPLOY_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/onus.yaml");
/// The Kubernetes version `helm template` and `helm lint` render for (without a cluster Helm
/// assumes 1.20, which the chart's `kubeVersion` refuses): the oldest the chart supports.
pub const KUBE_VERSION: &str = "1.34.0";
/// What `helm template` must be told the API server serves to render the admission policies.
pub const VAP_API: &str = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy";

/// A `helm` command; with a control plane, it talks to it and keeps its state in the run dir.
pub fn helm(cp: Option<&ControlPlane>) -> Command {
    let bin = onus_testenv::helm_bin();
    assert!(
        bin.is_file(),
        "{} not found: run hack/build-control-plane.sh (or set ONUS_HELM_BIN)",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    if let Some(cp) = cp {
        let home = cp.dir().join("helm");
        cmd.env("KUBECONFIG", cp.kubeconfig_path())
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
    }
    cmd
}

/// Runs a command; returns (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (
        status.success(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Runs a command that must succeed; returns its stdout.
pub fn ok(cmd: &mut Command) -> String {
    let (success, stdout, stderr) = run(cmd);
    assert!(success, "{cmd:?} failed:\n{stderr}{stdout}");
    stdout
}

/// `helm install` of the chart (no --wait: there is no kubelet, the pods stay Pending).
pub fn install(cp: &ControlPlane, release: &str, namespace: &str, set: &[&str]) {
    let mut cmd = helm(Some(cp));
    cmd.args(["install", release, CHART, "--namespace", namespace]);
    for s in set {
        cmd.args(["--set", s]);
    }
    ok(&mut cmd);
    cp.wait_crd_established(
        "responsibilitypolicies.onus.dev",
        std::time::Duration::from_secs(60),
    );
}

/// `helm template` of the chart (release onus in onus-system) with `--set` values and further arguments.
pub fn render(set: &[&str], extra: &[&str]) -> Vec<Value> {
    let mut cmd = helm(None);
    cmd.args([
        "template",
        "--kube-version",
        KUBE_VERSION,
        "onus",
        CHART,
        "--namespace",
        "onus-system",
    ]);
    for s in set {
        cmd.args(["--set", s]);
    }
    cmd.args(extra);
    yaml_documents(&ok(&mut cmd))
}

/// Parses a multi-document YAML stream, skipping empty documents.
pub fn yaml_documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

/// A ServiceAccount's identity as a kubeconfig file with a bound token (TokenRequest API).
pub fn service_account_kubeconfig(cp: &ControlPlane, namespace: &str, sa: &str) -> PathBuf {
    let token = ok(cp
        .kubectl()
        .args(["create", "token", sa, "-n", namespace, "--duration=1h"]));
    let ca = cp.dir().join("ca.crt");
    let path = cp.dir().join(format!("kubeconfig-{namespace}-{sa}"));
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": cp.server(), "certificate-authority": ca}}],
        "users": [{"name": sa, "user": {"token": token.trim()}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": sa, "namespace": namespace}}],
        "current-context": "test",
    });
    std::fs::write(&path, serde_yaml::to_string(&config).expect("yaml"))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Whether the `onus` binary under test implements the operations CLI (leader election,
/// `--http-addr`) that the chart's Deployment passes. Until it does, the tests run it with
/// `--log-format json` only, as the binary accepts nothing else.
pub fn binary_has_operations_cli() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        let (_, stdout, stderr) = run(Command::new(onus_binary()).arg("--help"));
        (stdout + &stderr).contains("--leader-election-id")
    })
}

/// This test process's own link to the `onus` binary (cargo's, or `$ONUS_TEST_BIN` to test
/// another build, e.g. a release binary): a target directory shared between checkouts may have
/// its `onus` replaced by another build while the tests run, and every test here must run the
/// binary whose flags were detected.
pub fn onus_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let built = std::env::var_os("ONUS_TEST_BIN")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_onus")));
        let built = built.as_path();
        let own = onus_testenv::shared().dir().join("onus");
        std::fs::hard_link(built, &own)
            .or_else(|_| std::fs::copy(built, &own).map(|_| ()))
            .unwrap_or_else(|e| panic!("linking {} to {}: {e}", built.display(), own.display()));
        own
    })
}

/// The arguments to run the binary with: the chart Deployment's own arguments (with the HTTP
/// server on a free loopback port, and optionally another Lease) when the binary accepts them.
pub fn operator_args(chart_args: &[String], lease: Option<&str>) -> Vec<String> {
    if !binary_has_operations_cli() {
        return vec!["--log-format".into(), "json".into()];
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    chart_args
        .iter()
        .map(|arg| match arg.split_once('=') {
            Some(("--http-addr", _)) => format!("--http-addr=127.0.0.1:{port}"),
            Some(("--leader-election-id", chart)) => {
                format!("--leader-election-id={}", lease.unwrap_or(chart))
            }
            _ => arg.clone(),
        })
        .collect()
}

/// The `onus` binary running as a child process; killed on drop, however the test ends.
pub struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    /// Starts the operator with a kubeconfig, as pod `name` in `namespace` (downward API env).
    pub fn start(
        cp: &ControlPlane,
        kubeconfig: &Path,
        name: &str,
        namespace: &str,
        args: &[String],
    ) -> Operator {
        let log = cp.dir().join(format!("operator-{name}.log"));
        let out = File::create(&log).expect("operator log");
        let err = out.try_clone().expect("operator log");
        let child = Command::new(onus_binary())
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", name)
            .env("POD_NAMESPACE", namespace)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("starting the onus binary");
        Operator { child, log }
    }

    /// Everything the operator logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines reporting that the API server refused a request (a 403 always says
    /// "forbidden"; a bare "403" would also match timestamps).
    pub fn forbidden_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.to_lowercase().contains("forbidden"))
            .map(str::to_string)
            .collect()
    }

    /// Panics (with the log) if the operator exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("onus exited with {status}; log:\n{}", self.log());
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A policy literal selecting namespaces labelled `onus.dev/chart-test=<selector>`.
pub fn policy(name: &str, selector: &str) -> ResponsibilityPolicy {
    serde_json::from_value(json!({
        "apiVersion": "onus.dev/v1alpha1",
        "kind": "ResponsibilityPolicy",
        "metadata": {"name": name},
        "spec": {
            "serviceModel": "PaaS",
            "namespaceSelector": {"matchLabels": {"onus.dev/chart-test": selector}},
        },
    }))
    .expect("policy literal")
}

/// Like [`policy`], in Enforce mode with every remediation family on, so that the operator
/// uses each write permission.
pub fn enforce_policy(name: &str, selector: &str) -> ResponsibilityPolicy {
    let mut p = policy(name, selector);
    p.spec.mode = onus::crd::Mode::Enforce;
    p.spec.controls.network.default_deny =
        vec![onus::crd::Direction::Ingress, onus::crd::Direction::Egress];
    p
}

/// Polls a policy's status until `done` holds or `timeout` passes; returns the last status.
pub async fn poll_status(
    client: &Client,
    name: &str,
    timeout: Duration,
    mut done: impl FnMut(Option<&ResponsibilityPolicyStatus>) -> bool,
) -> Option<ResponsibilityPolicyStatus> {
    let api = Api::<ResponsibilityPolicy>::all(client.clone());
    let deadline = Instant::now() + timeout;
    loop {
        let status = api.get(name).await.expect("get policy").status;
        if done(status.as_ref()) || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a status has condition `type_` with `status`.
pub fn has_condition(
    status: Option<&ResponsibilityPolicyStatus>,
    type_: &str,
    value: &str,
) -> bool {
    status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == value)
    })
}

/// The chart's ClusterRole of a release.
pub async fn cluster_role(client: &Client, name: &str) -> ClusterRole {
    Api::<ClusterRole>::all(client.clone())
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("ClusterRole {name}: {e}"))
}
