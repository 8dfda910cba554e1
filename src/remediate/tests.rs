use super::*;
use crate::facts::{self, DefaultServiceAccountFact, NamespaceFact, NetworkPolicyFact, OnusDeny};
use crate::{
    crd::PodSecurityLevel::{Baseline, Restricted},
    evaluate::{PSA_ENFORCE_VERSION, PSA_WARN},
};
use serde_json::json;

fn policy(name: &str, spec: serde_json::Value) -> ResponsibilityPolicy {
    serde_json::from_value(json!({
        "apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("policy fixture")
}

fn enforce(name: &str, controls: serde_json::Value) -> ResponsibilityPolicy {
    policy(
        name,
        json!({"serviceModel": "PaaS", "mode": "Enforce", "controls": controls}),
    )
}

/// One namespace `shop` with labels, its `default` ServiceAccount, nothing else.
fn cluster(labels: &[(&str, &str)]) -> Index {
    let mut index = Index::default();
    crate::index::testing::backends_listed(&mut index);
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    index.namespaces.apply(
        Key::new(None, "shop"),
        Some(NamespaceFact {
            labels,
            ..Default::default()
        }),
    );
    index.default_service_accounts.apply(
        Key::new(Some("shop"), "default"),
        Some(DefaultServiceAccountFact {
            automount: None,
            onus_managed: false,
        }),
    );
    index
}

fn privileged_deployment(index: &mut Index) {
    let d = serde_json::from_value(json!({
        "metadata": {"name": "old", "namespace": "shop"},
        "spec": {"selector": {}, "template": {"spec": {"containers": [
            {"name": "app", "securityContext": {"privileged": true}}]}}}
    }))
    .expect("deployment");
    index
        .workloads_mut(facts::WorkloadKind::Deployment)
        .apply(Key::new(Some("shop"), "old"), facts::deployment(&d));
}

fn converge(policies: &[ResponsibilityPolicy], index: &Index) -> Vec<Action> {
    plan(&wants(policies, index, false), index, PlanMode::Converge)
}

#[test]
fn an_audit_policy_changes_nothing() {
    let index = cluster(&[]);
    let audit = policy("a", json!({"serviceModel": "PaaS"}));
    assert_eq!(converge(&[audit], &index), []);
}

#[test]
fn overlapping_policies_merge_to_the_strictest() {
    let index = cluster(&[]);
    let a = enforce(
        "a",
        json!({"podSecurity": {"level": "baseline"}, "network": {"allowDNS": false}}),
    );
    let b = enforce(
        "b",
        json!({"network": {"defaultDeny": ["Ingress", "Egress"]}}),
    );
    let wants = wants([&a, &b], &index, false);
    let shop = &wants["shop"];
    assert_eq!(
        shop.deny,
        Some(DenySpec {
            ingress: true,
            egress: true,
            dns: true
        })
    );
    assert_eq!(
        shop.pod_security.map(|p| p.level),
        Some(PodSecurityLevel::Restricted)
    );
    assert_eq!(shop.policies.iter().collect::<Vec<_>>(), ["a", "b"]);
}

fn want(level: PodSecurityLevel, forced: Option<PodSecurityLevel>) -> PodSecurityWant {
    PodSecurityWant {
        level,
        version: Version::Latest,
        forced,
    }
}

/// The namespace `shop` as it is in `index`, with `labels` of which onus owns `owned`.
fn shop(labels: &[(&str, &str)], owned: &[&str]) -> NamespaceFact {
    NamespaceFact {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        onus_labels: !owned.is_empty(),
        onus_owned: owned.iter().map(|k| k.to_string()).collect(),
        ..Default::default()
    }
}

fn root_deployment(index: &mut Index) {
    let d = serde_json::from_value(json!({
        "metadata": {"name": "rootapp", "namespace": "shop"},
        "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "app"}]}}}
    }))
    .expect("deployment");
    index
        .workloads_mut(facts::WorkloadKind::Deployment)
        .apply(Key::new(Some("shop"), "rootapp"), facts::deployment(&d));
}

#[test]
fn enforce_waits_while_an_existing_workload_would_be_rejected() {
    let mut index = cluster(&[]);
    privileged_deployment(&mut index);
    let plan = plan_labels("shop", want(Baseline, None), &shop(&[], &[]), &index);
    assert_eq!(
        plan.labels.get(PSA_WARN).map(String::as_str),
        Some("baseline")
    );
    assert_eq!(plan.labels.get(PSA_ENFORCE), None);
    assert_eq!(
        plan.waiting,
        Some(Waiting {
            level: Baseline,
            objects: vec!["Deployment/shop/old".into()]
        })
    );
    let forced = plan_labels(
        "shop",
        want(Baseline, Some(Baseline)),
        &shop(&[], &[]),
        &index,
    );
    assert_eq!(
        forced.labels.get(PSA_ENFORCE).map(String::as_str),
        Some("baseline")
    );
    assert_eq!(forced.waiting, None);
}

#[test]
fn the_strictest_level_that_passes_now_is_enforced_while_a_stricter_one_waits() {
    let mut index = cluster(&[]);
    root_deployment(&mut index);
    let plan = plan_labels("shop", want(Restricted, None), &shop(&[], &[]), &index);
    assert_eq!(plan.enforced.as_deref(), Some("baseline"));
    assert_eq!(
        plan.labels.get(PSA_WARN).map(String::as_str),
        Some("restricted")
    );
    assert_eq!(
        plan.waiting.map(|w| (w.level, w.objects)),
        Some((Restricted, vec!["Deployment/shop/rootapp".to_string()]))
    );
}

#[test]
fn tightening_a_policy_keeps_the_level_onus_enforces() {
    // onus enforces baseline; the policy moves to restricted while a root workload runs.
    let mut index = cluster(&[]);
    privileged_deployment(&mut index);
    let fact = shop(
        &[(PSA_ENFORCE, "baseline"), (PSA_ENFORCE_VERSION, "v1.30")],
        &[PSA_ENFORCE, PSA_ENFORCE_VERSION],
    );
    let plan = plan_labels("shop", want(Restricted, None), &fact, &index);
    assert_eq!(
        plan.labels.get(PSA_ENFORCE).map(String::as_str),
        Some("baseline")
    );
    assert_eq!(
        plan.labels.get(PSA_ENFORCE_VERSION).map(String::as_str),
        Some("v1.30"),
        "the kept level keeps its version: a newer one could reject running workloads"
    );
    assert_eq!(plan.waiting.map(|w| w.level), Some(Restricted));
}

#[test]
fn relaxing_a_policy_lowers_the_label_onus_set() {
    let index = cluster(&[]);
    let fact = shop(&[(PSA_ENFORCE, "restricted")], &[PSA_ENFORCE]);
    let plan = plan_labels("shop", want(Baseline, None), &fact, &index);
    assert_eq!(
        plan.labels.get(PSA_ENFORCE).map(String::as_str),
        Some("baseline")
    );
}

#[test]
fn one_policy_forces_only_its_own_level() {
    let mut index = cluster(&[]);
    privileged_deployment(&mut index);
    let plan = plan_labels(
        "shop",
        want(Restricted, Some(Baseline)),
        &shop(&[], &[]),
        &index,
    );
    assert_eq!(plan.enforced.as_deref(), Some("baseline"));
    assert_eq!(plan.waiting.map(|w| w.level), Some(Restricted));
}

#[test]
fn merged_policies_force_only_the_level_of_the_forcing_policy() {
    let index = cluster(&[]);
    let a = enforce(
        "a",
        json!({"podSecurity": {"level": "baseline", "forceEnforce": true}}),
    );
    let b = enforce("b", json!({"podSecurity": {"level": "restricted"}}));
    let wants = wants([&a, &b], &index, false);
    assert_eq!(
        wants["shop"].pod_security,
        Some(want(Restricted, Some(Baseline)))
    );
}

#[test]
fn a_stricter_label_someone_set_is_never_lowered_nor_taken_over() {
    let index = cluster(&[]);
    let fact = shop(&[(PSA_ENFORCE, "restricted")], &[]);
    let plan = plan_labels("shop", want(Baseline, None), &fact, &index);
    assert_eq!(plan.labels.get(PSA_ENFORCE), None, "theirs, left alone");
    assert_eq!(plan.labels.get(PSA_ENFORCE_VERSION), None);
    assert_eq!(plan.enforced.as_deref(), Some("restricted"));
}

#[test]
fn a_label_onus_raises_is_remembered_and_restored_on_release() {
    let index = cluster(&[]);
    let mut fact = shop(
        &[(PSA_ENFORCE, "baseline"), (PSA_ENFORCE_VERSION, "v1.30")],
        &[],
    );
    let plan = plan_labels("shop", want(Restricted, None), &fact, &index);
    assert_eq!(
        plan.labels.get(PSA_ENFORCE).map(String::as_str),
        Some("restricted")
    );
    let expected: BTreeMap<String, String> = [
        (PSA_ENFORCE.to_string(), "baseline".to_string()),
        (PSA_ENFORCE_VERSION.to_string(), "v1.30".to_string()),
    ]
    .into();
    assert_eq!(plan.previous, expected);

    // Applied: onus owns the keys and the namespace carries what it replaced.
    fact.labels.extend(plan.labels.clone());
    fact.onus_owned = plan.labels.keys().cloned().collect();
    fact.onus_labels = true;
    fact.previous = plan.previous.clone();
    assert_eq!(labels::restore(&fact), expected);
    let mut index = index;
    index.namespaces.apply(Key::new(None, "shop"), Some(fact));
    assert_eq!(
        converge(&[], &index),
        [Action::ReleasePodSecurityLabels {
            namespace: "shop".into(),
            restore: expected,
        }]
    );
}

/// What onus applies for `controls`, projected back as the watch would see it.
fn applied(index: &mut Index, controls: serde_json::Value) -> ResponsibilityPolicy {
    let p = enforce("p", controls);
    for action in converge(std::slice::from_ref(&p), index) {
        if let Action::ApplyNetworkPolicy {
            namespace,
            deny,
            policies,
        } = action
        {
            let np =
                serde_json::from_value(crate::enforce::default_deny(&namespace, deny, &policies))
                    .expect("network policy");
            index.network_policies.apply(
                Key::new(Some(&namespace), DEFAULT_DENY),
                facts::network_policy(&np),
            );
        }
    }
    p
}

#[test]
fn a_remediation_in_place_is_not_applied_again() {
    // Every network setting, including the defaults (ingress only, DNS allowed): what onus
    // applied must read back as the same want, or it would be applied on every change.
    for network in [
        json!({}),
        json!({"defaultDeny": ["Ingress", "Egress"]}),
        json!({"defaultDeny": ["Ingress", "Egress"], "allowDNS": false}),
        json!({"defaultDeny": ["Egress"]}),
    ] {
        let mut index = cluster(&[]);
        let controls = json!({"podSecurity": {"enabled": false}, "serviceAccounts": {"enabled": false}, "network": network});
        let p = applied(&mut index, controls);
        assert_eq!(converge(&[p], &index), [], "{network}");
    }
}

#[test]
fn what_no_policy_wants_any_more_is_released() {
    let mut index = cluster(&[]);
    index.network_policies.apply(
        Key::new(Some("shop"), DEFAULT_DENY),
        Some(NetworkPolicyFact {
            onus: Some(OnusDeny {
                deny: DenySpec::default(),
                policies: "gone".into(),
            }),
            ..Default::default()
        }),
    );
    index.namespaces.apply(
        Key::new(None, "shop"),
        Some(NamespaceFact {
            labels: BTreeMap::new(),
            onus_labels: true,
            ..Default::default()
        }),
    );
    assert_eq!(
        converge(&[], &index),
        [
            Action::DeleteNetworkPolicy {
                namespace: "shop".into()
            },
            Action::ReleasePodSecurityLabels {
                namespace: "shop".into(),
                restore: BTreeMap::new(),
            },
        ]
    );
}

#[test]
fn a_foreign_object_with_onus_name_is_left_alone() {
    let mut index = cluster(&[]);
    index.network_policies.apply(
        Key::new(Some("shop"), DEFAULT_DENY),
        Some(NetworkPolicyFact {
            foreign_name: true,
            ..Default::default()
        }),
    );
    let p = enforce(
        "p",
        json!({"podSecurity": {"enabled": false}, "serviceAccounts": {"enabled": false}}),
    );
    assert_eq!(converge(&[p], &index), []);
}

#[test]
fn a_provider_owned_control_is_not_remediated() {
    let index = cluster(&[]);
    let p = policy(
        "p",
        json!({"serviceModel": "PaaS", "mode": "Enforce",
        "controls": {"podSecurity": {"enabled": false}, "serviceAccounts": {"enabled": false}},
        "responsibilities": [{"control": "NET-01", "owner": "Provider", "reason": "cloud firewall"}]}),
    );
    assert_eq!(converge(&[p], &index), []);
}

#[test]
fn the_preview_of_an_audit_policy_counts_what_enforce_would_do() {
    let mut index = cluster(&[]);
    privileged_deployment(&mut index);
    let p = policy("p", json!({"serviceModel": "PaaS"}));
    let preview = preview(&p, &index);
    assert_eq!(
        (
            preview.network_policies,
            preview.pod_security_labels,
            preview.service_accounts
        ),
        (1, 1, 1)
    );
    assert_eq!(
        preview.enforce_waiting,
        [Arc::new(NamespaceWaiting {
            namespace: "shop".into(),
            enforced: None,
            waiting: Waiting {
                level: Restricted,
                objects: vec!["Deployment/shop/old".into()]
            }
        })]
    );
}

#[test]
fn a_terminating_namespace_is_neither_remediated_nor_released() {
    let mut index = cluster(&[]);
    index.namespaces.apply(
        Key::new(None, "shop"),
        Some(NamespaceFact {
            onus_labels: true,
            terminating: true,
            ..Default::default()
        }),
    );
    let p = enforce("p", json!({}));
    assert_eq!(converge(&[p], &index), []);
}

#[test]
fn an_invalid_spec_holds_the_last_valid_one_from_status() {
    let index = cluster(&[]);
    let valid = enforce("p", json!({}));
    let held = spec_to_record(&valid).expect("an Enforce spec is recorded");
    // Invalid: a family in Enforce under an Audit policy.
    let mut edited = policy(
        "p",
        json!({"serviceModel": "PaaS", "mode": "Audit", "controls": {"network": {"mode": "Enforce"}}}),
    );
    assert!(
        wants([&edited], &index, false).is_empty(),
        "nothing recorded yet"
    );
    edited.status = Some(crate::crd::ResponsibilityPolicyStatus {
        enforced_spec: Some(held.clone()),
        ..Default::default()
    });
    let mut expected = wants([&valid], &index, false);
    for want in expected.values_mut() {
        want.hold = true;
    }
    assert_eq!(wants([&edited], &index, false), expected);
    assert_eq!(
        spec_to_record(&edited),
        Some(held),
        "kept across reconciles"
    );

    // A valid switch to Audit is the release.
    let mut audit = policy("p", json!({"serviceModel": "PaaS", "mode": "Audit"}));
    audit.status = edited.status.clone();
    assert!(wants([&audit], &index, false).is_empty());
    assert_eq!(spec_to_record(&audit), None);
}

mod attack;
mod gate_pods;
mod webhook_gate;
