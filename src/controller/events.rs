//! Kubernetes Events: condition transitions and expired exceptions on the policy, violations
//! on the offending objects (one Event per violation across onus processes, see [`ledger`]).

use jiff::Timestamp;
use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event as K8sEvent},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client, Resource, ResourceExt,
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
    // Policy reports that cannot be published (the API is missing, a write refused): once per
    // transition, as the condition says.
    if let Some(reports) = changed(status::POLICY_REPORTS).filter(|c| c.status == "False") {
        let reason = reports.reason.clone();
        publish(
            ctx,
            policy,
            EventType::Warning,
            &reason,
            reports.message.clone(),
        )
        .await;
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

    /// Forgets what was announced, as a fresh process would have (a leader that lost the Lease:
    /// the next term offers every violation again, and one another leader published meanwhile
    /// is recognised by its name and continued).
    pub(super) fn forget(&self) {
        *self.ledger() = Ledger::default();
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

/// Publishes the queued violation Events one at a time, at most [`EVENTS_PER_SECOND`], while
/// leading (one queued by a term that ended is dropped), until the caller aborts it.
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
        ctx.leadership
            .run(deliver(
                &ctx.client,
                (ctx.clock)(),
                &ctx.announced_violations,
                &queued,
            ))
            .await;
    }
}

/// Publishes one queued violation Event. One that failed in a way a later try may not (the API
/// server overloaded or unreachable) is no longer counted as announced: the next evaluation
/// offers it again (the ledger counted it when it was queued).
async fn deliver(client: &Client, now: Timestamp, events: &ViolationEvents, queued: &Queued) {
    match publish_violation(client, now, queued).await {
        Ok(Published::Recreated) => events.ledger().recreated(&queued.policy_uid, queued.digest),
        Ok(_) => {}
        Err(error) => {
            let name = queued.event.metadata.name.clone().unwrap_or_default();
            warn!(%error, event = %name, "Publishing violation event failed");
            if retryable(&error) {
                events.ledger().unannounce(
                    &queued.policy_uid,
                    queued.digest,
                    queued.announce,
                    Instant::now(),
                );
            } else if matches!(&error, kube::Error::Api(status) if status.code == 403) {
                // Perhaps only for now (RBAC being changed, an admission policy): later.
                events.ledger().forbidden(
                    &queued.policy_uid,
                    queued.digest,
                    queued.announce,
                    Instant::now(),
                );
            }
        }
    }
}

/// Whether publishing may succeed when tried at once: the API server throttled or failed, or
/// never answered. A refusal of the Event itself (invalid) would fail again; a forbidden one is
/// tried again after [`ledger::FORBIDDEN_RETRY`].
fn retryable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::SerdeError(_) | kube::Error::BuildRequest(_) => false,
        _ => true,
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
            event: violation_event(&events.instance, (ctx.clock)(), policy, control, v, &name),
            announce,
        });
    }
}

/// The longest note the API server accepts on an Event (events.k8s.io/v1), in bytes.
const NOTE_LIMIT: usize = 1024;

/// `note`, cut to [`NOTE_LIMIT`] on a character boundary (ending in `…` when cut): a longer one
/// is refused, and the violation's Event would never be published.
fn fit_note(mut note: String) -> String {
    if note.len() <= NOTE_LIMIT {
        return note;
    }
    let ellipsis = '…';
    let mut end = NOTE_LIMIT - ellipsis.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note.truncate(end);
    note.push(ellipsis);
    note
}

fn violation_event(
    instance: &str,
    now: Timestamp,
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
        note: Some(fit_note(format!(
            "{control} ({title}) fails ResponsibilityPolicy {}: {}",
            policy.name_any(),
            v.example
        ))),
        action: Some(format!("Check{}", control.replace('-', ""))),
        event_time: Some(MicroTime(now)),
        regarding: Some(object),
        related: Some(policy.object_ref(&())),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(instance.into()),
        ..K8sEvent::default()
    }
}

/// Creates the Event, or continues its series. One that already exists on create was published
/// by an earlier onus process: the violation is announced already. An Event of that name about
/// anything else (a name collision, crafted or not, or an Event someone else wrote) does not
/// announce it: the Event is then published under a generated name.
async fn publish_violation(
    client: &Client,
    now: Timestamp,
    queued: &Queued,
) -> Result<Published, kube::Error> {
    let Queued {
        event, announce, ..
    } = queued;
    let name = event.metadata.name.clone().unwrap_or_default();
    let namespace = event.metadata.namespace.clone().unwrap_or_default();
    let api: Api<K8sEvent> = Api::namespaced(client.clone(), &namespace);
    if let Announce::Recur { count } = *announce {
        // Only the series: note, time and the rest of an Event are immutable.
        let series = json!({"series": {
            "count": count,
            "lastObservedTime": MicroTime(now),
        }});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&series))
            .await
        {
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            other => return other.map(|_| Published::Continued),
        }
    }
    match api.create(&PostParams::default(), event).await {
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            if same_violation(&api.get(&name).await?, event) {
                return Ok(Published::Existing);
            }
            let mut generated = event.clone();
            generated.metadata.name = None;
            generated.metadata.generate_name = Some(format!("{name}-"));
            api.create(&PostParams::default(), &generated).await?;
            Ok(Published::Generated)
        }
        other => other.map(|_| match announce {
            Announce::Create => Published::Created,
            // Expired meanwhile: started anew.
            Announce::Recur { .. } => Published::Recreated,
        }),
    }
}

/// What [`publish_violation`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Published {
    Created,
    Continued,
    Recreated,
    /// An earlier process had published it.
    Existing,
    /// Its name was taken by another Event.
    Generated,
}

/// Whether `existing` announces what `event` does: the same offender, policy, control and
/// reporting controller.
fn same_violation(existing: &K8sEvent, event: &K8sEvent) -> bool {
    let about = |e: &K8sEvent| {
        e.regarding.as_ref().map(|r| {
            (
                r.api_version.clone(),
                r.kind.clone(),
                r.namespace.clone(),
                r.name.clone(),
            )
        })
    };
    let policy = |e: &K8sEvent| e.related.as_ref().and_then(|r| r.uid.clone());
    about(existing) == about(event)
        && policy(existing).is_some()
        && policy(existing) == policy(event)
        && existing.action == event.action
        && existing.reporting_controller == event.reporting_controller
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

#[cfg(test)]
mod publish_tests {
    use super::*;
    use axum::{
        body::Bytes,
        http::{Method, Request, Response},
    };
    use http_body_util::{BodyExt, Full};
    use std::sync::Arc;

    /// One request the mock API server received: method, path and query, JSON body.
    type Seen = (Method, String, serde_json::Value);

    /// A client whose API server answers each request with `answer` (status code, JSON body) and
    /// records it.
    fn mock(
        answer: impl Fn(&Seen) -> (u16, serde_json::Value) + Send + Sync + 'static,
    ) -> (Client, Arc<Mutex<Vec<Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let answer = Arc::new(answer);
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let (record, answer) = (record.clone(), answer.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await?.to_bytes();
                let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                let request = (parts.method, parts.uri.to_string(), json);
                let (code, reply) = answer(&request);
                record.lock().unwrap().push(request);
                Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(reply.to_string())))
                    .map_err(tower::BoxError::from)
            }
        });
        (Client::new(service, "default"), seen)
    }

    fn failure(code: u16, reason: &str) -> serde_json::Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "message": reason, "reason": reason, "code": code})
    }

    fn policy() -> ResponsibilityPolicy {
        serde_json::from_value(json!({
            "apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
            "metadata": {"name": "prod", "uid": "uid-1"},
            "spec": {"serviceModel": "PaaS"},
        }))
        .expect("policy")
    }

    fn violation(name: &str, example: &str) -> Violation {
        crate::evaluate::ViolationData {
            namespace: Some("shop".into()),
            kind: "Deployment".into(),
            name: name.into(),
            example: example.into(),
        }
        .into()
    }

    /// What `announce_violations` queues for `v` failing WKL-03 of [`policy`], if the ledger
    /// of `events` counts it as new.
    fn offer(events: &ViolationEvents, v: &Violation) -> Option<Queued> {
        offer_at(events, v, Instant::now())
    }

    fn offer_at(events: &ViolationEvents, v: &Violation, now: Instant) -> Option<Queued> {
        let policy = policy();
        let live = HashSet::from(["uid-1".to_string()]);
        let mut ledger = events.ledger();
        let digest = ledger.digest(&Identity::of(v).parts("uid-1", "WKL-03"));
        let (digest, (), announce) = ledger
            .update("uid-1", vec![(digest, ())], &live, now, 20)
            .pop()?;
        let name = violation_event_name("uid-1", "WKL-03", &Identity::of(v));
        Some(Queued {
            policy_uid: "uid-1".into(),
            digest,
            event: violation_event("onus", Timestamp::now(), &policy, "WKL-03", v, &name),
            announce,
        })
    }

    #[tokio::test]
    async fn a_violation_whose_event_the_api_server_failed_is_offered_again() {
        let events = ViolationEvents::new("onus");
        let web = violation("web", "Deployment/shop/web");
        let queued = offer(&events, &web).expect("new");
        let (client, _) = mock(|_| (503, failure(503, "ServiceUnavailable")));
        deliver(&client, Timestamp::now(), &events, &queued).await;
        assert!(
            offer(&events, &web).is_some(),
            "a violation whose Event was never published counts as announced"
        );
        // Published: announced for as long as it fails.
        let (client, _) = mock(|_| (201, json!({})));
        deliver(&client, Timestamp::now(), &events, &queued).await;
        assert!(offer(&events, &web).is_none());
    }

    #[tokio::test]
    async fn a_refused_event_is_not_offered_again_and_again() {
        // Invalid fails the same way next time: it must not take the places of the other
        // violations in every evaluation.
        let events = ViolationEvents::new("onus");
        let web = violation("web", "Deployment/shop/web");
        let queued = offer(&events, &web).expect("new");
        let (client, _) = mock(|_| (422, failure(422, "Invalid")));
        deliver(&client, Timestamp::now(), &events, &queued).await;
        assert!(offer(&events, &web).is_none());
        assert!(offer_at(&events, &web, Instant::now() + 2 * ledger::FORBIDDEN_RETRY).is_none());
    }

    #[tokio::test]
    async fn a_forbidden_event_is_offered_again_but_only_after_a_while() {
        // Forbidden may be for now only (RBAC being changed): tried again, not at once.
        let events = ViolationEvents::new("onus");
        let web = violation("web", "Deployment/shop/web");
        let queued = offer(&events, &web).expect("new");
        let (client, _) = mock(|_| (403, failure(403, "Forbidden")));
        deliver(&client, Timestamp::now(), &events, &queued).await;
        assert!(offer(&events, &web).is_none(), "not in the next evaluation");
        let later = Instant::now() + ledger::FORBIDDEN_RETRY + std::time::Duration::from_secs(1);
        let again = offer_at(&events, &web, later).expect("offered after FORBIDDEN_RETRY");
        assert_eq!(again.announce, Announce::Create);
        assert!(offer_at(&events, &web, later).is_none(), "announced once");
    }

    #[tokio::test]
    async fn a_violation_that_came_back_and_failed_to_publish_keeps_its_series() {
        let events = ViolationEvents::new("onus");
        let web = violation("web", "Deployment/shop/web");
        offer(&events, &web).expect("new");
        // Fixed, then back.
        let live = HashSet::from(["uid-1".to_string()]);
        events
            .ledger()
            .update::<()>("uid-1", vec![], &live, Instant::now(), 20);
        let back = offer(&events, &web).expect("back");
        assert_eq!(back.announce, Announce::Recur { count: 2 });
        let (client, _) = mock(|_| (500, failure(500, "InternalError")));
        deliver(&client, Timestamp::now(), &events, &back).await;
        let again = offer(&events, &web).expect("offered again");
        assert_eq!(again.announce, Announce::Recur { count: 2 });
    }

    #[test]
    fn a_violation_event_note_fits_what_the_api_server_accepts() {
        // A RoleBinding subject's name has no length limit, and it is in the example.
        for example in ["x".repeat(3000), "é".repeat(1500)] {
            let web = violation("web", &example);
            let event =
                violation_event("onus", Timestamp::now(), &policy(), "WKL-03", &web, "web.1");
            let note = event.note.expect("note");
            assert!(note.len() <= NOTE_LIMIT, "{} bytes", note.len());
            assert!(note.starts_with("WKL-03 ("), "{note}");
            assert!(note.ends_with('…'));
        }
        let short = violation("web", "Deployment/shop/web");
        let event = violation_event(
            "onus",
            Timestamp::now(),
            &policy(),
            "WKL-03",
            &short,
            "web.1",
        );
        assert!(event.note.expect("note").ends_with(": Deployment/shop/web"));
    }

    #[tokio::test]
    async fn an_event_of_the_same_name_about_another_object_does_not_announce_a_violation() {
        let events = ViolationEvents::new("onus");
        let web = violation("web", "Deployment/shop/web");
        let queued = offer(&events, &web).expect("new");
        let mut other = queued.event.clone();
        other.regarding.as_mut().expect("regarding").name = Some("decoy".into());
        let taken = serde_json::to_value(&other).expect("event");
        let (client, seen) = mock(move |(method, uri, _)| match *method {
            Method::POST if uri.contains("/events") => (409, failure(409, "AlreadyExists")),
            Method::GET => (200, taken.clone()),
            _ => (500, failure(500, "InternalError")),
        });
        let result = publish_violation(&client, Timestamp::now(), &queued).await;
        // The first create is refused; the second one, generated, is answered 409 by this mock
        // too: what matters is that it was attempted.
        assert!(result.is_err(), "{result:?}");
        let seen = seen.lock().unwrap();
        let posts: Vec<&Seen> = seen.iter().filter(|(m, _, _)| m == Method::POST).collect();
        assert_eq!(posts.len(), 2, "{seen:?}");
        assert_eq!(
            posts[1].2["metadata"]["generateName"],
            format!("{}-", queued.event.metadata.name.clone().unwrap())
        );
        assert_eq!(posts[1].2["regarding"]["name"], "web");
    }

    #[tokio::test]
    async fn an_event_published_by_an_earlier_process_announces_the_violation() {
        let events = ViolationEvents::new("onus");
        let web = violation("web", "Deployment/shop/web");
        let queued = offer(&events, &web).expect("new");
        let mut earlier = queued.event.clone();
        earlier.reporting_instance = Some("onus-old".into());
        earlier.note = Some("older note".into());
        let earlier = serde_json::to_value(&earlier).expect("event");
        let (client, seen) = mock(move |(method, _, _)| match *method {
            Method::POST => (409, failure(409, "AlreadyExists")),
            _ => (200, earlier.clone()),
        });
        let result = publish_violation(&client, Timestamp::now(), &queued).await;
        assert_eq!(result.expect("published"), Published::Existing);
        assert_eq!(seen.lock().unwrap().len(), 2);
    }
}
