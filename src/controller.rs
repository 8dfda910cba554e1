//! The thin I/O shell: watches feed the index, a kube-runtime controller re-evaluates policies
//! when the index changes (or an exception expires) and patches status only when it changed.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    fmt::Debug,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use futures::{FutureExt, StreamExt, future::join_all};
use jiff::Timestamp;
use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
        batch::v1::{CronJob, Job},
        core::v1::{Namespace, Pod, Service, ServiceAccount},
        networking::v1::NetworkPolicy,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Event as KubeEvent, EventType, Recorder, Reporter},
        reflector::Store,
        watcher::{self, Event},
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::{debug, info, instrument, warn};

use crate::{
    FIELD_MANAGER,
    crd::{Mode, ResponsibilityPolicy, ResponsibilityPolicyStatus},
    enforce,
    evaluate::{Evaluation, Violation, evaluate},
    facts::{self, WorkloadKind},
    http::Readiness,
    index::{FactMap, Index, Key},
    metrics::Metrics,
    remediate::{self, PlanMode},
    status::{self, COMPLIANT, READY},
    validate::validate,
};

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("patching status: {0}")]
    PatchStatus(#[source] kube::Error),
    #[error("serializing status: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("{action}: {source}")]
    Remediate {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating finalizers: {0}")]
    Finalizer(#[source] kube::Error),
}

impl Error {
    /// A bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::PatchStatus(_) => "patch_status",
            Error::Serialize(_) => "serialize",
            Error::Remediate { .. } => "remediate",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// Where "now" comes from; injected so tests can move time.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Shared state of the reconciler.
pub struct Context {
    client: Client,
    index: Arc<RwLock<Index>>,
    clock: Clock,
    recorder: Recorder,
    /// Exceptions whose expiry was already announced with an Event (policy uid, index, expiry).
    announced: Mutex<HashSet<(String, usize, i64)>>,
    /// Every policy this instance serves (Enforce merges them all).
    policies: Store<ResponsibilityPolicy>,
    /// One convergence at a time: it plans from the whole index.
    converging: tokio::sync::Mutex<()>,
    metrics: Metrics,
    /// When the oldest index change not yet reflected in a status write happened.
    first_unreported_change: Arc<Mutex<Option<Instant>>>,
    /// Policies with metric series, to forget the deleted ones.
    recorded: Mutex<BTreeSet<String>>,
    /// Violations already announced with an Event on the offending object, per policy.
    announced_violations: Mutex<HashMap<String, BTreeSet<(&'static str, Violation)>>>,
}

/// Aborts a spawned task when dropped, so nothing outlives `run` however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often a policy is evaluated when nothing triggers it.
const RESYNC: Duration = Duration::from_secs(300);

/// Finalizer on Enforce policies: onus removes what it applied before the policy goes.
pub const FINALIZER: &str = "onus.dev/cleanup";

/// Settings of the operator.
#[derive(Clone)]
pub struct Settings {
    /// Reporter name on Events.
    pub instance: String,
    pub clock: Clock,
    /// Only reconcile policies matching this label selector (several onus instances, tests).
    pub policy_selector: Option<String>,
    pub metrics: Metrics,
    pub readiness: Readiness,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            instance: "onus".into(),
            clock: Arc::new(Timestamp::now),
            policy_selector: None,
            metrics: Metrics::default(),
            readiness: Readiness::default(),
        }
    }
}

fn read(index: &RwLock<Index>) -> std::sync::RwLockReadGuard<'_, Index> {
    index.read().unwrap_or_else(|p| p.into_inner())
}

fn write(index: &RwLock<Index>) -> std::sync::RwLockWriteGuard<'_, Index> {
    index.write().unwrap_or_else(|p| p.into_inner())
}

/// Runs the operator until `shutdown` completes.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let index = Arc::new(RwLock::new(Index::default()));
    let (changed_tx, mut changed_rx) = mpsc::channel::<()>(1);
    let first_change = Arc::new(Mutex::new(None));
    let watch = Watch {
        client: client.clone(),
        index: index.clone(),
        changed: changed_tx,
        metrics: settings.metrics.clone(),
        first_change: first_change.clone(),
    };
    let _watches = AbortOnDrop(tokio::spawn(watch_all(watch)));

    // Evaluating before every watch has listed would report false violations.
    while !synced(&read(&index)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    info!("Caches synced");
    settings.readiness.set_synced(true);

    let triggers = futures::stream::poll_fn(move |cx| changed_rx.poll_recv(cx));
    let policies = match &settings.policy_selector {
        Some(selector) => watcher::Config::default().labels(selector),
        None => watcher::Config::default(),
    };
    let controller = Controller::new(Api::<ResponsibilityPolicy>::all(client.clone()), policies);
    let ctx = Arc::new(Context {
        client: client.clone(),
        index,
        clock: settings.clock.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "onus".into(),
                instance: Some(settings.instance.clone()),
            },
        ),
        announced: Mutex::new(HashSet::new()),
        policies: controller.store(),
        converging: tokio::sync::Mutex::new(()),
        metrics: settings.metrics.clone(),
        first_unreported_change: first_change,
        recorded: Mutex::new(BTreeSet::new()),
        announced_violations: Mutex::new(HashMap::new()),
    });
    controller
        .reconcile_all_on(triggers)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((policy, _)) => debug!(policy = %policy.name, "Reconciled"),
                Err(error) => warn!(%error, "Reconcile failed"),
            }
        })
        .await;
    settings.readiness.set_synced(false);
}

fn synced(index: &Index) -> bool {
    index.namespaces.synced()
        && index.network_policies.synced()
        && index.default_service_accounts.synced()
        && index.external_ips.synced()
        && index.roles.synced()
        && index.cluster_roles.synced()
        && index.role_bindings.synced()
        && index.cluster_role_bindings.synced()
        && WORKLOAD_KINDS
            .iter()
            .all(|k| index.workloads.get(k).is_some_and(FactMap::synced))
}

const WORKLOAD_KINDS: [WorkloadKind; 7] = [
    WorkloadKind::Deployment,
    WorkloadKind::StatefulSet,
    WorkloadKind::DaemonSet,
    WorkloadKind::ReplicaSet,
    WorkloadKind::Job,
    WorkloadKind::CronJob,
    WorkloadKind::Pod,
];

/// What every watch task shares.
#[derive(Clone)]
struct Watch {
    client: Client,
    index: Arc<RwLock<Index>>,
    changed: mpsc::Sender<()>,
    metrics: Metrics,
    first_change: Arc<Mutex<Option<Instant>>>,
}

async fn watch_all(watch: Watch) {
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

use kube::runtime::watcher::watcher;

#[instrument(skip_all, fields(policy = %policy.name_any()))]
async fn reconcile(policy: Arc<ResponsibilityPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let mut timer = ctx.metrics.reconcile_timer();
    let action = reconcile_inner(&policy, &ctx).await?;
    timer.succeeded();
    Ok(action)
}

async fn reconcile_inner(policy: &ResponsibilityPolicy, ctx: &Context) -> Result<Action, Error> {
    let deleting = policy.metadata.deletion_timestamp.is_some();
    let has_finalizer = policy.finalizers().iter().any(|f| f == FINALIZER);
    let enforcing = policy.spec.mode == Mode::Enforce;
    if enforcing && !deleting && !has_finalizer {
        // Added first, so a deletion can never outrun the clean-up; the update re-triggers us.
        return set_finalizer(&ctx.client, policy, true).await;
    }
    converge(ctx).await?;
    if has_finalizer && (deleting || !enforcing) {
        return set_finalizer(&ctx.client, policy, false).await;
    }
    if deleting {
        return Ok(Action::await_change());
    }

    let now = (ctx.clock)();
    let now_time = Time(now.round(jiff::Unit::Second).unwrap_or(now));
    let previous = policy.status.as_ref();
    let generation = policy.metadata.generation;

    let (desired, requeue) = match validate(&policy.spec) {
        Err(message) => (
            status::invalid(&message, generation, previous, &now_time),
            None,
        ),
        Ok(()) => {
            let (eval, preview) = {
                let index = read(&ctx.index);
                (
                    evaluate(&policy.spec, &index, now),
                    remediate::preview(policy, &index),
                )
            };
            announce_expired(ctx, policy, &eval.expired_exceptions).await;
            announce_violations(ctx, policy, &eval).await;
            let requeue = eval.next_expiry.map(|t| {
                let wait = t.duration_since(now).unsigned_abs();
                // Wake just after the expiry so it has passed when we look.
                wait + Duration::from_millis(50)
            });
            let status = status::evaluated(
                &eval,
                &preview,
                policy.spec.mode,
                generation,
                previous,
                &now_time,
            );
            (status, requeue)
        }
    };

    let name = policy.name_any();
    ctx.metrics.record_policy(
        &name,
        &desired,
        crate::metrics::expiring_soon(&policy.spec, now),
    );
    ctx.recorded
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name);
    if previous != Some(&desired) {
        patch_status(&ctx.client, policy, &desired).await?;
        let change = ctx
            .first_unreported_change
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(since) = change {
            ctx.metrics.detection_latency(since.elapsed());
        }
        publish_transitions(ctx, policy, previous, &desired).await;
    }
    // A periodic look even when nothing changes: a safety net for missed events, and proof of
    // life for the "not reconciling" alert. Status is idempotent, so it writes nothing.
    Ok(Action::requeue(requeue.map_or(RESYNC, |r| r.min(RESYNC))))
}

async fn set_finalizer(
    client: &Client,
    policy: &ResponsibilityPolicy,
    present: bool,
) -> Result<Action, Error> {
    let mut finalizers: Vec<String> = policy
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(FINALIZER.into());
    }
    // resourceVersion makes this a compare-and-swap with other writers of the list.
    let patch = serde_json::json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": policy.resource_version(),
    }});
    Api::<ResponsibilityPolicy>::all(client.clone())
        .patch(
            &policy.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Error::Finalizer)?;
    Ok(Action::await_change())
}

/// Brings the cluster to what all Enforce policies want together, and gives up what none wants.
async fn converge(ctx: &Context) -> Result<(), Error> {
    let _one_at_a_time = ctx.converging.lock().await;
    let policies = ctx.policies.state();
    forget_deleted(ctx, &policies);
    let actions = {
        let index = read(&ctx.index);
        let valid = policies
            .iter()
            .filter(|p| validate(&p.spec).is_ok())
            .map(|p| p.as_ref());
        let wants = remediate::wants(valid, &index, false);
        remediate::plan(&wants, &index, PlanMode::Converge)
    };
    for action in &actions {
        let what = enforce::describe(action);
        enforce::execute(&ctx.client, action)
            .await
            .map_err(|source| Error::Remediate {
                action: what.clone(),
                source,
            })?;
        info!(namespace = action.namespace(), "Remediation: {what}");
        let reason = enforce::reason(action);
        let type_ = if reason.ends_with("Restored") {
            EventType::Warning
        } else {
            EventType::Normal
        };
        // The namespace as related object keeps Events of different namespaces apart.
        let namespace = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(action.namespace().to_string()),
                ..Default::default()
            },
            ..Default::default()
        }
        .object_ref(&());
        let served = enforce::policies(action);
        for policy in policies.iter().filter(|p| served.contains(&p.name_any())) {
            let event = KubeEvent {
                type_,
                reason: reason.into(),
                note: Some(what.clone()),
                action: "Remediate".into(),
                secondary: Some(namespace.clone()),
            };
            publish_event(ctx, &event, &policy.object_ref(&())).await;
        }
        if served.is_empty() {
            let event = KubeEvent {
                type_,
                reason: reason.into(),
                note: Some(what.clone()),
                action: "Remediate".into(),
                secondary: None,
            };
            publish_event(ctx, &event, &namespace).await;
        }
    }
    Ok(())
}

/// Drops the metric series of policies that no longer exist.
fn forget_deleted(ctx: &Context, policies: &[Arc<ResponsibilityPolicy>]) {
    let live: BTreeSet<String> = policies.iter().map(|p| p.name_any()).collect();
    let mut recorded = ctx.recorded.lock().unwrap_or_else(|p| p.into_inner());
    for gone in recorded.difference(&live) {
        ctx.metrics.forget_policy(gone);
    }
    recorded.retain(|name| live.contains(name));
}

async fn patch_status(
    client: &Client,
    policy: &ResponsibilityPolicy,
    status: &ResponsibilityPolicyStatus,
) -> Result<(), Error> {
    let api = Api::<ResponsibilityPolicy>::all(client.clone());
    let patch = serde_json::json!({
        "apiVersion": ResponsibilityPolicy::api_version(&()),
        "kind": ResponsibilityPolicy::kind(&()),
        "status": serde_json::to_value(status)?,
    });
    api.patch_status(
        &policy.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::PatchStatus)?;
    Ok(())
}

async fn publish(
    ctx: &Context,
    policy: &ResponsibilityPolicy,
    type_: EventType,
    reason: &str,
    note: String,
) {
    publish_on(ctx, &policy.object_ref(&()), type_, reason, note).await;
}

async fn publish_on(
    ctx: &Context,
    object: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Evaluate".into(),
        secondary: None,
    };
    publish_event(ctx, &event, object).await;
}

async fn publish_event(
    ctx: &Context,
    event: &KubeEvent,
    object: &k8s_openapi::api::core::v1::ObjectReference,
) {
    if let Err(error) = ctx.recorder.publish(event, object).await {
        warn!(%error, reason = %event.reason, "Publishing event failed");
    }
}

/// Events for condition changes users care about.
async fn publish_transitions(
    ctx: &Context,
    policy: &ResponsibilityPolicy,
    previous: Option<&ResponsibilityPolicyStatus>,
    desired: &ResponsibilityPolicyStatus,
) {
    let changed = |type_: &str| {
        let new = status::condition(desired, type_)?;
        let old = previous.and_then(|p| status::condition(p, type_));
        (old.map(|o| (&o.status, &o.reason)) != Some((&new.status, &new.reason))).then_some(new)
    };
    if let Some(ready) = changed(READY).filter(|c| c.status == "False") {
        publish(
            ctx,
            policy,
            EventType::Warning,
            "InvalidSpec",
            ready.message.clone(),
        )
        .await;
    }
    if let Some(compliant) = changed(COMPLIANT) {
        let (type_, reason) = if compliant.status == "True" {
            (EventType::Normal, "Compliant")
        } else {
            (EventType::Warning, "ViolationsFound")
        };
        publish(ctx, policy, type_, reason, compliant.message.clone()).await;
    }
}

/// At most this many new violation Events per reconcile; the rest follow on later ones.
const MAX_VIOLATION_EVENTS: usize = 20;

/// The API group/version of a kind that can be an offender.
fn api_version_of(kind: &str) -> &'static str {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => "apps/v1",
        "Job" | "CronJob" => "batch/v1",
        "NetworkPolicy" => "networking.k8s.io/v1",
        "RoleBinding" | "ClusterRoleBinding" => "rbac.authorization.k8s.io/v1",
        _ => "v1",
    }
}

/// A Warning Event on each newly failing object, so namespace owners see it with
/// `kubectl get events -n <namespace>` (once per object, control and policy per process).
async fn announce_violations(ctx: &Context, policy: &ResponsibilityPolicy, eval: &Evaluation) {
    let current: BTreeSet<(&'static str, Violation)> = eval
        .outcomes
        .iter()
        .filter(|o| o.result == crate::crd::ControlResult::Fail)
        .flat_map(|o| o.violations.iter().map(|v| (o.control.id, v.clone())))
        .collect();
    let name = policy.name_any();
    let fresh: Vec<(&'static str, Violation)> = {
        let mut announced = ctx
            .announced_violations
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let seen = announced.entry(name.clone()).or_default();
        // Fixed violations are forgotten, so they are announced again if they come back.
        seen.retain(|v| current.contains(v));
        let fresh: Vec<_> = current
            .difference(seen)
            .take(MAX_VIOLATION_EVENTS)
            .cloned()
            .collect();
        seen.extend(fresh.iter().cloned());
        fresh
    };
    for (control, v) in fresh {
        let title = crate::catalog::control_by_id(control).map_or("", |c| c.title);
        let object = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(api_version_of(&v.kind).into()),
            kind: Some(v.kind.clone()),
            name: Some(v.name.clone()),
            namespace: v
                .namespace
                .clone()
                .filter(|_| v.kind != "Namespace" && v.kind != "ClusterRoleBinding"),
            ..Default::default()
        };
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: "PolicyViolation".into(),
            note: Some(format!(
                "{control} ({title}) fails ResponsibilityPolicy {name}: {}",
                v.example
            )),
            // One Event per control: the recorder folds Events with the same action together.
            action: format!("Check{}", control.replace('-', "")),
            secondary: Some(policy.object_ref(&())),
        };
        publish_event(ctx, &event, &object).await;
    }
}

/// One Event per expired exception (per operator process).
async fn announce_expired(ctx: &Context, policy: &ResponsibilityPolicy, expired: &[usize]) {
    let uid = policy.uid().unwrap_or_default();
    for &i in expired {
        let Some(exception) = policy.spec.exceptions.get(i) else {
            continue;
        };
        let at = exception.expires.as_ref().map_or(0, |t| t.0.as_second());
        let fresh = ctx
            .announced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((uid.clone(), i, at));
        if fresh {
            let note = format!(
                "exception {i} for {} expired; its violations count again (reason was: {})",
                exception.controls.join(", "),
                exception.reason
            );
            publish(ctx, policy, EventType::Warning, "ExceptionExpired", note).await;
        }
    }
}

fn error_policy(policy: Arc<ResponsibilityPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error(error.category());
    warn!(policy = %policy.name_any(), category = error.category(), %error, "Reconcile error");
    Action::requeue(Duration::from_secs(5))
}
