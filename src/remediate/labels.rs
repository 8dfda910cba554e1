//! Pod Security labels onus wants on one namespace, given what is there and who set it.
//!
//! Fail closed: the `enforce` label is the strictest level, up to what the policies ask for,
//! whose gate passes now (no existing workload would be rejected, or a policy forces that very
//! level); a level onus already enforces stays as long as the policies still ask for at least
//! that much, so tightening a policy never removes or lowers it while the stricter level waits.
//! A stricter label someone else set stays theirs. The values onus replaced are remembered, so
//! letting go restores them instead of removing a label onus did not create.

use std::collections::BTreeMap;

use crate::{
    crd::PodSecurityLevel,
    evaluate::{
        PSA_AUDIT, PSA_AUDIT_VERSION, PSA_ENFORCE, PSA_ENFORCE_VERSION, PSA_WARN, PSA_WARN_VERSION,
        level_name, mode_strictness, strictness,
    },
    facts::NamespaceFact,
    index::Index,
};

use super::{PodSecurityWant, rejected};

/// The Pod Security mode labels with their version labels.
pub(super) const MODES: [(&str, &str); 3] = [
    (PSA_ENFORCE, PSA_ENFORCE_VERSION),
    (PSA_WARN, PSA_WARN_VERSION),
    (PSA_AUDIT, PSA_AUDIT_VERSION),
];

/// A stricter level the `enforce` label waits for, and the objects it would reject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub level: PodSecurityLevel,
    /// `Kind/namespace/name`, sorted.
    pub objects: Vec<String>,
}

/// The labels onus applies to one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelPlan {
    /// Every label onus owns after the apply (Pod Security keys only).
    pub labels: BTreeMap<String, String>,
    /// Values onus replaced, restored when it lets go.
    pub previous: BTreeMap<String, String>,
    /// The `enforce` value in place once applied, whoever set it.
    pub enforced: Option<String>,
    /// Set while the wanted level cannot be enforced yet.
    pub waiting: Option<Waiting>,
}

fn rank(level: PodSecurityLevel) -> u8 {
    strictness(Some(&level_name(level).to_string()))
}

/// The strictest level up to `want.level` that `enforce` can carry now, and what the wanted
/// level waits for when that is not the wanted level itself.
fn gate(
    namespace: &str,
    want: PodSecurityWant,
    index: &Index,
) -> (Option<PodSecurityLevel>, Option<Waiting>) {
    let mut waiting = None;
    for level in [PodSecurityLevel::Restricted, PodSecurityLevel::Baseline] {
        if level > want.level {
            continue;
        }
        // A policy forces only its own level, never another policy's stricter one.
        if want.forced.is_some_and(|f| f >= level) {
            return (Some(level), waiting);
        }
        let objects = rejected(namespace, level, want.version, index);
        if objects.is_empty() {
            return (Some(level), waiting);
        }
        waiting.get_or_insert(Waiting { level, objects });
    }
    (None, waiting)
}

/// The Pod Security labels onus wants on `namespace` (whose fact is `fact`) for `want`.
pub fn plan_labels(
    namespace: &str,
    want: PodSecurityWant,
    fact: &NamespaceFact,
    index: &Index,
) -> LabelPlan {
    let (gate_level, waiting) = gate(namespace, want, index);
    let version = want.version.to_string();
    let mut plan = LabelPlan {
        previous: fact.previous.clone(),
        ..LabelPlan::default()
    };
    for (key, version_key) in MODES {
        let current = fact.labels.get(key);
        // As the admission reads it: an unparsable `warn`/`audit` value acts as privileged.
        let have = mode_strictness(&fact.labels, key);
        let owned = fact.onus_owned.contains(key);
        let target = if key == PSA_ENFORCE {
            let gated = gate_level.map(|l| (rank(l), level_name(l).to_string(), version.clone()));
            // What onus enforces already stays while the policies still ask for it.
            let kept = have.min(rank(want.level));
            match (gated, current) {
                (Some(g), _) if !owned || g.0 >= kept => Some(g),
                (_, Some(value)) if owned && kept > 0 => {
                    let kept_value = if kept == have {
                        value.clone()
                    } else {
                        level_name(want.level).to_string()
                    };
                    let kept_version = match fact.labels.get(version_key) {
                        Some(v) if kept == have => v.clone(),
                        _ => version.clone(),
                    };
                    Some((kept, kept_value, kept_version))
                }
                (gated, _) => gated,
            }
        } else {
            Some((
                rank(want.level),
                level_name(want.level).to_string(),
                version.clone(),
            ))
        };
        let Some((level, value, value_version)) = target else {
            continue;
        };
        // An `enforce` value the admission cannot parse enforces restricted at latest: as strict
        // as it gets, and onus could not give it back on release (the admission refuses it).
        let unreadable_enforce =
            key == PSA_ENFORCE && have == 2 && current.is_some_and(|v| v != "restricted");
        if !owned && (have > level || (have == level && unreadable_enforce)) {
            // A stricter label someone else set: theirs, left as it is.
            continue;
        }
        // onus applies a mode and its version together: while it still owns the version alone,
        // a mode value it does not own was written over onus's own (drift, e.g. `kubectl label
        // --overwrite`), not a value onus found there and may restore.
        let overwritten = !owned
            && fact.onus_labels
            && fact.onus_owned.contains(version_key)
            && !fact.onus_shared.contains(version_key);
        for (k, v) in [(key, &value), (version_key, &value_version)] {
            // A value someone else set, or also applies, is theirs to get back (a co-owner loses
            // its hold on the field when onus changes it).
            let theirs = (!owned && !overwritten) || fact.onus_shared.contains(k);
            if !theirs {
                continue;
            }
            // A value the admission cannot read is not restored: it would refuse the write.
            let readable = |old: &&String| {
                if k.ends_with("-version") {
                    old.parse::<crate::podsecurity::Version>().is_ok()
                } else {
                    ["privileged", "baseline", "restricted"].contains(&old.as_str())
                }
            };
            if let Some(old) = fact.labels.get(k).filter(|old| *old != v).filter(readable) {
                plan.previous.entry(k.to_string()).or_insert(old.clone());
            }
        }
        plan.labels.insert(key.to_string(), value);
        plan.labels.insert(version_key.to_string(), value_version);
    }
    plan.enforced = plan
        .labels
        .get(PSA_ENFORCE)
        .or_else(|| fact.labels.get(PSA_ENFORCE))
        .cloned();
    plan.waiting = waiting.filter(|_| strictness(plan.enforced.as_ref()) < rank(want.level));
    plan
}

/// What onus restores when it lets go of a namespace's labels: the values it replaced, for
/// the keys it alone still owns (a key someone else took back, or also applies, is theirs: the
/// restore is forced and would overwrite their value).
pub fn restore(fact: &NamespaceFact) -> BTreeMap<String, String> {
    fact.previous
        .iter()
        .filter(|(k, _)| fact.onus_owned.contains(*k) && !fact.onus_shared.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests;
