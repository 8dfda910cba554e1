//! Shared test support: the real control plane, the CRD, an in-process operator, builders.
#![allow(dead_code)] // each test binary uses a different part

pub mod enforce;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use kube::{
    Api, Client, Resource,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    core::GroupVersionKind,
    discovery::ApiResource,
};
use onus::{
    controller::{self, Settings},
    crd::{ControlResult, ControlStatus, ResponsibilityPolicy, ResponsibilityPolicyStatus},
};
use onus_testenv::ControlPlane;
use serde_json::{Value, json};

pub const CRD_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crds/responsibilitypolicy.yaml"
);

/// Label on every policy a test creates; its operator only reconciles policies with its value.
pub const TEST_LABEL: &str = "onus.dev/test";

/// Operators under test act as users named with this prefix (tests/suite_write_scope.rs checks
/// every write of theirs in the whole suite's audit logs).
pub const OPERATOR_USER_PREFIX: &str = "onus-operator-";

/// One test's view of the cluster: a client, a unique id and an operator scoped to it.
pub struct TestEnv {
    pub cp: &'static ControlPlane,
    pub client: Client,
    pub id: String,
    /// The metrics of this test's operator.
    pub metrics: onus::metrics::Metrics,
}

/// Runs kubectl with the admin kubeconfig and fails the test if it fails.
pub fn kubectl_ok(cp: &ControlPlane, args: &[&str]) {
    let out = cp.kubectl().args(args).output().expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs kubectl with the admin kubeconfig, `input` on its standard input.
pub fn kubectl_with_input(cp: &ControlPlane, args: &[&str], input: &[u8]) -> std::process::Output {
    use std::{io::Write, process::Stdio};
    let mut child = cp
        .kubectl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write kubectl input");
    child.wait_with_output().expect("kubectl")
}

/// Installs the committed CRD (idempotent) and waits until it is established.
pub fn install_crd(cp: &ControlPlane) {
    kubectl_ok(cp, &["apply", "--server-side", "-f", CRD_FILE]);
    cp.wait_crd_established("responsibilitypolicies.onus.dev", Duration::from_secs(60));
}

/// The policy report CRDs of `api`, where hack/fetch-report-crds.sh (`make tools`) leaves them:
/// copies of what their projects publish, never hand-written.
pub fn report_crd_files(api: onus::controller::ReportApi) -> Vec<PathBuf> {
    let cache = std::env::var_os("ONUS_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/onus")))
        .expect("ONUS_CACHE or HOME");
    let (dir, files) = match api {
        onus::controller::ReportApi::OpenReports => (
            "openreports-v0.2.1",
            [
                "openreports.io_reports.yaml",
                "openreports.io_clusterreports.yaml",
            ],
        ),
        onus::controller::ReportApi::WgPolicyK8s => (
            "kyverno-v1.13.4",
            [
                "wgpolicyk8s.io_policyreports.yaml",
                "wgpolicyk8s.io_clusterpolicyreports.yaml",
            ],
        ),
    };
    let dir = cache.join("report-crds").join(dir);
    files
        .iter()
        .map(|f| {
            let path = dir.join(f);
            assert!(
                path.is_file(),
                "{} missing: run `make tools` (hack/fetch-report-crds.sh)",
                path.display()
            );
            path
        })
        .collect()
}

/// Installs the report CRDs of `api` (idempotent) and waits until they are established.
pub fn install_report_crds(cp: &ControlPlane, api: onus::controller::ReportApi) {
    for file in report_crd_files(api) {
        let file = file.to_string_lossy().into_owned();
        kubectl_ok(cp, &["apply", "--server-side", "-f", &file]);
    }
    let (_, plural) = api.kind(false);
    let (_, cluster_plural) = api.kind(true);
    let group = api.api_version();
    let group = group.split('/').next().expect("group");
    for plural in [plural, cluster_plural] {
        cp.wait_crd_established(&format!("{plural}.{group}"), Duration::from_secs(60));
    }
}

impl TestEnv {
    /// Starts (or reuses) the control plane, installs the CRD and runs an operator for this test.
    pub async fn start(name: &str) -> TestEnv {
        TestEnv::start_with(name, None, None, false, None).await
    }

    /// Like [`TestEnv::start`], with the generated ValidatingAdmissionPolicies on. They are
    /// cluster-wide with fixed names, so only one such operator may run at a time (the other
    /// test operators leave them off: `Settings::admission_policies`).
    /// The operator acts as `user` (no group), when given.
    pub async fn start_admission(name: &str, user: Option<&str>) -> TestEnv {
        TestEnv::start_with(name, user.map(|u| (u, None)), None, true, None).await
    }

    /// Like [`TestEnv::start`], but the operator runs "in" namespace `own_namespace` (as
    /// `$POD_NAMESPACE` says in a cluster).
    pub async fn start_in(name: &str, own_namespace: &str) -> TestEnv {
        TestEnv::start_with(name, None, Some(own_namespace.to_string()), false, None).await
    }

    /// Like [`TestEnv::start`], but the operator acts as `user` (in `group`, if any) with a
    /// client certificate of its own, so the API server's audit log tells its writes apart
    /// from the test's (which stay the admin's).
    pub async fn start_as(name: &str, user: &str, group: Option<&str>) -> TestEnv {
        TestEnv::start_with(name, Some((user, group)), None, false, None).await
    }

    /// The control plane, the CRD and a client, but no operator: the test runs its own (e.g.
    /// the `onus` binary, which governs every policy).
    pub async fn without_operator(name: &str) -> TestEnv {
        let cp = onus_testenv::shared();
        std::thread::scope(|s| s.spawn(|| install_crd(cp)).join().expect("install crd"));
        TestEnv {
            cp,
            client: cp.client().await,
            id: format!("{name}-{}", &onus_testenv::random_suffix()[..6]),
            metrics: onus::metrics::Metrics::new(),
        }
    }

    /// The operator in full: its user (and group), own namespace, admission policies, reports.
    pub async fn start_with(
        name: &str,
        operator: Option<(&str, Option<&str>)>,
        own_namespace: Option<String>,
        admission_policies: bool,
        reports: Option<controller::ReportSettings>,
    ) -> TestEnv {
        // Operator logs show in a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_ansi(false)
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "onus=info".into()))
            .try_init();
        let cp = onus_testenv::shared();
        std::thread::scope(|s| s.spawn(|| install_crd(cp)).join().expect("install crd"));
        let client = cp.client().await;
        let id = format!("{name}-{}", &onus_testenv::random_suffix()[..6]);
        // An identity of its own even when the test does not ask for one, so the audit logs of
        // the whole suite tell onus's writes apart (tests/suite_write_scope.rs checks them).
        let default_user = format!("{OPERATOR_USER_PREFIX}{id}");
        let operator = match operator {
            Some((user, group)) => cp.client_as(user, group).await,
            None => cp.client_as(&default_user, Some("system:masters")).await,
        };
        let metrics = onus::metrics::Metrics::new();
        let settings = Settings {
            instance: id.clone(),
            policy_selector: Some(format!("{TEST_LABEL}={id}")),
            metrics: metrics.clone(),
            own_namespace,
            admission_policies,
            reports,
            ..Settings::default()
        };
        tokio::spawn(controller::run(operator, settings, std::future::pending()));
        TestEnv {
            cp,
            client,
            id,
            metrics,
        }
    }

    /// A namespace labelled for this test (policies select it by `onus.dev/test-ns=<id>`).
    pub async fn namespace(&self, prefix: &str, labels: &[(&str, &str)]) -> String {
        let mut all = vec![("onus.dev/test-ns", self.id.as_str())];
        all.extend_from_slice(labels);
        self.cp.namespace(&self.client, prefix, &all).await
    }

    /// Creates or replaces a policy from a spec literal; it selects this test's namespaces
    /// unless the spec has its own selector.
    pub async fn apply_policy(&self, name: &str, mut spec: Value) -> String {
        if spec.get("namespaceSelector").is_none() {
            spec["namespaceSelector"] = json!({"matchLabels": {"onus.dev/test-ns": self.id}});
        }
        let full = format!("{}-{name}", self.id);
        let policy = json!({
            "apiVersion": "onus.dev/v1alpha1",
            "kind": "ResponsibilityPolicy",
            "metadata": {"name": full, "labels": {TEST_LABEL: self.id}},
            "spec": spec,
        });
        Api::<ResponsibilityPolicy>::all(self.client.clone())
            .patch(
                &full,
                &PatchParams::apply("onus-tests").force(),
                &Patch::Apply(&policy),
            )
            .await
            .unwrap_or_else(|e| panic!("applying policy {full}: {e}"));
        full
    }

    /// Waits until the policy's status satisfies `ready`; panics with the last status if not.
    pub async fn wait_status(
        &self,
        policy: &str,
        what: &str,
        ready: impl Fn(&ResponsibilityPolicyStatus) -> bool,
    ) -> ResponsibilityPolicy {
        let api = Api::<ResponsibilityPolicy>::all(self.client.clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rp = api.get(policy).await.expect("get policy");
            if rp.status.as_ref().is_some_and(&ready) {
                return rp;
            }
            if Instant::now() > deadline {
                panic!(
                    "policy {policy}: {what} not reached in 30s; status:\n{}",
                    serde_yaml::to_string(&rp.status).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates any object from a literal (apiVersion and kind inside); returns it as created.
    pub async fn create(&self, namespace: Option<&str>, obj: Value) -> Value {
        let api = dynamic_api(&self.client, namespace, &obj);
        let obj: DynamicObject = serde_json::from_value(obj).expect("object literal");
        let created = api
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("creating {:?}: {e}", obj.metadata.name));
        serde_json::to_value(created).expect("created object")
    }

    /// Server-side applies a partial object (as its test owner).
    pub async fn apply(&self, namespace: Option<&str>, obj: Value) {
        let api = dynamic_api(&self.client, namespace, &obj);
        let name = obj["metadata"]["name"].as_str().expect("name").to_string();
        api.patch(
            &name,
            &PatchParams::apply("onus-tests").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {name}: {e}"));
    }

    /// Deletes an object.
    pub async fn delete(&self, namespace: Option<&str>, api_version: &str, kind: &str, name: &str) {
        let obj = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
        let api = dynamic_api(&self.client, namespace, &obj);
        api.delete(name, &Default::default())
            .await
            .unwrap_or_else(|e| panic!("deleting {kind} {name}: {e}"));
    }
}

fn dynamic_api(client: &Client, namespace: Option<&str>, obj: &Value) -> Api<DynamicObject> {
    let api_version = obj["apiVersion"].as_str().expect("apiVersion");
    let kind = obj["kind"].as_str().expect("kind");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let plural = format!("{}s", kind.to_lowercase()).replace("policys", "policies");
    let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// The status entry of one control.
pub fn control<'a>(status: &'a ResponsibilityPolicyStatus, id: &str) -> &'a ControlStatus {
    status
        .controls
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("control {id} missing from status"))
}

/// Whether a control has a result and violation count.
pub fn is(
    status: &ResponsibilityPolicyStatus,
    id: &str,
    result: ControlResult,
    violations: u64,
) -> bool {
    status
        .controls
        .iter()
        .any(|c| c.id == id && c.result == result && c.violations == violations)
}

/// Container securityContext that passes the restricted level.
pub fn hardened() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "runAsNonRoot": true,
        "seccompProfile": {"type": "RuntimeDefault"},
        "capabilities": {"drop": ["ALL"]}
    })
}

/// A Deployment with one container and the given container securityContext and pod fields.
///
/// It updates by `Recreate`: without a kubelet no Pod becomes ready, so a rolling update never
/// finishes and the old Pods would stay (failing what the old template failed) for good.
pub fn deployment(name: &str, security: Value, pod_extra: Value) -> Value {
    let mut pod_spec =
        json!({"containers": [{"name": "app", "image": "nginx", "securityContext": security}]});
    merge(&mut pod_spec, pod_extra);
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "Recreate"},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}
        }
    })
}

/// Merges `extra` into `base` (objects recursively, everything else replaced).
pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

/// The resourceVersion of a policy.
pub async fn resource_version(client: &Client, policy: &str) -> String {
    Api::<ResponsibilityPolicy>::all(client.clone())
        .get(policy)
        .await
        .expect("get policy")
        .meta()
        .resource_version
        .clone()
        .unwrap_or_default()
}
