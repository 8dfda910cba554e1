//! The fixture: namespaces full of realistic objects, a known share of them violating, and the
//! counts every policy must report for it (the model the driver checks onus against).
//!
//! Per namespace `i` (all labelled `onus-bench=fixture`):
//! - 10 Deployments (replicas 2), each with its ReplicaSet and 2 owned Pods: 2 containers with
//!   env, ports, resources, probes, volumes; restricted-compliant except the violating ones
//!   (global Deployment number `g = 10 i + j`, violating when `g % 14 == 0`, ≈ 7 %; the kind
//!   of violation cycles: privileged, hostPath, runAsUser 0, NET_ADMIN plus a Secret in env);
//! - 5 Services (headless; in every 25th namespace one ClusterIP Service with externalIPs);
//! - 6 ServiceAccounts (`default`, made by the controller-manager, and `app-0`..`app-4`);
//! - a Role and 3 RoleBindings (in every 20th namespace the Role has `verbs: ["*"]`);
//! - `i % 3` NetworkPolicies (a default deny of ingress, then an allow rule that in every 12th
//!   namespace allows all ingress);
//! - Pod Security `warn`/`audit` labels in every third namespace, no `enforce` label anywhere.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, ReplicaSet},
        core::v1::{Namespace, Pod, Service, ServiceAccount},
        networking::v1::NetworkPolicy,
        rbac::v1::{Role, RoleBinding},
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, Client, Resource, ResourceExt as _,
    api::{ListParams, PostParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

/// The label every fixture namespace carries; policies select it.
pub const FIXTURE_LABEL: &str = "onus-bench";
pub const FIXTURE_VALUE: &str = "fixture";
/// Field manager of everything the driver writes.
pub const MANAGER: &str = "onus-bench";

const DEPLOYMENTS: [&str; 10] = [
    "frontend", "api", "worker", "cache", "auth", "search", "billing", "notify", "report",
    "gateway",
];
pub const DEPLOYMENTS_PER_NS: usize = DEPLOYMENTS.len();
pub const REPLICAS: usize = 2;
pub const SERVICES_PER_NS: usize = 5;
/// ServiceAccounts the driver makes (plus `default`).
pub const SERVICE_ACCOUNTS_PER_NS: usize = 5;
pub const ROLE_BINDINGS_PER_NS: usize = 3;

/// Fixture sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    S,
    M,
    L,
}

impl Size {
    pub fn namespaces(self) -> usize {
        match self {
            Size::S => 50,
            Size::M => 500,
            Size::L => 2500,
        }
    }
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "S" | "s" => Ok(Size::S),
            "M" | "m" => Ok(Size::M),
            "L" | "l" => Ok(Size::L),
            _ => Err(format!("unknown size {s:?} (S, M or L)")),
        }
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Size::S => "S",
            Size::M => "M",
            Size::L => "L",
        })
    }
}

/// How a Deployment of the fixture breaks Pod Security (or `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breach {
    /// A privileged container (restricted: also no `allowPrivilegeEscalation: false`).
    Privileged,
    /// A hostPath volume (baseline: WKL-02; restricted: WKL-09, which replaces that check).
    HostPath,
    /// A container with `runAsUser: 0` (restricted only).
    RunAsRoot,
    /// `NET_ADMIN` added, and a Secret read into an env var (DAT-01).
    CapabilityAndSecretEnv,
}

/// Who makes the ReplicaSets and owned Pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owners {
    /// The Deployment and ReplicaSet controllers of kube-controller-manager.
    Controllers,
    /// The driver, with the same ownerReferences the controllers set (faster at M and L).
    Driver,
}

/// The fixture of one size (pure: names and rules, no API calls).
#[derive(Clone, Debug)]
pub struct Fixture {
    pub namespaces: usize,
}

pub fn ns_name(i: usize) -> String {
    format!("bench-{i:04}")
}

impl Fixture {
    pub fn new(size: Size) -> Self {
        Fixture {
            namespaces: size.namespaces(),
        }
    }

    pub fn breach(&self, i: usize, j: usize) -> Option<Breach> {
        let g = i * DEPLOYMENTS_PER_NS + j;
        g.is_multiple_of(14).then_some(match (g / 14) % 4 {
            0 => Breach::Privileged,
            1 => Breach::HostPath,
            2 => Breach::RunAsRoot,
            _ => Breach::CapabilityAndSecretEnv,
        })
    }

    pub fn psa_visible(&self, i: usize) -> bool {
        i.is_multiple_of(3)
    }
    pub fn network_policies(&self, i: usize) -> usize {
        i % 3
    }
    pub fn allow_all_ingress(&self, i: usize) -> bool {
        i % 3 == 2 && (i / 3).is_multiple_of(4)
    }
    pub fn external_ips(&self, i: usize) -> bool {
        i % 25 == 7
    }
    pub fn wildcard_role(&self, i: usize) -> bool {
        i % 20 == 3
    }

    /// The manifests of namespace `i` as a repository would hold them: the Namespace, its
    /// Deployments, Services, ServiceAccounts, Role, RoleBindings and NetworkPolicies (no
    /// ReplicaSets or Pods: controllers make those in a cluster).
    pub fn manifests(&self, i: usize) -> Vec<Value> {
        let mut out = vec![namespace(self, i)];
        out.extend((0..DEPLOYMENTS_PER_NS).map(|j| deployment(self, i, j)));
        out.extend((0..SERVICES_PER_NS).map(|s| service(self, i, s)));
        out.extend((0..SERVICE_ACCOUNTS_PER_NS).map(|s| service_account(i, s)));
        out.push(role(self, i));
        out.extend((0..ROLE_BINDINGS_PER_NS).map(|b| role_binding(i, b)));
        out.extend((0..self.network_policies(i)).map(|n| network_policy(self, i, n)));
        out
    }

    /// Watched objects of the fixture (namespaces, Deployments, ReplicaSets, Pods, Services,
    /// ServiceAccounts, Roles, RoleBindings, NetworkPolicies).
    pub fn objects(&self) -> usize {
        (0..self.namespaces)
            .map(|i| {
                1 + DEPLOYMENTS_PER_NS * (2 + REPLICAS)
                    + SERVICES_PER_NS
                    + SERVICE_ACCOUNTS_PER_NS
                    + 1
                    + 1
                    + ROLE_BINDINGS_PER_NS
                    + self.network_policies(i)
            })
            .sum()
    }

    /// Violating Deployments (5–10 % of them).
    pub fn violating_deployments(&self) -> usize {
        (0..self.namespaces)
            .flat_map(|i| (0..DEPLOYMENTS_PER_NS).map(move |j| (i, j)))
            .filter(|&(i, j)| self.breach(i, j).is_some())
            .count()
    }

    /// The violations per control a policy at `restricted` (else baseline) governing every
    /// fixture namespace must report, with `probes` privileged probe Pods present.
    pub fn expected(&self, restricted: bool, probes: u64) -> BTreeMap<&'static str, u64> {
        let mut e: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut add = |control: &'static str, n: u64| *e.entry(control).or_default() += n;
        for i in 0..self.namespaces {
            add("WKL-01", 1); // no enforce label
            add("IAM-09", 1); // the default ServiceAccount mounts its token
            add("NET-02", 1); // nothing denies egress (the control is not requested)
            if !self.psa_visible(i) {
                add("AUD-01", 1);
            }
            if self.network_policies(i) == 0 {
                add("NET-01", 1);
            }
            if self.allow_all_ingress(i) {
                add("NET-03", 1);
            }
            if self.external_ips(i) {
                add("NET-05", 1);
            }
            if self.wildcard_role(i) {
                add("IAM-02", ROLE_BINDINGS_PER_NS as u64); // one per (binding, subject)
            }
            for j in 0..DEPLOYMENTS_PER_NS {
                match self.breach(i, j) {
                    None => {}
                    Some(Breach::Privileged) => {
                        add("WKL-03", 1);
                        if restricted {
                            add("WKL-06", 1);
                        }
                    }
                    // Restricted's volume-type check replaces baseline's hostPath check
                    // (as in the PodSecurity admission).
                    Some(Breach::HostPath) => add(if restricted { "WKL-09" } else { "WKL-02" }, 1),
                    Some(Breach::RunAsRoot) if restricted => add("WKL-07", 1),
                    Some(Breach::RunAsRoot) => {}
                    Some(Breach::CapabilityAndSecretEnv) => {
                        add("WKL-04", 1);
                        add("DAT-01", 1);
                    }
                }
            }
        }
        add("WKL-03", probes);
        if restricted {
            add("WKL-06", probes);
        }
        e.retain(|_, n| *n > 0);
        e
    }
}

/// Controls whose violations do not make the policy fail (and so are not in
/// `summary.violations`): NET-02 is not requested (default deny of ingress only), the others
/// are not observable here (no policy-capable CNI; informational controls).
pub const NOT_FAILING: &[&str] = &["NET-02", "NET-04", "DAT-02", "AUD-02"];

fn hash_name(seed: &str, len: usize) -> String {
    // Deterministic lowercase alphanumerics, as the controllers' names look.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (0..len)
        .map(|k| {
            let x = h.rotate_left((k * 7) as u32) ^ (k as u64).wrapping_mul(0x9e37_79b9);
            ALPHABET[(x % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

fn app_container(app: &str, ns: usize, breach: Option<Breach>) -> Value {
    let mut security = json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]},
    });
    let mut env = vec![
        json!({"name": "APP_NAME", "value": app}),
        json!({"name": "APP_ENV", "value": "production"}),
        json!({"name": "LOG_LEVEL", "value": "info"}),
        json!({"name": "LOG_FORMAT", "value": "json"}),
        json!({"name": "HTTP_PORT", "value": "8080"}),
        json!({"name": "METRICS_PORT", "value": "9090"}),
        json!({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector.observability.svc:4317"}),
        json!({"name": "OTEL_SERVICE_NAME", "value": format!("{app}.team-{}", ns % 7)}),
        json!({"name": "FEATURE_FLAGS", "value": "new-checkout,async-export,beta-search"}),
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
        json!({"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}),
        json!({"name": "CACHE_URL", "valueFrom": {"configMapKeyRef": {"name": format!("{app}-config"), "key": "cache-url"}}}),
        json!({"name": "GOMAXPROCS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}}}),
    ];
    let mut mounts = vec![
        json!({"name": "config", "mountPath": "/etc/app", "readOnly": true}),
        json!({"name": "tmp", "mountPath": "/tmp"}),
        json!({"name": "tls", "mountPath": "/etc/tls", "readOnly": true}),
    ];
    match breach {
        Some(Breach::Privileged) => {
            security = json!({
                "privileged": true,
                "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"]},
            });
        }
        Some(Breach::HostPath) => {
            mounts
                .push(json!({"name": "host-logs", "mountPath": "/host/var/log", "readOnly": true}));
        }
        Some(Breach::RunAsRoot) => {
            security["runAsUser"] = json!(0);
        }
        Some(Breach::CapabilityAndSecretEnv) => {
            security["capabilities"] = json!({"add": ["NET_ADMIN"], "drop": ["ALL"]});
            env.push(json!({"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": format!("{app}-db"), "key": "password"}}}));
        }
        None => {}
    }
    json!({
        "name": app,
        "image": format!("registry.example.com/team-{}/{app}:1.{}.{}", ns % 7, 20 + ns % 9, ns % 13),
        "imagePullPolicy": "IfNotPresent",
        "args": ["--http-port=8080", "--metrics-port=9090", "--config=/etc/app/config.yaml"],
        "ports": [
            {"name": "http", "containerPort": 8080, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
        ],
        "env": env,
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        "volumeMounts": mounts,
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "initialDelaySeconds": 10, "periodSeconds": 10, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
        "securityContext": security,
    })
}

fn sidecar() -> Value {
    json!({
        "name": "proxy",
        "image": "registry.example.com/platform/envoy:1.31.2",
        "args": ["--config-path", "/etc/envoy/envoy.yaml", "--log-level", "warn"],
        "ports": [{"name": "proxy", "containerPort": 15001, "protocol": "TCP"}, {"name": "admin", "containerPort": 15000, "protocol": "TCP"}],
        "env": [
            {"name": "ENVOY_UID", "value": "10001"},
            {"name": "SERVICE_CLUSTER", "value": "mesh"},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
        "volumeMounts": [{"name": "proxy-config", "mountPath": "/etc/envoy", "readOnly": true}],
        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
    })
}

/// A Pod spec: two containers, restricted-compliant unless `breach`.
pub fn pod_spec(app: &str, ns: usize, sa: usize, breach: Option<Breach>) -> Value {
    let mut volumes = vec![
        json!({"name": "config", "configMap": {"name": format!("{app}-config")}}),
        json!({"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}),
        json!({"name": "tls", "secret": {"secretName": format!("{app}-tls"), "defaultMode": 288}}),
        json!({"name": "proxy-config", "configMap": {"name": "proxy-config"}}),
    ];
    if breach == Some(Breach::HostPath) {
        volumes.push(
            json!({"name": "host-logs", "hostPath": {"path": "/var/log", "type": "Directory"}}),
        );
    }
    json!({
        "serviceAccountName": format!("app-{sa}"),
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [app_container(app, ns, breach), sidecar()],
        "volumes": volumes,
        "terminationGracePeriodSeconds": 30,
        "tolerations": [{"key": "workload", "operator": "Equal", "value": "general", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": app}}}}
        ]}},
    })
}

fn app_labels(app: &str, ns: usize) -> Value {
    json!({
        "app": app,
        "app.kubernetes.io/name": app,
        "app.kubernetes.io/part-of": format!("shop-{}", ns % 11),
        "team": format!("team-{}", ns % 7),
        "version": format!("1.{}.{}", 20 + ns % 9, ns % 13),
    })
}

fn template_annotations(app: &str) -> Value {
    json!({
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9090",
        "checksum/config": format!("{:0>64}", hash_name(app, 24)),
    })
}

fn namespace(fx: &Fixture, i: usize) -> Value {
    let mut labels = json!({
        FIXTURE_LABEL: FIXTURE_VALUE,
        "team": format!("team-{}", i % 7),
        "environment": if i.is_multiple_of(4) { "staging" } else { "production" },
    });
    if fx.psa_visible(i) {
        labels["pod-security.kubernetes.io/warn"] = json!("restricted");
        labels["pod-security.kubernetes.io/audit"] = json!("restricted");
    }
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns_name(i), "labels": labels}})
}

fn deployment(fx: &Fixture, i: usize, j: usize) -> Value {
    let app = DEPLOYMENTS[j];
    let mut template_labels = app_labels(app, i);
    template_labels["app"] = json!(app);
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": app, "namespace": ns_name(i),
            "labels": app_labels(app, i),
            "annotations": {"deployment.kubernetes.io/revision": "1", "owner": format!("team-{}@example.com", i % 7)},
        },
        "spec": {
            "replicas": REPLICAS,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": {"app": app}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": template_labels, "annotations": template_annotations(app)},
                "spec": pod_spec(app, i, j % SERVICE_ACCOUNTS_PER_NS, fx.breach(i, j)),
            },
        },
    })
}

fn owner(api_version: &str, kind: &str, name: &str, uid: &str) -> Value {
    serde_json::to_value(OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
    .expect("owner reference")
}

fn replica_set(fx: &Fixture, i: usize, j: usize, deployment_uid: &str) -> (String, String, Value) {
    let app = DEPLOYMENTS[j];
    let hash = hash_name(&format!("{}/{app}", ns_name(i)), 10);
    let name = format!("{app}-{hash}");
    let mut labels = app_labels(app, i);
    labels["pod-template-hash"] = json!(hash);
    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": name, "namespace": ns_name(i), "labels": labels,
            "annotations": {"deployment.kubernetes.io/desired-replicas": "2", "deployment.kubernetes.io/max-replicas": "3", "deployment.kubernetes.io/revision": "1"},
            "ownerReferences": [owner("apps/v1", "Deployment", app, deployment_uid)],
        },
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": app, "pod-template-hash": hash}},
            "template": {
                "metadata": {"labels": labels, "annotations": template_annotations(app)},
                "spec": pod_spec(app, i, j % SERVICE_ACCOUNTS_PER_NS, fx.breach(i, j)),
            },
        },
    });
    (name, hash, rs)
}

fn owned_pod(
    fx: &Fixture,
    i: usize,
    j: usize,
    k: usize,
    rs: &str,
    hash: &str,
    rs_uid: &str,
) -> Value {
    let app = DEPLOYMENTS[j];
    let mut labels = app_labels(app, i);
    labels["pod-template-hash"] = json!(hash);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{rs}-{}", hash_name(&format!("{}/{rs}/{k}", ns_name(i)), 5)),
            "namespace": ns_name(i),
            "labels": labels,
            "annotations": template_annotations(app),
            "ownerReferences": [owner("apps/v1", "ReplicaSet", rs, rs_uid)],
        },
        "spec": pod_spec(app, i, j % SERVICE_ACCOUNTS_PER_NS, fx.breach(i, j)),
    })
}

/// A bare Pod in a fixture namespace: the probes (privileged) and the churn (compliant).
pub fn bare_pod(name: &str, i: usize, privileged: bool, label: &str) -> Value {
    let breach = privileged.then_some(Breach::Privileged);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": ns_name(i),
            "labels": {"app": "bench-probe", label: "true"},
        },
        "spec": pod_spec("probe", i, 0, breach),
    })
}

fn service(fx: &Fixture, i: usize, s: usize) -> Value {
    let app = DEPLOYMENTS[s];
    let mut spec = json!({
        "clusterIP": "None",
        "selector": {"app": app},
        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}, {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}],
    });
    if s == 0 && fx.external_ips(i) {
        spec = json!({
            "type": "ClusterIP",
            "selector": {"app": app},
            "externalIPs": ["203.0.113.10"],
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        });
    }
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": app, "namespace": ns_name(i), "labels": app_labels(app, i)},
        "spec": spec,
    })
}

fn service_account(i: usize, s: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": format!("app-{s}"), "namespace": ns_name(i), "labels": {"team": format!("team-{}", i % 7)}},
    })
}

fn role(fx: &Fixture, i: usize) -> Value {
    let rules = if fx.wildcard_role(i) {
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}])
    } else {
        json!([
            {"apiGroups": [""], "resources": ["configmaps", "services", "endpoints"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "watch"]},
        ])
    };
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "app-reader", "namespace": ns_name(i)},
        "rules": rules,
    })
}

fn role_binding(i: usize, b: usize) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": format!("app-reader-{b}"), "namespace": ns_name(i)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "app-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": format!("app-{b}"), "namespace": ns_name(i)}],
    })
}

fn network_policy(fx: &Fixture, i: usize, n: usize) -> Value {
    let (name, spec) = if n == 0 {
        (
            "default-deny-ingress",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        )
    } else if fx.allow_all_ingress(i) {
        (
            "allow-frontend",
            json!({"podSelector": {"matchLabels": {"app": "frontend"}}, "policyTypes": ["Ingress"], "ingress": [{}]}),
        )
    } else {
        (
            "allow-frontend",
            json!({
                "podSelector": {"matchLabels": {"app": "frontend"}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}], "ports": [{"port": 8080, "protocol": "TCP"}]}],
            }),
        )
    };
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns_name(i)},
        "spec": spec,
    })
}

/// Creates one object (retrying what the API server may refuse under load).
pub async fn create<K>(client: &Client, value: Value) -> anyhow::Result<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let obj: K = serde_json::from_value(value).context("fixture object")?;
    let ns = obj.namespace().unwrap_or_default();
    let api = Api::<K>::namespaced(client.clone(), &ns);
    create_with(&api, &obj).await
}

async fn create_with<K>(api: &Api<K>, obj: &K) -> anyhow::Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let pp = PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    };
    let mut attempt = 0;
    loop {
        match api.create(&pp, obj).await {
            Ok(created) => return Ok(created),
            Err(e) if attempt < 8 && retryable(&e) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("creating {}", obj.name_any()));
            }
        }
    }
}

fn retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500 || s.reason == "ServerTimeout",
        // Connection resets under load, and admission not yet seeing a new ServiceAccount.
        _ => true,
    }
}

/// Progress of a long creation, printed every few seconds.
struct Progress {
    done: AtomicU64,
    start: Instant,
    last: std::sync::Mutex<Instant>,
    what: String,
}

impl Progress {
    fn new(what: &str) -> Arc<Self> {
        Arc::new(Progress {
            done: AtomicU64::new(0),
            start: Instant::now(),
            last: std::sync::Mutex::new(Instant::now()),
            what: what.into(),
        })
    }
    fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() > Duration::from_secs(10) {
            *last = Instant::now();
            eprintln!(
                "  {}: {done} objects in {:.0} s",
                self.what,
                self.start.elapsed().as_secs_f64()
            );
        }
    }
}

/// Creates the whole fixture with `concurrency` requests in flight and waits until every object
/// exists (the controller-made `default` ServiceAccounts, and with [`Owners::Controllers`] the
/// ReplicaSets and Pods, included).
pub async fn build(
    client: &Client,
    fx: &Fixture,
    owners: Owners,
    concurrency: usize,
) -> anyhow::Result<()> {
    let n = fx.namespaces;
    let progress = Progress::new("fixture");
    futures::stream::iter((0..n).map(|i| {
        let client = client.clone();
        let progress = progress.clone();
        async move {
            let ns: Namespace = serde_json::from_value(namespace(fx, i))?;
            create_with(&Api::<Namespace>::all(client), &ns).await?;
            progress.add(1);
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(concurrency)
    .try_collect::<()>()
    .await?;

    // Everything the Pods depend on (their ServiceAccounts) first.
    let mut small: Vec<(usize, &'static str, Value)> = Vec::new();
    for i in 0..n {
        for s in 0..SERVICE_ACCOUNTS_PER_NS {
            small.push((i, "ServiceAccount", service_account(i, s)));
        }
        small.push((i, "Role", role(fx, i)));
        for b in 0..ROLE_BINDINGS_PER_NS {
            small.push((i, "RoleBinding", role_binding(i, b)));
        }
        for s in 0..SERVICES_PER_NS {
            small.push((i, "Service", service(fx, i, s)));
        }
        for p in 0..fx.network_policies(i) {
            small.push((i, "NetworkPolicy", network_policy(fx, i, p)));
        }
    }
    futures::stream::iter(small.into_iter().map(|(_, kind, value)| {
        let client = client.clone();
        let progress = progress.clone();
        async move {
            match kind {
                "ServiceAccount" => drop(create::<ServiceAccount>(&client, value).await?),
                "Role" => drop(create::<Role>(&client, value).await?),
                "RoleBinding" => drop(create::<RoleBinding>(&client, value).await?),
                "Service" => drop(create::<Service>(&client, value).await?),
                _ => drop(create::<NetworkPolicy>(&client, value).await?),
            }
            progress.add(1);
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(concurrency)
    .try_collect::<()>()
    .await?;

    let workloads = (0..n).flat_map(|i| (0..DEPLOYMENTS_PER_NS).map(move |j| (i, j)));
    futures::stream::iter(workloads.map(|(i, j)| {
        let client = client.clone();
        let progress = progress.clone();
        async move {
            let d: Deployment = create(&client, deployment(fx, i, j)).await?;
            progress.add(1);
            if owners == Owners::Driver {
                let uid = d.uid().context("deployment uid")?;
                let (rs_name, hash, rs) = replica_set(fx, i, j, &uid);
                let rs: ReplicaSet = create(&client, rs).await?;
                let rs_uid = rs.uid().context("replicaset uid")?;
                for k in 0..REPLICAS {
                    let pod = owned_pod(fx, i, j, k, &rs_name, &hash, &rs_uid);
                    let _: Pod = create(&client, pod).await?;
                }
                progress.add(1 + REPLICAS as u64);
            }
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(concurrency)
    .try_collect::<()>()
    .await?;

    // The controller-made objects.
    let deadline = Instant::now()
        + Duration::from_secs(match owners {
            Owners::Controllers => 300 + n as u64,
            Owners::Driver => 120 + n as u64 / 10,
        });
    let want_pods = n * DEPLOYMENTS_PER_NS * REPLICAS;
    let want_rs = n * DEPLOYMENTS_PER_NS;
    let want_sa = n * (SERVICE_ACCOUNTS_PER_NS + 1);
    loop {
        let pods = count_in_fixture::<Pod>(client).await?;
        let rs = count_in_fixture::<ReplicaSet>(client).await?;
        let sa = count_in_fixture::<ServiceAccount>(client).await?;
        if pods == want_pods && rs == want_rs && sa == want_sa {
            break;
        }
        if pods > want_pods || rs > want_rs || sa > want_sa {
            bail!(
                "more objects than the fixture makes: {pods} Pods, {rs} ReplicaSets, {sa} ServiceAccounts"
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the fixture did not complete: {pods}/{want_pods} Pods, {rs}/{want_rs} ReplicaSets, {sa}/{want_sa} ServiceAccounts"
            );
        }
        eprintln!(
            "  waiting for controllers: {pods}/{want_pods} Pods, {rs}/{want_rs} ReplicaSets, {sa}/{want_sa} ServiceAccounts"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    Ok(())
}

/// How many objects of kind `K` exist in fixture namespaces (paged metadata lists).
pub async fn count_in_fixture<K>(client: &Client) -> anyhow::Result<usize>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api = Api::<K>::all(client.clone());
    let mut params = ListParams::default().limit(2000);
    let mut count = 0;
    loop {
        let page = api.list_metadata(&params).await?;
        count += page
            .items
            .iter()
            .filter(|o| {
                o.metadata
                    .namespace
                    .as_deref()
                    .is_some_and(|ns| ns.starts_with("bench-"))
                    && !o.labels().contains_key(PROBE_LABEL)
                    && !o.labels().contains_key(CHURN_LABEL)
            })
            .count();
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(count),
        }
    }
}

/// Labels of the probe Pods (privileged) and the churn Pods (compliant).
pub const PROBE_LABEL: &str = "onus-bench-probe";
pub const CHURN_LABEL: &str = "onus-bench-churn";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_have_the_object_counts_of_the_issue() {
        let s = Fixture::new(Size::S).objects();
        let m = Fixture::new(Size::M).objects();
        let l = Fixture::new(Size::L).objects();
        assert!((2_500..3_200).contains(&s), "{s}");
        assert!((25_000..32_000).contains(&m), "{m}");
        assert!((120_000..160_000).contains(&l), "{l}");
    }

    #[test]
    fn five_to_ten_percent_of_the_deployments_violate() {
        let fx = Fixture::new(Size::M);
        let share = fx.violating_deployments() as f64 / (500.0 * 10.0);
        assert!((0.05..=0.10).contains(&share), "{share}");
        // Every kind of breach occurs.
        let kinds: std::collections::HashSet<_> = (0..500)
            .flat_map(|i| (0..10).map(move |j| (i, j)))
            .filter_map(|(i, j)| fx.breach(i, j).map(|b| format!("{b:?}")))
            .collect();
        assert_eq!(kinds.len(), 4);
    }

    #[test]
    fn baseline_sees_fewer_violations_than_restricted() {
        let fx = Fixture::new(Size::S);
        let r = fx.expected(true, 0);
        let b = fx.expected(false, 0);
        assert!(r["WKL-07"] > 0 && !b.contains_key("WKL-07"));
        assert_eq!(r["WKL-03"], b["WKL-03"]);
        assert_eq!(fx.expected(false, 3)["WKL-03"], b["WKL-03"] + 3);
    }

    #[test]
    fn a_pod_is_several_kilobytes() {
        let fx = Fixture::new(Size::S);
        let pod = owned_pod(&fx, 1, 1, 0, "api-x", "x", "uid");
        let len = serde_json::to_vec(&pod).expect("json").len();
        assert!((3_000..10_000).contains(&len), "{len}");
    }
}
