//! The IAM-03..IAM-06 capability catalogue and the RBAC authorizer's rule matching.

use k8s_openapi::api::rbac::v1::PolicyRule;

const CORE: &str = "";
const APPS: &str = "apps";
const BATCH: &str = "batch";
const RBAC: &str = "rbac.authorization.k8s.io";
const CERTS: &str = "certificates.k8s.io";
const ADMISSION: &str = "admissionregistration.k8s.io";
const AUTHN: &str = "authentication.k8s.io";

/// Maximum number of matched items spelled out in a finding's detail.
const DETAIL_ITEMS: usize = 3;

/// One dangerous capability: some verbs on some resources of one API group.
struct Capability {
    control: &'static str,
    /// Verbs that count; empty means "any verb".
    verbs: &'static [&'static str],
    group: &'static str,
    resources: &'static [&'static str],
    /// Cluster-scoped resources cannot be granted by a RoleBinding.
    cluster_scoped: bool,
    /// Only rules without resourceNames count (IAM-03).
    broad_only: bool,
    /// Counts only when the same role also grants `bind` (IAM-05: create bindings + bind).
    with_bind: bool,
}

const fn cap(
    control: &'static str,
    verbs: &'static [&'static str],
    group: &'static str,
    resources: &'static [&'static str],
    cluster_scoped: bool,
) -> Capability {
    Capability {
        control,
        verbs,
        group,
        resources,
        cluster_scoped,
        broad_only: false,
        with_bind: false,
    }
}

/// The capability catalogue for IAM-03..IAM-06, in the order details are written.
const CAPABILITIES: &[Capability] = &[
    Capability {
        broad_only: true,
        ..cap(
            "IAM-03",
            &["get", "list", "watch"],
            CORE,
            &["secrets"],
            false,
        )
    },
    cap("IAM-04", &["create"], CORE, &["pods"], false),
    cap(
        "IAM-04",
        &["create"],
        APPS,
        &["deployments", "statefulsets", "daemonsets", "replicasets"],
        false,
    ),
    cap("IAM-04", &["create"], BATCH, &["jobs", "cronjobs"], false),
    cap(
        "IAM-04",
        &["create"],
        CORE,
        &["replicationcontrollers"],
        false,
    ),
    cap(
        "IAM-04",
        &["create", "get"],
        CORE,
        &["pods/exec", "pods/attach"],
        false,
    ),
    cap(
        "IAM-04",
        &["update", "patch"],
        CORE,
        &["pods/ephemeralcontainers"],
        false,
    ),
    cap("IAM-05", &["escalate", "bind"], RBAC, &["roles"], false),
    cap("IAM-05", &["escalate"], RBAC, &["clusterroles"], true),
    cap("IAM-05", &["bind"], RBAC, &["clusterroles"], false),
    cap(
        "IAM-05",
        &["impersonate"],
        CORE,
        &["serviceaccounts"],
        false,
    ),
    cap("IAM-05", &["impersonate"], CORE, &["users", "groups"], true),
    cap(
        "IAM-05",
        &["impersonate"],
        AUTHN,
        &["uids", "userextras/*"],
        true,
    ),
    Capability {
        with_bind: true,
        ..cap("IAM-05", &["create"], RBAC, &["rolebindings"], false)
    },
    Capability {
        with_bind: true,
        ..cap("IAM-05", &["create"], RBAC, &["clusterrolebindings"], true)
    },
    cap("IAM-06", &[], CORE, &["nodes/proxy"], true),
    cap(
        "IAM-06",
        &["update"],
        CERTS,
        &["certificatesigningrequests/approval"],
        true,
    ),
    cap("IAM-06", &["approve"], CERTS, &["signers"], true),
    cap(
        "IAM-06",
        &["create"],
        CORE,
        &["serviceaccounts/token"],
        false,
    ),
    cap("IAM-06", &["create"], CORE, &["persistentvolumes"], true),
    cap(
        "IAM-06",
        &["create", "update", "patch"],
        ADMISSION,
        &[
            "validatingwebhookconfigurations",
            "mutatingwebhookconfigurations",
        ],
        true,
    ),
];

/// IAM-03..IAM-06 matched by a role's rules, as (control, "what", without the scope), when
/// granted through a RoleBinding (`namespaced`) or a ClusterRoleBinding.
pub(super) fn capability_items(
    rules: &[PolicyRule],
    namespaced: bool,
) -> Vec<(&'static str, String)> {
    // Matched items per control, in catalogue order.
    let mut items: Vec<(&'static str, Vec<String>)> = Vec::new();
    let mut has_bind = false;
    for cap in CAPABILITIES {
        if cap.cluster_scoped && namespaced {
            continue;
        }
        if cap.with_bind && !has_bind {
            continue;
        }
        for resource in cap.resources {
            let verbs: Vec<&str> = if cap.verbs.is_empty() {
                let any = rules
                    .iter()
                    .any(|r| rule_grants(r, None, cap.group, resource, cap.broad_only));
                if any { vec!["any verb on"] } else { vec![] }
            } else {
                cap.verbs
                    .iter()
                    .copied()
                    .filter(|v| {
                        rules
                            .iter()
                            .any(|r| rule_grants(r, Some(v), cap.group, resource, cap.broad_only))
                    })
                    .collect()
            };
            if verbs.is_empty() {
                continue;
            }
            has_bind |= verbs.contains(&"bind");
            let suffix = if cap.with_bind { " with bind" } else { "" };
            let item = format!("{} {resource}{suffix}", verbs.join("/"));
            match items.iter_mut().find(|(c, _)| *c == cap.control) {
                Some((_, list)) => list.push(item),
                None => items.push((cap.control, vec![item])),
            }
        }
    }
    items
        .into_iter()
        .map(|(control, list)| {
            let shown = list.len().min(DETAIL_ITEMS);
            let more = match list.len() - shown {
                0 => String::new(),
                n => format!(" (+{n} more)"),
            };
            (control, format!("{}{more}", list[..shown].join(", ")))
        })
        .collect()
}

/// Whether `rule` allows `verb` (None: any verb) on `resource` in API `group`, the way the
/// Kubernetes RBAC authorizer matches. `broad_only` ignores rules limited by resourceNames.
fn rule_grants(
    rule: &PolicyRule,
    verb: Option<&str>,
    group: &str,
    resource: &str,
    broad_only: bool,
) -> bool {
    let verb_ok = match verb {
        Some(v) => rule.verbs.iter().any(|x| x == "*" || x == v),
        None => !rule.verbs.is_empty(),
    };
    let group_ok = rule
        .api_groups
        .iter()
        .flatten()
        .any(|g| g == "*" || g == group);
    let resource_ok = rule
        .resources
        .iter()
        .flatten()
        .any(|r| resource_matches(r, resource));
    let named = rule.resource_names.as_ref().is_some_and(|n| !n.is_empty());
    // A create of a top-level resource is authorized without a name: resourceNames never match.
    let unnamed_request = verb == Some("create") && !resource.contains('/');
    let names_ok = !named || !(broad_only || unnamed_request);
    verb_ok && group_ok && resource_ok && names_ok
}

/// RBAC resource matching: exact `res` or `res/sub`, `*`, and `*/sub` for a subresource.
/// A wanted subresource of `*` (e.g. `userextras/*`) matches any subresource of the resource.
fn resource_matches(in_rule: &str, wanted: &str) -> bool {
    if in_rule == "*" || in_rule == wanted {
        return true;
    }
    let Some((base, sub)) = wanted.split_once('/') else {
        return false;
    };
    if sub == "*" {
        return in_rule.starts_with("*/")
            || in_rule
                .strip_prefix(base)
                .is_some_and(|rest| rest.starts_with('/'));
    }
    in_rule.strip_prefix("*/") == Some(sub)
}

#[cfg(test)]
mod proptests {
    //! RBAC rule matching against a reference written from the Kubernetes RBAC authorizer's
    //! rules (`k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac`), and monotonicity: a broader
    //! rule never grants less.
    use super::*;
    use proptest::prelude::*;

    /// The authorizer's `ResourceMatches` for a concrete request (`resource` or
    /// `resource/subresource`, no wildcard).
    fn reference(in_rule: &str, wanted: &str) -> bool {
        if in_rule == "*" || in_rule == wanted {
            return true;
        }
        match wanted.split_once('/') {
            Some((_, sub)) => in_rule == format!("*/{sub}"),
            None => false,
        }
    }

    fn word() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "pods",
            "secrets",
            "exec",
            "log",
            "status",
            "deployments",
        ])
        .prop_map(str::to_string)
    }

    fn rule_resource() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_string()),
            word(),
            (word(), word()).prop_map(|(a, b)| format!("{a}/{b}")),
            word().prop_map(|s| format!("*/{s}")),
        ]
    }

    fn wanted() -> impl Strategy<Value = String> {
        prop_oneof![
            word(),
            (word(), word()).prop_map(|(a, b)| format!("{a}/{b}"))
        ]
    }

    fn verbs() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(
            prop::sample::select(vec!["get", "list", "create", "delete", "*"])
                .prop_map(String::from),
            0..3,
        )
    }

    fn rule() -> impl Strategy<Value = PolicyRule> {
        (
            verbs(),
            prop::collection::vec(
                prop::sample::select(vec!["", "apps", "*"]).prop_map(String::from),
                0..3,
            ),
            prop::collection::vec(rule_resource(), 0..3),
            prop::option::of(prop::collection::vec(word(), 0..2)),
        )
            .prop_map(|(verbs, groups, resources, names)| PolicyRule {
                verbs,
                api_groups: Some(groups),
                resources: Some(resources),
                resource_names: names,
                ..PolicyRule::default()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn resources_match_as_the_authorizer_matches_them(r in rule_resource(), w in wanted()) {
            prop_assert_eq!(resource_matches(&r, &w), reference(&r, &w), "rule {} wanted {}", r, w);
        }

        #[test]
        fn a_broader_rule_never_grants_less(
            r in rule(),
            verb in prop::option::of(prop::sample::select(vec!["get", "create", "delete"])),
            group in prop::sample::select(vec!["", "apps"]),
            resource in wanted(),
            broad_only in any::<bool>(),
        ) {
            let granted = rule_grants(&r, verb, group, &resource, broad_only);
            let mut wider = r.clone();
            wider.verbs.push("*".into());
            wider.api_groups.get_or_insert_with(Vec::new).push("*".into());
            wider.resources.get_or_insert_with(Vec::new).push("*".into());
            wider.resource_names = None;
            prop_assert!(!granted || rule_grants(&wider, verb, group, &resource, broad_only));
            // Naming resources only narrows a rule.
            let mut unnamed = r.clone();
            unnamed.resource_names = None;
            prop_assert!(!granted || rule_grants(&unnamed, verb, group, &resource, broad_only));
            // A rule that grants everything grants this.
            prop_assert!(rule_grants(&wider, verb, group, &resource, broad_only)
                || (verb.is_none() && wider.verbs.is_empty()));
        }
    }
}
