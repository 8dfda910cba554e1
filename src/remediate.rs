//! Enforce mode, decided: which safe remediations the policies want in which namespaces, and
//! which actions bring the cluster there. Pure: policies and index in, actions out.
//!
//! Overlapping policies: all Enforce policies are merged per namespace and the strictest wins
//! (union of default-deny directions, DNS open if any policy opens it, the highest Pod Security
//! level and newest version, token off if any asks). Each object has one owner, onus, and an
//! annotation lists the policies it serves. onus never lowers a Pod Security label that is
//! stricter than what the policies ask for, whoever set it.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    catalog::{Fix, control_by_id},
    crd::{Mode, Owner, PodSecurityLevel, ResponsibilityPolicy},
    evaluate::{
        PSA_AUDIT, PSA_AUDIT_VERSION, PSA_ENFORCE, PSA_ENFORCE_VERSION, PSA_WARN, PSA_WARN_VERSION,
        level_name, owner_of, pod_security_version, selected_namespaces, strictness,
    },
    facts::{DEFAULT_DENY, DenySpec},
    index::{Index, Key},
    podsecurity::Version,
};

/// Pod Security labelling wanted for one namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodSecurityWant {
    pub level: PodSecurityLevel,
    pub version: Version,
    pub force_enforce: bool,
}

/// What the policies want in one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceWant {
    /// Policies that asked for something here, sorted.
    pub policies: BTreeSet<String>,
    pub deny: Option<DenySpec>,
    pub pod_security: Option<PodSecurityWant>,
    pub disable_default_token: bool,
}

/// One change to the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create or update `onus-default-deny`.
    ApplyNetworkPolicy {
        namespace: String,
        deny: DenySpec,
        policies: Vec<String>,
    },
    /// Remove `onus-default-deny`: no policy wants it any more.
    DeleteNetworkPolicy { namespace: String },
    /// Set (or restore) Pod Security labels.
    ApplyPodSecurityLabels {
        namespace: String,
        labels: BTreeMap<String, String>,
        policies: Vec<String>,
        /// Someone weakened a label onus had set.
        restores: bool,
    },
    /// Give up onus's Pod Security labels.
    ReleasePodSecurityLabels { namespace: String },
    /// Set `automountServiceAccountToken: false` on the `default` ServiceAccount.
    DisableDefaultToken {
        namespace: String,
        policies: Vec<String>,
    },
    /// Give up onus's setting on the `default` ServiceAccount.
    ReleaseDefaultToken { namespace: String },
}

impl Action {
    /// The namespace the action changes.
    pub fn namespace(&self) -> &str {
        match self {
            Action::ApplyNetworkPolicy { namespace, .. }
            | Action::DeleteNetworkPolicy { namespace }
            | Action::ApplyPodSecurityLabels { namespace, .. }
            | Action::ReleasePodSecurityLabels { namespace }
            | Action::DisableDefaultToken { namespace, .. }
            | Action::ReleaseDefaultToken { namespace } => namespace,
        }
    }
}

/// Which families a policy remediates: Enforce policies per their family modes; with
/// `preview`, every family not explicitly in Audit (what switching to Enforce would do).
fn enforcing(
    policy: &ResponsibilityPolicy,
    family_mode: Option<Mode>,
    control: &str,
    preview: bool,
) -> bool {
    let spec = &policy.spec;
    let mode = if preview { Mode::Enforce } else { spec.mode };
    // Only what the catalog calls safe, and only what the customer (or both) owns.
    let remediable = control_by_id(control)
        .is_some_and(|c| c.fix == Fix::Safe && owner_of(spec, c).0 != Owner::Provider);
    remediable && mode == Mode::Enforce && family_mode.unwrap_or(mode) == Mode::Enforce
}

fn newest(a: Version, b: Version) -> Version {
    match (a, b) {
        (Version::Latest, _) | (_, Version::Latest) => Version::Latest,
        (Version::Minor(x), Version::Minor(y)) => Version::Minor(x.max(y)),
    }
}

/// Adds one policy's wants to `wants`.
fn add_policy(
    wants: &mut BTreeMap<String, NamespaceWant>,
    policy: &ResponsibilityPolicy,
    index: &Index,
    preview: bool,
) {
    let spec = &policy.spec;
    if policy.metadata.deletion_timestamp.is_some() {
        return;
    }
    let c = &spec.controls;
    let deny =
        (c.network.enabled && enforcing(policy, c.network.mode, "NET-01", preview)).then(|| {
            DenySpec {
                ingress: true,
                egress: c
                    .network
                    .default_deny
                    .contains(&crate::crd::Direction::Egress),
                // Without egress deny there is nothing to allow: the cluster reads onus's
                // NetworkPolicy back without an allowance, and the two must compare equal.
                dns: c.network.allow_dns
                    && c.network
                        .default_deny
                        .contains(&crate::crd::Direction::Egress),
            }
        });
    let pod_security = (c.pod_security.enabled
        && enforcing(policy, c.pod_security.mode, "WKL-01", preview))
    .then(|| PodSecurityWant {
        level: c.pod_security.level,
        version: pod_security_version(spec),
        force_enforce: c.pod_security.force_enforce,
    });
    let token = c.service_accounts.enabled
        && !c.service_accounts.automount_default_token
        && enforcing(policy, c.service_accounts.mode, "IAM-09", preview);
    if deny.is_none() && pod_security.is_none() && !token {
        return;
    }
    let name = policy.metadata.name.clone().unwrap_or_default();
    let terminating = |ns: &String| {
        index
            .namespaces
            .get(&Key::new(None, ns))
            .is_some_and(|f| f.terminating)
    };
    for ns in selected_namespaces(spec, index)
        .into_iter()
        .filter(|ns| !terminating(ns))
    {
        let want = wants.entry(ns).or_default();
        want.policies.insert(name.clone());
        if let Some(d) = deny {
            let merged = want.deny.get_or_insert(DenySpec {
                ingress: false,
                egress: false,
                dns: false,
            });
            merged.ingress |= d.ingress;
            merged.egress |= d.egress;
            merged.dns |= d.dns;
        }
        if let Some(p) = pod_security {
            want.pod_security = Some(match want.pod_security {
                None => p,
                Some(q) => PodSecurityWant {
                    level: p.level.max(q.level),
                    version: newest(p.version, q.version),
                    force_enforce: p.force_enforce || q.force_enforce,
                },
            });
        }
        want.disable_default_token |= token;
    }
}

/// What the given policies want, per namespace (`preview`: as if they were in Enforce mode).
pub fn wants<'a>(
    policies: impl IntoIterator<Item = &'a ResponsibilityPolicy>,
    index: &Index,
    preview: bool,
) -> BTreeMap<String, NamespaceWant> {
    let mut wants = BTreeMap::new();
    for policy in policies {
        add_policy(&mut wants, policy, index, preview);
    }
    wants
}

/// The objects in a namespace that the Pod Security admission would reject at `level` and
/// `version`, as `Kind/namespace/name`, sorted: what an `enforce` label there waits for.
pub fn rejected(
    namespace: &str,
    level: PodSecurityLevel,
    version: Version,
    index: &Index,
) -> Vec<String> {
    index
        .workloads_in(namespace)
        .iter()
        .filter(|w| !w.failing_controls(level, version).is_empty())
        .map(|w| format!("{}/{namespace}/{}", w.kind, w.name))
        .collect()
}

/// The Pod Security labels onus wants on a namespace, given its current labels: never lower
/// a stricter level already there; `enforce` only once no existing workload would be rejected
/// (or when forced).
pub fn pod_security_labels(
    namespace: &str,
    want: PodSecurityWant,
    current: &BTreeMap<String, String>,
    index: &Index,
) -> BTreeMap<String, String> {
    let level = level_name(want.level).to_string();
    let version = want.version.to_string();
    let mut labels = BTreeMap::new();
    let mut set = |mode: &str, version_key: &str| {
        let have = current.get(mode);
        if strictness(have) > strictness(Some(&level)) {
            // Keep the stricter value (sharing it), and its version if it has one.
            labels.insert(mode.to_string(), have.cloned().unwrap_or_default());
            if let Some(v) = current.get(version_key) {
                labels.insert(version_key.to_string(), v.clone());
            }
        } else {
            labels.insert(mode.to_string(), level.clone());
            labels.insert(version_key.to_string(), version.clone());
        }
    };
    set(PSA_WARN, PSA_WARN_VERSION);
    set(PSA_AUDIT, PSA_AUDIT_VERSION);
    // Once enforcing at this level, keep it: a Deployment admitted later must not switch
    // enforcement off again.
    if want.force_enforce
        || strictness(current.get(PSA_ENFORCE)) >= strictness(Some(&level))
        || rejected(namespace, want.level, want.version, index).is_empty()
    {
        set(PSA_ENFORCE, PSA_ENFORCE_VERSION);
    }
    labels
}

/// How [`plan`] compares wants with the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanMode {
    /// All policies merged: objects must match exactly, and what no policy wants is released.
    Converge,
    /// One policy alone: what is there must cover its wants (other policies may add more).
    Preview,
}

/// The actions that bring the cluster from the index's state to `wants`, in namespace order.
pub fn plan(wants: &BTreeMap<String, NamespaceWant>, index: &Index, mode: PlanMode) -> Vec<Action> {
    let mut actions = Vec::new();
    for (ns, want) in wants {
        let policies: Vec<String> = want.policies.iter().cloned().collect();
        let np = index
            .network_policies
            .get(&Key::new(Some(ns), DEFAULT_DENY));
        if let Some(deny) = want.deny {
            let in_place = np
                .and_then(|f| f.onus.as_ref())
                .is_some_and(|o| match mode {
                    PlanMode::Converge => o.deny == deny && o.policies == policies.join(","),
                    PlanMode::Preview => {
                        o.deny.ingress >= deny.ingress && o.deny.egress >= deny.egress
                    }
                });
            let foreign = np.is_some_and(|f| f.foreign_name);
            if !in_place && !foreign {
                actions.push(Action::ApplyNetworkPolicy {
                    namespace: ns.clone(),
                    deny,
                    policies: policies.clone(),
                });
            }
        } else if np.is_some_and(|f| f.onus.is_some()) {
            actions.push(Action::DeleteNetworkPolicy {
                namespace: ns.clone(),
            });
        }

        let ns_fact = index.namespaces.get(&Key::new(None, ns));
        match (want.pod_security, ns_fact) {
            (Some(p), Some(fact)) => {
                let labels = pod_security_labels(ns, p, &fact.labels, index);
                let in_place =
                    fact.onus_labels && labels.iter().all(|(k, v)| fact.labels.get(k) == Some(v));
                if !in_place {
                    let restores = fact.onus_labels
                        && [PSA_ENFORCE, PSA_WARN, PSA_AUDIT]
                            .iter()
                            .any(|k| strictness(fact.labels.get(*k)) < strictness(labels.get(*k)));
                    actions.push(Action::ApplyPodSecurityLabels {
                        namespace: ns.clone(),
                        labels,
                        policies: policies.clone(),
                        restores,
                    });
                }
            }
            (None, Some(fact)) if fact.onus_labels => {
                actions.push(Action::ReleasePodSecurityLabels {
                    namespace: ns.clone(),
                });
            }
            _ => {}
        }

        let sa = index
            .default_service_accounts
            .get(&Key::new(Some(ns), "default"));
        if want.disable_default_token {
            // The ServiceAccount controller creates it; until then there is nothing to patch.
            if sa.is_some_and(|f| !(f.onus_managed && f.automount == Some(false))) {
                actions.push(Action::DisableDefaultToken {
                    namespace: ns.clone(),
                    policies,
                });
            }
        } else if sa.is_some_and(|f| f.onus_managed) {
            actions.push(Action::ReleaseDefaultToken {
                namespace: ns.clone(),
            });
        }
    }
    if mode == PlanMode::Converge {
        actions.extend(release_elsewhere(wants, index));
    }
    actions
}

/// Releases everything onus set in namespaces that no policy wants anything in any more.
fn release_elsewhere(wants: &BTreeMap<String, NamespaceWant>, index: &Index) -> Vec<Action> {
    // A terminating namespace takes onus's objects with it.
    let wanted = |ns: &str| {
        wants.contains_key(ns)
            || index
                .namespaces
                .get(&Key::new(None, ns))
                .is_some_and(|f| f.terminating)
    };
    let mut actions = Vec::new();
    for (key, np) in index.network_policies.iter() {
        if key.name == DEFAULT_DENY && np.onus.is_some() && !wanted(&key.namespace) {
            actions.push(Action::DeleteNetworkPolicy {
                namespace: key.namespace.clone(),
            });
        }
    }
    for (key, ns) in index.namespaces.iter() {
        if ns.onus_labels && !wanted(&key.name) {
            actions.push(Action::ReleasePodSecurityLabels {
                namespace: key.name.clone(),
            });
        }
    }
    for (key, sa) in index.default_service_accounts.iter() {
        if sa.onus_managed && !wanted(&key.namespace) {
            actions.push(Action::ReleaseDefaultToken {
                namespace: key.namespace.clone(),
            });
        }
    }
    actions.sort_by(|a, b| a.namespace().cmp(b.namespace()));
    actions
}

/// Remediation summary of one policy for its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preview {
    pub network_policies: u32,
    pub pod_security_labels: u32,
    pub service_accounts: u32,
    /// Namespaces where `enforce` waits, with the number of workloads it would reject.
    pub enforce_waiting: Vec<(String, usize)>,
}

impl Preview {
    /// Whether nothing is left to do.
    pub fn is_done(&self) -> bool {
        self.network_policies == 0
            && self.pod_security_labels == 0
            && self.service_accounts == 0
            && self.enforce_waiting.is_empty()
    }
}

/// What Enforce mode still has to change for this policy alone (for an Audit policy: what
/// switching to Enforce would change).
pub fn preview(policy: &ResponsibilityPolicy, index: &Index) -> Preview {
    let preview_mode = policy.spec.mode == Mode::Audit;
    let wants = wants([policy], index, preview_mode);
    let mut out = Preview::default();
    for action in plan(&wants, index, PlanMode::Preview) {
        match action {
            Action::ApplyNetworkPolicy { .. } => out.network_policies += 1,
            Action::ApplyPodSecurityLabels { .. } => out.pod_security_labels += 1,
            Action::DisableDefaultToken { .. } => out.service_accounts += 1,
            _ => {}
        }
    }
    for (ns, want) in &wants {
        if let Some(p) = want.pod_security.filter(|p| !p.force_enforce) {
            let rejected = rejected(ns, p.level, p.version, index).len();
            if rejected > 0 {
                out.enforce_waiting.push((ns.clone(), rejected));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
