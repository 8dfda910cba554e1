//! The Helm chart, tested against the real API server: lint and values schema, drift of its
//! generated copies, installation, and the operator running under the chart's own
//! ServiceAccount — with the full ClusterRole, and with each rule taken away.

mod alerts;
mod conventions;
mod dashboard;
mod least_privilege;
mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    apps::v1::Deployment,
    coordination::v1::Lease,
    core::v1::{Pod, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use onus::crd::{ControlResult, ResponsibilityPolicy};
use serde_json::{Value, json};
use support::*;

/// Tests that run the operator binary take turns: an operator reconciles every policy in the
/// cluster, so two at once would write each other's policies.
static OPERATOR_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[test]
fn chart_lints_strictly_with_defaults_and_with_every_option() {
    ok(helm(None).args(["lint", "--strict", "--kube-version", KUBE_VERSION, CHART]));
    ok(helm(None).args([
        "lint",
        "--strict",
        "--kube-version",
        KUBE_VERSION,
        CHART,
        "--set",
        "serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true",
        "--set",
        "replicas=3,leaderElection.enabled=false,networkPolicy.apiServer.cidrs={10.0.0.1/32}",
        "--set",
        "enforce.enabled=false,admissionPolicy.enabled=false",
        "--set",
        "policyReports.enabled=true,policyReports.api=wgpolicyk8s,policyReports.maxResults=50",
    ]));
}

#[test]
fn bad_values_are_refused_with_a_message_naming_the_field() {
    for (set, field) in [
        ("replicas=zero", "/replicas"),
        ("replicas=0", "/replicas"),
        ("logFormat=xml", "/logFormat"),
        ("policyReports.api=kyverno", "/policyReports/api"),
        ("policyReports.maxResults=0", "/policyReports/maxResults"),
        ("image.repository=", "/image/repository"),
        ("metrics.port=70000", "/metrics/port"),
        ("repliccas=2", "repliccas"),
        ("enforce.enabled=maybe", "/enforce/enabled"),
        ("admissionPolicy.enabled=1", "/admissionPolicy/enabled"),
    ] {
        let (success, _, stderr) = run(helm(None).args([
            "template",
            "--kube-version",
            KUBE_VERSION,
            "onus",
            CHART,
            "--set",
            set,
        ]));
        assert!(!success, "--set {set} was accepted");
        assert!(
            stderr.contains(field),
            "--set {set}: message should name {field}:\n{stderr}"
        );
    }
}

#[test]
fn chart_crd_is_a_copy_of_the_generated_crd() {
    let generated = std::fs::read_to_string(CRD_FILE).expect("crds/ file");
    let copy = std::fs::read_to_string(CHART_CRD_FILE).expect("chart CRD copy");
    assert!(
        generated == copy,
        "charts/onus/crds/responsibilitypolicy.yaml differs from crds/: run `make deploy` and commit"
    );
}

#[test]
fn deploy_manifests_are_a_fresh_render_of_the_chart() {
    // As `make deploy` renders them: for an API server that serves ValidatingAdmissionPolicy.
    let rendered = ok(helm(None).args([
        "template",
        "--kube-version",
        KUBE_VERSION,
        "onus",
        CHART,
        "--namespace",
        "onus-system",
        "--include-crds",
        "--api-versions",
        VAP_API,
    ]));
    // Without Helm's labels, as the Makefile's sed leaves them.
    let fresh: String = rendered
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            !l.starts_with("helm.sh/chart: ") && l != "app.kubernetes.io/managed-by: Helm"
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let committed = std::fs::read_to_string(DEPLOY_FILE).expect("deploy/onus.yaml");
    assert!(
        fresh == committed,
        "deploy/onus.yaml is stale: run `make deploy` and commit the result"
    );
}

#[test]
fn optional_monitoring_objects_render_with_the_operator_metrics() {
    let out = ok(helm(None).args([
        "template",
        "--kube-version",
        KUBE_VERSION,
        "onus",
        CHART,
        "--set",
        "serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true",
    ]));
    let docs = yaml_documents(&out);
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k} rendered"))
    };
    assert_eq!(
        kind("ServiceMonitor")["spec"]["endpoints"][0]["port"],
        "http-metrics"
    );
    let rules: Vec<Value> = kind("PrometheusRule")["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    let expr = |alert: &str| {
        rules
            .iter()
            .find(|r| r["alert"] == alert)
            .and_then(|r| r["expr"].as_str())
            .unwrap_or_else(|| panic!("alert {alert} missing"))
            .to_string()
    };
    // What each alert does is tested with promtool (alerts.rs); here only that they render.
    assert!(expr("OnusPolicyNonCompliant").contains("onus_policy_compliant == 0"));
    assert!(expr("OnusNotReconciling").contains("increase(onus_reconciliations_total[15m])) == 0"));
    assert_eq!(
        expr("OnusExceptionsExpiringSoon"),
        "onus_exceptions_expiring_soon > 0"
    );
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("dashboard ConfigMap labelled grafana_dashboard: \"1\"");
    let dashboard: Value =
        serde_json::from_str(cm["data"]["onus.json"].as_str().expect("onus.json")).expect("JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    for metric in [
        "onus_policy_compliant",
        "onus_control_violations",
        "onus_reconcile_errors_total",
        "onus_detection_latency_seconds_bucket",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(metric)),
            "no panel shows {metric}"
        );
    }
}

/// Installs the chart into a fresh namespace; returns (release, namespace).
async fn install_release(
    client: &Client,
    prefix: &str,
    labels: &[(&str, &str)],
) -> (String, String) {
    let cp = onus_testenv::shared();
    let namespace = cp.namespace(client, prefix, labels).await;
    // The release name contains the chart name, so it is also the fullname of every object.
    let release = format!("onus-{prefix}-{}", onus_testenv::random_suffix());
    install(cp, &release, &namespace, &[]);
    (release, namespace)
}

/// The arguments of the chart's Deployment as installed.
async fn chart_args(client: &Client, namespace: &str, release: &str) -> Vec<String> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(release)
        .await
        .expect("the chart's Deployment");
    deployment.spec.template.spec.expect("pod spec").containers[0]
        .args
        .clone()
        .unwrap_or_default()
}

/// A namespace without NetworkPolicies, selected by `onus.dev/chart-test=<selector>`.
async fn workload_namespace(client: &Client, selector: &str) -> String {
    onus_testenv::shared()
        .namespace(client, "workload", &[("onus.dev/chart-test", selector)])
        .await
}

#[tokio::test]
async fn the_operator_runs_under_the_charts_service_account() {
    let started = Instant::now();
    let _turn = OPERATOR_TURN.lock().await;
    let cp = onus_testenv::shared();
    let client = cp.client().await;
    let (release, namespace) = install_release(&client, "sa", &[]).await;
    let workload = workload_namespace(&client, &release).await;

    let kubeconfig = service_account_kubeconfig(cp, &namespace, &release);
    let args = operator_args(&chart_args(&client, &namespace, &release).await, None);
    eprintln!("running onus {}", args.join(" "));
    let mut operator = Operator::start(cp, &kubeconfig, &release, &namespace, &args);
    let policies = Api::<ResponsibilityPolicy>::all(client.clone());
    policies
        .create(&PostParams::default(), &policy(&release, &release))
        .await
        .expect("create policy");

    let status = poll_status(&client, &release, Duration::from_secs(30), |s| {
        has_condition(s, "Ready", "True")
    })
    .await;
    operator.assert_running();
    assert!(
        has_condition(status.as_ref(), "Ready", "True"),
        "policy not Ready under the chart's ServiceAccount; status: {status:?}\nlog:\n{}",
        operator.log()
    );
    let status = status.expect("status");
    let net01 = status
        .controls
        .iter()
        .find(|c| c.id == "NET-01")
        .expect("NET-01 in status");
    assert_eq!(net01.result, ControlResult::Fail);
    assert_eq!(net01.violations, 1);
    assert_eq!(net01.examples, vec![format!("Namespace/{workload}")]);
    assert_eq!(status.summary.as_ref().map(|s| s.namespaces), Some(1));
    // The Compliant=False transition is published as an Event: give it a moment to be refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        operator.forbidden_lines().is_empty(),
        "the full ClusterRole was not enough:\n{}",
        operator.forbidden_lines().join("\n")
    );

    // The Lease Role: what leader election needs on its own Lease, nothing on others.
    if binary_has_operations_cli() {
        let lease = Api::<Lease>::namespaced(client.clone(), &namespace)
            .get(&format!("{release}-leader"))
            .await
            .expect("the operator created its Lease with the chart's Role");
        assert_eq!(
            lease.spec.and_then(|s| s.holder_identity).as_deref(),
            Some(release.as_str()),
            "the operator (POD_NAME={release}) holds the Lease"
        );
    }
    let lease = format!("{release}-leader");
    let sa = format!("system:serviceaccount:{namespace}:{release}");
    for (verb, resource, allowed) in [
        ("get", format!("leases/{lease}"), true),
        ("update", format!("leases/{lease}"), true),
        ("create", "leases".to_string(), true),
        ("delete", format!("leases/{lease}"), false),
        ("get", "leases/someone-elses".to_string(), false),
        ("update", "leases/someone-elses".to_string(), false),
    ] {
        let (_, out, _) = run(cp.kubectl().args([
            "auth", "can-i", verb, &resource, "-n", &namespace, "--as", &sa,
        ]));
        assert_eq!(
            out.trim() == "yes",
            allowed,
            "can {sa} {verb} {resource}? got {out}"
        );
    }

    drop(operator);
    policies
        .delete(&release, &DeleteParams::default())
        .await
        .expect("delete policy");
    eprintln!(
        "operator under the chart's ServiceAccount: {:?}",
        started.elapsed()
    );
}

/// How the operator (running an Enforce policy) relates to a rule of the chart's ClusterRole, keyed by
/// "<group> <resources> <verbs>" (core group as "core").
fn rule_expectation(key: &str) -> Expectation {
    use Expectation::*;
    match key {
        "onus.dev responsibilitypolicies get,list,watch"
        | "onus.dev responsibilitypolicies patch"
        | "onus.dev responsibilitypolicies/status patch"
        | "core namespaces get,list,watch"
        | "core namespaces patch"
        | "core pods,services list,watch"
        | "core serviceaccounts get,list,watch"
        | "core serviceaccounts patch (default)"
        | "apps deployments,statefulsets,daemonsets,replicasets list,watch"
        | "batch jobs,cronjobs list,watch"
        | "networking.k8s.io networkpolicies get,list,watch"
        | "networking.k8s.io networkpolicies create,patch,delete (onus-default-deny)"
        | "rbac.authorization.k8s.io roles,clusterroles,rolebindings,clusterrolebindings list,watch"
        // The default-deny gate's watches (without them every default-deny is held).
        | "admissionregistration.k8s.io validatingwebhookconfigurations,mutatingwebhookconfigurations list,watch"
        | "apiextensions.k8s.io customresourcedefinitions list,watch"
        | "apiregistration.k8s.io apiservices list,watch"
        // The generated admission policies (refused: logged, and Enforced=False).
        | "admissionregistration.k8s.io validatingadmissionpolicies,validatingadmissionpolicybindings get,create,patch,delete (onus-iam-01,onus-iam-01-warn,onus-iam-02,onus-iam-02-warn,onus-iam-05,onus-iam-05-warn,onus-iam-07,onus-iam-07-warn,onus-wkl-10,onus-wkl-10-warn,onus-net-05,onus-net-05-warn,onus-dat-01,onus-dat-01-warn)"
        // Their watch (refused: logged; changes are then put back by the 5-minute repair).
        | "admissionregistration.k8s.io validatingadmissionpolicies,validatingadmissionpolicybindings list,watch"
        | "events.k8s.io events create,patch" => Needed,
        other => panic!("rule {other:?} is not classified in rule_expectation: add it"),
    }
}

enum Expectation {
    /// Without the rule the operator never evaluates the policy or logs a refused request.
    Needed,
}

fn rule_key(rule: &PolicyRule) -> String {
    let group = rule
        .api_groups
        .as_ref()
        .and_then(|g| g.first())
        .map(|g| if g.is_empty() { "core" } else { g.as_str() })
        .unwrap_or("core")
        .to_string();
    let resources = rule.resources.clone().unwrap_or_default().join(",");
    let names = match rule.resource_names.as_deref() {
        Some(names) if !names.is_empty() => format!(" ({})", names.join(",")),
        _ => String::new(),
    };
    format!("{group} {resources} {}{names}", rule.verbs.join(","))
}

#[tokio::test]
async fn every_cluster_role_rule_is_needed() {
    let started = Instant::now();
    let _turn = OPERATOR_TURN.lock().await;
    let cp = onus_testenv::shared();
    let client = cp.client().await;
    let (release, namespace) = install_release(&client, "min", &[]).await;
    workload_namespace(&client, &release).await;
    let full = cluster_role(&client, &release).await;
    let rules = full.rules.clone().unwrap_or_default();
    assert!(rules.len() >= 10, "unexpected ClusterRole: {rules:?}");
    for rule in &rules {
        let key = rule_key(rule);
        for list in [&rule.api_groups, &rule.resources, &Some(rule.verbs.clone())] {
            assert!(
                !list.iter().flatten().any(|v| v.contains('*')),
                "wildcard in {key}"
            );
        }
    }

    let args = chart_args(&client, &namespace, &release).await;
    // Leader election is not under test here: every ServiceAccount of the namespace may use
    // Leases, and each run takes a fresh one (no waiting for the previous holder's to expire).
    ok(cp.kubectl().args([
        "create",
        "role",
        "leases",
        "-n",
        &namespace,
        "--verb=get,create,update",
        "--resource=leases.coordination.k8s.io",
    ]));
    ok(cp.kubectl().args([
        "create",
        "rolebinding",
        "leases",
        "-n",
        &namespace,
        "--role=leases",
        &format!("--group=system:serviceaccounts:{namespace}"),
    ]));
    let roles = Api::<ClusterRole>::all(client.clone());
    let bindings = Api::<ClusterRoleBinding>::all(client.clone());
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &namespace);
    let policies = Api::<ResponsibilityPolicy>::all(client.clone());
    let mut report = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let rule_started = Instant::now();
        let key = rule_key(rule);
        let name = format!("{release}-without-{i}");
        let mut stripped = rules.clone();
        stripped.remove(i);
        roles
            .create(
                &PostParams::default(),
                &ClusterRole {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        ..Default::default()
                    },
                    rules: Some(stripped),
                    ..Default::default()
                },
            )
            .await
            .expect("create stripped ClusterRole");
        accounts
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}})).expect("sa"),
            )
            .await
            .expect("create ServiceAccount");
        bindings
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                    "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
                }))
                .expect("binding"),
            )
            .await
            .expect("create ClusterRoleBinding");
        // A fresh namespace each time: what an earlier run remediated needs no write now.
        workload_namespace(&client, &name).await;
        let kubeconfig = service_account_kubeconfig(cp, &namespace, &name);
        let args = operator_args(&args, Some(&name));
        let mut operator = Operator::start(cp, &kubeconfig, &name, &namespace, &args);
        policies
            .create(&PostParams::default(), &enforce_policy(&name, &name))
            .await
            .expect("create policy");

        let resources = rule.resources.clone().unwrap_or_default();
        let refused = |operator: &Operator| {
            operator
                .forbidden_lines()
                .into_iter()
                .find(|l| resources.iter().any(|r| l.contains(r.as_str())))
        };
        let outcome = match rule_expectation(&key) {
            Expectation::Needed => {
                let mut line = None;
                let status = poll_status(&client, &name, Duration::from_secs(10), |_| {
                    line = refused(&operator);
                    line.is_some()
                })
                .await;
                operator.assert_running();
                match line {
                    Some(line) => format!("needed: refused: {}", truncate(&line)),
                    None if status.is_none() => "needed: policy never evaluated".to_string(),
                    None => panic!(
                        "without rule {key:?} the operator still works (status {status:?}): \
                         the rule is not needed, or the operator hides the failure; log:\n{}",
                        operator.log()
                    ),
                }
            }
        };
        drop(operator);
        // The operator that could have removed its clean-up finalizer is gone: drop it by hand.
        policies
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await
            .expect("drop finalizer");
        policies
            .delete(&name, &DeleteParams::default())
            .await
            .expect("delete policy");
        report.push(format!("{key}: {outcome} ({:?})", rule_started.elapsed()));
    }
    eprintln!(
        "ClusterRole rules ({:?}):\n  {}",
        started.elapsed(),
        report.join("\n  ")
    );
}

fn truncate(line: &str) -> String {
    line.chars().take(300).collect()
}

#[tokio::test]
async fn the_operator_pods_pass_the_restricted_pod_security_level() {
    let started = Instant::now();
    let cp = onus_testenv::shared();
    let client = cp.client().await;
    let (release, namespace) = install_release(
        &client,
        "pss",
        &[
            ("pod-security.kubernetes.io/enforce", "restricted"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
        ],
    )
    .await;

    // The ReplicaSet controller creates the pods through admission, so PodSecurity rules on them.
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace);
    let selector = ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while pods
        .list(&selector)
        .await
        .expect("list pods")
        .items
        .is_empty()
    {
        if Instant::now() > deadline {
            let (_, events, _) = run(cp.kubectl().args(["get", "events", "-n", &namespace]));
            panic!("no operator pod was admitted into a restricted namespace; events:\n{events}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, events, _) = run(cp.kubectl().args([
        "get",
        "events",
        "-n",
        &namespace,
        "--field-selector",
        "reason=FailedCreate",
    ]));
    assert!(!events.contains("FailedCreate"), "{events}");

    // And directly: the rendered pod template is admitted, and the namespace does enforce.
    let deployment = Api::<Deployment>::namespaced(client.clone(), &namespace)
        .get(&release)
        .await
        .expect("the chart's Deployment");
    let template = deployment.spec.template;
    let mut pod = Pod {
        metadata: ObjectMeta {
            name: Some("template-probe".into()),
            ..Default::default()
        },
        spec: template.spec,
        ..Default::default()
    };
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    pods.create(&dry_run, &pod)
        .await
        .expect("the rendered pod template passes restricted Pod Security");
    if let Some(spec) = pod.spec.as_mut() {
        spec.containers[0].security_context = None;
    }
    let refused = pods.create(&dry_run, &pod).await.expect_err(
        "without its container securityContext the pod must be refused: PSA is not enforcing",
    );
    assert!(
        refused.to_string().contains("violates PodSecurity"),
        "{refused}"
    );

    // Uninstalling removes the chart's objects but leaves the CRD (and so every policy) behind.
    ok(helm(Some(cp)).args(["uninstall", &release, "--namespace", &namespace]));
    let (gone, _, _) = run(cp.kubectl().args(["get", "clusterrole", &release]));
    assert!(!gone, "ClusterRole {release} survived helm uninstall");
    ok(cp
        .kubectl()
        .args(["get", "crd", "responsibilitypolicies.onus.dev"]));
    eprintln!("restricted Pod Security: {:?}", started.elapsed());
}
