//! How long one policy evaluation, and one Enforce plan, take as the cluster grows (pure code,
//! no API server).
//! Run with `cargo bench --bench evaluate`; it measures, it asserts nothing.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use onus::{
    crd::{PodSecurityLevel, ResponsibilityPolicy, ResponsibilityPolicySpec},
    evaluate::evaluate,
    facts::{self, WorkloadKind},
    index::{Index, Key},
    podsecurity::{self, Verdicts, Version},
    remediate::{PlanMode, plan, wants},
};
use serde_json::json;

/// A cluster of `namespaces` namespaces with `per_namespace` Deployments each, half privileged.
fn cluster(namespaces: usize, per_namespace: usize) -> Index {
    let mut index = Index::default();
    for n in 0..namespaces {
        let ns = format!("ns-{n:05}");
        let labels = [("env".to_string(), "prod".to_string())].into();
        index.namespaces.apply(
            Key::new(None, &ns),
            Some(facts::NamespaceFact {
                labels,
                ..Default::default()
            }),
        );
        for w in 0..per_namespace {
            let name = format!("app-{w}");
            let d = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {"selector": {}, "template": {"spec": {"containers": [{
                    "name": "app", "image": "nginx",
                    "securityContext": {"privileged": w % 2 == 0}
                }]}}}
            }))
            .expect("deployment");
            index
                .workloads_mut(WorkloadKind::Deployment)
                .apply(Key::new(Some(&ns), &name), facts::deployment(&d));
        }
    }
    index
}

fn time(runs: u32, mut f: impl FnMut()) -> Duration {
    f();
    let start = Instant::now();
    for _ in 0..runs {
        f();
    }
    start.elapsed() / runs
}

fn main() {
    let spec: ResponsibilityPolicySpec = serde_json::from_value(json!({
        "serviceModel": "PaaS",
        "namespaceSelector": {"matchLabels": {"env": "prod"}},
        "controls": {"podSecurity": {"level": "restricted"}}
    }))
    .expect("spec");
    let now = jiff::Timestamp::now();
    println!(
        "{:>10} {:>10} {:>14} {:>14}",
        "namespaces", "workloads", "per evaluation", "per workload"
    );
    for (namespaces, per_namespace) in [(10, 10), (100, 10), (1_000, 10), (1_000, 50)] {
        let index = cluster(namespaces, per_namespace);
        let workloads = namespaces * per_namespace;
        let took = time(5, || {
            std::hint::black_box(evaluate(&spec, &index, now));
        });
        println!(
            "{namespaces:>10} {workloads:>10} {:>14?} {:>14?}",
            took,
            took / workloads as u32
        );
    }

    // The Enforce plan: merged wants and the actions (with the Pod Security gate per namespace).
    let policy: ResponsibilityPolicy = serde_json::from_value(json!({
        "apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
        "metadata": {"name": "bench"},
        "spec": {"serviceModel": "PaaS", "mode": "Enforce",
                 "namespaceSelector": {"matchLabels": {"env": "prod"}},
                 "controls": {"podSecurity": {"level": "restricted"}}}
    }))
    .expect("policy");
    println!();
    println!(
        "{:>10} {:>10} {:>14} {:>14}",
        "namespaces", "workloads", "per plan", "per namespace"
    );
    for (namespaces, per_namespace) in [(10, 10), (100, 10), (1_000, 10), (1_000, 50)] {
        let index = cluster(namespaces, per_namespace);
        let workloads = namespaces * per_namespace;
        let took = time(5, || {
            let wants = wants([&policy], &index, false);
            std::hint::black_box(plan(&wants, &index, PlanMode::Converge));
        });
        println!(
            "{namespaces:>10} {workloads:>10} {:>14?} {:>14?}",
            took,
            took / namespaces as u32
        );
    }

    // Pod Security per object change: what the facts compute today (`evaluate` at latest for
    // both levels) against every check's outcome once (`Verdicts::of`), and then answering one
    // level and version from those outcomes (`failing`).
    println!();
    println!(
        "{:>22} {:>14} {:>14} {:>14}",
        "pod", "2x evaluate", "Verdicts::of", "failing"
    );
    for (name, pod) in bench_pods() {
        let (meta, spec) = (&pod.metadata, pod.spec.as_ref().expect("spec"));
        let runs = 20_000;
        let evaluated = time(runs, || {
            for level in [PodSecurityLevel::Baseline, PodSecurityLevel::Restricted] {
                std::hint::black_box(podsecurity::evaluate(meta, spec, level, Version::Latest));
            }
        });
        let of = time(runs, || {
            std::hint::black_box(Verdicts::of(meta, spec));
        });
        let verdicts = Verdicts::of(meta, spec);
        let failing = time(runs, || {
            std::hint::black_box(
                std::hint::black_box(verdicts)
                    .failing(PodSecurityLevel::Restricted, Version::Minor(30)),
            );
        });
        println!("{name:>22} {evaluated:>14?} {of:>14?} {failing:>14?}");
    }
}

/// Pods from plain to busy: the cost of the checks grows with containers and with failures
/// (each failure formats its detail).
fn bench_pods() -> Vec<(&'static str, Pod)> {
    let container = |name: &str, security: serde_json::Value| {
        json!({"name": name, "image": "nginx", "securityContext": security,
               "ports": [{"containerPort": 80}],
               "livenessProbe": {"httpGet": {"port": 80}}})
    };
    let hardened = json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}});
    let pods = [
        ("bare", json!({"containers": [container("app", json!({}))]})),
        (
            "privileged",
            json!({"containers": [container("app", json!({"privileged": true}))]}),
        ),
        (
            "restricted",
            json!({"securityContext": {"runAsNonRoot": true,
                                       "seccompProfile": {"type": "RuntimeDefault"}},
                   "containers": [container("app", hardened.clone())]}),
        ),
        (
            "4 containers, 3 volumes",
            json!({"securityContext": {"runAsNonRoot": true,
                                       "seccompProfile": {"type": "RuntimeDefault"},
                                       "sysctls": [{"name": "net.ipv4.tcp_rmem", "value": "1"}]},
                   "initContainers": [container("init", hardened.clone())],
                   "containers": [container("app", hardened.clone()),
                                  container("sidecar", json!({"capabilities": {"add": ["NET_ADMIN"]}})),
                                  container("proxy", hardened)],
                   "volumes": [{"name": "a", "emptyDir": {}},
                               {"name": "b", "configMap": {"name": "b"}},
                               {"name": "c", "hostPath": {"path": "/var/log"}}]}),
        ),
    ];
    pods.into_iter()
        .map(|(name, spec)| {
            let pod = json!({"metadata": {"name": name}, "spec": spec});
            (name, serde_json::from_value(pod).expect("pod"))
        })
        .collect()
}
