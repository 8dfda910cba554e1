//! Prevention at admission, decided: the ValidatingAdmissionPolicies (and their bindings) onus
//! generates for the controls the API server can check on a single request. Pure: policies and
//! time in, objects out; [`crate::enforce`] applies them and [`crate::controller`] removes what
//! no policy asks for any more.
//!
//! - One ValidatingAdmissionPolicy per control and action, named `onus-<control>` (`[Deny]`, for
//!   families in Enforce) or `onus-<control>-warn` (`[Warn, Audit]`, for families in Audit of
//!   policies with `admission: Warn`), each with one binding of the same name. Merged across
//!   policies: every contributing policy is one validation of the object, with its own
//!   namespaces, allow-list and exceptions, and a message naming the control and the policy; a
//!   request passes only if every validation does (the strictest wins).
//! - Only new violations are stopped: an update that leaves the checked fields (subjects and
//!   roleRef of a binding, rules of a role, a Service's externalIPs) as they were is admitted
//!   (WKL-10, workloads in `default`, matches creation only; DAT-01 admits an update that adds
//!   no Secret env var to a container), so an object that is already in violation can still be
//!   relabelled, scaled or cleaned up; status keeps reporting it.
//! - It never locks the cluster or onus out: requests by `system:masters` (the API server's own
//!   bootstrap among them), `system:apiserver`, `system:kube-controller-manager`,
//!   `system:kube-scheduler`, every ServiceAccount of kube-system (the controllers) and onus's own
//!   identity are excluded by a match condition, and Kubernetes' own namespaces are excluded by
//!   the binding unless a contributing policy includes them.
//! - `failurePolicy: Fail`. The policy is onus's own (a missing or broken one is onus's bug, and
//!   onus fails closed), the expressions only read the request and are tested against the API
//!   server, and the identities that run and repair the cluster are excluded by a match
//!   condition that reads nothing but `request.userInfo`, so failing closed cannot lock the
//!   cluster out. `Ignore` would let a request the policy cannot judge through unreported.
//!
//! Exceptions expire by time, which CEL cannot read: only the exceptions active at `now` are
//! generated, and the controller regenerates when one expires (policies requeue at the expiry).

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};

use crate::{
    catalog::{Family, control_by_id},
    crd::{
        AdmissionAction, AdmissionMode, Mode, Owner, ResponsibilityPolicy,
        ResponsibilityPolicySpec, SYSTEM_NAMESPACES, SubjectKind,
    },
    evaluate::owner_of,
    facts::MANAGED_BY,
    remediate::enforced_spec,
    validate::validate,
};

/// The controls checked at admission: IAM-01, IAM-02, IAM-05, IAM-07 (RBAC), WKL-10
/// (workloads in `default`), NET-05 (Service externalIPs) and DAT-01 (a Secret read through an
/// env var).
pub const PREVENTABLE: [&str; 7] = [
    "IAM-01", "IAM-02", "IAM-05", "IAM-07", "WKL-10", "NET-05", "DAT-01",
];

/// Annotation on generated objects: the policies that contributed, sorted, comma-separated.
pub const POLICIES_ANNOTATION: &str = crate::facts::POLICIES_ANNOTATION;

/// The name of the objects for `control` and `action`, e.g. `onus-iam-01`, `onus-iam-01-warn`.
pub fn object_name(control: &str, action: AdmissionAction) -> String {
    let base = format!("onus-{}", control.to_ascii_lowercase());
    match action {
        AdmissionAction::Deny => base,
        AdmissionAction::Warn => base + "-warn",
    }
}

/// Every name onus may generate: onus writes and deletes objects with these names only.
pub fn all_names() -> Vec<String> {
    PREVENTABLE
        .iter()
        .flat_map(|c| [AdmissionAction::Deny, AdmissionAction::Warn].map(|a| object_name(c, a)))
        .collect()
}

/// The identities a generated policy never applies to (see the module docs).
pub const EXEMPT_USERS: [&str; 3] = [
    "system:apiserver",
    "system:kube-controller-manager",
    "system:kube-scheduler",
];

fn family_mode(spec: &ResponsibilityPolicySpec, family: Family) -> Option<Mode> {
    let c = &spec.controls;
    match family {
        Family::Rbac => c.rbac.mode,
        Family::ServiceAccounts => c.service_accounts.mode,
        Family::PodSecurity => c.pod_security.mode,
        Family::Network => c.network.mode,
        Family::Data => c.data.mode,
        Family::Audit => c.audit.mode,
    }
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

/// How `spec` asks for `control` to be checked at admission: `Deny` when its family is in
/// Enforce, `Warn` when it audits with `admission: Warn`; none when the control is not
/// preventable, its family is disabled or the provider owns it.
pub fn action_for(spec: &ResponsibilityPolicySpec, control: &str) -> Option<AdmissionAction> {
    if !PREVENTABLE.contains(&control) {
        return None;
    }
    let c = control_by_id(control)?;
    if !family_enabled(spec, c.family) || owner_of(spec, c).0 == Owner::Provider {
        return None;
    }
    // As the remediations: Enforce only when the policy and the family both enforce.
    if spec.mode == Mode::Enforce
        && family_mode(spec, c.family).unwrap_or(spec.mode) == Mode::Enforce
    {
        Some(AdmissionAction::Deny)
    } else {
        (spec.admission == Some(AdmissionMode::Warn)).then_some(AdmissionAction::Warn)
    }
}

/// The spec a policy is checked at admission with: the one it enforces (its last valid Enforce
/// spec while the current one is invalid) or, for Warn, its current valid spec. None while it
/// is being deleted.
pub fn admission_spec(policy: &ResponsibilityPolicy) -> Option<&ResponsibilityPolicySpec> {
    if policy.metadata.deletion_timestamp.is_some() {
        return None;
    }
    if validate(&policy.spec).is_ok() {
        Some(&policy.spec)
    } else {
        enforced_spec(policy)
    }
}

/// One generated ValidatingAdmissionPolicy and its binding.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    pub control: &'static str,
    pub action: AdmissionAction,
    pub policy: Value,
    pub binding: Value,
    /// The ResponsibilityPolicies that contributed, sorted.
    pub policies: Vec<String>,
}

/// A CEL string literal.
fn lit(s: &str) -> String {
    // JSON's escapes (\" \\ \n \uXXXX) are CEL's too.
    serde_json::to_string(s).unwrap_or_else(|_| "''".into())
}

fn list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = items.into_iter().map(lit).collect();
    format!("[{}]", items.join(", "))
}

/// The request's user is one of those that run and repair the cluster, or onus itself.
pub fn exempt_expression(own_user: Option<&str>) -> String {
    let mut users: Vec<&str> = EXEMPT_USERS.to_vec();
    users.extend(own_user);
    format!(
        "request.userInfo.?groups.orValue([]).exists(g, g == 'system:masters') || \
         request.userInfo.?username.orValue('') in {} || \
         request.userInfo.?username.orValue('').startsWith('system:serviceaccount:kube-system:')",
        list(users)
    )
}

/// A label selector as CEL over the labels `l`.
fn selector(s: &LabelSelector, l: &str) -> String {
    let mut terms = Vec::new();
    for (k, v) in s.match_labels.iter().flatten() {
        terms.push(format!(
            "({k} in {l} && {l}[{k}] == {v})",
            k = lit(k),
            v = lit(v)
        ));
    }
    for e in s.match_expressions.iter().flatten() {
        let k = lit(&e.key);
        let values = list(e.values.iter().flatten().map(String::as_str));
        terms.push(match e.operator.as_str() {
            "In" => format!("({k} in {l} && {l}[{k}] in {values})"),
            "NotIn" => format!("(!({k} in {l}) || !({l}[{k}] in {values}))"),
            "Exists" => format!("({k} in {l})"),
            "DoesNotExist" => format!("!({k} in {l})"),
            // The schema admits no other operator; an unknown one selects nothing, as in
            // evaluate.
            _ => "false".into(),
        });
    }
    if terms.is_empty() {
        "true".into()
    } else {
        terms.join(" && ")
    }
}

/// Namespaces the policy never governs: its exclusions and Kubernetes' own it does not include.
fn not_governed(spec: &ResponsibilityPolicySpec) -> Vec<&str> {
    let mut out: BTreeSet<&str> = spec
        .excluded_namespaces
        .iter()
        .map(String::as_str)
        .collect();
    out.extend(
        SYSTEM_NAMESPACES
            .iter()
            .filter(|n| !spec.include_system_namespaces.iter().any(|i| i == *n)),
    );
    out.into_iter().collect()
}

/// Whether the policy governs the request: cluster-scoped objects always (cluster-wide RBAC
/// counts for every policy), namespaced ones when the namespace is governed.
fn governs(spec: &ResponsibilityPolicySpec) -> String {
    let mut ns = format!(
        "!(namespaceObject.metadata.name in {})",
        list(not_governed(spec))
    );
    if let Some(s) = &spec.namespace_selector {
        ns = format!(
            "{ns} && {}",
            selector(s, "namespaceObject.metadata.?labels.orValue({})")
        );
    }
    format!("(request.?namespace.orValue('') == '' || ({ns}))")
}

/// The active exceptions of `control` as one CEL condition on the request (`false`: none).
fn excepted(spec: &ResponsibilityPolicySpec, control: &str, now: Timestamp) -> String {
    let terms: Vec<String> = spec
        .exceptions
        .iter()
        .filter(|e| e.controls.iter().any(|c| c == control))
        .filter(|e| e.expires.as_ref().is_none_or(|t| t.0 > now))
        .map(|e| {
            let mut parts = Vec::new();
            if !e.namespaces.is_empty() {
                // A cluster-scoped object has no namespace and is never covered (as in status).
                parts.push(format!(
                    "request.?namespace.orValue('') in {}",
                    list(e.namespaces.iter().map(String::as_str))
                ));
            }
            if !e.resources.is_empty() {
                let alts: Vec<String> = e
                    .resources
                    .iter()
                    .map(|r| {
                        format!(
                            "(request.kind.kind.lowerAscii() == {} && object.metadata.?name.orValue('') == {})",
                            lit(&r.kind.to_ascii_lowercase()),
                            lit(&r.name)
                        )
                    })
                    .collect();
                parts.push(format!("({})", alts.join(" || ")));
            }
            if parts.is_empty() {
                "true".into()
            } else {
                format!("({})", parts.join(" && "))
            }
        })
        .collect();
    if terms.is_empty() {
        "false".into()
    } else {
        terms.join(" || ")
    }
}

/// The allow-list split by kind: users, groups, ServiceAccounts as `namespace:name`.
fn allow_list(spec: &ResponsibilityPolicySpec) -> (Vec<&str>, Vec<&str>, Vec<String>) {
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for s in &spec.controls.rbac.cluster_admin_subjects {
        match s.kind {
            SubjectKind::User => users.push(s.name.as_str()),
            SubjectKind::Group => groups.push(s.name.as_str()),
            SubjectKind::ServiceAccount => {
                if let Some(ns) = &s.namespace {
                    sas.push(format!("{ns}:{}", s.name));
                }
            }
        }
    }
    (users, groups, sas)
}

/// Whether the binding subject `s` is on the allow-list (a ServiceAccount also as its
/// `system:serviceaccount:` user).
fn subject_allowed(spec: &ResponsibilityPolicySpec, s: &str) -> String {
    let (users, groups, sas) = allow_list(spec);
    let sas = list(sas.iter().map(String::as_str));
    format!(
        "(({s}.kind == 'User' && ({s}.name in {users} || \
           ({s}.name.startsWith('system:serviceaccount:') && {s}.name.substring(22) in {sas}))) || \
          ({s}.kind == 'Group' && {s}.name in {groups}) || \
          ({s}.kind == 'ServiceAccount' && ({s}.?namespace.orValue('') + ':' + {s}.name) in {sas}))",
        users = list(users),
        groups = list(groups),
    )
}

/// Whether the requester is on the allow-list.
fn requester_allowed(spec: &ResponsibilityPolicySpec) -> String {
    let (users, groups, sas) = allow_list(spec);
    let mut names: Vec<String> = users.iter().map(|u| u.to_string()).collect();
    names.extend(sas.iter().map(|s| format!("system:serviceaccount:{s}")));
    format!(
        "(request.userInfo.?username.orValue('') in {} || \
          request.userInfo.?groups.orValue([]).exists(g, g in {}))",
        list(names.iter().map(String::as_str)),
        list(groups)
    )
}

/// What the control checks: the resources it matches, and the violation as CEL on `object`.
struct Check {
    /// The resource rules it matches.
    rules: Value,
    /// Variables the checks read (before `unchanged`, which may read them too).
    variables: Vec<(&'static str, String)>,
    /// The fields an update must leave alone to be admitted as it is.
    unchanged: &'static str,
}

const RBAC: &str = "rbac.authorization.k8s.io";

fn rule(groups: &[&str], resources: &[&str], operations: &[&str]) -> Value {
    json!({"apiGroups": groups, "apiVersions": ["*"], "operations": operations, "resources": resources})
}

fn check(control: &str) -> Check {
    let create_update = ["CREATE", "UPDATE"];
    match control {
        "IAM-01" | "IAM-07" => Check {
            rules: json!([rule(
                &[RBAC],
                &["rolebindings", "clusterrolebindings"],
                &create_update
            )]),
            variables: Vec::new(),
            unchanged: "request.operation == 'UPDATE' && object.roleRef == oldObject.roleRef && \
                        object.?subjects.orValue([]) == oldObject.?subjects.orValue([])",
        },
        // Workloads are created in `default`; updates of those already there are admitted
        // (only CREATE is matched), and the controllers that make their Pods are exempt.
        "WKL-10" => Check {
            rules: json!([
                rule(&[""], &["pods", "replicationcontrollers"], &["CREATE"]),
                rule(
                    &["apps"],
                    &["deployments", "statefulsets", "daemonsets", "replicasets"],
                    &["CREATE"]
                ),
                rule(&["batch"], &["jobs", "cronjobs"], &["CREATE"]),
            ]),
            variables: Vec::new(),
            unchanged: "false",
        },
        "NET-05" => Check {
            rules: json!([rule(&[""], &["services"], &create_update)]),
            variables: Vec::new(),
            unchanged: "request.operation == 'UPDATE' && \
                        object.spec.?externalIPs.orValue([]) == oldObject.spec.?externalIPs.orValue([])",
        },
        // Every pod template kind detection covers and bare Pods, created or updated, and the
        // ephemeral containers `kubectl debug` adds through their own subresource; an update
        // is judged by what it adds (see [`SECRET_ENV_ADDED`]).
        "DAT-01" => Check {
            rules: json!([
                rule(
                    &[""],
                    &["pods", "pods/ephemeralcontainers", "replicationcontrollers"],
                    &create_update
                ),
                rule(
                    &["apps"],
                    &["deployments", "statefulsets", "daemonsets", "replicasets"],
                    &create_update
                ),
                rule(&["batch"], &["jobs", "cronjobs"], &create_update),
            ]),
            variables: vec![
                ("containers", containers_of("object")),
                (
                    "oldContainers",
                    format!(
                        "request.operation == 'UPDATE' ? {} : []",
                        containers_of("oldObject")
                    ),
                ),
                ("secretEnvAdded", SECRET_ENV_ADDED.into()),
            ],
            unchanged: "request.operation == 'UPDATE' && !variables.secretEnvAdded",
        },
        // A ClusterRole's aggregationRule decides its rules too (see [`violation`]).
        _ => Check {
            rules: json!([rule(&[RBAC], &["roles", "clusterroles"], &create_update)]),
            variables: Vec::new(),
            unchanged: "request.operation == 'UPDATE' && \
                        object.?rules.orValue([]) == oldObject.?rules.orValue([]) && \
                        object.?aggregationRule.?clusterRoleSelectors.orValue([]) == \
                        oldObject.?aggregationRule.?clusterRoleSelectors.orValue([])",
        },
    }
}

/// A list field of an object as CEL, absent or null read as empty (see [`RULES`] on null).
fn list_at(path: &str) -> String {
    format!("({path}.orValue([]) == null ? [] : {path}.orValue([]))")
}

/// Every container of `object` (or `oldObject`), init, regular and ephemeral, wherever its
/// kind keeps the pod spec: a Pod's `spec`, a workload's `spec.template.spec`, a CronJob's
/// `spec.jobTemplate.spec.template.spec`. Found by where they are, not by the request's kind:
/// only the kinds matched reach the check, and each has its pod spec at exactly one of these
/// places (a field a kind does not have is absent, never an error). Field names reach CEL as
/// the API server decoded them, so casing in the request cannot hide one.
fn containers_of(object: &str) -> String {
    let mut lists = Vec::new();
    for spec in [
        format!("{object}.?spec"),
        format!("{object}.?spec.?template.?spec"),
        format!("{object}.?spec.?jobTemplate.?spec.?template.?spec"),
    ] {
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            lists.push(list_at(&format!("{spec}.?{list}")));
        }
    }
    lists.join(" + ")
}

/// DAT-01: a container takes a Secret through an env var (`env[].valueFrom.secretKeyRef` or
/// `envFrom[].secretRef`, as detection counts it) that the same container (by name: unique
/// across init, regular and ephemeral containers) did not have before the request. On CREATE
/// every such entry is new; an UPDATE that adds none (a scale, a new image, a relabel, a plain
/// env var, a restart) is admitted, so workloads already in violation keep running and can be
/// changed; status keeps reporting them. An entry is the same only if equal as a whole (its
/// name, Secret, key, prefix).
///
/// Within the API server's CEL cost limit for large containers too (an error would deny, and
/// lock an existing workload with many Secret env vars out of every relabel, scale and
/// rollout): a container whose `env` and `envFrom` are as they were adds nothing and is not
/// looked into, and an entry is looked up with `in`, not a nested `exists`.
pub const SECRET_ENV_ADDED: &str = "variables.containers.exists(c, \
     !variables.oldContainers.exists(o, o.name == c.name && \
       o.?env.orValue([]) == c.?env.orValue([]) && \
       o.?envFrom.orValue([]) == c.?envFrom.orValue([])) && \
     (c.?env.orValue([]).exists(e, e.?valueFrom.?secretKeyRef.hasValue() && \
       !variables.oldContainers.exists(o, o.name == c.name && e in o.?env.orValue([]))) || \
      c.?envFrom.orValue([]).exists(f, f.?secretRef.hasValue() && \
       !variables.oldContainers.exists(o, o.name == c.name && f in o.?envFrom.orValue([])))))";

/// The rules of a Role or ClusterRole. Null-safe: the API server hands a role without rules to
/// CEL with `rules: null` (the field has no `omitempty`), on which `.exists` is an error, and
/// an error fails closed (a role without rules would be refused with an evaluation error).
const RULES: &str = "(object.?rules.orValue([]) == null ? [] : object.?rules.orValue([]))";

/// A ClusterRole with an `aggregationRule` that selects anything. Its `rules` are not its
/// author's: kube-controller-manager fills them with the rules of every ClusterRole its
/// selectors match, now and later (`cluster-admin`'s `*` among them, for a selector on
/// `kubernetes.io/bootstrapping: rbac-defaults`). Which roles match, and what they grant, is
/// decided by other objects' labels the request does not show, so the only safe answer at
/// admission is to treat it as granting everything: IAM-02 and IAM-05 deny it unless the
/// requester is allow-listed or an exception names the role. The aggregation controller itself
/// is exempt (kube-system / kube-controller-manager), and detection judges the aggregated rules
/// it writes like any others.
pub const AGGREGATES: &str = "size(object.?aggregationRule.?clusterRoleSelectors.orValue([])) > 0";

/// A mirror Pod a kubelet creates for a static Pod: a Pod carrying the annotation
/// `kubernetes.io/config.mirror`, requested by a node (user `system:node:<name>` in group
/// `system:nodes`). The static Pod runs whatever the API server says (its manifest is on the
/// node), so denying its mirror would only hide it from the API and detection, and make the
/// kubelet retry forever; the mirror cannot be changed through the API either. Only the
/// kubelet's identity counts: anyone else's Pod with the annotation is judged as usual (with
/// the NodeRestriction admission plugin a node can create nothing but its own mirror Pods).
pub const MIRROR_POD: &str = "request.kind.kind == 'Pod' && \
     request.userInfo.?username.orValue('').startsWith('system:node:') && \
     request.userInfo.?groups.orValue([]).exists(g, g == 'system:nodes') && \
     'kubernetes.io/config.mirror' in object.metadata.?annotations.orValue({})";

/// The violation of `control` under `spec`, as CEL on `object` (true: violates).
pub fn violation(spec: &ResponsibilityPolicySpec, control: &str) -> String {
    match control {
        // As status counts it: cluster-admin anywhere, admin and edit cluster-wide.
        "IAM-01" => format!(
            "object.roleRef.kind == 'ClusterRole' && (object.roleRef.name == 'cluster-admin' || \
             (request.?namespace.orValue('') == '' && object.roleRef.name in ['admin', 'edit'])) && \
             object.?subjects.orValue([]).exists(s, !{})",
            subject_allowed(spec, "s")
        ),
        "IAM-07" => "object.?subjects.orValue([]).exists(s, \
             (s.kind == 'Group' && s.name in ['system:anonymous', 'system:unauthenticated', 'system:authenticated']) || \
             (s.kind == 'User' && s.name == 'system:anonymous'))"
            .into(),
        // As status counts it: `*`, and `*/<subresource>` (every resource's subresource).
        // An aggregating ClusterRole (see [`AGGREGATES`]) counts too.
        "IAM-02" => format!(
            "!{} && ({AGGREGATES} || {RULES}.exists(r, \
             r.verbs.exists(v, v == '*' || v.startsWith('*/')) || \
             r.?resources.orValue([]).exists(x, x == '*' || x.startsWith('*/')) || \
             r.?apiGroups.orValue([]).exists(g, g == '*' || g.startsWith('*/'))))",
            requester_allowed(spec)
        ),
        // The verb `*` grants escalate, bind and impersonate too. An aggregating ClusterRole
        // may be given any of them.
        "IAM-05" => format!(
            "!{} && ({AGGREGATES} || {RULES}.exists(r, \
             (r.verbs.exists(v, v in ['escalate', 'bind', '*']) && \
              r.?resources.orValue([]).exists(x, x in ['roles', 'clusterroles', '*'])) || \
             r.verbs.exists(v, v == 'impersonate') || \
             (r.verbs.exists(v, v == '*') && r.?resources.orValue([]).exists(x, \
              x in ['users', 'groups', 'serviceaccounts', 'uids'] || x.startsWith('userextras')))))",
            requester_allowed(spec)
        ),
        // A kubelet's mirror Pod (of a static Pod) is admitted: see [`MIRROR_POD`].
        "WKL-10" => format!("request.?namespace.orValue('') == 'default' && !({MIRROR_POD})"),
        "NET-05" => "size(object.spec.?externalIPs.orValue([])) > 0".into(),
        // As WKL-10, a kubelet's mirror Pod is admitted (the API server's ServiceAccount
        // admission refuses mirror Pods that reference Secrets anyway).
        "DAT-01" => format!("variables.secretEnvAdded && !({MIRROR_POD})"),
        _ => "false".into(),
    }
}

/// The message of a denial or warning.
pub fn message(control: &str, policy: &str) -> String {
    let title = control_by_id(control).map_or("", |c| c.title);
    let how = match control {
        "IAM-01" => {
            "add the subject to spec.controls.rbac.clusterAdminSubjects or an exception to spec.exceptions"
        }
        "IAM-02" | "IAM-05" => {
            "ask an allow-listed subject (spec.controls.rbac.clusterAdminSubjects) to make the change, or add an exception to spec.exceptions"
        }
        _ => "add an exception to spec.exceptions",
    };
    format!(
        "{control} ({title}) of ResponsibilityPolicy {policy} (onus): to request an exception, \
         ask its owners to {how} (kubectl edit responsibilitypolicy {policy})"
    )
}

/// The ValidatingAdmissionPolicies and bindings all policies ask for together, by name.
/// `own_user` is onus's own identity (exempt).
pub fn generate<'a>(
    policies: impl IntoIterator<Item = &'a ResponsibilityPolicy>,
    now: Timestamp,
    own_user: Option<&str>,
) -> BTreeMap<String, Generated> {
    // Per (control, action): the contributing policies by name, sorted.
    let mut contributors: BTreeMap<
        (&'static str, AdmissionAction),
        Vec<(String, &'a ResponsibilityPolicySpec)>,
    > = BTreeMap::new();
    for policy in policies {
        let Some(spec) = admission_spec(policy) else {
            continue;
        };
        let name = policy.metadata.name.clone().unwrap_or_default();
        for control in PREVENTABLE {
            if let Some(action) = action_for(spec, control) {
                contributors
                    .entry((control, action))
                    .or_default()
                    .push((name.clone(), spec));
            }
        }
    }
    let mut out = BTreeMap::new();
    for ((control, action), mut specs) in contributors {
        specs.sort_by(|a, b| a.0.cmp(&b.0));
        let name = object_name(control, action);
        let check = check(control);
        let validations: Vec<Value> = specs
            .iter()
            .map(|(policy, spec)| {
                json!({
                    "expression": format!(
                        "!{} || {} || !({})",
                        governs(spec),
                        excepted(spec, control, now),
                        violation(spec, control)
                    ),
                    "message": message(control, policy),
                    "reason": "Forbidden",
                })
            })
            .collect();
        // Kubernetes' own namespaces stay out unless a contributing policy governs them.
        let excluded: Vec<&str> = SYSTEM_NAMESPACES
            .iter()
            .copied()
            .filter(|n| {
                !specs
                    .iter()
                    .any(|(_, s)| s.include_system_namespaces.iter().any(|i| i == n))
            })
            .collect();
        let names: Vec<String> = specs.iter().map(|(n, _)| n.clone()).collect();
        let metadata = json!({
            "name": name,
            "labels": {MANAGED_BY.0: MANAGED_BY.1},
            "annotations": {POLICIES_ANNOTATION: names.join(",")},
        });
        let vap = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": metadata,
            "spec": {
                // Reasoned in the module docs: fail closed, never lock out.
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": check.rules},
                "matchConditions": [{
                    "name": "onus-exempt-cluster-identities",
                    "expression": format!("!({})", exempt_expression(own_user)),
                }],
                "variables": check.variables.iter()
                    .map(|(name, e)| json!({"name": name, "expression": e}))
                    .chain([json!({"name": "unchanged", "expression": check.unchanged})])
                    .collect::<Vec<_>>(),
                "validations": validations.into_iter().map(|mut v| {
                    let e = v["expression"].as_str().unwrap_or_default().to_string();
                    v["expression"] = format!("variables.unchanged || {e}").into();
                    v
                }).collect::<Vec<_>>(),
            },
        });
        let actions: &[&str] = match action {
            AdmissionAction::Deny => &["Deny"],
            AdmissionAction::Warn => &["Warn", "Audit"],
        };
        let mut binding_spec = json!({
            "policyName": name,
            "validationActions": actions,
        });
        if !excluded.is_empty() {
            binding_spec["matchResources"] = json!({"namespaceSelector": {"matchExpressions": [{
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": excluded,
            }]}});
        }
        let binding = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": metadata,
            "spec": binding_spec,
        });
        out.insert(
            name,
            Generated {
                control,
                action,
                policy: vap,
                binding,
                policies: names,
            },
        );
    }
    out
}

/// The API server's limit on one CEL expression, in code points (it refuses a
/// ValidatingAdmissionPolicy with a longer one as invalid).
pub const MAX_EXPRESSION_CHARS: usize = 100_000;

/// onus's cap on a generated object's serialized size: well under what the API server and
/// etcd accept in one request (1.5 MiB by default), so a write is never refused for its size
/// halfway through a pass.
pub const MAX_OBJECT_BYTES: usize = 1024 * 1024;

/// Why `g` cannot be written as it is, if it is too large: an expression longer than the API
/// server accepts (a long allow-list or many exceptions of one policy), or the whole object
/// (many policies) over [`MAX_OBJECT_BYTES`]. onus then writes nothing for it: the
/// ValidatingAdmissionPolicy already in place (the one before the list grew, stricter) stays,
/// and the refusal is reported like one of the API server's.
pub fn too_large(g: &Generated) -> Option<String> {
    let spec = &g.policy["spec"];
    let validations = spec["validations"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, v) in validations.iter().enumerate() {
        let chars = v["expression"].as_str().unwrap_or_default().chars().count();
        if chars > MAX_EXPRESSION_CHARS {
            let policy = g.policies.get(i).map_or("?", String::as_str);
            return Some(format!(
                "the check for ResponsibilityPolicy {policy} is a CEL expression of {chars} \
                 characters, the API server accepts at most {MAX_EXPRESSION_CHARS}: shorten its \
                 allow-list (spec.controls.rbac.clusterAdminSubjects) or its exceptions for \
                 {control}, or allow a group instead of its members",
                control = g.control
            ));
        }
    }
    let others = ["matchConditions", "variables"]
        .iter()
        .flat_map(|k| spec[*k].as_array().cloned().unwrap_or_default());
    for v in others {
        let chars = v["expression"].as_str().unwrap_or_default().chars().count();
        if chars > MAX_EXPRESSION_CHARS {
            return Some(format!(
                "a generated CEL expression has {chars} characters, the API server accepts at \
                 most {MAX_EXPRESSION_CHARS}"
            ));
        }
    }
    let bytes = g.policy.to_string().len();
    (bytes > MAX_OBJECT_BYTES).then(|| {
        format!(
            "the ValidatingAdmissionPolicy would be {bytes} bytes, onus writes at most \
             {MAX_OBJECT_BYTES}: shorten the allow-lists or exceptions of {}",
            g.policies.join(", ")
        )
    })
}

/// The names of the objects `policy` contributes to.
pub fn names_for(policy: &ResponsibilityPolicy) -> Vec<String> {
    let Some(spec) = admission_spec(policy) else {
        return Vec::new();
    };
    PREVENTABLE
        .iter()
        .filter_map(|c| Some(object_name(c, action_for(spec, c)?)))
        .collect()
}

/// Whether `policy` has any control checked at admission (it then holds the finalizer, so its
/// generated objects are removed with it).
pub fn wants_admission(policy: &ResponsibilityPolicy) -> bool {
    !names_for(policy).is_empty()
}

/// How each preventable control of one policy is checked at admission, given what was
/// generated and accepted (`in_place`: the names of the objects the API server holds as
/// generated). A control counts only when its object for the policy's action is in place.
pub fn status_of(
    policy: &ResponsibilityPolicy,
    in_place: &BTreeSet<String>,
) -> BTreeMap<&'static str, AdmissionAction> {
    let Some(spec) = admission_spec(policy) else {
        return BTreeMap::new();
    };
    PREVENTABLE
        .iter()
        .filter_map(|c| {
            let action = action_for(spec, c)?;
            in_place
                .contains(&object_name(c, action))
                .then_some((*c, action))
        })
        .collect()
}

#[cfg(test)]
mod tests;
