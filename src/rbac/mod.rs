//! RBAC effective-grant analysis: who can do what, through which binding (IAM-01..IAM-08).
//!
//! Every binding is followed to the role it references; the role's rules are then
//! matched the way the Kubernetes RBAC authorizer matches a request (verb, API group, resource
//! with subresource, `*` wildcards, `*/subresource`). A role nobody binds grants nothing; a
//! RoleBinding to a ClusterRole grants it inside the binding's namespace only.
//!
//! Decisions (what the catalog leaves open):
//! - **Kubernetes' own objects** ([`defaults`]) are recognised by name AND content, never by a
//!   `system:` name or the `kubernetes.io/bootstrapping` label alone. The default subjects of a
//!   default binding are not the customer's grant: they are judged only on the role's rules that
//!   are not default (a changed default role, customer rules aggregated into `admin` & co.),
//!   and then IAM-07/08 say so too. Any other subject, also one added to a default binding, is
//!   judged like any customer grant. A customer binding to a default role (e.g.
//!   `cluster-admin`, `admin`, `edit`) is evaluated on all the role's rules: the grant is the
//!   customer's. Only IAM-02 spares the default rules of a role (cluster-admin's wildcards).
//! - **Binding controls vs. permission controls.** IAM-01, IAM-07 and IAM-08 are defined by the
//!   binding (its roleRef and subjects), so they are reported even when the referenced role is
//!   not in the snapshot (`cluster-admin`, `admin` and `edit` are re-created by the API server;
//!   a dangling binding to `system:anonymous` becomes live as soon as the role appears).
//!   IAM-02..IAM-06 are defined by permissions: a binding to a missing role (or a
//!   ClusterRoleBinding that names a Role, or a RoleBinding without a namespace) grants nothing.
//! - **IAM-01** is about the named roles only (`cluster-admin` anywhere; `admin`/`edit` only via
//!   ClusterRoleBindings, reported as warning-level). A custom all-wildcard role is IAM-02.
//! - **Overlap.** Findings are per control: `cluster-admin` bound to a user also yields
//!   IAM-03..IAM-06 because that user can in fact read secrets, exec into pods, etc.
//!   cluster-admin's wildcards are not IAM-02 (they are Kubernetes' default rules).
//! - **resourceNames.** A rule limited to `resourceNames` is a narrower grant. IAM-03 counts only
//!   rules without `resourceNames` (CIS 5.1.2 targets broad read access; reading named secrets
//!   is the minimal form it recommends). For IAM-04..IAM-06 such a rule still counts (exec into
//!   one named pod is still exec), except `create` on a top-level resource, which Kubernetes
//!   authorizes without a name, so a `resourceNames` rule can never grant it.
//! - **Scope.** A RoleBinding cannot grant cluster-scoped resources (nodes, persistentvolumes,
//!   CSRs, webhook configurations, clusterroles for `escalate`, users/groups for `impersonate`),
//!   so those capabilities are only reported for ClusterRoleBindings. `bind` on `clusterroles` is
//!   checked in the binding's namespace by Kubernetes and therefore counts for RoleBindings.
//! - **IAM-02** counts `*` and `*/subresource` entries; it ignores `resourceNames`. Rules with
//!   `nonResourceURLs` grant no resource access; they count for IAM-02 only when their verbs
//!   contain `*`.
//! - **Extra capabilities** beyond the brief, because they are the same risk: IAM-04 also counts
//!   `create` on core `replicationcontrollers` and `update`/`patch` on `pods/ephemeralcontainers`;
//!   IAM-05 `impersonate` covers users, groups, serviceaccounts, uids and userextras.
//! - **IAM-05 combination.** `create` on rolebindings/clusterrolebindings is reported (in the
//!   detail of the same finding) only together with `bind`; `bind` alone already is IAM-05.
//!   Creating roles is bounded by the API server's escalation check, so it is not combined.
//! - **Allow-list** matching: kind and name; for ServiceAccounts also the namespace. A `User`
//!   subject named `system:serviceaccount:NS:NAME` is the same identity as that ServiceAccount.
//! - **IAM-07** reports `system:anonymous`, `system:unauthenticated` and `system:authenticated`
//!   as User or Group subjects. **IAM-08** reports the Group `system:masters`.
//! - **Output.** One finding per (control, subject, binding); the detail lists what was matched
//!   (at most three items, then "+N more"). Findings are sorted by their derived order.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::{SubjectKind, SubjectRef};
use capabilities::capability_items;
use defaults::Scope;

pub mod aggregation;
mod capabilities;
pub mod defaults;
#[cfg(test)]
mod tests;

/// Subjects that stand for everyone (IAM-07).
const EVERYONE: &[&str] = &[
    "system:anonymous",
    "system:unauthenticated",
    "system:authenticated",
];

/// The RBAC objects of the cluster (as held in reflector stores).
#[derive(Clone, Debug, Default)]
pub struct RbacSnapshot {
    /// The API server's minor version (1.x), when known: which Kubernetes defaults apply.
    pub kubernetes_minor: Option<u32>,
    pub roles: Vec<Arc<Role>>,
    pub cluster_roles: Vec<Arc<ClusterRole>>,
    pub role_bindings: Vec<Arc<RoleBinding>>,
    pub cluster_role_bindings: Vec<Arc<ClusterRoleBinding>>,
}

/// One effective grant that breaks an IAM control.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Finding {
    /// Control id, "IAM-01" .. "IAM-08".
    pub control: &'static str,
    /// Some(ns) when granted by a RoleBinding in ns; None when cluster-wide.
    pub namespace: Option<String>,
    /// "User/alice", "Group/devs", "ServiceAccount/ns/name".
    pub subject: String,
    /// "ClusterRoleBinding/name" or "RoleBinding/ns/name".
    pub binding: String,
    /// Short reason, e.g. "cluster-admin", "verbs: *", "get secrets cluster-wide".
    pub detail: String,
}

impl Finding {
    /// Short text for status examples, e.g. "ClusterRoleBinding/ops: User/alice".
    pub fn example(&self) -> String {
        format!("{}: {}", self.binding, self.subject)
    }
}

/// Evaluates IAM-01..IAM-08 over effective grants. Subjects in `allowed` are exempt from
/// IAM-01..IAM-06 (they are the policy's allow-list); IAM-07 and IAM-08 are always reported.
pub fn evaluate(snapshot: &RbacSnapshot, allowed: &[SubjectRef]) -> Vec<Finding> {
    let defaults = defaults::for_minor(snapshot.kubernetes_minor);
    let index = RoleIndex::new(snapshot, defaults);
    let mut out = Findings::default();
    let mut cache = CapabilityCache::default();
    for crb in &snapshot.cluster_role_bindings {
        let name = name_of(&crb.metadata);
        let binding = Binding {
            display: format!("ClusterRoleBinding/{name}"),
            namespace: None,
            role_ref: &crb.role_ref,
            subjects: crb.subjects.as_deref().unwrap_or_default(),
            default_subjects: defaults::default_subjects(
                defaults,
                Scope::Cluster,
                name,
                &crb.role_ref,
            ),
        };
        let role = match crb.role_ref.kind.as_str() {
            "ClusterRole" => index.cluster_role(&crb.role_ref.name),
            _ => None,
        };
        evaluate_binding(&binding, role, allowed, &mut cache, &mut out);
    }
    for rb in &snapshot.role_bindings {
        let Some(ns) = rb.metadata.namespace.as_deref().filter(|n| !n.is_empty()) else {
            continue;
        };
        let name = name_of(&rb.metadata);
        let binding = Binding {
            display: format!("RoleBinding/{ns}/{name}"),
            namespace: Some(ns),
            role_ref: &rb.role_ref,
            subjects: rb.subjects.as_deref().unwrap_or_default(),
            default_subjects: defaults::default_subjects(
                defaults,
                Scope::Namespace(ns),
                name,
                &rb.role_ref,
            ),
        };
        let role = match rb.role_ref.kind.as_str() {
            "ClusterRole" => index.cluster_role(&rb.role_ref.name),
            "Role" => index.role(ns, &rb.role_ref.name),
            _ => None,
        };
        evaluate_binding(&binding, role, allowed, &mut cache, &mut out);
    }
    out.into_sorted()
}

/// A binding as seen by the checks.
struct Binding<'a> {
    display: String,
    namespace: Option<&'a str>,
    role_ref: &'a RoleRef,
    subjects: &'a [Subject],
    /// Some for a Kubernetes default binding (name and roleRef): the subjects it bootstraps.
    default_subjects: Option<&'static [Subject]>,
}

impl Binding<'_> {
    /// Whether `subject` is one the API server bootstrapped into this (default) binding.
    fn is_default_subject(&self, subject: &SubjectId<'_>) -> bool {
        self.default_subjects.is_some_and(|defaults| {
            defaults
                .iter()
                .any(|d| SubjectId::of(d, self.namespace).same_identity(subject))
        })
    }
}

/// The role a binding resolved to.
struct ResolvedRole<'a> {
    /// Everything the role grants.
    rules: &'a [PolicyRule],
    /// The part that is not Kubernetes' default content (see [`defaults`]).
    judged: Cow<'a, [PolicyRule]>,
}

/// Roles by (namespace, name) and ClusterRoles by name; the first object of a name wins.
struct RoleIndex<'a> {
    roles: HashMap<(&'a str, &'a str), ResolvedRole<'a>>,
    cluster_roles: HashMap<&'a str, ResolvedRole<'a>>,
}

impl<'a> RoleIndex<'a> {
    fn new(snapshot: &'a RbacSnapshot, defaults: &defaults::Defaults) -> Self {
        let mut roles = HashMap::new();
        for role in &snapshot.roles {
            let (Some(ns), Some(name)) = (
                role.metadata.namespace.as_deref(),
                role.metadata.name.as_deref(),
            ) else {
                continue;
            };
            roles.entry((ns, name)).or_insert_with(|| {
                let rules = role.rules.as_deref().unwrap_or_default();
                ResolvedRole {
                    rules,
                    judged: defaults::judged_rules(
                        defaults,
                        Scope::Namespace(ns),
                        name,
                        rules,
                        None,
                    ),
                }
            });
        }
        let mut cluster_roles = HashMap::new();
        for cr in &snapshot.cluster_roles {
            let Some(name) = cr.metadata.name.as_deref() else {
                continue;
            };
            // Aggregated ClusterRoles: the aggregation controller fills `rules` (that is what
            // the authorizer reads); an aggregated role whose rules are still empty simply
            // grants nothing yet. Without a controller (`onus check` on manifests) the caller
            // fills them first ([`aggregation::aggregate`]).
            cluster_roles.entry(name).or_insert_with(|| {
                let rules = cr.rules.as_deref().unwrap_or_default();
                let aggregation = cr.aggregation_rule.as_ref();
                ResolvedRole {
                    rules,
                    judged: defaults::judged_rules(
                        defaults,
                        Scope::Cluster,
                        name,
                        rules,
                        aggregation,
                    ),
                }
            });
        }
        RoleIndex {
            roles,
            cluster_roles,
        }
    }

    // The key borrows as briefly as the arguments, so the result does too.
    fn role<'s>(&'s self, ns: &'s str, name: &'s str) -> Option<&'s ResolvedRole<'s>> {
        self.roles.get(&(ns, name))
    }

    fn cluster_role<'s>(&'s self, name: &'s str) -> Option<&'s ResolvedRole<'s>> {
        self.cluster_roles.get(name)
    }
}

/// Findings keyed by (control, namespace, subject, binding): the first detail wins.
#[derive(Default)]
struct Findings(BTreeMap<(&'static str, Option<String>, String, String), String>);

impl Findings {
    fn add(&mut self, control: &'static str, binding: &Binding<'_>, subject: &str, detail: &str) {
        let key = (
            control,
            binding.namespace.map(str::to_owned),
            subject.to_owned(),
            binding.display.clone(),
        );
        self.0.entry(key).or_insert_with(|| detail.to_owned());
    }

    fn into_sorted(self) -> Vec<Finding> {
        let mut v: Vec<Finding> = self
            .0
            .into_iter()
            .map(|((control, namespace, subject, binding), detail)| Finding {
                control,
                namespace,
                subject,
                binding,
                detail,
            })
            .collect();
        v.sort();
        v
    }
}

/// IAM-03..IAM-06 items of a role's rules, per (rules address, namespaced): many bindings share
/// a role, and matching its rules is the expensive part.
#[derive(Default)]
struct CapabilityCache(HashMap<(usize, bool), Vec<(&'static str, String)>>);

impl CapabilityCache {
    fn items(&mut self, rules: &[PolicyRule], namespaced: bool) -> &[(&'static str, String)] {
        // The address identifies the rules: every role (and its judged part) stays borrowed
        // for the whole evaluation. Empty slices may share an address; they share the result.
        let key = (rules.as_ptr() as usize, namespaced);
        self.0
            .entry(key)
            .or_insert_with(|| capability_items(rules, namespaced))
    }
}

/// Permission-derived violations (IAM-02..IAM-06) of `rules` through `binding`, the same for
/// each subject. IAM-02 only ever looks at the role's judged (non-default) rules.
fn permission_violations(
    binding: &Binding<'_>,
    role: &ResolvedRole<'_>,
    rules: &[PolicyRule],
    cache: &mut CapabilityCache,
) -> Vec<(&'static str, String)> {
    let mut violations = Vec::new();
    if let Some(d) = wildcard_detail(&role.judged, binding.role_ref) {
        violations.push(("IAM-02", d));
    }
    let scope = match binding.namespace {
        Some(ns) => format!("in namespace {ns}"),
        None => "cluster-wide".to_owned(),
    };
    let items = cache.items(rules, binding.namespace.is_some());
    violations.extend(
        items
            .iter()
            .map(|(control, text)| (*control, format!("{text} {scope}"))),
    );
    violations
}

fn evaluate_binding(
    binding: &Binding<'_>,
    role: Option<&ResolvedRole<'_>>,
    allowed: &[SubjectRef],
    cache: &mut CapabilityCache,
    out: &mut Findings,
) {
    let is_default = |subject: &SubjectId<'_>| binding.is_default_subject(subject);
    let ids: Vec<SubjectId<'_>> = binding
        .subjects
        .iter()
        .map(|s| SubjectId::of(s, binding.namespace))
        .collect();
    // What a customer subject gets: the binding's IAM-01 and everything the role grants. Not
    // computed when every subject is a default one (most bindings of a cluster).
    let mut violations: Vec<(&'static str, String)> = Vec::new();
    if !ids.iter().all(is_default) {
        if let Some(d) = cluster_admin_detail(binding) {
            violations.push(("IAM-01", d));
        }
        if let Some(role) = role {
            violations.extend(permission_violations(binding, role, role.rules, cache));
        }
    }
    // What a default subject of a default binding gets: only the role's non-default rules.
    let non_default = role.filter(|r| !r.judged.is_empty());
    let default_violations = match non_default {
        Some(role) if binding.default_subjects.is_some() => {
            permission_violations(binding, role, &role.judged, cache)
        }
        _ => Vec::new(),
    };
    let role_text = role_text(binding.role_ref, role.is_some());
    for (subject, id) in binding.subjects.iter().zip(&ids) {
        let display = id.display();
        let default = is_default(id);
        let found = if default {
            &default_violations
        } else {
            &violations
        };
        if !id.is_allowed(allowed) {
            for (control, detail) in found {
                out.add(control, binding, &display, detail);
            }
        }
        // Kubernetes binds everyone-groups and system:masters itself; that is only news when
        // the role behind it grants more than the default.
        let suffix = match (default, non_default) {
            (false, _) => "",
            (true, Some(_)) => " (non-default rules)",
            (true, None) => continue,
        };
        let group_or_user = matches!(subject.kind.as_str(), "User" | "Group");
        if group_or_user && EVERYONE.contains(&subject.name.as_str()) {
            let detail = format!("{} bound to {role_text}{suffix}", subject.name);
            out.add("IAM-07", binding, &display, &detail);
        }
        if subject.kind == "Group" && subject.name == "system:masters" {
            let detail = format!("system:masters bound to {role_text}{suffix}");
            out.add("IAM-08", binding, &display, &detail);
        }
    }
}

/// IAM-01: the binding references cluster-admin (anywhere) or admin/edit (cluster-wide).
fn cluster_admin_detail(binding: &Binding<'_>) -> Option<String> {
    let rr = binding.role_ref;
    if rr.kind != "ClusterRole" {
        return None;
    }
    match (rr.name.as_str(), binding.namespace) {
        ("cluster-admin", None) => Some("cluster-admin".to_owned()),
        ("cluster-admin", Some(ns)) => Some(format!("cluster-admin in namespace {ns}")),
        (name @ ("admin" | "edit"), None) => Some(format!("{name} cluster-wide (warning)")),
        _ => None,
    }
}

/// IAM-02: `*` in verbs, resources or apiGroups of any rule of the role.
fn wildcard_detail(rules: &[PolicyRule], role_ref: &RoleRef) -> Option<String> {
    let is_wild = |s: &String| s == "*" || s.starts_with("*/");
    let any = |f: &dyn Fn(&PolicyRule) -> Option<&Vec<String>>| {
        rules
            .iter()
            .any(|r| f(r).is_some_and(|v| v.iter().any(is_wild)))
    };
    let mut parts = Vec::new();
    if any(&|r| Some(&r.verbs)) {
        parts.push("verbs: *");
    }
    if any(&|r| r.resources.as_ref()) {
        parts.push("resources: *");
    }
    if any(&|r| r.api_groups.as_ref()) {
        parts.push("apiGroups: *");
    }
    if parts.is_empty() {
        return None;
    }
    Some(format!(
        "{} in {}/{}",
        parts.join(", "),
        role_ref.kind,
        role_ref.name
    ))
}

fn role_text(role_ref: &RoleRef, found: bool) -> String {
    let missing = if found { "" } else { " (role not found)" };
    format!("{}/{}{missing}", role_ref.kind, role_ref.name)
}

fn name_of(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

/// A binding subject with its ServiceAccount namespace resolved.
struct SubjectId<'a> {
    kind: &'a str,
    name: &'a str,
    /// ServiceAccounts only: subject namespace, else the RoleBinding's.
    namespace: Option<&'a str>,
}

impl<'a> SubjectId<'a> {
    fn of(subject: &'a Subject, binding_ns: Option<&'a str>) -> Self {
        let namespace = if subject.kind == "ServiceAccount" {
            subject
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .or(binding_ns)
        } else {
            None
        };
        SubjectId {
            kind: &subject.kind,
            name: &subject.name,
            namespace,
        }
    }

    /// "User/alice", "Group/devs", "ServiceAccount/ns/name" (or "ServiceAccount/name" when the
    /// namespace is unknown), "Kind/name" for any other kind.
    fn display(&self) -> String {
        match self.namespace {
            Some(ns) => format!("{}/{ns}/{}", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }

    /// The subject as a ServiceAccount (ns, name), also for `system:serviceaccount:` users.
    fn service_account(&self) -> Option<(&'a str, &'a str)> {
        match self.kind {
            "ServiceAccount" => Some((self.namespace?, self.name)),
            "User" => self
                .name
                .strip_prefix("system:serviceaccount:")?
                .split_once(':'),
            _ => None,
        }
    }

    /// The same identity as the RBAC authorizer sees it (apiGroup does not matter).
    fn same_identity(&self, other: &SubjectId<'_>) -> bool {
        self.kind == other.kind && self.name == other.name && self.namespace == other.namespace
    }

    fn is_allowed(&self, allowed: &[SubjectRef]) -> bool {
        allowed.iter().any(|a| match a.kind {
            SubjectKind::User => self.kind == "User" && self.name == a.name,
            SubjectKind::Group => self.kind == "Group" && self.name == a.name,
            SubjectKind::ServiceAccount => a
                .namespace
                .as_deref()
                .is_some_and(|ns| self.service_account() == Some((ns, a.name.as_str()))),
        })
    }
}
