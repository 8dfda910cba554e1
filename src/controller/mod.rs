//! The thin I/O shell: watches feed the index, a kube-runtime controller re-evaluates policies
//! when the index changes (or an exception expires) and patches status only when it changed.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::{api::core::v1::Namespace, apimachinery::pkg::apis::meta::v1::Time};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Event as KubeEvent, EventType, Recorder, Reporter},
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tracing::{debug, info, instrument, warn};

use crate::{
    FIELD_MANAGER,
    crd::{Mode, ResponsibilityPolicy, ResponsibilityPolicyStatus},
    enforce,
    evaluate::{Violation, evaluate},
    facts::WorkloadKind,
    http::Readiness,
    index::{FactMap, Index},
    metrics::Metrics,
    remediate::{self, PlanMode},
    status,
    validate::validate,
};

mod events;
mod watch;

use events::{announce_expired, announce_violations, publish_event, publish_transitions};
use watch::{Changes, Pending, Watch, watch_all};

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
    /// One convergence at a time: it plans from the whole index. Holds the index generation
    /// of the last plan and the actions carried out for it: until the watches report the
    /// result, the same plan must not be carried out (and announced) again.
    converging: tokio::sync::Mutex<(u64, Vec<remediate::Action>)>,
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
    let changes = Arc::new(Changes::default());
    let first_change = Arc::new(Mutex::new(None));
    let watch = Watch {
        client: client.clone(),
        index: index.clone(),
        changes: changes.clone(),
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

    let policies = match &settings.policy_selector {
        Some(selector) => watcher::Config::default().labels(selector),
        None => watcher::Config::default(),
    };
    let controller = Controller::new(Api::<ResponsibilityPolicy>::all(client.clone()), policies);
    let store = controller.store();
    let trigger_index = index.clone();
    // Each batch of changes reconciles only the policies it can concern.
    let triggers = futures::stream::unfold(changes, move |changes| {
        let store = store.clone();
        let index = trigger_index.clone();
        async move {
            let pending = changes.next().await;
            let refs = affected(&store.state(), &read(&index), &pending);
            Some((futures::stream::iter(refs), changes))
        }
    })
    .flatten();
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
        converging: tokio::sync::Mutex::new((u64::MAX, Vec::new())),
        metrics: settings.metrics.clone(),
        first_unreported_change: first_change,
        recorded: Mutex::new(BTreeSet::new()),
        announced_violations: Mutex::new(HashMap::new()),
    });
    controller
        .reconcile_on(triggers)
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

const WORKLOAD_KINDS: [WorkloadKind; 7] = [
    WorkloadKind::Deployment,
    WorkloadKind::StatefulSet,
    WorkloadKind::DaemonSet,
    WorkloadKind::ReplicaSet,
    WorkloadKind::Job,
    WorkloadKind::CronJob,
    WorkloadKind::Pod,
];

/// The policies a batch of changes can concern: all of them for a cluster-wide change,
/// otherwise those governing a changed namespace.
fn affected(
    policies: &[Arc<ResponsibilityPolicy>],
    index: &Index,
    pending: &Pending,
) -> Vec<ObjectRef<ResponsibilityPolicy>> {
    policies
        .iter()
        .filter(|p| {
            pending.all
                || pending.namespaces.iter().any(|ns| {
                    let labels = index
                        .namespaces
                        .get(&crate::index::Key::new(None, ns))
                        .map(|f| &f.labels);
                    labels.is_some_and(|l| crate::evaluate::governs(&p.spec, ns, l))
                })
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
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
    let mut done = ctx.converging.lock().await;
    let policies = ctx.policies.state();
    forget_deleted(ctx, &policies);
    let (generation, mut actions) = {
        let index = read(&ctx.index);
        let valid = policies
            .iter()
            .filter(|p| validate(&p.spec).is_ok())
            .map(|p| p.as_ref());
        let wants = remediate::wants(valid, &index, false);
        (
            index.generation,
            remediate::plan(&wants, &index, PlanMode::Converge),
        )
    };
    if done.0 == generation {
        actions.retain(|a| !done.1.contains(a));
    } else {
        *done = (generation, Vec::new());
    }
    let mut first_error = None;
    for action in &actions {
        let what = enforce::describe(action);
        // One failing namespace must not hold up the others: go on, report the first error.
        if let Err(source) = enforce::execute(&ctx.client, action).await {
            warn!(namespace = action.namespace(), %source, "Remediation failed: {what}");
            first_error.get_or_insert(Error::Remediate {
                action: what,
                source,
            });
            continue;
        }
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
        done.1.push(action.clone());
    }
    first_error.map_or(Ok(()), Err)
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

fn error_policy(policy: Arc<ResponsibilityPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error(error.category());
    warn!(policy = %policy.name_any(), category = error.category(), %error, "Reconcile error");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{facts::NamespaceFact, index::Key};

    fn policy(name: &str, selector: serde_json::Value) -> Arc<ResponsibilityPolicy> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
                "metadata": {"name": name},
                "spec": {"serviceModel": "PaaS", "namespaceSelector": selector},
            }))
            .expect("policy"),
        )
    }

    fn names(refs: Vec<ObjectRef<ResponsibilityPolicy>>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn a_namespaced_change_reconciles_only_the_policies_governing_it() {
        let mut index = Index::default();
        for (ns, env) in [("shop", "prod"), ("lab", "dev")] {
            let labels = [("env".to_string(), env.to_string())].into();
            index.namespaces.apply(
                Key::new(None, ns),
                Some(NamespaceFact {
                    labels,
                    ..Default::default()
                }),
            );
        }
        let policies = [
            policy("prod", serde_json::json!({"matchLabels": {"env": "prod"}})),
            policy("dev", serde_json::json!({"matchLabels": {"env": "dev"}})),
        ];
        let shop = Pending {
            all: false,
            namespaces: ["shop".to_string()].into(),
        };
        assert_eq!(names(affected(&policies, &index, &shop)), ["prod"]);
        let everything = Pending {
            all: true,
            namespaces: BTreeSet::new(),
        };
        assert_eq!(
            names(affected(&policies, &index, &everything)),
            ["prod", "dev"]
        );
    }
}
