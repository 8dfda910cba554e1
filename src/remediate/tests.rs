use super::*;
use crate::facts::{self, DefaultServiceAccountFact, NamespaceFact, NetworkPolicyFact, OnusDeny};
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

#[test]
fn enforce_waits_while_an_existing_workload_would_be_rejected() {
    let mut index = cluster(&[]);
    privileged_deployment(&mut index);
    let want = PodSecurityWant {
        level: PodSecurityLevel::Baseline,
        version: Version::Latest,
        force_enforce: false,
    };
    let labels = pod_security_labels("shop", want, &BTreeMap::new(), &index);
    assert_eq!(labels.get(PSA_WARN).map(String::as_str), Some("baseline"));
    assert_eq!(labels.get(PSA_ENFORCE), None);
    let forced = pod_security_labels(
        "shop",
        PodSecurityWant {
            force_enforce: true,
            ..want
        },
        &BTreeMap::new(),
        &index,
    );
    assert_eq!(
        forced.get(PSA_ENFORCE).map(String::as_str),
        Some("baseline")
    );
}

#[test]
fn a_stricter_label_someone_set_is_never_lowered() {
    let index = cluster(&[]);
    let current: BTreeMap<String, String> =
        [(PSA_ENFORCE.to_string(), "restricted".to_string())].into();
    let want = PodSecurityWant {
        level: PodSecurityLevel::Baseline,
        version: Version::Latest,
        force_enforce: false,
    };
    let labels = pod_security_labels("shop", want, &current, &index);
    assert_eq!(
        labels.get(PSA_ENFORCE).map(String::as_str),
        Some("restricted")
    );
    assert_eq!(
        labels.get(PSA_ENFORCE_VERSION),
        None,
        "no version is added to someone else's label"
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
                namespace: "shop".into()
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
    assert_eq!(preview.enforce_waiting, [("shop".to_string(), 1)]);
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
