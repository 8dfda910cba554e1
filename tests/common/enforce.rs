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

use super::hardened;

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
