//! Attacks on the plan: look-alike objects and invalid edits.

use super::*;

/// Attack: whoever may create NetworkPolicies in a namespace creates an allow-all one named
/// `onus-default-deny` first. onus rightly leaves it alone, but must not then report the
/// default-deny as in place ("every safe remediation is in place").
#[test]
fn a_foreign_allow_all_object_with_onus_name_is_not_reported_as_remediated() {
    let mut index = cluster(&[]);
    index.network_policies.apply(
        Key::new(Some("shop"), DEFAULT_DENY),
        Some(NetworkPolicyFact {
            foreign_name: true,
            allows_all: vec!["Ingress"],
            ..Default::default()
        }),
    );
    let p = enforce(
        "p",
        json!({"podSecurity": {"enabled": false}, "serviceAccounts": {"enabled": false}}),
    );
    assert_eq!(
        converge(std::slice::from_ref(&p), &index),
        [],
        "still theirs"
    );
    assert_eq!(preview(&p, &index).network_policies, 1);
}

/// Race: convergence is global, so generation 6 of `p` (egress deny added) can be applied by
/// another policy's reconcile (or a retry) before `p`'s own reconcile records it in
/// `status.enforcedSpec`; an invalid edit (generation 7) meanwhile holds the recorded
/// generation 5 and takes the egress deny away. README: an invalid edit "keeps the remediations
/// of the last valid generation".
#[test]
fn an_invalid_edit_never_lowers_what_a_later_valid_generation_applied() {
    let mut index = cluster(&[]);
    let off = json!({"enabled": false});
    let gen5 = enforce(
        "p",
        json!({"network": {"defaultDeny": ["Ingress"]}, "podSecurity": off, "serviceAccounts": off}),
    );
    let recorded = spec_to_record(&gen5).expect("recorded");
    applied(
        &mut index,
        json!({"network": {"defaultDeny": ["Ingress", "Egress"]}, "podSecurity": off, "serviceAccounts": off}),
    );
    let mut gen7 = policy(
        "p",
        json!({"serviceModel": "PaaS", "mode": "Audit", "controls": {"network": {"mode": "Enforce"}}}),
    );
    gen7.status = Some(crate::crd::ResponsibilityPolicyStatus {
        enforced_spec: Some(recorded),
        ..Default::default()
    });
    let actions = converge(&[gen7], &index);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::ApplyNetworkPolicy { deny, .. } if !deny.egress)),
        "the invalid edit removes the egress deny: {actions:?}"
    );
}
