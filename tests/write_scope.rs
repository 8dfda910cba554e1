//! "No write without a change", proven from the API server's audit log rather than from
//! onus's own logs: once a policy has converged, churn that changes nothing onus cares about
//! (compliant Pods and Deployments created and updated in the governed namespaces, foreign
//! metadata on the Namespaces and ServiceAccounts onus remediates) must cause no write by
//! onus at all, and every write onus makes over a whole test must be to an object it is
//! allowed to touch.
//!
//! The operator runs as a user of its own (`onus-operator-<mode>`), so its requests are told
//! apart from the test's, which are the admin's. onus's clean-up releases what no policy of its
//! instance wants, so the tests run one at a time and each removes what it created.

mod common;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use common::{TestEnv, deployment, hardened, is};
use jiff::Timestamp;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Pod, ServiceAccount},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use onus::{
    controller::{ReportApi, ReportSettings, report_name},
    crd::{ControlResult::*, ResponsibilityPolicy},
    status::{self, ENFORCED, READY},
};
use onus_testenv::AuditEvent;
use serde_json::{Value, json};

/// Held for a whole test; async-aware, and a failed test does not poison it.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long the churn runs.
const CHURN: Duration = Duration::from_secs(15);
/// How long onus must have written nothing before it counts as converged.
const SETTLED: Duration = Duration::from_secs(3);

/// What one test governs: the writes onus may make are to these objects.
struct Scope {
    user: String,
    policy: String,
    namespaces: BTreeSet<String>,
    /// Policy reports are on: the policy's reports (named after it) may be written too.
    reports: bool,
}

impl Scope {
    fn by_onus(&self, events: Vec<AuditEvent>) -> Vec<AuditEvent> {
        events.into_iter().filter(|e| e.user == self.user).collect()
    }

    /// Whether onus may make this write at all: its policy's status and finalizers, its
    /// `onus-default-deny` NetworkPolicies, Pod Security labels on the selected Namespaces,
    /// the `default` ServiceAccounts there, Events, and a leader Lease; with policy reports on,
    /// the policy's reports in the governed namespaces and its cluster report.
    fn allows(&self, e: &AuditEvent) -> bool {
        let verb = |verbs: &[&str]| verbs.contains(&e.verb.as_str());
        let governed = self.namespaces.contains(&e.namespace);
        let report = self.reports && e.name == report_name(&self.policy, "");
        match (
            e.api_group.as_str(),
            e.resource.as_str(),
            e.subresource.as_str(),
        ) {
            ("onus.dev", "responsibilitypolicies", "" | "status") => {
                e.name == self.policy && verb(&["patch", "update"])
            }
            ("networking.k8s.io", "networkpolicies", "") => {
                governed && e.name == "onus-default-deny" && verb(&["patch", "delete"])
            }
            ("", "namespaces", "") => self.namespaces.contains(&e.name) && verb(&["patch"]),
            ("", "serviceaccounts", "") => governed && e.name == "default" && verb(&["patch"]),
            // Events on cluster-scoped objects (the policy, a Namespace) go to `default`.
            ("" | "events.k8s.io", "events", "") => {
                (governed || e.namespace == "default") && verb(&["create", "patch", "update"])
            }
            ("coordination.k8s.io", "leases", "") => verb(&["create", "update", "patch"]),
            ("openreports.io", "reports", "") => report && governed && verb(&["patch", "delete"]),
            ("openreports.io", "clusterreports", "") => {
                report && e.namespace.is_empty() && verb(&["patch", "delete"])
            }
            _ => false,
        }
    }
}

/// The writes for a failure message: how often each object was written, then the first
/// few requests in order.
fn list(events: &[AuditEvent]) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for e in events {
        let resource = match (e.api_group.as_str(), e.subresource.as_str()) {
            ("", "") => e.resource.clone(),
            ("", sub) => format!("{}/{sub}", e.resource),
            (group, "") => format!("{}.{group}", e.resource),
            (group, sub) => format!("{}.{group}/{sub}", e.resource),
        };
        // Event names are `<object>.<unique suffix>`: count them per object.
        let name = match e.resource.as_str() {
            "events" => e
                .name
                .rsplit_once('.')
                .map_or(&*e.name, |(object, _)| object),
            _ => &e.name,
        };
        *counts
            .entry(format!("{} {resource} {}/{name}", e.verb, e.namespace))
            .or_default() += 1;
    }
    let by_object = counts.iter().map(|(what, n)| format!("  {n:>4} x {what}"));
    let first = events.iter().take(20).map(|e| format!("  {e}"));
    by_object
        .chain(["  first requests:".to_string()])
        .chain(first)
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_write_to(e: &AuditEvent, group: &str, resource: &str, subresource: &str) -> bool {
    e.api_group == group && e.resource == resource && e.subresource == subresource
}

/// Waits until onus has written nothing for [`SETTLED`] and returns that moment; fails if
/// onus keeps writing for 30 s with nothing changing (that alone breaks the rule).
async fn settled(env: &TestEnv, scope: &Scope) -> Timestamp {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let writes = scope.by_onus(env.cp.audit_events());
        let now = Timestamp::now();
        let last = writes.iter().map(|e| e.received).max();
        let quiet = last.is_none_or(|t| now.duration_since(t).unsigned_abs() >= SETTLED);
        if quiet {
            return now;
        }
        if Instant::now() > deadline {
            let recent: Vec<_> = writes.into_iter().rev().take(20).collect();
            panic!(
                "onus did not stop writing within 30 s of converging; latest writes:\n{}",
                list(&recent)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A Pod that passes the restricted level and every onus control.
fn compliant_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"churn": "pod"}},
        "spec": {"containers": [{"name": "app", "image": "nginx", "securityContext": hardened()}]}
    }))
    .expect("pod literal")
}

/// Creates and updates compliant Pods and Deployments in the governed namespaces for
/// [`CHURN`]: labels, annotations and images change, Deployments roll out new ReplicaSets; the
/// Namespaces and `default` ServiceAccounts get labels and annotations onus does not own.
/// Returns how many requests it made.
async fn churn(env: &TestEnv, namespaces: &[String]) -> usize {
    let params = PatchParams::default();
    let started = Instant::now();
    let mut requests = 0;
    let mut tick = 0usize;
    while started.elapsed() < CHURN {
        let ns = &namespaces[tick % namespaces.len()];
        let pods = Api::<Pod>::namespaced(env.client.clone(), ns);
        let deployments = Api::<Deployment>::namespaced(env.client.clone(), ns);
        let pod = format!("churn-{tick}");
        pods.create(&PostParams::default(), &compliant_pod(&pod))
            .await
            .unwrap_or_else(|e| panic!("creating pod {ns}/{pod}: {e}"));
        let relabel = json!({"metadata": {"labels": {"tick": tick.to_string()},
                                           "annotations": {"churn/at": tick.to_string()}}});
        pods.patch(&pod, &params, &Patch::Strategic(relabel.clone()))
            .await
            .unwrap_or_else(|e| panic!("relabelling pod {ns}/{pod}: {e}"));
        // Each namespace got a Deployment `app` before the policy; more follow.
        let dep = if tick.is_multiple_of(3) {
            let name = format!("churn-{tick}");
            env.create(Some(ns), deployment(&name, hardened(), json!({})))
                .await;
            requests += 1;
            name
        } else {
            "app".to_string()
        };
        let mut update = relabel;
        if tick.is_multiple_of(2) {
            // A new image rolls out a new ReplicaSet and its Pods.
            update["spec"] = json!({"template": {"spec": {"containers": [
                {"name": "app", "image": format!("nginx:1.{}", 20 + tick % 9)}
            ]}}});
        }
        // Strategic merge: containers merge by name, so an image change keeps the hardening.
        deployments
            .patch(&dep, &params, &Patch::Strategic(update))
            .await
            .unwrap_or_else(|e| panic!("updating deployment {ns}/{dep}: {e}"));
        requests += 3;
        if tick.is_multiple_of(5) {
            // Metadata onus does not own, on the very objects it remediates.
            let note = json!({"metadata": {"annotations": {"churn/at": tick.to_string()},
                                           "labels": {"team": format!("t{tick}")}}});
            Api::<Namespace>::all(env.client.clone())
                .patch(ns, &params, &Patch::Merge(&note))
                .await
                .unwrap_or_else(|e| panic!("annotating namespace {ns}: {e}"));
            Api::<ServiceAccount>::namespaced(env.client.clone(), ns)
                .patch("default", &params, &Patch::Merge(&note))
                .await
                .unwrap_or_else(|e| panic!("annotating {ns}/default: {e}"));
            requests += 2;
        }
        tick += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    requests
}

/// Creates the governed namespaces, each with a compliant Deployment `app` and Pod `seed`.
async fn governed_namespaces(env: &TestEnv) -> Vec<String> {
    let mut namespaces = Vec::new();
    for prefix in ["shop", "billing", "search"] {
        let ns = env.namespace(prefix, &[]).await;
        env.create(Some(&ns), deployment("app", hardened(), json!({})))
            .await;
        Api::<Pod>::namespaced(env.client.clone(), &ns)
            .create(&PostParams::default(), &compliant_pod("seed"))
            .await
            .unwrap_or_else(|e| panic!("creating pod {ns}/seed: {e}"));
        namespaces.push(ns);
    }
    namespaces
}

/// The status reflects the current spec.
fn observed(rp: &ResponsibilityPolicy) -> bool {
    let status = rp.status.as_ref();
    status.and_then(|s| s.observed_generation) == rp.metadata.generation
        && status.is_some_and(|s| status::condition(s, READY).is_some_and(|c| c.status == "True"))
}

/// Runs the scenario for one policy spec; `converged` says when the policy has converged.
/// Returns onus's writes before the churn (for the caller to check the convergence) and the
/// governed namespaces.
async fn no_write_without_a_change(
    mode: &str,
    spec: Value,
    reports: bool,
    converged: impl AsyncFn(&TestEnv, &Scope) -> bool,
) -> (Vec<AuditEvent>, BTreeSet<String>) {
    let user = format!("onus-operator-{mode}");
    let report_settings = reports.then(|| {
        let cp = onus_testenv::shared();
        common::install_report_crds(cp, ReportApi::OpenReports);
        ReportSettings::default()
    });
    let env = TestEnv::start_with(
        mode,
        Some((&user, Some("system:masters"))),
        None,
        false,
        report_settings,
    )
    .await;
    let namespaces = governed_namespaces(&env).await;
    let policy = env.apply_policy("prod", spec).await;
    let scope = Scope {
        user,
        policy: policy.clone(),
        namespaces: namespaces.iter().cloned().collect(),
        reports,
    };

    let api = Api::<ResponsibilityPolicy>::all(env.client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rp = api.get(&policy).await.expect("get policy");
        if observed(&rp) && converged(&env, &scope).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "policy {policy} did not converge in 60 s; status:\n{}",
            serde_yaml::to_string(&rp.status).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let start = settled(&env, &scope).await;
    let before: Vec<AuditEvent> = scope.by_onus(env.cp.audit_events());
    assert!(
        before
            .iter()
            .any(|e| e.name == policy
                && is_write_to(e, "onus.dev", "responsibilitypolicies", "status")),
        "the audit log shows no status write by {} while converging; its writes:\n{}",
        scope.user,
        list(&before)
    );

    let requests = churn(&env, &namespaces).await;
    // Changes onus sees late still count: its reaction to the last churn falls in the window.
    tokio::time::sleep(SETTLED).await;
    let end = Timestamp::now();
    let all = env.cp.audit_events();
    let in_window = |e: &AuditEvent| e.received >= start && e.received <= end;
    // The test's own requests are the admin's; kube-controller-manager uses the same
    // credentials but names itself.
    let churned = all
        .iter()
        .filter(|e| in_window(e) && e.user == "onus-testenv-admin")
        .filter(|e| !e.user_agent.starts_with("kube-controller-manager"))
        .filter(|e| {
            ["pods", "deployments", "namespaces", "serviceaccounts"].contains(&e.resource.as_str())
        })
        .count();
    assert!(
        churned == requests,
        "the audit log shows {churned} of the churn's {requests} writes"
    );
    let during: Vec<AuditEvent> = scope
        .by_onus(all)
        .into_iter()
        .filter(|e| in_window(e) && !is_write_to(e, "coordination.k8s.io", "leases", ""))
        .collect();
    assert!(
        during.is_empty(),
        "{mode}: onus wrote {} time(s) while only compliant workloads changed ({requests} churn \
         requests, {start} to {end}):\n{}",
        during.len(),
        list(&during)
    );

    // onus still watches: a privileged Deployment is reported (status and Events) at once.
    let after = Timestamp::now();
    let mut sc = hardened();
    sc["privileged"] = json!(true);
    sc.as_object_mut()
        .map(|o| o.remove("allowPrivilegeEscalation"));
    env.create(Some(&namespaces[0]), deployment("offender", sc, json!({})))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !scope.by_onus(env.cp.audit_events()).iter().any(|e| {
        e.received > after && is_write_to(e, "onus.dev", "responsibilitypolicies", "status")
    }) {
        assert!(
            Instant::now() < deadline,
            "onus did not report a privileged Deployment within 30 s: was it still watching?"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Clean up, so the next test's operator has nothing of this one's to release.
    api.delete(&policy, &DeleteParams::default())
        .await
        .expect("delete policy");
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.get_opt(&policy).await.expect("get policy").is_some() {
        assert!(
            Instant::now() < deadline,
            "policy {policy} not gone in 30 s (finalizer)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for ns in &namespaces {
        Api::<Namespace>::all(env.client.clone())
            .delete(ns, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting namespace {ns}: {e}"));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let everything = scope.by_onus(env.cp.audit_events());
    let outside: Vec<AuditEvent> = everything
        .iter()
        .filter(|e| !scope.allows(e))
        .cloned()
        .collect();
    assert!(
        outside.is_empty(),
        "{mode}: onus wrote to objects it has no business with:\n{}",
        list(&outside)
    );
    (before, scope.namespaces)
}

#[tokio::test]
async fn audit_mode_writes_nothing_while_only_compliant_workloads_change() {
    let _serial = SERIAL.lock().await;
    let (before, _) = no_write_without_a_change(
        "audit",
        json!({"serviceModel": "PaaS"}),
        false,
        async |_, _| true,
    )
    .await;
    // Audit mode changes nothing in the cluster, converging or not.
    let changes: Vec<AuditEvent> = before
        .into_iter()
        .filter(|e| {
            !is_write_to(e, "onus.dev", "responsibilitypolicies", "status")
                && e.resource != "events"
        })
        .collect();
    assert!(
        changes.is_empty(),
        "Audit mode wrote more than status and Events:\n{}",
        list(&changes)
    );
}

#[tokio::test]
async fn enforce_mode_with_default_settings_writes_nothing_while_only_compliant_workloads_change() {
    let _serial = SERIAL.lock().await;
    // Default network settings (deny ingress, DNS allowance on), restricted Pod Security,
    // no token on the `default` ServiceAccount.
    let (before, namespaces) = no_write_without_a_change(
        "enforce",
        json!({"serviceModel": "PaaS", "mode": "Enforce"}),
        false,
        remediated,
    )
    .await;
    // The remediations are onus's writes, visible in the audit log.
    let ns_of = |e: &AuditEvent| {
        if e.resource == "namespaces" {
            e.name.clone()
        } else {
            e.namespace.clone()
        }
    };
    // Exactly once each: the same plan is not carried out again before the watches report
    // its result, and what onus applied reads back as what it wants.
    for (group, resource) in [
        ("networking.k8s.io", "networkpolicies"),
        ("", "namespaces"),
        ("", "serviceaccounts"),
    ] {
        let mut written: Vec<String> = before
            .iter()
            .filter(|e| is_write_to(e, group, resource, ""))
            .map(ns_of)
            .collect();
        written.sort();
        let once: Vec<String> = namespaces.iter().cloned().collect();
        assert_eq!(
            written,
            once,
            "{resource}: onus should write once per governed namespace while converging; \
             its writes:\n{}",
            list(&before)
        );
    }
}

#[tokio::test]
async fn policy_reports_are_written_but_not_while_only_compliant_workloads_change() {
    let _serial = SERIAL.lock().await;
    let (before, namespaces) = no_write_without_a_change(
        "reports",
        json!({"serviceModel": "PaaS"}),
        true,
        async |env, scope| {
            Api::<ResponsibilityPolicy>::all(env.client.clone())
                .get(&scope.policy)
                .await
                .expect("get policy")
                .status
                .as_ref()
                .and_then(|s| status::condition(s, status::POLICY_REPORTS))
                .is_some_and(|c| c.status == "True")
        },
    )
    .await;
    // Audit mode with reports: status, Events, and the reports (one per governed namespace
    // and the cluster's), nothing else.
    let mut reports: Vec<String> = before
        .iter()
        .filter(|e| e.api_group == "openreports.io")
        .map(|e| e.namespace.clone())
        .collect();
    reports.sort();
    reports.dedup();
    let mut expected: Vec<String> = namespaces.into_iter().collect();
    expected.push(String::new());
    expected.sort();
    assert_eq!(reports, expected, "reports written:\n{}", list(&before));
    let changes: Vec<AuditEvent> = before
        .into_iter()
        .filter(|e| {
            !is_write_to(e, "onus.dev", "responsibilitypolicies", "status")
                && !is_write_to(e, "onus.dev", "responsibilitypolicies", "")
                && e.resource != "events"
                && e.api_group != "openreports.io"
        })
        .collect();
    assert!(
        changes.is_empty(),
        "Audit mode with reports wrote more than status, its finalizer, Events and reports:\n{}",
        list(&changes)
    );
}

/// Every remediation is in place and the policy says so.
async fn remediated(env: &TestEnv, scope: &Scope) -> bool {
    let rp = Api::<ResponsibilityPolicy>::all(env.client.clone())
        .get(&scope.policy)
        .await
        .expect("get policy");
    let reported = rp.status.as_ref().is_some_and(|s| {
        status::condition(s, ENFORCED).is_some_and(|c| c.status == "True")
            && is(s, "NET-01", Pass, 0)
            && is(s, "WKL-01", Pass, 0)
            && is(s, "AUD-01", Pass, 0)
            && is(s, "IAM-09", Pass, 0)
    });
    if !reported {
        return false;
    }
    for ns in &scope.namespaces {
        let np = Api::<NetworkPolicy>::namespaced(env.client.clone(), ns)
            .get_opt("onus-default-deny")
            .await
            .expect("get networkpolicy");
        let labels = Api::<Namespace>::all(env.client.clone())
            .get(ns)
            .await
            .expect("get namespace")
            .metadata
            .labels
            .unwrap_or_default();
        let sa = Api::<ServiceAccount>::namespaced(env.client.clone(), ns)
            .get("default")
            .await
            .expect("get serviceaccount");
        if np.is_none()
            || labels
                .get("pod-security.kubernetes.io/enforce")
                .map(String::as_str)
                != Some("restricted")
            || sa.automount_service_account_token != Some(false)
        {
            return false;
        }
    }
    true
}

/// The allow-list itself: what onus may touch, and near misses it may not.
#[test]
fn the_scope_allows_only_onus_objects_in_the_governed_namespaces() {
    let scope = Scope {
        user: "onus-operator-x".into(),
        policy: "x-prod".into(),
        namespaces: ["shop".to_string()].into(),
        reports: true,
    };
    let write =
        |verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str| AuditEvent {
            user: scope.user.clone(),
            groups: vec![],
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            code: Some(200),
            received: Timestamp::UNIX_EPOCH,
            uri: String::new(),
            user_agent: String::new(),
        };
    let np = "networking.k8s.io";
    for allowed in [
        write(
            "patch",
            "onus.dev",
            "responsibilitypolicies",
            "status",
            "",
            "x-prod",
        ),
        write(
            "patch",
            "onus.dev",
            "responsibilitypolicies",
            "",
            "",
            "x-prod",
        ),
        write(
            "patch",
            np,
            "networkpolicies",
            "",
            "shop",
            "onus-default-deny",
        ),
        write(
            "delete",
            np,
            "networkpolicies",
            "",
            "shop",
            "onus-default-deny",
        ),
        write("patch", "", "namespaces", "", "", "shop"),
        write("patch", "", "serviceaccounts", "", "shop", "default"),
        write("create", "events.k8s.io", "events", "", "shop", ""),
        write(
            "patch",
            "openreports.io",
            "reports",
            "",
            "shop",
            "onus-x-prod",
        ),
        write(
            "delete",
            "openreports.io",
            "reports",
            "",
            "shop",
            "onus-x-prod",
        ),
        write(
            "patch",
            "openreports.io",
            "clusterreports",
            "",
            "",
            "onus-x-prod",
        ),
        write(
            "patch",
            "events.k8s.io",
            "events",
            "",
            "default",
            "x-prod.1",
        ),
        write("create", "", "events", "", "shop", ""),
    ] {
        assert!(scope.allows(&allowed), "{allowed}");
    }
    for denied in [
        write(
            "patch",
            "onus.dev",
            "responsibilitypolicies",
            "status",
            "",
            "y-prod",
        ),
        write(
            "delete",
            "onus.dev",
            "responsibilitypolicies",
            "",
            "",
            "x-prod",
        ),
        write("patch", np, "networkpolicies", "", "shop", "allow-web"),
        write(
            "patch",
            np,
            "networkpolicies",
            "",
            "other",
            "onus-default-deny",
        ),
        write("patch", "", "namespaces", "", "", "other"),
        write("delete", "", "namespaces", "", "", "shop"),
        write("patch", "", "serviceaccounts", "", "shop", "builder"),
        write("create", "events.k8s.io", "events", "", "other", ""),
        write("patch", "apps", "deployments", "", "shop", "app"),
        write("create", "", "pods", "", "shop", ""),
        write(
            "patch",
            "openreports.io",
            "reports",
            "",
            "other",
            "onus-x-prod",
        ),
        write(
            "patch",
            "openreports.io",
            "reports",
            "",
            "shop",
            "onus-y-prod",
        ),
        write(
            "patch",
            "openreports.io",
            "reports",
            "",
            "shop",
            "kyverno-x",
        ),
        write("create", "openreports.io", "reports", "", "shop", ""),
        write("patch", "openreports.io", "clusterreports", "", "", "other"),
    ] {
        assert!(!scope.allows(&denied), "{denied}");
    }
    // Without policy reports, not even onus's own.
    let without = Scope {
        reports: false,
        ..scope
    };
    let report = |verb: &str, resource: &str, ns: &str| AuditEvent {
        user: without.user.clone(),
        groups: vec![],
        verb: verb.into(),
        api_group: "openreports.io".into(),
        resource: resource.into(),
        subresource: String::new(),
        namespace: ns.into(),
        name: "onus-x-prod".into(),
        code: Some(200),
        received: Timestamp::UNIX_EPOCH,
        uri: String::new(),
        user_agent: String::new(),
    };
    assert!(!without.allows(&report("patch", "reports", "shop")));
    assert!(!without.allows(&report("patch", "clusterreports", "")));
}
