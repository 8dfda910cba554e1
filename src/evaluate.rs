//! Per-policy aggregation: which namespaces a policy governs, who owns each control, which
//! objects violate it, which violations are excepted. Pure: index and clock in, outcome out.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::{
    catalog::{CATALOG, Control, Family},
    crd::{
        ControlResult, Direction, Exception, Owner, OwnerSource, PodSecurityLevel,
        ResponsibilityPolicySpec, SubjectRef,
    },
    index::Index,
    podsecurity::Version,
    rbac,
};

/// One object that breaks one control. Cheap to clone (shared): the same violation is found
/// once per namespace and parameter set and appears in the evaluation of every policy.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Violation(Arc<ViolationData>);

/// What a [`Violation`] says.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ViolationData {
    pub namespace: Option<String>,
    pub kind: String,
    pub name: String,
    /// How the offender is shown in status, e.g. `Deployment/shop/web`.
    pub example: String,
}

impl std::ops::Deref for Violation {
    type Target = ViolationData;
    fn deref(&self) -> &ViolationData {
        &self.0
    }
}

impl From<ViolationData> for Violation {
    fn from(data: ViolationData) -> Self {
        Violation(Arc::new(data))
    }
}

impl Violation {
    fn namespaced(kind: impl Into<String>, namespace: &str, name: &str) -> Self {
        let kind = kind.into();
        ViolationData {
            example: format!("{kind}/{namespace}/{name}"),
            namespace: Some(namespace.to_string()),
            kind,
            name: name.to_string(),
        }
        .into()
    }

    fn namespace(name: &str) -> Self {
        ViolationData {
            namespace: Some(name.to_string()),
            kind: "Namespace".into(),
            name: name.to_string(),
            example: format!("Namespace/{name}"),
        }
        .into()
    }
}

/// One namespace's violations, shared: the verdicts of the namespace under each parameter set
/// (level, version) name mostly the same objects, and each is kept once.
#[derive(Debug, Default)]
pub(crate) struct Interner(std::collections::HashSet<Violation>);

impl Interner {
    fn namespaced(&mut self, kind: impl Into<String>, namespace: &str, name: &str) -> Violation {
        self.intern(Violation::namespaced(kind, namespace, name))
    }

    fn intern(&mut self, v: Violation) -> Violation {
        match self.0.get(&v) {
            Some(shared) => shared.clone(),
            None => {
                self.0.insert(v.clone());
                v
            }
        }
    }
}

/// The outcome of one control for one policy.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub control: &'static Control,
    pub owner: Owner,
    pub owner_source: OwnerSource,
    pub result: ControlResult,
    /// Violations that count (not excepted), sorted.
    pub violations: Vec<Violation>,
    pub excepted: u64,
}

/// A customer-owned control the policy hands away or switches off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub control: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// The result of evaluating one policy.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub namespaces: usize,
    pub outcomes: Vec<Outcome>,
    pub gaps: Vec<Gap>,
    /// Exceptions (by index in spec) whose expiry has passed.
    pub expired_exceptions: Vec<usize>,
    /// When the next exception expires: the policy must be evaluated again then.
    pub next_expiry: Option<Timestamp>,
}

/// Whether `labels` satisfy a LabelSelector (matchLabels and matchExpressions).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            // The CRD schema refuses other operators; match nothing rather than everything.
            _ => false,
        }
    });
    labels_match && expressions_match
}

/// The namespaces a policy governs, sorted.
pub fn selected_namespaces(spec: &ResponsibilityPolicySpec, index: &Index) -> BTreeSet<String> {
    index
        .namespaces
        .iter()
        .filter(|(key, ns)| governs(spec, &key.name, &ns.labels))
        .map(|(key, _)| key.name.clone())
        .collect()
}

/// Whether a policy governs the namespace `name` with `labels`.
pub fn governs(
    spec: &ResponsibilityPolicySpec,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let system = crate::crd::SYSTEM_NAMESPACES.contains(&name)
        && !spec.include_system_namespaces.iter().any(|n| n == name);
    !system
        && !spec.excluded_namespaces.iter().any(|n| n == name)
        && spec
            .namespace_selector
            .as_ref()
            .is_none_or(|s| selector_matches(s, labels))
}

fn family_enabled(spec: &ResponsibilityPolicySpec, family: Family) -> bool {
    let c = &spec.controls;
    match family {
        Family::Rbac => c.rbac.enabled,
        Family::ServiceAccounts => c.service_accounts.enabled,
        Family::PodSecurity => c.pod_security.enabled,
        Family::Network => c.network.enabled,
        Family::Data => c.data.enabled,
        Family::Audit => c.audit.enabled,
    }
}

/// Who owns a control under this policy, and whether that came from the model or an override.
pub(crate) fn owner_of(spec: &ResponsibilityPolicySpec, control: &Control) -> (Owner, OwnerSource) {
    match spec
        .responsibilities
        .iter()
        .find(|r| r.control == control.id)
    {
        Some(r) => (r.owner, OwnerSource::Override),
        None => (
            control.default_owner(spec.service_model),
            OwnerSource::ServiceModel,
        ),
    }
}

fn exception_applies(exception: &Exception, control: &str, v: &Violation) -> bool {
    exception.controls.iter().any(|c| c == control)
        && (exception.namespaces.is_empty()
            || v.namespace
                .as_ref()
                .is_some_and(|ns| exception.namespaces.contains(ns)))
        && (exception.resources.is_empty()
            || exception
                .resources
                .iter()
                .any(|r| r.kind.eq_ignore_ascii_case(&v.kind) && r.name == v.name))
}

/// Evaluates every control of the catalog for one policy at time `now`, from scratch (the
/// reference the cached [`Evaluator`] is tested against).
pub fn evaluate(spec: &ResponsibilityPolicySpec, index: &Index, now: Timestamp) -> Evaluation {
    let namespaces = selected_namespaces(spec, index);
    let params = Params::of(spec, index);
    let rbac = rbac_verdicts(index, &spec.controls.rbac.cluster_admin_subjects);
    let verdicts: Vec<_> = namespaces
        .iter()
        .map(|ns| {
            Arc::new(namespace_verdicts(
                index,
                ns,
                params,
                &mut Interner::default(),
            ))
        })
        .collect();
    let parts = Parts {
        namespaces: &namespaces,
        verdicts: &verdicts,
        rbac: &rbac,
        cni_observed: cni_observed(index),
    };
    assemble(spec, index, &parts, now)
}

/// The parameters of a policy that its per-namespace verdicts depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Params {
    pub level: PodSecurityLevel,
    /// The version the server's admission judges at (see [`Index::admission_version`]).
    pub version: Version,
}

impl Params {
    pub fn of(spec: &ResponsibilityPolicySpec, index: &Index) -> Self {
        Params {
            level: spec.controls.pod_security.level,
            version: index.admission_version(pod_security_version(spec)),
        }
    }
}

/// What one policy's evaluation is made of: the verdicts of the namespaces it governs (in
/// the order of `namespaces`), the RBAC findings under its allow-list, and whether a
/// NetworkPolicy-capable CNI is seen.
pub(crate) struct Parts<'a> {
    pub namespaces: &'a BTreeSet<String>,
    pub verdicts: &'a [Arc<NamespaceVerdicts>],
    pub rbac: &'a RbacVerdicts,
    pub cni_observed: bool,
}

/// The part of a policy's evaluation that depends on its namespaces and `now`.
pub(crate) fn assemble(
    spec: &ResponsibilityPolicySpec,
    index: &Index,
    parts: &Parts<'_>,
    now: Timestamp,
) -> Evaluation {
    assemble_with_excepted(spec, index, parts, now).0
}

/// [`assemble`], and per outcome (in the same order) the violations exceptions cover, sorted.
pub(crate) fn assemble_with_excepted(
    spec: &ResponsibilityPolicySpec,
    index: &Index,
    parts: &Parts<'_>,
    now: Timestamp,
) -> (Evaluation, Vec<Vec<Violation>>) {
    let (active, expired_exceptions, next_expiry) = split_exceptions(&spec.exceptions, now);
    let mut found = find_violations(spec, index, parts);

    let mut outcomes = Vec::new();
    let mut all_excepted = Vec::new();
    let mut gaps = Vec::new();
    for control in CATALOG {
        let (owner, owner_source) = owner_of(spec, control);
        let default_owner = control.default_owner(spec.service_model);
        let enabled = family_enabled(spec, control.family);
        if default_owner == Owner::Customer && owner != Owner::Customer {
            gaps.push(Gap {
                control: control.id,
                reason: "OverDelegated",
                message: format!(
                    "{} assigned to {owner:?}, but under {:?} it is the customer's",
                    control.id, spec.service_model
                ),
            });
        } else if control.id == "NET-01"
            && default_owner != Owner::Provider
            && enabled
            && !requested(spec, control)
        {
            // Ingress left out of defaultDeny switches NET-01 off as surely as disabling it.
            gaps.push(Gap {
                control: control.id,
                reason: "ControlDisabled",
                message: format!(
                    "{} is not checked (spec.controls.network.defaultDeny lacks Ingress), but under {:?} the customer owns it",
                    control.id, spec.service_model
                ),
            });
        } else if default_owner != Owner::Provider && !enabled {
            gaps.push(Gap {
                control: control.id,
                reason: "ControlDisabled",
                message: format!(
                    "{} is disabled (spec.controls.{}.enabled=false), but under {:?} the customer owns it",
                    control.id,
                    control.family.field(),
                    spec.service_model
                ),
            });
        }

        let all = found.remove(control.id).unwrap_or_default();
        let (excepted, mut violations) = split_excepted(&active, control.id, all);
        // Held as long as the evaluation is cached, once per policy: without the slack the
        // list grew with.
        violations.shrink_to_fit();
        let result = result_of(
            spec,
            control,
            owner,
            parts.cni_observed,
            &violations,
            excepted.len(),
        );
        outcomes.push(Outcome {
            control,
            owner,
            owner_source,
            result,
            violations,
            excepted: excepted.len() as u64,
        });
        all_excepted.push(excepted);
    }
    let evaluation = Evaluation {
        namespaces: parts.namespaces.len(),
        outcomes,
        gaps,
        expired_exceptions,
        next_expiry,
    };
    (evaluation, all_excepted)
}

/// Splits one control's violations into those an active exception covers and those that
/// count, each in the order given.
pub(crate) fn split_excepted(
    active: &[&Exception],
    control: &str,
    all: Vec<Violation>,
) -> (Vec<Violation>, Vec<Violation>) {
    let applicable: Vec<&&Exception> = active
        .iter()
        .filter(|e| e.controls.iter().any(|c| c == control))
        .collect();
    if applicable.is_empty() {
        (Vec::new(), all)
    } else {
        all.into_iter()
            .partition(|v| applicable.iter().any(|e| exception_applies(e, control, v)))
    }
}

/// The result of one control for one policy, from its counting and excepted violations.
pub(crate) fn result_of(
    spec: &ResponsibilityPolicySpec,
    control: &Control,
    owner: Owner,
    cni_observed: bool,
    violations: &[Violation],
    excepted: usize,
) -> ControlResult {
    if !family_enabled(spec, control.family) || !requested(spec, control) {
        ControlResult::Disabled
    } else if owner == Owner::Provider {
        ControlResult::ProviderOwned
    } else if !control.observable || (control.id == "NET-04" && !cni_observed) {
        ControlResult::NotObservable
    } else if !violations.is_empty() {
        ControlResult::Fail
    } else if excepted > 0 {
        ControlResult::Excepted
    } else {
        ControlResult::Pass
    }
}

/// NET-01 and NET-02 are checked for the directions the policy lists in `defaultDeny`.
fn requested(spec: &ResponsibilityPolicySpec, control: &Control) -> bool {
    let direction = match control.id {
        "NET-01" => Direction::Ingress,
        "NET-02" => Direction::Egress,
        _ => return true,
    };
    spec.controls.network.default_deny.contains(&direction)
}

/// Daemon sets of CNIs known to enforce NetworkPolicy (a heuristic, hence informational).
pub(crate) const POLICY_CAPABLE_CNIS: &[&str] = &[
    "calico-node",
    "cilium",
    "antrea-agent",
    "kube-router",
    "weave-net",
    "canal",
    "aws-network-policy-agent",
];

/// NET-04 is observable only when a known network-policy-capable CNI is seen.
pub(crate) fn cni_observed(index: &Index) -> bool {
    index
        .workloads
        .get(&crate::facts::WorkloadKind::DaemonSet)
        .is_some_and(|daemon_sets| {
            daemon_sets
                .iter()
                .any(|(k, _)| POLICY_CAPABLE_CNIS.contains(&k.name.as_str()))
        })
}

pub(crate) fn split_exceptions(
    exceptions: &[Exception],
    now: Timestamp,
) -> (Vec<&Exception>, Vec<usize>, Option<Timestamp>) {
    let mut active = Vec::new();
    let mut expired = Vec::new();
    let mut next = None::<Timestamp>;
    for (i, e) in exceptions.iter().enumerate() {
        match &e.expires {
            Some(t) if t.0 <= now => expired.push(i),
            Some(t) => {
                next = Some(next.map_or(t.0, |n| n.min(t.0)));
                active.push(e);
            }
            None => active.push(e),
        }
    }
    (active, expired, next)
}

/// RBAC findings (IAM-01..IAM-08) under one allow-list, as violations per control, sorted.
pub(crate) type RbacVerdicts = Vec<(&'static str, Violation)>;

/// The RBAC findings of the whole cluster under an allow-list.
pub(crate) fn rbac_verdicts(index: &Index, allowed: &[SubjectRef]) -> RbacVerdicts {
    let mut out: RbacVerdicts = rbac::evaluate(&index.rbac(), allowed)
        .into_iter()
        .map(|finding| {
            let (kind, name) = binding_kind_and_name(&finding.binding);
            let v = ViolationData {
                example: finding.example(),
                namespace: finding.namespace,
                kind,
                name,
            };
            (finding.control, v.into())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What one namespace contributes to a policy's violations, for one [`Params`]. Everything but
/// the Namespace object's labels (WKL-01, AUD-01: read per policy) and the policy's automount
/// setting (IAM-09) is decided here.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NamespaceVerdicts {
    /// `Namespace/<name>`, the offender of the namespace-wide controls.
    pub namespace: Violation,
    /// The `default` ServiceAccount, when it mounts its token (IAM-09 unless the policy allows).
    pub automounting_default: Option<Violation>,
    /// Per control, sorted and without duplicates.
    pub found: BTreeMap<&'static str, Vec<Violation>>,
}

/// The verdicts of one namespace's objects (NET-01..NET-03, NET-05, WKL controls of workloads
/// and of owned Pods beyond their templates, DAT-01, WKL-10, IAM-09's ServiceAccount).
/// Offenders are taken from `interner`: the namespace's verdicts under other parameters share
/// them.
pub(crate) fn namespace_verdicts(
    index: &Index,
    ns: &str,
    params: Params,
    interner: &mut Interner,
) -> NamespaceVerdicts {
    let mut found: BTreeMap<&'static str, Vec<Violation>> = BTreeMap::new();
    let mut add = |control: &'static str, v: Violation| found.entry(control).or_default().push(v);
    let namespace = interner.intern(Violation::namespace(ns));

    let policies: Vec<_> = index.network_policies.in_namespace(ns).collect();
    if !policies.iter().any(|(_, np)| np.denies_ingress) {
        add("NET-01", namespace.clone());
    }
    if !policies.iter().any(|(_, np)| np.denies_egress) {
        add("NET-02", namespace.clone());
    }
    for (k, np) in &policies {
        if !np.allows_all.is_empty() {
            add("NET-03", interner.namespaced("NetworkPolicy", ns, &k.name));
        }
    }
    let sa_key = crate::index::Key::new(Some(ns), "default");
    let automount = index
        .default_service_accounts
        .get(&sa_key)
        .and_then(|f| f.automount);
    let automounting_default =
        (automount != Some(false)).then(|| interner.namespaced("ServiceAccount", ns, "default"));

    // Workloads are judged as the server's admission would judge them.
    let Params { level, version } = params;
    for (k, _) in index.external_ips.in_namespace(ns) {
        add("NET-05", interner.namespaced("Service", ns, &k.name));
    }
    for w in index.workloads_in(ns) {
        let failing = w.failing_controls(level, version);
        let secret_env = !w.secret_env.is_empty();
        let in_default = ns == "default";
        if failing.is_empty() && !secret_env && !in_default {
            continue;
        }
        let offender = interner.namespaced(w.kind.to_string(), ns, &w.name);
        for control in failing {
            add(control, offender.clone());
        }
        if secret_env {
            add("DAT-01", offender.clone());
        }
        if in_default {
            add("WKL-10", offender);
        }
    }
    // Owned Pods count through their controller, except for what only the running Pod
    // fails (a webhook's mutation, an ephemeral container): that is the Pod's own.
    for (pod, controls) in index.pods_beyond_templates(ns, level, version) {
        for control in controls {
            add(control, interner.namespaced("Pod", ns, pod));
        }
    }
    for pod in index.pods_with_secret_env_beyond_templates(ns) {
        add("DAT-01", interner.namespaced("Pod", ns, pod));
    }
    for list in found.values_mut() {
        list.sort();
        list.dedup();
    }
    NamespaceVerdicts {
        namespace,
        automounting_default,
        found,
    }
}

/// One policy's violations per control: the RBAC findings in its scope and the verdicts of
/// its namespaces, merged.
fn find_violations(
    spec: &ResponsibilityPolicySpec,
    index: &Index,
    parts: &Parts<'_>,
) -> BTreeMap<&'static str, Vec<Violation>> {
    let mut found: BTreeMap<&'static str, Vec<Violation>> = BTreeMap::new();
    for (control, v) in parts.rbac {
        if v.namespace
            .as_ref()
            .is_none_or(|ns| parts.namespaces.contains(ns))
        {
            found.entry(control).or_default().push(v.clone());
        }
    }

    for (ns, verdicts) in parts.namespaces.iter().zip(parts.verdicts) {
        add_namespace(&mut found, spec, index, ns, verdicts);
    }
    // Namespaces are merged in order, and each one's lists are sorted: the merged lists are
    // sorted already unless two sources meet in one control.
    for list in found.values_mut() {
        if !list.windows(2).all(|w| w[0] < w[1]) {
            list.sort();
            list.dedup();
        }
    }
    found
}

/// Adds what one governed namespace contributes to a policy's violations (its verdicts, and
/// what its labels and the policy's automount setting decide). Every violation added names
/// the namespace `ns`.
fn add_namespace(
    found: &mut BTreeMap<&'static str, Vec<Violation>>,
    spec: &ResponsibilityPolicySpec,
    index: &Index,
    ns: &str,
    verdicts: &NamespaceVerdicts,
) {
    let level = spec.controls.pod_security.level;
    let version = pod_security_version(spec);
    let allow_automount = spec.controls.service_accounts.automount_default_token;
    let no_labels = BTreeMap::new();
    let key = crate::index::Key::new(None, ns);
    let labels = index.namespaces.get(&key).map_or(&no_labels, |f| &f.labels);
    if !psa_enforced(labels, level, version) {
        found
            .entry("WKL-01")
            .or_default()
            .push(verdicts.namespace.clone());
    }
    if !psa_visible(labels) {
        found
            .entry("AUD-01")
            .or_default()
            .push(verdicts.namespace.clone());
    }
    if let Some(sa) = verdicts
        .automounting_default
        .as_ref()
        .filter(|_| !allow_automount)
    {
        found.entry("IAM-09").or_default().push(sa.clone());
    }
    for (control, list) in &verdicts.found {
        found
            .entry(control)
            .or_default()
            .extend(list.iter().cloned());
    }
}

/// Everything in a policy's violations that names the governed namespace `ns`: the RBAC
/// findings there and the namespace's own contribution, per control, sorted and without
/// duplicates. In a policy's sorted violations of one control these form one contiguous run
/// (violations sort by namespace first), which is what [`Evaluator`] replaces when only `ns`
/// changed.
pub(crate) fn namespace_contribution(
    spec: &ResponsibilityPolicySpec,
    index: &Index,
    ns: &str,
    verdicts: &NamespaceVerdicts,
    rbac: &RbacVerdicts,
) -> BTreeMap<&'static str, Vec<Violation>> {
    let mut found: BTreeMap<&'static str, Vec<Violation>> = BTreeMap::new();
    for (control, v) in rbac {
        if v.namespace.as_deref() == Some(ns) {
            found.entry(control).or_default().push(v.clone());
        }
    }
    add_namespace(&mut found, spec, index, ns, verdicts);
    for list in found.values_mut() {
        list.sort();
        list.dedup();
    }
    found
}

fn binding_kind_and_name(binding: &str) -> (String, String) {
    let mut parts = binding.split('/');
    let kind = parts.next().unwrap_or_default().to_string();
    let name = parts.next_back().unwrap_or_default().to_string();
    (kind, name)
}

pub(crate) const PSA_ENFORCE: &str = "pod-security.kubernetes.io/enforce";
pub(crate) const PSA_ENFORCE_VERSION: &str = "pod-security.kubernetes.io/enforce-version";
pub(crate) const PSA_WARN: &str = "pod-security.kubernetes.io/warn";
pub(crate) const PSA_AUDIT: &str = "pod-security.kubernetes.io/audit";
pub(crate) const PSA_WARN_VERSION: &str = "pod-security.kubernetes.io/warn-version";
pub(crate) const PSA_AUDIT_VERSION: &str = "pod-security.kubernetes.io/audit-version";

/// The policy's Pod Security version (the schema admits only `latest` and `v1.N`).
pub(crate) fn pod_security_version(spec: &ResponsibilityPolicySpec) -> Version {
    spec.controls
        .pod_security
        .version
        .parse()
        .unwrap_or(Version::Latest)
}

/// The value of a Pod Security level label.
pub(crate) fn level_name(level: PodSecurityLevel) -> &'static str {
    match level {
        PodSecurityLevel::Baseline => "baseline",
        PodSecurityLevel::Restricted => "restricted",
    }
}

/// The strictness of a level name the Pod Security admission accepts: privileged 0, baseline 1,
/// restricted 2; `None` for anything else (the names are case-sensitive).
fn parse_level(value: &str) -> Option<u8> {
    match value {
        "privileged" => Some(0),
        "baseline" => Some(1),
        "restricted" => Some(2),
        _ => None,
    }
}

/// How strict a Pod Security level label value is when read as `enforce`: absent or privileged
/// 0, baseline 1, restricted 2. The admission enforces restricted for a value it cannot parse
/// (e.g. `Restricted`): such a value is stricter than baseline and must never be lowered as if
/// it were absent. For `warn` and `audit`, which fail open, see [`mode_strictness`].
pub(crate) fn strictness(value: Option<&String>) -> u8 {
    value.map_or(0, |v| parse_level(v).unwrap_or(2))
}

/// How strict the admission is in one mode (`PSA_ENFORCE`, `PSA_WARN` or `PSA_AUDIT`) of a
/// namespace's labels, as it reads them: an unparsable value fails closed to restricted for
/// `enforce` and open to privileged for `warn` and `audit`.
pub(crate) fn mode_strictness(labels: &BTreeMap<String, String>, mode: &str) -> u8 {
    match labels.get(mode) {
        Some(v) if mode != PSA_ENFORCE => parse_level(v).unwrap_or(0),
        v => strictness(v),
    }
}

/// A Pod Security version label as the admission reads it: absent or unparsable means latest.
fn label_version(labels: &BTreeMap<String, String>, key: &str) -> Version {
    labels
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(Version::Latest)
}

/// AUD-01: the namespace carries `warn` and `audit` labels the admission acts on (one it
/// cannot parse makes that mode privileged, as if the label were absent).
fn psa_visible(labels: &BTreeMap<String, String>) -> bool {
    [PSA_WARN, PSA_AUDIT]
        .iter()
        .all(|mode| labels.get(*mode).is_some_and(|v| parse_level(v).is_some()))
}

/// WKL-01: the namespace enforces the policy's level (or stricter) at the policy's version
/// (or newer; an absent enforce-version means latest), as the admission reads its labels.
fn psa_enforced(
    labels: &BTreeMap<String, String>,
    level: PodSecurityLevel,
    version: Version,
) -> bool {
    let wanted = level_name(level).to_string();
    let level_ok = mode_strictness(labels, PSA_ENFORCE) >= strictness(Some(&wanted));
    let version_ok = match (label_version(labels, PSA_ENFORCE_VERSION), version) {
        (Version::Latest, _) => true,
        (_, Version::Latest) => false,
        (Version::Minor(have), Version::Minor(want)) => have >= want,
    };
    level_ok && version_ok
}

pub(crate) mod cache;

pub use cache::Evaluator;

#[cfg(test)]
mod psa_label_tests;
#[cfg(test)]
mod tests;
