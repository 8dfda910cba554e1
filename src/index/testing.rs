//! Index fixtures for the unit tests of the modules that read the index.

use serde_json::{Value, json};

use super::{Index, Key};
use crate::facts::{self, WorkloadKind};

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("fixture")
}

/// Marks the webhook, CRD and APIService watches as listed (with nothing found): the default-deny
/// gate holds every namespace until they have.
pub(crate) fn backends_listed(index: &mut Index) {
    for kind in crate::facts::backends::BackendKind::ALL {
        let map = index.backends.map(kind);
        map.reset_start();
        map.reset_done();
    }
    index.backends.rebuild();
}

/// Records that namespace `ns` backs a ValidatingWebhookConfiguration `name` (through a
/// Service `svc`), as the watch does.
pub(crate) fn webhook(index: &mut Index, name: &str, ns: &str) {
    let kind = crate::facts::backends::BackendKind::ValidatingWebhookConfiguration;
    let key = Key::new(None, name);
    // The namespaces it pointed into before move too.
    let mut moved = index.backends.namespaces_of(kind, &key);
    moved.insert(ns.to_string());
    index.backends.map(kind).apply(
        key,
        Some(crate::facts::backends::BackendFact {
            services: vec![(ns.to_string(), "svc".to_string())],
            ips: Vec::new(),
        }),
    );
    index.backends.rebuild();
    for ns in moved {
        index.touch("ValidatingWebhookConfiguration", Some(&ns));
    }
}

/// Adds a Deployment with this pod spec in its template.
pub(crate) fn deployment(index: &mut Index, ns: &str, name: &str, pod_spec: Value) {
    let d = from(json!({"metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {}, "template": {"spec": pod_spec}}}));
    index
        .workloads_mut(WorkloadKind::Deployment)
        .apply(Key::new(Some(ns), name), facts::deployment(&d));
}

/// Adds a Pod of the Deployment's ReplicaSet `<deployment>-rs`, with this spec (which a
/// webhook or `kubectl debug` may have made differ from the template).
pub(crate) fn deployment_pod(
    index: &mut Index,
    ns: &str,
    deployment: &str,
    pod: &str,
    pod_spec: Value,
) {
    let rs_name = format!("{deployment}-rs");
    let rs = from(
        json!({"metadata": {"name": rs_name, "namespace": ns, "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment, "uid": "1", "controller": true}]}}),
    );
    index
        .replica_set_owners
        .apply(Key::new(Some(ns), &rs_name), facts::replica_set_owner(&rs));
    let p = from(
        json!({"metadata": {"name": pod, "namespace": ns, "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name, "uid": "2", "controller": true}]},
        "spec": pod_spec}),
    );
    index
        .owned_pods
        .apply(Key::new(Some(ns), pod), facts::owned_pod(&p));
}

/// A pod spec with one container that passes the restricted level.
pub(crate) fn restricted_spec() -> Value {
    json!({"containers": [{"name": "app", "securityContext": {
        "allowPrivilegeEscalation": false, "runAsNonRoot": true,
        "seccompProfile": {"type": "RuntimeDefault"}, "capabilities": {"drop": ["ALL"]}}}]})
}

/// `restricted_spec` plus an ephemeral debug container, hardened but for an added NET_ADMIN:
/// it fails WKL-04 and nothing else.
pub(crate) fn debugged_spec() -> Value {
    let mut spec = restricted_spec();
    let mut debug = spec["containers"][0].clone();
    debug["name"] = json!("debug");
    debug["securityContext"]["capabilities"]["add"] = json!(["NET_ADMIN"]);
    spec["ephemeralContainers"] = json!([debug]);
    spec
}
