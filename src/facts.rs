//! Projection of watched objects into compact security facts.
//!
//! Each watched object is reduced once, when its event arrives, to what the checks need; the
//! index keeps the fact and drops the object. Workload facts keep a stripped pod template
//! (Pod Security must be evaluated at each policy's own level and version).

pub mod backends;
mod network;
mod pods;
pub mod wire;
pub use network::network_policy;
pub use pods::{OwnedPodFact, job_owner, owned_pod, replica_set_owner, security_spec};

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::Arc,
};

use crate::{
    crd::PodSecurityLevel,
    podsecurity::{Controls, Verdicts, Version},
};
use k8s_openapi::{
    api::{
        core::v1::{Namespace, Service, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

/// Kinds of objects that run pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob,
    Pod,
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Namespace name and labels (selection and Pod Security labels).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceFact {
    pub labels: BTreeMap<String, String>,
    /// onus has applied Pod Security labels here (its marker annotation is present).
    pub onus_labels: bool,
    /// Being deleted: nothing can be created in it any more, and everything in it goes.
    pub terminating: bool,
    /// Pod Security label keys that onus's server-side apply owns (from managedFields).
    pub onus_owned: BTreeSet<String>,
    /// Of those, the keys another manager owns too: it keeps them when onus lets go.
    pub onus_shared: BTreeSet<String>,
    /// Pod Security label values onus replaced, to restore when it lets go.
    pub previous: BTreeMap<String, String>,
}

/// Label on every object onus creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "onus");
/// Annotation on objects onus changed but does not own; its value says what onus set.
pub const MANAGED_ANNOTATION: &str = "onus.dev/managed";
/// Annotation naming the policies an onus-created object serves.
pub const POLICIES_ANNOTATION: &str = "onus.dev/policies";
/// Annotation on a namespace with the Pod Security label values onus replaced (JSON object).
pub const PREVIOUS_ANNOTATION: &str = "onus.dev/previous-labels";
/// Name of the default-deny NetworkPolicy onus creates in Enforce mode.
pub const DEFAULT_DENY: &str = "onus-default-deny";

/// What a default-deny NetworkPolicy denies; also the desired shape of onus's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenySpec {
    pub ingress: bool,
    pub egress: bool,
    /// Egress to port 53 stays open.
    pub dns: bool,
}

impl DenySpec {
    /// What this deny and `other` both deny (DNS open if either leaves it open).
    pub fn within(self, other: DenySpec) -> DenySpec {
        let egress = self.egress && other.egress;
        DenySpec {
            ingress: self.ingress && other.ingress,
            egress,
            dns: egress && (self.dns || other.dns),
        }
    }
}

/// onus's own `onus-default-deny`, as found in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnusDeny {
    pub deny: DenySpec,
    pub policies: String,
}

/// A workload evaluated through its pod template.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadFact {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    /// Every Pod Security check's outcome for the template, at once (four bytes): answers any
    /// policy's level and version without keeping the template.
    pub verdicts: Verdicts,
    /// Containers that take a Secret through an env var (DAT-01).
    pub secret_env: Vec<String>,
}

impl WorkloadFact {
    /// The WKL controls the workload fails at a Pod Security level and version.
    pub fn failing_controls(&self, level: PodSecurityLevel, version: Version) -> Controls {
        self.verdicts.failing(level, version)
    }
}

/// What a NetworkPolicy contributes to NET-01..NET-03.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkPolicyFact {
    /// Selects every pod, covers Ingress and allows no ingress.
    pub denies_ingress: bool,
    /// Selects every pod, covers Egress and allows no egress (DNS allowances aside).
    pub denies_egress: bool,
    /// Directions in which a rule allows every peer (an empty `from`/`to`).
    pub allows_all: Vec<&'static str>,
    /// Set when this is onus's `onus-default-deny` (name and managed-by label).
    pub onus: Option<OnusDeny>,
    /// Named `onus-default-deny` but not created by onus: onus leaves it alone.
    pub foreign_name: bool,
}

/// The `automountServiceAccountToken` of a namespace's `default` ServiceAccount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultServiceAccountFact {
    pub automount: Option<bool>,
    /// onus has set the automount field (its marker annotation is present).
    pub onus_managed: bool,
}

/// A Service that sets `externalIPs` (NET-05). Services without them project to nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalIpsFact {
    pub ips: usize,
}

/// A Service's cluster IPs: an admission webhook called by an IP address calls the Service
/// that has it (the default-deny gate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterIpsFact {
    pub ips: Vec<std::net::IpAddr>,
    /// `spec.externalIPs` and load-balancer ingress IPs: kube-proxy delivers what the API
    /// server sends there to the same endpoints.
    pub external: Vec<std::net::IpAddr>,
}

impl ClusterIpsFact {
    /// Every address that reaches the Service, with what it is (`cluster IP`, `external IP`).
    pub fn addresses(&self) -> impl Iterator<Item = (&'static str, &std::net::IpAddr)> {
        let cluster = self.ips.iter().map(|ip| ("cluster IP", ip));
        cluster.chain(self.external.iter().map(|ip| ("external IP", ip)))
    }
}

fn strip_meta(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        // Labels select roles into aggregated ClusterRoles; no RBAC check reads annotations
        // (they can be large: kubectl's last-applied-configuration).
        labels: meta.labels.clone(),
        ..ObjectMeta::default()
    }
}

/// Projects a namespace.
pub fn namespace(ns: &Namespace) -> Option<NamespaceFact> {
    let (onus_owned, onus_shared) = applied_keys(&ns.metadata, "f:labels", POD_SECURITY_PREFIX);
    // onus's marker and record count only while onus's own apply owns them: anyone who may
    // annotate the namespace could otherwise make onus "restore" a weaker label on release
    // (writing or overwriting the annotation takes the field from onus).
    let (onus_annotations, _) = applied_keys(&ns.metadata, "f:annotations", "onus.dev/");
    let previous = ns
        .metadata
        .annotations
        .as_ref()
        .filter(|_| onus_annotations.contains(PREVIOUS_ANNOTATION))
        .and_then(|a| a.get(PREVIOUS_ANNOTATION))
        // Unreadable (edited by hand): restore nothing rather than guess.
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default();
    Some(NamespaceFact {
        labels: ns.metadata.labels.clone().unwrap_or_default(),
        onus_labels: has_annotation(&ns.metadata, MANAGED_ANNOTATION)
            && onus_annotations.contains(MANAGED_ANNOTATION),
        terminating: ns.metadata.deletion_timestamp.is_some(),
        onus_owned,
        onus_shared,
        previous,
    })
}

const POD_SECURITY_PREFIX: &str = "pod-security.kubernetes.io/";

/// The keys of `metadata.<field>` (`f:labels`, `f:annotations`) starting with `prefix` that
/// onus's server-side apply owns, and those of them another manager owns too.
fn applied_keys(
    meta: &ObjectMeta,
    field: &str,
    prefix: &str,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut onus = BTreeSet::new();
    let mut others = BTreeSet::new();
    for entry in meta.managed_fields.iter().flatten() {
        let mine = entry.manager.as_deref() == Some(crate::FIELD_MANAGER)
            && entry.operation.as_deref() == Some("Apply");
        let keys = entry
            .fields_v1
            .as_ref()
            .and_then(|f| f.0.get("f:metadata")?.get(field)?.as_object())
            .into_iter()
            .flat_map(|m| m.keys())
            .filter_map(|k| k.strip_prefix("f:"))
            .filter(|k| k.starts_with(prefix))
            .map(String::from);
        if mine {
            onus.extend(keys);
        } else {
            others.extend(keys);
        }
    }
    let shared = onus.intersection(&others).cloned().collect();
    (onus, shared)
}

fn has_annotation(meta: &ObjectMeta, key: &str) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(key))
}

fn managed_by_onus(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY.0))
        .is_some_and(|v| v == MANAGED_BY.1)
}

/// The API group of each workload controller kind.
fn controller_group(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => Some("apps/"),
        "Job" | "CronJob" => Some("batch/"),
        _ => None,
    }
}

/// True when the object is controlled by an object of one of `kinds`, in that kind's own API
/// group: such objects are evaluated through their controller and not counted twice. A claim
/// of a kind in another group (`batch/v1` ReplicaSet) names no object any controller or the
/// garbage collector acts on, so nothing keeps it honest: it is not trusted.
fn controlled_by(meta: &wire::Meta, kinds: &[&str]) -> bool {
    meta.controller().is_some_and(|o| {
        kinds.contains(&o.kind.as_str())
            && controller_group(&o.kind).is_some_and(|group| o.api_version.starts_with(group))
    })
}

fn workload_fact(
    kind: WorkloadKind,
    meta: &wire::Meta,
    template_meta: Option<&wire::Meta>,
    spec: Option<&wire::SlimPodSpec>,
) -> Option<WorkloadFact> {
    let spec = spec?;
    let secret_env = spec.secret_env();
    let template_meta = template_meta
        .map(wire::Meta::annotations_only)
        .unwrap_or_default();
    let verdicts = Verdicts::of(&template_meta, &spec.clone().into_pod_spec());
    Some(WorkloadFact {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        verdicts,
        secret_env,
    })
}

/// Projects a Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob through its pod
/// template. A ReplicaSet a Deployment controls, and a Job a CronJob controls, project to
/// nothing: their Pods count through the controller above them.
pub fn workload(kind: WorkloadKind, obj: &wire::WorkloadObject) -> Option<WorkloadFact> {
    let above = match kind {
        WorkloadKind::ReplicaSet => Some("Deployment"),
        WorkloadKind::Job => Some("CronJob"),
        WorkloadKind::Pod => return None,
        _ => None,
    };
    if above.is_some_and(|above| controlled_by(&obj.metadata, &[above])) {
        return None;
    }
    let template = obj.template(kind == WorkloadKind::CronJob)?;
    workload_fact(
        kind,
        &obj.metadata,
        template.metadata.as_ref(),
        template.spec.as_ref(),
    )
}

macro_rules! workload_kinds {
    ($($fn:ident: $kind:ident),*) => {$(
        #[doc = concat!("Projects a ", stringify!($kind), " (see [`workload`]).")]
        pub fn $fn(obj: &wire::WorkloadObject) -> Option<WorkloadFact> {
            workload(WorkloadKind::$kind, obj)
        }
    )*};
}
workload_kinds!(deployment: Deployment, stateful_set: StatefulSet, daemon_set: DaemonSet,
    replica_set: ReplicaSet, job: Job, cron_job: CronJob);

/// The controllers whose Pods roll up into them (kept as [`OwnedPodFact`]s).
const POD_CONTROLLERS: &[&str] = &["ReplicaSet", "StatefulSet", "DaemonSet", "Job"];

/// Projects a bare Pod; Pods run by a workload controller are evaluated through it (and kept
/// apart, see [`owned_pod`]).
pub fn pod(p: &wire::PodObject) -> Option<WorkloadFact> {
    if controlled_by(&p.metadata, POD_CONTROLLERS) {
        return None;
    }
    workload_fact(
        WorkloadKind::Pod,
        &p.metadata,
        Some(&p.metadata),
        p.spec.as_ref(),
    )
}

/// Projects a namespace's `default` ServiceAccount; other ServiceAccounts project to nothing.
pub fn default_service_account(sa: &ServiceAccount) -> Option<DefaultServiceAccountFact> {
    (sa.metadata.name.as_deref() == Some("default")).then_some(DefaultServiceAccountFact {
        automount: sa.automount_service_account_token,
        // Only onus's own marker: a forged one would have onus "release" a setting it never
        // made, announcing it on every convergence.
        onus_managed: has_annotation(&sa.metadata, MANAGED_ANNOTATION)
            && applied_keys(&sa.metadata, "f:annotations", MANAGED_ANNOTATION)
                .0
                .contains(MANAGED_ANNOTATION),
    })
}

/// Projects a Service with externalIPs; others project to nothing.
pub fn external_ips(svc: &Service) -> Option<ExternalIpsFact> {
    let ips = svc.spec.as_ref()?.external_ips.as_ref()?.len();
    (ips > 0).then_some(ExternalIpsFact { ips })
}

/// Projects a Service's cluster IPs (`spec.clusterIPs`, else `spec.clusterIP`); a headless
/// Service (`None`) or one without projects to nothing.
pub fn cluster_ips(svc: &Service) -> Option<ClusterIpsFact> {
    let spec = svc.spec.as_ref()?;
    let parsed = |ips: &mut dyn Iterator<Item = &String>| {
        let mut ips: Vec<std::net::IpAddr> = ips
            .filter_map(|ip| ip.parse().ok())
            .map(|ip: std::net::IpAddr| ip.to_canonical())
            .collect();
        ips.sort();
        ips.dedup();
        ips
    };
    let ips = parsed(
        &mut spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter()),
    );
    let balanced = svc
        .status
        .iter()
        .filter_map(|s| s.load_balancer.as_ref()?.ingress.as_ref())
        .flatten()
        .filter_map(|i| i.ip.as_ref());
    let external = parsed(&mut spec.external_ips.iter().flatten().chain(balanced));
    (!ips.is_empty() || !external.is_empty()).then_some(ClusterIpsFact { ips, external })
}

macro_rules! rbac_projection {
    ($($fn:ident: $ty:ty),*) => {$(
        /// Keeps the RBAC object without managedFields and status noise.
        pub fn $fn(obj: &$ty) -> Option<Arc<$ty>> {
            let mut obj = obj.clone();
            obj.metadata = strip_meta(&obj.metadata);
            Some(Arc::new(obj))
        }
    )*};
}
rbac_projection!(role: Role, cluster_role: ClusterRole, role_binding: RoleBinding, cluster_role_binding: ClusterRoleBinding);

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use serde_json::json;

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("fixture")
    }

    #[test]
    fn a_pod_run_by_a_replica_set_is_counted_through_it() {
        let p: wire::PodObject = from(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "1", "controller": true}]},
            "spec": {"containers": [{"name": "app"}]}
        }));
        assert_eq!(pod(&p), None);
    }

    #[test]
    fn a_pod_run_by_an_unknown_controller_is_evaluated_directly() {
        let p: wire::PodObject = from(json!({
            "metadata": {"name": "db-0", "namespace": "shop", "ownerReferences": [
                {"apiVersion": "example.com/v1", "kind": "Database", "name": "db", "uid": "1", "controller": true}]},
            "spec": {"containers": [{"name": "app"}]}
        }));
        assert_eq!(pod(&p).map(|w| w.kind), Some(WorkloadKind::Pod));
    }

    #[test]
    fn secrets_in_env_vars_are_noted_and_env_values_dropped() {
        let d: wire::WorkloadObject = from(json!({
            "metadata": {"name": "api", "namespace": "shop"},
            "spec": {"selector": {}, "template": {"spec": {"containers": [
                {"name": "app", "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]},
                {"name": "sidecar", "env": [{"name": "MODE", "value": "x"}]}
            ]}}}
        }));
        let fact = deployment(&d).expect("fact");
        assert_eq!(fact.secret_env, ["app"]);
    }

    #[test]
    fn an_empty_selector_without_rules_denies_ingress_only_by_default() {
        let np: NetworkPolicy =
            from(json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}}}));
        let fact = network_policy(&np).expect("fact");
        assert!(fact.denies_ingress);
        assert!(!fact.denies_egress);
    }

    #[test]
    fn egress_deny_with_a_dns_allowance_still_denies_egress() {
        let np: NetworkPolicy = from(json!({"metadata": {"name": "deny"}, "spec": {
            "podSelector": {}, "policyTypes": ["Ingress", "Egress"],
            "egress": [{"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]
        }}));
        let fact = network_policy(&np).expect("fact");
        assert!(fact.denies_ingress && fact.denies_egress);
        assert!(fact.allows_all.is_empty());
    }

    #[test]
    fn an_ingress_rule_without_peers_allows_everyone() {
        let np: NetworkPolicy = from(json!({"metadata": {"name": "open"}, "spec": {
            "podSelector": {}, "ingress": [{}]
        }}));
        let fact = network_policy(&np).expect("fact");
        assert!(!fact.denies_ingress);
        assert_eq!(fact.allows_all, ["Ingress"]);
    }

    #[test]
    fn only_the_default_service_account_is_kept() {
        let sa: ServiceAccount = from(json!({"metadata": {"name": "builder"}}));
        assert_eq!(default_service_account(&sa), None);
        let sa: ServiceAccount =
            from(json!({"metadata": {"name": "default"}, "automountServiceAccountToken": false}));
        assert_eq!(
            default_service_account(&sa).and_then(|f| f.automount),
            Some(false)
        );
    }
}

#[cfg(test)]
mod ownership_tests;
#[cfg(test)]
mod proptests;
