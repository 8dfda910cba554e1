//! Pods run by a workload controller, and the links from them up to the template they came
//! from.
//!
//! Such Pods are reported through their controller, but the running Pod is what the PodSecurity
//! admission judges, and it can differ from the template: a mutating webhook adds a capability,
//! `kubectl debug` adds an ephemeral container. So every owned Pod is kept, as the fields Pod
//! Security reads and nothing else (a few hundred bytes where the Pod is many kilobytes).
//!
//! Why every owned Pod and not only those that fail more than their template: a projection sees
//! one object, and the template can change after the Pod was seen (a rollout, an edit), so
//! "fails more than its template" is only known when a policy is evaluated. Deciding then, from
//! compact facts, keeps projections pure and the index right whatever order events arrive in.

use k8s_openapi::{
    api::core::v1::{Container, EphemeralContainer, PodSpec, Volume},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::{POD_CONTROLLERS as CONTROLLERS, WorkloadKind, controlled_by, wire};
use crate::{
    crd::PodSecurityLevel,
    podsecurity::{Controls, Verdicts, Version},
};

/// Annotations the Pod Security checks read (legacy AppArmor and seccomp).
const SECURITY_ANNOTATIONS: &[&str] = &[
    "container.apparmor.security.beta.kubernetes.io/",
    "container.seccomp.security.alpha.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/pod",
];

/// A Pod run by a ReplicaSet, StatefulSet, DaemonSet or Job, as Pod Security sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedPodFact {
    /// The controlling object: its kind (one of the four above) and name.
    pub controller: (WorkloadKind, String),
    /// Every Pod Security check's outcome for the Pod (see [`Verdicts`]).
    pub verdicts: Verdicts,
    /// Whether a container of the Pod (init, regular or ephemeral) takes a Secret through an
    /// env var (DAT-01): an ephemeral container added by `kubectl debug`, or a webhook's
    /// injection, is in the running Pod and not in its template.
    pub secret_env: bool,
}

impl OwnedPodFact {
    /// The WKL controls the Pod fails at a Pod Security level and version.
    pub fn failing_controls(&self, level: PodSecurityLevel, version: Version) -> Controls {
        self.verdicts.failing(level, version)
    }
}

fn controller_kind(kind: &str) -> Option<WorkloadKind> {
    match kind {
        "ReplicaSet" => Some(WorkloadKind::ReplicaSet),
        "StatefulSet" => Some(WorkloadKind::StatefulSet),
        "DaemonSet" => Some(WorkloadKind::DaemonSet),
        "Job" => Some(WorkloadKind::Job),
        _ => None,
    }
}

/// Projects a Pod run by a workload controller; bare Pods (and Pods of other controllers) are
/// workloads of their own (see [`super::pod`]).
pub fn owned_pod(p: &wire::PodObject) -> Option<OwnedPodFact> {
    if !controlled_by(&p.metadata, CONTROLLERS) {
        return None;
    }
    let owner = p.metadata.controller()?;
    let kind = controller_kind(&owner.kind)?;
    let slim = p.spec.clone()?;
    let secret_env = !slim.secret_env().is_empty();
    let spec = slim.into_pod_spec();
    let meta = ObjectMeta {
        annotations: p.metadata.annotations.as_ref().map(|a| {
            a.iter()
                .filter(|(k, _)| SECURITY_ANNOTATIONS.iter().any(|p| k.starts_with(p)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        ..ObjectMeta::default()
    };
    Some(OwnedPodFact {
        controller: (kind, owner.name.clone()),
        verdicts: Verdicts::of(&meta, &spec),
        secret_env,
    })
}

/// The Deployment that controls a ReplicaSet: its Pods roll up into that Deployment.
pub fn replica_set_owner(r: &wire::WorkloadObject) -> Option<String> {
    owner_of_kind(&r.metadata, "Deployment")
}

/// The CronJob that controls a Job: its Pods roll up into that CronJob.
pub fn job_owner(j: &wire::WorkloadObject) -> Option<String> {
    owner_of_kind(&j.metadata, "CronJob")
}

fn owner_of_kind(meta: &wire::Meta, kind: &str) -> Option<String> {
    if !controlled_by(meta, &[kind]) {
        return None;
    }
    meta.controller().map(|o| o.name.clone())
}

/// A container reduced to what the checks read: its name, security context, host ports and
/// the probes and lifecycle hooks (their `host`).
macro_rules! security_container {
    ($ty:ident, $c:expr) => {
        $ty {
            name: $c.name.clone(),
            security_context: $c.security_context.clone(),
            ports: $c.ports.as_ref().map(|ports| {
                ports
                    .iter()
                    .filter(|p| p.host_port.is_some())
                    .cloned()
                    .collect()
            }),
            liveness_probe: $c.liveness_probe.clone(),
            readiness_probe: $c.readiness_probe.clone(),
            startup_probe: $c.startup_probe.clone(),
            lifecycle: $c.lifecycle.clone(),
            ..$ty::default()
        }
    };
}

/// Volume sources every Pod Security level allows and no check names: dropped. A subset of
/// what the restricted volume-type check allows, so dropping them changes no outcome.
fn always_allowed(v: &Volume) -> bool {
    v.config_map.is_some()
        || v.secret.is_some()
        || v.projected.is_some()
        || v.empty_dir.is_some()
        || v.downward_api.is_some()
        || v.persistent_volume_claim.is_some()
}

/// The fields of a pod spec the Pod Security checks read, every container kind included.
pub fn security_spec(spec: &PodSpec) -> PodSpec {
    PodSpec {
        containers: spec
            .containers
            .iter()
            .map(|c| security_container!(Container, c))
            .collect(),
        init_containers: spec.init_containers.as_ref().map(|cs| {
            cs.iter()
                .map(|c| security_container!(Container, c))
                .collect()
        }),
        ephemeral_containers: spec.ephemeral_containers.as_ref().map(|cs| {
            cs.iter()
                .map(|c| security_container!(EphemeralContainer, c))
                .collect()
        }),
        security_context: spec.security_context.clone(),
        host_network: spec.host_network,
        host_pid: spec.host_pid,
        host_ipc: spec.host_ipc,
        host_users: spec.host_users,
        os: spec.os.clone(),
        volumes: spec
            .volumes
            .as_ref()
            .map(|vs| vs.iter().filter(|v| !always_allowed(v)).cloned().collect()),
        ..PodSpec::default()
    }
}

#[cfg(test)]
mod tests;
