//! ClusterRole aggregation as kube-controller-manager computes it, for ClusterRoles that never
//! met it: `onus check` reads manifests, and an aggregated ClusterRole in a manifest usually
//! has no `rules` (the controller fills them in a cluster). Judged with its rules empty, a
//! binding to it would grant nothing: the check would fail open.
//!
//! What the controller does (`pkg/controller/clusterroleaggregation`): for a ClusterRole with an
//! `aggregationRule`, the union of the current `rules` of every other ClusterRole one of its
//! `clusterRoleSelectors` selects (label selectors, `matchLabels` and `matchExpressions`; a
//! role selected by several selectors counts once; equal rules once), written as its `rules`.
//! It copies the selected roles' `rules` as they are, not their `aggregationRule`, but any
//! change of any ClusterRole, its own writes included, queues every aggregating role again.
//! So a selected role that aggregates itself contributes the rules it was given, and at rest
//! aggregation is transitive: `admin` selects `edit`, which selects `view`, and on every
//! cluster `admin` holds `view`'s rules (`tests/rbac_defaults.rs` checks that on the API
//! server). [`aggregate`] computes that resting state.
//!
//! Decisions:
//! - The aggregating role's own `rules` in the input are kept besides the aggregated ones: the
//!   API server grants them from creation until the controller replaces them. Over-reported
//!   rather than hidden.
//! - Roles that select each other (a cycle) all get the rules of the whole cycle; the
//!   controller need not settle on less.
//! - Only the given ClusterRoles are known. In a cluster, ClusterRoles outside them whose
//!   labels a selector matches add their grants too; the caller says so ([`Aggregated`]).
//! - The controller keeps an aggregating role unchanged while one of its selectors is invalid;
//!   the API server refuses such selectors, so [`super::defaults::selects`] selecting nothing
//!   for an unknown operator only affects input no cluster would accept.

use std::collections::{BTreeMap, btree_map::Entry};

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};

use super::defaults::selects;

/// One aggregating ClusterRole, at rest.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregated {
    pub name: String,
    /// The ClusterRoles its selectors select directly (itself excepted), sorted by name.
    pub selected: Vec<String>,
    /// Its rules: its own, then those of every role reached through selections, each once.
    pub rules: Vec<PolicyRule>,
}

/// Every aggregating ClusterRole of `cluster_roles` with the rules the aggregation controller
/// gives it once it has seen exactly these ClusterRoles (see the module documentation), in
/// the order of the input. The first ClusterRole of a name counts, as in
/// [`super::evaluate`].
pub fn aggregate<'a>(cluster_roles: impl IntoIterator<Item = &'a ClusterRole>) -> Vec<Aggregated> {
    let mut by_name: BTreeMap<&str, &ClusterRole> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for role in cluster_roles {
        let Some(name) = role.metadata.name.as_deref() else {
            continue;
        };
        if let Entry::Vacant(entry) = by_name.entry(name) {
            entry.insert(role);
            order.push(name);
        }
    }
    let empty = BTreeMap::new();
    // Direct selections of each aggregating role, by name (the map iterates sorted).
    let selections: BTreeMap<&str, Vec<&str>> = by_name
        .iter()
        .filter_map(|(name, role)| {
            let selectors = role
                .aggregation_rule
                .as_ref()?
                .cluster_role_selectors
                .as_deref();
            let selectors = selectors.unwrap_or_default();
            let selected = by_name
                .iter()
                .filter(|(other, candidate)| {
                    *other != name && {
                        let labels = candidate.metadata.labels.as_ref().unwrap_or(&empty);
                        selectors.iter().any(|s| selects(s, labels))
                    }
                })
                .map(|(other, _)| *other)
                .collect();
            Some((*name, selected))
        })
        .collect();
    order
        .into_iter()
        .filter(|name| selections.contains_key(name))
        .map(|name| {
            // Depth first from the role itself, each role once.
            let mut seen = vec![name];
            let mut stack = vec![name];
            let mut rules: Vec<PolicyRule> = Vec::new();
            while let Some(current) = stack.pop() {
                for rule in by_name[current].rules.iter().flatten() {
                    if !rules.contains(rule) {
                        rules.push(rule.clone());
                    }
                }
                if let Some(next) = selections.get(current) {
                    for other in next.iter().rev() {
                        if !seen.contains(other) {
                            seen.push(*other);
                            stack.push(*other);
                        }
                    }
                }
            }
            Aggregated {
                name: name.to_owned(),
                selected: selections[name].iter().map(|s| s.to_string()).collect(),
                rules,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn rule(verbs: &[&str], resources: &[&str]) -> Value {
        json!({"apiGroups": ["example.com"], "resources": resources, "verbs": verbs})
    }

    fn role(name: &str, labels: Value, rules: &[Value], selectors: Option<Value>) -> ClusterRole {
        let mut v = json!({"metadata": {"name": name, "labels": labels}, "rules": rules});
        if let Some(selectors) = selectors {
            v["aggregationRule"] = json!({ "clusterRoleSelectors": selectors });
        }
        serde_json::from_value(v).expect("ClusterRole")
    }

    fn rules(values: &[Value]) -> Vec<PolicyRule> {
        serde_json::from_value(Value::from(values.to_vec())).expect("rules")
    }

    fn by_name<'a>(all: &'a [Aggregated], name: &str) -> &'a Aggregated {
        all.iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("{name} not aggregated: {all:?}"))
    }

    #[test]
    fn the_union_of_what_label_selectors_select_each_role_and_rule_once() {
        let read = rule(&["get"], &["widgets"]);
        let wild = rule(&["*"], &["*"]);
        let roles = [
            role(
                "team",
                json!({"to": "team"}),
                &[],
                Some(json!([
                    {"matchLabels": {"to": "team"}},
                    {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["extra"]}]},
                ])),
            ),
            role(
                "b-read",
                json!({"to": "team"}),
                std::slice::from_ref(&read),
                None,
            ),
            // Selected by both selectors: counted once.
            role(
                "a-wild",
                json!({"to": "team", "tier": "extra"}),
                &[wild.clone(), read.clone()],
                None,
            ),
            role(
                "other",
                json!({"to": "else"}),
                &[rule(&["delete"], &["x"])],
                None,
            ),
        ];
        let all = aggregate(&roles);
        assert_eq!(all.len(), 1, "only aggregating roles: {all:?}");
        let team = by_name(&all, "team");
        // Itself excepted, although its labels match.
        assert_eq!(team.selected, ["a-wild", "b-read"]);
        assert_eq!(team.rules, rules(&[wild, read]));
    }

    #[test]
    fn selectors_are_label_selectors() {
        let sel = |s: Value| Some(json!([s]));
        let roles = [
            role(
                "labelled",
                json!({"k": "v"}),
                &[rule(&["get"], &["l"])],
                None,
            ),
            role("plain", json!({}), &[rule(&["get"], &["p"])], None),
            role("everything", json!({}), &[], sel(json!({}))),
            role(
                "not-in",
                json!({}),
                &[],
                sel(
                    json!({"matchExpressions": [{"key": "k", "operator": "NotIn", "values": ["v"]}]}),
                ),
            ),
            role(
                "exists",
                json!({}),
                &[],
                sel(json!({"matchExpressions": [{"key": "k", "operator": "Exists"}]})),
            ),
            role(
                "absent",
                json!({}),
                &[],
                sel(json!({"matchExpressions": [{"key": "k", "operator": "DoesNotExist"}]})),
            ),
        ];
        let all = aggregate(&roles);
        let selected = |name| by_name(&all, name).selected.clone();
        assert_eq!(
            selected("everything"),
            ["absent", "exists", "labelled", "not-in", "plain"]
        );
        assert_eq!(
            selected("not-in"),
            ["absent", "everything", "exists", "plain"]
        );
        assert_eq!(selected("exists"), ["labelled"]);
        assert_eq!(
            selected("absent"),
            ["everything", "exists", "not-in", "plain"]
        );
    }

    #[test]
    fn aggregation_is_transitive_at_rest_and_keeps_the_roles_own_rules() {
        let own = rule(&["list"], &["own"]);
        let leaf = rule(&["get"], &["leaf"]);
        let roles = [
            role(
                "top",
                json!({}),
                std::slice::from_ref(&own),
                Some(json!([{"matchLabels": {"to": "top"}}])),
            ),
            role(
                "middle",
                json!({"to": "top"}),
                &[],
                Some(json!([{"matchLabels": {"to": "middle"}}])),
            ),
            role(
                "leaf",
                json!({"to": "middle"}),
                std::slice::from_ref(&leaf),
                None,
            ),
        ];
        let all = aggregate(&roles);
        assert_eq!(by_name(&all, "top").selected, ["middle"]);
        assert_eq!(by_name(&all, "top").rules, rules(&[own, leaf.clone()]));
        assert_eq!(by_name(&all, "middle").rules, rules(&[leaf]));
    }

    #[test]
    fn roles_that_select_each_other_get_the_rules_of_both() {
        let a = rule(&["get"], &["a"]);
        let b = rule(&["get"], &["b"]);
        let roles = [
            role(
                "a",
                json!({"x": "a"}),
                std::slice::from_ref(&a),
                Some(json!([{"matchLabels": {"x": "b"}}])),
            ),
            role(
                "b",
                json!({"x": "b"}),
                std::slice::from_ref(&b),
                Some(json!([{"matchLabels": {"x": "a"}}])),
            ),
        ];
        let all = aggregate(&roles);
        assert_eq!(by_name(&all, "a").rules, rules(&[a.clone(), b.clone()]));
        assert_eq!(by_name(&all, "b").rules, rules(&[b, a]));
    }

    #[test]
    fn kubernetes_defaults_aggregate_to_what_the_api_server_gives_them() {
        // The defaults' aggregation (checked against the API server by
        // tests/rbac_defaults.rs) and this one agree on admin, edit and view.
        let (mut cluster_roles, _) = super::super::defaults::bootstrap_roles();
        for role in &mut cluster_roles {
            if role.aggregation_rule.is_some() {
                role.rules = None;
            }
        }
        let all = aggregate(&cluster_roles);
        for name in ["admin", "edit", "view"] {
            let expected = super::super::defaults::aggregated_default_rules(name).expect(name);
            let got = &by_name(&all, name).rules;
            assert_eq!(got.len(), expected.len(), "{name}");
            assert!(expected.iter().all(|r| got.contains(r)), "{name}");
        }
    }
}
