//! The thin I/O shell: watches feed the index, a kube-runtime controller re-evaluates policies
//! when the index changes (or an exception expires) and patches status only when it changed.
//!
//! Every instance watches and evaluates (standbys are warm); only the leader writes. Its
//! reconciles, convergences and Event publishing run through [`Leadership::run`], so losing the
//! Lease drops whatever write is in flight; winning it reconciles every policy from the warm
//! caches at once.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::{debug, info, instrument, warn};

use crate::{
    FIELD_MANAGER,
    crd::{Mode, ResponsibilityPolicy, ResponsibilityPolicyStatus},
    evaluate::Evaluator,
    facts::WorkloadKind,
    http::Readiness,
    index::{FactMap, Index},
    leader::Leadership,
    metrics::Metrics,
    remediate, status,
    validate::validate,
};

mod converge;
mod events;
pub mod prevent;
mod reports;
mod watch;

pub use reports::{
    DEFAULT_MAX_RESULTS, POLICY_UID_LABEL, RELIST as REPORT_RELIST,
    RELIST_RANGE as REPORT_RELIST_RANGE, ReportApi, ReportSettings, report_name,
};

use events::{announce_expired, announce_violations, publish_transitions};
use watch::{Changes, Pending, Watch, watch_all};

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("patching status: {0}")]
    PatchStatus(#[source] kube::Error),
    #[error("serializing status: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("updating finalizers: {0}")]
    Finalizer(#[source] kube::Error),
}

impl Error {
    /// A bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::PatchStatus(_) => "patch_status",
            Error::Serialize(_) => "serialize",
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
    converging: tokio::sync::Mutex<converge::Converger>,
    metrics: Metrics,
    /// Per policy, when the oldest change that triggered it and is not yet reflected in a
    /// status write reached the index (the detection latency).
    unreported: Arc<Mutex<HashMap<String, Instant>>>,
    /// Policies with metric series, to forget the deleted ones.
    recorded: Mutex<BTreeSet<String>>,
    /// Violations announced with an Event on the offending object, per policy.
    announced_violations: events::ViolationEvents,
    /// Incremental evaluation: what did not change since the last evaluation is reused.
    evaluator: Mutex<Evaluator>,
    /// Remediation previews, per namespace and want (shared by the policies asking the same).
    previews: Mutex<remediate::Previews>,
    /// [`Settings::audit_only`]: nothing is remediated.
    audit_only: bool,
    /// [`Settings::admission_policies`] on an install that may write: ValidatingAdmissionPolicies
    /// are generated.
    admission: bool,
    /// onus's own user name (exempt from the admission policies it generates), when known.
    own_user: Option<String>,
    /// Policies to reconcile by name: those whose generated admission objects someone else
    /// changed, or whose admission status a pass changed (a retry, or another policy's
    /// reconcile, ran it), so their status follows.
    wake: tokio::sync::mpsc::UnboundedSender<String>,
    /// Whether this instance may write.
    leadership: Leadership,
    /// What the policies were when a standby last pruned the evaluator's cache for them.
    standby_pruned: Mutex<u64>,
    /// [`Settings::reports`]: the policy reports written, when on.
    reports: Option<reports::Reports>,
    /// This instance's own status writes, so their echoes do not reconcile again.
    echoes: Arc<StatusEchoes>,
}

/// The resourceVersion of each policy's last status write by this instance. The policy watch
/// brings every write back; the echo of one's own write is that exact version, which holds
/// nothing but what this instance just wrote from what it had evaluated, so it is not a change
/// to reconcile (it used to cost a second, no-op reconcile per write, which a change arriving
/// next had to wait for). Any other version triggers as before: someone else's edit of the
/// status (rewritten at once), a spec, label or finalizer change, a deletion. The echo still
/// reaches the store, so the next reconcile compares with what was written.
#[derive(Default)]
struct StatusEchoes(Mutex<HashMap<String, String>>);

impl StatusEchoes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers the version the API server gave `written`, this instance's status write.
    fn wrote(&self, written: &ResponsibilityPolicy) {
        if let Some(version) = &written.metadata.resource_version {
            self.lock().insert(written.name_any(), version.clone());
        }
    }

    /// Whether `event` is exactly the object of this instance's last status write of it.
    fn is_echo(&self, event: &ResponsibilityPolicy) -> bool {
        event
            .metadata
            .resource_version
            .as_ref()
            .is_some_and(|version| {
                self.lock()
                    .get(&event.name_any())
                    .is_some_and(|written| written == version)
            })
    }

    /// Keeps only the policies named in `live`.
    fn retain(&self, live: &BTreeSet<String>) {
        self.lock().retain(|name, _| live.contains(name));
    }
}

impl Context {
    fn evaluator(&self) -> std::sync::MutexGuard<'_, Evaluator> {
        self.evaluator.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the policy store keeps of a watched policy: all but its managedFields. onus never reads
/// them (its writes of a policy are merge patches and server-side applies built from the spec
/// and status, never a whole object sent back), and with a status of every control they are
/// the largest part of each stored policy (tens of KiB of field sets per policy).
fn slim(policy: &mut ResponsibilityPolicy) {
    policy.metadata.managed_fields = None;
}

/// Aborts a spawned task when dropped, so nothing outlives `run` however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long the start waits for the default-deny gate's watches after the others synced.
const BACKENDS_GRACE: Duration = Duration::from_secs(10);

/// How often a policy is evaluated when nothing triggers it.
const RESYNC: Duration = Duration::from_secs(300);

/// Finalizer on Enforce policies (and Audit ones with `admission: Warn`): onus removes what it
/// applied or generated for them before the policy goes.
pub const FINALIZER: &str = "onus.dev/cleanup";

/// Reason of the Warning Event an Audit-only install publishes when it removes [`FINALIZER`]
/// without releasing what an Enforce install applied.
pub const CLEANUP_UNAVAILABLE: &str = "CleanupUnavailable";

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
    /// Watch and project everything, evaluate and write nothing: the floor `make bench`
    /// measures onus against (the cost of the watches alone).
    pub null_evaluation: bool,
    /// Audit-only install (`--audit-only`): its RBAC grants no remediation writes, so onus
    /// never attempts one. Enforce policies are evaluated and reported in full, and say in
    /// their `Enforced` condition that Enforce is unavailable. Off by default: a missing flag
    /// never turns enforcement off, and a write RBAC refuses is reported as `RemediationFailed`.
    pub audit_only: bool,
    /// The namespace onus runs in (`$POD_NAMESPACE`): never given a default-deny (it would
    /// cut onus off from its probes, its metrics scrapes and the API server's webhooks onus
    /// may serve one day). `None` outside a cluster.
    pub own_namespace: Option<String>,
    /// Generate ValidatingAdmissionPolicies for the controls the API server can check at
    /// admission (see [`crate::admission`]). On by default; the in-process test operators turn
    /// it off (they share one API server, and these objects are cluster-wide) except where
    /// admission is under test.
    pub admission_policies: bool,
    /// Whether this instance leads: it watches and evaluates either way, and writes only while
    /// it leads. The default leads always (a single instance, `--no-leader-election`).
    pub leadership: Leadership,
    /// Publish each policy's results as policy reports (`--report-api`); off by default.
    pub reports: Option<ReportSettings>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            instance: "onus".into(),
            clock: Arc::new(Timestamp::now),
            policy_selector: None,
            metrics: Metrics::default(),
            readiness: Readiness::default(),
            null_evaluation: false,
            audit_only: false,
            own_namespace: None,
            admission_policies: true,
            leadership: Leadership::unelected(),
            reports: None,
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
    let index = Arc::new(RwLock::new(Index {
        own_namespace: settings.own_namespace.clone().filter(|ns| !ns.is_empty()),
        ..Index::default()
    }));
    let changes = Arc::new(Changes::default());
    let watch = Watch::new(
        client.clone(),
        index.clone(),
        changes.clone(),
        settings.metrics.clone(),
    );
    let _watches = AbortOnDrop(tokio::spawn(watch_all(watch)));

    // Evaluating before every watch has listed would report false violations. A shutdown
    // meanwhile ends the run at once (a large cluster can take long to list).
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let caches_synced = async {
        while !synced(&read(&index)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        () = caches_synced => {}
        () = shutdown.clone() => {
            info!("Shutting down before the caches synced");
            return;
        }
    }
    info!("Caches synced");
    // The default-deny gate's watches are not waited for without end (onus must report
    // everything else even without RBAC to read webhooks): until they list, every
    // default-deny is held, and status says why.
    let backends_synced = async {
        while !read(&index).backends.synced() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(BACKENDS_GRACE, backends_synced)
        .await
        .is_err()
    {
        warn!(
            "Webhook, CRD and APIService watches have not listed; default-deny NetworkPolicies are held until they do"
        );
    }
    release_free_heap();
    settings.readiness.set_synced(true);
    if settings.null_evaluation {
        info!("Null evaluation: watching only, until shut down");
        shutdown.await;
        settings.readiness.set_synced(false);
        return;
    }

    let policies = match &settings.policy_selector {
        Some(selector) => watcher::Config::default().labels(selector),
        None => watcher::Config::default(),
    };
    let echoes = Arc::new(StatusEchoes::default());
    let (reader, writer) = reflector::store();
    let not_echoes = echoes.clone();
    let policy_events = reflector::reflector(
        writer,
        watcher(Api::<ResponsibilityPolicy>::all(client.clone()), policies).modify(slim),
    )
    .applied_objects()
    .try_filter(move |policy| std::future::ready(!not_echoes.is_echo(policy)));
    let controller = Controller::for_stream(policy_events, reader);
    let store = controller.store();
    let admission = settings.admission_policies && !settings.audit_only;
    let own_user = if admission {
        prevent::own_user(&client).await
    } else {
        None
    };
    let gained = won_leadership(settings.leadership.clone(), store.clone());
    let trigger_index = index.clone();
    let unreported = Arc::new(Mutex::new(HashMap::new()));
    let triggered = unreported.clone();
    // Each batch of changes reconciles only the policies it can concern.
    let triggers = futures::stream::unfold(changes, move |changes| {
        let store = store.clone();
        let index = trigger_index.clone();
        let triggered = triggered.clone();
        async move {
            let pending = changes.next().await;
            let refs = affected(&store.state(), &read(&index), &pending);
            if let Some(since) = pending.since {
                let mut unreported = triggered.lock().unwrap_or_else(|p| p.into_inner());
                for r in &refs {
                    unreported.entry(r.name.clone()).or_insert(since);
                }
            }
            Some((futures::stream::iter(refs), changes))
        }
    })
    .flatten();
    // Policies to reconcile at once: those that asked for a generated admission object someone
    // else changed, and every policy after a retry of refused writes (their status follows).
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel::<String>();
    let repairs = futures::stream::unfold(woken, |mut woken| async move {
        let name = woken.recv().await?;
        Some((ObjectRef::<ResponsibilityPolicy>::new(&name), woken))
    });
    let triggers = futures::stream::select(futures::stream::select(triggers, gained), repairs);
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
        converging: tokio::sync::Mutex::new(converge::Converger::default()),
        metrics: settings.metrics.clone(),
        unreported,
        recorded: Mutex::new(BTreeSet::new()),
        announced_violations: events::ViolationEvents::new(&settings.instance),
        evaluator: Mutex::new(Evaluator::default()),
        previews: Mutex::new(remediate::Previews::default()),
        audit_only: settings.audit_only,
        admission,
        own_user,
        wake: wake.clone(),
        leadership: settings.leadership.clone(),
        standby_pruned: Mutex::new(0),
        reports: settings.reports.clone().map(reports::Reports::new),
        echoes,
    });
    if settings.audit_only {
        info!("Audit-only: Enforce policies are evaluated and reported, nothing is remediated");
    }
    // Refused actions are retried when due even when no policy is left to reconcile (the last
    // one was deleted while its release was refused); by the leader only, and they stop with
    // the shutdown, like the reconciles.
    let retries = leading_only(settings.leadership.clone(), {
        let ctx = ctx.clone();
        move || converge::retry_refused(ctx.clone())
    });
    let stop = shutdown.clone();
    let _retries = AbortOnDrop(tokio::spawn(async move {
        tokio::select! {
            () = retries => {}
            () = stop => {}
        }
    }));
    // Generated admission objects someone else changes are put back at once. Watched by every
    // replica, as the other kinds are (a standby that takes the Lease lists nothing), and acted
    // on by the leader only: a standby has carried out no pass to compare with.
    let _repairs = admission.then(|| {
        let repairs = converge::repair_on_change(ctx.clone(), wake);
        let stop = shutdown.clone();
        AbortOnDrop(tokio::spawn(async move {
            tokio::select! {
                () = repairs => {}
                () = stop => {}
            }
        }))
    });
    // Violation Events are published by their own task, at its own pace, and stop with the
    // shutdown too; only while leading: a former leader publishes nothing.
    let publisher = events::publish_violations(ctx.clone());
    let stop = shutdown.clone();
    let _publisher = AbortOnDrop(tokio::spawn(async move {
        tokio::select! {
            () = publisher => {}
            () = stop => {}
        }
    }));
    // What a leader exported and announced is forgotten when it loses the Lease.
    let handover = stand_down_on_loss(ctx.clone());
    let stop = shutdown.clone();
    let _handover = AbortOnDrop(tokio::spawn(async move {
        tokio::select! {
            () = handover => {}
            () = stop => {}
        }
    }));
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

/// Gives the heap's free pages back to the system. The first list of a large cluster decodes
/// pages of whole objects that are freed as soon as they are projected; the allocator keeps
/// such memory, and the resident size would otherwise stay near the list's peak (jemalloc
/// returns it only as later allocations go by, and an idle operator makes few).
fn release_free_heap() {
    #[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
    // SAFETY: a mallctl that takes and returns no value; `arena.4096.purge` (4096 is
    // MALLCTL_ARENAS_ALL) purges every arena's unused pages. A failure only leaves them.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns glibc's own free pages; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
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

/// Every policy, each time this instance wins the Lease: the new leader writes what its warm
/// standby evaluation found, at once and without listing anything again.
fn won_leadership(
    leadership: Leadership,
    store: Store<ResponsibilityPolicy>,
) -> impl futures::Stream<Item = ObjectRef<ResponsibilityPolicy>> {
    futures::stream::unfold(
        (leadership, store, None),
        |(leadership, store, last)| async move {
            let term = leadership.gained(last).await;
            let refs: Vec<_> = store
                .state()
                .iter()
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect();
            info!(policies = refs.len(), "Leading: reconciling every policy");
            Some((futures::stream::iter(refs), (leadership, store, Some(term))))
        },
    )
    .flatten()
}

/// Runs `task` during each term of leadership, dropped as soon as the term ends.
async fn leading_only<F, Fut>(leadership: Leadership, mut task: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut last = None;
    loop {
        let term = leadership.gained(last).await;
        last = Some(term);
        leadership.run(task()).await;
        leadership.lost(Some(term)).await;
    }
}

/// After each term of leadership: the per-policy metric series go (only the leader exports
/// them, so dashboards and alerts never read a standby's stale copy), and so does what was
/// announced and converged, so the next term starts as a fresh process would.
async fn stand_down_on_loss(ctx: Arc<Context>) {
    let mut last = None;
    loop {
        let term = ctx.leadership.gained(last).await;
        last = Some(term);
        ctx.leadership.lost(Some(term)).await;
        {
            // Under the lock a reconcile records under: none records after this.
            let mut recorded = ctx.recorded.lock().unwrap_or_else(|p| p.into_inner());
            if ctx.leadership.is_leading() {
                // Leading again already: its reconciles overwrite the series.
                continue;
            }
            for policy in recorded.iter() {
                ctx.metrics.forget_policy(policy);
            }
            recorded.clear();
        }
        ctx.announced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        ctx.announced_violations.forget();
        *ctx.converging.lock().await = converge::Converger::default();
        if let Some(reports) = &ctx.reports {
            reports.forget().await;
        }
        info!("Standing by: per-policy metrics cleared");
    }
}

#[instrument(skip_all, fields(policy = %policy.name_any()))]
async fn reconcile(policy: Arc<ResponsibilityPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.leadership.is_leading() {
        // Not a reconciliation (the leader's count and duration feed the alerts).
        ctx.metrics.standby_evaluation();
        return Ok(evaluate_as_standby(&policy, &ctx));
    }
    let name = policy.name_any();
    // Every series a reconcile makes carries the policy: known from the first, so they are
    // forgotten with it even if no reconcile ever got as far as its status. Only the leader
    // exports them (checked under the lock the stand-down clears them under).
    {
        let mut recorded = ctx.recorded.lock().unwrap_or_else(|p| p.into_inner());
        if ctx.leadership.is_leading() {
            recorded.insert(name.clone());
        }
    }
    let mut timer = ctx.metrics.reconcile_timer(&name);
    let action = match ctx.leadership.run(reconcile_inner(&policy, &ctx)).await {
        Some(action) => action,
        // Lost mid-way: the next leader reconciles every policy when it wins.
        None => Ok(Action::await_change()),
    };
    if action.is_ok() {
        timer.succeeded();
    }
    drop(timer);
    let gone = !in_store(&ctx, &policy);
    if (action.is_ok() && policy.metadata.deletion_timestamp.is_some()) || gone {
        // On its way out (the finalizer released): no later reconcile of it would forget the
        // series this one just made, nor the change it waited for.
        ctx.metrics.forget_policy(&name);
        ctx.unreported
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name);
    }
    action
}

/// A standby evaluates as the leader does (its caches and the evaluator's stay warm) and
/// writes nothing: no status, no Event, no remediation, no finalizer, no metric series.
fn evaluate_as_standby(policy: &ResponsibilityPolicy, ctx: &Context) -> Action {
    prune_as_standby(ctx);
    if policy.metadata.deletion_timestamp.is_some() || validate(&policy.spec).is_err() {
        return Action::requeue(RESYNC);
    }
    let now = (ctx.clock)();
    let index = read(&ctx.index);
    ctx.previews
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(policy, &index);
    let eval = ctx.evaluator().evaluate(&policy.spec, &index, now);
    let requeue = eval
        .next_expiry
        .map(|t| t.duration_since(now).unsigned_abs() + Duration::from_millis(50));
    Action::requeue(requeue.map_or(RESYNC, |r| r.min(RESYNC)))
}

/// Keeps a standby's evaluator cache to the policies that exist (the leader does so when it
/// converges), whenever the set of policies changed.
fn prune_as_standby(ctx: &Context) {
    use std::hash::{BuildHasher, Hash, Hasher};
    let policies = ctx.policies.state();
    let mut hasher =
        std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().build_hasher();
    for p in &policies {
        p.metadata.uid.hash(&mut hasher);
        p.metadata.generation.hash(&mut hasher);
    }
    let fingerprint = hasher.finish();
    let mut pruned = ctx.standby_pruned.lock().unwrap_or_else(|p| p.into_inner());
    if *pruned != fingerprint {
        *pruned = fingerprint;
        ctx.evaluator()
            .retain_policies(policies.iter().map(|p| &p.spec), &read(&ctx.index));
    }
}

async fn reconcile_inner(policy: &ResponsibilityPolicy, ctx: &Context) -> Result<Action, Error> {
    let deleting = policy.metadata.deletion_timestamp.is_some();
    let has_finalizer = policy.finalizers().iter().any(|f| f == FINALIZER);
    // An invalid spec keeps enforcing the last valid one: only deletion or a valid switch to
    // Audit lets go. An Audit-only install enforces nothing and so holds no finalizer (one an
    // Enforce install left behind is removed: this install could never honour it).
    // A policy whose controls are checked at admission (Enforce, or Audit with `admission:
    // Warn`) holds it too: its generated objects go with it.
    let enforcing = !ctx.audit_only
        && (remediate::enforced_spec(policy).is_some_and(|spec| spec.mode == Mode::Enforce)
            || (ctx.admission && crate::admission::wants_admission(policy)));
    // With policy reports on, every policy holds it: its reports go with it.
    let holds = enforcing || ctx.reports.is_some();
    if holds && !deleting && !has_finalizer {
        // Added first, so a deletion can never outrun the clean-up; the update re-triggers us.
        return set_finalizer(&ctx.client, policy, true).await;
    }
    converge::converge(ctx).await;
    if has_finalizer && (deleting || !holds) {
        if deleting && let Some(reports) = &ctx.reports {
            // Refused: the garbage collector removes them (their owner reference), and the
            // log says why they lingered.
            if let Err(error) = reports.remove_all(&ctx.client, policy).await {
                warn!(%error, "Policy reports of a deleted policy not removed");
            }
        }
        // (Under policy reports every policy holds it; only those an Enforce install would
        // have remediated for lose something.)
        let remediated = remediate::enforced_spec(policy).is_some_and(|s| s.mode == Mode::Enforce)
            || crate::admission::wants_admission(policy);
        if ctx.audit_only && (ctx.reports.is_none() || remediated) {
            // Nothing was released: whatever an Enforce install applied for this policy stays,
            // and nothing else will tell.
            events::publish(
                ctx,
                policy,
                kube::runtime::events::EventType::Warning,
                CLEANUP_UNAVAILABLE,
                format!(
                    "onus is installed Audit-only (--audit-only) and cannot honour its \
                     finalizer {FINALIZER}: it removes it without releasing anything. The \
                     remediations an Enforce install applied for this policy stay in place \
                     (NetworkPolicy onus-default-deny, Pod Security labels, default \
                     ServiceAccounts' automountServiceAccountToken, the generated \
                     ValidatingAdmissionPolicies onus-*) until an Enforce install \
                     releases them or they are removed by hand"
                ),
            )
            .await;
        }
        // The release was attempted; what the API server refused is reported with Events and
        // retried by later convergences, so it never holds the deletion up.
        return set_finalizer(&ctx.client, policy, false).await;
    }
    if deleting {
        return Ok(Action::await_change());
    }

    // Changes that reached the index before this point are in what is evaluated below.
    let started = Instant::now();
    let now = (ctx.clock)();
    let now_time = Time(now.round(jiff::Unit::Second).unwrap_or(now));
    let previous = policy.status.as_ref();
    let generation = policy.metadata.generation;

    let (mut desired, requeue) = match validate(&policy.spec) {
        Err(message) => {
            let held = remediate::spec_to_record(policy).map(|held| {
                format!(
                    "; the remediations of generation {} stay in place until the spec is valid \
                     again or the policy is deleted",
                    held.generation
                )
            });
            let message = message + held.as_deref().unwrap_or_default();
            // The held spec is still enforced (remediations, generated admission policies):
            // wake when one of its exceptions expires, so it stops counting then.
            let requeue = remediate::enforced_spec(policy)
                .and_then(|held| {
                    held.exceptions
                        .iter()
                        .filter_map(|e| e.expires.as_ref().map(|t| t.0))
                        .filter(|t| *t > now)
                        .min()
                })
                .map(|t| t.duration_since(now).unsigned_abs() + Duration::from_millis(50));
            (
                status::invalid(&message, generation, previous, &now_time),
                requeue,
            )
        }
        Ok(()) => {
            let (eval, preview, judged_at, governed) = {
                let index = read(&ctx.index);
                let version =
                    index.admission_version(crate::evaluate::pod_security_version(&policy.spec));
                let preview = ctx
                    .previews
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(policy, &index);
                (
                    ctx.evaluator().evaluate(&policy.spec, &index, now),
                    preview,
                    crate::podsecurity::Version::Minor(version.effective_minor()),
                    ctx.reports
                        .as_ref()
                        .map(|_| crate::evaluate::selected_namespaces(&policy.spec, &index)),
                )
            };
            let (failures, admission, warn_refused) = {
                let converger = ctx.converging.lock().await;
                let mut failures = if policy.spec.mode == Mode::Enforce {
                    converge::failures_for(&converger, policy, &read(&ctx.index))
                } else {
                    Vec::new()
                };
                // A generated admission policy the API server refused is an Enforce failure
                // like any other, and its control is not reported as prevented; so is one
                // someone else keeps changing while onus waits to put it back (contested). An
                // Audit policy's (its warnings) is said in `Warned` the same way.
                let prevention = &converger.prevention;
                let refused: Vec<String> = crate::admission::names_for(policy)
                    .iter()
                    .filter_map(|n| {
                        prevention
                            .failures
                            .get(n)
                            .or_else(|| prevention.contested.get(n))
                            .cloned()
                    })
                    .collect();
                let mut warn_refused = None;
                if policy.spec.mode == Mode::Enforce {
                    failures.extend(refused);
                } else if ctx.admission && crate::admission::wants_admission(policy) {
                    warn_refused = Some(refused);
                }
                let admission = if ctx.admission {
                    crate::admission::status_of(policy, &prevention.in_place)
                } else {
                    Default::default()
                };
                (failures, admission, warn_refused)
            };
            announce_expired(ctx, policy, &eval.expired_exceptions).await;
            // Queued for the publisher: Events never hold up this status write.
            announce_violations(ctx, policy, &eval);
            let requeue = eval.next_expiry.map(|t| {
                let wait = t.duration_since(now).unsigned_abs();
                // Wake just after the expiry so it has passed when we look.
                wait + Duration::from_millis(50)
            });
            let mut status = status::evaluated(
                &eval,
                &preview,
                &policy.spec.exceptions,
                &failures,
                policy.spec.mode,
                generation,
                previous,
                &now_time,
            );
            status.pod_security_version = Some(judged_at.to_string());
            for control in &mut status.controls {
                control.admission = admission.get(control.id.as_str()).copied();
            }
            if let Some(refused) = &warn_refused {
                status::warned(&mut status, previous, &now_time, refused);
            }
            if ctx.audit_only && policy.spec.mode == Mode::Enforce {
                status::enforce_unavailable(&mut status, previous, &now_time);
            }
            let (refused, undecodable) = {
                let index = read(&ctx.index);
                (
                    index.refused.clone(),
                    undecodable_governed(&policy.spec, &index),
                )
            };
            status::watches_refused(&mut status, previous, &now_time, &refused);
            status::undecodable_objects(&mut status, previous, &now_time, &undecodable);
            let requeue = match (&ctx.reports, governed) {
                (Some(reports), Some(governed)) => {
                    let retry = reports
                        .publish(
                            &ctx.client,
                            policy,
                            &eval,
                            &governed,
                            &mut status,
                            &now_time,
                        )
                        .await;
                    requeue.into_iter().chain(retry).min()
                }
                _ => requeue,
            };
            (status, requeue)
        }
    };
    desired.enforced_spec = remediate::spec_to_record(policy);
    // Refused remediations are retried by their own task (`converge::retry_refused`), not by
    // requeueing every policy.

    let name = policy.name_any();
    {
        // Only the leader exports per-policy series; checked under the lock that the stand-down
        // clears them under, so none is recorded after a lost Lease.
        let mut recorded = ctx.recorded.lock().unwrap_or_else(|p| p.into_inner());
        if ctx.leadership.is_leading() {
            ctx.metrics.record_policy(
                &name,
                &desired,
                crate::metrics::expiring_soon(&policy.spec, now),
            );
            recorded.insert(name.clone());
        }
    }
    let written = previous != Some(&desired);
    if written {
        let echo = patch_status(&ctx.client, policy, &desired).await?;
        ctx.echoes.wrote(&echo);
        publish_transitions(ctx, policy, previous, &desired).await;
    }
    // The changes this reconcile saw are reflected now: written, or they did not alter the
    // status. A change recorded after it began waits for the next reconcile.
    let seen = {
        let mut unreported = ctx.unreported.lock().unwrap_or_else(|p| p.into_inner());
        match unreported.get(&name) {
            Some(since) if *since <= started => unreported.remove(&name),
            _ => None,
        }
    };
    if let (true, Some(since)) = (written, seen) {
        ctx.metrics.detection_latency(&name, since.elapsed());
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
    match Api::<ResponsibilityPolicy>::all(client.clone())
        .patch(
            &policy.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {}
        // Removing it from a policy that is already gone: done, the finalizer went with it.
        Err(kube::Error::Api(status)) if !present && status.code == 404 => {}
        Err(error) => return Err(Error::Finalizer(error)),
    }
    Ok(Action::await_change())
}

/// Drops the metric series of policies that no longer exist.
fn forget_deleted(ctx: &Context, policies: &[Arc<ResponsibilityPolicy>]) {
    let live: BTreeSet<String> = policies.iter().map(|p| p.name_any()).collect();
    // A change that triggered a policy deleted before it reconciled is reported by nobody.
    ctx.unreported
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|name, _| live.contains(name));
    let mut recorded = ctx.recorded.lock().unwrap_or_else(|p| p.into_inner());
    for gone in recorded.difference(&live) {
        ctx.metrics.forget_policy(gone);
    }
    recorded.retain(|name| live.contains(name));
    ctx.echoes.retain(&live);
}

async fn patch_status(
    client: &Client,
    policy: &ResponsibilityPolicy,
    status: &ResponsibilityPolicyStatus,
) -> Result<ResponsibilityPolicy, Error> {
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
    .map_err(Error::PatchStatus)
}

/// Whether the policy is still in the controller's store (not deleted meanwhile).
fn in_store(ctx: &Context, policy: &ResponsibilityPolicy) -> bool {
    ctx.policies.get(&ObjectRef::from_obj(policy)).is_some()
}

fn error_policy(policy: Arc<ResponsibilityPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    // A policy gone meanwhile gets no series: nothing would ever forget them.
    if in_store(&ctx, &policy) {
        ctx.metrics
            .reconcile_error(&policy.name_any(), error.category());
    }
    warn!(policy = %policy.name_any(), category = error.category(), %error, "Reconcile error");
    Action::requeue(Duration::from_secs(5))
}

/// The undecodable objects a policy governs, as `Kind namespace/name: why`: those in the
/// namespaces it selects, and every cluster-scoped one (RBAC and Namespaces are read for every
/// policy; an undecodable Namespace may be one it would select).
fn undecodable_governed(
    spec: &crate::crd::ResponsibilityPolicySpec,
    index: &crate::index::Index,
) -> Vec<String> {
    if index.undecodable.is_empty() {
        return Vec::new();
    }
    let selected = crate::evaluate::selected_namespaces(spec, index);
    index
        .undecodable
        .iter()
        .filter(|(_, key, _)| key.namespace.is_empty() || selected.contains(&key.namespace))
        .map(|(kind, key, why)| {
            if key.namespace.is_empty() {
                format!("{kind} {}: {why}", key.name)
            } else {
                format!("{kind} {}/{}: {why}", key.namespace, key.name)
            }
        })
        .collect()
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

    /// Namespaces `shop` (env=prod) and `lab` (env=dev).
    fn shop_and_lab() -> Index {
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
        index
    }

    fn names(refs: Vec<ObjectRef<ResponsibilityPolicy>>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn a_namespaced_change_reconciles_only_the_policies_governing_it() {
        let index = shop_and_lab();
        let policies = [
            policy("prod", serde_json::json!({"matchLabels": {"env": "prod"}})),
            policy("dev", serde_json::json!({"matchLabels": {"env": "dev"}})),
        ];
        let shop = Pending {
            all: false,
            namespaces: ["shop".to_string()].into(),
            since: None,
        };
        assert_eq!(names(affected(&policies, &index, &shop)), ["prod"]);
        let everything = Pending {
            all: true,
            namespaces: BTreeSet::new(),
            since: None,
        };
        assert_eq!(
            names(affected(&policies, &index, &everything)),
            ["prod", "dev"]
        );
    }

    #[test]
    fn a_policy_is_told_of_the_undecodable_objects_it_governs_and_of_no_others() {
        let mut index = shop_and_lab();
        let prod = policy("prod", serde_json::json!({"matchLabels": {"env": "prod"}}));
        assert!(undecodable_governed(&prod.spec, &index).is_empty());
        let u = &mut index.undecodable;
        u.set(
            "Pod",
            &Key::new(Some("shop"), "web"),
            Some("bad spec"),
            false,
        );
        u.set(
            "Pod",
            &Key::new(Some("lab"), "toy"),
            Some("bad spec"),
            false,
        );
        u.set(
            "ClusterRole",
            &Key::new(None, "ops"),
            Some("bad rules"),
            false,
        );
        assert_eq!(
            undecodable_governed(&prod.spec, &index),
            ["ClusterRole ops: bad rules", "Pod shop/web: bad spec"]
        );
    }

    fn at(name: &str, version: &str) -> ResponsibilityPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
            "metadata": {"name": name, "resourceVersion": version},
            "spec": {"serviceModel": "PaaS"}
        }))
        .expect("policy")
    }

    #[test]
    fn the_policy_store_keeps_no_managed_fields_and_everything_else() {
        let mut policy: ResponsibilityPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
            "metadata": {"name": "p", "uid": "u1", "resourceVersion": "7", "generation": 2,
                         "finalizers": [FINALIZER], "labels": {"team": "a"},
                         "managedFields": [{"manager": "onus", "operation": "Apply",
                                            "subresource": "status", "fieldsType": "FieldsV1",
                                            "fieldsV1": {"f:status": {"f:controls": {}}}}]},
            "spec": {"serviceModel": "PaaS"},
            "status": {"observedGeneration": 2},
        }))
        .expect("policy");
        let mut expected = policy.clone();
        expected.metadata.managed_fields = None;
        slim(&mut policy);
        assert_eq!(
            serde_json::to_value(&policy).expect("json"),
            serde_json::to_value(&expected).expect("json")
        );
        assert!(policy.metadata.managed_fields.is_none());
    }

    #[test]
    fn only_the_exact_version_of_its_own_status_write_is_an_echo() {
        let echoes = StatusEchoes::default();
        // Nothing written yet: every event reconciles.
        assert!(!echoes.is_echo(&at("a", "10")));
        echoes.wrote(&at("a", "10"));
        assert!(echoes.is_echo(&at("a", "10")));
        // Someone else's later edit, an older version, another policy with that version.
        assert!(!echoes.is_echo(&at("a", "11")));
        assert!(!echoes.is_echo(&at("a", "9")));
        assert!(!echoes.is_echo(&at("b", "10")));
        // A later write replaces the earlier one.
        echoes.wrote(&at("a", "12"));
        assert!(!echoes.is_echo(&at("a", "10")));
        assert!(echoes.is_echo(&at("a", "12")));
        // A version-less object (never from the API server) is never an echo.
        let mut bare = at("a", "12");
        bare.metadata.resource_version = None;
        assert!(!echoes.is_echo(&bare));
        // A deleted policy is forgotten.
        echoes.retain(&BTreeSet::from(["b".to_string()]));
        assert!(!echoes.is_echo(&at("a", "12")));
    }
}
