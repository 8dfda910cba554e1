//! Faults on the real control plane: the API server killed while the cluster changes (through a
//! second API server on the same etcd), etcd killed, etcd compacted past the watches'
//! resourceVersion (`410 Gone`), and the onus binary SIGKILLed in the middle of an Enforce
//! rollout. After each, the policy's status converges to the truth, and the API server's audit
//! log proves what onus wrote: no remediation lost, none applied twice, none left behind.
//!
//! The tests kill shared components, so they run one at a time; the operator acts as
//! [`OPERATOR`], whose every request (reads and watches too) the audit log records.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::enforce::{deny_policy, enforce_label, until};
use common::{TestEnv, control, deployment, hardened, is};
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    core::GroupVersionKind,
    discovery::ApiResource,
};
use onus::{
    crd::{ControlResult::*, ResponsibilityPolicy},
    status::{self, ENFORCED},
};
use onus_testenv::{AuditEvent, ControlPlane, Options};
use serde_json::json;

/// Held for a whole test; async-aware, and a failed test does not poison it.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The operator's identity in every test here (in `system:masters`).
const OPERATOR: &str = "onus-operator-faults";

/// The shared control plane, auditing every request of [`OPERATOR`].
fn control_plane() -> &'static ControlPlane {
    onus_testenv::configure_shared(Options {
        audit_users: vec![OPERATOR.into()],
        ..Options::default()
    });
    onus_testenv::shared()
}

async fn start(name: &str) -> TestEnv {
    control_plane();
    TestEnv::start_as(name, OPERATOR, Some("system:masters")).await
}

/// A Deployment scaled to zero: the controller-manager makes no Pods, whose garbage collection
/// after the Deployment is deleted (when the collector catches up after an outage) would race
/// the test (a privileged Pod left behind is rightly reported until it goes).
fn without_pods(mut deployment: serde_json::Value) -> serde_json::Value {
    deployment["spec"]["replicas"] = json!(0);
    deployment
}

fn privileged() -> serde_json::Value {
    let mut sc = hardened();
    sc["privileged"] = json!(true);
    sc.as_object_mut()
        .map(|o| o.remove("allowPrivilegeEscalation"));
    sc
}

/// The WKL-03 (privileged containers) examples of a status, sorted.
fn privileged_examples(s: &onus::crd::ResponsibilityPolicyStatus) -> Vec<String> {
    let mut examples = control(s, "WKL-03").examples.clone();
    examples.sort();
    examples
}

fn api_for(
    client: &Client,
    namespace: Option<&str>,
    obj: &serde_json::Value,
) -> Api<DynamicObject> {
    let (group, version) = obj["apiVersion"]
        .as_str()
        .expect("apiVersion")
        .split_once('/')
        .unwrap_or(("", obj["apiVersion"].as_str().expect("apiVersion")));
    let kind = obj["kind"].as_str().expect("kind");
    let plural = format!("{}s", kind.to_lowercase());
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), &plural);
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

async fn create_via(client: &Client, namespace: Option<&str>, obj: serde_json::Value) {
    let api = api_for(client, namespace, &obj);
    let obj: DynamicObject = serde_json::from_value(obj).expect("object literal");
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating {:?}: {e}", obj.metadata.name));
}

/// The operator's requests the audit log holds, received at or after `since`.
fn operator_requests(cp: &ControlPlane, since: jiff::Timestamp) -> Vec<AuditEvent> {
    cp.audit_events()
        .into_iter()
        .filter(|e| e.user == OPERATOR && e.received >= since)
        .collect()
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

async fn delete_policy(env: &TestEnv, policy: &str) {
    let api = Api::<ResponsibilityPolicy>::all(env.client.clone());
    let _ = api.delete(policy, &Default::default()).await;
    until("policy gone", async || {
        api.get_opt(policy).await.expect("get policy").is_none()
    })
    .await;
}

/// The API server is killed; while it is down the cluster changes through a second API server
/// on the same etcd (a Deployment deleted, one created, a namespace relabelled out of the
/// policy's selector); it comes back. With `compact`, etcd is also compacted past every
/// resourceVersion onus has seen, so its watches get `410 Gone` and must list again.
async fn apiserver_outage(name: &str, compact: bool) {
    let _serial = SERIAL.lock().await;
    let env = start(name).await;
    let cp = env.cp;
    let a = env.namespace("a", &[]).await;
    let b = env.namespace("b", &[]).await;
    let far = env.namespace("far", &[]).await;
    for (ns, name) in [(&a, "keep"), (&a, "gone"), (&far, "far")] {
        env.create(
            Some(ns),
            without_pods(deployment(name, privileged(), json!({}))),
        )
        .await;
    }
    let policy = env
        .apply_policy("outage", json!({"serviceModel": "PaaS"}))
        .await;
    let before = [
        format!("Deployment/{a}/gone"),
        format!("Deployment/{a}/keep"),
        format!("Deployment/{far}/far"),
    ];
    env.wait_status(&policy, "three privileged Deployments", |s| {
        is(s, "WKL-03", Fail, 3) && privileged_examples(s) == before
    })
    .await;

    let replica_name = format!("apiserver-{}", env.id);
    let replica = cp
        .start_apiserver_replica(&replica_name)
        .await
        .unwrap_or_else(|e| panic!("second API server: {e}"));
    assert!(cp.kill("kube-apiserver"), "the API server was running");
    let down = now();

    // The cluster changes while onus's API server is down.
    api_for(
        &replica,
        Some(&a),
        &deployment("gone", json!({}), json!({})),
    )
    .delete("gone", &Default::default())
    .await
    .expect("delete through the second API server");
    create_via(
        &replica,
        Some(&b),
        without_pods(deployment("new", privileged(), json!({}))),
    )
    .await;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(replica.clone())
        .patch(
            &far,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"onus.dev/test-ns": "elsewhere"}}})),
        )
        .await
        .expect("relabel through the second API server");
    if compact {
        cp.compact_etcd().expect("compact etcd");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    cp.restart("kube-apiserver")
        .await
        .unwrap_or_else(|e| panic!("restarting the API server: {e}"));
    let up = now();
    cp.kill(&replica_name);

    let after = [
        format!("Deployment/{a}/keep"),
        format!("Deployment/{b}/new"),
    ];
    let rp = env
        .wait_status(
            &policy,
            "the changes made while the API server was down",
            |s| is(s, "WKL-03", Fail, 2) && privileged_examples(s) == after,
        )
        .await;
    let s = rp.status.expect("status");
    let ready = status::condition(&s, status::READY).expect("Ready");
    assert_eq!(ready.status, "True", "{ready:?}");

    if compact {
        // Every watch resumed from a compacted resourceVersion: the ones that saw the changes
        // must have listed again (a resumed watch alone cannot have seen them). The API server
        // logs a request once it has completed, which can follow the client's use of the answer:
        // as long as the harness waits for a status.
        let relisted = || -> BTreeSet<String> {
            operator_requests(cp, up)
                .into_iter()
                .filter(|e| e.verb == "list" && e.code == Some(200))
                .map(|e| e.resource)
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let relisted = relisted();
            let missing: Vec<_> = ["deployments", "namespaces"]
                .into_iter()
                .filter(|r| !relisted.contains(*r))
                .collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no relist of {missing:?} after the compaction: {relisted:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // (The watch cache answers a too-old resourceVersion with a 410 inside the stream, so
        // the audit log shows the list that follows, not the 410.)
    }
    let requests = operator_requests(cp, down);
    // No hot loop while the API server was down and after: onus's requests are bounded.
    assert!(
        requests.len() < 1000,
        "{} requests by onus across the outage",
        requests.len()
    );
    delete_policy(&env, &policy).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_killed_while_the_cluster_changes_converges_to_the_truth() {
    apiserver_outage("apiserver", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_compacted_away_relists_dropping_what_was_deleted_and_keeping_the_rest() {
    apiserver_outage("gone410", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_killed_and_restarted_converges_without_a_hot_loop() {
    let _serial = SERIAL.lock().await;
    let env = start("etcd").await;
    let cp = env.cp;
    let ns = env.namespace("e", &[]).await;
    env.create(Some(&ns), deployment("one", privileged(), json!({})))
        .await;
    let policy = env
        .apply_policy("etcd", json!({"serviceModel": "PaaS"}))
        .await;
    env.wait_status(&policy, "one privileged Deployment", |s| {
        is(s, "WKL-03", Fail, 1)
    })
    .await;

    let down = now();
    assert!(cp.kill("etcd"), "etcd was running");
    tokio::time::sleep(Duration::from_secs(5)).await;
    cp.restart("etcd")
        .await
        .unwrap_or_else(|e| panic!("restarting etcd: {e}"));
    let outage = operator_requests(cp, down);

    env.create(Some(&ns), deployment("two", privileged(), json!({})))
        .await;
    env.wait_status(
        &policy,
        "the Deployment created after etcd came back",
        |s| {
            is(s, "WKL-03", Fail, 2)
                && privileged_examples(s)
                    == [
                        format!("Deployment/{ns}/one"),
                        format!("Deployment/{ns}/two"),
                    ]
        },
    )
    .await;
    // A hot loop against a dead etcd would show as thousands of requests in a few seconds.
    assert!(
        outage.len() < 200,
        "{} requests by onus while etcd was down:\n{}",
        outage.len(),
        outage
            .iter()
            .take(30)
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    delete_policy(&env, &policy).await;
}

// ---- onus SIGKILLed in the middle of an Enforce rollout ----

/// How many namespaces the rollout covers.
const ROLLOUT: usize = 50;

/// The `onus` binary as [`OPERATOR`]; killed with SIGKILL when dropped.
struct Onus {
    child: Child,
    log: std::path::PathBuf,
}

impl Onus {
    fn start(cp: &ControlPlane, name: &str) -> Onus {
        let kubeconfig = cp
            .kubeconfig_as(OPERATOR, Some("system:masters"))
            .expect("operator kubeconfig");
        let log = cp.dir().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_onus"));
        command
            .args(["--http-addr", "127.0.0.1:0", "--no-leader-election"])
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", name)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: prctl is async-signal-safe; a test process killed hard leaves no operator.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        Onus {
            child: command.spawn().expect("spawning onus"),
            log,
        }
    }

    fn sigkill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Onus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn enforce_spec() -> serde_json::Value {
    json!({"serviceModel": "PaaS", "mode": "Enforce",
           "controls": {"network": {"defaultDeny": ["Ingress"]},
                        "podSecurity": {"level": "baseline", "version": "latest"}}})
}

/// The operator's successful writes to the remediated objects, per `resource namespace/name`.
fn remediation_writes(cp: &ControlPlane, namespaces: &BTreeSet<String>) -> BTreeMap<String, usize> {
    let mut writes = BTreeMap::new();
    for e in cp.audit_events() {
        let ok = e.code.is_some_and(|c| (200..300).contains(&c));
        if e.user != OPERATOR
            || !ok
            || !["create", "patch", "update", "delete"].contains(&e.verb.as_str())
        {
            continue;
        }
        let object = match e.resource.as_str() {
            "networkpolicies" if namespaces.contains(&e.namespace) => {
                format!("{} networkpolicies {}/{}", e.verb, e.namespace, e.name)
            }
            "namespaces" if namespaces.contains(&e.name) => {
                format!("{} namespaces {}", e.verb, e.name)
            }
            _ => continue,
        };
        *writes.entry(object).or_default() += 1;
    }
    writes
}

/// Creates the rollout's namespaces (in parallel) and an Enforce policy over them.
async fn rollout(env: &TestEnv) -> (BTreeSet<String>, String) {
    let namespaces: BTreeSet<String> =
        futures::future::join_all((0..ROLLOUT).map(|_| env.namespace("roll", &[])))
            .await
            .into_iter()
            .collect();
    let policy = env.apply_policy("rollout", enforce_spec()).await;
    (namespaces, policy)
}

/// Runs the binary until it has applied a fifth of the rollout's default-denies, and SIGKILLs
/// it; returns how many it had applied (fails if that was all of them: the kill came too late
/// to test anything). Reads only what the audit log gained since the last look, so the kill
/// follows the writes closely.
async fn kill_mid_rollout(env: &TestEnv, namespaces: &BTreeSet<String>) -> usize {
    use std::io::{Read, Seek, SeekFrom};
    let onus = Onus::start(env.cp, &format!("{}-first", env.id));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut file = std::fs::File::open(env.cp.audit_log_path()).expect("audit log");
    let mut offset = file.seek(SeekFrom::End(0)).expect("seek");
    let mut pending = String::new();
    let mut applied = BTreeSet::new();
    loop {
        file.seek(SeekFrom::Start(offset)).expect("seek");
        let mut more = String::new();
        offset += file.read_to_string(&mut more).expect("read audit log") as u64;
        pending.push_str(&more);
        if let Some(end) = pending.rfind('\n') {
            let lines: String = pending.drain(..=end).collect();
            for e in onus_testenv::parse_audit_log(&lines) {
                if e.user == OPERATOR
                    && e.resource == "networkpolicies"
                    && namespaces.contains(&e.namespace)
                    && e.code.is_some_and(|c| (200..300).contains(&c))
                {
                    applied.insert(e.namespace);
                }
            }
        }
        if applied.len() >= ROLLOUT / 5 {
            onus.sigkill();
            let at_kill = remediation_writes(env.cp, namespaces)
                .keys()
                .filter(|k| k.contains(" networkpolicies "))
                .count();
            assert!(
                at_kill < namespaces.len(),
                "onus finished the rollout ({at_kill} of {}) before it was killed",
                namespaces.len()
            );
            return at_kill;
        }
        assert!(
            Instant::now() < deadline,
            "onus applied nothing in 60 s:\n{}",
            onus.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn onus_sigkilled_mid_rollout_applies_the_rest_once_on_restart() {
    let _serial = SERIAL.lock().await;
    // The binary governs every policy: no in-process operator.
    control_plane();
    let env = TestEnv::without_operator("sigkill").await;
    let (namespaces, policy) = rollout(&env).await;
    let applied = kill_mid_rollout(&env, &namespaces).await;

    let second = Onus::start(env.cp, &format!("{}-second", env.id));
    until("every namespace remediated after the restart", async || {
        let mut all = true;
        for ns in &namespaces {
            all &= deny_policy(&env.client, ns).await.is_some()
                && enforce_label(&env.client, ns).await.as_deref() == Some("baseline");
        }
        all
    })
    .await;
    let rp = env
        .wait_status(&policy, "enforced", |s| {
            status::condition(s, ENFORCED).is_some_and(|c| c.status == "True")
        })
        .await;
    assert!(
        rp.finalizers()
            .iter()
            .any(|f| f == onus::controller::FINALIZER)
    );
    // Settled: nothing more to write.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes = remediation_writes(env.cp, &namespaces);
    let twice: Vec<_> = writes.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "remediations applied twice (first run applied {applied} before the kill): {twice:?}\n{}",
        second.log_tail()
    );
    let denies = writes
        .keys()
        .filter(|k| k.contains(" networkpolicies "))
        .count();
    assert_eq!(denies, namespaces.len(), "{writes:?}");
    drop(second);
    // Releases what it applied through the finalizer (a clean-up by the next test's operator
    // is not this test's to rely on).
    let cleanup = Onus::start(env.cp, &format!("{}-cleanup", env.id));
    delete_policy(&env, &policy).await;
    for ns in &namespaces {
        assert!(deny_policy(&env.client, ns).await.is_none(), "{ns}");
    }
    drop(cleanup);
}

#[tokio::test(flavor = "multi_thread")]
async fn onus_sigkilled_mid_rollout_then_the_policy_deleted_leaves_no_orphan() {
    let _serial = SERIAL.lock().await;
    control_plane();
    let env = TestEnv::without_operator("sigdel").await;
    let (namespaces, policy) = rollout(&env).await;
    kill_mid_rollout(&env, &namespaces).await;

    // Deleted while onus is down: the finalizer holds the policy until onus releases.
    let api = Api::<ResponsibilityPolicy>::all(env.client.clone());
    api.delete(&policy, &Default::default())
        .await
        .expect("delete policy");
    let held = api.get_opt(&policy).await.expect("get policy");
    assert!(
        held.is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
        "the finalizer holds the deleted policy while onus is down"
    );

    let second = Onus::start(env.cp, &format!("{}-second", env.id));
    until("the policy released and gone", async || {
        api.get_opt(&policy).await.expect("get policy").is_none()
    })
    .await;
    for ns in &namespaces {
        assert!(
            deny_policy(&env.client, ns).await.is_none(),
            "orphan onus-default-deny in {ns}:\n{}",
            second.log_tail()
        );
        assert_eq!(
            enforce_label(&env.client, ns).await,
            None,
            "orphan label in {ns}"
        );
    }
}

// ---- API server pressure ----

/// Binds [`OPERATOR`] to `cluster-admin` (idempotent): an identity outside `system:masters`,
/// whose requests API Priority and Fairness can limit (the `exempt` FlowSchema takes masters).
async fn operator_is_cluster_admin(env: &TestEnv) {
    env.apply(
        None,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": OPERATOR},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR}]
        }),
    )
    .await;
}

/// The identity whose requests hold the throttled priority level's only seat.
const HOG: &str = "onus-faults-hog";

/// Throttles [`OPERATOR`] to a trickle: a priority level with no seats of its own (it cannot
/// borrow any either: the API server then runs one request at a time in it, when idle) and
/// `Reject` beyond, shared through one FlowSchema with [`HOG`], who keeps that one turn busy
/// with ConfigMap creations held by a webhook that never answers (10 s each). Every request
/// of onus meanwhile is answered `429 Too Many Requests`, but for one slipping in between.
/// Returns what lifts the throttle.
async fn throttle_operator(env: &TestEnv, name: &str) -> impl FnOnce() {
    // The webhook: accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let sink = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let ca = std::fs::read(env.cp.dir().join("ca.crt")).expect("ca.crt");
    env.create(
        None,
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "hang.onus.dev",
                "clientConfig": {"url": format!("https://127.0.0.1:{port}/hang"),
                                 "caBundle": serde_json::to_value(k8s_openapi::ByteString(ca)).expect("ca")},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                           "resources": ["configmaps"]}],
                "objectSelector": {"matchLabels": {"onus.dev/hang": name}},
                "failurePolicy": "Ignore", "sideEffects": "None",
                "admissionReviewVersions": ["v1"], "timeoutSeconds": 10
            }]
        }),
    )
    .await;
    env.apply(
        None,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": HOG},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": HOG}]
        }),
    )
    .await;
    env.create(
        None,
        json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
            "metadata": {"name": name},
            "spec": {"type": "Limited", "limited": {
                "nominalConcurrencyShares": 0, "lendablePercent": 0, "borrowingLimitPercent": 0,
                "limitResponse": {"type": "Reject"}}}
        }),
    )
    .await;
    env.create(
        None,
        json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
            "metadata": {"name": name},
            "spec": {
                "priorityLevelConfiguration": {"name": name},
                "matchingPrecedence": 100,
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [{
                    "subjects": [{"kind": "User", "user": {"name": OPERATOR}},
                                 {"kind": "User", "user": {"name": HOG}}],
                    "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                       "clusterScope": true, "namespaces": ["*"]}],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
                }]
            }
        }),
    )
    .await;
    // Three hogs: when the one holding the seat is answered, another is already knocking.
    let hog_client = env.cp.client_as(HOG, None).await;
    let hogs: Vec<_> = (0..3)
        .map(|_| {
            let cms = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
                hog_client.clone(),
                "default",
            );
            let label = name.to_string();
            tokio::spawn(async move {
                loop {
                    let cm = serde_json::from_value(json!({
                        "metadata": {"generateName": "hog-", "labels": {"onus.dev/hang": label}}
                    }))
                    .expect("configmap");
                    if cms.create(&PostParams::default(), &cm).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    // APF loads its configuration asynchronously: wait until a request of the operator's is
    // refused (the client retries a 429 after the server's Retry-After: the audit log shows
    // each attempt).
    let operator = env.cp.client_as(OPERATOR, None).await;
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(operator);
    let since = now();
    until("the operator throttled", async || {
        let _ = tokio::time::timeout(Duration::from_millis(500), namespaces.get("default")).await;
        operator_requests(env.cp, since)
            .iter()
            .any(|e| e.code == Some(429))
    })
    .await;
    move || {
        for hog in hogs {
            hog.abort();
        }
        sink.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn throttled_to_nothing_onus_backs_off_and_catches_up_when_the_limit_lifts() {
    let _serial = SERIAL.lock().await;
    control_plane();
    let admin = TestEnv::without_operator("apf-admin").await;
    operator_is_cluster_admin(&admin).await;
    let env = TestEnv::start_as("apf", OPERATOR, None).await;
    let ns = env.namespace("apf", &[]).await;
    env.create(Some(&ns), deployment("one", privileged(), json!({})))
        .await;
    let policy = env
        .apply_policy("apf", json!({"serviceModel": "PaaS"}))
        .await;
    env.wait_status(&policy, "one privileged Deployment", |s| {
        is(s, "WKL-03", Fail, 1)
    })
    .await;

    let name = format!("{}-throttle", env.id);
    let lift = throttle_operator(&env, &name).await;
    let throttled = now();
    env.create(Some(&ns), deployment("two", privileged(), json!({})))
        .await;
    const WINDOW: Duration = Duration::from_secs(10);
    tokio::time::sleep(WINDOW).await;
    let lifted = now();
    lift();
    env.delete(None, "flowcontrol.apiserver.k8s.io/v1", "FlowSchema", &name)
        .await;
    env.delete(
        None,
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        &name,
    )
    .await;
    env.delete(
        None,
        "flowcontrol.apiserver.k8s.io/v1",
        "PriorityLevelConfiguration",
        &name,
    )
    .await;

    let during: Vec<AuditEvent> = operator_requests(env.cp, throttled)
        .into_iter()
        .filter(|e| e.received < lifted)
        .collect();
    let refused = during.iter().filter(|e| e.code == Some(429)).count();
    let sample = || {
        during
            .iter()
            .take(40)
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        refused > 0,
        "onus did not try to write the change while throttled:\n{}",
        sample()
    );
    // Backing off (the client waits out the server's Retry-After, the reconciler requeues
    // after an error): about one attempt per second for each write, not a hot loop.
    assert!(
        during.len() as u64 <= 3 * WINDOW.as_secs(),
        "{} requests by onus ({refused} refused) in {WINDOW:?} of throttling:\n{}",
        during.len(),
        sample()
    );
    env.wait_status(&policy, "caught up once the limit lifted", |s| {
        is(s, "WKL-03", Fail, 2)
    })
    .await;
    delete_policy(&env, &policy).await;
}

/// The operator's RBAC loses a rule while it runs: once its watch is refused (here: the API
/// server restarts, so every watch starts again and is authorized again), every policy says
/// `Ready=False, reason=Forbidden` naming the kind, the other controls keep being evaluated, and
/// the condition clears once the rule is back and the kind listed afresh.
#[tokio::test(flavor = "multi_thread")]
async fn a_watch_refused_at_runtime_is_reported_and_recovers_when_allowed_again() {
    let _serial = SERIAL.lock().await;
    let cp = control_plane();
    let user = "onus-operator-rbac-cut";
    let admin = TestEnv::without_operator("rbac-cut-admin").await;
    let role = |name: &str, groups: serde_json::Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name},
               "rules": [{"apiGroups": groups, "resources": ["*"], "verbs": ["*"]}]})
    };
    let binding = |name: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})
    };
    let (base, netpol) = (format!("{}-base", admin.id), format!("{}-netpol", admin.id));
    // Everything onus reads and writes, NetworkPolicies by a binding of their own.
    admin
        .create(
            None,
            role(
                &base,
                json!([
                    "",
                    "apps",
                    "batch",
                    "rbac.authorization.k8s.io",
                    "onus.dev",
                    "events.k8s.io",
                    "admissionregistration.k8s.io",
                    "apiextensions.k8s.io",
                    "apiregistration.k8s.io"
                ]),
            ),
        )
        .await;
    admin.create(None, binding(&base)).await;
    admin
        .create(None, role(&netpol, json!(["networking.k8s.io"])))
        .await;
    admin.create(None, binding(&netpol)).await;

    let env = TestEnv::start_as("rbac-cut", user, None).await;
    let ns = env.namespace("cut", &[]).await;
    let policy = env
        .apply_policy("cut", json!({"serviceModel": "PaaS"}))
        .await;
    let ready = |s: &onus::crd::ResponsibilityPolicyStatus| {
        status::condition(s, status::READY).map(|c| (c.status.clone(), c.reason.clone()))
    };
    env.wait_status(&policy, "evaluated and ready", |s| {
        s.summary.is_some() && ready(s) == Some(("True".into(), "Evaluated".into()))
    })
    .await;

    // The rule goes; an established watch is not authorized again until it restarts.
    admin
        .delete(
            None,
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            &netpol,
        )
        .await;
    assert!(cp.kill("kube-apiserver"), "the API server was running");
    cp.restart("kube-apiserver")
        .await
        .unwrap_or_else(|e| panic!("restarting the API server: {e}"));
    let rp = env
        .wait_status(
            &policy,
            "Ready=False, Forbidden, naming NetworkPolicy",
            |s| ready(s) == Some(("False".into(), status::FORBIDDEN.into())),
        )
        .await;
    let s = rp.status.expect("status");
    let message = &status::condition(&s, status::READY).expect("Ready").message;
    assert!(message.contains("NetworkPolicy"), "{message}");
    // Every other control is still evaluated from current facts.
    env.create(Some(&ns), deployment("intruder", privileged(), json!({})))
        .await;
    env.wait_status(&policy, "a new violation while a watch is refused", |s| {
        is(s, "WKL-03", Fail, 1) && ready(s) == Some(("False".into(), status::FORBIDDEN.into()))
    })
    .await;

    // The rule comes back: a fresh list, and the condition clears.
    admin.create(None, binding(&netpol)).await;
    env.wait_status(&policy, "ready again", |s| {
        ready(s) == Some(("True".into(), "Evaluated".into())) && is(s, "WKL-03", Fail, 1)
    })
    .await;

    delete_policy(&env, &policy).await;
    for name in [&base, &netpol] {
        admin
            .delete(
                None,
                "rbac.authorization.k8s.io/v1",
                "ClusterRoleBinding",
                name,
            )
            .await;
        admin
            .delete(None, "rbac.authorization.k8s.io/v1", "ClusterRole", name)
            .await;
    }
}
