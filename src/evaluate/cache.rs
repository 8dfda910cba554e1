//! Incremental evaluation: the pieces of a policy's evaluation, cached by what they depend on.
//!
//! - The verdicts of a namespace's objects, per distinct [`Params`] (Pod Security level and the
//!   version the admission judges at), shared by every policy with those parameters and
//!   recomputed only when that namespace's generation moved.
//! - The RBAC findings per allow-list, recomputed only when the RBAC generation moved.
//! - Whether a NetworkPolicy-capable CNI runs, recomputed on cluster-wide changes only.
//! - Whole evaluations per spec: policies with equal specs (and the same policy reconciled
//!   twice in one batch) share one. When only some namespaces' facts changed since a spec's
//!   evaluation (no Namespace object, RBAC, cluster-wide or server version change, the same
//!   exceptions expired), just those namespaces' violations are replaced in it: a one-object
//!   change costs each policy O(change), not O(namespaces). Anything else, or more changed
//!   namespaces than a delta is worth, assembles the evaluation again.
//!
//! The cache trusts the index's [`Generations`](crate::index::Generations): every change of
//! facts must be recorded with [`Index::touch`]. [`evaluate`](super::evaluate) stays the
//! uncached reference; the property test in this module holds the two equal.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use jiff::Timestamp;

use super::{
    Evaluation, Interner, NamespaceVerdicts, Params, Parts, RbacVerdicts, Violation,
    assemble_with_excepted, cni_observed, namespace_contribution, namespace_verdicts,
    rbac_verdicts, result_of, selected_namespaces, split_excepted, split_exceptions,
};
use crate::{
    crd::{ResponsibilityPolicySpec, SubjectRef},
    index::{Index, Key, NamespaceStamp},
};

/// The cached verdicts of one namespace.
#[derive(Debug)]
struct NamespaceEntry {
    stamp: NamespaceStamp,
    by_params: HashMap<Params, Arc<NamespaceVerdicts>>,
    /// The offenders the verdicts under every parameter set share.
    interner: Interner,
}

/// One evaluation, and what it was assembled from (to update it by deltas).
struct Memo {
    /// [`fingerprint`] of `spec`: only a memo with the same one is compared in full.
    fingerprint: u64,
    spec: ResponsibilityPolicySpec,
    expired: Vec<usize>,
    next_expiry: Option<Timestamp>,
    evaluation: Arc<Evaluation>,
    /// [`Generations::current`](crate::index::Generations::current) it is up to date with.
    at: u64,
    server_minor: Option<u32>,
    /// The namespaces it governs (held once for the memos that govern the same ones).
    namespaces: Arc<BTreeSet<String>>,
    rbac: Arc<RbacVerdicts>,
    cni_observed: bool,
    /// Per outcome (in the same order): the violations exceptions cover, sorted.
    excepted: Vec<Vec<Violation>>,
}

/// How many changed namespaces a delta takes at most: beyond, assembling is as cheap.
fn delta_limit(namespaces: usize) -> usize {
    (namespaces / 8).max(8)
}

/// A digest of a spec's JSON (equal specs serialize alike: maps are ordered). Many policies'
/// specs differ only deep inside (a level, a version), and comparing each against every memo
/// walked their equal selectors and lists first.
pub(crate) fn fingerprint(spec: &ResponsibilityPolicySpec) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    serde_json::to_vec(spec)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// How much work the cache did (for tests and the benchmark).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Namespace verdicts computed (one per namespace and parameter set).
    pub namespaces_computed: u64,
    /// RBAC analyses run.
    pub rbac_computed: u64,
    /// Evaluations assembled from the pieces.
    pub assembled: u64,
    /// Evaluations answered from the memo.
    pub memo_hits: u64,
    /// Evaluations brought up to date by replacing changed namespaces' violations.
    pub deltas: u64,
    /// Namespaces whose violations a delta replaced.
    pub delta_namespaces: u64,
}

/// The incremental evaluator of one index (see the module documentation).
#[derive(Default)]
pub struct Evaluator {
    namespaces: HashMap<String, NamespaceEntry>,
    /// Per allow-list: the RBAC generation it was computed at and the findings.
    rbac: HashMap<Vec<SubjectRef>, (u64, Arc<RbacVerdicts>)>,
    /// Cluster generation and whether a CNI was seen then.
    cni: Option<(u64, bool)>,
    /// Namespace-object generation at which entries of gone namespaces were last dropped.
    pruned_at: Option<u64>,
    memos: Vec<Memo>,
    stats: Stats,
}

impl Evaluator {
    /// Evaluates one policy as [`evaluate`](super::evaluate) would, reusing what did not change.
    pub fn evaluate(
        &mut self,
        spec: &ResponsibilityPolicySpec,
        index: &Index,
        now: Timestamp,
    ) -> Arc<Evaluation> {
        let (_, expired, next_expiry) = split_exceptions(&spec.exceptions, now);
        let fingerprint = fingerprint(spec);
        let found = self
            .memos
            .iter()
            .position(|m| m.fingerprint == fingerprint && m.spec == *spec);
        if let Some(at) = found {
            let memo = &self.memos[at];
            if memo.expired == expired && memo.next_expiry == next_expiry {
                if memo.at == index.generations.current() && memo.server_minor == index.server_minor
                {
                    self.stats.memo_hits += 1;
                    return memo.evaluation.clone();
                }
                // Taken out while it is updated (the namespace cache is borrowed meanwhile).
                let mut memo = self.memos.swap_remove(at);
                if self.delta(&mut memo, index, now) {
                    let evaluation = memo.evaluation.clone();
                    self.memos.push(memo);
                    return evaluation;
                }
            } else {
                self.memos.swap_remove(at);
            }
        }
        let memo = self.assemble(fingerprint, spec, index, now);
        let evaluation = memo.evaluation.clone();
        self.memos.push(memo);
        evaluation
    }

    /// Brings `memo` up to date by replacing the violations of the namespaces that changed
    /// since, when nothing else its evaluation depends on moved; false when it cannot (the
    /// memo is then stale and must be assembled again).
    fn delta(&mut self, memo: &mut Memo, index: &Index, now: Timestamp) -> bool {
        let g = &index.generations;
        // Namespace objects (selection, labels), RBAC, cluster-wide facts and the server
        // version are read by every namespace's share: their change needs a full assembly.
        if g.namespace_objects() > memo.at
            || g.rbac() > memo.at
            || g.cluster() > memo.at
            || memo.server_minor != index.server_minor
        {
            return false;
        }
        let Some(changed) = g.changed_since(memo.at, delta_limit(memo.namespaces.len())) else {
            return false;
        };
        let spec = &memo.spec;
        let params = Params::of(spec, index);
        let (active, _, _) = split_exceptions(&spec.exceptions, now);
        let evaluation = Arc::make_mut(&mut memo.evaluation);
        for ns in changed {
            // A namespace the policy does not govern adds nothing, before or after.
            if !memo.namespaces.contains(ns) {
                continue;
            }
            let verdicts = self.namespace(index, ns, params);
            let mut found = namespace_contribution(spec, index, ns, &verdicts, &memo.rbac);
            for (outcome, excepted) in evaluation.outcomes.iter_mut().zip(&mut memo.excepted) {
                let id = outcome.control.id;
                let all = found.remove(id).unwrap_or_default();
                let (now_excepted, counting) = split_excepted(&active, id, all);
                replace_namespace(&mut outcome.violations, ns, counting);
                replace_namespace(excepted, ns, now_excepted);
                outcome.excepted = excepted.len() as u64;
                outcome.result = result_of(
                    spec,
                    outcome.control,
                    outcome.owner,
                    memo.cni_observed,
                    &outcome.violations,
                    excepted.len(),
                );
            }
            self.stats.delta_namespaces += 1;
        }
        memo.at = g.current();
        self.stats.deltas += 1;
        true
    }

    fn assemble(
        &mut self,
        fingerprint: u64,
        spec: &ResponsibilityPolicySpec,
        index: &Index,
        now: Timestamp,
    ) -> Memo {
        self.prune_namespaces(index);
        let selected = selected_namespaces(spec, index);
        let namespaces = match self.memos.iter().find(|m| *m.namespaces == selected) {
            Some(same) => same.namespaces.clone(),
            None => Arc::new(selected),
        };
        let params = Params::of(spec, index);
        let verdicts: Vec<_> = namespaces
            .iter()
            .map(|ns| self.namespace(index, ns, params))
            .collect();
        let rbac = self.rbac(index, &spec.controls.rbac.cluster_admin_subjects);
        let cluster = index.generations.cluster();
        let cni = match self.cni {
            Some((at, seen)) if at == cluster => seen,
            _ => {
                let seen = cni_observed(index);
                self.cni = Some((cluster, seen));
                seen
            }
        };
        let parts = Parts {
            namespaces: namespaces.as_ref(),
            verdicts: &verdicts,
            rbac: &rbac,
            cni_observed: cni,
        };
        self.stats.assembled += 1;
        let (evaluation, excepted) = assemble_with_excepted(spec, index, &parts, now);
        let (_, expired, next_expiry) = split_exceptions(&spec.exceptions, now);
        Memo {
            fingerprint,
            spec: spec.clone(),
            expired,
            next_expiry,
            evaluation: Arc::new(evaluation),
            at: index.generations.current(),
            server_minor: index.server_minor,
            namespaces,
            rbac,
            cni_observed: cni,
            excepted,
        }
    }

    /// The verdicts of one namespace for `params`, computed when its generation moved.
    fn namespace(&mut self, index: &Index, ns: &str, params: Params) -> Arc<NamespaceVerdicts> {
        let stamp = index.generations.namespace(ns);
        let entry = match self.namespaces.get_mut(ns) {
            Some(entry) => entry,
            None => self
                .namespaces
                .entry(ns.to_string())
                .or_insert_with(|| NamespaceEntry {
                    stamp,
                    by_params: HashMap::new(),
                    interner: Interner::default(),
                }),
        };
        if entry.stamp != stamp {
            entry.stamp = stamp;
            entry.by_params.clear();
            entry.interner = Interner::default();
        }
        if let Some(verdicts) = entry.by_params.get(&params) {
            return verdicts.clone();
        }
        self.stats.namespaces_computed += 1;
        let computed = namespace_verdicts(index, ns, params, &mut entry.interner);
        // Most parameter sets judge a namespace alike (Pod Security versions rarely differ on
        // real workloads): equal verdicts are held once, so memory grows with the distinct
        // verdicts, not with the number of parameter sets the policies use.
        let verdicts = match entry.by_params.values().find(|v| ***v == computed) {
            Some(same) => same.clone(),
            None => Arc::new(computed),
        };
        entry.by_params.insert(params, verdicts.clone());
        verdicts
    }

    /// The RBAC findings under `allowed`, computed when the RBAC generation moved.
    fn rbac(&mut self, index: &Index, allowed: &[SubjectRef]) -> Arc<RbacVerdicts> {
        let generation = index.generations.rbac();
        if let Some((at, findings)) = self.rbac.get(allowed)
            && *at == generation
        {
            return findings.clone();
        }
        self.stats.rbac_computed += 1;
        let findings = Arc::new(rbac_verdicts(index, allowed));
        self.rbac
            .insert(allowed.to_vec(), (generation, findings.clone()));
        findings
    }

    /// Drops the entries of namespaces that are gone (checked when Namespace objects changed).
    fn prune_namespaces(&mut self, index: &Index) {
        let at = index.generations.namespace_objects();
        if self.pruned_at == Some(at) {
            return;
        }
        self.pruned_at = Some(at);
        self.namespaces
            .retain(|ns, _| index.namespaces.get(&Key::new(None, ns)).is_some());
    }

    /// Keeps only what the policies with these specs can use: their parameter sets,
    /// allow-lists and evaluations (a policy deleted or changed leaves nothing behind).
    pub fn retain_policies<'a>(
        &mut self,
        specs: impl IntoIterator<Item = &'a ResponsibilityPolicySpec>,
        index: &Index,
    ) {
        let mut params = HashSet::new();
        let mut allow_lists = HashSet::new();
        let mut fingerprints = HashSet::new();
        for spec in specs {
            params.insert(Params::of(spec, index));
            allow_lists.insert(&spec.controls.rbac.cluster_admin_subjects);
            fingerprints.insert(fingerprint(spec));
        }
        for entry in self.namespaces.values_mut() {
            entry.by_params.retain(|p, _| params.contains(p));
        }
        self.namespaces.retain(|_, e| !e.by_params.is_empty());
        self.rbac.retain(|allowed, _| allow_lists.contains(allowed));
        // A fingerprint shared by chance keeps one memo too many, never a wrong one: a memo is
        // used only for a spec equal to its own.
        self.memos.retain(|m| fingerprints.contains(&m.fingerprint));
    }

    /// How much work was done so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// How many namespace verdicts are held (for tests of the bound).
    pub fn cached_verdicts(&self) -> usize {
        self.namespaces.values().map(|e| e.by_params.len()).sum()
    }

    /// How many distinct namespace verdicts are held: equal ones under several parameter sets
    /// count once (for tests of the sharing).
    pub fn distinct_verdicts(&self) -> usize {
        self.namespaces
            .values()
            .map(|e| {
                let mut held: Vec<*const NamespaceVerdicts> =
                    e.by_params.values().map(Arc::as_ptr).collect();
                held.sort_unstable();
                held.dedup();
                held.len()
            })
            .sum()
    }

    /// How many whole evaluations are held (for tests of the bound).
    pub fn cached_evaluations(&self) -> usize {
        self.memos.len()
    }
}

/// Replaces the run of `sorted` (sorted by namespace first) that names namespace `ns` with
/// `with` (sorted, all naming `ns`): the list stays sorted and without duplicates.
fn replace_namespace(sorted: &mut Vec<Violation>, ns: &str, with: Vec<Violation>) {
    let start = sorted.partition_point(|v| v.namespace.as_deref() < Some(ns));
    let end = start + sorted[start..].partition_point(|v| v.namespace.as_deref() == Some(ns));
    if start == end && with.is_empty() {
        return;
    }
    sorted.splice(start..end, with);
}

#[cfg(test)]
pub(crate) mod tests;
