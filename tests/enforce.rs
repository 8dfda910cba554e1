//! Enforce mode against the real API server (with kube-controller-manager running).
//! onus's clean-up releases what no policy of its instance wants, so these tests run one at a
//! time, each with its own operator.

mod common;

use std::time::Duration;

use common::enforce::{automount, deny_policy, enforce_label, labels, until};
use common::{TestEnv, deployment, hardened, is};
use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    events::v1::Event,
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, PostParams},
};
use onus::{
    crd::{ControlResult::*, RemediationKind, ResponsibilityPolicy},
    status::{self, ENFORCED},
};
use serde_json::json;

/// Held for a whole test; async-aware, and a failed test does not poison it.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn privileged() -> serde_json::Value {
    let mut sc = hardened();
    sc["privileged"] = json!(true);
    sc.as_object_mut()
        .map(|o| o.remove("allowPrivilegeEscalation"));
    sc
}

fn enforce_spec() -> serde_json::Value {
    json!({"serviceModel": "PaaS", "mode": "Enforce",
           "controls": {"network": {"defaultDeny": ["Ingress", "Egress"]},
                        "podSecurity": {"level": "restricted", "version": "latest"}}})
}

#[tokio::test]
async fn enforce_applies_the_safe_remediations_and_admission_then_rejects_violations() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("enforce").await;
    let ns = env.namespace("shop", &[]).await;
    let policy = env.apply_policy("prod", enforce_spec()).await;

    let rp = env
        .wait_status(&policy, "remediated", |s| {
            status::condition(s, ENFORCED).is_some_and(|c| c.status == "True")
                && is(s, "NET-01", Pass, 0)
                && is(s, "NET-02", Pass, 0)
                && is(s, "WKL-01", Pass, 0)
                && is(s, "AUD-01", Pass, 0)
                && is(s, "IAM-09", Pass, 0)
        })
        .await;
    assert!(
        rp.finalizers()
            .iter()
            .any(|f| f == onus::controller::FINALIZER)
    );

    let np = deny_policy(&env.client, &ns)
        .await
        .expect("onus-default-deny");
    let spec = np.spec.expect("spec");
    assert_eq!(
        spec.policy_types,
        Some(vec!["Ingress".into(), "Egress".into()])
    );
    assert_eq!(spec.egress.map(|e| e.len()), Some(1), "DNS allowance");
    assert_eq!(
        np.metadata
            .labels
            .unwrap_or_default()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("onus")
    );
    let l = labels(&env.client, &ns).await;
    assert_eq!(
        l.get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    assert_eq!(
        l.get("pod-security.kubernetes.io/warn").map(String::as_str),
        Some("restricted")
    );
    assert_eq!(automount(&env.client, &ns).await, Some(false));

    // The real PodSecurity admission now rejects a privileged pod there, once it has the label
    // (it reads namespaces from its informer, a moment behind the write): dry runs until then.
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "root"},
        "spec": {"containers": [{"name": "x", "image": "busybox", "securityContext": privileged()}]}}))
    .expect("pod");
    let pods = Api::<Pod>::namespaced(env.client.clone(), &ns);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    until("the admission rejects a privileged pod", async || {
        pods.create(&dry_run, &pod).await.is_err()
    })
    .await;
    let err = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect_err("rejected");
    assert!(err.to_string().contains("violates PodSecurity"), "{err}");

    // Applying the same state again writes nothing.
    let rv = |o: Option<String>| o.unwrap_or_default();
    let np_rv = rv(deny_policy(&env.client, &ns)
        .await
        .and_then(|n| n.metadata.resource_version));
    let ns_rv = rv(Api::<Namespace>::all(env.client.clone())
        .get(&ns)
        .await
        .expect("ns")
        .metadata
        .resource_version);
    let policy_rv = common::resource_version(&env.client, &policy).await;
    env.apply_policy("prod", enforce_spec()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rv(deny_policy(&env.client, &ns)
            .await
            .and_then(|n| n.metadata.resource_version)),
        np_rv
    );
    assert_eq!(
        rv(Api::<Namespace>::all(env.client.clone())
            .get(&ns)
            .await
            .expect("ns")
            .metadata
            .resource_version),
        ns_rv
    );
    assert_eq!(
        common::resource_version(&env.client, &policy).await,
        policy_rv
    );
}

#[tokio::test]
async fn enforce_waits_for_existing_workloads_then_applies_by_itself() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("waiting").await;
    let ns = env.namespace("legacy", &[]).await;
    env.create(Some(&ns), deployment("old", privileged(), json!({})))
        .await;
    let policy = env.apply_policy("prod", enforce_spec()).await;

    let rp = env
        .wait_status(&policy, "waiting", |s| {
            status::condition(s, ENFORCED).is_some_and(|c| c.reason == "EnforceWaiting")
        })
        .await;
    let s = rp.status.expect("status");
    let remediation = s.remediation.expect("remediation");
    assert_eq!(remediation.kind, RemediationKind::Pending);
    assert_eq!(
        remediation.enforce_waiting,
        [format!(
            "no enforce label in {ns}; restricted waits for 1 workload (Deployment/{ns}/old)"
        )]
    );
    let l = labels(&env.client, &ns).await;
    assert_eq!(
        l.get("pod-security.kubernetes.io/warn").map(String::as_str),
        Some("restricted")
    );
    assert_eq!(
        l.get("pod-security.kubernetes.io/audit")
            .map(String::as_str),
        Some("restricted")
    );
    assert_eq!(l.get("pod-security.kubernetes.io/enforce"), None);

    // Fixing the workload is the only trigger needed.
    let mut fixed = hardened();
    fixed["privileged"] = json!(false);
    env.apply(Some(&ns), deployment("old", fixed, json!({})))
        .await;
    env.wait_status(&policy, "enforced", |s| {
        status::condition(s, ENFORCED).is_some_and(|c| c.status == "True")
    })
    .await;
    assert_eq!(
        enforce_label(&env.client, &ns).await.as_deref(),
        Some("restricted")
    );
}

#[tokio::test]
async fn deleting_the_policy_removes_exactly_what_onus_added() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("cleanup").await;
    let ns = env
        .namespace(
            "shop",
            &[
                ("team", "payments"),
                ("pod-security.kubernetes.io/audit", "restricted"),
            ],
        )
        .await;
    env.create(Some(&ns), json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "users-own"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"podSelector": {}}]}]}
    }))
    .await;
    let policy = env.apply_policy("prod", enforce_spec()).await;
    env.wait_status(&policy, "remediated", |s| {
        status::condition(s, ENFORCED).is_some_and(|c| c.status == "True")
    })
    .await;
    let series = format!("policy=\"{policy}\"");
    assert!(env.metrics.render().contains(&series), "series of {policy}");

    Api::<ResponsibilityPolicy>::all(env.client.clone())
        .delete(&policy, &Default::default())
        .await
        .expect("delete policy");
    until("policy gone", async || {
        Api::<ResponsibilityPolicy>::all(env.client.clone())
            .get_opt(&policy)
            .await
            .expect("get")
            .is_none()
    })
    .await;
    // Its metric series go with it, though no other policy reconciles after it: its own last
    // reconciles (finalizer released) must not leave them behind.
    until("the deleted policy's metric series forgotten", async || {
        !env.metrics.render().contains(&series)
    })
    .await;

    assert!(
        deny_policy(&env.client, &ns).await.is_none(),
        "onus-default-deny removed"
    );
    let users_own = Api::<NetworkPolicy>::namespaced(env.client.clone(), &ns)
        .get_opt("users-own")
        .await
        .expect("get");
    assert!(users_own.is_some(), "the user's NetworkPolicy stays");
    let l = labels(&env.client, &ns).await;
    assert_eq!(l.get("team").map(String::as_str), Some("payments"));
    assert_eq!(
        l.get("pod-security.kubernetes.io/audit")
            .map(String::as_str),
        Some("restricted"),
        "user's label stays"
    );
    assert_eq!(l.get("pod-security.kubernetes.io/enforce"), None);
    assert_eq!(l.get("pod-security.kubernetes.io/warn"), None);
    assert_eq!(automount(&env.client, &ns).await, None);
}

#[tokio::test]
async fn drift_is_repaired_and_weakened_labels_restored() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("drift").await;
    let ns = env.namespace("shop", &[]).await;
    let policy = env.apply_policy("prod", enforce_spec()).await;
    env.wait_status(&policy, "remediated", |s| {
        status::condition(s, ENFORCED).is_some_and(|c| c.status == "True")
    })
    .await;

    Api::<NetworkPolicy>::namespaced(env.client.clone(), &ns)
        .delete("onus-default-deny", &Default::default())
        .await
        .expect("delete by hand");
    until("onus-default-deny restored", async || {
        deny_policy(&env.client, &ns).await.is_some()
    })
    .await;

    common::kubectl_ok(
        env.cp,
        &[
            "label",
            "--overwrite",
            "namespace",
            &ns,
            "pod-security.kubernetes.io/enforce=privileged",
        ],
    );
    until("enforce=restricted restored", async || {
        enforce_label(&env.client, &ns).await.as_deref() == Some("restricted")
    })
    .await;
    // The Event follows the restoring write (published once it succeeded): wait for it too.
    let note = format!("restored Pod Security labels on namespace {ns}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let restored: Vec<String> = Api::<Event>::all(env.client.clone())
            .list(&ListParams::default().fields(&format!("regarding.name={policy}")))
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("PodSecurityLabelsRestored"))
            .filter_map(|e| e.note)
            .collect();
        if restored.iter().any(|n| n.contains(&note)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no PodSecurityLabelsRestored Event for {ns} within 30s: {restored:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn overlapping_policies_merge_to_the_strictest_and_a_family_can_stay_in_audit() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("overlap").await;
    let ns = env.namespace("shop", &[]).await;
    let ingress_only = env
        .apply_policy("a", json!({"serviceModel": "PaaS", "mode": "Enforce",
            "controls": {"podSecurity": {"level": "baseline"}, "serviceAccounts": {"mode": "Audit"}}}))
        .await;
    let strict = env.apply_policy("b", enforce_spec()).await;
    for p in [&ingress_only, &strict] {
        env.wait_status(p, "enforced", |s| {
            s.controls
                .iter()
                .any(|c| c.id == "NET-01" && c.result == Pass)
        })
        .await;
    }
    until("strictest merged", async || {
        let np = deny_policy(&env.client, &ns).await;
        let types = np
            .and_then(|n| n.spec)
            .and_then(|s| s.policy_types)
            .unwrap_or_default();
        types == ["Ingress", "Egress"]
            && enforce_label(&env.client, &ns).await.as_deref() == Some("restricted")
    })
    .await;

    // Deleting the strict policy leaves what the other still wants, and no more.
    Api::<ResponsibilityPolicy>::all(env.client.clone())
        .delete(&strict, &Default::default())
        .await
        .expect("delete");
    until("merged down to ingress only", async || {
        let np = deny_policy(&env.client, &ns).await;
        np.and_then(|n| n.spec)
            .and_then(|s| s.policy_types)
            .unwrap_or_default()
            == ["Ingress"]
    })
    .await;
    // Deleting the policy that asked for restricted is the one way onus's own level goes
    // down: to what the remaining policy asks for, never below.
    until("lowered to what is still asked for", async || {
        enforce_label(&env.client, &ns).await.as_deref() == Some("baseline")
    })
    .await;
    // Policy a keeps serviceAccounts in Audit: onus gives the token setting up again.
    until("token setting released", async || {
        automount(&env.client, &ns).await.is_none()
    })
    .await;
    let rp = env
        .wait_status(&ingress_only, "IAM-09 audited", |s| {
            is(s, "IAM-09", Fail, 1)
        })
        .await;
    assert!(
        rp.status
            .and_then(|s| status::condition(&s, ENFORCED).map(|c| c.status == "True"))
            .unwrap_or(false)
    );
}

#[tokio::test]
async fn an_audit_policy_shows_what_enforce_would_change() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("dryrun").await;
    let a = env.namespace("a", &[]).await;
    env.namespace("b", &[]).await;
    env.create(Some(&a), deployment("old", privileged(), json!({})))
        .await;
    let policy = env
        .apply_policy("audit", json!({"serviceModel": "PaaS", "controls": {"network": {"defaultDeny": ["Ingress", "Egress"]}}}))
        .await;
    let waiting = [format!(
        "no enforce label in {a}; restricted waits for 1 workload (Deployment/{a}/old)"
    )];
    // The Deployment was created just before the policy (and is watched apart from it): the
    // first preview may come before it is seen. Wait for the preview that names it.
    let rp = env
        .wait_status(&policy, "preview", |s| {
            s.remediation
                .as_ref()
                .is_some_and(|r| r.enforce_waiting == waiting)
        })
        .await;
    let r = rp.status.and_then(|s| s.remediation).expect("remediation");
    assert_eq!(r.kind, RemediationKind::WouldApply);
    assert_eq!(
        (
            r.network_policies,
            r.pod_security_labels,
            r.service_accounts
        ),
        (2, 2, 2)
    );
    assert_eq!(r.enforce_waiting, waiting);
    assert!(
        deny_policy(&env.client, &a).await.is_none(),
        "Audit changes nothing"
    );
}

#[tokio::test]
async fn namespaces_that_join_get_remediated_and_those_that_leave_are_released() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("joinleave").await;
    let policy = env.apply_policy("prod", enforce_spec()).await;
    env.wait_status(&policy, "evaluated", |s| s.summary.is_some())
        .await;

    let ns = env.namespace("late", &[]).await;
    until("onus-default-deny in the new namespace", async || {
        deny_policy(&env.client, &ns).await.is_some()
    })
    .await;
    until("labels on the new namespace", async || {
        enforce_label(&env.client, &ns).await.is_some()
    })
    .await;

    // The namespace stops matching the selector: onus gives back what it set there.
    common::kubectl_ok(env.cp, &["label", "namespace", &ns, "onus.dev/test-ns-"]);
    until("released", async || {
        deny_policy(&env.client, &ns).await.is_none()
            && enforce_label(&env.client, &ns).await.is_none()
            && automount(&env.client, &ns).await.is_none()
    })
    .await;
}

#[tokio::test]
async fn a_terminating_namespace_does_not_hold_up_the_others() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("terminating").await;
    let stuck = env.namespace("aaa-stuck", &[]).await;
    // A finalizer on an object inside keeps the namespace Terminating.
    env.create(
        Some(&stuck),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "held", "finalizers": ["example.com/hold"]}}),
    )
    .await;
    Api::<Namespace>::all(env.client.clone())
        .delete(&stuck, &Default::default())
        .await
        .expect("delete namespace");
    let healthy = env.namespace("zzz-healthy", &[]).await;

    let policy = env.apply_policy("prod", enforce_spec()).await;
    until("the healthy namespace is remediated", async || {
        deny_policy(&env.client, &healthy).await.is_some()
    })
    .await;
    env.wait_status(&policy, "evaluated", |s| s.summary.is_some())
        .await;
    assert!(deny_policy(&env.client, &stuck).await.is_none());

    env.apply(
        Some(&stuck),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "held", "finalizers": []}}),
    )
    .await;
}
