//! Kubernetes Events: condition transitions and expired exceptions on the policy, violations
//! on the offending objects (one Event per violation across onus processes, see [`ledger`]).

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event as K8sEvent},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::events::{Event as KubeEvent, EventType},
};
use serde_json::json;
use std::{collections::HashSet, sync::Mutex, time::Instant};
use tokio::sync::mpsc;
use tracing::warn;

mod ledger;

use ledger::{Announce, Ledger};

use super::Context;
use crate::{
    crd::{ResponsibilityPolicy, ResponsibilityPolicyStatus},
    evaluate::{Evaluation, Violation},
    status::{self, COMPLIANT, READY},
};

pub(super) async fn publish(
    ctx: &Context,
    policy: &ResponsibilityPolicy,
    type_: EventType,
    reason: &str,
    note: String,
) {
    publish_on(ctx, &policy.object_ref(&()), type_, reason, note).await;
}

pub(super) async fn publish_on(
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

pub(super) async fn publish_event(
    ctx: &Context,
    event: &KubeEvent,
    object: &k8s_openapi::api::core::v1::ObjectReference,
) {
    if let Err(error) = ctx.recorder.publish(event, object).await {
        warn!(%error, reason = %event.reason, "Publishing event failed");
    }
}

/// Events for condition changes users care about.
pub(super) async fn publish_transitions(
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

/// `reportingController` of onus's Events.
pub(super) const REPORTING_CONTROLLER: &str = "onus";

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

/// The object an Event about `v` regards.
fn offender(v: &Violation) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version_of(&v.kind).into()),
        kind: Some(v.kind.clone()),
        name: Some(v.name.clone()),
        namespace: v
            .namespace
            .clone()
            .filter(|_| v.kind != "Namespace" && v.kind != "ClusterRoleBinding"),
        ..Default::default()
    }
}

/// 64-bit FNV-1a: a hash that stays the same across processes, builds and Rust versions.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// [`fnv1a`] of the parts, each ended by a NUL so ("ab", "c") and ("a", "bc") differ.
fn stable_hash(parts: &[&str]) -> u64 {
    fnv1a(parts.iter().flat_map(|p| p.bytes().chain([0])))
}

/// What names a violation's offender in its Event: the API version, kind, namespace (none for
/// cluster-scoped kinds) and name, borrowed from the violation.
#[derive(Clone, Copy, Debug)]
struct Identity<'a> {
    api_version: &'static str,
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
}

impl<'a> Identity<'a> {
    fn of(v: &'a Violation) -> Self {
        let cluster_scoped = v.kind == "Namespace" || v.kind == "ClusterRoleBinding";
        Identity {
            api_version: api_version_of(&v.kind),
            kind: &v.kind,
            namespace: if cluster_scoped {
                ""
            } else {
                v.namespace.as_deref().unwrap_or_default()
            },
            name: &v.name,
        }
    }

    /// Everything that tells one violation's Event from another's.
    fn parts(&self, uid: &'a str, control: &'a str) -> [&'a str; 7] {
        [
            REPORTING_CONTROLLER,
            uid,
            control,
            self.api_version,
            self.kind,
            self.namespace,
            self.name,
        ]
    }
}

/// The name of the Event announcing that `object` fails `control` of the policy with `uid`:
/// the same in every onus process, so the API server keeps one Event per violation. It starts
/// with the object's name for people listing Events, reduced to what an Event name allows.
fn violation_event_name(uid: &str, control: &str, object: &Identity<'_>) -> String {
    let hash = stable_hash(&object.parts(uid, control));
    let readable: String = object
        .name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(200)
        .collect();
    let readable = readable.trim_matches('-');
    let readable = if readable.is_empty() {
        "onus"
    } else {
        readable
    };
    format!("{readable}.{hash:016x}")
}

/// Violation Events waiting for the publisher, at most.
const QUEUE: usize = 1_000;

/// The publisher's pace. Violation Events are notifications (status is the report): the first
/// evaluation of a large cluster finds thousands of violations per policy, and announcing them
/// must not crowd the API server, nor hold up any status write.
const EVENTS_PER_SECOND: u64 = 50;

/// One violation Event on its way to the API server.
struct Queued {
    policy_uid: String,
    digest: u64,
    event: K8sEvent,
    announce: Announce,
}

/// Violation Events: who reports them, which were published (see [`ledger`]), and the queue to
/// the publisher ([`publish_violations`]).
pub(super) struct ViolationEvents {
    instance: String,
    ledger: Mutex<Ledger>,
    queue: mpsc::Sender<Queued>,
    publisher: Mutex<Option<mpsc::Receiver<Queued>>>,
}

impl ViolationEvents {
    /// Bookkeeping for Events reported by onus instance `instance` (as `reportingInstance`).
    pub(super) fn new(instance: &str) -> Self {
        let (queue, publisher) = mpsc::channel(QUEUE);
        ViolationEvents {
            instance: instance.into(),
            ledger: Mutex::new(Ledger::default()),
            queue,
            publisher: Mutex::new(Some(publisher)),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to `max` places in the queue, taken before the ledger counts anything as announced:
    /// a violation without a place stays unannounced and is offered again next time.
    fn reserve(&self, max: usize) -> Vec<mpsc::Permit<'_, Queued>> {
        let mut permits = Vec::new();
        while permits.len() < max {
            match self.queue.try_reserve() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        permits
    }
}

/// Publishes the queued violation Events one at a time, at most [`EVENTS_PER_SECOND`], until
/// the context goes (shutdown or lost leadership: the caller aborts it).
pub(super) async fn publish_violations(ctx: std::sync::Arc<Context>) {
    let Some(mut queue) = ctx
        .announced_violations
        .publisher
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        return;
    };
    let mut pace =
        tokio::time::interval(std::time::Duration::from_millis(1000 / EVENTS_PER_SECOND));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while let Some(queued) = queue.recv().await {
        pace.tick().await;
        let name = queued.event.metadata.name.clone().unwrap_or_default();
        if let Err(error) = publish_violation(&ctx, &queued).await {
            warn!(%error, event = %name, "Publishing violation event failed");
        }
    }
}

/// A Warning Event on each newly failing object, so namespace owners see it with
/// `kubectl get events -n <namespace>`: one per object, control and policy, whichever onus
/// process published it; a violation that comes back after a fix counts again on it.
pub(super) fn announce_violations(ctx: &Context, policy: &ResponsibilityPolicy, eval: &Evaluation) {
    let uid = policy.uid().unwrap_or_else(|| policy.name_any());
    let live: HashSet<String> = ctx
        .policies
        .state()
        .iter()
        .filter_map(|p| p.uid())
        .collect();
    let events = &ctx.announced_violations;
    let permits = events.reserve(MAX_VIOLATION_EVENTS);
    let publish = {
        let mut ledger = events.ledger();
        // Digests straight from the violations' parts: no name is formatted (nor allocated)
        // for the thousands of violations already announced.
        let failing: Vec<(u64, (&'static str, &Violation))> = eval
            .outcomes
            .iter()
            .filter(|o| o.result == crate::crd::ControlResult::Fail)
            .flat_map(|o| o.violations.iter().map(move |v| (o.control.id, v)))
            .map(|(control, v)| {
                let digest = ledger.digest(&Identity::of(v).parts(&uid, control));
                (digest, (control, v))
            })
            .collect();
        ledger.update(&uid, failing, &live, Instant::now(), permits.len())
    };
    for ((digest, (control, v), announce), permit) in publish.into_iter().zip(permits) {
        let name = violation_event_name(&uid, control, &Identity::of(v));
        permit.send(Queued {
            policy_uid: uid.clone(),
            digest,
            event: violation_event(ctx, policy, control, v, &name),
            announce,
        });
    }
}

fn violation_event(
    ctx: &Context,
    policy: &ResponsibilityPolicy,
    control: &str,
    v: &Violation,
    name: &str,
) -> K8sEvent {
    let title = crate::catalog::control_by_id(control).map_or("", |c| c.title);
    let object = offender(v);
    K8sEvent {
        metadata: ObjectMeta {
            name: Some(name.into()),
            // Events about cluster-scoped objects go to `default`, as kube's Recorder puts them.
            namespace: Some(object.namespace.clone().unwrap_or_else(|| "default".into())),
            ..ObjectMeta::default()
        },
        type_: Some("Warning".into()),
        reason: Some("PolicyViolation".into()),
        note: Some(format!(
            "{control} ({title}) fails ResponsibilityPolicy {}: {}",
            policy.name_any(),
            v.example
        )),
        action: Some(format!("Check{}", control.replace('-', ""))),
        event_time: Some(MicroTime((ctx.clock)())),
        regarding: Some(object),
        related: Some(policy.object_ref(&())),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(ctx.announced_violations.instance.clone()),
        ..K8sEvent::default()
    }
}

/// Creates the Event, or continues its series. One that already exists on create was published
/// by an earlier onus process: the violation is announced already.
async fn publish_violation(ctx: &Context, queued: &Queued) -> Result<(), kube::Error> {
    let Queued {
        policy_uid,
        digest,
        event,
        announce,
    } = queued;
    let name = event.metadata.name.clone().unwrap_or_default();
    let namespace = event.metadata.namespace.clone().unwrap_or_default();
    let api: Api<K8sEvent> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Announce::Recur { count } = *announce {
        // Only the series: note, time and the rest of an Event are immutable.
        let series = json!({"series": {
            "count": count,
            "lastObservedTime": MicroTime((ctx.clock)()),
        }});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&series))
            .await
        {
            Err(kube::Error::Api(status)) if status.is_not_found() => {
                // Expired meanwhile: start a new one.
                ctx.announced_violations
                    .ledger()
                    .recreated(policy_uid, *digest);
            }
            other => return other.map(|_| ()),
        }
    }
    match api.create(&PostParams::default(), event).await {
        Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
        other => other.map(|_| ()),
    }
}

/// One Event per expired exception (per operator process).
pub(super) async fn announce_expired(
    ctx: &Context,
    policy: &ResponsibilityPolicy,
    expired: &[usize],
) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: &str, namespace: Option<&str>, name: &str) -> Violation {
        crate::evaluate::ViolationData {
            namespace: namespace.map(String::from),
            kind: kind.into(),
            name: name.into(),
            example: String::new(),
        }
        .into()
    }

    fn name_of(uid: &str, control: &str, v: &Violation) -> String {
        violation_event_name(uid, control, &Identity::of(v))
    }

    /// What the API server accepts as an Event name (a DNS subdomain).
    fn is_dns_subdomain(name: &str) -> bool {
        name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    }

    #[test]
    fn a_violation_event_name_does_not_change_between_builds() {
        // Pinned: a different name after an upgrade would announce every violation again.
        let web = object("Deployment", Some("shop"), "web");
        assert_eq!(name_of("uid-1", "WKL-03", &web), "web.6961e43174302d9d");
        // FNV-1a's published test vectors.
        assert_eq!(fnv1a(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(*b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn violation_event_names_differ_by_policy_control_and_object() {
        let web = object("Deployment", Some("shop"), "web");
        let name = name_of("uid-1", "WKL-03", &web);
        assert_ne!(name, name_of("uid-2", "WKL-03", &web));
        assert_ne!(name, name_of("uid-1", "WKL-04", &web));
        let other = object("Deployment", Some("shop2"), "web");
        assert_ne!(name, name_of("uid-1", "WKL-03", &other));
    }

    #[test]
    fn violation_event_names_are_valid_for_any_object_name() {
        for name in [
            "system:controller:job-controller",
            "Web_App",
            "-",
            "",
            &"x".repeat(300),
        ] {
            let binding = object("ClusterRoleBinding", None, name);
            let event = name_of("uid-1", "IAM-01", &binding);
            assert!(is_dns_subdomain(&event), "{name:?} -> {event:?}");
        }
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    #[tokio::test]
    async fn places_in_the_queue_are_bounded_and_come_back_when_unused() {
        let events = ViolationEvents::new("onus");
        let taken = events.reserve(QUEUE + 5);
        assert_eq!(taken.len(), QUEUE);
        // A full queue offers no place: the ledger then announces nothing this time.
        assert!(events.reserve(1).is_empty());
        drop(taken);
        assert_eq!(events.reserve(3).len(), 3);
    }
}
