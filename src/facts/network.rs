//! NetworkPolicies, projected for NET-01..NET-03 and for onus's own `onus-default-deny`.

use k8s_openapi::{
    api::networking::v1::{
        NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPort,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::{
    DEFAULT_DENY, DenySpec, NetworkPolicyFact, OnusDeny, POLICIES_ANNOTATION, managed_by_onus,
};

fn selects_all_pods(np: &NetworkPolicy) -> bool {
    np.spec.as_ref().is_some_and(|s| {
        s.pod_selector.as_ref().is_none_or(|sel| {
            sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty())
        })
    })
}

/// A rule that only opens port 53 over UDP or TCP (the DNS allowance of a default-deny setup),
/// to any peers. Anything onus cannot prove to be DNS counts as an opening, because NET-02
/// passes and NET-03 stays quiet on what this accepts: a range (`endPort` past 53) opens more
/// than DNS, a named port resolves to whatever number the destination pod gives that name, and
/// a port without a number matches every port.
fn dns_only(rule: &NetworkPolicyEgressRule) -> bool {
    rule.ports
        .as_ref()
        .is_some_and(|ports| !ports.is_empty() && ports.iter().all(dns_port))
}

fn dns_port(port: &NetworkPolicyPort) -> bool {
    // The API server defaults a missing protocol to TCP, and DNS is served over TCP too.
    let dns_protocol = matches!(port.protocol.as_deref(), None | Some("UDP" | "TCP"));
    dns_protocol
        && matches!(port.port, Some(IntOrString::Int(53)))
        && port.end_port.is_none_or(|end| end == 53)
}

fn ingress_allows_all(rule: &NetworkPolicyIngressRule) -> bool {
    rule.from.as_ref().is_none_or(|f| f.is_empty())
}

fn egress_allows_all(rule: &NetworkPolicyEgressRule) -> bool {
    rule.to.as_ref().is_none_or(|t| t.is_empty()) && !dns_only(rule)
}

/// Projects a NetworkPolicy. `policyTypes` defaults to Ingress, plus Egress when egress rules
/// exist, as the API server documents.
pub fn network_policy(np: &NetworkPolicy) -> Option<NetworkPolicyFact> {
    let spec = np.spec.as_ref()?;
    let ingress = spec.ingress.as_deref().unwrap_or_default();
    let egress = spec.egress.as_deref().unwrap_or_default();
    let types: Vec<&str> = match &spec.policy_types {
        Some(t) if !t.is_empty() => t.iter().map(String::as_str).collect(),
        _ if !egress.is_empty() => vec!["Ingress", "Egress"],
        _ => vec!["Ingress"],
    };
    let all = selects_all_pods(np);
    let mut allows_all = Vec::new();
    if types.contains(&"Ingress") && ingress.iter().any(ingress_allows_all) {
        allows_all.push("Ingress");
    }
    if types.contains(&"Egress") && egress.iter().any(egress_allows_all) {
        allows_all.push("Egress");
    }
    let denies_ingress = all && types.contains(&"Ingress") && ingress.is_empty();
    let denies_egress = all && types.contains(&"Egress") && egress.iter().all(dns_only);
    let ours = np.metadata.name.as_deref() == Some(DEFAULT_DENY);
    let onus = (ours && managed_by_onus(&np.metadata)).then(|| OnusDeny {
        deny: DenySpec {
            ingress: denies_ingress,
            egress: denies_egress,
            dns: denies_egress && !egress.is_empty(),
        },
        policies: np
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(POLICIES_ANNOTATION))
            .cloned()
            .unwrap_or_default(),
    });
    Some(NetworkPolicyFact {
        denies_ingress,
        denies_egress,
        allows_all,
        foreign_name: ours && onus.is_none(),
        onus,
    })
}

#[cfg(test)]
mod tests;
