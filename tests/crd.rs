//! The CRD: committed YAML matches the Rust types, and the API server refuses bad policies
//! with a message that names the field.

mod common;

use kube::CustomResourceExt;
use onus::crd::ResponsibilityPolicy;

#[test]
fn committed_crd_matches_the_rust_types() {
    let generated = serde_yaml::to_string(&ResponsibilityPolicy::crd()).expect("yaml");
    let committed = std::fs::read_to_string(common::CRD_FILE).expect("crds/ file");
    // The API server warns on every apply about formats it does not know.
    assert!(
        !generated.contains("format: uint"),
        "use int32/int64 formats in the schema"
    );
    assert!(
        generated == committed,
        "crds/responsibilitypolicy.yaml is stale: run `make crds` and commit the result"
    );
}

/// Server-side dry-run apply of a policy with the given spec; returns kubectl's result.
fn dry_run(spec: &str) -> (bool, String) {
    let cp = onus_testenv::shared();
    common::install_crd(cp);
    let doc = format!(
        "apiVersion: onus.dev/v1alpha1\nkind: ResponsibilityPolicy\nmetadata:\n  name: probe\nspec:\n{}",
        spec.lines().map(|l| format!("  {l}\n")).collect::<String>()
    );
    let out = common::kubectl_with_input(
        cp,
        &["apply", "--dry-run=server", "-f", "-"],
        doc.as_bytes(),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn assert_refused(spec: &str, field: &str) {
    let (ok, text) = dry_run(spec);
    assert!(!ok, "accepted:\n{spec}\n{text}");
    assert!(text.contains(field), "message should name {field}:\n{text}");
}

#[test]
fn a_complete_policy_is_accepted() {
    let (ok, text) = dry_run(
        "serviceModel: PaaS
mode: Audit
namespaceSelector: {matchExpressions: [{key: env, operator: In, values: [prod]}]}
controls:
  rbac: {clusterAdminSubjects: [{kind: Group, name: platform-admins}, {kind: ServiceAccount, name: ci, namespace: tools}]}
  network: {defaultDeny: [Ingress, Egress], allowDNS: true, allowDefaultDenyInFrontOfWebhooks: [cert-manager]}
  podSecurity: {level: restricted, version: v1.37}
responsibilities: [{control: NET-04, owner: Provider, reason: managed CNI}]
exceptions: [{controls: [WKL-03], namespaces: [monitoring], resources: [{kind: DaemonSet, name: node-exporter}], reason: metrics, expires: '2027-03-01T00:00:00Z'}]",
    );
    assert!(ok, "{text}");
}

#[test]
fn an_unknown_service_model_is_refused() {
    assert_refused("serviceModel: FaaS", "spec.serviceModel");
}

#[test]
fn an_unknown_pod_security_level_is_refused() {
    assert_refused(
        "serviceModel: PaaS\ncontrols: {podSecurity: {level: strict}}",
        "spec.controls.podSecurity.level",
    );
}

#[test]
fn a_malformed_pod_security_version_is_refused() {
    assert_refused(
        "serviceModel: PaaS\ncontrols: {podSecurity: {version: '1.30'}}",
        "spec.controls.podSecurity.version",
    );
}

#[test]
fn a_selector_with_an_unknown_operator_is_refused() {
    assert_refused(
        "serviceModel: PaaS\nnamespaceSelector: {matchExpressions: [{key: env, operator: Maybe, values: [x]}]}",
        "matchExpressions: operator must be",
    );
}

#[test]
fn an_exception_without_a_reason_is_refused() {
    assert_refused(
        "serviceModel: PaaS\nexceptions: [{controls: [NET-01]}]",
        "spec.exceptions[0].reason",
    );
}

#[test]
fn an_expiry_that_is_not_a_timestamp_is_refused() {
    assert_refused(
        "serviceModel: PaaS\nexceptions: [{controls: [NET-01], reason: r, expires: next week}]",
        "spec.exceptions[0].expires",
    );
}

#[test]
fn a_service_account_subject_needs_a_namespace() {
    assert_refused(
        "serviceModel: PaaS\ncontrols: {rbac: {clusterAdminSubjects: [{kind: ServiceAccount, name: ci}]}}",
        "namespace is required for kind ServiceAccount",
    );
}

#[test]
fn a_malformed_control_id_is_refused() {
    assert_refused(
        "serviceModel: PaaS\nresponsibilities: [{control: net-4, owner: Provider, reason: r}]",
        "spec.responsibilities[0].control",
    );
}

#[test]
fn a_well_formed_but_unknown_control_id_is_refused() {
    assert_refused(
        "serviceModel: PaaS\nexceptions: [{controls: [NET-99], reason: typo}]",
        "spec.exceptions[0].controls[0]",
    );
    assert_refused(
        "serviceModel: PaaS\nresponsibilities: [{control: NET-99, owner: Provider, reason: r}]",
        "spec.responsibilities[0].control",
    );
}

#[test]
fn a_control_can_be_reassigned_only_once() {
    assert_refused(
        "serviceModel: PaaS\nresponsibilities: [{control: NET-04, owner: Provider, reason: a}, \
         {control: NET-04, owner: Customer, reason: b}]",
        "spec.responsibilities[1]",
    );
}

#[test]
fn only_kubernetes_own_namespaces_can_be_included() {
    assert_refused(
        "serviceModel: PaaS\nincludeSystemNamespaces: [shop]",
        "spec.includeSystemNamespaces[0]",
    );
}

/// `kubectl get rp` (and `-o wide`) of a policy with the given conditions, as the API server
/// prints it through the CRD's printer columns.
fn printed(name: &str, mode: &str, conditions: &[(&str, &str)]) -> (String, String) {
    let cp = onus_testenv::shared();
    common::install_crd(cp);
    let doc = format!(
        "apiVersion: onus.dev/v1alpha1\nkind: ResponsibilityPolicy\nmetadata: {{name: {name}}}\n\
         spec: {{serviceModel: PaaS, mode: {mode}, namespaceSelector: {{matchLabels: {{none: none}}}}}}\n"
    );
    let out = common::kubectl_with_input(cp, &["apply", "-f", "-"], doc.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conditions: Vec<String> = conditions
        .iter()
        .map(|(t, s)| {
            format!(
                r#"{{"type":"{t}","status":"{s}","reason":"Test","message":"","lastTransitionTime":"2026-01-01T00:00:00Z"}}"#
            )
        })
        .collect();
    let status = format!(
        r#"{{"status":{{"conditions":[{}],"summary":{{"namespaces":0,"controls":28,"customerOwned":27,"passing":27,"failing":0,"violations":0,"excepted":0}}}}}}"#,
        conditions.join(",")
    );
    common::kubectl_ok(
        cp,
        &[
            "patch",
            "rp",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ],
    );
    let get = |extra: &[&str]| {
        let out = cp
            .kubectl()
            .args(["get", "rp", name, "--no-headers"])
            .args(extra)
            .output()
            .expect("kubectl");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let result = (get(&[]), get(&["-o", "wide"]));
    common::kubectl_ok(cp, &["delete", "rp", name, "--wait=false"]);
    result
}

#[test]
fn kubectl_get_shows_ready_enforced_and_under_wide_the_gap() {
    let (plain, wide) = printed(
        "printed-enforce",
        "Enforce",
        &[
            ("Ready", "True"),
            ("Compliant", "True"),
            ("ResponsibilityGap", "True"),
            ("Enforced", "False"),
        ],
    );
    // NAME MODEL MODE READY ENFORCED COMPLIANT VIOLATIONS AGE
    assert!(
        plain.starts_with("printed-enforce PaaS Enforce True False True 0 "),
        "{plain}"
    );
    // ... VIOLATIONS GAP AGE
    assert!(
        wide.starts_with("printed-enforce PaaS Enforce True False True 0 True "),
        "{wide}"
    );
}

#[test]
fn kubectl_get_shows_an_invalid_policy_as_not_ready() {
    let (plain, _) = printed("printed-invalid", "Audit", &[("Ready", "False")]);
    assert!(
        plain.starts_with("printed-invalid PaaS Audit False "),
        "{plain}"
    );
}
