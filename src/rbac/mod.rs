//! RBAC effective-grant analysis: who can do what, through which binding (IAM-01..IAM-08).
//!
//! Every non-system binding is followed to the role it references; the role's rules are then
//! matched the way the Kubernetes RBAC authorizer matches a request (verb, API group, resource
//! with subresource, `*` wildcards, `*/subresource`). A role nobody binds grants nothing; a
//! RoleBinding to a ClusterRole grants it inside the binding's namespace only.
//!
//! Decisions (what the catalog leaves open):
//! - **System objects.** A binding that [`is_system`] is skipped entirely (including IAM-07/08:
//!   Kubernetes' own defaults bind `system:authenticated` and `system:unauthenticated`). A
//!   non-system binding to a system role (e.g. `cluster-admin`, `admin`, `edit`) is evaluated:
//!   the grant is the customer's. Only IAM-02 looks at whether the *role* is a system one.
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
//!   cluster-admin's wildcards are not IAM-02 (it is a system role).
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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::{SubjectKind, SubjectRef};

#[cfg(test)]
mod tests;

const CORE: &str = "";
const APPS: &str = "apps";
const BATCH: &str = "batch";
const RBAC: &str = "rbac.authorization.k8s.io";
const CERTS: &str = "certificates.k8s.io";
const ADMISSION: &str = "admissionregistration.k8s.io";
const AUTHN: &str = "authentication.k8s.io";

/// Subjects that stand for everyone (IAM-07).
const EVERYONE: &[&str] = &[
    "system:anonymous",
    "system:unauthenticated",
    "system:authenticated",
];
/// Maximum number of matched items spelled out in a finding's detail.
const DETAIL_ITEMS: usize = 3;

/// The RBAC objects of the cluster (as held in reflector stores).
#[derive(Clone, Debug, Default)]
pub struct RbacSnapshot {
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

/// True for objects Kubernetes itself creates (name starts with "system:" or label
/// kubernetes.io/bootstrapping=rbac-defaults); they are never customer violations.
pub fn is_system(meta: &ObjectMeta) -> bool {
    let by_name = meta
        .name
        .as_deref()
        .is_some_and(|n| n.starts_with("system:"));
    let by_label = meta
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/bootstrapping"))
        .is_some_and(|v| v == "rbac-defaults");
    by_name || by_label
}

/// Evaluates IAM-01..IAM-08 over effective grants. Subjects in `allowed` are exempt from
/// IAM-01..IAM-06 (they are the policy's allow-list); IAM-07 and IAM-08 are always reported.
pub fn evaluate(snapshot: &RbacSnapshot, allowed: &[SubjectRef]) -> Vec<Finding> {
    let index = RoleIndex::new(snapshot);
    let mut out = Findings::default();
    let mut cache = CapabilityCache::default();
    for crb in &snapshot.cluster_role_bindings {
        if is_system(&crb.metadata) {
            continue;
        }
        let binding = Binding {
            display: format!("ClusterRoleBinding/{}", name_of(&crb.metadata)),
            namespace: None,
            role_ref: &crb.role_ref,
            subjects: crb.subjects.as_deref().unwrap_or_default(),
        };
        let role = match crb.role_ref.kind.as_str() {
            "ClusterRole" => index.cluster_role(&crb.role_ref.name),
            _ => None,
        };
        evaluate_binding(&binding, role, allowed, &mut cache, &mut out);
    }
    for rb in &snapshot.role_bindings {
        if is_system(&rb.metadata) {
            continue;
        }
        let Some(ns) = rb.metadata.namespace.as_deref().filter(|n| !n.is_empty()) else {
            continue;
        };
        let binding = Binding {
            display: format!("RoleBinding/{ns}/{}", name_of(&rb.metadata)),
            namespace: Some(ns),
            role_ref: &rb.role_ref,
            subjects: rb.subjects.as_deref().unwrap_or_default(),
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

/// A non-system binding as seen by the checks.
struct Binding<'a> {
    display: String,
    namespace: Option<&'a str>,
    role_ref: &'a RoleRef,
    subjects: &'a [Subject],
}

/// The role a binding resolved to.
#[derive(Clone, Copy)]
struct ResolvedRole<'a> {
    rules: &'a [PolicyRule],
    system: bool,
}

/// Roles by (namespace, name) and ClusterRoles by name; the first object of a name wins.
struct RoleIndex<'a> {
    roles: HashMap<(&'a str, &'a str), ResolvedRole<'a>>,
    cluster_roles: HashMap<&'a str, ResolvedRole<'a>>,
}

impl<'a> RoleIndex<'a> {
    fn new(snapshot: &'a RbacSnapshot) -> Self {
        let mut roles = HashMap::new();
        for role in &snapshot.roles {
            let (Some(ns), Some(name)) = (
                role.metadata.namespace.as_deref(),
                role.metadata.name.as_deref(),
            ) else {
                continue;
            };
            roles.entry((ns, name)).or_insert(ResolvedRole {
                rules: role.rules.as_deref().unwrap_or_default(),
                system: is_system(&role.metadata),
            });
        }
        let mut cluster_roles = HashMap::new();
        for cr in &snapshot.cluster_roles {
            let Some(name) = cr.metadata.name.as_deref() else {
                continue;
            };
            // Aggregated ClusterRoles: the aggregation controller fills `rules`; an aggregated
            // role whose rules are still empty simply grants nothing yet.
            cluster_roles.entry(name).or_insert(ResolvedRole {
                rules: cr.rules.as_deref().unwrap_or_default(),
                system: is_system(&cr.metadata),
            });
        }
        RoleIndex {
            roles,
            cluster_roles,
        }
    }

    fn role(&self, ns: &str, name: &str) -> Option<ResolvedRole<'a>> {
        self.roles.get(&(ns, name)).copied()
    }

    fn cluster_role(&self, name: &str) -> Option<ResolvedRole<'a>> {
        self.cluster_roles.get(name).copied()
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
        // The address identifies the rules: every role stays borrowed for the whole evaluation.
        let key = (rules.as_ptr() as usize, namespaced);
        self.0
            .entry(key)
            .or_insert_with(|| capability_items(rules, namespaced))
    }
}

fn evaluate_binding(
    binding: &Binding<'_>,
    role: Option<ResolvedRole<'_>>,
    allowed: &[SubjectRef],
    cache: &mut CapabilityCache,
    out: &mut Findings,
) {
    // Permission-derived violations of this binding, the same for each of its subjects.
    let mut violations: Vec<(&'static str, String)> = Vec::new();
    if let Some(d) = cluster_admin_detail(binding) {
        violations.push(("IAM-01", d));
    }
    if let Some(role) = role {
        if !role.system
            && let Some(d) = wildcard_detail(role.rules, binding.role_ref)
        {
            violations.push(("IAM-02", d));
        }
        let scope = match binding.namespace {
            Some(ns) => format!("in namespace {ns}"),
            None => "cluster-wide".to_owned(),
        };
        let items = cache.items(role.rules, binding.namespace.is_some());
        violations.extend(
            items
                .iter()
                .map(|(control, text)| (*control, format!("{text} {scope}"))),
        );
    }
    let role_text = role_text(binding.role_ref, role.is_some());
    for subject in binding.subjects {
        let id = SubjectId::of(subject, binding.namespace);
        let display = id.display();
        if !id.is_allowed(allowed) {
            for (control, detail) in &violations {
                out.add(control, binding, &display, detail);
            }
        }
        let group_or_user = matches!(subject.kind.as_str(), "User" | "Group");
        if group_or_user && EVERYONE.contains(&subject.name.as_str()) {
            let detail = format!("{} bound to {role_text}", subject.name);
            out.add("IAM-07", binding, &display, &detail);
        }
        if subject.kind == "Group" && subject.name == "system:masters" {
            let detail = format!("system:masters bound to {role_text}");
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

/// One dangerous capability: some verbs on some resources of one API group.
struct Capability {
    control: &'static str,
    /// Verbs that count; empty means "any verb".
    verbs: &'static [&'static str],
    group: &'static str,
    resources: &'static [&'static str],
    /// Cluster-scoped resources cannot be granted by a RoleBinding.
    cluster_scoped: bool,
    /// Only rules without resourceNames count (IAM-03).
    broad_only: bool,
    /// Counts only when the same role also grants `bind` (IAM-05: create bindings + bind).
    with_bind: bool,
}

const fn cap(
    control: &'static str,
    verbs: &'static [&'static str],
    group: &'static str,
    resources: &'static [&'static str],
    cluster_scoped: bool,
) -> Capability {
    Capability {
        control,
        verbs,
        group,
        resources,
        cluster_scoped,
        broad_only: false,
        with_bind: false,
    }
}

/// The capability catalogue for IAM-03..IAM-06, in the order details are written.
const CAPABILITIES: &[Capability] = &[
    Capability {
        broad_only: true,
        ..cap(
            "IAM-03",
            &["get", "list", "watch"],
            CORE,
            &["secrets"],
            false,
        )
    },
    cap("IAM-04", &["create"], CORE, &["pods"], false),
    cap(
        "IAM-04",
        &["create"],
        APPS,
        &["deployments", "statefulsets", "daemonsets", "replicasets"],
        false,
    ),
    cap("IAM-04", &["create"], BATCH, &["jobs", "cronjobs"], false),
    cap(
        "IAM-04",
        &["create"],
        CORE,
        &["replicationcontrollers"],
        false,
    ),
    cap(
        "IAM-04",
        &["create", "get"],
        CORE,
        &["pods/exec", "pods/attach"],
        false,
    ),
    cap(
        "IAM-04",
        &["update", "patch"],
        CORE,
        &["pods/ephemeralcontainers"],
        false,
    ),
    cap("IAM-05", &["escalate", "bind"], RBAC, &["roles"], false),
    cap("IAM-05", &["escalate"], RBAC, &["clusterroles"], true),
    cap("IAM-05", &["bind"], RBAC, &["clusterroles"], false),
    cap(
        "IAM-05",
        &["impersonate"],
        CORE,
        &["serviceaccounts"],
        false,
    ),
    cap("IAM-05", &["impersonate"], CORE, &["users", "groups"], true),
    cap(
        "IAM-05",
        &["impersonate"],
        AUTHN,
        &["uids", "userextras/*"],
        true,
    ),
    Capability {
        with_bind: true,
        ..cap("IAM-05", &["create"], RBAC, &["rolebindings"], false)
    },
    Capability {
        with_bind: true,
        ..cap("IAM-05", &["create"], RBAC, &["clusterrolebindings"], true)
    },
    cap("IAM-06", &[], CORE, &["nodes/proxy"], true),
    cap(
        "IAM-06",
        &["update"],
        CERTS,
        &["certificatesigningrequests/approval"],
        true,
    ),
    cap("IAM-06", &["approve"], CERTS, &["signers"], true),
    cap(
        "IAM-06",
        &["create"],
        CORE,
        &["serviceaccounts/token"],
        false,
    ),
    cap("IAM-06", &["create"], CORE, &["persistentvolumes"], true),
    cap(
        "IAM-06",
        &["create", "update", "patch"],
        ADMISSION,
        &[
            "validatingwebhookconfigurations",
            "mutatingwebhookconfigurations",
        ],
        true,
    ),
];

/// IAM-03..IAM-06 matched by a role's rules, as (control, "what", without the scope), when
/// granted through a RoleBinding (`namespaced`) or a ClusterRoleBinding.
fn capability_items(rules: &[PolicyRule], namespaced: bool) -> Vec<(&'static str, String)> {
    // Matched items per control, in catalogue order.
    let mut items: Vec<(&'static str, Vec<String>)> = Vec::new();
    let mut has_bind = false;
    for cap in CAPABILITIES {
        if cap.cluster_scoped && namespaced {
            continue;
        }
        if cap.with_bind && !has_bind {
            continue;
        }
        for resource in cap.resources {
            let verbs: Vec<&str> = if cap.verbs.is_empty() {
                let any = rules
                    .iter()
                    .any(|r| rule_grants(r, None, cap.group, resource, cap.broad_only));
                if any { vec!["any verb on"] } else { vec![] }
            } else {
                cap.verbs
                    .iter()
                    .copied()
                    .filter(|v| {
                        rules
                            .iter()
                            .any(|r| rule_grants(r, Some(v), cap.group, resource, cap.broad_only))
                    })
                    .collect()
            };
            if verbs.is_empty() {
                continue;
            }
            has_bind |= verbs.contains(&"bind");
            let suffix = if cap.with_bind { " with bind" } else { "" };
            let item = format!("{} {resource}{suffix}", verbs.join("/"));
            match items.iter_mut().find(|(c, _)| *c == cap.control) {
                Some((_, list)) => list.push(item),
                None => items.push((cap.control, vec![item])),
            }
        }
    }
    items
        .into_iter()
        .map(|(control, list)| {
            let shown = list.len().min(DETAIL_ITEMS);
            let more = match list.len() - shown {
                0 => String::new(),
                n => format!(" (+{n} more)"),
            };
            (control, format!("{}{more}", list[..shown].join(", ")))
        })
        .collect()
}

/// Whether `rule` allows `verb` (None: any verb) on `resource` in API `group`, the way the
/// Kubernetes RBAC authorizer matches. `broad_only` ignores rules limited by resourceNames.
fn rule_grants(
    rule: &PolicyRule,
    verb: Option<&str>,
    group: &str,
    resource: &str,
    broad_only: bool,
) -> bool {
    let verb_ok = match verb {
        Some(v) => rule.verbs.iter().any(|x| x == "*" || x == v),
        None => !rule.verbs.is_empty(),
    };
    let group_ok = rule
        .api_groups
        .iter()
        .flatten()
        .any(|g| g == "*" || g == group);
    let resource_ok = rule
        .resources
        .iter()
        .flatten()
        .any(|r| resource_matches(r, resource));
    let named = rule.resource_names.as_ref().is_some_and(|n| !n.is_empty());
    // A create of a top-level resource is authorized without a name: resourceNames never match.
    let unnamed_request = verb == Some("create") && !resource.contains('/');
    let names_ok = !named || !(broad_only || unnamed_request);
    verb_ok && group_ok && resource_ok && names_ok
}

/// RBAC resource matching: exact `res` or `res/sub`, `*`, and `*/sub` for a subresource.
/// A wanted subresource of `*` (e.g. `userextras/*`) matches any subresource of the resource.
fn resource_matches(in_rule: &str, wanted: &str) -> bool {
    if in_rule == "*" || in_rule == wanted {
        return true;
    }
    let Some((base, sub)) = wanted.split_once('/') else {
        return false;
    };
    if sub == "*" {
        return in_rule.starts_with("*/")
            || in_rule
                .strip_prefix(base)
                .is_some_and(|rest| rest.starts_with('/'));
    }
    in_rule.strip_prefix("*/") == Some(sub)
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
