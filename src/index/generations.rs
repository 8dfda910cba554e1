//! Which part of the index changed: a generation per namespace, one for RBAC, one for the
//! Namespace objects and one for cluster-wide changes, so caches over the index recompute only
//! what a change can concern.
//!
//! Every value comes from one counter that only grows, so a generation never takes a value
//! it had before: a cache entry stamped with generations is valid exactly while they are equal.

use std::collections::{BTreeSet, HashMap, VecDeque};

/// How many namespaced changes [`Generations::changed_since`] can look back over.
const LOG_CAPACITY: usize = 4096;

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
    /// The namespaced changes, oldest first: (counter, namespace).
    log: VecDeque<(u64, String)>,
    /// Every namespaced change after this counter value is in `log`.
    log_floor: u64,
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
            Some(ns) => {
                match self.namespaces.get_mut(ns) {
                    Some(g) => *g = now,
                    None => {
                        self.namespaces.insert(ns.to_string(), now);
                    }
                }
                if self.log.len() == LOG_CAPACITY
                    && let Some((at, _)) = self.log.pop_front()
                {
                    self.log_floor = at;
                }
                self.log.push_back((now, ns.to_string()));
            }
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

    /// The last change of any kind: equal values mean nothing changed in between.
    pub fn current(&self) -> u64 {
        self.counter
    }

    /// The namespaces whose stamps moved by a namespaced change after `since` (a value of
    /// [`current`](Self::current)), at most `limit` of them. `None` when that is not known
    /// (the log does not reach back that far) or more than `limit` moved. Changes of Namespace
    /// objects, of RBAC and cluster-wide ones are not listed: see their own generations.
    pub fn changed_since(&self, since: u64, limit: usize) -> Option<BTreeSet<&str>> {
        if since < self.log_floor {
            return None;
        }
        let from = self.log.partition_point(|(at, _)| *at <= since);
        let mut out = BTreeSet::new();
        for (_, ns) in self.log.range(from..) {
            out.insert(ns.as_str());
            if out.len() > limit {
                return None;
            }
        }
        Some(out)
    }

    /// Forgets namespaces not in `live` (their stamps read as never changed again, which no
    /// cache entry can hold, as the counter only grows). Their stamps move without a logged
    /// change, so no earlier [`changed_since`](Self::changed_since) is known any more.
    pub fn retain(&mut self, live: impl Fn(&str) -> bool) {
        self.namespaces.retain(|ns, _| live(ns));
        self.log.clear();
        self.log_floor = self.counter;
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
    fn changed_since_lists_the_namespaced_changes_after_a_point() {
        let mut g = Generations::default();
        g.touch("Pod", Some("a"));
        let at = g.current();
        assert_eq!(g.changed_since(at, 10), Some(BTreeSet::new()));
        g.touch("Pod", Some("b"));
        g.touch("Deployment", Some("c"));
        g.touch("Pod", Some("b"));
        g.touch("Namespace", None);
        assert_eq!(g.changed_since(at, 10), Some(BTreeSet::from(["b", "c"])));
        assert_eq!(g.changed_since(at, 1), None);
        assert_eq!(
            g.changed_since(0, 10),
            Some(BTreeSet::from(["a", "b", "c"]))
        );
        // Beyond the log's reach: not known.
        for _ in 0..LOG_CAPACITY {
            g.touch("Pod", Some("d"));
        }
        assert_eq!(g.changed_since(at, 10), None);
        let at = g.current();
        g.touch("Pod", Some("e"));
        assert_eq!(g.changed_since(at, 10), Some(BTreeSet::from(["e"])));
        g.retain(|_| true);
        assert_eq!(g.changed_since(at, 10), None);
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
