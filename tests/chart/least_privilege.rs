//! Least privilege: the ClusterRole narrowed by name, the Audit-only install
//! (`enforce.enabled=false`) and the ValidatingAdmissionPolicies with which onus restrains its
//! own ServiceAccount, rendered and on the real API server.

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    core::v1::{Namespace, ServiceAccount},
    networking::v1::NetworkPolicy,
    rbac::v1::PolicyRule,
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use onus::crd::{ControlResult, RemediationKind, ResponsibilityPolicy, ResponsibilityPolicyStatus};
use serde_json::{Value, json};

use super::{OPERATOR_TURN, chart_args, install_release, support::*};

const READS: [&str; 3] = ["get", "list", "watch"];

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn rendered_rules(docs: &[Value]) -> Vec<PolicyRule> {
    let role = of_kind(docs, "ClusterRole");
    assert_eq!(role.len(), 1, "one ClusterRole");
    serde_json::from_value(role[0]["rules"].clone()).expect("rules")
}

/// The rules of `group`/`resource` that allow more than reading: (verbs, resourceNames).
fn writes(rules: &[PolicyRule], group: &str, resource: &str) -> Vec<(Vec<String>, Vec<String>)> {
    rules
        .iter()
        .filter(|r| r.api_groups.iter().flatten().any(|g| g == group))
        .filter(|r| r.resources.iter().flatten().any(|x| x == resource))
        .filter(|r| r.verbs.iter().any(|v| !READS.contains(&v.as_str())))
        .map(|r| {
            (
                r.verbs.clone(),
                r.resource_names.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn args(docs: &[Value]) -> Vec<String> {
    let deployment = of_kind(docs, "Deployment");
    serde_json::from_value(
        deployment[0]["spec"]["template"]["spec"]["containers"][0]["args"].clone(),
    )
    .expect("args")
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_cluster_role_narrows_writes_by_name_and_enforce_disabled_makes_it_read_only() {
    let docs = render(&[], &[]);
    let rules = rendered_rules(&docs);
    assert_eq!(
        writes(&rules, "", "namespaces"),
        [(strings(&["patch"]), vec![])],
        "namespaces: patch, any name (a policy selects any namespace)"
    );
    assert_eq!(
        writes(&rules, "", "serviceaccounts"),
        [(strings(&["patch"]), strings(&["default"]))]
    );
    assert_eq!(
        writes(&rules, "networking.k8s.io", "networkpolicies"),
        [(
            strings(&["create", "patch", "delete"]),
            strings(&["onus-default-deny"])
        )]
    );
    // The generated admission policies and bindings: only the names onus generates.
    assert_eq!(
        writes(
            &rules,
            "admissionregistration.k8s.io",
            "validatingadmissionpolicies"
        ),
        [(
            strings(&["get", "create", "patch", "delete"]),
            onus::admission::all_names()
        )]
    );
    assert_eq!(
        writes(
            &rules,
            "admissionregistration.k8s.io",
            "validatingadmissionpolicybindings"
        ),
        [(
            strings(&["get", "create", "patch", "delete"]),
            onus::admission::all_names()
        )]
    );
    // `create` without a name only where it cannot be narrowed: Events.
    for rule in &rules {
        if rule.verbs.iter().any(|v| v == "create") && rule.resource_names.is_none() {
            assert_eq!(
                (rule.api_groups.clone(), rule.resources.clone()),
                (
                    Some(strings(&["events.k8s.io"])),
                    Some(strings(&["events"]))
                ),
                "unnarrowed create: {rule:?}"
            );
        }
    }
    assert!(!args(&docs).contains(&"--audit-only".to_string()));

    let docs = render(&["enforce.enabled=false"], &[]);
    let rules = rendered_rules(&docs);
    for (group, resource) in [
        ("", "namespaces"),
        ("", "serviceaccounts"),
        ("networking.k8s.io", "networkpolicies"),
    ] {
        assert_eq!(
            writes(&rules, group, resource),
            [],
            "enforce.enabled=false: {resource} must be read-only"
        );
        assert!(
            writes(
                &rules,
                "admissionregistration.k8s.io",
                "validatingadmissionpolicies"
            )
            .is_empty()
        );
        // Still read: Audit results are complete.
        assert!(
            rules
                .iter()
                .any(|r| r.resources.iter().flatten().any(|x| x == resource)
                    && r.verbs.iter().any(|v| v == "list")),
            "enforce.enabled=false: {resource} no longer listed"
        );
    }
    // Status and Events are still written.
    assert_eq!(
        writes(&rules, "onus.dev", "responsibilitypolicies/status"),
        [(strings(&["patch"]), vec![])]
    );
    assert_eq!(writes(&rules, "events.k8s.io", "events").len(), 1);
    assert!(args(&docs).contains(&"--audit-only".to_string()));
}

#[test]
fn policy_reports_add_their_rules_and_flags_only_when_enabled() {
    let report_groups = ["openreports.io", "wgpolicyk8s.io"];
    // Off by default: no rule on any report, no flag.
    let docs = render(&[], &[]);
    let rules = rendered_rules(&docs);
    assert!(
        !rules.iter().any(|r| r
            .api_groups
            .iter()
            .flatten()
            .any(|g| report_groups.contains(&g.as_str()))),
        "report rules without policyReports.enabled: {rules:?}"
    );
    assert!(!args(&docs).iter().any(|a| a.starts_with("--report-")));

    for (api, group, resources) in [
        (
            "openreports",
            "openreports.io",
            ["reports", "clusterreports"],
        ),
        (
            "wgpolicyk8s",
            "wgpolicyk8s.io",
            ["policyreports", "clusterpolicyreports"],
        ),
    ] {
        let docs = render(
            &[
                "policyReports.enabled=true",
                &format!("policyReports.api={api}"),
                "policyReports.maxResults=250000",
            ],
            &[],
        );
        let rules = rendered_rules(&docs);
        // Exactly the one API's reports: read, and written (never other groups').
        let report_rules: Vec<(Vec<String>, Vec<String>, Vec<String>)> = rules
            .iter()
            .filter(|r| {
                r.api_groups
                    .iter()
                    .flatten()
                    .any(|g| report_groups.contains(&g.as_str()))
            })
            .map(|r| {
                (
                    r.api_groups.clone().unwrap_or_default(),
                    r.resources.clone().unwrap_or_default(),
                    r.verbs.clone(),
                )
            })
            .collect();
        assert_eq!(
            report_rules,
            [
                (
                    strings(&[group]),
                    strings(&resources),
                    strings(&["get", "list"])
                ),
                (
                    strings(&[group]),
                    strings(&resources),
                    strings(&["create", "patch", "delete"])
                ),
            ],
            "{api}"
        );
        let args = args(&docs);
        assert!(args.contains(&format!("--report-api={api}")), "{args:?}");
        assert!(
            args.contains(&"--report-max-results=250000".to_string()),
            "{args:?}"
        );
        // Everything else is as without reports.
        let without = rendered_rules(&render(&[], &[]));
        let others: Vec<_> = rules
            .iter()
            .filter(|r| !r.api_groups.iter().flatten().any(|g| g == group))
            .cloned()
            .collect();
        assert_eq!(others, without, "{api}: other rules changed");
    }
}

#[test]
fn the_admission_policies_bind_the_charts_service_account_only_and_can_be_turned_off() {
    let vap = ["--api-versions", VAP_API];
    for (set, user) in [
        (vec![], "system:serviceaccount:onus-system:onus"),
        (
            vec!["serviceAccount.name=guard"],
            "system:serviceaccount:onus-system:guard",
        ),
        // Audit-only installs are restrained too (should their RBAC ever grow).
        (
            vec!["enforce.enabled=false"],
            "system:serviceaccount:onus-system:onus",
        ),
    ] {
        let docs = render(&set, &vap);
        let policies = of_kind(&docs, "ValidatingAdmissionPolicy");
        let bindings = of_kind(&docs, "ValidatingAdmissionPolicyBinding");
        let mut resources: Vec<String> = Vec::new();
        for policy in &policies {
            let policy: ValidatingAdmissionPolicy =
                serde_json::from_value((*policy).clone()).expect("ValidatingAdmissionPolicy");
            let name = policy.metadata.name.clone().expect("name");
            let spec = policy.spec.expect("spec");
            assert_eq!(spec.failure_policy.as_deref(), Some("Fail"), "{name}");
            let conditions = spec.match_conditions.unwrap_or_default();
            assert_eq!(
                conditions
                    .iter()
                    .map(|c| c.expression.as_str())
                    .collect::<Vec<_>>(),
                [format!("request.userInfo.username == '{user}'")],
                "{name}: matches the chart's ServiceAccount and nothing else"
            );
            for rule in spec
                .match_constraints
                .and_then(|m| m.resource_rules)
                .unwrap_or_default()
            {
                let ops = rule.operations.clone().unwrap_or_default();
                assert_eq!(ops, strings(&["CREATE", "UPDATE", "DELETE"]), "{name}");
                resources.extend(rule.resources.unwrap_or_default());
            }
            assert!(!spec.validations.unwrap_or_default().is_empty(), "{name}");
            let bound: Vec<&&Value> = bindings
                .iter()
                .filter(|b| b["spec"]["policyName"] == name.as_str())
                .collect();
            assert_eq!(bound.len(), 1, "{name}: one binding");
            let binding: ValidatingAdmissionPolicyBinding =
                serde_json::from_value((**bound[0]).clone()).expect("binding");
            let binding = binding.spec;
            assert_eq!(binding.validation_actions, strings(&["Deny"]));
            assert!(binding.match_resources.is_none() && binding.param_ref.is_none());
        }
        resources.sort();
        assert_eq!(
            resources,
            strings(&[
                "namespaces",
                "namespaces/*",
                "networkpolicies",
                "networkpolicies/*",
                "responsibilitypolicies",
                "serviceaccounts",
                "serviceaccounts/*",
            ]),
            "--set {set:?}"
        );
        assert_eq!(bindings.len(), policies.len());
    }

    // Values reused from an older chart (`helm upgrade --reuse-values`) lack these keys: they
    // render as the defaults, protections on, rather than failing or switching anything off.
    assert_eq!(
        render(&["enforce=null,admissionPolicy=null"], &vap),
        render(&[], &vap)
    );

    let count = |set: &[&str], extra: &[&str]| {
        of_kind(&render(set, extra), "ValidatingAdmissionPolicy").len()
    };
    assert_eq!(count(&["admissionPolicy.enabled=false"], &vap), 0);
    // Every version the chart supports (1.34 on) serves them.
    assert_eq!(count(&[], &[]), 4);
}

/// The first status of `policy` for which `done` holds, or the last one after `timeout`.
async fn wait_for(
    client: &Client,
    policy: &str,
    timeout: Duration,
    done: impl Fn(&ResponsibilityPolicyStatus) -> bool,
) -> Option<ResponsibilityPolicyStatus> {
    poll_status(client, policy, timeout, |s| s.is_some_and(&done)).await
}

fn condition<'a>(
    status: &'a ResponsibilityPolicyStatus,
    type_: &str,
) -> Option<(&'a str, &'a str, &'a str)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

async fn can_i(
    cp: &onus_testenv::ControlPlane,
    user: &str,
    verb: &str,
    what: &str,
    ns: &str,
) -> bool {
    let (_, out, _) = run(cp
        .kubectl()
        .args(["auth", "can-i", verb, what, "-n", ns, "--as", user]));
    out.trim() == "yes"
}

#[tokio::test]
async fn an_audit_only_install_reports_that_enforce_is_unavailable() {
    let _turn = OPERATOR_TURN.lock().await;
    let cp = onus_testenv::shared();
    let client = cp.client().await;
    let namespace = cp.namespace(&client, "audit-only", &[]).await;
    let release = format!("onus-audit-only-{}", onus_testenv::random_suffix());
    install(cp, &release, &namespace, &["enforce.enabled=false"]);
    let user = format!("system:serviceaccount:{namespace}:{release}");
    for (verb, what) in [
        ("patch", "namespaces"),
        ("patch", "serviceaccounts/default"),
        ("create", "networkpolicies/onus-default-deny"),
        ("patch", "networkpolicies/onus-default-deny"),
        ("delete", "networkpolicies/onus-default-deny"),
    ] {
        assert!(
            !can_i(cp, &user, verb, what, "default").await,
            "an Audit-only install may {verb} {what}"
        );
    }
    assert!(can_i(cp, &user, "list", "networkpolicies", "default").await);

    let workload = onus_testenv::shared()
        .namespace(&client, "workload", &[("onus.dev/chart-test", &release)])
        .await;
    let args = operator_args(&chart_args(&client, &namespace, &release).await, None);
    assert!(args.contains(&"--audit-only".to_string()), "{args:?}");
    let kubeconfig = service_account_kubeconfig(cp, &namespace, &release);
    let mut operator = Operator::start(cp, &kubeconfig, &release, &namespace, &args);
    let policies = Api::<ResponsibilityPolicy>::all(client.clone());
    policies
        .create(&PostParams::default(), &enforce_policy(&release, &release))
        .await
        .expect("create policy");

    let status = wait_for(&client, &release, Duration::from_secs(30), |s| {
        condition(s, "Enforced").is_some_and(|(_, reason, _)| reason == "EnforceUnavailable")
    })
    .await;
    operator.assert_running();
    let status = status.unwrap_or_else(|| panic!("no status; log:\n{}", operator.log()));
    let (value, reason, message) = condition(&status, "Enforced").expect("Enforced");
    assert_eq!(
        (value, reason),
        ("False", "EnforceUnavailable"),
        "status: {status:?}\nlog:\n{}",
        operator.log()
    );
    for part in [
        "--audit-only",
        "enforce.enabled=false",
        "patch namespaces or serviceaccounts",
        "networkpolicies",
    ] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    // The Audit results in full: evaluated, the violation named, the remediation a dry run.
    assert_eq!(condition(&status, "Ready").map(|c| c.0), Some("True"));
    assert_eq!(condition(&status, "Compliant").map(|c| c.0), Some("False"));
    let net01 = status
        .controls
        .iter()
        .find(|c| c.id == "NET-01")
        .expect("NET-01");
    assert_eq!(
        (net01.result, net01.violations, net01.examples.clone()),
        (
            ControlResult::Fail,
            1,
            vec![format!("Namespace/{workload}")]
        )
    );
    let remediation = status.remediation.clone().expect("remediation");
    assert_eq!(remediation.kind, RemediationKind::WouldApply);
    assert_eq!(
        (
            remediation.network_policies,
            remediation.pod_security_labels
        ),
        (1, 1)
    );
    // Nothing attempted, nothing changed, no finalizer it could not honour.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        operator.forbidden_lines().is_empty(),
        "an Audit-only operator attempted a write:\n{}",
        operator.forbidden_lines().join("\n")
    );
    let policy = policies.get(&release).await.expect("get policy");
    assert!(
        policy.metadata.finalizers.unwrap_or_default().is_empty(),
        "an Audit-only install added a finalizer"
    );
    let np = Api::<NetworkPolicy>::namespaced(client.clone(), &workload)
        .get_opt("onus-default-deny")
        .await
        .expect("get networkpolicy");
    assert!(
        np.is_none(),
        "an Audit-only install created a NetworkPolicy"
    );
    let labels = Api::<Namespace>::all(client.clone())
        .get(&workload)
        .await
        .expect("namespace")
        .metadata
        .labels
        .unwrap_or_default();
    assert!(
        !labels
            .keys()
            .any(|k| k.starts_with("pod-security.kubernetes.io/")),
        "{labels:?}"
    );

    drop(operator);
    policies
        .delete(&release, &DeleteParams::default())
        .await
        .expect("delete policy");
}

/// The admission policies of a release.
fn restraints(release: &str) -> [String; 4] {
    [
        "namespaces",
        "serviceaccounts",
        "networkpolicies",
        "policies",
    ]
    .map(|r| format!("{release}-restrain-{r}"))
}

/// A write refused by the named admission policy.
fn assert_denied<T: std::fmt::Debug>(result: Result<T, kube::Error>, by: &str, what: &str) {
    match result {
        Err(kube::Error::Api(status)) => assert!(
            status.code == 403 && status.message.contains(&format!("'{by}'")),
            "{what}: refused, but not by {by}: {status:?}"
        ),
        other => panic!("{what}: not refused by {by}: {other:?}"),
    }
}

/// Refused with 403 (not, say, a ServiceAccount not created yet).
fn refused<T>(result: &Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(s)) if s.code == 403)
}

fn merge(value: Value) -> Patch<Value> {
    Patch::Merge(value)
}

fn deny_np(namespace: &str, name: &str, labels: Value, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
    })
}

#[tokio::test]
async fn the_operator_enforces_under_its_admission_policies_and_writes_outside_them_are_denied() {
    let _turn = OPERATOR_TURN.lock().await;
    let cp = onus_testenv::shared();
    let client = cp.client().await;
    let (release, namespace) = install_release(&client, "vap", &[]).await;
    let [ns_policy, sa_policy, np_policy, rp_policy] = restraints(&release);
    for name in [&ns_policy, &sa_policy, &np_policy, &rp_policy] {
        ok(cp.kubectl().args([
            "get",
            "validatingadmissionpolicy,validatingadmissionpolicybinding",
            name,
        ]));
    }
    let user = format!("system:serviceaccount:{namespace}:{release}");
    // The operator's identity past RBAC (system:masters): what it meets is the admission
    // policies alone, so every refusal below is theirs.
    let as_onus = cp.client_as(&user, Some("system:masters")).await;
    let probe = cp.namespace(&client, "probe", &[]).await;
    let namespaces = Api::<Namespace>::all(as_onus.clone());
    let dry_run = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    // The API server loads new admission policies within moments: wait until they refuse a
    // dry run, so the operator below runs under them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ns = namespaces
            .patch(
                &probe,
                &dry_run,
                &merge(json!({"metadata": {"labels": {"team": "x"}}})),
            )
            .await;
        let sa = Api::<ServiceAccount>::namespaced(as_onus.clone(), &probe)
            .patch(
                "default",
                &dry_run,
                &merge(json!({"metadata": {"labels": {"team": "x"}}})),
            )
            .await;
        let np = Api::<NetworkPolicy>::namespaced(as_onus.clone(), &probe)
            .create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &serde_json::from_value(deny_np(
                    &probe,
                    "probe",
                    json!({}),
                    json!({"podSelector": {}}),
                ))
                .expect("np"),
            )
            .await;
        let rp = Api::<ResponsibilityPolicy>::all(as_onus.clone())
            .create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &policy(&format!("{release}-probe"), &probe),
            )
            .await;
        if refused(&ns) && refused(&sa) && refused(&np) && refused(&rp) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the admission policies did not refuse these dry runs in 30 s (not loaded, or they allow them): {ns:?} {sa:?} {np:?} {rp:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A namespace with a Pod Security label of its own: onus replaces it and restores it.
    let workload = cp
        .namespace(
            &client,
            "workload",
            &[
                ("onus.dev/chart-test", release.as_str()),
                ("pod-security.kubernetes.io/warn", "baseline"),
            ],
        )
        .await;
    let args = operator_args(&chart_args(&client, &namespace, &release).await, None);
    let kubeconfig = service_account_kubeconfig(cp, &namespace, &release);
    let mut operator = Operator::start(cp, &kubeconfig, &release, &namespace, &args);
    let policies = Api::<ResponsibilityPolicy>::all(client.clone());
    policies
        .create(&PostParams::default(), &enforce_policy(&release, &release))
        .await
        .expect("create policy");
    let status = wait_for(&client, &release, Duration::from_secs(30), |s| {
        condition(s, "Enforced").is_some_and(|c| c.0 == "True")
    })
    .await;
    operator.assert_running();
    assert!(
        status
            .as_ref()
            .and_then(|s| condition(s, "Enforced"))
            .is_some_and(|c| c.0 == "True"),
        "not enforced under the admission policies; status: {status:?}\nlog:\n{}",
        operator.log()
    );
    let admin_ns = Api::<Namespace>::all(client.clone());
    let admin_sa = Api::<ServiceAccount>::namespaced(client.clone(), &workload);
    let admin_np = Api::<NetworkPolicy>::namespaced(client.clone(), &workload);
    let ns = admin_ns.get(&workload).await.expect("namespace");
    let labels = ns.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/warn")
            .map(String::as_str),
        Some("restricted")
    );
    let annotations = ns.metadata.annotations.unwrap_or_default();
    assert!(
        annotations
            .get("onus.dev/previous-labels")
            .is_some_and(|v| v.contains("baseline")),
        "{annotations:?}"
    );
    let sa = admin_sa
        .get("default")
        .await
        .expect("default ServiceAccount");
    assert_eq!(sa.automount_service_account_token, Some(false));
    let np = admin_np
        .get("onus-default-deny")
        .await
        .expect("onus-default-deny");
    let spec = np.spec.expect("spec");
    assert_eq!(spec.policy_types, Some(strings(&["Ingress", "Egress"])));
    // The generated admission policies passed the restraint: in place, and status says so.
    let generated = Api::<ValidatingAdmissionPolicy>::all(client.clone());
    let iam01 = generated.get("onus-iam-01").await.expect("onus-iam-01");
    assert_eq!(
        iam01
            .metadata
            .labels
            .unwrap_or_default()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("onus")
    );
    let status = wait_for(&client, &release, Duration::from_secs(30), |s| {
        s.controls
            .iter()
            .any(|c| c.id == "IAM-01" && c.admission == Some(onus::crd::AdmissionAction::Deny))
    })
    .await;
    assert!(
        status.as_ref().is_some_and(|s| s
            .controls
            .iter()
            .any(|c| c.id == "IAM-01" && c.admission.is_some())),
        "IAM-01 not reported prevented: {status:?}"
    );

    // Letting go passes the admission policies too: switched to Audit, onus removes its
    // NetworkPolicy, gives up the token setting and restores the label it replaced.
    policies
        .patch(
            &release,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mode": "Audit"}})),
        )
        .await
        .expect("switch to Audit");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let labels = admin_ns
            .get(&workload)
            .await
            .expect("namespace")
            .metadata
            .labels
            .unwrap_or_default();
        let released = labels
            .get("pod-security.kubernetes.io/warn")
            .map(String::as_str)
            == Some("baseline")
            && !labels.contains_key("pod-security.kubernetes.io/enforce")
            && admin_np
                .get_opt("onus-default-deny")
                .await
                .expect("np")
                .is_none()
            && admin_sa
                .get("default")
                .await
                .expect("sa")
                .automount_service_account_token
                .is_none()
            && generated
                .get_opt("onus-iam-01")
                .await
                .expect("vap")
                .is_none();
        if released {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not released in 30 s: labels {labels:?}\nlog:\n{}",
            operator.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    operator.assert_running();
    assert!(
        operator.forbidden_lines().is_empty(),
        "the admission policies (or RBAC) refused the operator:\n{}",
        operator.forbidden_lines().join("\n")
    );
    drop(operator);
    // The policy itself is its author's: onus may only add and remove its finalizer (which the
    // operator did above, under the admission policy).
    let rp_api = Api::<ResponsibilityPolicy>::all(as_onus.clone());
    assert_denied(
        rp_api
            .patch(
                &release,
                &PatchParams::default(),
                &merge(json!({"spec": {"mode": "Enforce"}})),
            )
            .await,
        &rp_policy,
        "a policy's spec",
    );
    assert_denied(
        rp_api.delete(&release, &DeleteParams::default()).await,
        &rp_policy,
        "deleting a policy",
    );
    policies
        .delete(&release, &DeleteParams::default())
        .await
        .expect("delete policy");

    // Writes outside them, as the operator's identity, are denied.
    let ns_api = Api::<Namespace>::all(as_onus.clone());
    let sa_api = Api::<ServiceAccount>::namespaced(as_onus.clone(), &workload);
    let np_api = Api::<NetworkPolicy>::namespaced(as_onus.clone(), &workload);
    let params = PatchParams::default();
    let apply = PatchParams::apply("onus").force();
    assert_denied(
        ns_api
            .patch(
                &workload,
                &params,
                &merge(json!({"metadata": {"labels": {"team": "x"}}})),
            )
            .await,
        &ns_policy,
        "a label other than Pod Security on a Namespace",
    );
    assert_denied(
        ns_api
            .patch(
                &workload,
                &params,
                &merge(json!({"metadata": {"labels": {"onus.dev/chart-test": null}}})),
            )
            .await,
        &ns_policy,
        "removing a label other than Pod Security from a Namespace",
    );
    assert_denied(
        ns_api
            .patch(
                &workload,
                &params,
                &merge(json!({"metadata": {"annotations": {"owner": "mallory"}}})),
            )
            .await,
        &ns_policy,
        "an annotation that is not onus's on a Namespace",
    );
    assert_denied(
        ns_api.delete(&workload, &DeleteParams::default()).await,
        &ns_policy,
        "deleting a Namespace",
    );
    assert_denied(
        sa_api
            .patch(
                "default",
                &params,
                &merge(json!({"metadata": {"labels": {"team": "x"}}})),
            )
            .await,
        &sa_policy,
        "a label on a ServiceAccount",
    );
    assert_denied(
        sa_api
            .patch(
                "default",
                &params,
                &merge(json!({"imagePullSecrets": [{"name": "registry"}]})),
            )
            .await,
        &sa_policy,
        "an SA field other than automountServiceAccountToken",
    );
    Api::<ServiceAccount>::namespaced(client.clone(), &workload)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "builder"}})).expect("sa"),
        )
        .await
        .expect("create ServiceAccount builder");
    assert_denied(
        sa_api
            .patch(
                "builder",
                &params,
                &merge(json!({"automountServiceAccountToken": false})),
            )
            .await,
        &sa_policy,
        "a ServiceAccount other than default",
    );
    let managed = json!({"app.kubernetes.io/managed-by": "onus"});
    let deny = json!({"podSelector": {}, "policyTypes": ["Ingress"]});
    assert_denied(
        np_api
            .patch(
                "allow-all",
                &apply,
                &Patch::Apply(deny_np(
                    &workload,
                    "allow-all",
                    managed.clone(),
                    deny.clone(),
                )),
            )
            .await,
        &np_policy,
        "a NetworkPolicy with another name",
    );
    assert_denied(
        np_api
            .patch(
                "onus-default-deny",
                &apply,
                &Patch::Apply(deny_np(
                    &workload,
                    "onus-default-deny",
                    json!({}),
                    deny.clone(),
                )),
            )
            .await,
        &np_policy,
        "onus-default-deny without onus's managed-by label",
    );
    assert_denied(
        np_api
            .patch(
                "onus-default-deny",
                &apply,
                &Patch::Apply(deny_np(
                    &workload,
                    "onus-default-deny",
                    managed.clone(),
                    json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]}),
                )),
            )
            .await,
        &np_policy,
        "onus-default-deny that allows all ingress",
    );
    // And what onus does is still allowed to that identity: a Pod Security label, the token
    // field, its own NetworkPolicy.
    ns_api
        .patch(
            &workload,
            &params,
            &merge(
                json!({"metadata": {"labels": {"pod-security.kubernetes.io/audit": "restricted"}}}),
            ),
        )
        .await
        .expect("a Pod Security label is onus's to set");
    sa_api
        .patch(
            "default",
            &params,
            &merge(json!({"automountServiceAccountToken": false})),
        )
        .await
        .expect("automountServiceAccountToken is onus's to set");
    np_api
        .patch(
            "onus-default-deny",
            &apply,
            &Patch::Apply(deny_np(&workload, "onus-default-deny", managed, deny)),
        )
        .await
        .expect("onus-default-deny is onus's to write");
    np_api
        .delete("onus-default-deny", &DeleteParams::default())
        .await
        .expect("onus-default-deny is onus's to delete");

    // RBAC narrows the ServiceAccount's own writes by name where it can.
    for (verb, what, allowed) in [
        ("patch", "serviceaccounts/default", true),
        ("patch", "serviceaccounts/builder", false),
        ("create", "serviceaccounts", false),
        ("create", "networkpolicies/onus-default-deny", true),
        ("create", "networkpolicies", false),
        ("patch", "networkpolicies/onus-default-deny", true),
        ("patch", "networkpolicies/allow-all", false),
        ("delete", "networkpolicies/allow-all", false),
        // The generated admission policies (no admission policy can restrain these writes:
        // the API server exempts admissionregistration.k8s.io objects from them).
        ("create", "validatingadmissionpolicies/onus-iam-01", true),
        (
            "patch",
            "validatingadmissionpolicybindings/onus-iam-07-warn",
            true,
        ),
        ("delete", "validatingadmissionpolicies/onus-iam-02", true),
        ("create", "validatingadmissionpolicies", false),
        ("patch", "validatingadmissionpolicies/some-policy", false),
        (
            "delete",
            "validatingadmissionpolicybindings/some-binding",
            false,
        ),
        (
            "patch",
            "validatingwebhookconfigurations/onus-iam-01",
            false,
        ),
    ] {
        assert_eq!(
            can_i(cp, &user, verb, what, &workload).await,
            allowed,
            "can {user} {verb} {what}?"
        );
    }
}

/// The openreports CRDs as their project publishes them (hack/fetch-report-crds.sh, run by
/// `make tools`), installed and established.
fn install_openreports_crds(cp: &onus_testenv::ControlPlane) {
    let cache = std::env::var_os("ONUS_CACHE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache/onus"))
        })
        .expect("ONUS_CACHE or HOME");
    let dir = cache.join("report-crds/openreports-v0.2.1");
    for file in [
        "openreports.io_reports.yaml",
        "openreports.io_clusterreports.yaml",
    ] {
        let path = dir.join(file);
        assert!(
            path.is_file(),
            "{} missing: run `make tools` (hack/fetch-report-crds.sh)",
            path.display()
        );
        ok(cp
            .kubectl()
            .args(["apply", "--server-side", "-f"])
            .arg(&path));
    }
    for crd in ["reports.openreports.io", "clusterreports.openreports.io"] {
        cp.wait_crd_established(crd, Duration::from_secs(60));
    }
}

/// With `policyReports.enabled`, the two report rules are each needed: with the full role the
/// operator (the binary, under the chart's arguments) publishes a policy's reports; without
/// either rule the policy says the API server refused (`PolicyReports=False`,
/// `ReportWriteFailed`, forbidden), never silently nothing.
#[tokio::test]
async fn with_policy_reports_on_each_report_rule_is_needed() {
    if !binary_has_operations_cli() {
        eprintln!("the onus binary predates the chart's arguments; skipped");
        return;
    }
    let started = Instant::now();
    let _turn = OPERATOR_TURN.lock().await;
    let cp = onus_testenv::shared();
    let client = cp.client().await;
    install_openreports_crds(cp);
    let namespace = cp.namespace(&client, "reports", &[]).await;
    let release = format!("onus-reports-{}", onus_testenv::random_suffix());
    install(cp, &release, &namespace, &["policyReports.enabled=true"]);
    let args = chart_args(&client, &namespace, &release).await;
    assert!(
        args.contains(&"--report-api=openreports".to_string()),
        "{args:?}"
    );
    let full = cluster_role(&client, &release)
        .await
        .rules
        .unwrap_or_default();
    let reports: Vec<usize> = full
        .iter()
        .enumerate()
        .filter(|(_, r)| r.api_groups.iter().flatten().any(|g| g == "openreports.io"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(reports.len(), 2, "two report rules: {full:?}");
    // Leader election is not under test: every ServiceAccount of the namespace may use Leases.
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
    let roles = Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(client.clone());
    let bindings = Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(client.clone());
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &namespace);
    let policies = Api::<ResponsibilityPolicy>::all(client.clone());
    for strip in [None, Some(reports[0]), Some(reports[1])] {
        let name = match strip {
            None => format!("{release}-full"),
            Some(i) => format!("{release}-without-{i}"),
        };
        let mut rules = full.clone();
        if let Some(i) = strip {
            rules.remove(i);
        }
        roles
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}, "rules": rules}))
                    .expect("role"),
            )
            .await
            .expect("create ClusterRole");
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
        super::workload_namespace(&client, &name).await;
        let kubeconfig = service_account_kubeconfig(cp, &namespace, &name);
        let mut operator = Operator::start(
            cp,
            &kubeconfig,
            &name,
            &namespace,
            &operator_args(&args, Some(&name)),
        );
        policies
            .create(&PostParams::default(), &policy(&name, &name))
            .await
            .expect("create policy");
        let want = if strip.is_none() { "True" } else { "False" };
        let status = poll_status(&client, &name, Duration::from_secs(30), |s| {
            has_condition(s, "PolicyReports", want)
        })
        .await;
        operator.assert_running();
        let condition = status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "PolicyReports"))
            .cloned();
        match strip {
            None => assert!(
                condition.as_ref().is_some_and(|c| c.status == "True"),
                "the full role: reports not published: {condition:?}; log:\n{}",
                operator.log()
            ),
            Some(i) => assert!(
                condition.as_ref().is_some_and(|c| c.status == "False"
                    && c.reason == "ReportWriteFailed"
                    && c.message.contains("forbidden")),
                "without rule {:?} the operator still publishes, or hides the refusal: \
                 {condition:?}; log:\n{}",
                full[i],
                operator.log()
            ),
        }
        drop(operator);
        // The operator that could have removed its clean-up finalizer is gone: drop it by hand
        // (the reports go with the policy: their owner reference).
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
    }
    eprintln!("policy report rules: {:?}", started.elapsed());
}
