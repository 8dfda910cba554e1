//! How egress rules count for NET-02 (does a default deny still deny egress?) and NET-03
//! (does a rule open egress to everyone?): only a provable DNS allowance is neither.

use super::*;
use serde_json::{Value, json};

/// A default deny of both directions whose only egress rule is `rule`.
fn deny_with_egress_rule(rule: Value) -> NetworkPolicyFact {
    let np: NetworkPolicy = serde_json::from_value(json!({"metadata": {"name": "deny"}, "spec": {
        "podSelector": {}, "policyTypes": ["Ingress", "Egress"], "egress": [rule]
    }}))
    .expect("fixture");
    network_policy(&np).expect("fact")
}

fn is_dns_allowance(fact: &NetworkPolicyFact) -> bool {
    fact.denies_egress && fact.allows_all.is_empty()
}

fn opens_egress_to_everyone(fact: &NetworkPolicyFact) -> bool {
    !fact.denies_egress && fact.allows_all == ["Egress"]
}

#[test]
fn a_port_range_starting_at_53_is_not_a_dns_allowance() {
    let fact = deny_with_egress_rule(json!({"ports": [
        {"protocol": "UDP", "port": 53, "endPort": 65535}
    ]}));
    assert!(opens_egress_to_everyone(&fact), "{fact:?}");
}

#[test]
fn a_range_hidden_among_dns_ports_is_not_a_dns_allowance() {
    let fact = deny_with_egress_rule(json!({"ports": [
        {"protocol": "UDP", "port": 53},
        {"protocol": "TCP", "port": 53, "endPort": 1024}
    ]}));
    assert!(opens_egress_to_everyone(&fact), "{fact:?}");
}

#[test]
fn a_range_of_just_53_is_a_dns_allowance() {
    let fact = deny_with_egress_rule(json!({"ports": [
        {"protocol": "UDP", "port": 53, "endPort": 53}
    ]}));
    assert!(is_dns_allowance(&fact), "{fact:?}");
}

#[test]
fn a_named_port_is_not_a_dns_allowance() {
    // The name resolves on the destination pod, to whatever number that pod gives it.
    let fact = deny_with_egress_rule(json!({"ports": [{"protocol": "UDP", "port": "dns"}]}));
    assert!(opens_egress_to_everyone(&fact), "{fact:?}");
}

#[test]
fn a_port_53_without_protocol_is_a_dns_allowance() {
    // The protocol defaults to TCP, and DNS answers over TCP too.
    let fact = deny_with_egress_rule(json!({"ports": [{"port": 53}]}));
    assert!(is_dns_allowance(&fact), "{fact:?}");
}

#[test]
fn port_53_over_sctp_is_not_a_dns_allowance() {
    let fact = deny_with_egress_rule(json!({"ports": [{"protocol": "SCTP", "port": 53}]}));
    assert!(opens_egress_to_everyone(&fact), "{fact:?}");
}

#[test]
fn a_protocol_without_a_port_is_not_a_dns_allowance() {
    let fact = deny_with_egress_rule(json!({"ports": [{"protocol": "UDP"}]}));
    assert!(opens_egress_to_everyone(&fact), "{fact:?}");
}

#[test]
fn dns_to_chosen_peers_is_a_dns_allowance() {
    let fact = deny_with_egress_rule(json!({
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    }));
    assert!(is_dns_allowance(&fact), "{fact:?}");
}

#[test]
fn a_port_range_to_chosen_peers_does_not_deny_egress_but_is_not_open_to_everyone() {
    let fact = deny_with_egress_rule(json!({
        "to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
        "ports": [{"protocol": "TCP", "port": 53, "endPort": 65535}]
    }));
    assert!(!fact.denies_egress, "{fact:?}");
    assert!(fact.allows_all.is_empty(), "{fact:?}");
}
