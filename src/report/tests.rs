use jiff::Timestamp;
use serde_json::json;

use super::*;

fn now() -> Timestamp {
    "2026-06-01T00:00:00Z".parse().expect("timestamp")
}

#[test]
fn offenders_keep_their_namespace() {
    assert_eq!(namespace_of("Deployment/shop/web").as_deref(), Some("shop"));
    assert_eq!(namespace_of("Namespace/shop").as_deref(), Some("shop"));
    assert_eq!(namespace_of("ClusterRoleBinding/ops: User/alice"), None);
    assert_eq!(
        namespace_of("RoleBinding/shop/edit: ServiceAccount/shop/ci").as_deref(),
        Some("shop")
    );
}

fn policy(status: serde_json::Value) -> ResponsibilityPolicy {
    serde_json::from_value(json!({
        "apiVersion": "onus.dev/v1alpha1",
        "kind": "ResponsibilityPolicy",
        "metadata": {"name": "prod", "generation": 2},
        "spec": {
            "serviceModel": "PaaS",
            "mode": "Enforce",
            "controls": {"network": {"mode": "Audit"}},
            "responsibilities": [
                {"control": "NET-04", "owner": "Provider", "reason": "the provider runs Calico"}
            ],
            "exceptions": [
                {"controls": ["WKL-03"], "namespaces": ["mon"],
                 "resources": [{"kind": "DaemonSet", "name": "node-exporter"}],
                 "reason": "host metrics", "expires": "2026-01-01T00:00:00Z"},
                {"controls": ["DAT-01"], "reason": "legacy", "expires": "2027-01-01T00:00:00Z"}
            ]
        },
        "status": status,
    }))
    .expect("policy literal")
}

#[test]
fn a_policy_report_has_owners_modes_exceptions_and_says_when_offenders_are_a_sample() {
    let examples: Vec<String> = (0..10).map(|i| format!("Deployment/shop/w{i}")).collect();
    let p = policy(json!({
        "observedGeneration": 2,
        "podSecurityVersion": "v1.37",
        "summary": {"namespaces": 3, "controls": 2, "customerOwned": 1, "passing": 0,
                    "failing": 1, "violations": 12, "excepted": 0},
        "conditions": [
            {"type": "Compliant", "status": "False", "reason": "ViolationsFound", "message": "m",
             "lastTransitionTime": "2026-05-01T00:00:00Z"},
        ],
        "controls": [
            {"id": "WKL-03", "title": "No privileged containers", "family": "podSecurity",
             "owner": "Customer", "ownerSource": "ServiceModel", "result": "Fail",
             "violations": 12, "examples": examples, "admission": "Deny"},
            {"id": "NET-04", "title": "NetworkPolicy is enforced by the CNI", "family": "network",
             "owner": "Provider", "ownerSource": "Override", "result": "ProviderOwned",
             "violations": 0},
        ],
    }));
    let r = from_policy(&p, None, now());
    assert!(!r.compliant);
    assert_eq!(r.namespaces, Some(3));
    let wkl = &r.controls[0];
    assert_eq!(
        (wkl.mode, wkl.offenders.len(), wkl.offenders_complete),
        (Mode::Enforce, 10, false)
    );
    let net = &r.controls[1];
    assert_eq!(net.mode, Mode::Audit);
    assert_eq!(
        net.owner_reason.as_deref(),
        Some("the provider runs Calico")
    );
    assert!(net.offenders_complete);
    assert!(
        r.notes.iter().any(|n| n.contains("at most 10 offenders")),
        "{:?}",
        r.notes
    );
    assert_eq!(r.exceptions.len(), 2);
    assert!(!r.exceptions[0].valid, "expired");
    assert!(r.exceptions[1].valid);
    assert_eq!(r.exceptions[0].resources, ["DaemonSet/node-exporter"]);
    // Every format says it.
    let document = Document {
        generated_at: now().to_string(),
        source: "status".into(),
        file: Some("rp.json".into()),
        cluster: None,
        policies: vec![r],
    };
    let md = render::markdown(&document);
    assert!(md.contains("| WKL-03 | No privileged containers | Customer | ServiceModel | Enforce | Fail | prevented | 12 | 0 |"), "{md}");
    assert!(
        md.contains("| ProviderOwned | - | 0 | 0 |"),
        "a control the customer does not own is neither prevented nor detected: {md}"
    );
    assert!(md.contains("override: the provider runs Calico"), "{md}");
    assert!(md.contains("(Fail, 10 of 12, a sample)"), "{md}");
    assert!(md.contains("| no: expired |"), "{md}");
    let html = render::html(&document);
    assert_eq!(
        html.matches("<td class=\"cell-fail\">").count(),
        1,
        "{html}"
    );
    assert!(
        !html.contains("<script") && !html.contains("http"),
        "self-contained"
    );
    let back: serde_json::Value = serde_json::from_str(&render::json(&document)).expect("JSON");
    assert_eq!(back["policies"][0]["controls"][0]["violations"], 12);
    assert_eq!(back["policies"][0]["controls"][0]["admission"], "Deny");
    assert!(
        back["policies"][0]["controls"][1]
            .get("admission")
            .is_none()
    );
    assert!(
        html.contains("<td class=\"at-prevented\">prevented</td>"),
        "{html}"
    );
}

#[test]
fn a_control_without_admission_is_detected_only_when_this_policy_checks_it() {
    let mut p = policy(json!({
        "observedGeneration": 2,
        "controls": [
            {"id": "WKL-03", "title": "t", "family": "podSecurity", "owner": "Customer",
             "ownerSource": "ServiceModel", "result": "Pass", "violations": 0},
            {"id": "IAM-01", "title": "t", "family": "rbac", "owner": "Customer",
             "ownerSource": "ServiceModel", "result": "Fail", "violations": 1,
             "admission": "Warn"},
            {"id": "AUD-02", "title": "t", "family": "audit", "owner": "Customer",
             "ownerSource": "ServiceModel", "result": "NotObservable", "violations": 0},
        ],
    }));
    p.metadata.generation = Some(2);
    let r = from_policy(&p, None, now());
    let at: Vec<&str> = r.controls.iter().map(ControlRow::checked_at).collect();
    assert_eq!(at, ["detected", "warned", "-"]);
}

#[test]
fn a_policy_without_status_is_not_reported_compliant() {
    let mut p = policy(json!({}));
    p.status = None;
    let r = from_policy(&p, None, now());
    assert!(!r.compliant);
    assert!(r.notes[0].contains("no status"));
}

#[test]
fn a_file_that_is_neither_is_refused() {
    assert!(from_file("x.yaml", "kind: ConfigMap\n", None, now()).is_err());
    assert!(from_file("x.yaml", ": :\n  - [", None, now()).is_err());
}

#[test]
fn the_command_line_takes_kubectls_kubeconfig_and_context_flags() {
    let parse = |args: &[&str]| cli::parse(args.iter().map(|a| a.to_string()));
    let Ok(cli::Command::Report(args)) = parse(&[
        "prod",
        "--kubeconfig",
        "/tmp/k",
        "--context=staging",
        "--format",
        "json",
    ]) else {
        panic!("parsed")
    };
    assert_eq!(args.policy.as_deref(), Some("prod"));
    assert_eq!(args.kubeconfig.as_deref(), Some("/tmp/k"));
    assert_eq!(args.context.as_deref(), Some("staging"));
    assert_eq!(args.format, cli::Format::Json);
    assert!(parse(&["--context"]).is_err(), "a flag without its value");
    assert!(parse(&["--context="]).is_err(), "an empty value");
}
