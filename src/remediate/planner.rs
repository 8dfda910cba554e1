//! The Enforce plan of all policies, incrementally: the merged wants are reused while the
//! policies and the Namespace objects stay the same, and the actions are kept per namespace,
//! planned again only for the namespaces whose facts changed. Equal to
//! [`wants`] + [`plan`] in [`PlanMode::Converge`], which stay the reference (see the property
//! test). Like the [`Evaluator`](crate::evaluate::Evaluator), it trusts the index's
//! generations: every change of facts is recorded with [`Index::touch`].

use std::collections::BTreeMap;

use super::{
    Action, NamespaceWant, PlanMode, enforced_spec, plan_namespace, release_elsewhere, release_in,
    wants,
};
use crate::{
    crd::{ResponsibilityPolicy, ResponsibilityPolicySpec},
    validate::validate,
};
use crate::{evaluate::cache::fingerprint, index::Index};

/// What [`wants`] reads of one policy.
#[derive(Debug, PartialEq)]
struct PolicyKey {
    name: String,
    deleting: bool,
    valid: bool,
    fingerprint: u64,
    /// The spec it enforces: its own when valid, the one held in its status otherwise.
    spec: Option<ResponsibilityPolicySpec>,
}

impl PolicyKey {
    fn of(policy: &ResponsibilityPolicy) -> Self {
        let spec = enforced_spec(policy);
        PolicyKey {
            name: policy.metadata.name.clone().unwrap_or_default(),
            deleting: policy.metadata.deletion_timestamp.is_some(),
            valid: validate(&policy.spec).is_ok(),
            fingerprint: spec.map(fingerprint).unwrap_or_default(),
            spec: spec.cloned(),
        }
    }

    fn matches(&self, policy: &ResponsibilityPolicy) -> bool {
        let spec = enforced_spec(policy);
        self.deleting == policy.metadata.deletion_timestamp.is_some()
            && self.valid == validate(&policy.spec).is_ok()
            && self.fingerprint == spec.map(fingerprint).unwrap_or_default()
            && self.spec.as_ref() == spec
    }
}

/// The last plan, per namespace.
struct Planned {
    /// The policies it was planned for, by name.
    policies: Vec<PolicyKey>,
    wants: BTreeMap<String, NamespaceWant>,
    /// [`Generations::current`](crate::index::Generations::current) the actions are up to
    /// date with.
    at: u64,
    server_minor: Option<u32>,
    /// The actions in each wanted namespace (only those with some).
    wanted: BTreeMap<String, Vec<Action>>,
    /// The releases in each namespace no policy wants anything in (only those with some).
    released: BTreeMap<String, Vec<Action>>,
}

/// How much work the planner did (for tests and the benchmark).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Wants merged from every policy.
    pub wants: u64,
    /// Plans made over every namespace.
    pub full: u64,
    /// Plans brought up to date per changed namespace.
    pub deltas: u64,
}

/// The incremental Enforce planner (see the module documentation).
#[derive(Default)]
pub struct Planner {
    last: Option<Planned>,
    stats: Stats,
}

impl Planner {
    /// `plan(&wants(policies, index, false), index, PlanMode::Converge)`, reusing what did
    /// not change since the last call. The actions are the planner's own, lent: a caller
    /// copies only those it carries out (a cluster that has not converged yet keeps every
    /// pending action in the plan, each naming the policies that want it).
    pub fn plan(&mut self, policies: &[&ResponsibilityPolicy], index: &Index) -> Vec<&Action> {
        let g = &index.generations;
        let same_policies = self.last.as_ref().is_some_and(|last| {
            last.policies.len() == policies.len()
                && policies.iter().all(|p| {
                    let name = p.metadata.name.as_deref().unwrap_or_default();
                    last.policies
                        .binary_search_by(|k| k.name.as_str().cmp(name))
                        .is_ok_and(|at| last.policies[at].matches(p))
                })
        });
        // The wants read the policies and the Namespace objects (selection, termination).
        let delta = same_policies
            && self.last.as_ref().is_some_and(|last| {
                g.namespace_objects() <= last.at
                    && g.cluster() <= last.at
                    && last.server_minor == index.server_minor
            });
        let changed = if delta {
            self.last.as_ref().and_then(|last| {
                let limit = ((last.wanted.len() + last.wants.len()) / 8).max(8);
                g.changed_since(last.at, limit)
            })
        } else {
            None
        };
        match (self.last.as_mut(), changed) {
            (Some(last), Some(changed)) => {
                for ns in changed {
                    let ns = ns.to_string();
                    match last.wants.get(&ns) {
                        Some(want) => {
                            let mut actions = Vec::new();
                            plan_namespace(&ns, want, index, PlanMode::Converge, &mut actions);
                            set(&mut last.wanted, ns, actions);
                        }
                        None => {
                            let actions = release_in(&ns, index);
                            set(&mut last.released, ns, actions);
                        }
                    }
                }
                last.at = g.current();
                self.stats.deltas += 1;
            }
            _ => {
                let wants = match self.last.take() {
                    Some(last) if same_policies && g.namespace_objects() <= last.at => last.wants,
                    _ => {
                        self.stats.wants += 1;
                        wants(policies.iter().copied(), index, false)
                    }
                };
                let mut policies: Vec<PolicyKey> =
                    policies.iter().map(|p| PolicyKey::of(p)).collect();
                policies.sort_by(|a, b| a.name.cmp(&b.name));
                let mut wanted = BTreeMap::new();
                for (ns, want) in &wants {
                    let mut actions = Vec::new();
                    plan_namespace(ns, want, index, PlanMode::Converge, &mut actions);
                    set(&mut wanted, ns.clone(), actions);
                }
                let mut released: BTreeMap<String, Vec<Action>> = BTreeMap::new();
                for action in release_elsewhere(&wants, index) {
                    released
                        .entry(action.namespace().to_string())
                        .or_default()
                        .push(action);
                }
                self.stats.full += 1;
                self.last = Some(Planned {
                    policies,
                    wants,
                    at: g.current(),
                    server_minor: index.server_minor,
                    wanted,
                    released,
                });
            }
        }
        let last = self.last.as_ref().expect("planned above");
        last.wanted
            .values()
            .chain(last.released.values())
            .flatten()
            .collect()
    }

    /// How much work was done so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }
}

/// Keeps `actions` for `ns`, or nothing when there are none.
fn set(map: &mut BTreeMap<String, Vec<Action>>, ns: String, actions: Vec<Action>) {
    if actions.is_empty() {
        map.remove(&ns);
    } else {
        map.insert(ns, actions);
    }
}

#[cfg(test)]
mod tests;
