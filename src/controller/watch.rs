//! Watches feed the index: every watched kind is decoded object by object, projected into
//! facts and stored; a change triggers the reconciler.

use std::{
    fmt::Debug,
    sync::{Arc, Mutex, RwLock},
    time::Instant,
};

use futures::{FutureExt, StreamExt, future::join_all};
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
    batch::v1::{CronJob, Job},
    core::v1::{Namespace, Pod, Service, ServiceAccount},
    networking::v1::NetworkPolicy,
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DynamicObject},
    runtime::{
        WatchStreamExt,
        watcher::{self, Event, watcher},
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::warn;

use super::write;
use crate::{
    facts::{self, WorkloadKind},
    index::{FactMap, Index, Key},
    metrics::Metrics,
};

/// What every watch task shares.
#[derive(Clone)]
pub(super) struct Watch {
    pub client: Client,
    pub index: Arc<RwLock<Index>>,
    pub changed: mpsc::Sender<()>,
    pub metrics: Metrics,
    pub first_change: Arc<Mutex<Option<Instant>>>,
}

pub(super) async fn watch_all(watch: Watch) {
    macro_rules! watch {
        ($ty:ty, $project:expr, |$i:ident| $map:expr) => {
            watch_into::<$ty, _>(watch.clone(), |$i: &mut Index| $map, $project).boxed()
        };
    }
    let watches = vec![
        watch!(Namespace, facts::namespace, |i| &mut i.namespaces),
        watch!(NetworkPolicy, facts::network_policy, |i| &mut i
            .network_policies),
        watch!(ServiceAccount, facts::default_service_account, |i| &mut i
            .default_service_accounts),
        watch!(Service, facts::external_ips, |i| &mut i.external_ips),
        watch!(Role, facts::role, |i| &mut i.roles),
        watch!(ClusterRole, facts::cluster_role, |i| &mut i.cluster_roles),
        watch!(RoleBinding, facts::role_binding, |i| &mut i.role_bindings),
        watch!(ClusterRoleBinding, facts::cluster_role_binding, |i| &mut i
            .cluster_role_bindings),
        watch!(Deployment, facts::deployment, |i| i
            .workloads_mut(WorkloadKind::Deployment)),
        watch!(StatefulSet, facts::stateful_set, |i| i
            .workloads_mut(WorkloadKind::StatefulSet)),
        watch!(DaemonSet, facts::daemon_set, |i| i
            .workloads_mut(WorkloadKind::DaemonSet)),
        watch!(ReplicaSet, facts::replica_set, |i| i
            .workloads_mut(WorkloadKind::ReplicaSet)),
        watch!(Job, facts::job, |i| i.workloads_mut(WorkloadKind::Job)),
        watch!(CronJob, facts::cron_job, |i| i
            .workloads_mut(WorkloadKind::CronJob)),
        watch!(Pod, facts::pod, |i| i.workloads_mut(WorkloadKind::Pod)),
    ];
    join_all(watches).await;
}

fn key_of(obj: &DynamicObject) -> Key {
    Key::new(obj.metadata.namespace.as_deref(), &obj.name_any())
}

/// Decodes one object; an undecodable object is logged and skipped, never fatal.
fn decode<K>(obj: DynamicObject) -> Option<K>
where
    K: Resource + DeserializeOwned,
    K::DynamicType: Default,
{
    let key = key_of(&obj);
    match obj.try_parse::<K>() {
        Ok(k) => Some(k),
        Err(error) => {
            warn!(kind = %K::kind(&Default::default()), namespace = %key.namespace,
                  name = %key.name, %error, "Skipping undecodable object");
            None
        }
    }
}

/// Watches every object of kind `K` (as untyped objects, so one bad object cannot stall the
/// stream), projects each into a fact and keeps the facts in the index.
async fn watch_into<K, F>(
    watch: Watch,
    map: fn(&mut Index) -> &mut FactMap<F>,
    project: fn(&K) -> Option<F>,
) where
    K: Resource + k8s_openapi::Resource + DeserializeOwned + Clone + Debug + Send + 'static,
    K::DynamicType: Default,
    F: PartialEq + Send + Sync + 'static,
{
    let Watch {
        client,
        index,
        changed,
        metrics,
        first_change,
    } = watch;
    let resource = ApiResource::erase::<K>(&Default::default());
    let api = Api::<DynamicObject>::all_with(client, &resource);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                warn!(kind = %resource.kind, %error, "Watch failed; retrying");
                continue;
            }
        };
        metrics.watch_event(<K as k8s_openapi::Resource>::KIND);
        let did_change = {
            let mut guard = write(&index);
            let facts = map(&mut guard);
            match event {
                Event::Apply(obj) => {
                    let key = key_of(&obj);
                    decode::<K>(obj).is_some_and(|k| facts.apply(key, project(&k)))
                }
                Event::Delete(obj) => facts.delete(&key_of(&obj)),
                Event::Init => {
                    facts.reset_start();
                    false
                }
                Event::InitApply(obj) => {
                    let key = key_of(&obj);
                    if let Some(k) = decode::<K>(obj) {
                        facts.reset_apply(key, project(&k));
                    }
                    false
                }
                Event::InitDone => facts.reset_done(),
            }
        };
        if did_change {
            first_change
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(Instant::now);
            // A full channel already holds a pending trigger; one is enough.
            let _ = changed.try_send(());
        }
    }
}
