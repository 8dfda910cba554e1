//! Violation Events across onus processes, against the real API server: a restarted operator (or
//! a new leader) does not announce the violations an earlier one announced, and a violation
//! that comes back after a fix counts again on its Event.

mod common;

use std::time::{Duration, Instant};

use common::{TEST_LABEL, TestEnv, deployment, hardened};
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams},
};
use onus::{
    controller::{self, Settings},
    crd::ResponsibilityPolicy,
    metrics::Metrics,
};
use serde_json::json;
use tokio::{sync::oneshot, task::JoinHandle};

/// An operator process, simulated in-process: it can be stopped and another started.
struct Operator {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
    metrics: Metrics,
}

impl Operator {
    fn start(client: &Client, instance: &str, selector: &str) -> Operator {
        let metrics = Metrics::new();
        let (shutdown, stop) = oneshot::channel::<()>();
        let settings = Settings {
            instance: instance.into(),
            policy_selector: Some(selector.into()),
            metrics: metrics.clone(),
            // Not under test; cluster-wide objects the tests' operators would share.
            admission_policies: false,
            ..Settings::default()
        };
        let task = tokio::spawn(controller::run(client.clone(), settings, async move {
            let _ = stop.await;
        }));
        Operator {
            shutdown,
            task,
            metrics,
        }
    }

    /// Waits until this operator has reconciled `policy` once (it announces violations before
    /// it records the policy's metrics).
    async fn wait_reconciled(&self, policy: &str) {
        let series = format!("policy=\"{policy}\"");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self
            .metrics
            .render()
            .lines()
            .any(|l| l.starts_with("onus_policy_violations{") && l.contains(&series))
        {
            assert!(Instant::now() < deadline, "{policy} not reconciled in 30s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        let _ = self.shutdown.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("operator stops within 30s")
            .expect("operator task");
    }
}

/// Creates a policy that only operators selecting `onus.dev/test=<selector value>` serve (not
/// the operator of the `TestEnv`), over the test's namespaces.
async fn apply_policy(env: &TestEnv, selector_value: &str) -> String {
    let name = format!("{}-events", env.id);
    let policy = json!({
        "apiVersion": "onus.dev/v1alpha1",
        "kind": "ResponsibilityPolicy",
        "metadata": {"name": name, "labels": {TEST_LABEL: selector_value}},
        "spec": {
            "serviceModel": "PaaS",
            "namespaceSelector": {"matchLabels": {"onus.dev/test-ns": env.id}},
        },
    });
    Api::<ResponsibilityPolicy>::all(env.client.clone())
        .patch(
            &name,
            &PatchParams::apply("onus-tests").force(),
            &Patch::Apply(&policy),
        )
        .await
        .unwrap_or_else(|e| panic!("applying policy {name}: {e}"));
    name
}

/// The policy's violation Events (`namespace/name`, series count), sorted.
async fn violation_events(client: &Client, policy: &str) -> Vec<(String, i32)> {
    let mut events: Vec<(String, i32)> = Api::<Event>::all(client.clone())
        .list(&ListParams::default().fields("reason=PolicyViolation"))
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.related.as_ref().and_then(|r| r.name.as_deref()) == Some(policy))
        .map(|e| {
            let id = format!(
                "{}/{}",
                e.metadata.namespace.unwrap_or_default(),
                e.metadata.name.unwrap_or_default()
            );
            (id, e.series.map_or(1, |s| s.count))
        })
        .collect();
    events.sort();
    events
}

/// The policy's violation Events once each violation its status counts has one: Events are
/// published by their own task after the status write, one at a time (paced), so they are read
/// until their number is the status's (two reads that agree can still fall between two
/// publications on a loaded machine).
async fn all_violation_events(client: &Client, policy: &str) -> Vec<(String, i32)> {
    let policies = Api::<ResponsibilityPolicy>::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let violations = policies
            .get(policy)
            .await
            .expect("get policy")
            .status
            .and_then(|s| s.summary)
            .map(|s| s.violations);
        let events = violation_events(client, policy).await;
        if violations.is_some_and(|n| n > 0 && events.len() as u64 == n) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{violations:?} violations in status, {} violation Events: {events:?}",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The violation Events regarding a Deployment.
async fn events_on_deployment(client: &Client, policy: &str, ns: &str, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default().fields(&format!(
            "reason=PolicyViolation,regarding.kind=Deployment,regarding.name={name}"
        )))
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.related.as_ref().and_then(|r| r.name.as_deref()) == Some(policy))
        .collect()
}

fn privileged() -> serde_json::Value {
    let mut sc = hardened();
    sc["privileged"] = json!(true);
    sc.as_object_mut()
        .map(|o| o.remove("allowPrivilegeEscalation"));
    sc
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_operator_does_not_announce_the_same_violations_again() {
    let env = TestEnv::start("ev-restart").await;
    let ns = env.namespace("ev-restart", &[]).await;
    env.create(Some(&ns), deployment("web", privileged(), json!({})))
        .await;
    let selector_value = format!("{}-restart", env.id);
    let selector = format!("{TEST_LABEL}={selector_value}");
    let policy = apply_policy(&env, &selector_value).await;

    let first = Operator::start(&env.client, "onus-first", &selector);
    first.wait_reconciled(&policy).await;
    let announced = all_violation_events(&env.client, &policy).await;
    assert!(
        announced.len() >= 3,
        "too few violation Events to test with: {announced:?}"
    );
    first.stop().await;

    // A new process, under another name (a restarted pod, or the standby taking over).
    let second = Operator::start(&env.client, "onus-second", &selector);
    second.wait_reconciled(&policy).await;
    // Any reconcile its own status write triggers, and the publisher, have had time to run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(violation_events(&env.client, &policy).await, announced);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_violation_that_comes_back_counts_again_on_its_event() {
    let env = TestEnv::start("ev-recur").await;
    let ns = env.namespace("ev-recur", &[]).await;
    let web = deployment("web", privileged(), json!({}));
    env.create(Some(&ns), web.clone()).await;
    let selector_value = format!("{}-recur", env.id);
    let selector = format!("{TEST_LABEL}={selector_value}");
    let policy = apply_policy(&env, &selector_value).await;
    let operator = Operator::start(&env.client, "onus", &selector);
    operator.wait_reconciled(&policy).await;
    // Published by their own task after the status write: read once each control the status
    // says the Deployment fails has its Event.
    let offender = format!("Deployment/{ns}/web");
    let failing = |s: &onus::crd::ResponsibilityPolicyStatus| {
        s.controls
            .iter()
            .filter(|c| c.result == onus::crd::ControlResult::Fail)
            .filter(|c| c.examples.contains(&offender))
            .count()
    };
    let policies = Api::<ResponsibilityPolicy>::all(env.client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let status = policies.get(&policy).await.expect("get policy").status;
        let expected = status.as_ref().map_or(0, failing);
        let events = events_on_deployment(&env.client, &policy, &ns, "web").await;
        if expected > 0 && events.len() == expected {
            break events;
        }
        assert!(
            Instant::now() < deadline,
            "{} violation Events on the Deployment, {expected} failing controls",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!first.is_empty(), "no violation Event on the Deployment");

    let lists_offender = |s: &onus::crd::ResponsibilityPolicyStatus| {
        s.controls.iter().any(|c| c.examples.contains(&offender))
    };
    env.delete(Some(&ns), "apps/v1", "Deployment", "web").await;
    env.wait_status(&policy, "the Deployment's violations gone", |s| {
        !lists_offender(s)
    })
    .await;
    env.create(Some(&ns), web).await;
    env.wait_status(&policy, "the Deployment's violations back", lists_offender)
        .await;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let again = events_on_deployment(&env.client, &policy, &ns, "web").await;
        let names = |events: &[Event]| {
            let mut names: Vec<_> = events.iter().map(|e| e.metadata.name.clone()).collect();
            names.sort();
            names
        };
        assert_eq!(names(&again), names(&first), "the same Events, no new ones");
        if again
            .iter()
            .all(|e| e.series.as_ref().is_some_and(|s| s.count == 2))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the comeback was not counted on the Events: {:?}",
            again.iter().map(|e| &e.series).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_violation_with_a_long_example_is_announced() {
    // A RoleBinding subject's name has no length limit and is in the violation's example: the
    // Event's note must still fit the API server's 1024 bytes, or the Event is refused and the
    // violation never announced.
    let env = TestEnv::start("ev-long").await;
    let ns = env.namespace("ev-long", &[]).await;
    let user = format!("user-{}", "x".repeat(1100));
    env.create(
        Some(&ns),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "too-much"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "cluster-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }),
    )
    .await;
    let selector_value = format!("{}-long", env.id);
    let selector = format!("{TEST_LABEL}={selector_value}");
    let policy = apply_policy(&env, &selector_value).await;
    let operator = Operator::start(&env.client, "onus", &selector);
    let offender = format!("RoleBinding/{ns}/too-much");
    env.wait_status(&policy, "the RoleBinding's violation", |s| {
        s.controls
            .iter()
            .any(|c| c.examples.iter().any(|e| e.starts_with(&offender)))
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = Api::<Event>::namespaced(env.client.clone(), &ns)
            .list(&ListParams::default().fields(
                "reason=PolicyViolation,regarding.kind=RoleBinding,regarding.name=too-much",
            ))
            .await
            .expect("list events")
            .items;
        if let Some(event) = events.first() {
            let note = event.note.as_deref().unwrap_or_default();
            assert!(note.len() <= 1024 && note.ends_with('…'), "{note}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the RoleBinding's violation was never announced"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_audit_only_install_says_that_it_drops_a_finalizer_without_releasing_anything() {
    // An Enforce install left its finalizer; an Audit-only install cannot honour it and removes
    // it, and what the Enforce install applied stays: the policy's Events must say so.
    let env = TestEnv::start("ev-audit-only").await;
    let selector_value = format!("{}-audit-only", env.id);
    let name = format!("{}-left", env.id);
    let policy = json!({
        "apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
        "metadata": {"name": name, "labels": {TEST_LABEL: selector_value},
                     "finalizers": [controller::FINALIZER]},
        "spec": {"serviceModel": "PaaS", "mode": "Enforce",
                 "namespaceSelector": {"matchLabels": {"onus.dev/test-ns": env.id}}},
    });
    let policies = Api::<ResponsibilityPolicy>::all(env.client.clone());
    policies
        .create(
            &kube::api::PostParams::default(),
            &serde_json::from_value(policy).expect("policy"),
        )
        .await
        .expect("create policy");
    let (shutdown, stop) = oneshot::channel::<()>();
    let settings = Settings {
        instance: "onus-audit-only".into(),
        policy_selector: Some(format!("{TEST_LABEL}={selector_value}")),
        audit_only: true,
        ..Settings::default()
    };
    let task = tokio::spawn(controller::run(env.client.clone(), settings, async move {
        let _ = stop.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let finalizers = policies
            .get(&name)
            .await
            .expect("get policy")
            .metadata
            .finalizers
            .unwrap_or_default();
        let warned = Api::<Event>::all(env.client.clone())
            .list(&ListParams::default().fields(&format!(
                "reason={},regarding.name={name}",
                controller::CLEANUP_UNAVAILABLE
            )))
            .await
            .expect("list events")
            .items
            .into_iter()
            .any(|e| {
                e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("stay in place"))
            });
        if finalizers.is_empty() && warned {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "finalizers {finalizers:?}, warned: {warned}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = shutdown.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    let _ = policies.delete(&name, &Default::default()).await;
}
