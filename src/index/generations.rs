//! Which part of the index changed: a generation per namespace, one for RBAC, one for the
//! Namespace objects and one for cluster-wide changes, so caches over the index recompute only
//! what a change can concern.
//!
//! Every value comes from one counter that only grows, so a generation never takes a value
//! it had before: a cache entry stamped with generations is valid exactly while they are equal.

use std::collections::HashMap;

/// Kinds whose facts feed the RBAC analysis (IAM-01..IAM-08).
pub const RBAC_KINDS: [&str; 4] = ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"];

/// The generations of the parts of the index.
#[derive(Debug, Default)]
pub struct Generations {
    counter: u64,
    /// Per namespace: the last change to a fact of an object in it.
    namespaces: HashMap<String, u64>,
    /// The last change to a Role, ClusterRole, RoleBinding or ClusterRoleBinding fact.
    rbac: u64,
    /// The last change to a Namespace fact (labels: which policies govern it, WKL-01, AUD-01).
    namespace_objects: u64,
    /// The last change whose namespace is not known (a relist, a CNI DaemonSet): it may
    /// concern every namespace.
    cluster: u64,
}

/// What a namespace's facts (other than the Namespace object) were last changed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NamespaceStamp {
    cluster: u64,
    namespace: u64,
}

impl Generations {
    /// Records a change of a fact of kind `kind` (the Kubernetes kind), in `namespace` when
    /// it is known; `None` may concern any namespace.
    pub fn touch(&mut self, kind: &str, namespace: Option<&str>) {
        self.counter += 1;
        let now = self.counter;
        if RBAC_KINDS.contains(&kind) {
            self.rbac = now;
        }
        if kind == "Namespace" {
            // The Namespace object holds labels only: no other fact of the namespace moved.
            self.namespace_objects = now;
            return;
        }
        match namespace {
            Some(ns) => match self.namespaces.get_mut(ns) {
                Some(g) => *g = now,
                None => {
                    self.namespaces.insert(ns.to_string(), now);
                }
            },
            // RBAC objects feed only the RBAC analysis.
            None if RBAC_KINDS.contains(&kind) => {}
            None => self.cluster = now,
        }
    }

    /// The stamp of the facts in one namespace.
    pub fn namespace(&self, namespace: &str) -> NamespaceStamp {
        NamespaceStamp {
            cluster: self.cluster,
            namespace: self.namespaces.get(namespace).copied().unwrap_or_default(),
        }
    }

    /// The generation of the RBAC facts.
    pub fn rbac(&self) -> u64 {
        self.rbac
    }

    /// The generation of the Namespace facts.
    pub fn namespace_objects(&self) -> u64 {
        self.namespace_objects
    }

    /// The generation of cluster-wide changes.
    pub fn cluster(&self) -> u64 {
        self.cluster
    }

    /// Forgets namespaces not in `live` (their stamps read as never changed again, which no
    /// cache entry can hold, as the counter only grows).
    pub fn retain(&mut self, live: impl Fn(&str) -> bool) {
        self.namespaces.retain(|ns, _| live(ns));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_moves_only_what_it_concerns() {
        let mut g = Generations::default();
        let (a, b, rbac, ns) = (
            g.namespace("a"),
            g.namespace("b"),
            g.rbac(),
            g.namespace_objects(),
        );
        g.touch("Pod", Some("a"));
        assert_ne!(g.namespace("a"), a);
        assert_eq!(g.namespace("b"), b);
        assert_eq!((g.rbac(), g.namespace_objects()), (rbac, ns));

        let (a, rbac) = (g.namespace("a"), g.rbac());
        g.touch("ClusterRoleBinding", None);
        assert_ne!(g.rbac(), rbac);
        assert_eq!(g.namespace("a"), a);

        g.touch("Namespace", None);
        assert_ne!(g.namespace_objects(), ns);
        assert_eq!(g.namespace("a"), a);

        g.touch("DaemonSet", None);
        assert_ne!(g.namespace("a"), a);
        assert_ne!(g.namespace("b"), b);
    }

    #[test]
    fn a_forgotten_namespace_never_matches_an_old_stamp() {
        let mut g = Generations::default();
        g.touch("Pod", Some("a"));
        let a = g.namespace("a");
        g.retain(|_| false);
        assert_ne!(g.namespace("a"), a);
    }
}
