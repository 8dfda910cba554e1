//! The incremental plan equals `wants` + `plan` from scratch over random sequences of index
//! and policy changes.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::{
    crd::{EnforcedSpec, ResponsibilityPolicyStatus},
    evaluate::cache::tests::{base, change},
    facts::{
        DEFAULT_DENY, DefaultServiceAccountFact, DenySpec, NamespaceFact, NetworkPolicyFact,
        OnusDeny,
    },
    index::Key,
    remediate::plan,
};

const NAMESPACES: [&str; 4] = ["default", "shop", "lab", "ops"];

fn policy(name: &str, spec: serde_json::Value) -> ResponsibilityPolicy {
    serde_json::from_value(json!({
        "apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("policy")
}

/// Enforce policies with selectors, levels, versions, allowances; one of them invalid and
/// holding its last valid spec, one being deleted (as the sets below choose).
fn policies() -> Vec<ResponsibilityPolicy> {
    let mut invalid = policy(
        "p3",
        json!({"serviceModel": "PaaS", "mode": "Enforce",
               "responsibilities": [{"control": "XYZ-99", "owner": "Customer", "reason": "x"}]}),
    );
    invalid.status = Some(ResponsibilityPolicyStatus {
        enforced_spec: Some(EnforcedSpec {
            generation: 1,
            spec: serde_json::from_value(json!({"serviceModel": "PaaS", "mode": "Enforce",
                "excludedNamespaces": ["ops"],
                "controls": {"network": {"defaultDeny": ["Egress"]}}}))
            .expect("spec"),
        }),
        ..Default::default()
    });
    let mut deleting = policy("p4", json!({"serviceModel": "PaaS", "mode": "Enforce"}));
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
    );
    vec![
        policy(
            "p0",
            json!({"serviceModel": "PaaS", "mode": "Enforce",
                   "controls": {"network": {"defaultDeny": ["Ingress", "Egress"],
                                            "allowDefaultDenyInFrontOfWebhooks": ["shop"]}}}),
        ),
        policy(
            "p1",
            json!({"serviceModel": "PaaS", "mode": "Enforce",
                   "namespaceSelector": {"matchLabels": {"env": "prod"}},
                   "controls": {"podSecurity": {"level": "baseline", "version": "v1.25"}}}),
        ),
        policy(
            "p2",
            json!({"serviceModel": "IaaS", "mode": "Enforce", "excludedNamespaces": ["lab"],
                   "controls": {"podSecurity": {"forceEnforce": true}}}),
        ),
        invalid,
        deleting,
        policy("p5", json!({"serviceModel": "PaaS", "mode": "Audit"})),
    ]
}

/// What onus applied earlier, as the watches would read it back (for the releases).
fn onus_object(index: &mut Index, what: u8, ns: &str, flag: bool) {
    match what {
        0 => {
            index.network_policies.apply(
                Key::new(Some(ns), DEFAULT_DENY),
                Some(NetworkPolicyFact {
                    denies_ingress: true,
                    denies_egress: flag,
                    onus: Some(OnusDeny {
                        deny: DenySpec {
                            ingress: true,
                            egress: flag,
                            dns: false,
                        },
                        policies: "p0".into(),
                    }),
                    ..Default::default()
                }),
            );
            index.touch("NetworkPolicy", Some(ns));
        }
        1 => {
            index.default_service_accounts.apply(
                Key::new(Some(ns), "default"),
                Some(DefaultServiceAccountFact {
                    automount: Some(false),
                    onus_managed: flag,
                }),
            );
            index.touch("ServiceAccount", Some(ns));
        }
        _ => {
            let mut labels = BTreeMap::new();
            if flag {
                labels.insert("env".to_string(), "prod".to_string());
            }
            labels.insert(
                crate::evaluate::PSA_ENFORCE.to_string(),
                "baseline".to_string(),
            );
            index.namespaces.apply(
                Key::new(None, ns),
                Some(NamespaceFact {
                    labels,
                    onus_labels: true,
                    terminating: !flag && ns == "ops",
                    ..Default::default()
                }),
            );
            index.touch("Namespace", None);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn incremental_plans_equal_plans_from_scratch(
        steps in prop::collection::vec(
            (prop_oneof![6 => 0u8..7, 1 => 7u8..13, 2 => 13u8..16, 3 => 16u8..19],
             0u8..4, 0u8..3, any::<bool>(), 0u8..8),
            1..40,
        ),
    ) {
        let all = policies();
        let mut index = base();
        let mut planner = Planner::default();
        for (step, (op, n, name, flag, set)) in steps.into_iter().enumerate() {
            let ns = NAMESPACES[usize::from(n)];
            match op {
                13 if !index.backends.synced() => {
                    crate::index::testing::backends_listed(&mut index);
                    index.touch("APIService", None);
                }
                13..=15 => crate::index::testing::webhook(&mut index, &format!("wh-{name}"), ns),
                16..=18 => onus_object(&mut index, op - 16, ns, flag),
                _ => change(&mut index, op, n, name, flag),
            }
            // Usually all policies; sometimes one fewer (a policy deleted or created).
            let chosen: Vec<&ResponsibilityPolicy> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| set < 6 || *i != usize::from(set) - 2)
                .map(|(_, p)| p)
                .collect();
            // `set` 7: no plan after this change (several changes accumulate).
            if set == 7 {
                continue;
            }
            let reference = plan(&wants(chosen.iter().copied(), &index, false), &index, PlanMode::Converge);
            prop_assert_eq!(planner.plan(&chosen, &index), reference.iter().collect::<Vec<_>>(), "after step {}", step);
        }
    }
}

#[test]
fn a_namespaced_change_is_planned_for_that_namespace_only() {
    let all = policies();
    let chosen: Vec<&ResponsibilityPolicy> = all.iter().collect();
    let mut index = base();
    let mut planner = Planner::default();
    planner.plan(&chosen, &index);
    let before = planner.stats();
    change(&mut index, 0, 1, 0, false);
    onus_object(&mut index, 0, "lab", true);
    let reference = plan(
        &wants(chosen.iter().copied(), &index, false),
        &index,
        PlanMode::Converge,
    );
    assert_eq!(
        planner.plan(&chosen, &index),
        reference.iter().collect::<Vec<_>>()
    );
    let after = planner.stats();
    assert_eq!((after.full, after.wants), (before.full, before.wants));
    assert_eq!(after.deltas, before.deltas + 1);

    // New policy objects with the same specs: the wants are kept.
    let copies: Vec<ResponsibilityPolicy> = all.clone();
    let chosen: Vec<&ResponsibilityPolicy> = copies.iter().collect();
    change(&mut index, 0, 2, 0, true);
    planner.plan(&chosen, &index);
    assert_eq!(planner.stats().wants, after.wants);

    // A Namespace object changed: the wants are merged again.
    change(&mut index, 7, 1, 0, true);
    let reference = plan(
        &wants(chosen.iter().copied(), &index, false),
        &index,
        PlanMode::Converge,
    );
    assert_eq!(
        planner.plan(&chosen, &index),
        reference.iter().collect::<Vec<_>>()
    );
    assert_eq!(planner.stats().wants, after.wants + 1);
}
