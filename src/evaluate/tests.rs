use super::*;
use crate::{
    facts::{self, NamespaceFact},
    index::Key,
};
use serde_json::json;

fn spec(v: serde_json::Value) -> ResponsibilityPolicySpec {
    serde_json::from_value(v).expect("spec fixture")
}

/// An index with the given namespaces (name, labels) and nothing else, fully synced.
fn cluster(namespaces: &[(&str, &[(&str, &str)])]) -> Index {
    let mut index = Index::default();
    for (name, labels) in namespaces {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        index.namespaces.apply(
            Key::new(None, name),
            Some(NamespaceFact {
                labels,
                ..Default::default()
            }),
        );
    }
    index
}

fn with_deployment(
    mut index: Index,
    ns: &str,
    name: &str,
    container_security: serde_json::Value,
) -> Index {
    let d = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {}, "template": {"spec": {"containers": [
            {"name": "app", "securityContext": container_security}]}}}
    }))
    .expect("deployment fixture");
    index
        .workloads_mut(facts::WorkloadKind::Deployment)
        .apply(Key::new(Some(ns), name), facts::deployment(&d));
    index
}

fn outcome<'a>(eval: &'a Evaluation, id: &str) -> &'a Outcome {
    eval.outcomes
        .iter()
        .find(|o| o.control.id == id)
        .expect("control")
}

fn now() -> Timestamp {
    "2026-11-28T12:00:00Z".parse().expect("timestamp")
}

#[test]
fn selector_operators_follow_kubernetes_semantics() {
    let labels: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())].into();
    let sel = |v| serde_json::from_value::<LabelSelector>(v).expect("selector");
    assert!(selector_matches(
        &sel(json!({"matchLabels": {"env": "prod"}})),
        &labels
    ));
    assert!(!selector_matches(
        &sel(json!({"matchLabels": {"env": "dev"}})),
        &labels
    ));
    assert!(selector_matches(
        &sel(
            json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]})
        ),
        &labels
    ));
    assert!(selector_matches(
        &sel(json!({"matchExpressions": [{"key": "env", "operator": "Exists"}]})),
        &labels
    ));
    assert!(!selector_matches(
        &sel(json!({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]})),
        &labels
    ));
    assert!(!selector_matches(
        &sel(json!({"matchExpressions": [{"key": "env", "operator": "Bogus"}]})),
        &labels
    ));
}

#[test]
fn system_namespaces_are_excluded_by_default() {
    let index = cluster(&[("kube-system", &[]), ("shop", &[])]);
    let eval = evaluate(&spec(json!({"serviceModel": "PaaS"})), &index, now());
    assert_eq!(eval.namespaces, 1);
    assert_eq!(
        outcome(&eval, "NET-01").violations[0].example,
        "Namespace/shop"
    );
}

#[test]
fn a_namespace_enforcing_a_stricter_level_passes_wkl01() {
    let index = cluster(&[(
        "shop",
        &[
            (PSA_ENFORCE, "restricted"),
            (PSA_WARN, "restricted"),
            (PSA_AUDIT, "restricted"),
        ],
    )]);
    let eval = evaluate(
        &spec(json!({"serviceModel": "PaaS", "controls": {"podSecurity": {"level": "baseline"}}})),
        &index,
        now(),
    );
    assert_eq!(outcome(&eval, "WKL-01").result, ControlResult::Pass);
    assert_eq!(outcome(&eval, "AUD-01").result, ControlResult::Pass);
}

#[test]
fn an_older_pinned_enforce_version_fails_wkl01() {
    let labels: BTreeMap<String, String> = [
        (PSA_ENFORCE.to_string(), "restricted".to_string()),
        (PSA_ENFORCE_VERSION.to_string(), "v1.20".to_string()),
    ]
    .into();
    assert!(!psa_enforced(
        &labels,
        PodSecurityLevel::Restricted,
        Version::Minor(30)
    ));
    assert!(psa_enforced(
        &labels,
        PodSecurityLevel::Restricted,
        Version::Minor(20)
    ));
    assert!(!psa_enforced(
        &labels,
        PodSecurityLevel::Restricted,
        Version::Latest
    ));
}

#[test]
fn an_exception_for_one_object_leaves_the_others_failing() {
    let privileged = json!({"privileged": true});
    let index = with_deployment(
        with_deployment(
            cluster(&[("mon", &[])]),
            "mon",
            "exporter",
            privileged.clone(),
        ),
        "mon",
        "web",
        privileged,
    );
    let policy = spec(
        json!({"serviceModel": "PaaS", "controls": {"podSecurity": {"level": "baseline"}},
        "exceptions": [{"controls": ["WKL-03"], "resources": [{"kind": "deployment", "name": "exporter"}], "reason": "metrics"}]}),
    );
    let eval = evaluate(&policy, &index, now());
    let wkl03 = outcome(&eval, "WKL-03");
    assert_eq!((wkl03.result, wkl03.excepted), (ControlResult::Fail, 1));
    assert_eq!(wkl03.violations[0].example, "Deployment/mon/web");
}

#[test]
fn an_expired_exception_no_longer_applies_and_the_next_expiry_is_reported() {
    let index = with_deployment(
        cluster(&[("mon", &[])]),
        "mon",
        "exporter",
        json!({"privileged": true}),
    );
    let policy = spec(json!({"serviceModel": "PaaS", "exceptions": [
        {"controls": ["WKL-03"], "reason": "old", "expires": "2026-11-01T00:00:00Z"},
        {"controls": ["NET-01"], "reason": "soon", "expires": "2026-12-01T00:00:00Z"}]}));
    let eval = evaluate(&policy, &index, now());
    assert_eq!(outcome(&eval, "WKL-03").result, ControlResult::Fail);
    assert_eq!(outcome(&eval, "NET-01").result, ControlResult::Excepted);
    assert_eq!(eval.expired_exceptions, [0]);
    assert_eq!(
        eval.next_expiry,
        Some("2026-12-01T00:00:00Z".parse().expect("ts"))
    );
}

#[test]
fn egress_deny_is_only_checked_when_the_policy_asks_for_it() {
    let index = cluster(&[("shop", &[])]);
    let audit_ingress = evaluate(&spec(json!({"serviceModel": "PaaS"})), &index, now());
    assert_eq!(
        outcome(&audit_ingress, "NET-02").result,
        ControlResult::Disabled
    );
    let both = evaluate(
        &spec(
            json!({"serviceModel": "PaaS", "controls": {"network": {"defaultDeny": ["Ingress", "Egress"]}}}),
        ),
        &index,
        now(),
    );
    assert_eq!(outcome(&both, "NET-02").result, ControlResult::Fail);
}

#[test]
fn an_egress_only_policy_checks_egress_only_and_reports_the_gap_it_leaves() {
    let index = cluster(&[("shop", &[])]);
    let egress = evaluate(
        &spec(
            json!({"serviceModel": "PaaS", "controls": {"network": {"defaultDeny": ["Egress"]}}}),
        ),
        &index,
        now(),
    );
    assert_eq!(outcome(&egress, "NET-01").result, ControlResult::Disabled);
    assert_eq!(outcome(&egress, "NET-02").result, ControlResult::Fail);
    let gap = egress
        .gaps
        .iter()
        .find(|g| g.control == "NET-01")
        .expect("NET-01 gap");
    assert_eq!(gap.reason, "ControlDisabled");
    assert!(
        gap.message.contains("defaultDeny lacks Ingress"),
        "{}",
        gap.message
    );
    // The default (Ingress) leaves no gap.
    let ingress = evaluate(&spec(json!({"serviceModel": "PaaS"})), &index, now());
    assert_eq!(outcome(&ingress, "NET-01").result, ControlResult::Fail);
    assert!(ingress.gaps.iter().all(|g| g.control != "NET-01"));
}

#[test]
fn the_default_service_account_may_mount_its_token_when_the_policy_allows_it() {
    let index = cluster(&[("shop", &[])]);
    let strict = evaluate(&spec(json!({"serviceModel": "PaaS"})), &index, now());
    assert_eq!(outcome(&strict, "IAM-09").violations.len(), 1);
    let lenient = evaluate(
        &spec(
            json!({"serviceModel": "PaaS", "controls": {"serviceAccounts": {"automountDefaultToken": true}}}),
        ),
        &index,
        now(),
    );
    assert_eq!(outcome(&lenient, "IAM-09").result, ControlResult::Pass);
}

#[test]
fn owned_pods_report_only_what_their_template_does_not_fail() {
    use crate::index::testing::{debugged_spec, deployment, deployment_pod, restricted_spec};
    let mut index = cluster(&[("shop", &[])]);
    deployment(&mut index, "shop", "web", restricted_spec());
    deployment_pod(&mut index, "shop", "web", "web-1", debugged_spec());
    deployment_pod(&mut index, "shop", "web", "web-2", restricted_spec());
    let mut index = with_deployment(index, "shop", "root", json!({"privileged": true}));
    deployment_pod(
        &mut index,
        "shop",
        "root",
        "root-1",
        json!({"containers": [{"name": "app", "securityContext": {"privileged": true}}]}),
    );
    let policy = spec(json!({"serviceModel": "PaaS",
        "controls": {"podSecurity": {"level": "restricted"}}}));
    let eval = evaluate(&policy, &index, now());
    let examples = |id| -> Vec<String> {
        outcome(&eval, id)
            .violations
            .iter()
            .map(|v| v.example.clone())
            .collect()
    };
    assert_eq!(
        examples("WKL-04"),
        ["Deployment/shop/root", "Pod/shop/web-1"]
    );
    assert_eq!(examples("WKL-03"), ["Deployment/shop/root"]);
}

#[test]
fn an_owned_pod_taking_a_secret_its_template_does_not_fails_dat01() {
    // `kubectl debug` on a Deployment's Pod adds an ephemeral container with a Secret in its
    // env (or a webhook injects one): the template takes none, the running Pod does.
    use crate::index::testing::{deployment, deployment_pod, restricted_spec};
    let mut index = cluster(&[("shop", &[])]);
    deployment(&mut index, "shop", "web", restricted_spec());
    let mut debugged = restricted_spec();
    debugged["ephemeralContainers"] = json!([{"name": "debug", "env": [{"name": "TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]}]);
    deployment_pod(&mut index, "shop", "web", "web-1", debugged);
    deployment_pod(&mut index, "shop", "web", "web-2", restricted_spec());
    let policy = spec(json!({"serviceModel": "PaaS"}));
    let eval = evaluate(&policy, &index, now());
    let dat01 = outcome(&eval, "DAT-01");
    assert_eq!(dat01.result, ControlResult::Fail, "{dat01:?}");
    let examples: Vec<&str> = dat01
        .violations
        .iter()
        .map(|v| v.example.as_str())
        .collect();
    assert_eq!(examples, ["Pod/shop/web-1"]);
}

#[test]
fn workloads_are_judged_at_the_servers_latest() {
    let mut index = cluster(&[("shop", &[])]);
    // A sysctl the admission allows from v1.27 on.
    crate::index::testing::deployment(
        &mut index,
        "shop",
        "tuned",
        json!({"securityContext": {"sysctls": [{"name": "net.ipv4.ip_local_reserved_ports", "value": "1"}]},
               "containers": [{"name": "app"}]}),
    );
    let policy = spec(json!({"serviceModel": "PaaS"}));
    let wkl05 = |index: &Index| outcome(&evaluate(&policy, index, now()), "WKL-05").result;
    assert_eq!(wkl05(&index), ControlResult::Pass);
    index.server_minor = Some(26);
    assert_eq!(wkl05(&index), ControlResult::Fail);
}

#[test]
fn a_replica_set_claiming_an_excepted_deployment_of_the_wrong_api_group_borrows_no_exception() {
    // Deployment "exporter" runs privileged by exception. A ReplicaSet that claims it as
    // controller under `batch/v1` (no such kind there: neither the Deployment controller nor
    // the garbage collector acts on the claim) runs privileged Pods of its own.
    let privileged =
        json!({"containers": [{"name": "app", "securityContext": {"privileged": true}}]});
    let mut index = with_deployment(
        cluster(&[("mon", &[])]),
        "mon",
        "exporter",
        json!({"privileged": true}),
    );
    let rs: facts::wire::WorkloadObject = serde_json::from_value(json!({
        "metadata": {"name": "miner", "namespace": "mon", "ownerReferences": [
            {"apiVersion": "batch/v1", "kind": "Deployment", "name": "exporter", "uid": "bogus", "controller": true}]},
        "spec": {"selector": {}, "template": {"spec": privileged}}
    }))
    .expect("replica set");
    let key = Key::new(Some("mon"), "miner");
    index
        .workloads_mut(facts::WorkloadKind::ReplicaSet)
        .apply(key.clone(), facts::replica_set(&rs));
    index
        .replica_set_owners
        .apply(key, facts::replica_set_owner(&rs));
    let pod: facts::wire::PodObject = serde_json::from_value(json!({
        "metadata": {"name": "miner-x", "namespace": "mon", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "miner", "uid": "rs", "controller": true}]},
        "spec": privileged
    }))
    .expect("pod");
    index
        .owned_pods
        .apply(Key::new(Some("mon"), "miner-x"), facts::owned_pod(&pod));
    let policy = spec(
        json!({"serviceModel": "PaaS", "controls": {"podSecurity": {"level": "baseline"}},
        "exceptions": [{"controls": ["WKL-03"], "resources": [{"kind": "Deployment", "name": "exporter"}], "reason": "metrics"}]}),
    );
    let eval = evaluate(&policy, &index, now());
    let wkl03 = outcome(&eval, "WKL-03");
    assert_eq!(wkl03.result, ControlResult::Fail, "{wkl03:?}");
    assert_eq!(wkl03.violations[0].example, "ReplicaSet/mon/miner");
}
