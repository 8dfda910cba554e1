//! Enforce mode, applied: carries out [`remediate::Action`]s with server-side apply under the
//! one onus field manager. Giving something up is an apply without the fields, so the API
//! server removes exactly what onus owned and nothing another manager also set.

use k8s_openapi::api::{
    core::v1::{Namespace, ServiceAccount},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::{Value, json};

use crate::{
    FIELD_MANAGER,
    facts::{
        DEFAULT_DENY, DenySpec, MANAGED_ANNOTATION, MANAGED_BY, POLICIES_ANNOTATION,
        PREVIOUS_ANNOTATION,
    },
    remediate::Action,
};

/// The NetworkPolicy onus creates for `deny`.
pub fn default_deny(namespace: &str, deny: DenySpec, policies: &[String]) -> Value {
    let mut types = Vec::new();
    if deny.ingress {
        types.push("Ingress");
    }
    if deny.egress {
        types.push("Egress");
    }
    let mut spec = json!({"podSelector": {}, "policyTypes": types});
    if deny.egress && deny.dns {
        spec["egress"] = json!([{"ports": [
            {"protocol": "UDP", "port": 53},
            {"protocol": "TCP", "port": 53},
        ]}]);
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": DEFAULT_DENY,
            "namespace": namespace,
            "labels": {MANAGED_BY.0: MANAGED_BY.1},
            "annotations": {POLICIES_ANNOTATION: policies.join(",")},
        },
        "spec": spec,
    })
}

fn apply_params() -> PatchParams {
    // Forced: onus must win back a field someone changed (drift), and it only ever applies
    // fields it means to own.
    PatchParams::apply(FIELD_MANAGER).force()
}

/// The field manager that puts back label values onus replaced. Not onus's own: the restored
/// values belong to the namespace again, and onus's next apply treats them as someone else's.
pub const RESTORE_MANAGER: &str = "onus-restore";

/// Carries out one action.
pub async fn execute(client: &Client, action: &Action) -> Result<(), kube::Error> {
    match action {
        Action::ApplyNetworkPolicy {
            namespace,
            deny,
            policies,
        } => {
            let body = default_deny(namespace, *deny, policies);
            Api::<NetworkPolicy>::namespaced(client.clone(), namespace)
                .patch(DEFAULT_DENY, &apply_params(), &Patch::Apply(&body))
                .await?;
        }
        Action::DeleteNetworkPolicy { namespace } => {
            match Api::<NetworkPolicy>::namespaced(client.clone(), namespace)
                .delete(DEFAULT_DENY, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Action::ApplyPodSecurityLabels {
            namespace,
            labels,
            previous,
            ..
        } => {
            let mut annotations = json!({MANAGED_ANNOTATION: "pod-security-labels"});
            if !previous.is_empty() {
                annotations[PREVIOUS_ANNOTATION] = serde_json::to_string(previous)
                    .map_err(kube::Error::SerdeError)?
                    .into();
            }
            let body = json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": namespace, "labels": labels, "annotations": annotations},
            });
            Api::<Namespace>::all(client.clone())
                .patch(namespace, &apply_params(), &Patch::Apply(&body))
                .await?;
        }
        Action::ReleasePodSecurityLabels { namespace, restore } => {
            let api = Api::<Namespace>::all(client.clone());
            if !restore.is_empty() {
                // First the old values under another manager, then onus lets go: the labels are
                // never absent in between.
                let body = json!({"apiVersion": "v1", "kind": "Namespace",
                                  "metadata": {"name": namespace, "labels": restore}});
                let params = PatchParams::apply(RESTORE_MANAGER).force();
                api.patch(namespace, &params, &Patch::Apply(&body)).await?;
            }
            let body =
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
            api.patch(namespace, &apply_params(), &Patch::Apply(&body))
                .await?;
        }
        Action::DisableDefaultToken { namespace, .. } => {
            let body = json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": namespace,
                             "annotations": {MANAGED_ANNOTATION: "automountServiceAccountToken"}},
                "automountServiceAccountToken": false,
            });
            Api::<ServiceAccount>::namespaced(client.clone(), namespace)
                .patch("default", &apply_params(), &Patch::Apply(&body))
                .await?;
        }
        Action::ReleaseDefaultToken { namespace } => {
            let body = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                              "metadata": {"name": "default", "namespace": namespace}});
            Api::<ServiceAccount>::namespaced(client.clone(), namespace)
                .patch("default", &apply_params(), &Patch::Apply(&body))
                .await?;
        }
    }
    Ok(())
}

/// Pod Security mode labels as `enforce=restricted, warn=restricted` (versions left out).
fn levels(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels
        .iter()
        .filter(|(k, _)| !k.ends_with("-version"))
        .map(|(k, v)| {
            format!(
                "{}={v}",
                k.trim_start_matches("pod-security.kubernetes.io/")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A short past-tense description for logs and Events.
pub fn describe(action: &Action) -> String {
    match action {
        Action::ApplyNetworkPolicy {
            namespace, deny, ..
        } => {
            let mut what = vec![];
            if deny.ingress {
                what.push("ingress");
            }
            if deny.egress {
                what.push(if deny.dns {
                    "egress (DNS allowed)"
                } else {
                    "egress"
                });
            }
            format!(
                "applied NetworkPolicy {namespace}/{DEFAULT_DENY} denying {}",
                what.join(" and ")
            )
        }
        Action::DeleteNetworkPolicy { namespace } => {
            format!("removed NetworkPolicy {namespace}/{DEFAULT_DENY}")
        }
        Action::ApplyPodSecurityLabels {
            namespace,
            labels,
            restores,
            ..
        } => {
            let verb = if *restores { "restored" } else { "set" };
            format!(
                "{verb} Pod Security labels on namespace {namespace}: {}",
                levels(labels)
            )
        }
        Action::ReleasePodSecurityLabels { namespace, restore } if restore.is_empty() => {
            format!("removed onus's Pod Security labels from namespace {namespace}")
        }
        Action::ReleasePodSecurityLabels { namespace, restore } => {
            format!(
                "removed onus's Pod Security labels from namespace {namespace}, restoring {}",
                levels(restore)
            )
        }
        Action::DisableDefaultToken { namespace, .. } => {
            format!("set automountServiceAccountToken=false on ServiceAccount {namespace}/default")
        }
        Action::ReleaseDefaultToken { namespace } => {
            format!("gave up automountServiceAccountToken on ServiceAccount {namespace}/default")
        }
    }
}

/// The Event reason of an action.
pub fn reason(action: &Action) -> &'static str {
    match action {
        Action::ApplyNetworkPolicy { .. } => "NetworkPolicyApplied",
        Action::DeleteNetworkPolicy { .. } => "NetworkPolicyRemoved",
        Action::ApplyPodSecurityLabels { restores: true, .. } => "PodSecurityLabelsRestored",
        Action::ApplyPodSecurityLabels { .. } => "PodSecurityLabelsApplied",
        Action::ReleasePodSecurityLabels { .. } => "PodSecurityLabelsRemoved",
        Action::DisableDefaultToken { .. } => "DefaultTokenDisabled",
        Action::ReleaseDefaultToken { .. } => "DefaultTokenReleased",
    }
}

/// Policies an action serves (empty for removals).
pub fn policies(action: &Action) -> &[String] {
    match action {
        Action::ApplyNetworkPolicy { policies, .. }
        | Action::ApplyPodSecurityLabels { policies, .. }
        | Action::DisableDefaultToken { policies, .. } => policies,
        _ => &[],
    }
}
