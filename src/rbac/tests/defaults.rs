//! Kubernetes' own RBAC is exempt by name AND content; anything that only looks like it is a
//! customer grant.

use serde_json::{Value, json};

use super::*;
use crate::rbac::defaults::{aggregated_default_rules, kubernetes_version, selects};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

/// The committed data, read independently of the module under test.
const DATA: &str = include_str!("../bootstrap-v1.37.json");

fn data_objects() -> Vec<Value> {
    let data: Value = serde_json::from_str(DATA).expect("data file is JSON");
    data["objects"].as_array().expect("objects").clone()
}

/// Every object kube-apiserver bootstraps, as it is on a cluster nobody changed: with the
/// bootstrapping label, and `admin`/`edit`/`view` filled by the aggregation controller.
fn defaults_snapshot() -> RbacSnapshot {
    let mut s = RbacSnapshot::default();
    for o in data_objects() {
        let kind = o["kind"].as_str().expect("kind");
        let mut labels = o.get("labels").cloned().unwrap_or_else(|| json!({}));
        labels["kubernetes.io/bootstrapping"] = json!("rbac-defaults");
        let mut obj = o.clone();
        obj["apiVersion"] = json!("rbac.authorization.k8s.io/v1");
        obj["metadata"] = json!({"name": o["name"], "labels": labels});
        if let Some(ns) = o.get("namespace") {
            obj["metadata"]["namespace"] = ns.clone();
        }
        for f in ["name", "namespace", "labels"] {
            obj.as_object_mut().expect("object").remove(f);
        }
        match kind {
            "ClusterRole" => {
                let mut cr: ClusterRole = serde_json::from_value(obj).expect("ClusterRole");
                if let Some(rules) = aggregated_default_rules(o["name"].as_str().expect("name")) {
                    cr.rules = Some(rules.to_vec());
                }
                s.cluster_roles.push(Arc::new(cr));
            }
            "Role" => s
                .roles
                .push(Arc::new(serde_json::from_value(obj).expect("Role"))),
            "ClusterRoleBinding" => s
                .cluster_role_bindings
                .push(Arc::new(serde_json::from_value(obj).expect("CRB"))),
            "RoleBinding" => s
                .role_bindings
                .push(Arc::new(serde_json::from_value(obj).expect("RoleBinding"))),
            other => panic!("unexpected kind {other}"),
        }
    }
    s
}

fn default_cluster_role<'s>(s: &'s mut RbacSnapshot, name: &str) -> &'s mut ClusterRole {
    let cr = s
        .cluster_roles
        .iter_mut()
        .find(|cr| cr.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no default ClusterRole {name}"));
    Arc::make_mut(cr)
}

fn default_cluster_role_binding<'s>(
    s: &'s mut RbacSnapshot,
    name: &str,
) -> &'s mut ClusterRoleBinding {
    let crb = s
        .cluster_role_bindings
        .iter_mut()
        .find(|b| b.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no default ClusterRoleBinding {name}"));
    Arc::make_mut(crb)
}

fn user(name: &str) -> Subject {
    Subject {
        api_group: Some("rbac.authorization.k8s.io".to_owned()),
        kind: "User".to_owned(),
        name: name.to_owned(),
        namespace: None,
    }
}

/// Findings of the default set plus `extra`, for the given controls.
fn with_defaults(extra: RbacSnapshot) -> Vec<Finding> {
    let mut s = defaults_snapshot();
    s.roles.extend(extra.roles);
    s.cluster_roles.extend(extra.cluster_roles);
    s.role_bindings.extend(extra.role_bindings);
    s.cluster_role_bindings.extend(extra.cluster_role_bindings);
    evaluate(&s, &[])
}

impl RoleB {
    fn label(mut self, key: &str, value: &str) -> Self {
        self.meta
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
        self
    }
}

#[test]
fn data_describes_the_bootstrap_of_the_supported_version() {
    assert_eq!(kubernetes_version(), "v1.37.2");
    let mut s = defaults_snapshot();
    // Not vacuous: the well-known defaults are there (counts as kube-apiserver v1.37.2 has them).
    assert_eq!(
        (
            s.cluster_roles.len(),
            s.cluster_role_bindings.len(),
            s.roles.len(),
            s.role_bindings.len()
        ),
        (73, 54, 7, 7)
    );
    let admins = &default_cluster_role_binding(&mut s, "cluster-admin").subjects;
    assert_eq!(
        admins.as_deref().map(|v| v[0].name.as_str()),
        Some("system:masters")
    );
}

#[test]
fn untouched_defaults_break_no_control() {
    let s = defaults_snapshot();
    // Kubernetes' own defaults bind system:masters, everyone-groups and powerful controllers.
    assert_eq!(evaluate(&s, &[]), []);
    // Also before the aggregation controller has filled admin, edit and view.
    let mut unfilled = s.clone();
    for name in ["admin", "edit", "view"] {
        default_cluster_role(&mut unfilled, name).rules = None;
    }
    assert_eq!(evaluate(&unfilled, &[]), []);
}

#[test]
fn aggregated_defaults_are_the_union_of_the_aggregate_to_roles() {
    let rules_of = |name: &str| {
        let s = defaults_snapshot();
        let cr = s
            .cluster_roles
            .iter()
            .find(|cr| cr.metadata.name.as_deref() == Some(name))
            .expect("role")
            .clone();
        cr.rules.clone().unwrap_or_default()
    };
    let union = |names: &[&str]| {
        let mut out: Vec<PolicyRule> = Vec::new();
        for rule in names.iter().flat_map(|n| rules_of(n)) {
            if !out.contains(&rule) {
                out.push(rule);
            }
        }
        out
    };
    let set = |name: &str| aggregated_default_rules(name).expect(name).to_vec();
    let same = |a: Vec<PolicyRule>, b: Vec<PolicyRule>| {
        a.len() == b.len() && a.iter().all(|r| b.contains(r))
    };
    assert!(same(set("view"), union(&["system:aggregate-to-view"])));
    assert!(same(
        set("edit"),
        union(&["system:aggregate-to-edit", "system:aggregate-to-view"])
    ));
    assert!(same(
        set("admin"),
        union(&[
            "system:aggregate-to-admin",
            "system:aggregate-to-edit",
            "system:aggregate-to-view"
        ])
    ));
    assert_eq!(aggregated_default_rules("cluster-admin"), None);
    assert_eq!(aggregated_default_rules("system:ops"), None);
}

#[test]
fn binding_with_a_system_name_is_a_customer_grant() {
    // `kubectl create clusterrolebinding system:ops --clusterrole=cluster-admin --user=mallory`,
    // also when labelled like a bootstrap object.
    for labelled in [false, true] {
        let mut binding = cluster_role_binding("system:ops", "cluster-admin").user("mallory");
        if labelled {
            binding = binding.bootstrap_label();
        }
        let findings = with_defaults(snapshot![binding]);
        let f = only(&findings, "IAM-01");
        assert_eq!(f.example(), "ClusterRoleBinding/system:ops: User/mallory");
        // cluster-admin's wildcards are Kubernetes' default rules, not IAM-02.
        assert_eq!(
            controls(&findings),
            ["IAM-01", "IAM-03", "IAM-04", "IAM-05", "IAM-06"]
        );
    }
}

#[test]
fn extra_subject_on_a_default_binding_is_reported_not_the_defaults() {
    // `trudy` added to the default cluster-admin ClusterRoleBinding (system:masters).
    let mut s = defaults_snapshot();
    let crb = default_cluster_role_binding(&mut s, "cluster-admin");
    crb.subjects
        .get_or_insert_with(Vec::new)
        .push(user("trudy"));
    let findings = evaluate(&s, &[]);
    assert!(
        findings.iter().all(|f| f.subject == "User/trudy"),
        "{findings:#?}"
    );
    assert_eq!(
        only(&findings, "IAM-01").example(),
        "ClusterRoleBinding/cluster-admin: User/trudy"
    );
    assert_eq!(
        controls(&findings),
        ["IAM-01", "IAM-03", "IAM-04", "IAM-05", "IAM-06"]
    );
}

#[test]
fn default_binding_name_with_another_role_is_a_customer_binding() {
    // The default system:basic-user binding deleted and re-created for cluster-admin.
    let mut s = defaults_snapshot();
    let crb = default_cluster_role_binding(&mut s, "system:basic-user");
    crb.role_ref.name = "cluster-admin".to_owned();
    let findings = evaluate(&s, &[]);
    assert_eq!(
        only(&findings, "IAM-01").example(),
        "ClusterRoleBinding/system:basic-user: Group/system:authenticated"
    );
    assert_eq!(
        only(&findings, "IAM-07").detail,
        "system:authenticated bound to ClusterRole/cluster-admin"
    );
}

#[test]
fn wildcard_role_with_a_system_name_and_label_is_iam02() {
    let s = snapshot![
        cluster_role("system:wild")
            .rule(&["*"], &["*"], &["*"])
            .bootstrap_label(),
        cluster_role_binding("system:wild", "system:wild").user("eve"),
    ];
    let findings = with_defaults(s);
    let f = only(&findings, "IAM-02");
    assert_eq!(f.example(), "ClusterRoleBinding/system:wild: User/eve");
    assert_eq!(
        f.detail,
        "verbs: *, resources: *, apiGroups: * in ClusterRole/system:wild"
    );
    assert_eq!(
        controls(&findings),
        ["IAM-02", "IAM-03", "IAM-04", "IAM-05", "IAM-06"]
    );
}

#[test]
fn changed_default_role_is_judged_for_its_default_subjects() {
    // A rule added to system:basic-user reaches every authenticated user via the (untouched)
    // default binding.
    let mut s = defaults_snapshot();
    let role = default_cluster_role(&mut s, "system:basic-user");
    role.rules
        .get_or_insert_with(Vec::new)
        .push(policy_rule(&["list"], &[""], &["secrets"]));
    let findings = evaluate(&s, &[]);
    assert_eq!(
        keys(&findings),
        [
            (
                "IAM-03",
                None,
                "Group/system:authenticated",
                "ClusterRoleBinding/system:basic-user"
            ),
            (
                "IAM-07",
                None,
                "Group/system:authenticated",
                "ClusterRoleBinding/system:basic-user"
            ),
        ]
    );
    assert_eq!(
        only(&findings, "IAM-07").detail,
        "system:authenticated bound to ClusterRole/system:basic-user (non-default rules)"
    );
}

#[test]
fn customer_rules_aggregated_into_admin_are_grants_of_its_holders() {
    // A customer ClusterRole labelled aggregate-to-admin; the aggregation controller copies its
    // rule into admin, which a customer RoleBinding grants to alice.
    let wild = policy_rule(&["*"], &["*"], &["widgets"]);
    let mut s = defaults_snapshot();
    default_cluster_role(&mut s, "admin")
        .rules
        .get_or_insert_with(Vec::new)
        .push(wild.clone());
    let contributor = cluster_role("widget-admin")
        .with(wild)
        .label("rbac.authorization.k8s.io/aggregate-to-admin", "true");
    AddTo::add_to(contributor, &mut s);
    AddTo::add_to(
        role_binding("shop", "admins")
            .cluster_role("admin")
            .user("alice"),
        &mut s,
    );
    let findings = evaluate(&s, &[]);
    let f = only(&findings, "IAM-02");
    assert_eq!(f.example(), "RoleBinding/shop/admins: User/alice");
    assert_eq!(f.detail, "verbs: *, apiGroups: * in ClusterRole/admin");
    // Unbound, the contributing role itself grants nothing.
    assert!(
        findings.iter().all(|f| f.subject == "User/alice"),
        "{findings:#?}"
    );
}

#[test]
fn default_rules_of_admin_are_not_iam02_but_still_grants() {
    // Without customer contributions admin has no wildcard; what it grants is still reported
    // for a customer binding.
    let mut s = defaults_snapshot();
    AddTo::add_to(
        role_binding("shop", "admins")
            .cluster_role("admin")
            .user("alice"),
        &mut s,
    );
    let findings = evaluate(&s, &[]);
    assert_eq!(
        controls(&findings),
        ["IAM-03", "IAM-04", "IAM-05", "IAM-06"]
    );
}

#[test]
fn default_role_names_in_other_namespaces_are_customer_objects() {
    // The bootstrap Role and RoleBinding names exist in kube-system only.
    let s = snapshot![
        role("system:controller:bootstrap-signer")
            .ns("shop")
            .rule(&["*"], &[""], &["secrets"])
            .bootstrap_label(),
        role_binding("shop", "system:controller:bootstrap-signer")
            .role("system:controller:bootstrap-signer")
            .sa("kube-system", "bootstrap-signer")
            .bootstrap_label(),
    ];
    let findings = with_defaults(s);
    assert_eq!(controls(&findings), ["IAM-02", "IAM-03"]);
}

#[test]
fn aggregation_selectors_follow_label_selector_semantics() {
    let labels = BTreeMap::from([("tier".to_owned(), "web".to_owned())]);
    let expr = |operator: &str, values: &[&str]| LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "tier".to_owned(),
            operator: operator.to_owned(),
            values: Some(strings(values)),
        }]),
        ..LabelSelector::default()
    };
    let by_labels = |k: &str, v: &str| LabelSelector {
        match_labels: Some(BTreeMap::from([(k.to_owned(), v.to_owned())])),
        ..LabelSelector::default()
    };
    let cases = [
        (LabelSelector::default(), true),
        (by_labels("tier", "web"), true),
        (by_labels("tier", "db"), false),
        (by_labels("other", "web"), false),
        (expr("In", &["db", "web"]), true),
        (expr("In", &["db"]), false),
        (expr("NotIn", &["db"]), true),
        (expr("NotIn", &["web"]), false),
        (expr("Exists", &[]), true),
        (expr("DoesNotExist", &[]), false),
        (expr("Bogus", &[]), false),
    ];
    for (selector, expected) in cases {
        assert_eq!(selects(&selector, &labels), expected, "{selector:?}");
    }
}
