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
use std::{
    collections::{BTreeMap, HashSet},
    sync::Mutex,
    time::Instant,
};
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

/// The name of the Event announcing that `object` fails `control` of the policy with `uid`:
/// the same in every onus process, so the API server keeps one Event per violation. It starts
/// with the object's name for people listing Events, reduced to what an Event name allows.
fn violation_event_name(uid: &str, control: &str, object: &ObjectReference) -> String {
    let field = |f: &Option<String>| f.clone().unwrap_or_default();
    let (api_version, kind) = (field(&object.api_version), field(&object.kind));
    let (namespace, name) = (field(&object.namespace), field(&object.name));
    let hash = stable_hash(&[
        REPORTING_CONTROLLER,
        uid,
        control,
        &api_version,
        &kind,
        &namespace,
        &name,
    ]);
    let readable: String = name
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

/// Violation Events: who reports them and which were published (see [`ledger`]).
pub(super) struct ViolationEvents {
    instance: String,
    ledger: Mutex<Ledger>,
}

impl ViolationEvents {
    /// Bookkeeping for Events reported by onus instance `instance` (as `reportingInstance`).
    pub(super) fn new(instance: &str) -> Self {
        ViolationEvents {
            instance: instance.into(),
            ledger: Mutex::new(Ledger::default()),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A Warning Event on each newly failing object, so namespace owners see it with
/// `kubectl get events -n <namespace>`: one per object, control and policy, whichever onus
/// process published it; a violation that comes back after a fix counts again on it.
pub(super) async fn announce_violations(
    ctx: &Context,
    policy: &ResponsibilityPolicy,
    eval: &Evaluation,
) {
    let uid = policy.uid().unwrap_or_else(|| policy.name_any());
    let failing: BTreeMap<String, (&'static str, &Violation)> = eval
        .outcomes
        .iter()
        .filter(|o| o.result == crate::crd::ControlResult::Fail)
        .flat_map(|o| o.violations.iter().map(move |v| (o.control.id, v)))
        .map(|(control, v)| {
            let name = violation_event_name(&uid, control, &offender(v));
            (name, (control, v))
        })
        .collect();
    let live: HashSet<String> = ctx
        .policies
        .state()
        .iter()
        .filter_map(|p| p.uid())
        .collect();
    let publish = ctx.announced_violations.ledger().update(
        &uid,
        &failing.keys().cloned().collect(),
        &live,
        Instant::now(),
        MAX_VIOLATION_EVENTS,
    );
    for (name, announce) in publish {
        if let Some((control, v)) = failing.get(&name) {
            let event = violation_event(ctx, policy, control, v, &name);
            if let Err(error) = publish_violation(ctx, &uid, event, announce).await {
                warn!(%error, event = %name, "Publishing violation event failed");
            }
        }
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
async fn publish_violation(
    ctx: &Context,
    policy_uid: &str,
    event: K8sEvent,
    announce: Announce,
) -> Result<(), kube::Error> {
    let name = event.metadata.name.clone().unwrap_or_default();
    let namespace = event.metadata.namespace.clone().unwrap_or_default();
    let api: Api<K8sEvent> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Announce::Recur { count } = announce {
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
                    .recreated(policy_uid, &name);
            }
            other => return other.map(|_| ()),
        }
    }
    match api.create(&PostParams::default(), &event).await {
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

    fn object(kind: &str, namespace: Option<&str>, name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some(api_version_of(kind).into()),
            kind: Some(kind.into()),
            namespace: namespace.map(String::from),
            name: Some(name.into()),
            ..Default::default()
        }
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
        assert_eq!(
            violation_event_name("uid-1", "WKL-03", &web),
            "web.6961e43174302d9d"
        );
        // FNV-1a's published test vectors.
        assert_eq!(fnv1a(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(*b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn violation_event_names_differ_by_policy_control_and_object() {
        let web = object("Deployment", Some("shop"), "web");
        let name = violation_event_name("uid-1", "WKL-03", &web);
        assert_ne!(name, violation_event_name("uid-2", "WKL-03", &web));
        assert_ne!(name, violation_event_name("uid-1", "WKL-04", &web));
        let other = object("Deployment", Some("shop2"), "web");
        assert_ne!(name, violation_event_name("uid-1", "WKL-03", &other));
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
            let event = violation_event_name("uid-1", "IAM-01", &binding);
            assert!(is_dns_subdomain(&event), "{name:?} -> {event:?}");
        }
    }
}
