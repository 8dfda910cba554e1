//! Property: tightening never loosens. For any cluster and any set of Enforce policies,
//! converging, then adding a policy, tightening a level, adding a default-deny direction or
//! turning the default token off, and converging again never lowers a namespace's `enforce`
//! level, never removes a default-deny direction and never turns the default token back on.
//! Nor does a workload admitted meanwhile that the enforced level would reject (Deployments are
//! not blocked by Pod Security, their Pods are). Convergence itself must reach a fixed point.

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::facts::{self, DefaultServiceAccountFact, NamespaceFact};

const NAMESPACES: [&str; 3] = ["a", "b", "c"];

#[derive(Clone, Debug)]
struct PolicyArb {
    selector: Option<&'static str>,
    restricted: bool,
    force: bool,
    egress: bool,
    token_off: bool,
}

#[derive(Clone, Debug)]
struct NamespaceArb {
    env: &'static str,
    /// Pre-existing enforce label: 0 none, 1 baseline, 2 restricted, 3 privileged.
    label: u8,
    /// Workloads: 0 compliant, 1 runs as root (fails restricted), 2 privileged (fails baseline).
    workloads: Vec<u8>,
}

#[derive(Clone, Debug)]
enum Tighten {
    Add(PolicyArb),
    Restrict(usize),
    AddEgress(usize),
    TokenOff(usize),
    /// An edit that fails validation (and would relax everything if it were taken as valid).
    Invalidate(usize),
}

fn policy_arb() -> impl Strategy<Value = PolicyArb> {
    (
        prop_oneof![Just(None), Just(Some("prod")), Just(Some("dev"))],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(selector, restricted, force, egress, token_off)| PolicyArb {
                selector,
                restricted,
                force,
                egress,
                token_off,
            },
        )
}

fn namespace_arb() -> impl Strategy<Value = NamespaceArb> {
    (
        prop_oneof![Just("prod"), Just("dev")],
        0u8..4,
        proptest::collection::vec(0u8..3, 0..3),
    )
        .prop_map(|(env, label, workloads)| NamespaceArb {
            env,
            label,
            workloads,
        })
}

fn tighten_arb() -> impl Strategy<Value = Tighten> {
    prop_oneof![
        policy_arb().prop_map(Tighten::Add),
        (0usize..4).prop_map(Tighten::Restrict),
        (0usize..4).prop_map(Tighten::AddEgress),
        (0usize..4).prop_map(Tighten::TokenOff),
        (0usize..4).prop_map(Tighten::Invalidate),
    ]
}

fn to_policy(i: usize, p: &PolicyArb) -> ResponsibilityPolicy {
    let mut spec = json!({
        "serviceModel": "PaaS", "mode": "Enforce",
        "controls": {
            "podSecurity": {"level": if p.restricted { "restricted" } else { "baseline" },
                            "forceEnforce": p.force},
            "network": {"defaultDeny": if p.egress { json!(["Ingress", "Egress"]) } else { json!(["Ingress"]) }},
            "serviceAccounts": {"automountDefaultToken": !p.token_off},
        },
    });
    if let Some(env) = p.selector {
        spec["namespaceSelector"] = json!({"matchLabels": {"env": env}});
    }
    serde_json::from_value(json!({
        "apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
        "metadata": {"name": format!("p{i}")}, "spec": spec,
    }))
    .expect("policy")
}

fn workload(ns: &str, i: usize, kind: u8) -> Option<facts::WorkloadFact> {
    let security = match kind {
        0 => json!({"allowPrivilegeEscalation": false, "runAsNonRoot": true,
                    "seccompProfile": {"type": "RuntimeDefault"}, "capabilities": {"drop": ["ALL"]}}),
        1 => json!({"runAsUser": 0}),
        _ => json!({"privileged": true}),
    };
    let d = serde_json::from_value(json!({
        "metadata": {"name": format!("w{i}"), "namespace": ns},
        "spec": {"selector": {}, "template": {"spec": {"containers": [
            {"name": "app", "securityContext": security}]}}}
    }))
    .expect("deployment");
    facts::deployment(&d)
}

fn cluster(namespaces: &[NamespaceArb]) -> Index {
    let mut index = Index::default();
    crate::index::testing::backends_listed(&mut index);
    for (ns, arb) in NAMESPACES.iter().zip(namespaces) {
        let mut labels: BTreeMap<String, String> =
            [("env".to_string(), arb.env.to_string())].into();
        let level = ["", "baseline", "restricted", "privileged"][usize::from(arb.label)];
        if !level.is_empty() {
            labels.insert(PSA_ENFORCE.into(), level.into());
        }
        index.namespaces.apply(
            Key::new(None, ns),
            Some(NamespaceFact {
                labels,
                ..Default::default()
            }),
        );
        index.default_service_accounts.apply(
            Key::new(Some(ns), "default"),
            Some(DefaultServiceAccountFact {
                automount: None,
                onus_managed: false,
            }),
        );
        for (i, kind) in arb.workloads.iter().enumerate() {
            index
                .workloads_mut(facts::WorkloadKind::Deployment)
                .apply(Key::new(Some(ns), &format!("w{i}")), workload(ns, i, *kind));
        }
    }
    index
}

/// Whether a manager other than onus owns the label `key` (the namespace owner, who labelled
/// it before onus came, or the manager that restored it).
fn owner_owns(fact: &NamespaceFact, key: &str) -> bool {
    fact.labels.contains_key(key)
        && (!fact.onus_owned.contains(key) || fact.onus_shared.contains(key))
}

/// What the API server does with an action, as the watches would then report it.
fn simulate(index: &mut Index, action: &Action) {
    let ns = action.namespace().to_string();
    let ns_key = Key::new(None, &ns);
    let sa_key = Key::new(Some(&ns), "default");
    let np_key = Key::new(Some(&ns), DEFAULT_DENY);
    match action {
        Action::ApplyNetworkPolicy { deny, policies, .. } => {
            let np = serde_json::from_value(crate::enforce::default_deny(&ns, *deny, policies))
                .expect("network policy");
            index
                .network_policies
                .apply(np_key, facts::network_policy(&np));
        }
        Action::DeleteNetworkPolicy { .. } => {
            index.network_policies.delete(&np_key);
        }
        Action::ApplyPodSecurityLabels {
            labels, previous, ..
        } => {
            let mut fact = index.namespaces.get(&ns_key).cloned().unwrap_or_default();
            // Server-side apply: applying the value another manager set shares the field with
            // it; applying another value takes it over.
            let shared = labels
                .iter()
                .filter(|(k, v)| owner_owns(&fact, k) && fact.labels.get(*k) == Some(*v))
                .map(|(k, _)| k.clone())
                .collect();
            // Fields onus alone owned and no longer applies are removed.
            for gone in fact
                .onus_owned
                .difference(&labels.keys().cloned().collect())
            {
                if !fact.onus_shared.contains(gone) {
                    fact.labels.remove(gone);
                }
            }
            fact.labels.extend(labels.clone());
            fact.onus_owned = labels.keys().cloned().collect();
            fact.onus_shared = shared;
            fact.previous = previous.clone();
            fact.onus_labels = true;
            index.namespaces.apply(ns_key, Some(fact));
        }
        Action::ReleasePodSecurityLabels { restore, .. } => {
            let mut fact = index.namespaces.get(&ns_key).cloned().unwrap_or_default();
            for owned in fact.onus_owned.difference(&fact.onus_shared) {
                fact.labels.remove(owned);
            }
            // Put back under another manager (`onus-restore`).
            fact.labels.extend(restore.clone());
            fact.onus_owned = BTreeSet::new();
            fact.onus_shared = BTreeSet::new();
            fact.previous = BTreeMap::new();
            fact.onus_labels = false;
            index.namespaces.apply(ns_key, Some(fact));
        }
        Action::DisableDefaultToken { .. } => {
            index.default_service_accounts.apply(
                sa_key,
                Some(DefaultServiceAccountFact {
                    automount: Some(false),
                    onus_managed: true,
                }),
            );
        }
        Action::ReleaseDefaultToken { .. } => {
            index.default_service_accounts.apply(
                sa_key,
                Some(DefaultServiceAccountFact {
                    automount: None,
                    onus_managed: false,
                }),
            );
        }
    }
}

fn converge(policies: &[ResponsibilityPolicy], index: &mut Index) -> Result<(), TestCaseError> {
    for _ in 0..4 {
        let actions = plan(&wants(policies, index, false), index, PlanMode::Converge);
        if actions.is_empty() {
            return Ok(());
        }
        for action in &actions {
            simulate(index, action);
        }
    }
    let left = plan(&wants(policies, index, false), index, PlanMode::Converge);
    prop_assert!(left.is_empty(), "no fixed point: {left:?}");
    Ok(())
}

/// Per namespace: enforce strictness, denied directions, default token off.
fn protection(index: &Index) -> BTreeMap<&'static str, (u8, bool, bool, bool)> {
    NAMESPACES
        .iter()
        .map(|ns| {
            let enforce = index
                .namespaces
                .get(&Key::new(None, ns))
                .and_then(|f| f.labels.get(PSA_ENFORCE).cloned());
            let np = index
                .network_policies
                .get(&Key::new(Some(ns), DEFAULT_DENY));
            let token_off = index
                .default_service_accounts
                .get(&Key::new(Some(ns), "default"))
                .is_some_and(|f| f.automount == Some(false));
            (
                *ns,
                (
                    strictness(enforce.as_ref()),
                    np.is_some_and(|f| f.denies_ingress),
                    np.is_some_and(|f| f.denies_egress),
                    token_off,
                ),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn tightening_never_loosens(
        namespaces in proptest::collection::vec(namespace_arb(), 3),
        policies in proptest::collection::vec(policy_arb(), 0..4),
        tighten in tighten_arb(),
        admitted in proptest::option::of((0usize..3, 1u8..3)),
    ) {
        let mut index = cluster(&namespaces);
        let before: Vec<ResponsibilityPolicy> =
            policies.iter().enumerate().map(|(i, p)| to_policy(i, p)).collect();
        converge(&before, &mut index)?;
        let mut first = protection(&index);
        if let Tighten::Invalidate(i) = tighten
            && i < policies.len()
        {
            // Generation 6 of policy i (stricter) is applied before its status records it;
            // the invalid generation 7 then holds the recorded generation 5.
            let mut applied = policies.clone();
            applied[i] = PolicyArb { restricted: true, egress: true, token_off: true, ..applied[i].clone() };
            let applied: Vec<ResponsibilityPolicy> =
                applied.iter().enumerate().map(|(i, p)| to_policy(i, p)).collect();
            converge(&applied, &mut index)?;
            first = protection(&index);
        }

        if let Some((ns, kind)) = admitted {
            let ns = NAMESPACES[ns];
            index
                .workloads_mut(facts::WorkloadKind::Deployment)
                .apply(Key::new(Some(ns), "w9"), workload(ns, 9, kind));
        }
        let mut after = policies.clone();
        match tighten.clone() {
            Tighten::Add(p) => after.push(p),
            Tighten::Restrict(i) => if let Some(p) = after.get_mut(i) { p.restricted = true },
            Tighten::AddEgress(i) => if let Some(p) = after.get_mut(i) { p.egress = true },
            Tighten::TokenOff(i) => if let Some(p) = after.get_mut(i) { p.token_off = true },
            Tighten::Invalidate(_) => {}
        }
        let mut after: Vec<ResponsibilityPolicy> =
            after.iter().enumerate().map(|(i, p)| to_policy(i, p)).collect();
        if let Tighten::Invalidate(i) = tighten
            && let Some(p) = after.get_mut(i)
        {
            let record = spec_to_record(p);
            p.spec.mode = Mode::Audit;
            p.spec.controls.network.mode = Some(Mode::Enforce);
            p.spec.controls.pod_security.level = PodSecurityLevel::Baseline;
            p.status = Some(crate::crd::ResponsibilityPolicyStatus {
                enforced_spec: record,
                ..Default::default()
            });
        }
        converge(&after, &mut index)?;
        let second = protection(&index);

        for ns in NAMESPACES {
            let (e1, i1, g1, t1) = first[ns];
            let (e2, i2, g2, t2) = second[ns];
            prop_assert!(e2 >= e1, "{ns}: enforce lowered from {e1} to {e2}");
            prop_assert!(i2 >= i1 && g2 >= g1, "{ns}: a default-deny direction was removed");
            prop_assert!(t2 >= t1, "{ns}: the default token was turned back on");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Letting go puts back the `enforce` label each namespace had before onus came, whatever
    /// onus enforced meanwhile (also after raising it once workloads were fixed).
    #[test]
    fn releasing_puts_back_the_enforce_label_found(
        namespaces in proptest::collection::vec(namespace_arb(), 3),
        policies in proptest::collection::vec(policy_arb(), 1..4),
        fixed in proptest::collection::vec(any::<bool>(), 3),
    ) {
        let mut index = cluster(&namespaces);
        let enforce_labels = |index: &Index| -> Vec<Option<String>> {
            NAMESPACES
                .iter()
                .map(|ns| {
                    index
                        .namespaces
                        .get(&Key::new(None, ns))
                        .and_then(|f| f.labels.get(PSA_ENFORCE).cloned())
                })
                .collect()
        };
        let found = enforce_labels(&index);
        let policies: Vec<ResponsibilityPolicy> =
            policies.iter().enumerate().map(|(i, p)| to_policy(i, p)).collect();
        converge(&policies, &mut index)?;
        // Workloads fixed meanwhile: onus raises what it could not enforce yet.
        for ((ns, arb), fix) in NAMESPACES.iter().zip(&namespaces).zip(&fixed) {
            if *fix {
                for i in 0..arb.workloads.len() {
                    index
                        .workloads_mut(facts::WorkloadKind::Deployment)
                        .delete(&Key::new(Some(ns), &format!("w{i}")));
                }
            }
        }
        converge(&policies, &mut index)?;
        converge(&[], &mut index)?;
        prop_assert_eq!(enforce_labels(&index), found);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The default-deny gate: once a namespace backs a webhook, whatever the policies do
    /// (add, tighten, add egress), convergence never creates a default-deny there nor adds a
    /// direction to the one in place; tightening still removes nothing.
    #[test]
    fn nothing_new_is_denied_in_front_of_a_webhook(
        namespaces in proptest::collection::vec(namespace_arb(), 3),
        policies in proptest::collection::vec(policy_arb(), 0..4),
        tighten in tighten_arb(),
        backing in proptest::collection::vec(any::<bool>(), 3),
    ) {
        let mut index = cluster(&namespaces);
        let before: Vec<ResponsibilityPolicy> =
            policies.iter().enumerate().map(|(i, p)| to_policy(i, p)).collect();
        converge(&before, &mut index)?;
        for (ns, back) in NAMESPACES.iter().zip(&backing) {
            if *back {
                crate::index::testing::webhook(&mut index, &format!("hook-{ns}"), ns);
            }
        }
        let first = protection(&index);
        let mut after = policies.clone();
        match tighten {
            Tighten::Add(p) => after.push(p),
            Tighten::Restrict(i) => if let Some(p) = after.get_mut(i) { p.restricted = true },
            Tighten::AddEgress(i) => if let Some(p) = after.get_mut(i) { p.egress = true },
            Tighten::TokenOff(i) => if let Some(p) = after.get_mut(i) { p.token_off = true },
            Tighten::Invalidate(_) => {}
        }
        let after: Vec<ResponsibilityPolicy> =
            after.iter().enumerate().map(|(i, p)| to_policy(i, p)).collect();
        converge(&after, &mut index)?;
        let second = protection(&index);
        for (ns, back) in NAMESPACES.iter().zip(&backing) {
            let (_, i1, g1, _) = first[ns];
            let (_, i2, g2, _) = second[ns];
            // Tightening removes nothing, in front of a webhook or not.
            prop_assert!(i2 >= i1 && g2 >= g1, "{ns}: a default-deny direction was removed");
            if *back {
                prop_assert!(i2 == i1 && g2 == g1, "{ns}: denied more in front of a webhook");
            }
        }
    }
}
