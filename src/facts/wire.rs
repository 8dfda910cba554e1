//! The wire shapes of the objects that run pods: serde structs that read only what a control
//! reads and skip the rest of the JSON without allocating it (images, commands, env values,
//! resources, volume mounts, managedFields, status).
//!
//! A Pod or Deployment is decoded straight into these (not into a full typed object, nor a
//! `serde_json::Value`), projected into a fact, and dropped: the index keeps no object.
//!
//! Fail closed: every field a Pod Security check reads must be here. The test
//! `tests::every_field_a_check_reads_survives_decoding` decodes full pod specs through these
//! shapes and compares them with [`super::security_spec`], the definition of what the checks
//! read.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EphemeralContainer, Lifecycle, PodOS, PodSecurityContext, PodSpec,
    Probe, SecurityContext, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// The metadata a projection reads (no managedFields: the objects that need them, Namespaces
/// and ServiceAccounts, are small and decoded as typed objects).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub resource_version: Option<String>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub owner_references: Option<Vec<OwnerRef>>,
}

/// An owner reference: who controls the object.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerRef {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub controller: Option<bool>,
}

impl Meta {
    /// The owner that controls the object, if any.
    pub fn controller(&self) -> Option<&OwnerRef> {
        self.owner_references
            .as_ref()?
            .iter()
            .find(|o| o.controller == Some(true))
    }

    /// Only the annotations, as the Pod Security checks take them.
    pub fn annotations_only(&self) -> ObjectMeta {
        ObjectMeta {
            annotations: self.annotations.clone(),
            ..ObjectMeta::default()
        }
    }
}

/// A Pod.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodObject {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub spec: Option<SlimPodSpec>,
}

/// A Deployment, StatefulSet, DaemonSet, ReplicaSet, Job (`spec.template`) or CronJob
/// (`spec.jobTemplate.spec.template`): which one, the watch knows.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct WorkloadObject {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub spec: Option<WorkloadSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    #[serde(default)]
    pub template: Option<Template>,
    #[serde(default)]
    pub job_template: Option<JobTemplate>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct JobTemplate {
    #[serde(default)]
    pub spec: Option<JobSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct JobSpec {
    #[serde(default)]
    pub template: Option<Template>,
}

/// A pod template.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Template {
    #[serde(default)]
    pub metadata: Option<Meta>,
    #[serde(default)]
    pub spec: Option<SlimPodSpec>,
}

impl WorkloadObject {
    /// The pod template: `spec.template`, or a CronJob's `spec.jobTemplate.spec.template`.
    pub fn template(&self, cron_job: bool) -> Option<&Template> {
        let spec = self.spec.as_ref()?;
        if cron_job {
            spec.job_template.as_ref()?.spec.as_ref()?.template.as_ref()
        } else {
            spec.template.as_ref()
        }
    }
}

/// The pod spec fields the checks read.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimPodSpec {
    #[serde(default)]
    pub containers: Vec<SlimContainer>,
    #[serde(default)]
    pub init_containers: Option<Vec<SlimContainer>>,
    #[serde(default)]
    pub ephemeral_containers: Option<Vec<SlimContainer>>,
    #[serde(default)]
    pub security_context: Option<PodSecurityContext>,
    #[serde(default, rename = "hostNetwork")]
    pub host_network: Option<bool>,
    #[serde(default, rename = "hostPID")]
    pub host_pid: Option<bool>,
    #[serde(default, rename = "hostIPC")]
    pub host_ipc: Option<bool>,
    #[serde(default)]
    pub host_users: Option<bool>,
    #[serde(default)]
    pub os: Option<PodOS>,
    #[serde(default)]
    pub volumes: Option<Vec<Volume>>,
}

/// A container (init, regular or ephemeral): what the checks read, and whether it takes a
/// Secret through an env var (DAT-01).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimContainer {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub security_context: Option<SecurityContext>,
    #[serde(default)]
    pub ports: Option<Vec<ContainerPort>>,
    #[serde(default)]
    pub liveness_probe: Option<Probe>,
    #[serde(default)]
    pub readiness_probe: Option<Probe>,
    #[serde(default)]
    pub startup_probe: Option<Probe>,
    #[serde(default)]
    pub lifecycle: Option<Lifecycle>,
    #[serde(default)]
    pub env: Option<Vec<EnvVar>>,
    #[serde(default)]
    pub env_from: Option<Vec<EnvFrom>>,
}

/// An env var: only whether its value comes from a Secret.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    #[serde(default)]
    pub value_from: Option<EnvVarSource>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    #[serde(default)]
    pub secret_key_ref: Option<IgnoredAny>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvFrom {
    #[serde(default)]
    pub secret_ref: Option<IgnoredAny>,
}

impl SlimContainer {
    /// Takes a Secret through `env` or `envFrom`.
    pub fn reads_secret_from_env(&self) -> bool {
        self.env.iter().flatten().any(|e| {
            e.value_from
                .as_ref()
                .is_some_and(|v| v.secret_key_ref.is_some())
        }) || self
            .env_from
            .iter()
            .flatten()
            .any(|e| e.secret_ref.is_some())
    }
}

/// A container as the checks take it.
macro_rules! typed_container {
    ($ty:ident, $c:expr) => {
        $ty {
            name: $c.name,
            security_context: $c.security_context,
            ports: $c.ports,
            liveness_probe: $c.liveness_probe,
            readiness_probe: $c.readiness_probe,
            startup_probe: $c.startup_probe,
            lifecycle: $c.lifecycle,
            ..$ty::default()
        }
    };
}

impl SlimPodSpec {
    /// The containers that take a Secret through an env var, every kind: init, regular and
    /// ephemeral (a `kubectl debug` container of a bare Pod reads a Secret as well as any).
    pub fn secret_env(&self) -> Vec<String> {
        self.init_containers
            .iter()
            .flatten()
            .chain(&self.containers)
            .chain(self.ephemeral_containers.iter().flatten())
            .filter(|c| c.reads_secret_from_env())
            .map(|c| c.name.clone())
            .collect()
    }

    /// The typed pod spec the checks take (only the fields decoded here are set).
    pub fn into_pod_spec(self) -> PodSpec {
        PodSpec {
            containers: self
                .containers
                .into_iter()
                .map(|c| typed_container!(Container, c))
                .collect(),
            init_containers: self.init_containers.map(|cs| {
                cs.into_iter()
                    .map(|c| typed_container!(Container, c))
                    .collect()
            }),
            ephemeral_containers: self.ephemeral_containers.map(|cs| {
                cs.into_iter()
                    .map(|c| typed_container!(EphemeralContainer, c))
                    .collect()
            }),
            security_context: self.security_context,
            host_network: self.host_network,
            host_pid: self.host_pid,
            host_ipc: self.host_ipc,
            host_users: self.host_users,
            os: self.os,
            volumes: self.volumes,
            ..PodSpec::default()
        }
    }
}

#[cfg(test)]
mod tests;
