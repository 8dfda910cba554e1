//! Watches feed the index: every watched kind is decoded object by object, projected into
//! facts and stored; a change triggers the reconciler.

use std::{
    collections::BTreeSet,
    fmt::Debug,
    sync::{Arc, Mutex, RwLock},
    time::Instant,
};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::{
    admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
    apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
    batch::v1::{CronJob, Job},
    core::v1::{Namespace, Pod, Service, ServiceAccount},
    networking::v1::NetworkPolicy,
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use k8s_openapi::{
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    kube_aggregator::pkg::apis::apiregistration::v1::APIService,
};
use kube::{
    Api, Client, Resource,
    api::ApiResource,
    runtime::{
        WatchStreamExt,
        watcher::{self, Event, watcher},
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

use super::write;
use crate::{
    evaluate::POLICY_CAPABLE_CNIS,
    facts::{
        self, WorkloadKind,
        backends::{self, BackendFact, BackendKind},
        wire::{PodObject, WorkloadObject},
    },
    index::{FactMap, Index, Key},
    metrics::Metrics,
    podsecurity,
};

mod object;
mod prefetch;
use object::{Decoded, Identified, Watched};

/// At most this many watches list at once (at start, and when a watch must relist): each list
/// holds a page of objects in memory while it is decoded, and the next page fetched ahead
/// ([`prefetch`]).
const LISTS_IN_FLIGHT: usize = 4;
/// Objects per list page for the kinds that run pods (a Pod is several kilobytes of JSON).
const POD_PAGE: u32 = 100;
/// Objects per list page for the other kinds.
const PAGE: u32 = 500;
/// Objects per list page for CustomResourceDefinitions (each can be large).
const CRD_PAGE: u32 = 25;

/// Which policies a change can concern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Scope {
    /// Policies that govern this namespace.
    Namespace(String),
    /// Every policy (cluster-scoped objects, namespace labels, relists).
    Cluster,
}

fn in_namespace(key: &Key) -> Scope {
    Scope::Namespace(key.namespace.clone())
}

fn cluster_wide(_: &Key) -> Scope {
    Scope::Cluster
}

/// A CNI's DaemonSet decides NET-04 for every policy.
fn daemon_set_scope(key: &Key) -> Scope {
    if POLICY_CAPABLE_CNIS.contains(&key.name.as_str()) {
        Scope::Cluster
    } else {
        in_namespace(key)
    }
}

/// Changes not yet handed to the reconciler, coalesced.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Pending {
    pub all: bool,
    pub namespaces: BTreeSet<String>,
    /// When the oldest of these changes reached the index (for the detection latency).
    pub since: Option<Instant>,
}

/// The hand-over from the watches to the reconciler: watches record, the trigger stream takes.
#[derive(Default)]
pub(super) struct Changes {
    pending: Mutex<Pending>,
    notify: Notify,
}

impl Changes {
    fn record(&self, scope: Scope) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.since.get_or_insert_with(Instant::now);
            match scope {
                Scope::Cluster => {
                    pending.all = true;
                    pending.namespaces.clear();
                }
                Scope::Namespace(ns) if !pending.all => {
                    pending.namespaces.insert(ns);
                }
                Scope::Namespace(_) => {}
            }
        }
        self.notify.notify_one();
    }

    /// Waits for changes and takes all recorded so far.
    pub async fn next(&self) -> Pending {
        loop {
            self.notify.notified().await;
            let taken =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
            if taken.all || !taken.namespaces.is_empty() {
                return taken;
            }
        }
    }
}

/// What every watch task shares.
#[derive(Clone)]
pub(super) struct Watch {
    pub client: Client,
    pub index: Arc<RwLock<Index>>,
    pub changes: Arc<Changes>,
    pub metrics: Metrics,
    /// Bounds the lists in flight.
    pub lists: Arc<Semaphore>,
}

impl Watch {
    pub fn new(
        client: Client,
        index: Arc<RwLock<Index>>,
        changes: Arc<Changes>,
        metrics: Metrics,
    ) -> Self {
        Watch {
            client: prefetch::Prefetch::client(client),
            index,
            changes,
            metrics,
            lists: Arc::new(Semaphore::new(LISTS_IN_FLIGHT)),
        }
    }
}

/// How often the server's version is read again: a control-plane upgrade moves the admission's
/// `latest` (new checks), and workloads must be judged as the upgraded admission judges them.
const VERSION_REREAD: std::time::Duration = std::time::Duration::from_secs(300);

/// Records the server's minor version in the index: its PodSecurity admission's `latest`.
/// Unreadable, onus judges `latest` as the newest version it knows (and says so); a failed
/// re-read keeps what was read before. Returns whether the recorded version changed.
async fn read_server_version(watch: &Watch) -> bool {
    match watch.client.apiserver_version().await {
        Ok(info) => match podsecurity::server_minor(&info) {
            Some(minor) => {
                let mut index = write(&watch.index);
                if index.server_minor == Some(minor) {
                    return false;
                }
                info!(version = %info.git_version, "Pod Security latest is v1.{minor}, the server's");
                index.server_minor = Some(minor);
                // Every verdict judged at `latest` may move.
                index.touch("ServerVersion", None);
                true
            }
            None => {
                warn!(version = %info.git_version, "Unrecognised server version; Pod Security latest taken as the newest known");
                false
            }
        },
        Err(error) => {
            warn!(%error, "Cannot read the server version; Pod Security latest taken as the newest known");
            false
        }
    }
}

/// Reads the server's version again every [`VERSION_REREAD`]; a change re-evaluates everything.
async fn follow_server_version(watch: Watch) {
    loop {
        tokio::time::sleep(VERSION_REREAD).await;
        if read_server_version(&watch).await {
            watch.changes.record(Scope::Cluster);
        }
    }
}

pub(super) async fn watch_all(watch: Watch) {
    // Before the watches: no evaluation runs before they have synced.
    read_server_version(&watch).await;
    let version = follow_server_version(watch.clone()).boxed();
    macro_rules! watch {
        ($ty:ty, $project:expr, |$i:ident| $map:expr) => {
            watch_into::<$ty, $ty, _>(watch.clone(), Feed::new(|$i| $map, $project), in_namespace)
                .boxed()
        };
        ($ty:ty, $project:expr, |$i:ident| $map:expr, $scope:expr) => {
            watch_into::<$ty, $ty, _>(watch.clone(), Feed::new(|$i| $map, $project), $scope)
                .boxed()
        };
        // A kind that runs pods, decoded as its wire shape `$body`, feeding one or two maps.
        ($ty:ty as $body:ty, ($p1:expr, |$i1:ident| $m1:expr) $(, ($p2:expr, |$i2:ident| $m2:expr))?; $scope:expr) => {
            watch_into::<$ty, $body, _>(
                watch.clone(),
                (Feed::new(|$i1| $m1, $p1) $(, Feed::new(|$i2| $m2, $p2))?),
                $scope,
            )
            .boxed()
        };
    }
    // The largest lists first: the lists in flight are bounded and turns go in the order
    // asked, and the Pod list (the most objects, the largest) is the start's longest path.
    let watches = vec![
        watch!(Pod as PodObject, (facts::pod, |i| i.workloads_mut(WorkloadKind::Pod)),
            (facts::owned_pod, |i| &mut i.owned_pods); in_namespace),
        // A ReplicaSet a Deployment controls is no workload of its own, but its Pods roll up
        // through it; the same for Jobs and CronJobs (below).
        watch!(ReplicaSet as WorkloadObject, (facts::replica_set, |i| i.workloads_mut(WorkloadKind::ReplicaSet)), (facts::replica_set_owner, |i| &mut i.replica_set_owners); in_namespace),
        watch!(Deployment as WorkloadObject, (facts::deployment, |i| i.workloads_mut(WorkloadKind::Deployment)); in_namespace),
        // A namespace's labels decide which policies govern it: every policy may care.
        watch!(
            Namespace,
            facts::namespace,
            |i| &mut i.namespaces,
            cluster_wide
        ),
        watch!(NetworkPolicy, facts::network_policy, |i| &mut i
            .network_policies),
        watch!(ServiceAccount, facts::default_service_account, |i| &mut i
            .default_service_accounts),
        watch!(Service as Service, (facts::external_ips, |i| &mut i.external_ips),
            (facts::cluster_ips, |i| &mut i.service_ips); in_namespace),
        watch!(Role, facts::role, |i| &mut i.roles),
        watch!(
            ClusterRole,
            facts::cluster_role,
            |i| &mut i.cluster_roles,
            cluster_wide
        ),
        watch!(RoleBinding, facts::role_binding, |i| &mut i.role_bindings),
        watch!(
            ClusterRoleBinding,
            facts::cluster_role_binding,
            |i| &mut i.cluster_role_bindings,
            cluster_wide
        ),
        watch!(StatefulSet as WorkloadObject, (facts::stateful_set, |i| i.workloads_mut(WorkloadKind::StatefulSet)); in_namespace),
        watch!(DaemonSet as WorkloadObject, (facts::daemon_set, |i| i.workloads_mut(WorkloadKind::DaemonSet)); daemon_set_scope),
        watch!(Job as WorkloadObject, (facts::job, |i| i.workloads_mut(WorkloadKind::Job)), (facts::job_owner, |i| &mut i.job_owners); in_namespace),
        watch!(CronJob as WorkloadObject, (facts::cron_job, |i| i.workloads_mut(WorkloadKind::CronJob)); in_namespace),
        // What the API server calls back into: the default-deny gate.
        watch_backends::<ValidatingWebhookConfiguration, _>(
            watch.clone(),
            BackendKind::ValidatingWebhookConfiguration,
            backends::webhook_configuration,
        )
        .boxed(),
        watch_backends::<MutatingWebhookConfiguration, _>(
            watch.clone(),
            BackendKind::MutatingWebhookConfiguration,
            backends::webhook_configuration,
        )
        .boxed(),
        watch_backends::<CustomResourceDefinition, _>(
            watch.clone(),
            BackendKind::CustomResourceDefinition,
            backends::crd_conversion,
        )
        .boxed(),
        watch_backends::<APIService, _>(
            watch.clone(),
            BackendKind::APIService,
            backends::api_service,
        )
        .boxed(),
    ];
    // Each watch on a task of its own, so that lists decode on every core; the set aborts
    // them all when this future is dropped.
    let mut tasks = tokio::task::JoinSet::new();
    for watch in watches {
        tasks.spawn(watch);
    }
    tasks.spawn(version);
    while let Some(ended) = tasks.join_next().await {
        if let Err(e) = ended
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

fn key_of<P>(obj: &Watched<P>) -> Key {
    let meta = obj.meta();
    Key::new(
        meta.namespace.as_deref(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// The decoded body of one object; an undecodable object is logged, counted in
/// `onus_undecodable_objects_total` and skipped, never fatal: its error is returned, for the
/// status of the policies that govern it.
fn decoded<P>(
    metrics: &Metrics,
    kind: &'static str,
    key: &Key,
    obj: Watched<P>,
) -> Result<P, String> {
    match obj.body {
        Decoded::Ok(body) => Ok(body),
        Decoded::Bad(error) => {
            warn!(%kind, namespace = %key.namespace, name = %key.name, %error,
                  "Skipping undecodable object");
            metrics.undecodable(kind);
            Err(error.to_string())
        }
    }
}

/// Where the facts of one watched kind go.
trait Sink<K>: Copy + Send + 'static {
    /// Records an added or modified object. Returns whether the facts changed.
    fn apply(self, index: &mut Index, key: &Key, obj: &K) -> bool;
    /// Records a deleted object. Returns whether the facts changed.
    fn delete(self, index: &mut Index, key: &Key) -> bool;
    fn reset_start(self, index: &mut Index);
    fn reset_apply(self, index: &mut Index, key: &Key, obj: &K);
    /// An object of the list that could not be decoded: its last readable facts stay.
    fn reset_keep(self, index: &mut Index, key: &Key);
    /// Returns whether the facts changed.
    fn reset_done(self, index: &mut Index) -> bool;
}

/// One fact map and the projection that feeds it.
struct Feed<K, F> {
    map: fn(&mut Index) -> &mut FactMap<F>,
    project: fn(&K) -> Option<F>,
}

impl<K, F> Feed<K, F> {
    fn new(map: fn(&mut Index) -> &mut FactMap<F>, project: fn(&K) -> Option<F>) -> Self {
        Feed { map, project }
    }
}

// Function pointers are Copy whatever K and F are; a derive would demand K: Copy.
impl<K, F> Clone for Feed<K, F> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, F> Copy for Feed<K, F> {}

impl<K: 'static, F: PartialEq + Clone + Send + Sync + 'static> Sink<K> for Feed<K, F> {
    fn apply(self, index: &mut Index, key: &Key, obj: &K) -> bool {
        (self.map)(index).apply(key.clone(), (self.project)(obj))
    }
    fn delete(self, index: &mut Index, key: &Key) -> bool {
        (self.map)(index).delete(key)
    }
    fn reset_start(self, index: &mut Index) {
        (self.map)(index).reset_start();
    }
    fn reset_apply(self, index: &mut Index, key: &Key, obj: &K) {
        (self.map)(index).reset_apply(key.clone(), (self.project)(obj));
    }
    fn reset_keep(self, index: &mut Index, key: &Key) {
        (self.map)(index).reset_keep(key);
    }
    fn reset_done(self, index: &mut Index) -> bool {
        (self.map)(index).reset_done()
    }
}

/// Two fact maps fed by one watch; both always see every event (`|`, not `||`).
impl<K, A: Sink<K>, B: Sink<K>> Sink<K> for (A, B) {
    fn apply(self, index: &mut Index, key: &Key, obj: &K) -> bool {
        self.0.apply(index, key, obj) | self.1.apply(index, key, obj)
    }
    fn delete(self, index: &mut Index, key: &Key) -> bool {
        self.0.delete(index, key) | self.1.delete(index, key)
    }
    fn reset_start(self, index: &mut Index) {
        self.0.reset_start(index);
        self.1.reset_start(index);
    }
    fn reset_apply(self, index: &mut Index, key: &Key, obj: &K) {
        self.0.reset_apply(index, key, obj);
        self.1.reset_apply(index, key, obj);
    }
    fn reset_keep(self, index: &mut Index, key: &Key) {
        self.0.reset_keep(index, key);
        self.1.reset_keep(index, key);
    }
    fn reset_done(self, index: &mut Index) -> bool {
        self.0.reset_done(index) | self.1.reset_done(index)
    }
}

/// The watch of every object of kind `K`, decoded into `P`, listing in pages of `page`.
fn watch_stream<K, P>(
    client: Client,
    page: u32,
) -> futures::stream::BoxStream<'static, Result<Event<Watched<P>>, watcher::Error>>
where
    K: k8s_openapi::Resource + Resource<DynamicType = ()>,
    P: DeserializeOwned + Identified + Clone + Debug + Send + Sync + 'static,
{
    let api = Api::<Watched<P>>::all_with(client, &ApiResource::erase::<K>(&()));
    watcher(api, watcher::Config::default().page_size(page))
        .default_backoff()
        .boxed()
}

/// How long a watch the API server refuses (403) waits before it is started again from a fresh
/// list: a permission is given back by hand, not in milliseconds.
const REFUSED_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// The API server's message when it refuses onus a watch or list (403).
fn refusal(error: &watcher::Error) -> Option<String> {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s))
            if s.is_forbidden() =>
        {
            Some(s.message.clone())
        }
        watcher::Error::WatchError(s) if s.is_forbidden() => Some(s.message.clone()),
        _ => None,
    }
}

/// What a watch task shares with [`next_event`].
struct Step<'a, T> {
    kind: &'static str,
    metrics: &'a Metrics,
    lists: &'a Arc<Semaphore>,
    index: &'a Arc<RwLock<Index>>,
    changes: &'a Changes,
    /// A fresh stream of the same watch (its first list starts from scratch).
    restart: &'a (
            dyn Fn() -> futures::stream::BoxStream<'static, Result<Event<T>, watcher::Error>>
                + Send
                + Sync
        ),
    retrying: &'a str,
}

/// The next event of a watch, counted; before a list starts, waits for one of the
/// [`LISTS_IN_FLIGHT`] turns and holds it in `listing` until the caller sees the list done.
/// A failed watch is logged with `retrying` and retried by the stream's backoff. One the API
/// server refuses (403) marks its kind refused in the index (the policies say so in `Ready`;
/// the facts stay what onus last saw) and starts again from a fresh list after
/// [`REFUSED_RETRY`]: only a complete list clears the mark ([`list_complete`]).
async fn next_event<T>(
    events: &mut futures::stream::BoxStream<'static, Result<Event<T>, watcher::Error>>,
    step: &Step<'_, T>,
    listing: &mut Option<OwnedSemaphorePermit>,
) -> Option<Event<T>> {
    let kind = step.kind;
    loop {
        let event = match events.next().await? {
            Ok(event) => event,
            Err(error) => {
                warn!(%kind, %error, "{}", step.retrying);
                if let Some(message) = refusal(&error) {
                    let newly = write(step.index).refused.insert(kind, message).is_none();
                    if newly {
                        write(step.index).touch(kind, None);
                        step.changes.record(Scope::Cluster);
                    }
                    *listing = None;
                    tokio::time::sleep(REFUSED_RETRY).await;
                    *events = (step.restart)();
                }
                continue;
            }
        };
        step.metrics.watch_event(kind);
        if matches!(event, Event::Init) && listing.is_none() {
            // The watcher lists when next polled: wait for a turn first.
            *listing = step.lists.clone().acquire_owned().await.ok();
        }
        return Some(event);
    }
}

/// A list of `kind` is complete (its facts are current): a refusal of its watch is over.
fn list_complete(index: &Arc<RwLock<Index>>, changes: &Changes, kind: &'static str) {
    let mut guard = write(index);
    if guard.refused.remove(kind).is_some() {
        guard.touch(kind, None);
        drop(guard);
        info!(%kind, "Watch allowed again; its facts are current");
        changes.record(Scope::Cluster);
    }
}

/// Hands changes to the reconciler.
fn record(changes: &Changes, scopes: impl IntoIterator<Item = Scope>) {
    for scope in scopes {
        changes.record(scope);
    }
}

/// Watches every object of kind `K`, each decoded straight into `P` (so one bad object cannot
/// stall the stream, and no whole object is kept), projects each into facts and keeps the facts
/// in the index.
async fn watch_into<K, P, S>(watch: Watch, sink: S, scope: fn(&Key) -> Scope)
where
    K: k8s_openapi::Resource + Resource<DynamicType = ()>,
    P: DeserializeOwned + Identified + Clone + Debug + Send + Sync + 'static,
    S: Sink<P>,
{
    let Watch {
        client,
        index,
        changes,
        metrics,
        lists,
    } = watch;
    let kind = <K as k8s_openapi::Resource>::KIND;
    let page = if matches!(
        kind,
        "Pod" | "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "CronJob"
    ) {
        POD_PAGE
    } else {
        PAGE
    };
    let restart = || watch_stream::<K, P>(client.clone(), page);
    let mut events = restart();
    // Held from the start of a list (Init) until it is complete (InitDone).
    let mut listing: Option<OwnedSemaphorePermit> = None;
    let step = Step {
        kind,
        metrics: &metrics,
        lists: &lists,
        index: &index,
        changes: &changes,
        restart: &restart,
        retrying: "Watch failed; retrying",
    };
    while let Some(event) = next_event(&mut events, &step, &mut listing).await {
        let done = matches!(event, Event::InitDone);
        let changed = {
            let mut guard = write(&index);
            let facts = &mut *guard;
            let changed = match event {
                Event::Apply(obj) => {
                    let key = key_of(&obj);
                    let body = decoded(&metrics, kind, &key, obj);
                    // An undecodable object keeps its last readable facts, and the policies
                    // that govern it say that it could not be read.
                    let unknown = facts.undecodable.set(
                        kind,
                        &key,
                        body.as_ref().err().map(String::as_str),
                        false,
                    );
                    let applied = body.is_ok_and(|body| sink.apply(facts, &key, &body));
                    (applied || unknown).then(|| scope(&key))
                }
                Event::Delete(obj) => {
                    let key = key_of(&obj);
                    let unknown = facts.undecodable.delete(kind, &key);
                    (sink.delete(facts, &key) || unknown).then(|| scope(&key))
                }
                Event::Init => {
                    sink.reset_start(facts);
                    facts.undecodable.list_start(kind);
                    None
                }
                Event::InitApply(obj) => {
                    let key = key_of(&obj);
                    match decoded(&metrics, kind, &key, obj) {
                        Ok(body) => sink.reset_apply(facts, &key, &body),
                        Err(error) => {
                            // Its last readable facts stay, as after a watch event.
                            sink.reset_keep(facts, &key);
                            facts.undecodable.set(kind, &key, Some(&error), true);
                        }
                    }
                    None
                }
                Event::InitDone => {
                    let unknown = facts.undecodable.list_done(kind);
                    (sink.reset_done(facts) || unknown).then_some(Scope::Cluster)
                }
            };
            if changed.is_some() {
                guard.touch(
                    <K as k8s_openapi::Resource>::KIND,
                    match &changed {
                        Some(Scope::Namespace(ns)) => Some(ns.as_str()),
                        _ => None,
                    },
                );
            }
            changed
        };
        if done {
            listing = None;
            list_complete(&index, &changes, kind);
        }
        record(&changes, changed);
    }
}

/// Watches the objects of one kind that can point the API server at a Service, into
/// [`Index::backends`]. A change moves (and re-reconciles) exactly the namespaces the object
/// pointed into before and after; the first complete list concerns every namespace (until
/// then every default-deny is held).
async fn watch_backends<K, P>(
    watch: Watch,
    backend: BackendKind,
    project: fn(&P) -> Option<BackendFact>,
) where
    K: k8s_openapi::Resource + Resource<DynamicType = ()>,
    P: DeserializeOwned + Identified + Clone + Debug + Send + Sync + 'static,
{
    let Watch {
        client,
        index,
        changes,
        metrics,
        lists,
    } = watch;
    let kind = <K as k8s_openapi::Resource>::KIND;
    // A CRD can be hundreds of kilobytes of schema: small pages bound the list in memory.
    let page = if backend == BackendKind::CustomResourceDefinition {
        CRD_PAGE
    } else {
        PAGE
    };
    let restart = || watch_stream::<K, P>(client.clone(), page);
    let mut events = restart();
    let mut listing: Option<OwnedSemaphorePermit> = None;
    let step = Step {
        kind,
        metrics: &metrics,
        lists: &lists,
        index: &index,
        changes: &changes,
        restart: &restart,
        retrying: "Watch failed; retrying (default-deny stays held until it lists)",
    };
    while let Some(event) = next_event(&mut events, &step, &mut listing).await {
        let done = matches!(event, Event::InitDone);
        let mut cluster = false;
        let mut scopes: Vec<Scope> = {
            let mut guard = write(&index);
            let facts = &mut *guard;
            let moved = |facts: &mut Index, key: &Key, change: &dyn Fn(&mut Index) -> bool| {
                let before = facts.backend_namespaces(backend, key);
                if !change(facts) {
                    return Vec::new();
                }
                facts.backends.rebuild();
                let after = facts.backend_namespaces(backend, key);
                before.union(&after).cloned().collect::<Vec<_>>()
            };
            let touched: Option<Vec<String>> = match event {
                Event::Apply(obj) => {
                    let key = key_of(&obj);
                    let body = decoded(&metrics, kind, &key, obj).ok();
                    // An undecodable object holds every default-deny (its targets are
                    // unknown); its last readable facts stay too.
                    cluster |= facts
                        .backends
                        .set_readable(backend, &key, body.is_some(), false);
                    body.map(|body| {
                        let fact = project(&body);
                        moved(facts, &key, &|i: &mut Index| {
                            i.backends.map(backend).apply(key.clone(), fact.clone())
                        })
                    })
                }
                Event::Delete(obj) => {
                    let key = key_of(&obj);
                    cluster |= facts.backends.set_readable(backend, &key, true, false);
                    Some(moved(facts, &key, &|i: &mut Index| {
                        i.backends.map(backend).delete(&key)
                    }))
                }
                Event::Init => {
                    facts.backends.map(backend).reset_start();
                    facts.backends.unreadable_list_start(backend);
                    None
                }
                Event::InitApply(obj) => {
                    let key = key_of(&obj);
                    let body = decoded(&metrics, kind, &key, obj).ok();
                    facts
                        .backends
                        .set_readable(backend, &key, body.is_some(), true);
                    if let Some(body) = body {
                        facts.backends.map(backend).reset_apply(key, project(&body));
                    }
                    None
                }
                Event::InitDone => {
                    cluster |= facts.backends.unreadable_list_done(backend);
                    let first = !facts.backends.synced();
                    let before = facts.backing_namespaces();
                    let changed = facts.backends.map(backend).reset_done();
                    if changed {
                        facts.backends.rebuild();
                    }
                    if first && facts.backends.synced() {
                        // Every held namespace may be released from the "not listed yet" hold.
                        facts.touch(kind, None);
                        cluster = true;
                        None
                    } else {
                        let after = facts.backing_namespaces();
                        Some(if changed {
                            // Any namespace whose backends may differ (the sets alone miss a
                            // namespace that backs something else now).
                            before.union(&after).cloned().collect()
                        } else {
                            Vec::new()
                        })
                    }
                }
            };
            if cluster {
                // Every namespace's gate may have moved.
                facts.touch(kind, None);
            }
            let touched = touched.unwrap_or_default();
            for ns in &touched {
                facts.touch(kind, Some(ns));
            }
            touched.into_iter().map(Scope::Namespace).collect()
        };
        if done {
            listing = None;
            list_complete(&index, &changes, kind);
        }
        if cluster {
            scopes = vec![Scope::Cluster];
        }
        record(&changes, scopes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Key;
    use std::time::Duration;

    /// A mock API server: every kind lists empty but Pods (one readable, privileged bare Pod
    /// `ok` and one whose spec no Pod has, `bad`); the first watch of Pods turns `ok` into an
    /// undecodable object and deletes `bad`; other watches stay open and quiet. With `relist`,
    /// the second watch of Pods is gone (410), and the relist finds `ok` still undecodable;
    /// `pod_watches` counts the watches of Pods (the third starts once the relist is applied).
    fn api_server() -> Client {
        mock_api_server(false, Default::default())
    }

    fn mock_api_server(relist: bool, pod_watches: Arc<std::sync::atomic::AtomicUsize>) -> Client {
        use axum::{
            body::Bytes,
            http::{Request, Response},
        };
        use http_body_util::Full;
        use serde_json::json;
        use std::sync::atomic::{AtomicBool, Ordering};

        let pod = |name: &str, rv: &str, spec: serde_json::Value| {
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "namespace": "shop", "resourceVersion": rv},
                   "spec": spec})
        };
        let privileged = json!({"containers": [
            {"name": "app", "image": "app", "securityContext": {"privileged": true}}]});
        let list = json!({"apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": "10"},
            "items": [pod("ok", "9", privileged), pod("bad", "8", json!({"containers": "oops"}))]});
        // As the API server writes them: "type" first (the objects are taken as raw JSON,
        // which serde can do when the tag comes before the content).
        let events = [
            ("MODIFIED", pod("ok", "11", json!({"containers": 7}))),
            ("DELETED", pod("bad", "12", json!({"containers": "oops"}))),
        ]
        .iter()
        .map(|(kind, object)| format!("{{\"type\":\"{kind}\",\"object\":{object}}}\n"))
        .collect::<String>();
        let relisted = json!({"apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": "20"},
            "items": [pod("ok", "11", json!({"containers": 7}))]});
        let gone = "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\",\
                    \"status\":\"Failure\",\"reason\":\"Expired\",\"message\":\"too old\",\
                    \"code\":410}}\n";
        let watched = Arc::new(AtomicBool::new(false));
        let expired = Arc::new(AtomicBool::new(!relist));
        let lists = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let uri = request.uri().to_string();
            let (list, events, watched) = (list.clone(), events.clone(), watched.clone());
            let (relisted, expired) = (relisted.clone(), expired.clone());
            let (lists, pod_watches) = (lists.clone(), pod_watches.clone());
            async move {
                let pods = uri.starts_with("/api/v1/pods");
                let body = if uri.starts_with("/version") {
                    json!({"major": "1", "minor": "37", "gitVersion": "v1.37.2",
                           "gitCommit": "", "gitTreeState": "", "buildDate": "",
                           "goVersion": "", "compiler": "", "platform": ""})
                    .to_string()
                } else if uri.contains("watch=") {
                    if pods {
                        pod_watches.fetch_add(1, Ordering::SeqCst);
                    }
                    if pods && !watched.swap(true, Ordering::SeqCst) {
                        events
                    } else if pods && !expired.swap(true, Ordering::SeqCst) {
                        gone.to_string()
                    } else {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        String::new()
                    }
                } else if pods {
                    if lists.fetch_add(1, Ordering::SeqCst) == 0 {
                        list.to_string()
                    } else {
                        relisted.to_string()
                    }
                } else {
                    json!({"apiVersion": "v1", "kind": "List",
                           "metadata": {"resourceVersion": "10"}, "items": []})
                    .to_string()
                };
                Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .map_err(tower::BoxError::from)
            }
        });
        Client::new(service, "default")
    }

    /// Polls the index until `done` holds (5 s at most).
    async fn until(index: &Arc<RwLock<Index>>, what: &str, done: impl Fn(&Index) -> bool) {
        for _ in 0..500 {
            if done(&super::super::read(index)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}: {:#?}", super::super::read(index).undecodable);
    }

    #[tokio::test]
    async fn an_undecodable_object_is_recorded_until_it_goes_and_keeps_its_last_facts() {
        let index = Arc::new(RwLock::new(Index::default()));
        let watch = Watch::new(
            api_server(),
            index.clone(),
            Arc::new(Changes::default()),
            Metrics::new(),
        );
        let watching = tokio::spawn(watch_all(watch));
        let names = |i: &Index| -> Vec<(String, String)> {
            i.undecodable
                .iter()
                .map(|(kind, key, _)| (kind.to_string(), key.name.clone()))
                .collect()
        };
        let pod = |i: &Index, name: &str| {
            i.workloads
                .get(&WorkloadKind::Pod)
                .and_then(|m| m.get(&Key::new(Some("shop"), name)).cloned())
        };
        // The list: `bad` is recorded with why, `ok` is a fact; then the watch turns `ok`
        // undecodable (its last facts stay: privileged) and deletes `bad`.
        until(&index, "bad, then ok, undecodable", |i| {
            names(i) == [("Pod".to_string(), "ok".to_string())]
        })
        .await;
        let i = super::super::read(&index);
        let why: Vec<&str> = i.undecodable.iter().map(|(_, _, why)| why).collect();
        assert!(why[0].contains("invalid type"), "{why:?}");
        let ok = pod(&i, "ok").expect("the last readable facts of ok stay");
        assert!(
            ok.failing_controls(
                crate::crd::PodSecurityLevel::Baseline,
                crate::podsecurity::Version::Latest
            )
            .contains("WKL-03"),
            "{ok:?}"
        );
        assert!(pod(&i, "bad").is_none());
        drop(i);
        watching.abort();
    }

    #[tokio::test]
    async fn a_relist_keeps_the_last_readable_facts_of_an_object_still_undecodable() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let index = Arc::new(RwLock::new(Index::default()));
        let watches = Arc::new(AtomicUsize::new(0));
        let watch = Watch::new(
            mock_api_server(true, watches.clone()),
            index.clone(),
            Arc::new(Changes::default()),
            Metrics::new(),
        );
        let watching = tokio::spawn(watch_all(watch));
        // The privileged `ok` turns undecodable, then the watch is gone and the relist finds
        // it still undecodable: its last readable facts (privileged) must stay, as they do
        // after the watch event; a relist must not make a violation vanish.
        // The third watch of Pods starts once the relist's InitDone is applied.
        for _ in 0..1000 {
            if watches.load(Ordering::SeqCst) >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(watches.load(Ordering::SeqCst) >= 3, "no relist");
        let i = super::super::read(&index);
        let names: Vec<&str> = i
            .undecodable
            .iter()
            .map(|(_, k, _)| k.name.as_str())
            .collect();
        assert_eq!(names, ["ok"]);
        let ok = i
            .workloads
            .get(&WorkloadKind::Pod)
            .and_then(|m| m.get(&Key::new(Some("shop"), "ok")).cloned())
            .expect("the last readable facts of ok stay after the relist");
        assert!(
            ok.failing_controls(
                crate::crd::PodSecurityLevel::Baseline,
                crate::podsecurity::Version::Latest
            )
            .contains("WKL-03"),
            "{ok:?}"
        );
        drop(i);
        watching.abort();
    }

    #[tokio::test]
    async fn changes_coalesce_and_a_cluster_wide_change_covers_all() {
        let changes = Changes::default();
        changes.record(Scope::Namespace("a".into()));
        changes.record(Scope::Namespace("b".into()));
        changes.record(Scope::Namespace("a".into()));
        let batch = changes.next().await;
        assert_eq!(batch.namespaces.into_iter().collect::<Vec<_>>(), ["a", "b"]);
        let before = Instant::now();
        changes.record(Scope::Namespace("c".into()));
        changes.record(Scope::Cluster);
        let batch = changes.next().await;
        assert!(batch.all);
        assert!(batch.namespaces.is_empty());
        // The batch remembers its oldest change, for the detection latency.
        let since = batch.since.expect("when the batch began");
        assert!(since >= before && since <= Instant::now());
    }
}
