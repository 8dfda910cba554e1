//! In-memory index of facts, fed by watch events through pure `apply`/`delete`/`reset`.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};

use crate::{
    crd::PodSecurityLevel,
    facts::{
        ClusterIpsFact, DefaultServiceAccountFact, ExternalIpsFact, NamespaceFact,
        NetworkPolicyFact, OwnedPodFact, WorkloadFact, WorkloadKind,
    },
    podsecurity::{Controls, Version},
    rbac::RbacSnapshot,
};

/// Identifies an object: namespace ("" when cluster-scoped) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
    /// Key of a namespaced or cluster-scoped object.
    pub fn new(namespace: Option<&str>, name: &str) -> Self {
        Key {
            namespace: namespace.unwrap_or_default().to_string(),
            name: name.to_string(),
        }
    }
}

/// Facts of one kind of object, keyed by object; `None` projections are not stored.
#[derive(Debug)]
pub struct FactMap<F> {
    facts: BTreeMap<Key, F>,
    /// Objects received since a watch (re)started, swapped in when the initial list is complete.
    pending: Option<BTreeMap<Key, F>>,
    synced: bool,
}

impl<F> Default for FactMap<F> {
    fn default() -> Self {
        FactMap {
            facts: BTreeMap::new(),
            pending: None,
            synced: false,
        }
    }
}

impl<F: PartialEq> FactMap<F> {
    /// Records an added or modified object. Returns whether the facts changed.
    pub fn apply(&mut self, key: Key, fact: Option<F>) -> bool {
        match fact {
            Some(f) if self.facts.get(&key) == Some(&f) => false,
            Some(f) => {
                self.facts.insert(key, f);
                true
            }
            None => self.facts.remove(&key).is_some(),
        }
    }

    /// Records a deleted object. Returns whether the facts changed.
    pub fn delete(&mut self, key: &Key) -> bool {
        self.facts.remove(key).is_some()
    }

    /// A watch (re)started: collect the listed objects until [`FactMap::reset_done`].
    pub fn reset_start(&mut self) {
        self.pending = Some(BTreeMap::new());
    }

    /// An object of the initial list.
    pub fn reset_apply(&mut self, key: Key, fact: Option<F>) {
        if let (Some(pending), Some(f)) = (self.pending.as_mut(), fact) {
            pending.insert(key, f);
        }
    }

    /// An object of the initial list that could not be decoded: its last readable facts, if
    /// any, are carried into the new list (as a watch event keeps them), so a relist cannot
    /// make its violations vanish.
    pub fn reset_keep(&mut self, key: &Key)
    where
        F: Clone,
    {
        if let (Some(pending), Some(f)) = (self.pending.as_mut(), self.facts.get(key)) {
            pending.insert(key.clone(), f.clone());
        }
    }

    /// The initial list is complete: it replaces what was known. Returns whether facts changed.
    pub fn reset_done(&mut self) -> bool {
        self.synced = true;
        match self.pending.take() {
            Some(pending) if pending != self.facts => {
                self.facts = pending;
                true
            }
            _ => false,
        }
    }

    /// Whether the first complete list has arrived.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// All facts in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &F)> {
        self.facts.iter()
    }

    /// The facts of the objects in one namespace, in name order.
    pub fn in_namespace<'a>(
        &'a self,
        namespace: &str,
    ) -> impl Iterator<Item = (&'a Key, &'a F)> + 'a {
        let start = Key::new(Some(namespace), "");
        let namespace = namespace.to_string();
        self.facts
            .range(start..)
            .take_while(move |(k, _)| k.namespace == namespace)
    }

    /// The fact of one object.
    pub fn get(&self, key: &Key) -> Option<&F> {
        self.facts.get(key)
    }

    /// Whether no fact is stored.
    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }
}

/// Everything onus knows about the cluster, as facts.
#[derive(Debug, Default)]
pub struct Index {
    /// Counts changes to any fact: equal generations mean the same cluster state.
    pub generation: u64,
    /// Which parts of the index changed when (see [`Index::touch`]).
    pub generations: Generations,
    pub namespaces: FactMap<NamespaceFact>,
    pub workloads: HashMap<WorkloadKind, FactMap<WorkloadFact>>,
    /// Pods run by a ReplicaSet, StatefulSet, DaemonSet or Job (the same watch as bare Pods).
    pub owned_pods: FactMap<OwnedPodFact>,
    /// ReplicaSets a Deployment controls, to that Deployment's name (the ReplicaSet watch).
    pub replica_set_owners: FactMap<String>,
    /// Jobs a CronJob controls, to that CronJob's name (the Job watch).
    pub job_owners: FactMap<String>,
    /// The API server's minor version (1.x), once read: its PodSecurity admission's `latest`.
    pub server_minor: Option<u32>,
    pub network_policies: FactMap<NetworkPolicyFact>,
    pub default_service_accounts: FactMap<DefaultServiceAccountFact>,
    pub external_ips: FactMap<ExternalIpsFact>,
    /// Services' cluster IPs, for webhooks called by an IP address.
    pub service_ips: FactMap<ClusterIpsFact>,
    pub roles: FactMap<Arc<Role>>,
    pub cluster_roles: FactMap<Arc<ClusterRole>>,
    pub role_bindings: FactMap<Arc<RoleBinding>>,
    pub cluster_role_bindings: FactMap<Arc<ClusterRoleBinding>>,
    /// Namespaces the API server calls back into (webhooks, conversion, APIServices): where
    /// onus holds its default-deny.
    pub backends: Backends,
    /// Kinds whose watch the API server refuses (403) since their last complete list: kind →
    /// its message. Their facts are what onus last saw.
    pub refused: BTreeMap<&'static str, String>,
    /// Objects of the evaluated kinds that the watches could not decode (the backends' are
    /// in `backends`): what the controls read from them is unknown.
    pub undecodable: Undecodable<&'static str>,
    /// The namespace onus itself runs in (`$POD_NAMESPACE`), when known: never given a
    /// default-deny by onus.
    pub own_namespace: Option<String>,
}

impl Index {
    /// Records that a fact of kind `kind` (the Kubernetes kind) changed, in `namespace` when
    /// that is known (`None`: possibly anywhere, e.g. a relist). Every change of facts must be
    /// recorded here: the evaluation caches trust these generations.
    pub fn touch(&mut self, kind: &str, namespace: Option<&str>) {
        self.generation = self.generation.wrapping_add(1);
        self.generations.touch(kind, namespace);
    }

    /// The fact map of one workload kind.
    pub fn workloads_mut(&mut self, kind: WorkloadKind) -> &mut FactMap<WorkloadFact> {
        self.workloads.entry(kind).or_default()
    }

    /// The workload facts of one namespace, every kind, in a stable order.
    pub fn workloads_in(&self, namespace: &str) -> Vec<&WorkloadFact> {
        let mut all: Vec<&WorkloadFact> = self
            .workloads
            .values()
            .flat_map(|m| m.in_namespace(namespace).map(|(_, w)| w))
            .collect();
        all.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        all
    }

    /// What `namespace` backs: what calls its Services by reference or by DNS name, and what
    /// calls one of its Services' addresses by URL (`webhook x (by cluster IP 10.96.0.12)`,
    /// `... (by external IP 203.0.113.7)`).
    pub fn backs(&self, namespace: &str) -> Vec<String> {
        let mut backs = self.backends.in_namespace(namespace).to_vec();
        if self.backends.calls_ips() {
            for (_, fact) in self.service_ips.in_namespace(namespace) {
                for (what, ip) in fact.addresses() {
                    for b in self.backends.calling(ip) {
                        backs.push(format!("{b} (by {what} {ip})"));
                    }
                }
            }
        }
        backs.sort();
        backs.dedup();
        backs
    }

    /// The namespaces a backend object of `kind` points into: those of the Services it names,
    /// and those of the Services whose address it calls.
    pub fn backend_namespaces(
        &self,
        kind: crate::facts::backends::BackendKind,
        key: &Key,
    ) -> BTreeSet<String> {
        let mut namespaces = self.backends.namespaces_of(kind, key);
        let ips = self.backends.ips_of(kind, key);
        if !ips.is_empty() {
            namespaces.extend(
                self.service_ips
                    .iter()
                    .filter(|(_, f)| f.addresses().any(|(_, ip)| ips.contains(ip)))
                    .map(|(k, _)| k.namespace.clone()),
            );
        }
        namespaces
    }

    /// Every namespace that backs something (see [`Index::backs`]).
    pub fn backing_namespaces(&self) -> BTreeSet<String> {
        let mut namespaces: BTreeSet<String> = self.backends.namespaces().cloned().collect();
        if self.backends.calls_ips() {
            namespaces.extend(
                self.service_ips
                    .iter()
                    .filter(|(_, f)| {
                        f.addresses()
                            .any(|(_, ip)| !self.backends.calling(ip).is_empty())
                    })
                    .map(|(k, _)| k.namespace.clone()),
            );
        }
        namespaces
    }

    /// The Pod Security version the server's admission applies for `version` (see
    /// [`Version::on_server`]): what workloads are judged at.
    pub fn admission_version(&self, version: Version) -> Version {
        version.on_server(self.server_minor)
    }

    /// The workload whose template a controller's Pods were made from: a ReplicaSet's
    /// Deployment, a Job's CronJob, otherwise the controller itself (when it is known).
    pub fn template_of(
        &self,
        namespace: &str,
        controller: &(WorkloadKind, String),
    ) -> Option<&WorkloadFact> {
        let (kind, name) = controller;
        let key = Key::new(Some(namespace), name);
        let above = match kind {
            WorkloadKind::ReplicaSet => self
                .replica_set_owners
                .get(&key)
                .map(|d| (WorkloadKind::Deployment, d)),
            WorkloadKind::Job => self
                .job_owners
                .get(&key)
                .map(|c| (WorkloadKind::CronJob, c)),
            _ => None,
        };
        let (kind, key) = match above {
            Some((kind, name)) => (kind, Key::new(Some(namespace), name)),
            None => (*kind, key),
        };
        self.workloads.get(&kind)?.get(&key)
    }

    /// The owned Pods of a namespace that fail Pod Security controls their template does not
    /// fail, with those controls, in name order. A Pod whose template is not known (yet) is
    /// judged alone: the gate errs on the side of waiting.
    pub fn pods_beyond_templates(
        &self,
        namespace: &str,
        level: PodSecurityLevel,
        version: Version,
    ) -> Vec<(&str, Controls)> {
        let mut beyond = Vec::new();
        for (key, pod) in self.owned_pods.in_namespace(namespace) {
            let failing = pod.failing_controls(level, version);
            if failing.is_empty() {
                continue;
            }
            let template = self
                .template_of(namespace, &pod.controller)
                .map(|t| t.failing_controls(level, version))
                .unwrap_or_default();
            let extra = failing.difference(template);
            if !extra.is_empty() {
                beyond.push((key.name.as_str(), extra));
            }
        }
        beyond
    }

    /// The owned Pods of a namespace that take a Secret through an env var (DAT-01) while
    /// their template does not, in name order. A Pod whose template is not known (yet) is
    /// judged alone.
    pub fn pods_with_secret_env_beyond_templates(&self, namespace: &str) -> Vec<&str> {
        self.owned_pods
            .in_namespace(namespace)
            .filter(|(_, pod)| {
                pod.secret_env
                    && self
                        .template_of(namespace, &pod.controller)
                        .is_none_or(|t| t.secret_env.is_empty())
            })
            .map(|(key, _)| key.name.as_str())
            .collect()
    }

    /// The RBAC objects as the rbac module takes them.
    pub fn rbac(&self) -> RbacSnapshot {
        RbacSnapshot {
            kubernetes_minor: self.server_minor,
            roles: self.roles.iter().map(|(_, r)| r.clone()).collect(),
            cluster_roles: self.cluster_roles.iter().map(|(_, r)| r.clone()).collect(),
            role_bindings: self.role_bindings.iter().map(|(_, r)| r.clone()).collect(),
            cluster_role_bindings: self
                .cluster_role_bindings
                .iter()
                .map(|(_, r)| r.clone())
                .collect(),
        }
    }
}

mod backends;
mod generations;
#[cfg(test)]
pub(crate) mod testing;
mod undecodable;

pub use backends::Backends;
pub use generations::{Generations, NamespaceStamp, RBAC_KINDS};
pub use undecodable::Undecodable;

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        Key::new(Some("ns"), name)
    }

    #[test]
    fn applying_the_same_fact_twice_is_not_a_change() {
        let mut map = FactMap::default();
        assert!(map.apply(key("a"), Some(1)));
        assert!(!map.apply(key("a"), Some(1)));
        assert!(map.apply(key("a"), Some(2)));
    }

    #[test]
    fn an_object_that_projects_to_nothing_removes_its_old_fact() {
        let mut map = FactMap::default();
        map.apply(key("svc"), Some(1));
        assert!(map.apply(key("svc"), None));
        assert!(map.is_empty());
    }

    #[test]
    fn a_namespace_range_holds_exactly_that_namespace() {
        let mut map = FactMap::default();
        for (ns, name) in [("a", "x"), ("ab", "y"), ("b", "z"), ("a", "w")] {
            map.apply(Key::new(Some(ns), name), Some(()));
        }
        let names: Vec<_> = map
            .in_namespace("a")
            .map(|(k, _)| k.name.as_str())
            .collect();
        assert_eq!(names, ["w", "x"]);
        assert_eq!(map.in_namespace("c").count(), 0);
    }

    #[test]
    fn a_relist_replaces_objects_deleted_while_the_watch_was_down() {
        let mut map = FactMap::default();
        map.apply(key("kept"), Some(1));
        map.apply(key("gone"), Some(2));
        map.reset_start();
        map.reset_apply(key("kept"), Some(1));
        assert!(map.reset_done());
        assert_eq!(
            map.iter().map(|(k, _)| k.name.as_str()).collect::<Vec<_>>(),
            ["kept"]
        );
        assert!(map.synced());
    }

    use super::testing::{debugged_spec, deployment, deployment_pod, restricted_spec};
    use crate::crd::PodSecurityLevel::Restricted;
    use serde_json::json;

    fn privileged_spec() -> serde_json::Value {
        json!({"containers": [{"name": "app", "securityContext": {"privileged": true}}]})
    }

    #[test]
    fn a_pod_that_fails_only_what_its_template_fails_adds_nothing() {
        let mut index = Index::default();
        deployment(&mut index, "shop", "web", privileged_spec());
        deployment_pod(&mut index, "shop", "web", "web-1", privileged_spec());
        assert_eq!(
            index.pods_beyond_templates("shop", Restricted, Version::Latest),
            []
        );
    }

    #[test]
    fn a_pod_that_fails_more_than_its_deployment_template_is_named_with_the_difference() {
        let mut index = Index::default();
        deployment(&mut index, "shop", "web", restricted_spec());
        deployment_pod(&mut index, "shop", "web", "web-1", debugged_spec());
        deployment_pod(&mut index, "shop", "web", "web-2", restricted_spec());
        let beyond = index.pods_beyond_templates("shop", Restricted, Version::Minor(30));
        let beyond: Vec<_> = beyond
            .into_iter()
            .map(|(pod, controls)| (pod, controls.iter().collect::<Vec<_>>()))
            .collect();
        assert_eq!(beyond, [("web-1", vec!["WKL-04"])]);
        assert_eq!(
            index.pods_beyond_templates("other", Restricted, Version::Latest),
            []
        );
    }

    #[test]
    fn a_pod_whose_template_is_unknown_is_judged_alone() {
        let mut index = Index::default();
        // The ReplicaSet's link to its Deployment is known, the Deployment is not (yet).
        deployment_pod(&mut index, "shop", "web", "web-1", privileged_spec());
        let beyond = index.pods_beyond_templates("shop", Restricted, Version::Latest);
        assert_eq!(beyond.len(), 1);
        assert!(beyond[0].1.contains("WKL-03"));
    }

    #[test]
    fn a_job_pod_rolls_up_through_its_job_into_the_cron_job() {
        let mut index = Index::default();
        let cron: crate::facts::wire::WorkloadObject = serde_json::from_value(json!({
            "metadata": {"name": "nightly", "namespace": "ops"},
            "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": {"spec": privileged_spec()}}}}
        }))
        .expect("cron job");
        index.workloads_mut(WorkloadKind::CronJob).apply(
            Key::new(Some("ops"), "nightly"),
            crate::facts::cron_job(&cron),
        );
        index.job_owners.apply(
            Key::new(Some("ops"), "nightly-1"),
            Some("nightly".to_string()),
        );
        let pod: crate::facts::wire::PodObject = serde_json::from_value(json!({
            "metadata": {"name": "nightly-1-x", "namespace": "ops", "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": "nightly-1", "uid": "1", "controller": true}]},
            "spec": privileged_spec()
        }))
        .expect("pod");
        index.owned_pods.apply(
            Key::new(Some("ops"), "nightly-1-x"),
            crate::facts::owned_pod(&pod),
        );
        assert_eq!(
            index.pods_beyond_templates("ops", Restricted, Version::Latest),
            []
        );
    }
}
