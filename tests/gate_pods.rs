//! The Enforce gate judges the running Pods, not only their templates, against the real API
//! server (kube-controller-manager runs the Deployment and ReplicaSet controllers; there is no
//! kubelet and no scheduler, so Pods stay Pending).
//!
//! onus's clean-up releases what no policy of its instance wants, so these tests run one at a
//! time, each with its own operator.

mod common;

use std::time::{Duration, Instant};

use common::{TestEnv, control, deployment, hardened};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};
use onus::{
    crd::ResponsibilityPolicyStatus,
    status::{self, ENFORCED},
};
use serde_json::{Value, json};

/// Held for a whole test; async-aware, and a failed test does not poison it.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

fn enforce_spec() -> Value {
    json!({"serviceModel": "PaaS", "mode": "Enforce",
           "controls": {"podSecurity": {"level": "restricted", "version": "latest"}}})
}

async fn enforce_label(client: &Client, ns: &str) -> Option<String> {
    Api::<Namespace>::all(client.clone())
        .get(ns)
        .await
        .expect("namespace")
        .metadata
        .labels
        .unwrap_or_default()
        .remove(ENFORCE_LABEL)
}

/// The names of the Pods with label `app=<app>`, once there are exactly `count`.
async fn pods_of(client: &Client, ns: &str, app: &str, count: usize) -> Vec<String> {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pods = api
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .expect("list pods");
        let names: Vec<String> = pods
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| p.name_any())
            .collect();
        if names.len() == count {
            return names;
        }
        assert!(
            Instant::now() < deadline,
            "{count} pods app={app} not within 30s: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn waiting(s: &ResponsibilityPolicyStatus) -> bool {
    status::condition(s, ENFORCED).is_some_and(|c| c.reason == "EnforceWaiting")
}

fn enforced(s: &ResponsibilityPolicyStatus) -> bool {
    status::condition(s, ENFORCED).is_some_and(|c| c.status == "True")
}

/// While waiting: only the Pod is named, under the control it alone fails.
async fn assert_waits_for_the_pod(
    env: &TestEnv,
    policy: &str,
    ns: &str,
    control_id: &str,
    pod: &str,
) {
    let example = format!("Pod/{ns}/{pod}");
    let rp = env
        .wait_status(policy, "waiting for the pod", |s| {
            waiting(s) && control(s, control_id).examples.contains(&example)
        })
        .await;
    let s = rp.status.expect("status");
    assert_eq!(
        control(&s, control_id).examples,
        [example],
        "the template passes: only the Pod is reported"
    );
    let remediation = s.remediation.expect("remediation");
    assert_eq!(
        remediation.enforce_waiting,
        [format!(
            "no enforce label in {ns}; restricted waits for 1 workload (Pod/{ns}/{pod})"
        )]
    );
    assert_eq!(enforce_label(&env.client, ns).await, None);
}

#[tokio::test]
async fn an_ephemeral_container_holds_enforce_until_its_pod_is_gone() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("gate-ephemeral").await;
    let ns = env.namespace("debugged", &[]).await;
    env.create(Some(&ns), deployment("web", hardened(), json!({})))
        .await;
    let pod = pods_of(&env.client, &ns, "web", 1).await.remove(0);

    // `kubectl debug` adds a container that is not restricted-compliant (NET_ADMIN).
    let pods = Api::<Pod>::namespaced(env.client.clone(), &ns);
    let mut running = pods.get(&pod).await.expect("pod");
    let mut debug = hardened();
    debug["capabilities"]["add"] = json!(["NET_ADMIN"]);
    running
        .spec
        .get_or_insert_with(Default::default)
        .ephemeral_containers = Some(vec![
        serde_json::from_value(
            json!({"name": "debug", "image": "busybox", "securityContext": debug}),
        )
        .expect("ephemeral container"),
    ]);
    pods.replace_ephemeral_containers(&pod, &PostParams::default(), &running)
        .await
        .expect("add ephemeral container");

    let policy = env.apply_policy("prod", enforce_spec()).await;
    assert_waits_for_the_pod(&env, &policy, &ns, "WKL-04", &pod).await;

    // The ReplicaSet replaces the Pod with one made from the (compliant) template.
    pods.delete(&pod, &DeleteParams::default())
        .await
        .expect("delete pod");
    env.wait_status(&policy, "enforced", enforced).await;
    assert_eq!(
        enforce_label(&env.client, &ns).await.as_deref(),
        Some("restricted")
    );
}

#[tokio::test]
async fn a_pod_a_webhook_made_privileged_holds_enforce_until_it_is_gone() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start("gate-webhook").await;
    let ns = env.namespace("mutated", &[]).await;
    let mut rs = deployment("api", hardened(), json!({}));
    rs["kind"] = json!("ReplicaSet");
    rs["spec"].as_object_mut().map(|s| s.remove("strategy"));
    rs["spec"]["replicas"] = json!(1);
    env.create(Some(&ns), rs).await;
    let clean = pods_of(&env.client, &ns, "api", 1).await.remove(0);

    // What a mutating webhook would make of the ReplicaSet's Pod: a privileged container.
    // Bound to a node, it ranks above the ReplicaSet's unbound Pod, which the ReplicaSet
    // removes as the surplus one.
    let uid = Api::<k8s_openapi::api::apps::v1::ReplicaSet>::namespaced(env.client.clone(), &ns)
        .get("api")
        .await
        .expect("replica set")
        .uid()
        .expect("uid");
    let mut privileged = hardened();
    privileged["privileged"] = json!(true);
    privileged
        .as_object_mut()
        .map(|o| o.remove("allowPrivilegeEscalation"));
    let mutated: Pod = serde_json::from_value(json!({
        "metadata": {"name": "api-mutated", "labels": {"app": "api"}, "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api", "uid": uid, "controller": true}]},
        "spec": {"nodeName": "node-1", "containers": [
            {"name": "app", "image": "nginx", "securityContext": privileged}]}
    }))
    .expect("pod");
    let pods = Api::<Pod>::namespaced(env.client.clone(), &ns);
    pods.create(&PostParams::default(), &mutated)
        .await
        .expect("create mutated pod");
    assert_eq!(
        pods_of(&env.client, &ns, "api", 1).await,
        ["api-mutated"],
        "the ReplicaSet keeps the mutated Pod and drops {clean}"
    );

    let policy = env.apply_policy("prod", enforce_spec()).await;
    assert_waits_for_the_pod(&env, &policy, &ns, "WKL-03", "api-mutated").await;

    // Bound to a node without a kubelet, the Pod goes only when forced.
    pods.delete("api-mutated", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete pod");
    env.wait_status(&policy, "enforced", enforced).await;
    assert_eq!(
        enforce_label(&env.client, &ns).await.as_deref(),
        Some("restricted")
    );
}
