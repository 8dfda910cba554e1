//! How long one policy evaluation, and one Enforce plan, take as the cluster grows (pure code,
//! no API server).
//! Run with `cargo bench --bench evaluate`; it measures, it asserts nothing.

use std::time::{Duration, Instant};

use onus::{
    crd::{ResponsibilityPolicy, ResponsibilityPolicySpec},
    evaluate::evaluate,
    facts::{self, WorkloadKind},
    index::{Index, Key},
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
}
