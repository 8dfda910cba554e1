//! `onus check`: the controller's evaluation, offline, on manifests.
//!
//! The objects read from files ([`load`]) are decoded into the same shapes the watches decode
//! (typed objects for the small kinds, [`crate::facts::wire`] for the kinds that run pods),
//! projected by the same [`crate::facts`] functions into the same [`Index`] maps, and judged by
//! [`evaluate::evaluate`]: there is no second evaluator. What differs from a cluster is only
//! what the index holds: the objects of the files, no server version (Pod Security `latest` is
//! the newest version onus knows), a Namespace for every namespace the objects name (with
//! no labels when the files hold no Namespace object for it, as `kubectl create namespace`
//! would make it), Kubernetes' default roles, and for each aggregated ClusterRole the rules
//! kube-controller-manager would aggregate into it from the ClusterRoles at hand
//! ([`crate::rbac::aggregation`]; the output notes each, since a cluster may hold more).

pub mod cli;
pub mod load;
pub mod output;

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use k8s_openapi::api::{
    core::v1::{Namespace, Service, ServiceAccount},
    networking::v1::NetworkPolicy,
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{
    catalog::Control,
    crd::{
        ControlResult, Controls, Mode, Owner, OwnerSource, ResponsibilityPolicySpec, ServiceModel,
    },
    evaluate::{self, Evaluation, Gap},
    facts::{
        self, NamespaceFact, WorkloadKind,
        wire::{PodObject, WorkloadObject},
    },
    index::{Index, Key},
    podsecurity::Version,
};
use load::{InputError, Object, Source};

/// The kinds the controller watches and evaluates, by what feeds which index map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Namespace,
    ServiceAccount,
    Service,
    NetworkPolicy,
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
    Workload(WorkloadKind),
}

impl Kind {
    /// The kind of an object with this `apiVersion` and `kind`, when a control reads it.
    pub fn recognise(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        Some(match (group, kind) {
            ("", "Namespace") => Kind::Namespace,
            ("", "ServiceAccount") => Kind::ServiceAccount,
            ("", "Service") => Kind::Service,
            ("", "Pod") => Kind::Workload(WorkloadKind::Pod),
            ("networking.k8s.io", "NetworkPolicy") => Kind::NetworkPolicy,
            ("rbac.authorization.k8s.io", "Role") => Kind::Role,
            ("rbac.authorization.k8s.io", "ClusterRole") => Kind::ClusterRole,
            ("rbac.authorization.k8s.io", "RoleBinding") => Kind::RoleBinding,
            ("rbac.authorization.k8s.io", "ClusterRoleBinding") => Kind::ClusterRoleBinding,
            ("apps", "Deployment") => Kind::Workload(WorkloadKind::Deployment),
            ("apps", "StatefulSet") => Kind::Workload(WorkloadKind::StatefulSet),
            ("apps", "DaemonSet") => Kind::Workload(WorkloadKind::DaemonSet),
            ("apps", "ReplicaSet") => Kind::Workload(WorkloadKind::ReplicaSet),
            ("batch", "Job") => Kind::Workload(WorkloadKind::Job),
            ("batch", "CronJob") => Kind::Workload(WorkloadKind::CronJob),
            _ => return None,
        })
    }

    fn cluster_scoped(self) -> bool {
        matches!(
            self,
            Kind::Namespace | Kind::ClusterRole | Kind::ClusterRoleBinding
        )
    }
}

/// Kinds that are cluster-scoped although no control reads them (their objects name no
/// namespace to create).
fn cluster_scoped_kind(kind: &str) -> bool {
    matches!(
        kind,
        "CustomResourceDefinition"
            | "ValidatingWebhookConfiguration"
            | "MutatingWebhookConfiguration"
            | "ValidatingAdmissionPolicy"
            | "ValidatingAdmissionPolicyBinding"
            | "APIService"
            | "PriorityClass"
            | "StorageClass"
            | "PersistentVolume"
            | "IngressClass"
            | "RuntimeClass"
            | "ResponsibilityPolicy"
    )
}

fn decode<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// Decodes one object into the shape its watch decodes and projects it into the index maps
/// that watch feeds (see `controller::watch::watch_all`). Returns whether any fact changed.
pub fn feed(index: &mut Index, kind: Kind, key: &Key, value: Value) -> Result<bool, String> {
    Ok(project(kind, key, value)?.apply(index))
}

/// One object decoded and projected into its facts, not yet in the index: [`feed`] in two
/// steps, so that the decoding and the projection (most of [`feed`]'s work) run on the thread
/// that parsed the object, and only [`Projection::apply`] on the one that owns the index.
pub struct Projection(Box<dyn FnOnce(&mut Index) -> bool + Send>);

impl Projection {
    /// Puts the facts into the index maps the object's watch feeds. Returns whether any fact
    /// changed.
    pub fn apply(self, index: &mut Index) -> bool {
        (self.0)(index)
    }
}

impl std::fmt::Debug for Projection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Projection")
    }
}

/// The first step of [`feed`]: decodes one object and projects it.
pub fn project(kind: Kind, key: &Key, value: Value) -> Result<Projection, String> {
    let k = key.clone();
    let apply: Box<dyn FnOnce(&mut Index) -> bool + Send> = match kind {
        Kind::Namespace => {
            let fact = facts::namespace(&decode::<Namespace>(value)?);
            Box::new(move |index| index.namespaces.apply(k, fact))
        }
        Kind::ServiceAccount => {
            let fact = facts::default_service_account(&decode::<ServiceAccount>(value)?);
            Box::new(move |index| index.default_service_accounts.apply(k, fact))
        }
        Kind::Service => {
            let fact = facts::external_ips(&decode::<Service>(value)?);
            Box::new(move |index| index.external_ips.apply(k, fact))
        }
        Kind::NetworkPolicy => {
            let fact = facts::network_policy(&decode::<NetworkPolicy>(value)?);
            Box::new(move |index| index.network_policies.apply(k, fact))
        }
        Kind::Role => {
            let fact = facts::role(&decode::<Role>(value)?);
            Box::new(move |index| index.roles.apply(k, fact))
        }
        Kind::ClusterRole => {
            let fact = facts::cluster_role(&decode::<ClusterRole>(value)?);
            Box::new(move |index| index.cluster_roles.apply(k, fact))
        }
        Kind::RoleBinding => {
            let fact = facts::role_binding(&decode::<RoleBinding>(value)?);
            Box::new(move |index| index.role_bindings.apply(k, fact))
        }
        Kind::ClusterRoleBinding => {
            let fact = facts::cluster_role_binding(&decode::<ClusterRoleBinding>(value)?);
            Box::new(move |index| index.cluster_role_bindings.apply(k, fact))
        }
        Kind::Workload(WorkloadKind::Pod) => {
            let pod: PodObject = decode(value)?;
            let (fact, owned) = (facts::pod(&pod), facts::owned_pod(&pod));
            Box::new(move |index| {
                index
                    .workloads_mut(WorkloadKind::Pod)
                    .apply(k.clone(), fact)
                    | index.owned_pods.apply(k, owned)
            })
        }
        Kind::Workload(WorkloadKind::ReplicaSet) => {
            let rs: WorkloadObject = decode(value)?;
            let (fact, owner) = (facts::replica_set(&rs), facts::replica_set_owner(&rs));
            Box::new(move |index| {
                index
                    .workloads_mut(WorkloadKind::ReplicaSet)
                    .apply(k.clone(), fact)
                    | index.replica_set_owners.apply(k, owner)
            })
        }
        Kind::Workload(WorkloadKind::Job) => {
            let job: WorkloadObject = decode(value)?;
            let (fact, owner) = (facts::job(&job), facts::job_owner(&job));
            Box::new(move |index| {
                index
                    .workloads_mut(WorkloadKind::Job)
                    .apply(k.clone(), fact)
                    | index.job_owners.apply(k, owner)
            })
        }
        Kind::Workload(w) => {
            let obj: WorkloadObject = decode(value)?;
            let fact = facts::workload(w, &obj);
            Box::new(move |index| index.workloads_mut(w).apply(k, fact))
        }
    };
    Ok(Projection(apply))
}

/// Identifies an input object in the output: kind, namespace ("" when cluster-scoped), name.
pub type ObjectId = (String, String, String);

/// The objects of the input, in the index.
#[derive(Debug, Default)]
pub struct Ingested {
    pub index: Index,
    /// Where each evaluated object starts (the last definition, when one repeats).
    pub locations: HashMap<ObjectId, Source>,
    /// Namespaces the objects use without a Namespace object in the input, with the first
    /// object that uses each.
    pub implied_namespaces: BTreeMap<String, Source>,
    /// Objects decoded into the index.
    pub evaluated: usize,
    /// Objects no control reads, by kind (`apiVersion` shown for custom resources).
    pub skipped: BTreeMap<String, usize>,
    /// Objects of an evaluated kind that do not decode (or lack a name).
    pub errors: Vec<InputError>,
    /// Objects defined more than once: the later definition counts, as with `kubectl apply`.
    pub duplicates: Vec<(ObjectId, Source, Source)>,
    /// The aggregated ClusterRoles of the input, whose rules check computed.
    pub aggregations: Vec<AggregationNote>,
}

/// An aggregated ClusterRole of the input: its rules are what the ClusterRoles its
/// `aggregationRule` selects among the input and Kubernetes' defaults grant (see
/// [`crate::rbac::aggregation`]). A cluster may hold more ClusterRoles with matching labels,
/// which add to its grants: the output says so for each, rather than pass it silently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregationNote {
    pub name: String,
    pub source: Source,
    /// The ClusterRoles its selectors select, sorted by name.
    pub selected: Vec<String>,
}

impl AggregationNote {
    /// The note for people.
    pub fn text(&self) -> String {
        let Self {
            name,
            source,
            selected,
        } = self;
        if selected.is_empty() {
            format!(
                "ClusterRole/{name} ({source}) aggregates no ClusterRole of the input or of \
                 Kubernetes' defaults: judged on its own rules only; in a cluster, the \
                 ClusterRoles whose labels its aggregationRule selects grant through it too"
            )
        } else {
            let roles: Vec<String> = selected
                .iter()
                .map(|r| format!("ClusterRole/{r}"))
                .collect();
            format!(
                "ClusterRole/{name} ({source}) aggregates {}: judged with their rules; in a \
                 cluster, ClusterRoles outside the input whose labels its aggregationRule \
                 selects grant more through it",
                roles.join(", ")
            )
        }
    }
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
}

/// Puts the objects into an index the way the watches do. Namespaced objects without a
/// namespace land in `default_namespace`, as `kubectl apply -n` would put them.
pub fn ingest(objects: Vec<Object>, default_namespace: &str) -> Ingested {
    ingest_for(objects, default_namespace, None)
}

/// [`ingest`] for a cluster of Kubernetes minor version `kube_minor` (1.x; `None`: the newest
/// onus knows): its PodSecurity admission's `latest`, and its default roles.
pub fn ingest_for(
    objects: Vec<Object>,
    default_namespace: &str,
    kube_minor: Option<u32>,
) -> Ingested {
    let mut ingester = Ingester::new(default_namespace, kube_minor);
    for object in objects {
        ingester.push(object);
    }
    ingester.finish()
}

/// [`ingest_for`] for objects read from a cluster (`onus report`): aggregated ClusterRoles keep
/// the rules the cluster's aggregation controller gave them, which is what the authorizer and
/// the controller read.
pub fn ingest_live(
    objects: Vec<Object>,
    default_namespace: &str,
    kube_minor: Option<u32>,
) -> Ingested {
    let mut ingester = Ingester::new(default_namespace, kube_minor);
    ingester.aggregate = false;
    for object in objects {
        ingester.push(object);
    }
    ingester.finish()
}

/// One object made ready for [`Ingester::push_prepared`] by [`prepare`]: all that
/// [`Ingester::push`] does that needs no other object (reading the kind, name and namespace,
/// decoding, projecting), so that it can run on the thread that parsed the object.
#[derive(Debug)]
pub struct Prepared {
    source: Source,
    outcome: Outcome,
}

#[derive(Debug)]
enum Outcome {
    /// Not an object that can be evaluated (no kind, no name): the reason.
    Error(String),
    /// A kind no control reads: its label in the skip counts, and the namespace it makes exist
    /// (none for a cluster-scoped kind).
    Skipped {
        label: String,
        namespace: Option<String>,
    },
    /// A kind a control reads: decoded and projected, or why it does not decode.
    Evaluated {
        kind_name: String,
        /// Not cluster-scoped: its namespace (the key's) exists.
        namespaced: bool,
        key: Key,
        projection: Result<Projection, String>,
    },
}

/// Prepares one object for the index: namespaced objects without a namespace land in
/// `default_namespace`. See [`Prepared`].
pub fn prepare(object: Object, default_namespace: &str) -> Prepared {
    let Object { source, value } = object;
    Prepared {
        source,
        outcome: outcome(value, default_namespace),
    }
}

fn outcome(mut value: Value, default_namespace: &str) -> Outcome {
    let api_version = str_at(&value, &["apiVersion"]).unwrap_or_default();
    let kind_name = str_at(&value, &["kind"]).unwrap_or_default().to_string();
    if api_version.is_empty() || kind_name.is_empty() {
        return Outcome::Error("object without apiVersion or kind".into());
    }
    let Some(kind) = Kind::recognise(api_version, &kind_name) else {
        let label = if api_version.contains('.') && !api_version.contains("k8s.io/") {
            format!("{kind_name} ({api_version})")
        } else {
            kind_name.clone()
        };
        // A namespaced object of another kind still makes its namespace exist.
        let namespace = (!cluster_scoped_kind(&kind_name)).then(|| {
            str_at(&value, &["metadata", "namespace"])
                .unwrap_or(default_namespace)
                .to_string()
        });
        return Outcome::Skipped { label, namespace };
    };
    let name = str_at(&value, &["metadata", "name"])
        .or_else(|| str_at(&value, &["metadata", "generateName"]))
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return Outcome::Error(format!("{kind_name} without metadata.name"));
    }
    if kind == Kind::Namespace
        && let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut)
    {
        // The API server sets it on every namespace (selectors use it).
        let labels = meta
            .entry("labels")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert(NAME_LABEL.into(), Value::String(name.clone()));
        }
    }
    let namespace = if kind.cluster_scoped() {
        None
    } else {
        let ns = str_at(&value, &["metadata", "namespace"])
            .unwrap_or(default_namespace)
            .to_string();
        // The projections read the namespace from the object, as the API server sets it.
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("namespace".into(), Value::String(ns.clone()));
        }
        Some(ns)
    };
    let key = Key::new(namespace.as_deref(), &name);
    Outcome::Evaluated {
        kind_name,
        namespaced: namespace.is_some(),
        projection: project(kind, &key, value),
        key,
    }
}

/// [`ingest_for`] one object at a time, as the reader parses them: each object is projected
/// into the index's facts when it is pushed and then dropped, so memory holds the facts, not
/// the manifests. What needs every object (namespaces only named by objects, Kubernetes'
/// default roles, the evaluation across objects) waits for [`Ingester::finish`] and the
/// evaluation of the index it returns.
#[derive(Debug)]
pub struct Ingester {
    out: Ingested,
    default_namespace: String,
    kube_minor: Option<u32>,
    /// Fill aggregated ClusterRoles' rules from the input (manifests; not a cluster's objects).
    aggregate: bool,
}

impl Ingester {
    pub fn new(default_namespace: &str, kube_minor: Option<u32>) -> Self {
        let mut out = Ingested::default();
        out.index.server_minor = kube_minor;
        Ingester {
            out,
            default_namespace: default_namespace.to_string(),
            kube_minor,
            aggregate: true,
        }
    }

    /// Puts one object into the index the way its watch does.
    pub fn push(&mut self, object: Object) {
        let prepared = prepare(object, &self.default_namespace);
        self.push_prepared(prepared);
    }

    /// Puts one object [`prepare`]d with this ingester's default namespace into the index:
    /// [`Ingester::push`] for an object prepared on another thread.
    pub fn push_prepared(&mut self, prepared: Prepared) {
        let Prepared { source, outcome } = prepared;
        let out = &mut self.out;
        match outcome {
            Outcome::Error(reason) => out.errors.push(InputError {
                file: source.file.to_string(),
                line: Some(source.line),
                reason,
            }),
            Outcome::Skipped { label, namespace } => {
                *out.skipped.entry(label).or_default() += 1;
                if let Some(ns) = namespace {
                    out.implied_namespaces.entry(ns).or_insert(source);
                }
            }
            Outcome::Evaluated {
                kind_name,
                namespaced,
                key,
                projection,
            } => {
                if namespaced {
                    out.implied_namespaces
                        .entry(key.namespace.clone())
                        .or_insert_with(|| source.clone());
                }
                let projection = match projection {
                    Ok(projection) => projection,
                    Err(reason) => {
                        out.errors.push(InputError {
                            file: source.file.to_string(),
                            line: Some(source.line),
                            reason: format!("{kind_name} {}: {reason}", key.name),
                        });
                        return;
                    }
                };
                projection.apply(&mut out.index);
                out.evaluated += 1;
                let id = (kind_name, key.namespace, key.name);
                if let Some(before) = out.locations.insert(id.clone(), source.clone()) {
                    out.duplicates.push((id, before, source));
                }
            }
        }
    }

    /// The index of every object pushed, with the namespaces they imply and Kubernetes'
    /// default roles.
    pub fn finish(self) -> Ingested {
        let Ingester {
            mut out,
            kube_minor,
            aggregate,
            ..
        } = self;
        // A namespace the objects only name exists with no label but the one the API server sets
        // on every namespace; one whose Namespace object is in the input is that object.
        let declared: Vec<String> = out
            .index
            .namespaces
            .iter()
            .map(|(k, _)| k.name.clone())
            .collect();
        for ns in declared {
            out.implied_namespaces.remove(&ns);
        }
        for ns in out.implied_namespaces.keys() {
            let fact = NamespaceFact {
                labels: [(NAME_LABEL.to_string(), ns.clone())].into(),
                ..NamespaceFact::default()
            };
            out.index.namespaces.apply(Key::new(None, ns), Some(fact));
        }
        // Kubernetes' default roles exist in every cluster (those of its version): bindings to
        // them grant their rules.
        let (cluster_roles, roles) = crate::rbac::defaults::for_minor(kube_minor).bootstrap_roles();
        for role in cluster_roles {
            let key = Key::new(None, role.metadata.name.as_deref().unwrap_or_default());
            if out.index.cluster_roles.get(&key).is_none() {
                out.index
                    .cluster_roles
                    .apply(key, facts::cluster_role(&role));
            }
        }
        for role in roles {
            let key = Key::new(
                role.metadata.namespace.as_deref(),
                role.metadata.name.as_deref().unwrap_or_default(),
            );
            if out.index.roles.get(&key).is_none() {
                out.index.roles.apply(key, facts::role(&role));
            }
        }
        // In a cluster kube-controller-manager fills the rules of aggregated ClusterRoles (the
        // controller reads them filled); here the ClusterRoles of the input and the defaults
        // are all there is to fill them from.
        let cluster_roles: Vec<_> = if aggregate {
            let all = out.index.cluster_roles.iter();
            all.map(|(_, role)| role.clone()).collect()
        } else {
            Vec::new()
        };
        for aggregated in crate::rbac::aggregation::aggregate(cluster_roles.iter().map(|r| &**r)) {
            let key = Key::new(None, &aggregated.name);
            if let Some(role) = out.index.cluster_roles.get(&key)
                && role.rules.as_deref() != Some(aggregated.rules.as_slice())
            {
                let mut filled = (**role).clone();
                filled.rules = Some(aggregated.rules);
                out.index
                    .cluster_roles
                    .apply(key, Some(std::sync::Arc::new(filled)));
            }
            let id = ("ClusterRole".to_string(), String::new(), aggregated.name);
            if let Some(source) = out.locations.get(&id) {
                out.aggregations.push(AggregationNote {
                    name: id.2,
                    source: source.clone(),
                    selected: aggregated.selected,
                });
            }
        }
        out.aggregations.sort_by(|a, b| a.source.cmp(&b.source));
        out
    }
}

/// The label the API server sets on every namespace, to its name.
pub const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The policy `onus check` uses without `--policy`: PaaS, Pod Security restricted at
/// `latest`, every family enabled, the CRD's defaults otherwise (defaultDeny Ingress).
pub fn default_policy() -> ResponsibilityPolicySpec {
    ResponsibilityPolicySpec {
        service_model: ServiceModel::PaaS,
        mode: Mode::Audit,
        namespace_selector: None,
        excluded_namespaces: Vec::new(),
        include_system_namespaces: Vec::new(),
        controls: Controls::default(),
        responsibilities: Vec::new(),
        exceptions: Vec::new(),
        admission: None,
    }
}

/// Where an offender is in the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// The object starts here.
    Object(Source),
    /// Not in the input but existing by its namespace (a namespace only objects name, a
    /// namespace's `default` ServiceAccount): where that namespace comes from (its Namespace
    /// object, else the first object that uses it).
    ImpliedBy(Source),
    /// Not in the input (e.g. a binding's default subject).
    Unknown,
}

/// One offending object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offender {
    /// As status shows it, e.g. `Deployment/shop/web`.
    pub object: String,
    pub location: Location,
}

/// One control's result.
#[derive(Clone, Debug)]
pub struct ControlReport {
    pub control: &'static Control,
    pub owner: Owner,
    pub owner_source: OwnerSource,
    pub result: ControlResult,
    pub offenders: Vec<Offender>,
    pub excepted: u64,
}

/// The whole result of a check.
#[derive(Debug)]
pub struct Report {
    pub controls: Vec<ControlReport>,
    pub gaps: Vec<Gap>,
    pub namespaces: usize,
    /// The Pod Security version workloads were judged at.
    pub pod_security_version: Version,
    pub expired_exceptions: Vec<usize>,
}

impl Report {
    /// The failing controls (as the controller's Compliant condition counts them).
    pub fn failing(&self) -> impl Iterator<Item = &ControlReport> {
        self.controls
            .iter()
            .filter(|c| c.result == ControlResult::Fail)
    }
}

/// Evaluates the policy on the ingested objects with the controller's evaluation.
pub fn check(spec: &ResponsibilityPolicySpec, ingested: &Ingested, now: Timestamp) -> Report {
    let evaluation: Evaluation = evaluate::evaluate(spec, &ingested.index, now);
    let locate = |v: &evaluate::Violation| -> Location {
        let cluster_scoped = matches!(
            v.kind.as_str(),
            "Namespace" | "ClusterRole" | "ClusterRoleBinding"
        );
        let ns = if cluster_scoped {
            String::new()
        } else {
            v.namespace.clone().unwrap_or_default()
        };
        let id = (v.kind.clone(), ns, v.name.clone());
        if let Some(source) = ingested.locations.get(&id) {
            return Location::Object(source.clone());
        }
        // A namespace only named by objects, and the `default` ServiceAccount Kubernetes
        // creates in every namespace: shown where their namespace comes from.
        let implied_in = match (v.kind.as_str(), v.name.as_str()) {
            ("Namespace", name) => Some(name),
            ("ServiceAccount", "default") => v.namespace.as_deref(),
            _ => None,
        };
        let namespace_source = implied_in.and_then(|ns| {
            ingested.implied_namespaces.get(ns).or_else(|| {
                ingested
                    .locations
                    .get(&("Namespace".to_string(), String::new(), ns.to_string()))
            })
        });
        match namespace_source {
            Some(source) => Location::ImpliedBy(source.clone()),
            None => Location::Unknown,
        }
    };
    let controls = evaluation
        .outcomes
        .iter()
        .map(|o| ControlReport {
            control: o.control,
            owner: o.owner,
            owner_source: o.owner_source,
            result: o.result,
            offenders: o
                .violations
                .iter()
                .map(|v| Offender {
                    object: v.example.clone(),
                    location: locate(v),
                })
                .collect(),
            excepted: o.excepted,
        })
        .collect();
    Report {
        controls,
        gaps: evaluation.gaps,
        namespaces: evaluation.namespaces,
        pod_security_version: ingested
            .index
            .admission_version(evaluate::pod_security_version(spec)),
        expired_exceptions: evaluation.expired_exceptions,
    }
}

/// Exit codes of `onus check`.
pub const EXIT_PASS: i32 = 0;
pub const EXIT_VIOLATIONS: i32 = 1;
pub const EXIT_BAD_INPUT: i32 = 2;

/// 2 when any input was bad (the verdict is incomplete), else 1 when a control fails, else 0.
pub fn exit_code(report: &Report, input_errors: usize) -> i32 {
    if input_errors > 0 {
        EXIT_BAD_INPUT
    } else if report.failing().next().is_some() {
        EXIT_VIOLATIONS
    } else {
        EXIT_PASS
    }
}

#[cfg(test)]
mod tests;
