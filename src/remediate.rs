//! Enforce mode, decided: which safe remediations the policies want in which namespaces, and
//! which actions bring the cluster there. Pure: policies and index in, actions out.
//!
//! Overlapping policies: all Enforce policies are merged per namespace and the strictest wins
//! (union of default-deny directions, DNS open if any policy opens it, the highest Pod Security
//! level and newest version, token off if any asks). Each object has one owner, onus, and an
//! annotation lists the policies it serves. Pod Security labels follow [`labels`]: never lowered
//! as a side effect, and restored rather than removed when onus lets go.
//!
//! A policy whose current spec is invalid keeps the remediations of its last valid spec (kept in
//! its status): an invalid edit never releases anything; only deleting the policy or switching
//! it to Audit does.
//!
//! The default-deny gate ([`deny_gate`]): no `onus-default-deny` is created or tightened in a
//! namespace that backs an admission webhook, a CRD conversion webhook or an aggregated
//! APIService (unless every policy wanting one there allows it), in onus's own namespace, or
//! anywhere before those backends are known. One onus applied before the namespace became a
//! backend stays (removing a protection is not onus's call; status warns), loosened only as
//! the policies loosen.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use crate::{
    catalog::{Fix, control_by_id},
    crd::{
        EnforcedSpec, Mode, Owner, PodSecurityLevel, ResponsibilityPolicy, ResponsibilityPolicySpec,
    },
    evaluate::{
        PSA_AUDIT, PSA_ENFORCE, PSA_WARN, owner_of, pod_security_version, selected_namespaces,
        strictness,
    },
    facts::{DEFAULT_DENY, DenySpec},
    index::{Index, Key},
    podsecurity::Version,
    validate::validate,
};

pub mod labels;
mod planner;
mod previews;

pub use labels::{LabelPlan, Waiting, plan_labels};
pub use planner::Planner;
pub use previews::Previews;

/// Pod Security labelling wanted for one namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodSecurityWant {
    /// The strictest level asked for.
    pub level: PodSecurityLevel,
    /// The newest version asked for.
    pub version: Version,
    /// The strictest level a policy with `forceEnforce` asks for: forced regardless of the
    /// workloads it would reject (a policy forces only its own level).
    pub forced: Option<PodSecurityLevel>,
}

/// What the policies want in one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceWant {
    /// Policies that asked for something here, sorted.
    pub policies: BTreeSet<String>,
    pub deny: Option<DenySpec>,
    pub pod_security: Option<PodSecurityWant>,
    pub disable_default_token: bool,
    /// Every policy that wants a default-deny here lists the namespace in
    /// `allowDefaultDenyInFrontOfWebhooks`: the deny may go in front of its webhooks.
    pub deny_allowed: bool,
    /// A policy governing the namespace has an invalid spec and holds its last valid one:
    /// nothing here is weakened (what a later valid generation applied may not be recorded
    /// yet), only strengthened.
    pub hold: bool,
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
        /// Values onus replaced, kept on the namespace to be restored on release.
        previous: BTreeMap<String, String>,
        policies: Vec<String>,
        /// Someone weakened a label onus had set.
        restores: bool,
    },
    /// Give up onus's Pod Security labels, putting back the values it replaced.
    ReleasePodSecurityLabels {
        namespace: String,
        restore: BTreeMap<String, String>,
    },
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
            | Action::ReleasePodSecurityLabels { namespace, .. }
            | Action::DisableDefaultToken { namespace, .. }
            | Action::ReleaseDefaultToken { namespace } => namespace,
        }
    }
}

/// Which families a policy remediates: Enforce policies per their family modes; with
/// `preview`, every family not explicitly in Audit (what switching to Enforce would do).
fn enforcing(
    spec: &ResponsibilityPolicySpec,
    family_mode: Option<Mode>,
    control: &str,
    preview: bool,
) -> bool {
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

/// The spec whose remediations a policy holds: the current one when it is valid, otherwise
/// the last valid one in Enforce mode recorded in its status (none: nothing to hold).
pub fn enforced_spec(policy: &ResponsibilityPolicy) -> Option<&ResponsibilityPolicySpec> {
    if validate(&policy.spec).is_ok() {
        Some(&policy.spec)
    } else {
        held_spec(policy)
    }
}

/// The last valid Enforce spec recorded in a policy's status.
fn held_spec(policy: &ResponsibilityPolicy) -> Option<&ResponsibilityPolicySpec> {
    Some(&policy.status.as_ref()?.enforced_spec.as_ref()?.spec)
}

/// What the status records for [`enforced_spec`] to find after an invalid edit or a restart.
pub fn spec_to_record(policy: &ResponsibilityPolicy) -> Option<EnforcedSpec> {
    if validate(&policy.spec).is_err() {
        return policy.status.as_ref()?.enforced_spec.clone();
    }
    (policy.spec.mode == Mode::Enforce).then(|| EnforcedSpec {
        generation: policy.metadata.generation.unwrap_or_default(),
        spec: policy.spec.clone(),
    })
}

/// Adds one policy's wants to `wants`.
fn add_policy(
    wants: &mut BTreeMap<String, NamespaceWant>,
    name: &str,
    spec: &ResponsibilityPolicySpec,
    index: &Index,
    preview: bool,
    hold: bool,
) {
    let c = &spec.controls;
    // Each direction as the policy lists it (NET-01 ingress, NET-02 egress): none listed, no
    // default-deny.
    let directions = &c.network.default_deny;
    let deny = (c.network.enabled && enforcing(spec, c.network.mode, "NET-01", preview))
        .then(|| {
            let egress = directions.contains(&crate::crd::Direction::Egress);
            DenySpec {
                ingress: directions.contains(&crate::crd::Direction::Ingress),
                egress,
                // Without egress deny there is nothing to allow: the cluster reads onus's
                // NetworkPolicy back without an allowance, and the two must compare equal.
                dns: c.network.allow_dns && egress,
            }
        })
        .filter(|d| d.ingress || d.egress);
    let pod_security = (c.pod_security.enabled
        && enforcing(spec, c.pod_security.mode, "WKL-01", preview))
    .then(|| PodSecurityWant {
        level: c.pod_security.level,
        version: pod_security_version(spec),
        forced: c.pod_security.force_enforce.then_some(c.pod_security.level),
    });
    let token = c.service_accounts.enabled
        && !c.service_accounts.automount_default_token
        && enforcing(spec, c.service_accounts.mode, "IAM-09", preview);
    if deny.is_none() && pod_security.is_none() && !token {
        return;
    }
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
        let want = wants.entry(ns.clone()).or_default();
        want.policies.insert(name.to_string());
        if let Some(d) = deny {
            // Allowed only if every policy that wants a default-deny here allows it: the one
            // object carries all their directions.
            let allowed = c
                .network
                .allow_default_deny_in_front_of_webhooks
                .contains(&ns);
            want.deny_allowed = allowed && (want.deny.is_none() || want.deny_allowed);
            let merged = want.deny.get_or_insert(DenySpec::default());
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
                    forced: p.forced.max(q.forced),
                },
            });
        }
        want.disable_default_token |= token;
        want.hold |= hold;
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
        // A policy being deleted wants nothing: what it held is released.
        if policy.metadata.deletion_timestamp.is_some() {
            continue;
        }
        // An invalid spec holds the last valid one (and nothing in its namespaces weakens).
        let valid = preview || validate(&policy.spec).is_ok();
        let spec = if valid {
            Some(&policy.spec)
        } else {
            held_spec(policy)
        };
        if let Some(spec) = spec {
            let name = policy.metadata.name.as_deref().unwrap_or_default();
            add_policy(&mut wants, name, spec, index, preview, !valid);
        }
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
    let version = index.admission_version(version);
    // Templates, and the running Pods where they fail more than their template: a Pod that
    // fails only what its template fails is already waited for through the template.
    let templates = index
        .workloads_in(namespace)
        .into_iter()
        .filter(|w| !w.failing_controls(level, version).is_empty())
        .map(|w| format!("{}/{namespace}/{}", w.kind, w.name));
    let pods = index
        .pods_beyond_templates(namespace, level, version)
        .into_iter()
        .map(|(pod, _)| format!("Pod/{namespace}/{pod}"));
    let mut rejected: Vec<String> = templates.chain(pods).collect();
    rejected.sort();
    rejected
}

/// Why `onus-default-deny` may not be applied or tightened in `namespace` now (empty: it
/// may): it is onus's own namespace, or it backs a webhook or APIService the policies do not
/// allow a deny in front of, or what it backs is not known yet (fail closed).
pub fn deny_gate(namespace: &str, allowed: bool, index: &Index) -> Vec<String> {
    if index.own_namespace.as_deref() == Some(namespace) {
        return vec!["onus runs there".into()];
    }
    if allowed {
        return Vec::new();
    }
    if !index.backends.synced() {
        return vec!["webhooks and APIServices not listed yet".into()];
    }
    // An object onus could not read may call into any namespace: hold everywhere.
    let unreadable = index.backends.unreadable();
    if !unreadable.is_empty() {
        return unreadable
            .into_iter()
            .map(|b| format!("{b} could not be read (where it calls is unknown)"))
            .collect();
    }
    index
        .backs(namespace)
        .iter()
        .map(|b| format!("backs {b}"))
        .collect()
}

/// A namespace where the policies want a default-deny that the gate ([`deny_gate`]) holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenyWaiting {
    pub namespace: String,
    /// What holds it, e.g. `backs webhook cert-manager-webhook`.
    pub reasons: Vec<String>,
    /// Part of the wanted deny is not in place: it waits.
    pub waits: bool,
    /// An `onus-default-deny` that onus applied before stands in front of the backends (kept:
    /// onus does not remove a protection by itself).
    pub kept: bool,
}

/// Whether the gate holds the default-deny `want` asks for in `namespace`, and how.
pub fn deny_waiting(namespace: &str, want: &NamespaceWant, index: &Index) -> Option<DenyWaiting> {
    let wanted = want.deny?;
    let reasons = deny_gate(namespace, want.deny_allowed, index);
    if reasons.is_empty() {
        return None;
    }
    let np = index
        .network_policies
        .get(&Key::new(Some(namespace), DEFAULT_DENY));
    let covered =
        np.is_some_and(|f| f.denies_ingress >= wanted.ingress && f.denies_egress >= wanted.egress);
    // Only a real backend makes a kept deny worth a warning (not a watch still listing).
    let kept = np.is_some_and(|f| f.onus.is_some())
        && (index.own_namespace.as_deref() == Some(namespace)
            || !index.backs(namespace).is_empty());
    Some(DenyWaiting {
        namespace: namespace.to_string(),
        reasons,
        waits: !covered,
        kept,
    })
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
        plan_namespace(ns, want, index, mode, &mut actions);
    }
    if mode == PlanMode::Converge {
        actions.extend(release_elsewhere(wants, index));
    }
    actions
}

/// The actions [`plan`] takes in one wanted namespace (they depend on that namespace's facts
/// and on the backends of admission webhooks and APIServices only).
fn plan_namespace(
    ns: &str,
    want: &NamespaceWant,
    index: &Index,
    mode: PlanMode,
    actions: &mut Vec<Action>,
) {
    {
        let policies: Vec<String> = want.policies.iter().cloned().collect();
        let np = index
            .network_policies
            .get(&Key::new(Some(ns), DEFAULT_DENY));
        let held_deny = np.and_then(|f| f.onus.as_ref()).filter(|_| want.hold);
        let deny = match (want.deny, held_deny) {
            (Some(d), Some(h)) => Some(DenySpec {
                ingress: d.ingress || h.deny.ingress,
                egress: d.egress || h.deny.egress,
                dns: if d.egress { d.dns } else { h.deny.dns },
            }),
            (None, Some(h)) => Some(h.deny),
            (d, None) => d,
        };
        let gate = deny_gate(ns, want.deny_allowed, index);
        let onus_deny = np.and_then(|f| f.onus.as_ref());
        let deny = match (deny, onus_deny) {
            // Held: nothing new goes in front of a backend. What onus applied before stays
            // (removing a protection is not onus's call; status warns), loosened as the
            // policies loosen, never tightened.
            (Some(d), Some(o)) if !gate.is_empty() && mode == PlanMode::Converge => {
                Some(d.within(o.deny)).filter(|d| d.ingress || d.egress)
            }
            (Some(_), _) if !gate.is_empty() => None,
            (d, _) => d,
        };
        let held_here = !gate.is_empty() && want.deny.is_some();
        if let Some(deny) = deny {
            let in_place = match mode {
                PlanMode::Converge => np
                    .and_then(|f| f.onus.as_ref())
                    .is_some_and(|o| o.deny == deny && o.policies == policies.join(",")),
                // What the object does counts, whoever made it: a foreign one that denies
                // less is still to do, never reported as in place.
                PlanMode::Preview => np.is_some_and(|f| {
                    f.denies_ingress >= deny.ingress && f.denies_egress >= deny.egress
                }),
            };
            // onus never takes over a foreign object with its name; the preview keeps counting
            // it as pending so the status does not claim a default-deny that is not there.
            let foreign = np.is_some_and(|f| f.foreign_name) && mode == PlanMode::Converge;
            if !in_place && !foreign {
                actions.push(Action::ApplyNetworkPolicy {
                    namespace: ns.to_string(),
                    deny,
                    policies: policies.clone(),
                });
            }
        } else if np.is_some_and(|f| f.onus.is_some()) && (mode == PlanMode::Converge || !held_here)
        {
            actions.push(Action::DeleteNetworkPolicy {
                namespace: ns.to_string(),
            });
        }

        let ns_fact = index.namespaces.get(&Key::new(None, ns));
        match (want.pod_security, ns_fact) {
            (Some(p), Some(fact)) => {
                let LabelPlan {
                    mut labels,
                    previous,
                    ..
                } = plan_labels(ns, p, fact, index);
                if want.hold {
                    hold_labels(&mut labels, fact);
                }
                let in_place = match mode {
                    PlanMode::Converge => {
                        (fact.onus_labels || labels.is_empty())
                            && previous == fact.previous
                            && labels.iter().all(|(k, v)| fact.labels.get(k) == Some(v))
                    }
                    // Other policies may have asked for more: at least as strict will do.
                    PlanMode::Preview => labels.iter().all(|(k, v)| {
                        k.ends_with("-version")
                            || strictness(fact.labels.get(k)) >= strictness(Some(v))
                    }),
                };
                if !in_place {
                    let restores = fact.onus_labels
                        && [PSA_ENFORCE, PSA_WARN, PSA_AUDIT]
                            .iter()
                            .any(|k| strictness(fact.labels.get(*k)) < strictness(labels.get(*k)));
                    actions.push(Action::ApplyPodSecurityLabels {
                        namespace: ns.to_string(),
                        labels,
                        previous,
                        policies: policies.clone(),
                        restores,
                    });
                }
            }
            (None, Some(fact)) if fact.onus_labels && !want.hold => {
                actions.push(Action::ReleasePodSecurityLabels {
                    namespace: ns.to_string(),
                    restore: labels::restore(fact),
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
                    namespace: ns.to_string(),
                    policies,
                });
            }
        } else if sa.is_some_and(|f| f.onus_managed) && !want.hold {
            actions.push(Action::ReleaseDefaultToken {
                namespace: ns.to_string(),
            });
        }
    }
}

/// What [`release_elsewhere`] releases in one namespace no policy wants anything in (not
/// terminating), in the same order.
fn release_in(ns: &str, index: &Index) -> Vec<Action> {
    let mut actions = Vec::new();
    if index
        .namespaces
        .get(&Key::new(None, ns))
        .is_some_and(|f| f.terminating)
    {
        return actions;
    }
    for (key, np) in index.network_policies.in_namespace(ns) {
        if key.name == DEFAULT_DENY && np.onus.is_some() {
            actions.push(Action::DeleteNetworkPolicy {
                namespace: key.namespace.clone(),
            });
        }
    }
    if let Some(fact) = index.namespaces.get(&Key::new(None, ns))
        && fact.onus_labels
    {
        actions.push(Action::ReleasePodSecurityLabels {
            namespace: ns.to_string(),
            restore: labels::restore(fact),
        });
    }
    for (key, sa) in index.default_service_accounts.in_namespace(ns) {
        if sa.onus_managed {
            actions.push(Action::ReleaseDefaultToken {
                namespace: key.namespace.clone(),
            });
        }
    }
    actions
}

/// Keeps every Pod Security label onus owns at least as strict as it is (with its version):
/// a held namespace is never weakened.
fn hold_labels(labels: &mut BTreeMap<String, String>, fact: &crate::facts::NamespaceFact) {
    for (mode, version) in labels::MODES {
        let Some(current) = fact
            .labels
            .get(mode)
            .filter(|_| fact.onus_owned.contains(mode))
        else {
            continue;
        };
        if strictness(labels.get(mode)) < strictness(Some(current)) {
            labels.insert(mode.to_string(), current.clone());
            match fact.labels.get(version) {
                Some(v) => labels.insert(version.to_string(), v.clone()),
                None => labels.remove(version),
            };
        }
    }
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
                restore: labels::restore(ns),
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

/// A namespace whose `enforce` label waits for a stricter level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceWaiting {
    pub namespace: String,
    /// The `enforce` value in place meanwhile.
    pub enforced: Option<String>,
    pub waiting: Waiting,
}

/// Remediation summary of one policy for its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preview {
    pub network_policies: u32,
    pub pod_security_labels: u32,
    pub service_accounts: u32,
    /// Namespaces where the wanted `enforce` level waits for existing workloads. Shared: the
    /// previews of every policy that wants the same there hold one copy (its object list can be
    /// long, and many policies govern the same namespaces).
    pub enforce_waiting: Vec<Arc<NamespaceWaiting>>,
    /// Namespaces where the default-deny is held by the gate ([`deny_gate`]).
    pub deny_waiting: Vec<DenyWaiting>,
}

impl Preview {
    /// Whether nothing is left to do.
    pub fn is_done(&self) -> bool {
        self.network_policies == 0
            && self.pod_security_labels == 0
            && self.service_accounts == 0
            && self.enforce_waiting.is_empty()
            && !self.deny_waiting.iter().any(|w| w.waits)
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
        out.deny_waiting.extend(deny_waiting(ns, want, index));
        let fact = index.namespaces.get(&Key::new(None, ns));
        if let (Some(p), Some(fact)) = (want.pod_security, fact) {
            let plan = plan_labels(ns, p, fact, index);
            if let Some(waiting) = plan.waiting {
                out.enforce_waiting.push(Arc::new(NamespaceWaiting {
                    namespace: ns.clone(),
                    enforced: plan.enforced,
                    waiting,
                }));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
