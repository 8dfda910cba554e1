//! `onus report` against a cluster: its identity, the policies, and a live read of the
//! objects the controls read, evaluated with the controller's code for complete offender lists.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams},
    core::GroupVersionKind,
    discovery::ApiResource,
};
use serde_json::Value;

use super::{ClusterIdentity, Document, from_policy};
use crate::{
    check::{self, load},
    crd::ResponsibilityPolicy,
    evaluate, podsecurity,
};

/// The kinds the controller watches: (group, version, kind, plural).
const KINDS: &[(&str, &str, &str, &str)] = &[
    ("", "v1", "Namespace", "namespaces"),
    ("", "v1", "ServiceAccount", "serviceaccounts"),
    ("", "v1", "Service", "services"),
    ("", "v1", "Pod", "pods"),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
    ),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
    ),
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    ("apps", "v1", "ReplicaSet", "replicasets"),
    ("batch", "v1", "Job", "jobs"),
    ("batch", "v1", "CronJob", "cronjobs"),
];

/// The objects of every kind the controls read, as `onus check` input.
async fn live_objects(client: &Client) -> anyhow::Result<Vec<load::Object>> {
    let mut objects = Vec::new();
    let file: std::sync::Arc<str> = "cluster".into();
    for (group, version, kind, plural) in KINDS {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| anyhow::anyhow!("listing {plural}: {e}"))?;
        for item in list.items {
            let mut value = serde_json::to_value(item)?;
            value["apiVersion"] = Value::String(resource.api_version.clone());
            value["kind"] = Value::String(kind.to_string());
            objects.push(load::Object {
                source: load::Source {
                    file: file.clone(),
                    line: 0,
                },
                value,
            });
        }
    }
    Ok(objects)
}

/// The server URL the client's configuration names.
pub async fn identity(client: &Client, server: String) -> anyhow::Result<ClusterIdentity> {
    let version = client.apiserver_version().await?;
    let kube_system = Api::<Namespace>::all(client.clone())
        .get("kube-system")
        .await
        .map_err(|e| anyhow::anyhow!("reading the kube-system namespace: {e}"))?;
    Ok(ClusterIdentity {
        server,
        version: version.git_version,
        kube_system_uid: kube_system.metadata.uid.unwrap_or_default(),
    })
}

/// The report of the cluster `client` talks to (`server`: its URL, for the document); one
/// policy when `only` names it.
pub async fn report(
    client: &Client,
    server: String,
    only: Option<&str>,
    now: Timestamp,
) -> anyhow::Result<Document> {
    let cluster = identity(client, server).await?;
    let api = Api::<ResponsibilityPolicy>::all(client.clone());
    let policies = match only {
        Some(name) => vec![
            api.get(name)
                .await
                .map_err(|e| anyhow::anyhow!("policy {name}: {e}"))?,
        ],
        None => api.list(&ListParams::default()).await?.items,
    };
    let info = client.apiserver_version().await?;
    let ingested = check::ingest_live(
        live_objects(client).await?,
        "default",
        podsecurity::server_minor(&info),
    );
    let unreadable: Vec<String> = ingested.errors.iter().map(|e| e.reason.clone()).collect();
    let policies = policies
        .iter()
        .map(|p| {
            let live = evaluate::evaluate(&p.spec, &ingested.index, now);
            let mut report = from_policy(p, Some(&live), now);
            if !unreadable.is_empty() {
                report.notes.push(format!(
                    "{} objects of the live read could not be decoded and are missing from the \
                     offender lists: {}",
                    unreadable.len(),
                    unreadable.join("; ")
                ));
            }
            report
        })
        .collect();
    Ok(Document {
        generated_at: now.to_string(),
        source: "cluster".into(),
        file: None,
        cluster: Some(cluster),
        policies,
    })
}
