//! The default-deny gate (webhooks, CRD conversion webhooks, APIServices, onus's own
//! namespace) and the directions of `defaultDeny`.

use super::*;
use crate::index::testing::{backends_listed, webhook};

/// Only the network family, in Enforce mode, with `network` settings.
fn network_only(name: &str, network: serde_json::Value) -> ResponsibilityPolicy {
    enforce(
        name,
        json!({"podSecurity": {"enabled": false}, "serviceAccounts": {"enabled": false},
               "network": network}),
    )
}

fn deny(ingress: bool, egress: bool, dns: bool) -> DenySpec {
    DenySpec {
        ingress,
        egress,
        dns,
    }
}

fn apply_np(policies: &[&str]) -> Action {
    Action::ApplyNetworkPolicy {
        namespace: "shop".into(),
        deny: deny(true, false, false),
        policies: policies.iter().map(|p| p.to_string()).collect(),
    }
}

/// onus's own `onus-default-deny` in `shop`, denying `d`, serving `policies`.
fn onus_deny(index: &mut Index, d: DenySpec, policies: &str) {
    let np = serde_json::from_value(crate::enforce::default_deny(
        "shop",
        d,
        &[policies.to_string()],
    ))
    .expect("network policy");
    index.network_policies.apply(
        Key::new(Some("shop"), DEFAULT_DENY),
        facts::network_policy(&np),
    );
}

#[test]
fn a_namespace_that_backs_a_webhook_gets_no_default_deny_and_status_says_why() {
    let mut index = cluster(&[]);
    webhook(&mut index, "cert-manager-webhook", "shop");
    let p = network_only("p", json!({}));
    assert_eq!(converge(std::slice::from_ref(&p), &index), []);
    let preview = preview(&p, &index);
    assert_eq!(preview.network_policies, 0);
    assert_eq!(
        preview.deny_waiting,
        [DenyWaiting {
            namespace: "shop".into(),
            reasons: vec!["backs webhook cert-manager-webhook".into()],
            waits: true,
            kept: false,
        }]
    );
    assert!(!preview.is_done(), "a held deny is not done");
    assert_eq!(
        crate::status::deny_waiting_message(&preview.deny_waiting[0]),
        "NetworkPolicy waits in shop: backs webhook cert-manager-webhook"
    );
}

#[test]
fn listing_the_namespace_lets_the_deny_in_but_only_if_every_policy_wanting_one_lists_it() {
    let mut index = cluster(&[]);
    webhook(&mut index, "cert-manager-webhook", "shop");
    let allows = network_only("a", json!({"allowDefaultDenyInFrontOfWebhooks": ["shop"]}));
    assert_eq!(
        converge(std::slice::from_ref(&allows), &index),
        [apply_np(&["a"])]
    );
    assert_eq!(preview(&allows, &index).deny_waiting, []);
    // Another policy wants a deny here too and has not said the webhook may sit behind it.
    let silent = network_only("b", json!({}));
    assert_eq!(converge(&[allows.clone(), silent.clone()], &index), []);
    // A policy that wants no deny (network off) has no say.
    let off = enforce("c", json!({"network": {"enabled": false}}));
    assert_eq!(
        converge(&[allows, off], &index)
            .into_iter()
            .filter(|a| matches!(a, Action::ApplyNetworkPolicy { .. }))
            .count(),
        1
    );
}

#[test]
fn onus_own_namespace_never_gets_a_default_deny_even_when_listed() {
    let mut index = cluster(&[]);
    index.own_namespace = Some("shop".into());
    let p = network_only("p", json!({"allowDefaultDenyInFrontOfWebhooks": ["shop"]}));
    assert_eq!(converge(std::slice::from_ref(&p), &index), []);
    assert_eq!(
        preview(&p, &index).deny_waiting[0].reasons,
        ["onus runs there"]
    );
}

#[test]
fn until_the_backend_watches_have_listed_every_default_deny_is_held() {
    let mut index = cluster(&[]);
    // A fresh index: the webhook, CRD and APIService watches have not listed.
    index.backends = Default::default();
    let p = network_only("p", json!({}));
    assert_eq!(converge(std::slice::from_ref(&p), &index), []);
    assert_eq!(
        preview(&p, &index).deny_waiting[0].reasons,
        ["webhooks and APIServices not listed yet"]
    );
    backends_listed(&mut index);
    assert_eq!(converge(&[p], &index), [apply_np(&["p"])]);
}

#[test]
fn a_deny_applied_before_the_namespace_backed_a_webhook_stays_is_never_tightened_and_warns() {
    let mut index = cluster(&[]);
    onus_deny(&mut index, deny(true, false, false), "p");
    webhook(&mut index, "late-webhook", "shop");
    let p = network_only("p", json!({}));
    // Kept: removing a protection is not onus's call.
    assert_eq!(converge(std::slice::from_ref(&p), &index), []);
    let preview = preview(&p, &index);
    assert_eq!(preview.deny_waiting.len(), 1);
    assert!(preview.deny_waiting[0].kept && !preview.deny_waiting[0].waits);
    assert!(preview.is_done());
    // Asking for egress too: the deny is not tightened in front of the webhook.
    let both = network_only("p", json!({"defaultDeny": ["Ingress", "Egress"]}));
    assert_eq!(converge(std::slice::from_ref(&both), &index), []);
    assert!(preview_waits(&both, &index));
    // The policies loosen it as usual: egress only now, so the ingress deny goes.
    let egress = network_only("p", json!({"defaultDeny": ["Egress"]}));
    assert_eq!(
        converge(std::slice::from_ref(&egress), &index),
        [Action::DeleteNetworkPolicy {
            namespace: "shop".into()
        }]
    );
    // And no policy wanting it releases it.
    assert_eq!(
        converge(&[network_only("p", json!({"enabled": false}))], &index),
        [Action::DeleteNetworkPolicy {
            namespace: "shop".into()
        }]
    );
}

fn preview_waits(p: &ResponsibilityPolicy, index: &Index) -> bool {
    preview(p, index).deny_waiting.iter().any(|w| w.waits)
}

#[test]
fn a_narrowed_policy_loosens_a_kept_deny_only_as_far_as_the_others_allow() {
    let mut index = cluster(&[]);
    onus_deny(&mut index, deny(true, true, true), "a,b");
    webhook(&mut index, "late-webhook", "shop");
    let a = network_only("a", json!({"defaultDeny": ["Ingress"]}));
    let b = network_only("b", json!({"defaultDeny": ["Ingress", "Egress"]}));
    // Both still want what is there: nothing changes.
    assert_eq!(converge(&[a.clone(), b], &index), []);
    // b narrows to ingress: the egress deny goes, the ingress deny a wants stays.
    let b = network_only("b", json!({"defaultDeny": ["Ingress"]}));
    assert_eq!(
        converge(&[a, b], &index),
        [Action::ApplyNetworkPolicy {
            namespace: "shop".into(),
            deny: deny(true, false, false),
            policies: vec!["a".into(), "b".into()],
        }]
    );
}

#[test]
fn the_directions_of_default_deny_are_the_directions_denied() {
    let index = cluster(&[]);
    let wanted = |network: serde_json::Value| {
        wants([&network_only("p", network)], &index, false)
            .get("shop")
            .and_then(|w| w.deny)
    };
    assert_eq!(wanted(json!({})), Some(deny(true, false, false)));
    assert_eq!(
        wanted(json!({"defaultDeny": ["Egress"]})),
        Some(deny(false, true, true))
    );
    assert_eq!(
        wanted(json!({"defaultDeny": ["Egress"], "allowDNS": false})),
        Some(deny(false, true, false))
    );
    assert_eq!(wanted(json!({"defaultDeny": []})), None);
    // The generated object carries exactly those policyTypes.
    let np = crate::enforce::default_deny("shop", deny(false, true, true), &["p".into()]);
    assert_eq!(np["spec"]["policyTypes"], json!(["Egress"]));
}

#[test]
fn policies_asking_for_different_directions_merge_to_both_and_narrowing_one_keeps_the_other() {
    let mut index = cluster(&[]);
    let a = network_only("a", json!({"defaultDeny": ["Ingress"]}));
    let b = network_only("b", json!({"defaultDeny": ["Egress"], "allowDNS": false}));
    assert_eq!(
        wants([&a, &b], &index, false)["shop"].deny,
        Some(deny(true, true, false))
    );
    onus_deny(&mut index, deny(true, true, false), "a,b");
    // b gives up egress (empty list): a's ingress deny stays, the egress deny goes.
    let b = network_only("b", json!({"defaultDeny": []}));
    assert_eq!(
        converge(&[a, b], &index),
        [Action::ApplyNetworkPolicy {
            namespace: "shop".into(),
            deny: deny(true, false, false),
            policies: vec!["a".into()],
        }]
    );
}

#[test]
fn an_unreadable_webhook_configuration_holds_every_default_deny_until_it_can_be_read() {
    let mut index = cluster(&[]);
    let kind = crate::facts::backends::BackendKind::ValidatingWebhookConfiguration;
    let key = Key::new(None, "broken-hook");
    index.backends.set_readable(kind, &key, false, false);
    let p = network_only("p", json!({}));
    // Where it calls is unknown: shop (which backs nothing readable) is held too, and says why.
    assert_eq!(converge(std::slice::from_ref(&p), &index), []);
    assert_eq!(
        preview(&p, &index).deny_waiting,
        [DenyWaiting {
            namespace: "shop".into(),
            reasons: vec![
                "webhook broken-hook could not be read (where it calls is unknown)".into()
            ],
            waits: true,
            kept: false,
        }]
    );
    // An explicit allowance for the namespace still lets it in.
    let allows = network_only("a", json!({"allowDefaultDenyInFrontOfWebhooks": ["shop"]}));
    assert_eq!(
        converge(std::slice::from_ref(&allows), &index),
        [apply_np(&["a"])]
    );
    // Once it decodes, the deny goes in.
    index.backends.set_readable(kind, &key, true, false);
    assert_eq!(
        converge(std::slice::from_ref(&p), &index),
        [apply_np(&["p"])]
    );
}

#[test]
fn a_webhook_called_by_a_cluster_ip_holds_the_deny_where_that_service_is() {
    let mut index = cluster(&[]);
    let kind = crate::facts::backends::BackendKind::ValidatingWebhookConfiguration;
    let ip: std::net::IpAddr = "10.96.0.12".parse().expect("ip");
    index.backends.map(kind).apply(
        Key::new(None, "by-ip"),
        Some(crate::facts::backends::BackendFact {
            services: Vec::new(),
            ips: vec![ip],
        }),
    );
    index.backends.rebuild();
    let p = network_only("p", json!({}));
    // No Service has the address (an outside one): nothing is held.
    assert_eq!(
        converge(std::slice::from_ref(&p), &index),
        [apply_np(&["p"])]
    );
    // A Service in shop has it: shop is held, and says by what.
    index.service_ips.apply(
        Key::new(Some("shop"), "hook"),
        Some(facts::ClusterIpsFact { ips: vec![ip] }),
    );
    index.touch("Service", Some("shop"));
    assert_eq!(converge(std::slice::from_ref(&p), &index), []);
    assert_eq!(
        preview(&p, &index).deny_waiting[0].reasons,
        ["backs webhook by-ip (by cluster IP 10.96.0.12)"]
    );
}
