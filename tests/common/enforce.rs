//! Reads of what Enforce mode changes, for the tests that run it.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    core::v1::{Namespace, ServiceAccount},
    networking::v1::NetworkPolicy,
};
use kube::{Api, Client};
use serde_json::json;

use super::{TestEnv, hardened};

/// A namespace's labels.
pub async fn labels(client: &Client, ns: &str) -> BTreeMap<String, String> {
    Api::<Namespace>::all(client.clone())
        .get(ns)
        .await
        .expect("namespace")
        .metadata
        .labels
        .unwrap_or_default()
}

/// The namespace's `pod-security.kubernetes.io/enforce` label.
pub async fn enforce_label(client: &Client, ns: &str) -> Option<String> {
    labels(client, ns)
        .await
        .remove("pod-security.kubernetes.io/enforce")
}

/// onus's `onus-default-deny` in a namespace (or a foreign one with its name).
pub async fn deny_policy(client: &Client, ns: &str) -> Option<NetworkPolicy> {
    Api::<NetworkPolicy>::namespaced(client.clone(), ns)
        .get_opt("onus-default-deny")
        .await
        .expect("get")
}

/// `automountServiceAccountToken` of the namespace's `default` ServiceAccount.
pub async fn automount(client: &Client, ns: &str) -> Option<bool> {
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .get("default")
        .await
        .expect("sa")
        .automount_service_account_token
}

/// Polls `check` until it holds; fails the test after 30 s.
pub async fn until<F: AsyncFn() -> bool>(what: &str, check: F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 30s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A container securityContext that passes baseline but runs as root (fails restricted only).
pub fn as_root() -> serde_json::Value {
    let mut sc = hardened();
    sc["runAsNonRoot"] = json!(false);
    sc["runAsUser"] = json!(0);
    sc
}

/// A ValidatingAdmissionPolicy (built into the API server, no webhook needed) and its binding
/// that refuse the `operations` on NetworkPolicies in `ns` with `message`; returns their name.
/// The admission plugin loads policies asynchronously: wait for one to take effect.
pub async fn refuse_network_policies(
    env: &TestEnv,
    suffix: &str,
    ns: &str,
    operations: &[&str],
    message: &str,
) -> String {
    let name = format!("{}-{suffix}", env.id);
    env.create(
        None,
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{"apiGroups": ["networking.k8s.io"],
                    "apiVersions": ["v1"], "operations": operations,
                    "resources": ["networkpolicies"]}]},
                "validations": [{"expression": "false", "message": message}]
            }
        }),
    )
    .await;
    env.create(None, json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
        }
    }))
    .await;
    name
}
