//! Enforce mode, carried out: brings the cluster to what all Enforce policies want together.
//!
//! Every action stands on its own. One the API server refuses (an admission policy, a quota,
//! RBAC) is reported (a Warning Event, a metric, the policy's `Enforced` condition) and retried
//! with its own backoff, while every other action, namespace and policy proceeds: a refusal
//! never stops onus from following the cluster or writing status.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Resource, ResourceExt,
    runtime::events::{Event as KubeEvent, EventType},
};
use tracing::{info, warn};

use crate::{
    crd::{ResponsibilityPolicy, ResponsibilityPolicySpec},
    enforce,
    evaluate::governs,
    index::{Index, Key},
    remediate::{self, Action},
    validate::validate,
};

use super::{Context, events::publish_event, read};

/// The first retry of a refused action; doubled per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A refused action, waiting for its retry.
#[derive(Debug)]
pub(super) struct Failure {
    action: Action,
    /// `Kind namespace/name: the API server's message`.
    pub message: String,
    attempts: u32,
    retry_at: Instant,
}

/// What convergence remembers between runs.
#[derive(Default)]
pub(super) struct Converger {
    /// Index generation of the last plan, and the actions carried out for it: until the watches
    /// report the result, the same plan must not be carried out (and announced) again.
    done: Option<(u64, Vec<Action>)>,
    /// Refused actions by the object they change (kind, namespace).
    pub failures: BTreeMap<(&'static str, String), Failure>,
    /// The inputs of the last convergence that ran to its end: with the same inputs and no
    /// refusal due, a convergence would carry out nothing, so it is skipped.
    converged: Option<Inputs>,
    /// The plan of all policies, kept per namespace between convergences.
    planner: remediate::Planner,
    /// The generated ValidatingAdmissionPolicies.
    pub prevention: super::prevent::Prevention,
}

/// What a convergence plans from: the index generation and, per policy (by name), what
/// [`remediate::wants`] reads of it.
#[derive(Debug)]
struct Inputs {
    generation: u64,
    policies: Vec<PolicyInput>,
    /// The very objects read: the same ones again are the same inputs, without comparing
    /// every spec (a batch reconciles every policy, and each converges first).
    objects: Vec<Arc<ResponsibilityPolicy>>,
}

#[derive(Debug, PartialEq)]
struct PolicyInput {
    name: String,
    deleting: bool,
    valid: bool,
    /// The spec it enforces: its own when valid, the one held in its status otherwise.
    spec: Option<ResponsibilityPolicySpec>,
}

impl Inputs {
    fn of(generation: u64, policies_in: &[Arc<ResponsibilityPolicy>]) -> Self {
        let mut policies: Vec<PolicyInput> = policies_in
            .iter()
            .map(|p| PolicyInput {
                name: p.name_any(),
                deleting: p.metadata.deletion_timestamp.is_some(),
                valid: validate(&p.spec).is_ok(),
                spec: remediate::enforced_spec(p).cloned(),
            })
            .collect();
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        Inputs {
            generation,
            policies,
            objects: policies_in.to_vec(),
        }
    }

    /// Whether these are the inputs `generation` and `policies` make, without copying them.
    fn unchanged(&self, generation: u64, policies: &[Arc<ResponsibilityPolicy>]) -> bool {
        if self.generation == generation
            && self.objects.len() == policies.len()
            && self
                .objects
                .iter()
                .zip(policies)
                .all(|(a, b)| Arc::ptr_eq(a, b))
        {
            return true;
        }
        self.generation == generation
            && self.policies.len() == policies.len()
            && policies.iter().all(|p| {
                let name = p.name_any();
                self.policies
                    .binary_search_by(|i| i.name.as_str().cmp(&name))
                    .is_ok_and(|at| {
                        let i = &self.policies[at];
                        i.deleting == p.metadata.deletion_timestamp.is_some()
                            && i.valid == validate(&p.spec).is_ok()
                            && i.spec.as_ref() == remediate::enforced_spec(p)
                    })
            })
    }
}

impl Converger {
    /// When the next refused action is due again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.failures
            .values()
            .map(|f| f.retry_at)
            .chain(self.prevention.next_retry())
            .min()
    }
}

/// The kind of object an action changes (a bounded metric label).
fn kind(action: &Action) -> &'static str {
    match action {
        Action::ApplyNetworkPolicy { .. } | Action::DeleteNetworkPolicy { .. } => "NetworkPolicy",
        Action::ApplyPodSecurityLabels { .. } | Action::ReleasePodSecurityLabels { .. } => {
            "Namespace"
        }
        Action::DisableDefaultToken { .. } | Action::ReleaseDefaultToken { .. } => "ServiceAccount",
    }
}

fn object(action: &Action) -> String {
    let ns = action.namespace();
    match kind(action) {
        "NetworkPolicy" => format!("NetworkPolicy {ns}/{}", crate::facts::DEFAULT_DENY),
        "ServiceAccount" => format!("ServiceAccount {ns}/default"),
        _ => format!("Namespace {ns}"),
    }
}

fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1)))
        .min(MAX_BACKOFF)
}

/// The refusals in the namespaces a policy governs, for its status.
pub(super) fn failures_for(
    converger: &Converger,
    policy: &ResponsibilityPolicy,
    index: &Index,
) -> Vec<String> {
    let Some(spec) = remediate::enforced_spec(policy) else {
        return Vec::new();
    };
    converger
        .failures
        .values()
        .filter(|f| {
            let ns = f.action.namespace();
            index
                .namespaces
                .get(&Key::new(None, ns))
                .is_some_and(|fact| governs(spec, ns, &fact.labels))
        })
        .map(|f| f.message.clone())
        .collect()
}

/// Brings the cluster to what all Enforce policies want together, and gives up what none
/// wants. Never fails: refusals are recorded in the converger for status and retries.
pub(super) async fn converge(ctx: &Context) {
    let mut state = ctx.converging.lock().await;
    let policies = ctx.policies.state();
    if ctx.admission {
        // Cheap when nothing changed (compared with what was done last); exceptions expire
        // by the clock, so this runs before the skip below.
        let wanted = crate::admission::generate(
            policies.iter().map(Arc::as_ref),
            (ctx.clock)(),
            ctx.own_user.as_deref(),
        );
        let before = (
            state.prevention.in_place.clone(),
            state.prevention.failures.clone(),
        );
        let refused = state.prevention.converge(&ctx.client, wanted).await;
        // A control that became prevented, stopped being, or is refused otherwise: every policy
        // that asked for it reconciles, so its status says so (a retry, or a pass that another
        // policy's reconcile ran, changes theirs too).
        let changed: Vec<String> = crate::admission::all_names()
            .into_iter()
            .filter(|n| {
                before.0.contains(n) != state.prevention.in_place.contains(n)
                    || before.1.get(n) != state.prevention.failures.get(n)
            })
            .collect();
        for policy in state.prevention.asking(&changed) {
            // Stopped: so are the reconciles.
            let _ = ctx.wake.send(policy);
        }
        // Announced once per refusal, not per retry, on every policy that asked for it: a
        // control that is not prevented as asked is never silent (status says it too).
        for (_, asked, line) in refused {
            ctx.metrics.remediation_failure("ValidatingAdmissionPolicy");
            for policy in policies.iter().filter(|p| asked.contains(&p.name_any())) {
                super::events::publish(
                    ctx,
                    policy,
                    EventType::Warning,
                    ADMISSION_FAILED,
                    format!("{line} (retrying)"),
                )
                .await;
            }
        }
    }
    let generation = read(&ctx.index).generation;
    // Once per change of inputs: the same inputs plan the same actions, all of them carried
    // out already or refused and waiting for their retry (a due one runs the plan again).
    let due = state.next_retry().is_some_and(|at| at <= Instant::now());
    if !due
        && state
            .converged
            .as_ref()
            .is_some_and(|inputs| inputs.unchanged(generation, &policies))
    {
        return;
    }
    state.converged = None;
    super::forget_deleted(ctx, &policies);
    // Its fields apart: the plan is lent by the planner while the rest is updated.
    let state = &mut *state;
    // The actions planned from scratch (a watch refused), when the planner's are not used.
    let from_scratch: Vec<Action>;
    let (generation, mut planned): (u64, Vec<&Action>) = {
        let index = read(&ctx.index);
        ctx.evaluator()
            .retain_policies(policies.iter().map(|p| &p.spec), &index);
        ctx.previews
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain_policies(policies.iter().map(|p| &p.spec));
        if ctx.audit_only {
            // Nothing to carry out: this install may not write (its policies say so).
            (index.generation, Vec::new())
        } else {
            if index.refused.is_empty() {
                let all: Vec<&ResponsibilityPolicy> = policies.iter().map(Arc::as_ref).collect();
                (index.generation, state.planner.plan(&all, &index))
            } else {
                // Part of the cluster is what onus last saw (a watch is refused): the full
                // plan, only strengthening, as for an invalid spec; nothing is released.
                let mut wants = remediate::wants(policies.iter().map(Arc::as_ref), &index, false);
                for want in wants.values_mut() {
                    want.hold = true;
                }
                let mut actions = remediate::plan(&wants, &index, remediate::PlanMode::Converge);
                actions.retain(|a| {
                    !matches!(
                        a,
                        Action::DeleteNetworkPolicy { .. }
                            | Action::ReleasePodSecurityLabels { .. }
                            | Action::ReleaseDefaultToken { .. }
                    )
                });
                from_scratch = actions;
                (index.generation, from_scratch.iter().collect())
            }
        }
    };
    match &mut state.done {
        Some((done_at, done)) if *done_at == generation => planned.retain(|a| !done.contains(a)),
        _ => state.done = Some((generation, Vec::new())),
    }
    // A refusal of something no longer planned is over, whatever resolved it.
    state.failures.retain(|key, _| {
        planned
            .iter()
            .any(|a| (kind(a), a.namespace()) == (key.0, &key.1))
    });
    let now = Instant::now();
    // Copied are only the actions due now: a refused one waits for its retry unless it
    // changed (a changed action is tried at once).
    let actions: Vec<Action> = planned
        .into_iter()
        .filter(|action| {
            !state
                .failures
                .get(&(kind(action), action.namespace().to_string()))
                .is_some_and(|f| f.action == **action && f.retry_at > now)
        })
        .cloned()
        .collect();
    for action in actions {
        let key = (kind(&action), action.namespace().to_string());
        let previous = state.failures.remove(&key);
        let what = enforce::describe(&action);
        match enforce::execute(&ctx.client, &action).await {
            Ok(()) => {
                info!(namespace = action.namespace(), "Remediation: {what}");
                announce(ctx, &policies, &action, enforce::reason(&action), what).await;
                if let Some((_, done)) = &mut state.done {
                    done.push(action);
                }
            }
            Err(error) => {
                let attempts = previous
                    .as_ref()
                    .filter(|f| f.action == action)
                    .map_or(1, |f| f.attempts + 1);
                let message = format!("{}: {}", object(&action), refusal(&error));
                warn!(namespace = action.namespace(), %error, attempts, "Remediation refused: {what}");
                ctx.metrics.remediation_failure(kind(&action));
                // Announced once per refusal, not per retry.
                if previous.as_ref().is_none_or(|f| f.message != message) {
                    let note = format!("{message} (retrying)");
                    announce(ctx, &policies, &action, "RemediationFailed", note).await;
                }
                state.failures.insert(
                    key,
                    Failure {
                        action,
                        message,
                        attempts,
                        retry_at: Instant::now() + backoff(attempts),
                    },
                );
            }
        }
    }
    // Carried out to the end for these inputs (a convergence dropped halfway records nothing).
    state.converged = Some(Inputs::of(generation, &policies));
}

/// Converges whenever a refused action is due, whether or not a policy reconciles.
pub(super) async fn retry_refused(ctx: Arc<Context>) {
    loop {
        let due = ctx.converging.lock().await.next_retry();
        if due.is_some_and(|at| at <= Instant::now()) {
            converge(&ctx).await;
            // What holds now (a retried remediation that went through, or failed anew) is in
            // the statuses at once, not at the next resync.
            for policy in ctx.policies.state() {
                if ctx.wake.send(policy.name_any()).is_err() {
                    return;
                }
            }
        }
        // Also a floor: a refusal that stays due can never spin.
        let wait = due.map_or(RETRY_POLL, |at| {
            at.saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(100), RETRY_POLL)
        });
        tokio::time::sleep(wait).await;
    }
}

/// Watches onus's generated ValidatingAdmissionPolicies and bindings (by its label) and has
/// one that someone else deleted, relabelled or edited put back at once, rather than at the
/// next repair pass (every 5 minutes): until then a control the status calls prevented would
/// not be. Every replica watches (a standby that takes the Lease lists nothing); only the
/// leader acts. `wake` gets the policies that asked for it, to reconcile: their reconcile runs the
/// pass, and their status then says what holds. onus's own writes come back at the versions it
/// recorded and wake nothing; a watch that starts again compares its list with them. Someone
/// writing one back right after each repair is answered at a growing pace ([`FIGHT_FIRST`] to
/// [`FIGHT_MAX`]), not in a tight loop of writes, and while a repair waits its control is not
/// claimed as prevented ([`super::prevent::Prevention::contest`]: the status says why at once),
/// nor is any other generated object that changes during the wait (the watch is read all along,
/// and it joins that repair). A watch the API server refuses is logged and retried; the repair
/// pass stays as the floor.
pub(super) async fn repair_on_change(
    ctx: Arc<Context>,
    wake: tokio::sync::mpsc::UnboundedSender<String>,
) {
    use futures::StreamExt as _;
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use kube::{
        Api,
        core::PartialObjectMeta,
        runtime::{WatchStreamExt as _, watcher},
    };

    use super::prevent::{BINDING, POLICY, Seen};

    /// A watch event, as far as repairs care: names and versions ([`super::prevent::version`]).
    enum Change {
        Listing,
        Listed(String, String),
        ListDone,
        Applied(String, String),
        Deleted(String),
    }
    fn change<K>(event: watcher::Event<PartialObjectMeta<K>>) -> Change {
        let of = |o: PartialObjectMeta<K>| {
            (
                o.metadata.name.clone().unwrap_or_default(),
                super::prevent::version(&o.metadata).unwrap_or_default(),
            )
        };
        match event {
            watcher::Event::Init => Change::Listing,
            watcher::Event::InitApply(o) => {
                let (name, version) = of(o);
                Change::Listed(name, version)
            }
            watcher::Event::InitDone => Change::ListDone,
            watcher::Event::Apply(o) => {
                let (name, version) = of(o);
                Change::Applied(name, version)
            }
            watcher::Event::Delete(o) => Change::Deleted(of(o).0),
        }
    }

    let config = watcher::Config::default().labels(&format!(
        "{}={}",
        crate::facts::MANAGED_BY.0,
        crate::facts::MANAGED_BY.1
    ));
    let policies = watcher(
        Api::<PartialObjectMeta<ValidatingAdmissionPolicy>>::all(ctx.client.clone()),
        config.clone(),
    )
    .default_backoff()
    .map(|e| (POLICY, e.map(change)));
    let bindings = watcher(
        Api::<PartialObjectMeta<ValidatingAdmissionPolicyBinding>>::all(ctx.client.clone()),
        config,
    )
    .default_backoff()
    .map(|e| (BINDING, e.map(change)));
    let mut events = std::pin::pin!(futures::stream::select(policies, bindings));
    let names = crate::admission::all_names();
    let mut listing: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    // The last repair, and how long it waited.
    let mut pace: Option<(Instant, Duration)> = None;
    // A paced repair: when it is due, how long it waited, and what it puts back. The watch is
    // read meanwhile (never a sleep in this loop): whatever else diverges during the wait is
    // not claimed as prevented at once, and joins that repair.
    let mut waiting: Option<(tokio::time::Instant, Duration)> = None;
    let mut pending: BTreeSet<String> = BTreeSet::new();
    loop {
        let due = waiting.map_or_else(tokio::time::Instant::now, |(at, _)| at);
        let next = tokio::select! {
            next = events.next() => next,
            () = tokio::time::sleep_until(due), if waiting.is_some() => {
                let Some((_, delay)) = waiting.take() else { continue };
                pace = Some((Instant::now(), delay));
                let names: Vec<String> = std::mem::take(&mut pending).into_iter().collect();
                if !put_back(&ctx, &wake, &names).await {
                    return;
                }
                continue;
            }
        };
        let Some((kind, event)) = next else {
            return;
        };
        let diverged: Vec<String> = match event {
            Err(error) => {
                warn!(kind, %error, "Watch of the generated admission objects failed (retrying); until it works, a change to one is put back by the next repair pass");
                continue;
            }
            Ok(Change::Listing) => {
                listing.insert(kind, BTreeMap::new());
                continue;
            }
            Ok(Change::Listed(name, version)) => {
                listing.entry(kind).or_default().insert(name, version);
                continue;
            }
            Ok(Change::ListDone) => {
                let listed = listing.remove(kind).unwrap_or_default();
                let state = ctx.converging.lock().await;
                state.prevention.diverged_from(kind, &listed)
            }
            Ok(Change::Applied(name, version)) => {
                let state = ctx.converging.lock().await;
                let diverged = names.contains(&name)
                    && state
                        .prevention
                        .diverged(kind, &name, Seen::Version(&version));
                diverged.then_some(name).into_iter().collect()
            }
            Ok(Change::Deleted(name)) => {
                let state = ctx.converging.lock().await;
                let diverged =
                    names.contains(&name) && state.prevention.diverged(kind, &name, Seen::Gone);
                diverged.then_some(name).into_iter().collect()
            }
        };
        if diverged.is_empty() || !ctx.leadership.is_leading() {
            // (A standby has carried out no pass: `diverged` finds nothing to compare with.)
            continue;
        }
        // Someone writing them back right after each repair (another controller fighting onus
        // over them) is not answered in a tight loop of writes: each repair then waits twice
        // as long as the last, up to a minute; a quiet spell starts again at once.
        let now = Instant::now();
        let delay = match (waiting, pace) {
            (Some((at, _)), _) => at.saturating_duration_since(tokio::time::Instant::now()),
            (None, Some((last, delay))) if now < last + FIGHT_QUIET => {
                (delay * 2).clamp(FIGHT_FIRST, FIGHT_MAX)
            }
            _ => Duration::ZERO,
        };
        if waiting.is_none() && delay.is_zero() {
            warn!(
                kind,
                names = ?diverged,
                "Generated admission objects changed by someone else: putting them back"
            );
            pace = Some((now, delay));
            if !put_back(&ctx, &wake, &diverged).await {
                return;
            }
            continue;
        }
        warn!(
            kind,
            names = ?diverged,
            ?delay,
            "Generated admission objects changed by someone else while onus's repairs are paced (another controller writing them?): putting them back after a delay"
        );
        // Meanwhile the control is not claimed as prevented: its object is not as onus left
        // it, and the status says so at once, not after the wait.
        let contested = ctx
            .converging
            .lock()
            .await
            .prevention
            .contest(&diverged, delay);
        if !contested
            .into_iter()
            .all(|policy| wake.send(policy).is_ok())
        {
            return;
        }
        pending.extend(diverged);
        if waiting.is_none() {
            waiting = Some((tokio::time::Instant::now() + delay, delay));
        }
    }
}

/// Has the next pass put the generated objects `names` back, and wakes the policies that asked
/// for them, whose reconcile runs it. False once the reconciles have stopped.
async fn put_back(
    ctx: &Context,
    wake: &tokio::sync::mpsc::UnboundedSender<String>,
    names: &[String],
) -> bool {
    let asked = ctx.converging.lock().await.prevention.repair(names);
    asked.into_iter().all(|policy| wake.send(policy).is_ok())
}

/// A repair this soon after the last one is someone fighting onus over its generated objects.
const FIGHT_QUIET: Duration = Duration::from_secs(10);
/// The first and the longest wait of a repair while fought over.
const FIGHT_FIRST: Duration = Duration::from_secs(1);
const FIGHT_MAX: Duration = Duration::from_secs(60);

/// The Event reason of a generated admission policy the API server refused or onus could not
/// write (too large).
pub(super) const ADMISSION_FAILED: &str = "AdmissionPolicyFailed";

/// How often [`retry_refused`] looks for new refusals while none is due.
const RETRY_POLL: Duration = Duration::from_secs(1);

/// The API server's own words for a refused request.
fn refusal(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// An Event about an action on the policies it serves (or the namespace, for a release).
async fn announce(
    ctx: &Context,
    policies: &[Arc<ResponsibilityPolicy>],
    action: &Action,
    reason: &str,
    note: String,
) {
    let type_ = if reason.ends_with("Restored") || reason == "RemediationFailed" {
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
    let event = |secondary| KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note.clone()),
        action: "Remediate".into(),
        secondary,
    };
    for policy in policies.iter().filter(|p| served.contains(&p.name_any())) {
        publish_event(
            ctx,
            &event(Some(namespace.clone())),
            &policy.object_ref(&()),
        )
        .await;
    }
    if served.is_empty() {
        publish_event(ctx, &event(None), &namespace).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, mode: &str) -> Arc<ResponsibilityPolicy> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
                "metadata": {"name": name},
                "spec": {"serviceModel": "PaaS", "mode": mode},
            }))
            .expect("policy"),
        )
    }

    #[test]
    fn a_convergence_is_skipped_only_for_the_same_inputs() {
        let policies = [policy("a", "Enforce"), policy("b", "Enforce")];
        let inputs = Inputs::of(7, &policies);
        assert!(inputs.unchanged(7, &[policies[1].clone(), policies[0].clone()]));
        assert!(!inputs.unchanged(8, &policies));
        // Switched to Audit, deleted, or gone: the release must be planned.
        assert!(!inputs.unchanged(7, &[policies[0].clone(), policy("b", "Audit")]));
        let mut deleting = (*policies[1]).clone();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert!(!inputs.unchanged(7, &[policies[0].clone(), Arc::new(deleting)]));
        assert!(!inputs.unchanged(7, &policies[..1]));
    }

    #[test]
    fn backoff_doubles_per_attempt_up_to_five_minutes() {
        let secs: Vec<u64> = [1, 2, 3, 4, 20].map(|a| backoff(a).as_secs()).to_vec();
        assert_eq!(secs, [1, 2, 4, 8, 300]);
    }
}
