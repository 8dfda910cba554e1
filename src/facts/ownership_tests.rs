//! Attacks on the ownership facts: a marker or record onus did not write itself is not trusted.

use super::*;
use serde_json::json;

fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("fixture")
}

fn field(key: &str) -> serde_json::Value {
    json!({format!("f:{key}"): {}})
}

/// A namespace with `annotations`, whose managedFields say onus's apply owns `onus_labels`
/// and `onus_annotations`, and `kubectl annotate` (an Update) owns `by_hand`.
fn namespace_with(
    annotations: serde_json::Value,
    onus_labels: &[&str],
    onus_annotations: &[&str],
    by_hand: &[&str],
) -> Namespace {
    let fields = |keys: &[&str]| {
        keys.iter().fold(json!({}), |mut acc, k| {
            merge_json(&mut acc, field(k));
            acc
        })
    };
    from(json!({
        "metadata": {
            "name": "shop",
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            "annotations": annotations,
            "managedFields": [
                {"manager": "onus", "operation": "Apply", "apiVersion": "v1",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {
                    "f:labels": fields(onus_labels),
                    "f:annotations": fields(onus_annotations)}}},
                {"manager": "kubectl-annotate", "operation": "Update", "apiVersion": "v1",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {
                    "f:annotations": fields(by_hand)}}}
            ]
        }
    }))
}

fn merge_json(acc: &mut serde_json::Value, more: serde_json::Value) {
    if let (Some(a), serde_json::Value::Object(m)) = (acc.as_object_mut(), more) {
        a.extend(m);
    }
}

#[test]
fn a_previous_labels_record_someone_else_wrote_is_not_trusted() {
    // onus set enforce=restricted where there was none (no record); the namespace owner
    // then wrote a record of their own.
    let ns = namespace_with(
        json!({
            "onus.dev/managed": "pod-security-labels",
            "onus.dev/previous-labels": "{\"pod-security.kubernetes.io/enforce\":\"privileged\"}"
        }),
        &["pod-security.kubernetes.io/enforce"],
        &["onus.dev/managed"],
        &["onus.dev/previous-labels"],
    );
    let fact = namespace(&ns).expect("fact");
    assert_eq!(
        fact.previous,
        BTreeMap::new(),
        "onus would restore enforce=privileged on release"
    );
}

#[test]
fn a_managed_marker_someone_else_wrote_is_not_onus_managing_the_labels() {
    let ns = namespace_with(
        json!({"onus.dev/managed": "pod-security-labels"}),
        &[],
        &[],
        &["onus.dev/managed"],
    );
    assert!(!namespace(&ns).expect("fact").onus_labels);
}

#[test]
fn onus_own_record_and_marker_are_trusted() {
    let ns = namespace_with(
        json!({
            "onus.dev/managed": "pod-security-labels",
            "onus.dev/previous-labels": "{\"pod-security.kubernetes.io/enforce\":\"baseline\"}"
        }),
        &["pod-security.kubernetes.io/enforce"],
        &["onus.dev/managed", "onus.dev/previous-labels"],
        &[],
    );
    let fact = namespace(&ns).expect("fact");
    assert!(fact.onus_labels);
    assert_eq!(
        fact.previous
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("baseline")
    );
}

/// A forged marker would make every convergence plan (and announce) a release of a setting
/// onus never made.
#[test]
fn a_managed_marker_someone_else_wrote_on_the_default_service_account_is_not_trusted() {
    let sa: ServiceAccount = from(json!({"metadata": {
        "name": "default",
        "annotations": {"onus.dev/managed": "automountServiceAccountToken"},
        "managedFields": [{"manager": "kubectl-annotate", "operation": "Update",
            "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {
                "f:annotations": {"f:onus.dev/managed": {}}}}}]
    }}));
    assert!(!default_service_account(&sa).expect("fact").onus_managed);
}

/// An owner reference claiming `kind` in `api_version`, as a controller.
fn claiming(api_version: &str, kind: &str, name: &str) -> serde_json::Value {
    json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": "bogus", "controller": true}])
}

#[test]
fn a_pod_claiming_a_replica_set_of_the_wrong_api_group_is_judged_alone() {
    // No `batch/v1` ReplicaSet exists: no controller runs this Pod, and the garbage collector
    // cannot resolve the owner to delete it. It must not roll up into `apps/v1` ReplicaSet
    // "web"'s template (and borrow that template's failures or exceptions).
    let p: wire::PodObject = from(json!({
        "metadata": {"name": "miner", "namespace": "shop",
                     "ownerReferences": claiming("batch/v1", "ReplicaSet", "web")},
        "spec": {"containers": [{"name": "app", "securityContext": {"privileged": true}}]}
    }));
    assert_eq!(owned_pod(&p), None);
    assert_eq!(pod(&p).map(|w| w.kind), Some(WorkloadKind::Pod));
    let p: wire::PodObject = from(json!({
        "metadata": {"name": "miner", "namespace": "shop",
                     "ownerReferences": claiming("apps/v1", "Job", "nightly-1")},
        "spec": {"containers": [{"name": "app"}]}
    }));
    assert_eq!(pod(&p).map(|w| w.kind), Some(WorkloadKind::Pod));
}

#[test]
fn a_workload_claiming_a_controller_of_the_wrong_api_group_is_its_own_workload() {
    let rs: wire::WorkloadObject = from(json!({
        "metadata": {"name": "miner", "namespace": "shop",
                     "ownerReferences": claiming("batch/v1", "Deployment", "web")},
        "spec": {"template": {"spec": {"containers": [{"name": "app"}]}}}
    }));
    assert_eq!(replica_set_owner(&rs), None);
    assert_eq!(
        replica_set(&rs).map(|w| w.kind),
        Some(WorkloadKind::ReplicaSet)
    );
    let j: wire::WorkloadObject = from(json!({
        "metadata": {"name": "miner", "namespace": "shop",
                     "ownerReferences": claiming("apps/v1", "CronJob", "nightly")},
        "spec": {"template": {"spec": {"containers": [{"name": "app"}]}}}
    }));
    assert_eq!(job_owner(&j), None);
    assert_eq!(job(&j).map(|w| w.kind), Some(WorkloadKind::Job));
}
