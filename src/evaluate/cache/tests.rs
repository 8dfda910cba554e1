//! The cached evaluation equals the uncached one over random sequences of index changes.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::{
    evaluate::evaluate,
    facts::{self, NamespaceFact, WorkloadKind},
    index::testing::{debugged_spec, deployment_pod, restricted_spec},
};

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("fixture")
}

const NAMESPACES: [&str; 4] = ["default", "shop", "lab", "ops"];

fn pod_spec(variant: u8) -> Value {
    match variant % 3 {
        0 => restricted_spec(),
        1 => json!({"containers": [{"name": "app", "securityContext": {"privileged": true},
            "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]}),
        _ => json!({"containers": [{"name": "app", "securityContext": {"runAsNonRoot": true}}]}),
    }
}

/// One change, applied as the watches apply it: facts first, then [`Index::touch`] with the
/// kind and (for namespaced objects) the namespace, as `controller::watch` records it.
pub(crate) fn change(index: &mut Index, op: u8, n: u8, name: u8, flag: bool) {
    let ns = NAMESPACES[n as usize % NAMESPACES.len()];
    let name = format!("o{name}");
    let key = Key::new(Some(ns), &name);
    match op {
        0 => {
            let d = from(json!({"metadata": {"name": name, "namespace": ns},
                "spec": {"selector": {}, "template": {"spec": pod_spec(flag as u8 + n)}}}));
            index
                .workloads_mut(WorkloadKind::Deployment)
                .apply(key, facts::deployment(&d));
            index.touch("Deployment", Some(ns));
        }
        1 => {
            index.workloads_mut(WorkloadKind::Deployment).delete(&key);
            index.touch("Deployment", Some(ns));
        }
        2 => {
            let spec = if flag { debugged_spec() } else { pod_spec(n) };
            deployment_pod(index, ns, &name, &format!("{name}-p"), spec);
            index.touch("Pod", Some(ns));
        }
        3 => {
            let np = from(json!({"metadata": {"name": name, "namespace": ns},
                "spec": {"podSelector": {}, "policyTypes": if flag { json!(["Ingress", "Egress"]) } else { json!(["Ingress"]) },
                         "ingress": if n.is_multiple_of(2) { json!([]) } else { json!([{}]) }}}));
            index
                .network_policies
                .apply(key, facts::network_policy(&np));
            index.touch("NetworkPolicy", Some(ns));
        }
        4 => {
            index.network_policies.delete(&key);
            index.touch("NetworkPolicy", Some(ns));
        }
        5 => {
            let sa = from(json!({"metadata": {"name": "default", "namespace": ns},
                "automountServiceAccountToken": flag}));
            index.default_service_accounts.apply(
                Key::new(Some(ns), "default"),
                facts::default_service_account(&sa),
            );
            index.touch("ServiceAccount", Some(ns));
        }
        6 => {
            let svc = from(json!({"metadata": {"name": name, "namespace": ns},
                "spec": {"externalIPs": if flag { json!(["1.2.3.4"]) } else { json!([]) }}}));
            index.external_ips.apply(key, facts::external_ips(&svc));
            index.touch("Service", Some(ns));
        }
        7 => {
            let mut labels: BTreeMap<String, String> = BTreeMap::new();
            if flag {
                labels.insert("env".into(), "prod".into());
            }
            if name.ends_with('1') {
                labels.insert(crate::evaluate::PSA_ENFORCE.into(), "restricted".into());
                labels.insert(crate::evaluate::PSA_WARN.into(), "baseline".into());
                labels.insert(crate::evaluate::PSA_AUDIT.into(), "baseline".into());
            }
            index.namespaces.apply(
                Key::new(None, ns),
                Some(NamespaceFact {
                    labels,
                    ..Default::default()
                }),
            );
            index.touch("Namespace", None);
        }
        8 => {
            index.namespaces.delete(&Key::new(None, ns));
            index.touch("Namespace", None);
        }
        9 => {
            let crb = from(json!({"metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "User", "name": if flag { "alice" } else { "bob" }}]}));
            index
                .cluster_role_bindings
                .apply(Key::new(None, &name), facts::cluster_role_binding(&crb));
            index.touch("ClusterRoleBinding", None);
        }
        10 => {
            let role = from(json!({"metadata": {"name": "r", "namespace": ns},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": if flag { json!(["get", "list"]) } else { json!(["*"]) }}]}));
            index
                .roles
                .apply(Key::new(Some(ns), "r"), facts::role(&role));
            index.touch("Role", Some(ns));
            let rb = from(json!({"metadata": {"name": name, "namespace": ns},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
                "subjects": [{"kind": "User", "name": "carol"}]}));
            index.role_bindings.apply(key, facts::role_binding(&rb));
            index.touch("RoleBinding", Some(ns));
        }
        11 => {
            // A CNI's DaemonSet: the watch records it as a cluster-wide change.
            let ds_name = if flag { "cilium" } else { "node-exporter" };
            let ds = from(
                json!({"metadata": {"name": ds_name, "namespace": "kube-system"},
                "spec": {"selector": {}, "template": {"spec": pod_spec(n)}}}),
            );
            index.workloads_mut(WorkloadKind::DaemonSet).apply(
                Key::new(Some("kube-system"), ds_name),
                facts::daemon_set(&ds),
            );
            index.touch("DaemonSet", if flag { None } else { Some("kube-system") });
        }
        _ => {
            // A relist: facts replaced wholesale, recorded without a namespace.
            index
                .owned_pods
                .delete(&Key::new(Some(ns), &format!("{name}-p")));
            index.workloads_mut(WorkloadKind::Deployment).delete(&key);
            index.touch("Pod", None);
        }
    }
}

fn specs() -> Vec<ResponsibilityPolicySpec> {
    [
        json!({"serviceModel": "PaaS"}),
        json!({"serviceModel": "PaaS", "namespaceSelector": {"matchLabels": {"env": "prod"}},
               "controls": {"podSecurity": {"level": "baseline"},
                            "network": {"defaultDeny": ["Ingress", "Egress"]}}}),
        json!({"serviceModel": "IaaS", "controls": {"podSecurity": {"version": "v1.25"},
               "serviceAccounts": {"automountDefaultToken": true},
               "rbac": {"clusterAdminSubjects": [{"kind": "User", "name": "alice"}]}}}),
        json!({"serviceModel": "PaaS", "excludedNamespaces": ["lab"],
               "exceptions": [{"controls": ["WKL-03", "NET-01"], "namespaces": ["shop"],
                               "reason": "migration", "expires": "2026-11-28T12:00:30Z"}]}),
    ]
    .into_iter()
    .map(from)
    .collect()
}

pub(crate) fn base() -> Index {
    let mut index = Index::default();
    for (i, ns) in NAMESPACES.iter().enumerate() {
        change(&mut index, 7, i as u8, 0, i % 2 == 0);
        let _ = ns;
    }
    index
}

fn now(step: usize) -> Timestamp {
    let t: Timestamp = "2026-11-28T12:00:00Z".parse().expect("timestamp");
    t + jiff::SignedDuration::from_secs(step as i64)
}

fn assert_same(
    evaluator: &mut Evaluator,
    index: &Index,
    specs: &[ResponsibilityPolicySpec],
    step: usize,
) {
    for (i, spec) in specs.iter().enumerate() {
        let cached = evaluator.evaluate(spec, index, now(step));
        let reference = evaluate(spec, index, now(step));
        assert_eq!(
            format!("{cached:?}"),
            format!("{reference:?}"),
            "policy {i} differs after step {step}"
        );
    }
}

#[test]
fn equal_verdicts_under_different_parameters_are_held_once() {
    let spec = |pod_security: Value| -> ResponsibilityPolicySpec {
        from(json!({"serviceModel": "PaaS", "controls": {"podSecurity": pod_security}}))
    };
    let latest = spec(json!({"level": "restricted"}));
    let older = spec(json!({"level": "restricted", "version": "v1.25"}));
    let baseline = spec(json!({"level": "baseline"}));
    let mut index = base();
    // In "shop", a Deployment that sets runAsNonRoot only: it fails restricted, not baseline.
    change(&mut index, 0, 1, 0, true);
    let mut evaluator = Evaluator::default();
    let restricted = evaluator.evaluate(&latest, &index, now(0));
    evaluator.evaluate(&older, &index, now(0));
    assert_ne!(Params::of(&latest, &index), Params::of(&older, &index));
    let governed = evaluator.cached_verdicts() / 2;
    assert!(governed > 1);
    // Both versions judge every namespace alike: one verdict each.
    assert_eq!(evaluator.distinct_verdicts(), governed);

    let relaxed = evaluator.evaluate(&baseline, &index, now(0));
    assert_eq!(evaluator.cached_verdicts(), 3 * governed);
    // Baseline passes the Deployment in "shop": that namespace holds two verdicts.
    assert_eq!(evaluator.distinct_verdicts(), governed + 1);
    let failing = |e: &Evaluation| {
        e.outcomes
            .iter()
            .flat_map(|o| o.violations.iter())
            .filter(|v| v.kind == "Deployment")
            .count()
    };
    assert!(failing(&restricted) > 0);
    assert_eq!(failing(&relaxed), 0);
    // Shared or not, each evaluation is the uncached one.
    assert_same(&mut evaluator, &index, &[latest, older, baseline], 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn cached_evaluation_equals_evaluation_from_scratch(
        ops in prop::collection::vec((0u8..13, 0u8..4, 0u8..3, any::<bool>()), 1..40),
    ) {
        let specs = specs();
        let mut index = base();
        let mut evaluator = Evaluator::default();
        assert_same(&mut evaluator, &index, &specs, 0);
        for (step, (op, n, name, flag)) in ops.into_iter().enumerate() {
            change(&mut index, op, n, name, flag);
            assert_same(&mut evaluator, &index, &specs, step);
        }
        // The bound: only live namespaces, only the parameter sets of these policies.
        evaluator.retain_policies(&specs[..1], &index);
        prop_assert!(evaluator.cached_verdicts() <= NAMESPACES.len());
        assert_same(&mut evaluator, &index, &specs[..1], 100);
    }
}

#[test]
fn a_change_in_one_namespace_recomputes_that_namespace_only() {
    let specs = specs();
    let mut index = base();
    let mut evaluator = Evaluator::default();
    for spec in &specs {
        evaluator.evaluate(spec, &index, now(0));
    }
    let before = evaluator.stats();
    change(&mut index, 0, 2, 0, true);
    for spec in &specs {
        evaluator.evaluate(spec, &index, now(0));
    }
    let after = evaluator.stats();
    // "lab" is governed by three policies, with three different parameter sets.
    assert_eq!(after.namespaces_computed - before.namespaces_computed, 3);
    assert_eq!(after.rbac_computed, before.rbac_computed);
}

#[test]
fn policies_with_equal_specs_share_one_evaluation() {
    let spec = &specs()[0];
    let index = base();
    let mut evaluator = Evaluator::default();
    let a = evaluator.evaluate(spec, &index, now(0));
    let b = evaluator.evaluate(&spec.clone(), &index, now(0));
    assert!(Arc::ptr_eq(&a, &b));
}

#[test]
fn parameter_sets_of_a_namespace_share_their_offenders() {
    // specs 0 (restricted, latest) and 2 (restricted, v1.25) judge "shop" under different
    // parameters; the privileged Deployment fails both, and is one object in memory.
    let specs = specs();
    let mut index = base();
    change(&mut index, 0, 1, 0, false);
    let mut evaluator = Evaluator::default();
    let offender = |evaluation: &Evaluation| {
        evaluation
            .outcomes
            .iter()
            .flat_map(|o| o.violations.iter())
            .find(|v| v.kind == "Deployment" && v.namespace.as_deref() == Some("shop"))
            .cloned()
            .expect("the privileged Deployment in shop fails")
    };
    let a = offender(&evaluator.evaluate(&specs[0], &index, now(0)));
    let b = offender(&evaluator.evaluate(&specs[2], &index, now(0)));
    assert_ne!(Params::of(&specs[0], &index), Params::of(&specs[2], &index));
    assert!(Arc::ptr_eq(&a.0, &b.0));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Mostly namespaced changes (the delta path), several between two evaluations, some
    /// policies skipping a few evaluations, the clock moving past an exception's expiry.
    #[test]
    fn evaluation_by_deltas_equals_evaluation_from_scratch(
        ops in prop::collection::vec(
            (prop_oneof![8 => 0u8..7, 1 => 7u8..13], 0u8..4, 0u8..3, any::<bool>(), 0u8..4),
            1..50,
        ),
    ) {
        let specs = specs();
        let mut index = base();
        let mut evaluator = Evaluator::default();
        assert_same(&mut evaluator, &index, &specs, 0);
        for (step, (op, n, name, flag, skip)) in ops.into_iter().enumerate() {
            change(&mut index, op, n, name, flag);
            // `skip` 0: no evaluation after this change; otherwise the policies from `skip - 1`.
            if skip > 0 {
                assert_same(&mut evaluator, &index, &specs[usize::from(skip) - 1..], step);
            }
        }
        assert_same(&mut evaluator, &index, &specs, 1000);
        prop_assert!(evaluator.cached_evaluations() <= specs.len());
    }
}

#[test]
fn a_namespaced_change_updates_each_evaluation_by_a_delta() {
    let specs = specs();
    let mut index = base();
    let mut evaluator = Evaluator::default();
    for spec in &specs {
        evaluator.evaluate(spec, &index, now(0));
    }
    let before = evaluator.stats();
    change(&mut index, 0, 1, 0, false);
    change(&mut index, 3, 2, 1, true);
    assert_same(&mut evaluator, &index, &specs, 0);
    let after = evaluator.stats();
    assert_eq!(after.assembled, before.assembled, "nothing assembled again");
    assert_eq!(after.deltas - before.deltas, specs.len() as u64);
    // shop and lab, in each policy governing them (spec 1 governs neither: env=prod only
    // labels default and lab; spec 3 excludes lab).
    assert!(after.delta_namespaces - before.delta_namespaces >= 4);

    // A Namespace object's change (selection, labels) assembles again.
    change(&mut index, 7, 1, 0, true);
    assert_same(&mut evaluator, &index, &specs, 0);
    assert_eq!(
        evaluator.stats().assembled - after.assembled,
        specs.len() as u64
    );
}
