//! Remediation previews (what Enforce mode still has to change for one policy), incrementally:
//! a namespace's share is computed once per distinct want (all that a policy asks there) and
//! reused until the namespace's facts change. Equal to [`remediate::preview`], which stays the
//! reference (see the property test). Like the [`Evaluator`](crate::evaluate::Evaluator), it
//! trusts the index's generations: every change of facts is recorded with [`Index::touch`].

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use super::{
    Action, DenyWaiting, NamespaceWaiting, NamespaceWant, PlanMode, Preview, plan, plan_labels,
    wants,
};
use crate::{
    crd::{Mode, ResponsibilityPolicy, ResponsibilityPolicySpec},
    index::{Index, Key, NamespaceStamp},
    validate::validate,
};

/// One namespace's share of a preview.
#[derive(Clone, Debug, Default)]
struct Share {
    network_policies: u32,
    pod_security_labels: u32,
    service_accounts: u32,
    waiting: Option<NamespaceWaiting>,
    deny: Option<DenyWaiting>,
}

/// What one namespace's shares were computed at, and the shares per want.
struct Entry {
    at: (NamespaceStamp, u64, Option<u32>),
    shares: Vec<(NamespaceWant, Share)>,
}

/// The cached shares of every namespace, and whole previews at one index state.
#[derive(Default)]
pub struct Previews {
    namespaces: HashMap<String, Entry>,
    /// Namespace-object generation at which entries of gone namespaces were last dropped.
    pruned_at: Option<u64>,
    /// Index generation and server version `whole` holds for.
    whole_at: Option<(u64, Option<u32>)>,
    /// Whole previews by spec: policies with equal specs share one.
    whole: Vec<(ResponsibilityPolicySpec, Arc<Preview>)>,
}

impl Previews {
    /// [`remediate::preview`] of a policy, from the cached shares of its namespaces.
    pub fn get(&mut self, policy: &ResponsibilityPolicy, index: &Index) -> Arc<Preview> {
        let at = (index.generation, index.server_minor);
        if self.whole_at != Some(at) {
            self.whole_at = Some(at);
            self.whole.clear();
        }
        // What a preview reads of the policy besides its spec: a deleting one wants nothing,
        // an invalid one in Enforce mode holds the spec in its status.
        let memo = policy.metadata.deletion_timestamp.is_none()
            && (policy.spec.mode == Mode::Audit || validate(&policy.spec).is_ok());
        if memo && let Some((_, preview)) = self.whole.iter().find(|(spec, _)| *spec == policy.spec)
        {
            return preview.clone();
        }
        let preview = Arc::new(self.assemble(policy, index));
        if memo {
            self.whole.push((policy.spec.clone(), preview.clone()));
        }
        preview
    }

    fn assemble(&mut self, policy: &ResponsibilityPolicy, index: &Index) -> Preview {
        let objects = index.generations.namespace_objects();
        if self.pruned_at != Some(objects) {
            self.pruned_at = Some(objects);
            self.namespaces
                .retain(|ns, _| index.namespaces.get(&Key::new(None, ns)).is_some());
        }
        let mut out = Preview::default();
        for (ns, want) in wants([policy], index, policy.spec.mode == Mode::Audit) {
            // Which policies asked is not counted: the share depends on what they asked only.
            let want = NamespaceWant {
                policies: BTreeSet::new(),
                ..want
            };
            let share = self.share(index, ns, want);
            out.network_policies += share.network_policies;
            out.pod_security_labels += share.pod_security_labels;
            out.service_accounts += share.service_accounts;
            out.enforce_waiting.extend(share.waiting);
            out.deny_waiting.extend(share.deny);
        }
        out
    }

    fn share(&mut self, index: &Index, ns: String, want: NamespaceWant) -> Share {
        let at = (
            index.generations.namespace(&ns),
            index.generations.namespace_objects(),
            index.server_minor,
        );
        let entry = self.namespaces.entry(ns.clone()).or_insert_with(|| Entry {
            at,
            shares: Vec::new(),
        });
        if entry.at != at {
            entry.at = at;
            entry.shares.clear();
        }
        if let Some((_, share)) = entry.shares.iter().find(|(w, _)| *w == want) {
            return share.clone();
        }
        let mut share = Share {
            deny: super::deny_waiting(&ns, &want, index),
            ..Share::default()
        };
        let fact = index.namespaces.get(&Key::new(None, &ns));
        if let (Some(p), Some(fact)) = (want.pod_security, fact) {
            let labels = plan_labels(&ns, p, fact, index);
            share.waiting = labels.waiting.map(|waiting| NamespaceWaiting {
                namespace: ns.clone(),
                enforced: labels.enforced,
                waiting,
            });
        }
        let one = BTreeMap::from([(ns, want.clone())]);
        for action in plan(&one, index, PlanMode::Preview) {
            match action {
                Action::ApplyNetworkPolicy { .. } => share.network_policies += 1,
                Action::ApplyPodSecurityLabels { .. } => share.pod_security_labels += 1,
                Action::DisableDefaultToken { .. } => share.service_accounts += 1,
                _ => {}
            }
        }
        entry.shares.push((want, share.clone()));
        share
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
