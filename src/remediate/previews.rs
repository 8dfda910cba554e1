//! Remediation previews (what Enforce mode still has to change for one policy), incrementally:
//! a namespace's share is computed once per distinct want (all that a policy asks there) and
//! reused until the namespace's facts change. Equal to [`remediate::preview`], which stays the
//! reference (see the property test). Like the [`Evaluator`](crate::evaluate::Evaluator), it
//! trusts the index's generations: every change of facts is recorded with [`Index::touch`].

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use super::{
    Action, DenyWaiting, NamespaceWaiting, NamespaceWant, PlanMode, Preview, plan, plan_labels,
    wants,
};
use crate::{
    crd::{Mode, ResponsibilityPolicy, ResponsibilityPolicySpec},
    evaluate::cache::fingerprint,
    index::{Index, Key, NamespaceStamp},
    validate::validate,
};

/// One namespace's share of a preview.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Share {
    network_policies: u32,
    pod_security_labels: u32,
    service_accounts: u32,
    waiting: Option<Arc<NamespaceWaiting>>,
    deny: Option<DenyWaiting>,
}

/// What one namespace's shares were computed at, and the shares per want. Most wants of a
/// namespace (policies differing in Pod Security version or service model) come to the same
/// share: equal shares are held once, and the previews of every policy hold that one.
struct Entry {
    /// The namespace's name, held once for every preview that names it.
    name: Arc<str>,
    at: (NamespaceStamp, u64, Option<u32>),
    /// (The wants are those the previews hold: one per policy, not per namespace.)
    shares: Vec<(Arc<NamespaceWant>, Arc<Share>)>,
}

/// The counts one namespace adds to a preview (its waiting entries are found in the preview's
/// lists, by namespace).
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    network_policies: u32,
    pod_security_labels: u32,
    service_accounts: u32,
}

impl From<&Share> for Counts {
    fn from(share: &Share) -> Self {
        Counts {
            network_policies: share.network_policies,
            pod_security_labels: share.pod_security_labels,
            service_accounts: share.service_accounts,
        }
    }
}

/// One whole preview, and what it was assembled from (to update it by deltas).
struct Memo {
    fingerprint: u64,
    spec: ResponsibilityPolicySpec,
    preview: Arc<Preview>,
    /// [`Generations::current`](crate::index::Generations::current) it is up to date with.
    at: u64,
    server_minor: Option<u32>,
    /// Per namespace the policy wants something in, sorted: the want and its counts. A policy
    /// mostly wants the same in each of its namespaces: equal wants are held once.
    namespaces: Wanted,
}

/// Per namespace a policy wants something in, sorted by name: the want and its counts.
type Wanted = Vec<(Arc<str>, Arc<NamespaceWant>, Counts)>;

/// How many memos are held at most between two [`Previews::retain_policies`].
const MAX_MEMOS: usize = 1024;

/// The cached shares of every namespace, and whole previews.
#[derive(Default)]
pub struct Previews {
    namespaces: HashMap<String, Entry>,
    /// Namespace-object generation at which entries of gone namespaces were last dropped.
    pruned_at: Option<u64>,
    /// Whole previews by spec: policies with equal specs share one. Each is brought up to
    /// date by replacing the shares of the namespaces whose facts changed, when nothing else
    /// a preview reads moved (Namespace objects, cluster-wide facts, the server version).
    memos: Vec<Memo>,
    stats: Stats,
}

/// How much work the previews did (for tests and the benchmark).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Previews assembled from every namespace's share.
    pub assembled: u64,
    /// Previews brought up to date by a delta.
    pub deltas: u64,
}

impl Previews {
    /// [`remediate::preview`] of a policy, from the cached shares of its namespaces.
    pub fn get(&mut self, policy: &ResponsibilityPolicy, index: &Index) -> Arc<Preview> {
        // What a preview reads of the policy besides its spec: a deleting one wants nothing,
        // an invalid one in Enforce mode holds the spec in its status.
        let memo = policy.metadata.deletion_timestamp.is_none()
            && (policy.spec.mode == Mode::Audit || validate(&policy.spec).is_ok());
        if !memo {
            return Arc::new(self.assemble(policy, index).0);
        }
        let fingerprint = fingerprint(&policy.spec);
        if let Some(at) = self
            .memos
            .iter()
            .position(|m| m.fingerprint == fingerprint && m.spec == policy.spec)
        {
            let memo = &self.memos[at];
            if memo.at == index.generations.current() && memo.server_minor == index.server_minor {
                return memo.preview.clone();
            }
            let mut memo = self.memos.swap_remove(at);
            if self.delta(&mut memo, index) {
                let preview = memo.preview.clone();
                self.memos.push(memo);
                return preview;
            }
        }
        let (preview, namespaces) = self.assemble(policy, index);
        let preview = Arc::new(preview);
        if self.memos.len() >= MAX_MEMOS {
            self.memos.clear();
        }
        self.memos.push(Memo {
            fingerprint,
            spec: policy.spec.clone(),
            preview: preview.clone(),
            at: index.generations.current(),
            server_minor: index.server_minor,
            namespaces,
        });
        preview
    }

    /// Brings `memo` up to date by replacing the shares of the namespaces that changed since;
    /// false when something else moved (the memo is then stale).
    fn delta(&mut self, memo: &mut Memo, index: &Index) -> bool {
        let g = &index.generations;
        // Namespace objects decide which namespaces are wanted and what; cluster-wide facts
        // and the server version move every share.
        if g.namespace_objects() > memo.at
            || g.cluster() > memo.at
            || memo.server_minor != index.server_minor
        {
            return false;
        }
        let limit = (memo.namespaces.len() / 8).max(8);
        let Some(changed) = g.changed_since(memo.at, limit) else {
            return false;
        };
        let preview = Arc::make_mut(&mut memo.preview);
        for ns in changed {
            let Ok(at) = memo
                .namespaces
                .binary_search_by(|(n, _, _)| n.as_ref().cmp(ns))
            else {
                // Not wanted: it adds nothing, before or after.
                continue;
            };
            let (name, want, counts) = &mut memo.namespaces[at];
            let (_, share) = self.share(index, name.to_string(), want);
            preview.network_policies =
                preview.network_policies - counts.network_policies + share.network_policies;
            preview.pod_security_labels = preview.pod_security_labels - counts.pod_security_labels
                + share.pod_security_labels;
            preview.service_accounts =
                preview.service_accounts - counts.service_accounts + share.service_accounts;
            *counts = Counts::from(&*share);
            replace(
                &mut preview.enforce_waiting,
                ns,
                share.waiting.clone(),
                |w| &w.namespace,
            );
            replace(&mut preview.deny_waiting, ns, share.deny.clone(), |w| {
                &w.namespace
            });
        }
        memo.at = g.current();
        self.stats.deltas += 1;
        true
    }

    /// Keeps only the whole previews of these specs (a policy deleted or changed leaves
    /// nothing behind).
    pub fn retain_policies<'a>(
        &mut self,
        specs: impl IntoIterator<Item = &'a ResponsibilityPolicySpec>,
    ) {
        let fingerprints: HashSet<u64> = specs.into_iter().map(fingerprint).collect();
        self.memos.retain(|m| fingerprints.contains(&m.fingerprint));
    }

    /// How much work was done so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn assemble(&mut self, policy: &ResponsibilityPolicy, index: &Index) -> (Preview, Wanted) {
        let objects = index.generations.namespace_objects();
        if self.pruned_at != Some(objects) {
            self.pruned_at = Some(objects);
            self.namespaces
                .retain(|ns, _| index.namespaces.get(&Key::new(None, ns)).is_some());
        }
        self.stats.assembled += 1;
        let mut out = Preview::default();
        let mut namespaces = Wanted::new();
        for (ns, want) in wants([policy], index, policy.spec.mode == Mode::Audit) {
            // Which policies asked is not counted: the share depends on what they asked only.
            let want = NamespaceWant {
                policies: BTreeSet::new(),
                ..want
            };
            let want = match namespaces.last() {
                Some((_, last, _)) if **last == want => last.clone(),
                _ => Arc::new(want),
            };
            let (name, share) = self.share(index, ns, &want);
            out.network_policies += share.network_policies;
            out.pod_security_labels += share.pod_security_labels;
            out.service_accounts += share.service_accounts;
            namespaces.push((name, want, Counts::from(&*share)));
            out.enforce_waiting.extend(share.waiting.clone());
            out.deny_waiting.extend(share.deny.clone());
        }
        namespaces.shrink_to_fit();
        out.enforce_waiting.shrink_to_fit();
        (out, namespaces)
    }

    /// The share of namespace `ns` under `want`, and the namespace's name as held.
    fn share(
        &mut self,
        index: &Index,
        ns: String,
        want: &Arc<NamespaceWant>,
    ) -> (Arc<str>, Arc<Share>) {
        let at = (
            index.generations.namespace(&ns),
            index.generations.namespace_objects(),
            index.server_minor,
        );
        let entry = self.namespaces.entry(ns.clone()).or_insert_with(|| Entry {
            name: Arc::from(ns.as_str()),
            at,
            shares: Vec::new(),
        });
        if entry.at != at {
            entry.at = at;
            entry.shares.clear();
        }
        if let Some((_, share)) = entry.shares.iter().find(|(w, _)| **w == **want) {
            return (entry.name.clone(), share.clone());
        }
        let mut share = Share {
            deny: super::deny_waiting(&ns, want, index),
            ..Share::default()
        };
        let fact = index.namespaces.get(&Key::new(None, &ns));
        if let (Some(p), Some(fact)) = (want.pod_security, fact) {
            let labels = plan_labels(&ns, p, fact, index);
            share.waiting = labels.waiting.map(|waiting| {
                Arc::new(NamespaceWaiting {
                    namespace: ns.clone(),
                    enforced: labels.enforced,
                    waiting,
                })
            });
        }
        let one = BTreeMap::from([(ns, NamespaceWant::clone(want))]);
        for action in plan(&one, index, PlanMode::Preview) {
            match action {
                Action::ApplyNetworkPolicy { .. } => share.network_policies += 1,
                Action::ApplyPodSecurityLabels { .. } => share.pod_security_labels += 1,
                Action::DisableDefaultToken { .. } => share.service_accounts += 1,
                _ => {}
            }
        }
        // Held once per namespace, whatever wants come to it (equal lists of waiting objects
        // under different Pod Security versions, say).
        if let Some(waiting) = &share.waiting
            && let Some(same) = entry
                .shares
                .iter()
                .filter_map(|(_, s)| s.waiting.as_ref())
                .find(|w| *w == waiting)
        {
            share.waiting = Some(same.clone());
        }
        let share = match entry.shares.iter().find(|(_, s)| **s == share) {
            Some((_, same)) => same.clone(),
            None => Arc::new(share),
        };
        entry.shares.push((want.clone(), share.clone()));
        (entry.name.clone(), share)
    }
}

/// Replaces the entry of namespace `ns` in `list` (sorted by namespace, one entry at most per
/// namespace) with `with`.
fn replace<T>(list: &mut Vec<T>, ns: &str, with: Option<T>, namespace: impl Fn(&T) -> &String) {
    let at = list.partition_point(|w| namespace(w).as_str() < ns);
    let present = list.get(at).is_some_and(|w| namespace(w) == ns);
    match (present, with) {
        (true, Some(w)) => list[at] = w,
        (true, None) => {
            list.remove(at);
        }
        (false, Some(w)) => list.insert(at, w),
        (false, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::{
        evaluate::cache::tests::{base, change},
        remediate::preview,
    };

    fn policies() -> Vec<ResponsibilityPolicy> {
        [
            json!({"serviceModel": "PaaS", "mode": "Enforce",
                   "controls": {"network": {"defaultDeny": ["Ingress", "Egress"]}}}),
            json!({"serviceModel": "PaaS", "namespaceSelector": {"matchLabels": {"env": "prod"}},
                   "controls": {"podSecurity": {"level": "baseline", "version": "v1.25"}}}),
            json!({"serviceModel": "IaaS", "mode": "Enforce", "excludedNamespaces": ["lab"],
                   "controls": {"podSecurity": {"forceEnforce": true}}}),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            serde_json::from_value(json!({
                "apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
                "metadata": {"name": format!("p{i}")}, "spec": spec,
            }))
            .expect("policy")
        })
        .collect()
    }

    #[test]
    fn a_namespaced_change_updates_each_preview_by_a_delta() {
        let policies = policies();
        let mut index = base();
        let mut previews = Previews::default();
        for p in &policies {
            previews.get(p, &index);
        }
        let before = previews.stats();
        change(&mut index, 0, 1, 0, false);
        change(&mut index, 5, 2, 0, true);
        for p in &policies {
            assert_eq!(*previews.get(p, &index), preview(p, &index));
        }
        let after = previews.stats();
        assert_eq!(after.assembled, before.assembled);
        assert_eq!(after.deltas - before.deltas, policies.len() as u64);
        // A Namespace object's change assembles again.
        change(&mut index, 7, 1, 0, true);
        for p in &policies {
            assert_eq!(*previews.get(p, &index), preview(p, &index));
        }
        assert_eq!(
            previews.stats().assembled - after.assembled,
            policies.len() as u64
        );
    }

    #[test]
    fn policies_that_want_alike_share_one_copy_of_what_waits() {
        // Restricted at different versions and service models: the same objects wait for the
        // `enforce` label in each namespace.
        let restricted = |i: usize, model: &str, version: &str| -> ResponsibilityPolicy {
            serde_json::from_value(json!({
                "apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
                "metadata": {"name": format!("p{i}")},
                "spec": {"serviceModel": model, "mode": "Audit",
                         "controls": {"podSecurity": {"level": "restricted", "version": version}}},
            }))
            .expect("policy")
        };
        let policies = [
            restricted(0, "PaaS", "latest"),
            restricted(1, "IaaS", "v1.30"),
            restricted(2, "PaaS", "v1.28"),
        ];
        let mut index = base();
        for n in 0..4 {
            change(&mut index, 0, n, 0, false);
            change(&mut index, 0, n, 1, true);
        }
        let mut previews = Previews::default();
        let got: Vec<Arc<Preview>> = policies.iter().map(|p| previews.get(p, &index)).collect();
        for (p, got) in policies.iter().zip(&got) {
            assert_eq!(**got, preview(p, &index));
        }
        let first = &got[0].enforce_waiting;
        assert!(!first.is_empty(), "the fixture makes objects wait");
        for other in &got[1..] {
            assert_eq!(other.enforce_waiting.len(), first.len());
            for (a, b) in first.iter().zip(&other.enforce_waiting) {
                assert!(Arc::ptr_eq(a, b), "{} is held twice", a.namespace);
            }
        }
        // One share per namespace, however many wants came to it.
        for entry in previews.namespaces.values() {
            assert_eq!(entry.shares.len(), policies.len());
            assert!(
                entry
                    .shares
                    .iter()
                    .all(|(_, s)| Arc::ptr_eq(s, &entry.shares[0].1)),
                "equal shares are held once"
            );
        }
        // Each policy's want is held once, not once per namespace.
        let mut wants: Vec<*const NamespaceWant> = previews
            .namespaces
            .values()
            .flat_map(|e| e.shares.iter().map(|(w, _)| Arc::as_ptr(w)))
            .collect();
        wants.sort_unstable();
        wants.dedup();
        assert!(wants.len() <= policies.len(), "{} wants held", wants.len());
        // A delta keeps the sharing.
        change(&mut index, 0, 1, 2, false);
        let again: Vec<Arc<Preview>> = policies.iter().map(|p| previews.get(p, &index)).collect();
        for (p, got) in policies.iter().zip(&again) {
            assert_eq!(**got, preview(p, &index));
        }
        for (a, b) in again[0]
            .enforce_waiting
            .iter()
            .zip(&again[2].enforce_waiting)
        {
            assert!(
                Arc::ptr_eq(a, b),
                "{} is held twice after a delta",
                a.namespace
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

        #[test]
        fn cached_previews_equal_previews_from_scratch(
            ops in prop::collection::vec((0u8..15, 0u8..4, 0u8..3, any::<bool>()), 1..30),
        ) {
            let policies = policies();
            let mut index = base();
            let mut previews = Previews::default();
            for (step, (op, n, name, flag)) in ops.into_iter().enumerate() {
                match op {
                    // Only the backend watches' first lists release the gate.
                    13 if !index.backends.synced() => {
                        crate::index::testing::backends_listed(&mut index);
                        index.touch("APIService", None);
                    }
                    // A webhook starts or stops pointing into a namespace.
                    13 | 14 => {
                        let ns = ["default", "shop", "lab", "ops"][usize::from(n)];
                        let webhook = format!("wh-{name}");
                        if flag {
                            crate::index::testing::webhook(&mut index, &webhook, ns);
                        } else {
                            let kind = crate::facts::backends::BackendKind::ValidatingWebhookConfiguration;
                            let key = Key::new(None, &webhook);
                            let before = index.backends.namespaces_of(kind, &key);
                            if index.backends.map(kind).delete(&key) {
                                index.backends.rebuild();
                                for ns in before {
                                    index.touch("ValidatingWebhookConfiguration", Some(&ns));
                                }
                            }
                        }
                    }
                    _ => change(&mut index, op, n, name, flag),
                }
                // Some changes accumulate before the next look.
                if step % 3 == 1 {
                    continue;
                }
                for p in &policies {
                    prop_assert_eq!(
                        &*previews.get(p, &index),
                        &preview(p, &index),
                        "{} after step {}", p.metadata.name.as_deref().unwrap_or_default(), step
                    );
                }
            }
        }
    }
}
