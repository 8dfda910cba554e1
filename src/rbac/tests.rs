//! Specification tests for the RBAC effective-grant analysis.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef,
    Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::*;
use crate::crd::{SubjectKind, SubjectRef};

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

fn meta(ns: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: ns.map(str::to_owned),
        ..ObjectMeta::default()
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn policy_rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: strings(verbs),
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        ..PolicyRule::default()
    }
}

/// The label kube-apiserver puts on what it bootstraps (and anyone else can put anywhere).
fn mark_bootstrap(meta: &mut ObjectMeta) {
    meta.labels = Some(BTreeMap::from([(
        "kubernetes.io/bootstrapping".to_owned(),
        "rbac-defaults".to_owned(),
    )]));
}

/// Anything that can be put into a snapshot.
trait AddTo {
    fn add_to(self, s: &mut RbacSnapshot);
}

macro_rules! snapshot {
    ($($obj:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut s = RbacSnapshot::default();
        $( AddTo::add_to($obj, &mut s); )*
        s
    }};
}

/// A Role (namespace "default" unless `.ns(..)`) or ClusterRole under construction.
struct RoleB {
    meta: ObjectMeta,
    rules: Option<Vec<PolicyRule>>,
    cluster: bool,
    aggregated: bool,
}

fn role(name: &str) -> RoleB {
    RoleB {
        meta: meta(Some("default"), name),
        rules: Some(Vec::new()),
        cluster: false,
        aggregated: false,
    }
}

fn cluster_role(name: &str) -> RoleB {
    RoleB {
        meta: meta(None, name),
        rules: Some(Vec::new()),
        cluster: true,
        aggregated: false,
    }
}

impl RoleB {
    fn ns(mut self, ns: &str) -> Self {
        self.meta.namespace = Some(ns.to_owned());
        self
    }
    /// A rule: verbs, apiGroups, resources.
    fn rule(self, verbs: &[&str], groups: &[&str], resources: &[&str]) -> Self {
        self.with(policy_rule(verbs, groups, resources))
    }
    /// A rule limited to resourceNames.
    fn named_rule(
        self,
        verbs: &[&str],
        groups: &[&str],
        resources: &[&str],
        names: &[&str],
    ) -> Self {
        self.with(PolicyRule {
            resource_names: Some(strings(names)),
            ..policy_rule(verbs, groups, resources)
        })
    }
    fn non_resource(self, verbs: &[&str], urls: &[&str]) -> Self {
        self.with(PolicyRule {
            verbs: strings(verbs),
            non_resource_urls: Some(strings(urls)),
            ..PolicyRule::default()
        })
    }
    fn with(mut self, rule: PolicyRule) -> Self {
        self.rules.get_or_insert_with(Vec::new).push(rule);
        self
    }
    fn bootstrap_label(mut self) -> Self {
        mark_bootstrap(&mut self.meta);
        self
    }
    /// An aggregated ClusterRole whose rules the controller has not filled in (`rules: null`).
    fn aggregated_unfilled(mut self) -> Self {
        self.aggregated = true;
        self.rules = None;
        self
    }
}

impl AddTo for RoleB {
    fn add_to(self, s: &mut RbacSnapshot) {
        if self.cluster {
            s.cluster_roles.push(Arc::new(ClusterRole {
                metadata: self.meta,
                rules: self.rules,
                aggregation_rule: self.aggregated.then(|| AggregationRule {
                    cluster_role_selectors: Some(vec![LabelSelector::default()]),
                }),
            }));
        } else {
            s.roles.push(Arc::new(Role {
                metadata: self.meta,
                rules: self.rules,
            }));
        }
    }
}

/// A RoleBinding or ClusterRoleBinding under construction.
struct BindingB {
    meta: ObjectMeta,
    role_ref: RoleRef,
    subjects: Option<Vec<Subject>>,
    cluster: bool,
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".to_owned().into(),
        kind: kind.to_owned(),
        name: name.to_owned(),
    }
}

/// `cluster_role_binding("b", "cluster-admin")`: a ClusterRoleBinding to a ClusterRole.
fn cluster_role_binding(name: &str, cluster_role: &str) -> BindingB {
    BindingB {
        meta: meta(None, name),
        role_ref: role_ref("ClusterRole", cluster_role),
        subjects: None,
        cluster: true,
    }
}

/// `role_binding("shop", "b").role("r")` or `.cluster_role("c")`.
fn role_binding(ns: &str, name: &str) -> BindingB {
    BindingB {
        meta: meta(Some(ns), name),
        role_ref: role_ref("Role", ""),
        subjects: None,
        cluster: false,
    }
}

impl BindingB {
    fn role(mut self, name: &str) -> Self {
        self.role_ref = role_ref("Role", name);
        self
    }
    fn cluster_role(mut self, name: &str) -> Self {
        self.role_ref = role_ref("ClusterRole", name);
        self
    }
    fn subject(mut self, kind: &str, name: &str, ns: Option<&str>) -> Self {
        self.subjects.get_or_insert_with(Vec::new).push(Subject {
            api_group: None,
            kind: kind.to_owned(),
            name: name.to_owned(),
            namespace: ns.map(str::to_owned),
        });
        self
    }
    fn user(self, name: &str) -> Self {
        self.subject("User", name, None)
    }
    fn group(self, name: &str) -> Self {
        self.subject("Group", name, None)
    }
    fn sa(self, ns: &str, name: &str) -> Self {
        self.subject("ServiceAccount", name, Some(ns))
    }
    /// A ServiceAccount subject without a namespace (defaults to the RoleBinding's).
    fn sa_here(self, name: &str) -> Self {
        self.subject("ServiceAccount", name, None)
    }
    fn bootstrap_label(mut self) -> Self {
        mark_bootstrap(&mut self.meta);
        self
    }
}

impl AddTo for BindingB {
    fn add_to(self, s: &mut RbacSnapshot) {
        if self.cluster {
            s.cluster_role_bindings.push(Arc::new(ClusterRoleBinding {
                metadata: self.meta,
                role_ref: self.role_ref,
                subjects: self.subjects,
            }));
        } else {
            s.role_bindings.push(Arc::new(RoleBinding {
                metadata: self.meta,
                role_ref: self.role_ref,
                subjects: self.subjects,
            }));
        }
    }
}

fn allow_user(name: &str) -> SubjectRef {
    SubjectRef {
        kind: SubjectKind::User,
        name: name.to_owned(),
        namespace: None,
    }
}

fn allow_group(name: &str) -> SubjectRef {
    SubjectRef {
        kind: SubjectKind::Group,
        name: name.to_owned(),
        namespace: None,
    }
}

fn allow_sa(ns: &str, name: &str) -> SubjectRef {
    SubjectRef {
        kind: SubjectKind::ServiceAccount,
        name: name.to_owned(),
        namespace: Some(ns.to_owned()),
    }
}

/// The bootstrap cluster-admin ClusterRole as the API server creates it.
fn bootstrap_cluster_admin() -> RoleB {
    cluster_role("cluster-admin")
        .rule(&["*"], &["*"], &["*"])
        .non_resource(&["*"], &["*"])
        .bootstrap_label()
}

// ---------------------------------------------------------------------------------------------
// Assertion helpers
// ---------------------------------------------------------------------------------------------

/// Findings as (control, namespace, subject, binding) for compact comparisons.
fn keys(findings: &[Finding]) -> Vec<(&str, Option<&str>, &str, &str)> {
    findings
        .iter()
        .map(|f| {
            (
                f.control,
                f.namespace.as_deref(),
                f.subject.as_str(),
                f.binding.as_str(),
            )
        })
        .collect()
}

fn controls(findings: &[Finding]) -> Vec<&'static str> {
    let mut v: Vec<_> = findings.iter().map(|f| f.control).collect();
    v.dedup();
    v
}

fn only<'a>(findings: &'a [Finding], control: &str) -> &'a Finding {
    let matching: Vec<_> = findings.iter().filter(|f| f.control == control).collect();
    assert_eq!(matching.len(), 1, "exactly one {control} in {findings:#?}");
    matching[0]
}

/// Controls reported for a ClusterRole with one rule, bound cluster-wide to User/alice.
fn controls_for_rule(rule: PolicyRule) -> Vec<&'static str> {
    let s = snapshot![
        cluster_role("r").with(rule),
        cluster_role_binding("b", "r").user("alice"),
    ];
    controls(&evaluate(&s, &[]))
}

/// Controls reported for a ClusterRole with one rule, bound by a RoleBinding in "shop".
fn controls_for_namespaced_rule(rule: PolicyRule) -> Vec<&'static str> {
    let s = snapshot![
        cluster_role("r").with(rule),
        role_binding("shop", "b").cluster_role("r").user("alice"),
    ];
    controls(&evaluate(&s, &[]))
}

// ---------------------------------------------------------------------------------------------
// Bindings and roles: what counts as a grant
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_snapshot_has_no_findings() {
    assert!(evaluate(&RbacSnapshot::default(), &[]).is_empty());
}

#[test]
fn unbound_role_is_no_grant() {
    let s = snapshot![
        role("reader").rule(&["get", "list"], &[""], &["secrets"]),
        cluster_role("wild").rule(&["*"], &["*"], &["*"]),
    ];
    assert!(evaluate(&s, &[]).is_empty());
}

#[test]
fn binding_to_missing_role_grants_nothing() {
    let s = snapshot![
        cluster_role_binding("b", "does-not-exist").user("alice"),
        role_binding("shop", "rb").role("nope").user("bob"),
    ];
    assert!(evaluate(&s, &[]).is_empty());
}

#[test]
fn role_binding_finds_role_only_in_its_own_namespace() {
    let s = snapshot![
        role("reader")
            .ns("other")
            .rule(&["get"], &[""], &["secrets"]),
        role_binding("shop", "rb").role("reader").user("alice"),
    ];
    assert!(evaluate(&s, &[]).is_empty());
}

#[test]
fn role_binding_to_role_is_namespaced() {
    let s = snapshot![
        role("reader")
            .ns("shop")
            .rule(&["get"], &[""], &["secrets"]),
        role_binding("shop", "rb").role("reader").user("alice"),
    ];
    assert_eq!(
        keys(&evaluate(&s, &[])),
        [("IAM-03", Some("shop"), "User/alice", "RoleBinding/shop/rb")]
    );
}

#[test]
fn role_binding_to_cluster_role_is_scoped_to_its_namespace() {
    let s = snapshot![
        cluster_role("secret-reader").rule(&["list"], &[""], &["secrets"]),
        role_binding("shop", "rb")
            .cluster_role("secret-reader")
            .user("alice"),
    ];
    let findings = evaluate(&s, &[]);
    assert_eq!(
        keys(&findings),
        [("IAM-03", Some("shop"), "User/alice", "RoleBinding/shop/rb")]
    );
    assert_eq!(findings[0].detail, "list secrets in namespace shop");
}

#[test]
fn cluster_role_binding_is_cluster_wide() {
    let s = snapshot![
        cluster_role("secret-reader").rule(&["get"], &[""], &["secrets"]),
        cluster_role_binding("ops", "secret-reader").user("alice"),
    ];
    let findings = evaluate(&s, &[]);
    assert_eq!(
        keys(&findings),
        [("IAM-03", None, "User/alice", "ClusterRoleBinding/ops")]
    );
    assert_eq!(findings[0].detail, "get secrets cluster-wide");
}

#[test]
fn cluster_role_binding_naming_a_role_grants_nothing() {
    let mut crb = cluster_role_binding("b", "reader").user("alice");
    crb.role_ref = role_ref("Role", "reader");
    let s = snapshot![role("reader").rule(&["get"], &[""], &["secrets"]), crb,];
    assert!(evaluate(&s, &[]).is_empty());
}

#[test]
fn aggregated_role_uses_filled_in_rules() {
    let mut agg = cluster_role("monitoring").rule(&["watch"], &[""], &["secrets"]);
    agg.aggregated = true;
    let s = snapshot![agg, cluster_role_binding("b", "monitoring").group("devs")];
    assert_eq!(
        keys(&evaluate(&s, &[])),
        [("IAM-03", None, "Group/devs", "ClusterRoleBinding/b")]
    );
}

#[test]
fn aggregated_role_without_rules_grants_nothing() {
    let s = snapshot![
        cluster_role("agg").aggregated_unfilled(),
        cluster_role_binding("b", "agg").user("alice"),
    ];
    assert!(evaluate(&s, &[]).is_empty());
}

#[test]
fn binding_without_subjects_yields_nothing() {
    let s = snapshot![
        bootstrap_cluster_admin(),
        cluster_role_binding("b", "cluster-admin"),
    ];
    assert!(evaluate(&s, &[]).is_empty());
}

#[test]
fn objects_with_missing_fields_do_not_panic() {
    let mut s = snapshot![
        cluster_role("r").with(PolicyRule::default()),
        cluster_role_binding("b", "r").user("alice"),
        role_binding("shop", "rb").cluster_role("r").sa_here("x"),
    ];
    s.roles.push(Arc::new(Role::default()));
    s.cluster_roles.push(Arc::new(ClusterRole::default()));
    s.role_bindings.push(Arc::new(RoleBinding::default()));
    s.cluster_role_bindings
        .push(Arc::new(ClusterRoleBinding::default()));
    assert!(evaluate(&s, &[]).is_empty());
}

#[test]
fn role_binding_without_namespace_is_ignored() {
    let mut rb = role_binding("shop", "rb")
        .cluster_role("cluster-admin")
        .user("alice");
    rb.meta.namespace = None;
    let s = snapshot![bootstrap_cluster_admin(), rb];
    assert!(evaluate(&s, &[]).is_empty());
}

// ---------------------------------------------------------------------------------------------
// IAM-01 cluster-admin
// ---------------------------------------------------------------------------------------------

#[test]
fn iam01_cluster_admin_binding_is_reported() {
    let s = snapshot![
        bootstrap_cluster_admin(),
        cluster_role_binding("ops", "cluster-admin").user("alice"),
    ];
    let findings = evaluate(&s, &[]);
    let f = only(&findings, "IAM-01");
    assert_eq!(f.namespace, None);
    assert_eq!(f.detail, "cluster-admin");
    assert_eq!(f.example(), "ClusterRoleBinding/ops: User/alice");
}

#[test]
fn iam01_cluster_admin_also_counts_its_effective_powers() {
    let s = snapshot![
        bootstrap_cluster_admin(),
        cluster_role_binding("ops", "cluster-admin").user("alice"),
    ];
    assert_eq!(
        controls(&evaluate(&s, &[])),
        ["IAM-01", "IAM-03", "IAM-04", "IAM-05", "IAM-06"]
    );
}

#[test]
fn iam01_reported_even_when_cluster_admin_role_is_not_in_snapshot() {
    let s = snapshot![cluster_role_binding("ops", "cluster-admin").user("alice")];
    assert_eq!(
        keys(&evaluate(&s, &[])),
        [("IAM-01", None, "User/alice", "ClusterRoleBinding/ops")]
    );
}

#[test]
fn iam01_role_binding_to_cluster_admin_is_namespaced() {
    let s = snapshot![
        bootstrap_cluster_admin(),
        role_binding("shop", "admins")
            .cluster_role("cluster-admin")
            .group("shop-admins"),
    ];
    let findings = evaluate(&s, &[]);
    let f = only(&findings, "IAM-01");
    assert_eq!(f.namespace.as_deref(), Some("shop"));
    assert_eq!(f.binding, "RoleBinding/shop/admins");
    assert_eq!(f.detail, "cluster-admin in namespace shop");
    // Cluster-scoped powers (nodes/proxy, PVs, webhooks...) do not flow through a RoleBinding;
    // namespaced ones (ServiceAccount tokens) do.
    assert_eq!(
        only(&findings, "IAM-06").detail,
        "create serviceaccounts/token in namespace shop"
    );
}

#[test]
fn iam01_role_binding_to_a_role_named_cluster_admin_is_not_iam01() {
    let s = snapshot![
        role("cluster-admin")
            .ns("shop")
            .rule(&["get"], &[""], &["configmaps"]),
        role_binding("shop", "b")
            .role("cluster-admin")
            .user("alice"),
    ];
    assert!(evaluate(&s, &[]).is_empty());
}

#[test]
fn iam01_admin_and_edit_cluster_wide_are_warnings() {
    for name in ["admin", "edit"] {
        let s = snapshot![cluster_role_binding("b", name).user("alice")];
        let findings = evaluate(&s, &[]);
        assert_eq!(
            only(&findings, "IAM-01").detail,
            format!("{name} cluster-wide (warning)")
        );
    }
}

#[test]
fn iam01_admin_in_a_namespace_is_not_iam01() {
    let s = snapshot![
        role_binding("shop", "b")
            .cluster_role("admin")
            .user("alice")
    ];
    assert!(evaluate(&s, &[]).is_empty());
}

#[test]
fn iam01_view_cluster_wide_is_not_iam01() {
    let s = snapshot![cluster_role_binding("b", "view").user("alice")];
    assert!(evaluate(&s, &[]).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Allow-list
// ---------------------------------------------------------------------------------------------

#[test]
fn allow_listed_subject_is_exempt() {
    let s = snapshot![
        bootstrap_cluster_admin(),
        cluster_role_binding("ops", "cluster-admin")
            .group("platform-admins")
            .user("alice"),
    ];
    let findings = evaluate(&s, &[allow_group("platform-admins")]);
    assert!(
        findings.iter().all(|f| f.subject == "User/alice"),
        "{findings:#?}"
    );
    assert!(!findings.is_empty());
}

#[test]
fn allow_list_matches_kind_as_well_as_name() {
    let s = snapshot![cluster_role_binding("ops", "cluster-admin").group("alice")];
    let findings = evaluate(&s, &[allow_user("alice")]);
    assert_eq!(controls(&findings), ["IAM-01"]);
}

#[test]
fn allow_listed_service_account_needs_matching_namespace() {
    let s = snapshot![
        cluster_role_binding("ops", "cluster-admin")
            .sa("ci", "deployer")
            .sa("dev", "deployer"),
    ];
    let findings = evaluate(&s, &[allow_sa("ci", "deployer")]);
    assert_eq!(
        keys(&findings),
        [(
            "IAM-01",
            None,
            "ServiceAccount/dev/deployer",
            "ClusterRoleBinding/ops"
        )]
    );
}

#[test]
fn allow_listed_service_account_matches_its_user_name_form() {
    let s = snapshot![
        cluster_role_binding("ops", "cluster-admin").user("system:serviceaccount:ci:deployer"),
    ];
    assert!(evaluate(&s, &[allow_sa("ci", "deployer")]).is_empty());
}

#[test]
fn allow_listed_service_account_in_role_binding_defaults_to_binding_namespace() {
    let s = snapshot![
        bootstrap_cluster_admin(),
        role_binding("ci", "b")
            .cluster_role("cluster-admin")
            .sa_here("deployer"),
    ];
    assert!(evaluate(&s, &[allow_sa("ci", "deployer")]).is_empty());
}

#[test]
fn allow_list_does_not_exempt_iam07_and_iam08() {
    let s = snapshot![
        cluster_role("r").rule(&["get"], &[""], &["configmaps"]),
        cluster_role_binding("b", "r")
            .group("system:masters")
            .group("system:authenticated"),
    ];
    let allowed = [
        allow_group("system:masters"),
        allow_group("system:authenticated"),
    ];
    assert_eq!(controls(&evaluate(&s, &allowed)), ["IAM-07", "IAM-08"]);
}

// ---------------------------------------------------------------------------------------------
// IAM-02 wildcards
// ---------------------------------------------------------------------------------------------

#[test]
fn iam02_wildcards_table() {
    let cases: &[(&str, PolicyRule, Option<&str>)] = &[
        (
            "no wildcard",
            policy_rule(&["get"], &[""], &["configmaps"]),
            None,
        ),
        (
            "verbs",
            policy_rule(&["*"], &[""], &["configmaps"]),
            Some("verbs: * in ClusterRole/r"),
        ),
        (
            "resources",
            policy_rule(&["get"], &[""], &["*"]),
            Some("resources: * in ClusterRole/r"),
        ),
        (
            "subresource wildcard",
            policy_rule(&["get"], &[""], &["*/status"]),
            Some("resources: * in ClusterRole/r"),
        ),
        (
            "apiGroups",
            policy_rule(&["get"], &["*"], &["configmaps"]),
            Some("apiGroups: * in ClusterRole/r"),
        ),
        (
            "all three",
            policy_rule(&["*"], &["*"], &["*"]),
            Some("verbs: *, resources: *, apiGroups: * in ClusterRole/r"),
        ),
        (
            "nonResourceURLs verbs",
            PolicyRule {
                verbs: strings(&["*"]),
                non_resource_urls: Some(strings(&["/metrics"])),
                ..PolicyRule::default()
            },
            Some("verbs: * in ClusterRole/r"),
        ),
        (
            "nonResourceURLs path wildcard only",
            PolicyRule {
                verbs: strings(&["get"]),
                non_resource_urls: Some(strings(&["*"])),
                ..PolicyRule::default()
            },
            None,
        ),
    ];
    for (name, rule, expected) in cases {
        let s = snapshot![
            cluster_role("r").with(rule.clone()),
            cluster_role_binding("b", "r").user("alice"),
        ];
        let findings = evaluate(&s, &[]);
        let got = findings
            .iter()
            .find(|f| f.control == "IAM-02")
            .map(|f| f.detail.as_str());
        assert_eq!(got, *expected, "case {name}");
    }
}

#[test]
fn iam02_unbound_wildcard_role_is_not_reported() {
    let s = snapshot![role("wild").rule(&["*"], &["*"], &["*"])];
    assert!(evaluate(&s, &[]).is_empty());
}

#[test]
fn iam02_reported_per_subject_and_binding() {
    let s = snapshot![
        role("wild").ns("shop").rule(&["*"], &[""], &["configmaps"]),
        role_binding("shop", "one")
            .role("wild")
            .user("alice")
            .user("bob"),
        role_binding("shop", "two").role("wild").user("alice"),
    ];
    let findings = evaluate(&s, &[]);
    assert_eq!(
        keys(&findings),
        [
            ("IAM-02", Some("shop"), "User/alice", "RoleBinding/shop/one"),
            ("IAM-02", Some("shop"), "User/alice", "RoleBinding/shop/two"),
            ("IAM-02", Some("shop"), "User/bob", "RoleBinding/shop/one"),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// IAM-03..IAM-06 rule matching
// ---------------------------------------------------------------------------------------------

#[test]
fn capability_table_cluster_wide() {
    let named = |verbs: &[&str], groups: &[&str], res: &[&str]| PolicyRule {
        resource_names: Some(strings(&["x"])),
        ..policy_rule(verbs, groups, res)
    };
    let cases: Vec<(&str, PolicyRule, Vec<&str>)> = vec![
        // IAM-03 secrets
        (
            "get secrets",
            policy_rule(&["get"], &[""], &["secrets"]),
            vec!["IAM-03"],
        ),
        (
            "watch secrets",
            policy_rule(&["watch"], &[""], &["secrets"]),
            vec!["IAM-03"],
        ),
        (
            "list via * verbs",
            policy_rule(&["*"], &[""], &["secrets"]),
            vec!["IAM-02", "IAM-03"],
        ),
        (
            "via * resources (also nodes/proxy: any verb)",
            policy_rule(&["list"], &[""], &["*"]),
            vec!["IAM-02", "IAM-03", "IAM-06"],
        ),
        (
            "via * apiGroups",
            policy_rule(&["list"], &["*"], &["secrets"]),
            vec!["IAM-02", "IAM-03"],
        ),
        (
            "secrets in apps is not core",
            policy_rule(&["get"], &["apps"], &["secrets"]),
            vec![],
        ),
        (
            "create secrets is not read",
            policy_rule(&["create"], &[""], &["secrets"]),
            vec![],
        ),
        (
            "named secrets are minimal",
            named(&["get"], &[""], &["secrets"]),
            vec![],
        ),
        (
            "secrets/status is not secrets",
            policy_rule(&["get"], &[""], &["secrets/x"]),
            vec![],
        ),
        ("empty verbs", policy_rule(&[], &[""], &["secrets"]), vec![]),
        (
            "empty apiGroups",
            policy_rule(&["get"], &[], &["secrets"]),
            vec![],
        ),
        // IAM-04 pods and workloads
        (
            "create pods",
            policy_rule(&["create"], &[""], &["pods"]),
            vec!["IAM-04"],
        ),
        (
            "get pods",
            policy_rule(&["get", "list"], &[""], &["pods"]),
            vec![],
        ),
        (
            "create deployments",
            policy_rule(&["create"], &["apps"], &["deployments"]),
            vec!["IAM-04"],
        ),
        (
            "create daemonsets",
            policy_rule(&["create"], &["apps"], &["daemonsets"]),
            vec!["IAM-04"],
        ),
        (
            "create cronjobs",
            policy_rule(&["create"], &["batch"], &["cronjobs"]),
            vec!["IAM-04"],
        ),
        (
            "deployments in wrong group",
            policy_rule(&["create"], &[""], &["deployments"]),
            vec![],
        ),
        (
            "jobs in apps",
            policy_rule(&["create"], &["apps"], &["jobs"]),
            vec![],
        ),
        (
            "create rcs",
            policy_rule(&["create"], &[""], &["replicationcontrollers"]),
            vec!["IAM-04"],
        ),
        (
            "exec create",
            policy_rule(&["create"], &[""], &["pods/exec"]),
            vec!["IAM-04"],
        ),
        (
            "exec get",
            policy_rule(&["get"], &[""], &["pods/exec"]),
            vec!["IAM-04"],
        ),
        (
            "attach",
            policy_rule(&["create"], &[""], &["pods/attach"]),
            vec!["IAM-04"],
        ),
        (
            "exec list",
            policy_rule(&["list"], &[""], &["pods/exec"]),
            vec![],
        ),
        (
            "*/exec",
            policy_rule(&["create"], &[""], &["*/exec"]),
            vec!["IAM-02", "IAM-04"],
        ),
        (
            "pods/* is literal",
            policy_rule(&["create"], &[""], &["pods/*"]),
            vec![],
        ),
        (
            "pods does not cover pods/exec",
            policy_rule(&["get"], &[""], &["pods"]),
            vec![],
        ),
        (
            "ephemeral containers",
            policy_rule(&["patch"], &[""], &["pods/ephemeralcontainers"]),
            vec!["IAM-04"],
        ),
        (
            "named exec still counts",
            named(&["create"], &[""], &["pods/exec"]),
            vec!["IAM-04"],
        ),
        (
            "named create pods never applies",
            named(&["create"], &[""], &["pods"]),
            vec![],
        ),
        // IAM-05 escalation
        (
            "escalate roles",
            policy_rule(&["escalate"], &["rbac.authorization.k8s.io"], &["roles"]),
            vec!["IAM-05"],
        ),
        (
            "bind clusterroles",
            policy_rule(&["bind"], &["rbac.authorization.k8s.io"], &["clusterroles"]),
            vec!["IAM-05"],
        ),
        (
            "bind in wrong group",
            policy_rule(&["bind"], &[""], &["clusterroles"]),
            vec![],
        ),
        (
            "impersonate users",
            policy_rule(&["impersonate"], &[""], &["users"]),
            vec!["IAM-05"],
        ),
        (
            "impersonate sa",
            policy_rule(&["impersonate"], &[""], &["serviceaccounts"]),
            vec!["IAM-05"],
        ),
        (
            "impersonate extras",
            policy_rule(
                &["impersonate"],
                &["authentication.k8s.io"],
                &["userextras/scopes"],
            ),
            vec!["IAM-05"],
        ),
        (
            "impersonate uids",
            policy_rule(&["impersonate"], &["authentication.k8s.io"], &["uids"]),
            vec!["IAM-05"],
        ),
        (
            "create bindings alone",
            policy_rule(
                &["create"],
                &["rbac.authorization.k8s.io"],
                &["rolebindings", "clusterrolebindings"],
            ),
            vec![],
        ),
        (
            "update roles alone",
            policy_rule(
                &["update", "create"],
                &["rbac.authorization.k8s.io"],
                &["roles", "clusterroles"],
            ),
            vec![],
        ),
        (
            "named impersonation still counts",
            named(&["impersonate"], &[""], &["users"]),
            vec!["IAM-05"],
        ),
        // IAM-06 dangerous resources
        (
            "nodes/proxy get",
            policy_rule(&["get"], &[""], &["nodes/proxy"]),
            vec!["IAM-06"],
        ),
        (
            "nodes/proxy any verb",
            policy_rule(&["connect"], &[""], &["nodes/proxy"]),
            vec!["IAM-06"],
        ),
        (
            "nodes is not nodes/proxy",
            policy_rule(&["get"], &[""], &["nodes"]),
            vec![],
        ),
        (
            "csr approval",
            policy_rule(
                &["update"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/approval"],
            ),
            vec!["IAM-06"],
        ),
        (
            "csr get",
            policy_rule(
                &["get"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/approval"],
            ),
            vec![],
        ),
        (
            "approve signers",
            named(&["approve"], &["certificates.k8s.io"], &["signers"]),
            vec!["IAM-06"],
        ),
        (
            "sa token",
            policy_rule(&["create"], &[""], &["serviceaccounts/token"]),
            vec!["IAM-06"],
        ),
        (
            "create sa is not token",
            policy_rule(&["create"], &[""], &["serviceaccounts"]),
            vec![],
        ),
        (
            "create pv",
            policy_rule(&["create"], &[""], &["persistentvolumes"]),
            vec!["IAM-06"],
        ),
        (
            "create pvc",
            policy_rule(&["create"], &[""], &["persistentvolumeclaims"]),
            vec![],
        ),
        (
            "patch webhooks",
            policy_rule(
                &["patch"],
                &["admissionregistration.k8s.io"],
                &["mutatingwebhookconfigurations"],
            ),
            vec!["IAM-06"],
        ),
        (
            "list webhooks",
            policy_rule(
                &["list"],
                &["admissionregistration.k8s.io"],
                &["validatingwebhookconfigurations"],
            ),
            vec![],
        ),
        // nonResourceURLs
        (
            "non-resource get",
            PolicyRule {
                verbs: strings(&["get"]),
                non_resource_urls: Some(strings(&["/api/*"])),
                ..PolicyRule::default()
            },
            vec![],
        ),
    ];
    for (name, rule, expected) in cases {
        assert_eq!(controls_for_rule(rule), expected, "case {name}");
    }
}

#[test]
fn capability_table_in_a_namespace() {
    let cases: Vec<(&str, PolicyRule, Vec<&str>)> = vec![
        (
            "secrets",
            policy_rule(&["get"], &[""], &["secrets"]),
            vec!["IAM-03"],
        ),
        (
            "exec",
            policy_rule(&["create"], &[""], &["pods/exec"]),
            vec!["IAM-04"],
        ),
        (
            "bind clusterroles",
            policy_rule(&["bind"], &["rbac.authorization.k8s.io"], &["clusterroles"]),
            vec!["IAM-05"],
        ),
        (
            "impersonate sa",
            policy_rule(&["impersonate"], &[""], &["serviceaccounts"]),
            vec!["IAM-05"],
        ),
        (
            "sa token",
            policy_rule(&["create"], &[""], &["serviceaccounts/token"]),
            vec!["IAM-06"],
        ),
        // Cluster-scoped resources cannot be granted by a RoleBinding.
        (
            "escalate clusterroles",
            policy_rule(
                &["escalate"],
                &["rbac.authorization.k8s.io"],
                &["clusterroles"],
            ),
            vec![],
        ),
        (
            "impersonate users",
            policy_rule(&["impersonate"], &[""], &["users", "groups"]),
            vec![],
        ),
        (
            "nodes/proxy",
            policy_rule(&["get"], &[""], &["nodes/proxy"]),
            vec![],
        ),
        (
            "create pv",
            policy_rule(&["create"], &[""], &["persistentvolumes"]),
            vec![],
        ),
        (
            "webhooks",
            policy_rule(
                &["create"],
                &["admissionregistration.k8s.io"],
                &["validatingwebhookconfigurations"],
            ),
            vec![],
        ),
        (
            "csr approval",
            policy_rule(
                &["update"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/approval"],
            ),
            vec![],
        ),
    ];
    for (name, rule, expected) in cases {
        assert_eq!(controls_for_namespaced_rule(rule), expected, "case {name}");
    }
}

#[test]
fn iam05_create_bindings_with_bind_is_in_the_detail() {
    let s = snapshot![
        cluster_role("binder")
            .rule(&["bind"], &["rbac.authorization.k8s.io"], &["clusterroles"])
            .rule(
                &["create"],
                &["rbac.authorization.k8s.io"],
                &["rolebindings"]
            ),
        cluster_role_binding("b", "binder").user("alice"),
    ];
    let findings = evaluate(&s, &[]);
    assert_eq!(
        only(&findings, "IAM-05").detail,
        "bind clusterroles, create rolebindings with bind cluster-wide"
    );
}

#[test]
fn detail_lists_matched_verbs_and_caps_items() {
    let s = snapshot![
        cluster_role("deployer")
            .rule(&["get", "list", "watch"], &[""], &["secrets"])
            .rule(&["create"], &[""], &["pods"])
            .rule(
                &["create"],
                &["apps"],
                &["deployments", "statefulsets", "daemonsets"]
            ),
        cluster_role_binding("b", "deployer").user("alice"),
    ];
    let findings = evaluate(&s, &[]);
    assert_eq!(
        only(&findings, "IAM-03").detail,
        "get/list/watch secrets cluster-wide"
    );
    assert_eq!(
        only(&findings, "IAM-04").detail,
        "create pods, create deployments, create statefulsets (+1 more) cluster-wide"
    );
}

#[test]
fn rules_combine_across_a_role() {
    // No single rule grants get secrets; the union of rules does not either (rules are not
    // mixed), but two rules each granting part of IAM-04 are reported once.
    let s = snapshot![
        cluster_role("r")
            .rule(&["get"], &["apps"], &["secrets"])
            .rule(&["get"], &[""], &["deployments"])
            .rule(&["create"], &[""], &["pods"])
            .rule(&["get"], &[""], &["pods/exec"]),
        cluster_role_binding("b", "r").user("alice"),
    ];
    let findings = evaluate(&s, &[]);
    assert_eq!(
        keys(&findings),
        [("IAM-04", None, "User/alice", "ClusterRoleBinding/b")]
    );
    assert_eq!(
        findings[0].detail,
        "create pods, get pods/exec cluster-wide"
    );
}

// ---------------------------------------------------------------------------------------------
// IAM-07 / IAM-08 subjects
// ---------------------------------------------------------------------------------------------

#[test]
fn iam07_everyone_subjects() {
    let cases = [
        ("User", "system:anonymous", true),
        ("Group", "system:unauthenticated", true),
        ("Group", "system:authenticated", true),
        ("User", "system:authenticated", true),
        ("Group", "system:serviceaccounts", false),
        ("ServiceAccount", "system:anonymous", false),
        ("Group", "anonymous", false),
    ];
    for (kind, name, expected) in cases {
        let s = snapshot![
            cluster_role("view-cm").rule(&["get"], &[""], &["configmaps"]),
            cluster_role_binding("b", "view-cm").subject(kind, name, Some("ns")),
        ];
        let found = controls(&evaluate(&s, &[])).contains(&"IAM-07");
        assert_eq!(found, expected, "{kind}/{name}");
    }
}

#[test]
fn iam07_detail_names_the_role() {
    let s = snapshot![
        cluster_role("view-cm").rule(&["get"], &[""], &["configmaps"]),
        role_binding("shop", "open")
            .cluster_role("view-cm")
            .user("system:anonymous"),
    ];
    let findings = evaluate(&s, &[]);
    assert_eq!(
        keys(&findings),
        [(
            "IAM-07",
            Some("shop"),
            "User/system:anonymous",
            "RoleBinding/shop/open"
        )]
    );
    assert_eq!(
        findings[0].detail,
        "system:anonymous bound to ClusterRole/view-cm"
    );
}

#[test]
fn iam07_reported_for_binding_to_missing_role() {
    let s = snapshot![cluster_role_binding("b", "later").group("system:unauthenticated")];
    let findings = evaluate(&s, &[]);
    assert_eq!(
        only(&findings, "IAM-07").detail,
        "system:unauthenticated bound to ClusterRole/later (role not found)"
    );
    assert_eq!(findings.len(), 1);
}

#[test]
fn iam07_with_dangerous_role_reports_both() {
    let s = snapshot![
        cluster_role("r").rule(&["get"], &[""], &["secrets"]),
        cluster_role_binding("b", "r").group("system:authenticated"),
    ];
    assert_eq!(controls(&evaluate(&s, &[])), ["IAM-03", "IAM-07"]);
}

#[test]
fn iam08_system_masters_group() {
    let s = snapshot![
        cluster_role("r").rule(&["get"], &[""], &["configmaps"]),
        cluster_role_binding("b", "r")
            .group("system:masters")
            .user("system:masters"),
    ];
    let findings = evaluate(&s, &[]);
    assert_eq!(
        keys(&findings),
        [(
            "IAM-08",
            None,
            "Group/system:masters",
            "ClusterRoleBinding/b"
        )]
    );
    assert_eq!(findings[0].detail, "system:masters bound to ClusterRole/r");
}

// ---------------------------------------------------------------------------------------------
// Subjects, de-duplication and order
// ---------------------------------------------------------------------------------------------

#[test]
fn subject_rendering() {
    let s = snapshot![
        cluster_role("r").rule(&["get"], &[""], &["secrets"]),
        role_binding("shop", "b")
            .cluster_role("r")
            .user("alice")
            .group("devs")
            .sa("ci", "bot")
            .sa_here("local")
            .subject("ServiceAccount", "empty-ns", Some(""))
            .subject("Robot", "r2", None),
        cluster_role_binding("c", "r").subject("ServiceAccount", "nons", None),
    ];
    let subjects: Vec<_> = evaluate(&s, &[]).into_iter().map(|f| f.subject).collect();
    assert_eq!(
        subjects,
        [
            "ServiceAccount/nons",
            "Group/devs",
            "Robot/r2",
            "ServiceAccount/ci/bot",
            "ServiceAccount/shop/empty-ns",
            "ServiceAccount/shop/local",
            "User/alice",
        ]
    );
}

#[test]
fn duplicate_subjects_in_one_binding_are_reported_once() {
    let s = snapshot![
        cluster_role_binding("ops", "cluster-admin")
            .user("alice")
            .user("alice")
    ];
    assert_eq!(evaluate(&s, &[]).len(), 1);
}

#[test]
fn same_subject_through_two_bindings_is_two_findings() {
    let s = snapshot![
        cluster_role_binding("a", "cluster-admin").user("alice"),
        cluster_role_binding("b", "cluster-admin").user("alice"),
    ];
    assert_eq!(
        keys(&evaluate(&s, &[])),
        [
            ("IAM-01", None, "User/alice", "ClusterRoleBinding/a"),
            ("IAM-01", None, "User/alice", "ClusterRoleBinding/b"),
        ]
    );
}

#[test]
fn output_is_sorted_and_independent_of_input_order() {
    let objects = || {
        vec![
            snapshot![bootstrap_cluster_admin()],
            snapshot![cluster_role("r").rule(&["*"], &[""], &["secrets", "pods"])],
            snapshot![
                role("w")
                    .ns("shop")
                    .rule(&["create"], &[""], &["pods/exec"])
            ],
            snapshot![
                cluster_role_binding("z", "cluster-admin")
                    .user("zed")
                    .group("system:masters")
            ],
            snapshot![cluster_role_binding("a", "r").user("bob").sa("ci", "bot")],
            snapshot![role_binding("shop", "m").role("w").user("amy")],
            snapshot![
                role_binding("shop", "n")
                    .cluster_role("r")
                    .group("system:authenticated")
            ],
        ]
    };
    let merge = |parts: Vec<RbacSnapshot>| {
        let mut s = RbacSnapshot::default();
        for p in parts {
            s.roles.extend(p.roles);
            s.cluster_roles.extend(p.cluster_roles);
            s.role_bindings.extend(p.role_bindings);
            s.cluster_role_bindings.extend(p.cluster_role_bindings);
        }
        s
    };
    let forward = evaluate(&merge(objects()), &[]);
    let mut reversed_parts = objects();
    reversed_parts.reverse();
    let backward = evaluate(&merge(reversed_parts), &[]);
    assert_eq!(forward, backward);
    let mut sorted = forward.clone();
    sorted.sort();
    assert_eq!(forward, sorted);
    assert!(forward.len() > 10, "{forward:#?}");
}

#[test]
fn resource_names_narrow_secret_reads_but_not_wildcards() {
    let s = snapshot![
        role("one-secret")
            .ns("shop")
            .named_rule(&["get", "watch"], &[""], &["secrets"], &["tls-cert"])
            .named_rule(&["*"], &[""], &["configmaps"], &["settings"]),
        role_binding("shop", "b").role("one-secret").user("alice"),
    ];
    let findings = evaluate(&s, &[]);
    assert_eq!(
        keys(&findings),
        [("IAM-02", Some("shop"), "User/alice", "RoleBinding/shop/b")]
    );
    assert_eq!(findings[0].detail, "verbs: * in Role/one-secret");
}

// After the builders and the `snapshot!` macro, which it uses.
/// Kubernetes' own objects and their look-alikes.
mod defaults;
