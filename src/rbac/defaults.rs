//! Kubernetes' own RBAC objects, recognised by name AND content.
//!
//! kube-apiserver bootstraps a fixed set of ClusterRoles, Roles and their bindings, which
//! changes between versions (see `bootstrap-v1.<minor>.json`, one per supported version, each
//! generated from that version's API server: `tests/rbac_defaults.rs` checks the file of the
//! version it runs against, `make test` v1.37 and `make test-oldest` v1.34). The data of the
//! API server's own version is used. Names and labels alone prove nothing: anyone allowed to write RBAC can create
//! `system:ops` or label an object `kubernetes.io/bootstrapping=rbac-defaults`, and the API server
//! keeps subjects and rules a customer adds to a default object. So an object is exempt only while
//! its content is the default one:
//! - a **binding** with the default name and roleRef exempts exactly its default subjects; any
//!   other subject of it is a grant like a customer's;
//! - a **role** with the default name is exempt when its rules (and aggregationRule) are exactly
//!   the defaults; otherwise all its rules are the customer's. For the aggregating defaults
//!   (`admin`, `edit`, `view`) the aggregation controller owns `rules`: the rules the default
//!   roles contribute are exempt, anything else aggregated into them (a customer ClusterRole
//!   labelled `rbac.authorization.k8s.io/aggregate-to-*`, or a default role a customer changed
//!   or relabelled) is the customer's.
//!
//! The data describes the default feature gates; a cluster whose API server bootstraps other
//! objects (other feature gates, a version without data of its own) sees those judged like
//! customer objects: over-reported, never hidden.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use k8s_openapi::api::rbac::v1::{
    AggregationRule, ClusterRole, PolicyRule, Role, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

/// The committed bootstrap objects, per Kubernetes minor version onus supports (oldest first);
/// see the module documentation. Each file is generated from that version's kube-apiserver.
const DATA: &[(u32, &str)] = &[
    (34, include_str!("bootstrap-v1.34.json")),
    (37, include_str!("bootstrap-v1.37.json")),
];

/// Parsed once: `evaluate` runs per policy evaluation and only looks names up here.
static DEFAULTS: LazyLock<Vec<(u32, Defaults)>> = LazyLock::new(|| {
    DATA.iter()
        .map(|(minor, text)| {
            let defaults = match serde_json::from_str::<Data>(text) {
                Ok(data) => Defaults::new(data),
                Err(error) => {
                    // Unreachable with the committed files (a unit test parses them); without
                    // defaults every object is judged, which over-reports rather than hides
                    // grants.
                    tracing::error!(%error, minor, "Cannot parse the RBAC bootstrap defaults");
                    Defaults::default()
                }
            };
            (*minor, defaults)
        })
        .collect()
});

/// The defaults of the API server of minor version `minor` (1.x): that version's data, else
/// the newest older one, else (an API server older than onus supports) the oldest. Unknown
/// (not read yet, or not 1.x): the newest. What a version bootstraps beyond the data chosen is
/// judged like a customer's: over-reported, never hidden.
pub fn for_minor(minor: Option<u32>) -> &'static Defaults {
    let all = &*DEFAULTS;
    let chosen = match minor {
        None => all.last(),
        Some(m) => all
            .iter()
            .rev()
            .find(|(v, _)| *v <= m)
            .or_else(|| all.first()),
    };
    static EMPTY: LazyLock<Defaults> = LazyLock::new(Defaults::default);
    chosen.map_or(&*EMPTY, |(_, d)| d)
}

/// The minor versions (1.x) with committed bootstrap data.
pub fn known_minors() -> Vec<u32> {
    DATA.iter().map(|(m, _)| *m).collect()
}

/// The Kubernetes version whose bootstrap objects the newest data describes, e.g. "v1.37.2".
pub fn kubernetes_version() -> &'static str {
    &for_minor(None).version
}

/// For a default aggregating ClusterRole (`admin`, `edit`, `view`) of the newest data: the
/// rules the default ClusterRoles it selects (transitively) contribute.
pub fn aggregated_default_rules(cluster_role: &str) -> Option<&'static [PolicyRule]> {
    for_minor(None).aggregated_default_rules(cluster_role)
}

/// [`Defaults::bootstrap_roles`] of the newest data.
pub fn bootstrap_roles() -> (Vec<ClusterRole>, Vec<Role>) {
    for_minor(None).bootstrap_roles()
}

impl Defaults {
    /// The Kubernetes version these bootstrap objects are from, e.g. "v1.34.4".
    pub fn version(&self) -> &str {
        &self.version
    }

    /// For a default aggregating ClusterRole (`admin`, `edit`, `view`): the rules the default
    /// ClusterRoles it selects (transitively) contribute, i.e. its rules on an untouched
    /// cluster.
    pub fn aggregated_default_rules(&self, cluster_role: &str) -> Option<&[PolicyRule]> {
        let role = self.cluster_roles.get(cluster_role)?;
        role.aggregation.as_ref()?;
        Some(&role.aggregated)
    }

    /// Kubernetes' default ClusterRoles and Roles as a fresh cluster holds them (an
    /// aggregating role with the rules the aggregation controller gives it), for an index
    /// built without an API server (`onus check`): a binding to `admin` or `view` in a
    /// manifest grants what it grants in a cluster.
    pub fn bootstrap_roles(&self) -> (Vec<ClusterRole>, Vec<Role>) {
        let meta = |namespace: Option<&str>, name: &str, role: &DefaultRole| ObjectMeta {
            name: Some(name.to_owned()),
            namespace: namespace.map(str::to_owned),
            labels: (!role.labels.is_empty()).then(|| role.labels.clone()),
            ..ObjectMeta::default()
        };
        let mut cluster_roles: Vec<ClusterRole> = self
            .cluster_roles
            .iter()
            .map(|(name, role)| ClusterRole {
                metadata: meta(None, name, role),
                rules: Some(match role.aggregation {
                    Some(_) => role.aggregated.clone(),
                    None => role.rules.clone(),
                }),
                aggregation_rule: role.aggregation.clone(),
            })
            .collect();
        cluster_roles.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let mut roles: Vec<Role> = self
            .roles
            .iter()
            .flat_map(|(ns, roles)| {
                roles.iter().map(move |(name, role)| Role {
                    metadata: meta(Some(ns), name, role),
                    rules: Some(role.rules.clone()),
                })
            })
            .collect();
        roles.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        (cluster_roles, roles)
    }
}

/// The committed file: objects with just the fields that decide what they grant.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    kubernetes_version: String,
    objects: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    kind: String,
    #[serde(default)]
    namespace: String,
    name: String,
    /// Labels besides the bootstrapping one: they decide what aggregates into `admin` & co.
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    rules: Vec<PolicyRule>,
    aggregation_rule: Option<AggregationRule>,
    role_ref: Option<RoleRef>,
    #[serde(default)]
    subjects: Vec<Subject>,
}

/// One Kubernetes version's bootstrap RBAC objects.
#[derive(Default)]
pub struct Defaults {
    version: String,
    cluster_roles: HashMap<String, DefaultRole>,
    /// Roles by namespace, then name.
    roles: HashMap<String, HashMap<String, DefaultRole>>,
    cluster_role_bindings: HashMap<String, DefaultBinding>,
    /// RoleBindings by namespace, then name.
    role_bindings: HashMap<String, HashMap<String, DefaultBinding>>,
}

struct DefaultRole {
    rules: Vec<PolicyRule>,
    labels: BTreeMap<String, String>,
    aggregation: Option<AggregationRule>,
    /// Aggregating roles only: the rules the aggregation controller copies in from defaults.
    aggregated: Vec<PolicyRule>,
}

struct DefaultBinding {
    role_ref: RoleRef,
    subjects: Vec<Subject>,
}

impl Defaults {
    fn new(data: Data) -> Self {
        let mut d = Defaults {
            version: data.kubernetes_version,
            ..Defaults::default()
        };
        for e in data.objects {
            let role = || DefaultRole {
                rules: e.rules.clone(),
                labels: e.labels.clone(),
                aggregation: e.aggregation_rule.clone(),
                aggregated: Vec::new(),
            };
            let binding = |role_ref: &RoleRef| DefaultBinding {
                role_ref: role_ref.clone(),
                subjects: e.subjects.clone(),
            };
            match (e.kind.as_str(), &e.role_ref) {
                ("ClusterRole", _) => {
                    d.cluster_roles.insert(e.name.clone(), role());
                }
                ("Role", _) => {
                    let ns = d.roles.entry(e.namespace.clone()).or_default();
                    ns.insert(e.name.clone(), role());
                }
                ("ClusterRoleBinding", Some(rr)) => {
                    d.cluster_role_bindings.insert(e.name.clone(), binding(rr));
                }
                ("RoleBinding", Some(rr)) => {
                    let ns = d.role_bindings.entry(e.namespace.clone()).or_default();
                    ns.insert(e.name.clone(), binding(rr));
                }
                _ => tracing::warn!(kind = %e.kind, name = %e.name, "Skipping RBAC default"),
            }
        }
        let aggregating: Vec<String> = d
            .cluster_roles
            .iter()
            .filter(|(_, r)| r.aggregation.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        for name in aggregating {
            let rules = aggregate(&d.cluster_roles, &name, &mut Vec::new());
            if let Some(role) = d.cluster_roles.get_mut(&name) {
                role.aggregated = rules;
            }
        }
        d
    }
}

/// The rules the aggregation controller gives the default ClusterRole `name`: the union of the
/// rules of the defaults its selectors pick, following aggregating ones (`admin` picks `edit`,
/// which picks `view`). `path` guards against selector cycles.
fn aggregate(
    roles: &HashMap<String, DefaultRole>,
    name: &str,
    path: &mut Vec<String>,
) -> Vec<PolicyRule> {
    let Some(selectors) = roles
        .get(name)
        .and_then(|r| r.aggregation.as_ref())
        .and_then(|a| a.cluster_role_selectors.as_ref())
    else {
        return Vec::new();
    };
    path.push(name.to_owned());
    let mut out: Vec<PolicyRule> = Vec::new();
    let mut names: Vec<&String> = roles.keys().collect();
    // Deterministic order, as the exemption check does not depend on it but tests print it.
    names.sort();
    for other in names {
        let role = &roles[other];
        if path.contains(other) || !selectors.iter().any(|s| selects(s, &role.labels)) {
            continue;
        }
        let rules = match role.aggregation {
            Some(_) => aggregate(roles, other, path),
            None => role.rules.clone(),
        };
        for rule in rules {
            if !out.contains(&rule) {
                out.push(rule);
            }
        }
    }
    path.pop();
    out
}

/// Label selector semantics (matchLabels and matchExpressions; an empty selector selects all).
pub(super) fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// Where a role lives: cluster-wide, or a namespace.
#[derive(Clone, Copy)]
pub(super) enum Scope<'a> {
    Cluster,
    Namespace(&'a str),
}

/// The rules of a live role that are the customer's grant (see the module documentation): none
/// for an untouched default, the non-default aggregated ones for `admin` & co., else all.
pub(super) fn judged_rules<'a>(
    defaults: &Defaults,
    scope: Scope<'_>,
    name: &str,
    rules: &'a [PolicyRule],
    aggregation: Option<&AggregationRule>,
) -> Cow<'a, [PolicyRule]> {
    let default = match scope {
        Scope::Cluster => defaults.cluster_roles.get(name),
        Scope::Namespace(ns) => defaults.roles.get(ns).and_then(|m| m.get(name)),
    };
    let Some(default) = default else {
        return Cow::Borrowed(rules);
    };
    if aggregation != default.aggregation.as_ref() {
        return Cow::Borrowed(rules);
    }
    if default.aggregation.is_some() {
        let extra: Vec<PolicyRule> = rules
            .iter()
            .filter(|r| !default.aggregated.contains(r))
            .cloned()
            .collect();
        return match extra.len() {
            0 => Cow::Borrowed(&[]),
            n if n == rules.len() => Cow::Borrowed(rules),
            _ => Cow::Owned(extra),
        };
    }
    if same_rules(rules, &default.rules) {
        Cow::Borrowed(&[])
    } else {
        Cow::Borrowed(rules)
    }
}

/// The same grant: equal as sets of rules (the API server keeps the bootstrap order, so the
/// common case is the cheap element-wise comparison).
fn same_rules(live: &[PolicyRule], default: &[PolicyRule]) -> bool {
    live == default
        || (live.iter().all(|r| default.contains(r)) && default.iter().all(|r| live.contains(r)))
}

/// For a binding with a default name and the default roleRef: its default subjects. `None` for
/// every other binding (a different roleRef means a customer re-created the name).
pub(super) fn default_subjects<'d>(
    defaults: &'d Defaults,
    scope: Scope<'_>,
    name: &str,
    role_ref: &RoleRef,
) -> Option<&'d [Subject]> {
    let default = match scope {
        Scope::Cluster => defaults.cluster_role_bindings.get(name),
        Scope::Namespace(ns) => defaults.role_bindings.get(ns).and_then(|m| m.get(name)),
    }?;
    let same_ref = default.role_ref.kind == role_ref.kind
        && default.role_ref.name == role_ref.name
        && default.role_ref.api_group == role_ref.api_group;
    same_ref.then_some(default.subjects.as_slice())
}
