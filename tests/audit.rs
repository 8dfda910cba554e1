//! The audit controller against the real API server: selection, exceptions, ownership,
//! service models, invalid specs, idempotent status. Each test runs its own operator scoped to
//! its own policies and namespaces, so tests run in parallel.

mod common;

use std::time::{Duration, Instant};

use common::{TestEnv, control, deployment, hardened, is, resource_version};
use k8s_openapi::api::events::v1::Event;
use kube::{Api, api::ListParams};
use onus::{
    crd::{ControlResult::*, Owner, OwnerSource},
    status::{self, READY, RESPONSIBILITY_GAP},
};
use serde_json::json;

fn privileged() -> serde_json::Value {
    let mut sc = hardened();
    sc["privileged"] = json!(true);
    sc.as_object_mut()
        .map(|o| o.remove("allowPrivilegeEscalation"));
    sc
}

async fn events_for(env: &TestEnv, policy: &str) -> Vec<Event> {
    Api::<Event>::all(env.client.clone())
        .list(&ListParams::default().fields(&format!("regarding.name={policy}")))
        .await
        .expect("list events")
        .items
}

/// The reasons of the policy's Events, once one with `reason` is among them (or after 30 s, as
/// long as the harness waits for a status: a condition's Event is published after the status
/// write that changes it, on a loaded machine seconds later).
async fn event_reasons_once(env: &TestEnv, policy: &str, reason: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reasons: Vec<String> = events_for(env, policy)
            .await
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        if reasons.iter().any(|r| r == reason) || Instant::now() > deadline {
            return reasons;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn only_selected_and_not_excluded_namespaces_are_governed() {
    let env = TestEnv::start("select").await;
    let prod = env.namespace("prod", &[("env", "prod")]).await;
    let dev = env.namespace("dev", &[("env", "dev")]).await;
    let selector = json!({"matchLabels": {"onus.dev/test-ns": env.id, "env": "prod"}});

    let policy = env
        .apply_policy(
            "prod-only",
            json!({"serviceModel": "PaaS", "namespaceSelector": selector}),
        )
        .await;
    let rp = env
        .wait_status(&policy, "one namespace", |s| is(s, "NET-01", Fail, 1))
        .await;
    let s = rp.status.expect("status");
    assert_eq!(
        control(&s, "NET-01").examples,
        [format!("Namespace/{prod}")]
    );
    assert!(
        !control(&s, "AUD-01")
            .examples
            .contains(&format!("Namespace/{dev}"))
    );

    env.apply_policy(
        "prod-only",
        json!({"serviceModel": "PaaS", "namespaceSelector": selector, "excludedNamespaces": [prod]}),
    )
    .await;
    let rp = env
        .wait_status(&policy, "no namespace", |s| is(s, "NET-01", Pass, 0))
        .await;
    assert_eq!(
        rp.status.and_then(|s| s.summary).map(|s| s.namespaces),
        Some(0)
    );
}

#[tokio::test]
async fn an_exception_excepts_its_object_until_it_expires_on_its_own() {
    let env = TestEnv::start("except").await;
    let ns = env.namespace("mon", &[]).await;
    env.create(
        Some(&ns),
        deployment("node-exporter", privileged(), json!({})),
    )
    .await;

    // Long enough for the first evaluation to come before the expiry on a loaded machine (the
    // test waits for the expiry, so no longer than that).
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(10);
    let policy = env
        .apply_policy(
            "exc",
            json!({"serviceModel": "PaaS", "exceptions": [{
                "controls": ["WKL-03"], "namespaces": [ns],
                "resources": [{"kind": "Deployment", "name": "node-exporter"}],
                "reason": "needs privileges to read node metrics",
                "expires": expires.round(jiff::Unit::Second).expect("round").to_string(),
            }]}),
        )
        .await;
    let rp = env
        .wait_status(&policy, "excepted", |s| is(s, "WKL-03", Excepted, 0))
        .await;
    assert_eq!(
        control(rp.status.as_ref().expect("status"), "WKL-03").excepted,
        1
    );
    // WKL-06 is not covered by the exception.
    assert!(is(rp.status.as_ref().expect("status"), "WKL-06", Fail, 1));

    // Nothing else changes in the cluster: the expiry alone must bring the violation back.
    env.wait_status(&policy, "expired", |s| is(s, "WKL-03", Fail, 1))
        .await;
    let reasons = event_reasons_once(&env, &policy, "ExceptionExpired").await;
    assert!(
        reasons.iter().any(|r| r == "ExceptionExpired"),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn handing_a_customer_control_to_the_provider_raises_a_responsibility_gap() {
    let env = TestEnv::start("gap").await;
    env.namespace("app", &[]).await;
    let policy = env
        .apply_policy(
            "gap",
            json!({"serviceModel": "PaaS", "responsibilities": [
                {"control": "NET-01", "owner": "Provider", "reason": "the cloud firewall does it"}]}),
        )
        .await;
    let rp = env
        .wait_status(&policy, "gap", |s| {
            status::condition(s, RESPONSIBILITY_GAP).is_some_and(|c| c.status == "True")
        })
        .await;
    let s = rp.status.expect("status");
    let net01 = control(&s, "NET-01");
    assert_eq!(
        (net01.owner, net01.owner_source, net01.result),
        (Owner::Provider, OwnerSource::Override, ProviderOwned)
    );
    let gap = status::condition(&s, RESPONSIBILITY_GAP).expect("gap");
    assert_eq!(gap.reason, "OverDelegated");
    assert!(
        gap.message
            .contains("NET-01 assigned to Provider, but under PaaS it is the customer's"),
        "{}",
        gap.message
    );

    env.apply_policy(
        "gap",
        json!({"serviceModel": "PaaS", "controls": {"network": {"enabled": false}}}),
    )
    .await;
    let rp = env
        .wait_status(&policy, "disabled gap", |s| {
            status::condition(s, RESPONSIBILITY_GAP).is_some_and(|c| c.reason == "ControlDisabled")
        })
        .await;
    assert_eq!(
        control(rp.status.as_ref().expect("status"), "NET-01").result,
        Disabled
    );
}

#[tokio::test]
async fn each_service_model_assigns_its_default_owners() {
    let env = TestEnv::start("models").await;
    let ns = env.namespace("app", &[]).await;
    let mut host = deployment("agent", hardened(), json!({"hostNetwork": true}));
    host["kind"] = json!("DaemonSet");
    env.create(Some(&ns), host).await;

    let cases = [
        ("iaas", "IaaS", Owner::Customer, Fail, Owner::Customer),
        ("paas", "PaaS", Owner::Customer, Fail, Owner::Shared),
        (
            "saas",
            "SaaS",
            Owner::Provider,
            ProviderOwned,
            Owner::Provider,
        ),
    ];
    for (name, model, wkl02_owner, wkl02_result, net04_owner) in cases {
        let policy = env.apply_policy(name, json!({"serviceModel": model})).await;
        // The DaemonSet was created just before: the first evaluation may come before the
        // operator's watch delivers it (WKL-02 passing for a moment is no error).
        let rp = env
            .wait_status(&policy, model, |s| {
                s.summary.is_some() && control(s, "WKL-02").result == wkl02_result
            })
            .await;
        let s = rp.status.expect("status");
        let wkl02 = control(&s, "WKL-02");
        assert_eq!(
            (wkl02.owner, wkl02.result),
            (wkl02_owner, wkl02_result),
            "{model}"
        );
        assert_eq!(wkl02.owner_source, OwnerSource::ServiceModel);
        assert_eq!(control(&s, "NET-04").owner, net04_owner, "{model}");
        assert_eq!(control(&s, "AUD-02").result, NotObservable, "{model}");
        let gap = status::condition(&s, RESPONSIBILITY_GAP).expect("gap");
        assert_eq!(gap.status, "False", "model defaults are no gap: {model}");
    }
}

#[tokio::test]
async fn an_invalid_policy_is_reported_and_the_others_keep_being_served() {
    let env = TestEnv::start("invalid").await;
    env.namespace("app", &[]).await;
    let bad = env
        .apply_policy(
            "bad",
            // The schema refuses unknown control ids; this passes it and fails validation.
            json!({"serviceModel": "PaaS", "controls": {"network": {"mode": "Enforce"}}}),
        )
        .await;
    let good = env
        .apply_policy("good", json!({"serviceModel": "PaaS"}))
        .await;

    let rp = env
        .wait_status(&bad, "InvalidSpec", |s| {
            status::condition(s, READY).is_some_and(|c| c.reason == "InvalidSpec")
        })
        .await;
    let ready = rp
        .status
        .as_ref()
        .and_then(|s| status::condition(s, READY))
        .expect("Ready")
        .clone();
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains("spec.controls.network.mode"),
        "{}",
        ready.message
    );
    env.wait_status(&good, "evaluated", |s| is(s, "NET-01", Fail, 1))
        .await;

    // Fixing the spec makes it Ready.
    env.apply_policy("bad", json!({"serviceModel": "PaaS"}))
        .await;
    env.wait_status(&bad, "Ready", |s| {
        status::condition(s, READY).is_some_and(|c| c.status == "True")
    })
    .await;
}

#[tokio::test]
async fn status_is_not_rewritten_while_nothing_changes() {
    let env = TestEnv::start("steady").await;
    let ns = env.namespace("app", &[]).await;
    let policy = env
        .apply_policy("steady", json!({"serviceModel": "PaaS"}))
        .await;
    // Settled: the namespace and its `default` ServiceAccount (made by the controller-manager,
    // watched apart from the namespace, so possibly seen a moment later) both in the status.
    env.wait_status(&policy, "evaluated", |s| {
        is(s, "NET-01", Fail, 1) && is(s, "IAM-09", Fail, 1)
    })
    .await;
    let before = resource_version(&env.client, &policy).await;

    // Changes the policy does not see must not cause writes either.
    let other = env.cp.namespace(&env.client, "unrelated", &[]).await;
    env.create(Some(&other), deployment("x", privileged(), json!({})))
        .await;
    env.create(
        Some(&ns),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(resource_version(&env.client, &policy).await, before);

    // A change it does see is written once, then it is steady again.
    env.create(Some(&ns), deployment("y", privileged(), json!({})))
        .await;
    env.wait_status(&policy, "new violation", |s| is(s, "WKL-03", Fail, 1))
        .await;
    let after = resource_version(&env.client, &policy).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(resource_version(&env.client, &policy).await, after);
}

#[tokio::test]
async fn a_status_edited_by_someone_else_is_rewritten_at_once() {
    // onus skips the echo of its own status write (that exact resourceVersion); anyone else's
    // edit of the status is a new version and must be rewritten at once, not at the periodic
    // resync (5 minutes): hiding a violation by editing status must not last.
    let env = TestEnv::start("edited").await;
    let ns = env.namespace("app", &[]).await;
    let policy = env
        .apply_policy("edited", json!({"serviceModel": "PaaS"}))
        .await;
    env.create(Some(&ns), deployment("y", privileged(), json!({})))
        .await;
    env.wait_status(&policy, "evaluated", |s| {
        is(s, "WKL-03", Fail, 1) && is(s, "NET-01", Fail, 1)
    })
    .await;
    let api = Api::<onus::crd::ResponsibilityPolicy>::all(env.client.clone());
    for round in 0..3 {
        // Every control gone and the summary zeroed, as someone hiding the violations would.
        let edited = api
            .patch_status(
                &policy,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"status": {"controls": [],
                    "summary": {"violations": 0}}})),
            )
            .await
            .expect("edit the status as someone else");
        assert!(
            edited
                .status
                .as_ref()
                .is_some_and(|s| s.controls.is_empty()),
            "round {round}: the edit took"
        );
        let started = Instant::now();
        env.wait_status(&policy, "rewritten after someone else's edit", |s| {
            is(s, "WKL-03", Fail, 1) && is(s, "NET-01", Fail, 1)
        })
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "round {round}: rewritten only after {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn violations_and_their_resolution_are_announced_as_events() {
    let env = TestEnv::start("events").await;
    let ns = env.namespace("app", &[]).await;
    let policy = env
        .apply_policy(
            "ev",
            json!({"serviceModel": "PaaS", "controls": {"podSecurity": {"enabled": false},
            "serviceAccounts": {"enabled": false}, "rbac": {"enabled": false}}}),
        )
        .await;
    env.wait_status(&policy, "NET-01 fails", |s| is(s, "NET-01", Fail, 1))
        .await;
    env.create(Some(&ns), json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
    }))
    .await;
    env.wait_status(&policy, "compliant", |s| {
        status::condition(s, status::COMPLIANT).is_some_and(|c| c.status == "True")
    })
    .await;
    let reasons = event_reasons_once(&env, &policy, "Compliant").await;
    assert!(
        reasons.iter().any(|r| r == "ViolationsFound"),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r == "Compliant"), "{reasons:?}");
}

#[tokio::test]
async fn namespace_owners_see_violations_as_events_on_their_objects() {
    let env = TestEnv::start("objevents").await;
    let ns = env.namespace("team", &[]).await;
    env.create(Some(&ns), deployment("web", privileged(), json!({})))
        .await;
    let policy = env
        .apply_policy("obj", json!({"serviceModel": "PaaS"}))
        .await;
    env.wait_status(&policy, "WKL-03 fails", |s| is(s, "WKL-03", Fail, 1))
        .await;

    let events = Api::<Event>::namespaced(env.client.clone(), &ns);
    // Violation Events have a publisher of their own (paced, after the status write): as long
    // as the harness waits for a status.
    let deadline = Instant::now() + Duration::from_secs(30);
    let notes = loop {
        let notes = events
            .list(&ListParams::default().fields("regarding.name=web"))
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("PolicyViolation"))
            .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Deployment"))
            .filter_map(|e| e.note)
            .collect::<Vec<_>>();
        // Events are emitted one per control, in no particular order: wait for both.
        if (notes.iter().any(|n| n.starts_with("WKL-03"))
            && notes.iter().any(|n| n.starts_with("WKL-06")))
            || Instant::now() > deadline
        {
            break notes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        notes.iter().any(|n| n == &format!(
            "WKL-03 (No privileged containers) fails ResponsibilityPolicy {policy}: Deployment/{ns}/web"
        )),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|n| n.starts_with("WKL-06")),
        "one Event per control: {notes:?}"
    );
}
