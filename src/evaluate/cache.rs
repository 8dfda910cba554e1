//! Incremental evaluation: the pieces of a policy's evaluation, cached by what they depend on.
//!
//! - The verdicts of a namespace's objects, per distinct [`Params`] (Pod Security level and the
//!   version the admission judges at), shared by every policy with those parameters and
//!   recomputed only when that namespace's generation moved.
//! - The RBAC findings per allow-list, recomputed only when the RBAC generation moved.
//! - Whether a NetworkPolicy-capable CNI runs, recomputed on cluster-wide changes only.
//! - Whole evaluations per spec at one index generation: policies with equal specs (and the
//!   same policy reconciled twice in one batch) share one.
//!
//! The cache trusts the index's [`Generations`](crate::index::Generations): every change of
//! facts must be recorded with [`Index::touch`]. [`evaluate`](super::evaluate) stays the
//! uncached reference; the property test in this module holds the two equal.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use jiff::Timestamp;

use super::{
    Evaluation, Interner, NamespaceVerdicts, Params, Parts, RbacVerdicts, assemble, cni_observed,
    namespace_verdicts, rbac_verdicts, selected_namespaces, split_exceptions,
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

/// One evaluation, valid at one index generation and for one outcome of the exception clock.
struct Memo {
    /// [`fingerprint`] of `spec`: only a memo with the same one is compared in full.
    fingerprint: u64,
    spec: ResponsibilityPolicySpec,
    expired: Vec<usize>,
    next_expiry: Option<Timestamp>,
    evaluation: Arc<Evaluation>,
}

/// A digest of a spec's JSON (equal specs serialize alike: maps are ordered). Many policies'
/// specs differ only deep inside (a level, a version), and comparing each against every memo
/// walked their equal selectors and lists first.
fn fingerprint(spec: &ResponsibilityPolicySpec) -> u64 {
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
    /// Index generation and server version the memos hold for, and the memos.
    memo_at: Option<(u64, Option<u32>)>,
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
        let at = (index.generation, index.server_minor);
        if self.memo_at != Some(at) {
            self.memo_at = Some(at);
            self.memos.clear();
        }
        let (_, expired, next_expiry) = split_exceptions(&spec.exceptions, now);
        let fingerprint = fingerprint(spec);
        if let Some(memo) = self.memos.iter().find(|m| {
            m.fingerprint == fingerprint
                && m.spec == *spec
                && m.expired == expired
                && m.next_expiry == next_expiry
        }) {
            self.stats.memo_hits += 1;
            return memo.evaluation.clone();
        }
        let evaluation = Arc::new(self.assemble(spec, index, now));
        self.memos.push(Memo {
            fingerprint,
            spec: spec.clone(),
            expired,
            next_expiry,
            evaluation: evaluation.clone(),
        });
        evaluation
    }

    fn assemble(
        &mut self,
        spec: &ResponsibilityPolicySpec,
        index: &Index,
        now: Timestamp,
    ) -> Evaluation {
        self.prune_namespaces(index);
        let namespaces = selected_namespaces(spec, index);
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
            namespaces: &namespaces,
            verdicts: &verdicts,
            rbac: &rbac,
            cni_observed: cni,
        };
        self.stats.assembled += 1;
        assemble(spec, index, &parts, now)
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
        let verdicts = Arc::new(namespace_verdicts(index, ns, params, &mut entry.interner));
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

    /// Keeps only what the policies with these specs can use: their parameter sets and
    /// allow-lists (a policy deleted or changed leaves nothing behind).
    pub fn retain_policies<'a>(
        &mut self,
        specs: impl IntoIterator<Item = &'a ResponsibilityPolicySpec>,
        index: &Index,
    ) {
        let mut params = HashSet::new();
        let mut allow_lists = HashSet::new();
        for spec in specs {
            params.insert(Params::of(spec, index));
            allow_lists.insert(&spec.controls.rbac.cluster_admin_subjects);
        }
        for entry in self.namespaces.values_mut() {
            entry.by_params.retain(|p, _| params.contains(p));
        }
        self.namespaces.retain(|_, e| !e.by_params.is_empty());
        self.rbac.retain(|allowed, _| allow_lists.contains(allowed));
        self.memos.clear();
    }

    /// How much work was done so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// How many namespace verdicts are held (for tests of the bound).
    pub fn cached_verdicts(&self) -> usize {
        self.namespaces.values().map(|e| e.by_params.len()).sum()
    }
}

#[cfg(test)]
pub(crate) mod tests;
