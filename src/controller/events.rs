//! Kubernetes Events: condition transitions and expired exceptions on the policy, violations
//! on the offending objects.

use kube::{
    Resource, ResourceExt,
    runtime::events::{Event as KubeEvent, EventType},
};
use std::collections::BTreeSet;
use tracing::warn;

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
pub(super) async fn announce_violations(
    ctx: &Context,
    policy: &ResponsibilityPolicy,
    eval: &Evaluation,
) {
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
