//! How long one policy evaluation, and one Enforce plan, take as the cluster grows (pure code,
//! no API server).
//! Run with `cargo bench --bench evaluate`; it measures, it asserts nothing.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use onus::{
    crd::{PodSecurityLevel, ResponsibilityPolicy, ResponsibilityPolicySpec},
    evaluate::{Evaluator, evaluate},
    facts::{self, WorkloadKind},
    index::{Index, Key},
    podsecurity::{self, Verdicts, Version},
    remediate::{PlanMode, Previews, plan, preview, wants},
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
    // `cargo test --all-targets` runs this binary too (without `--bench`): in a debug build the
    // full sizes take many minutes and measure nothing useful, so it only says how to run it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benches/evaluate: run `cargo bench --bench evaluate` for numbers");
        return;
    }
    incremental();
    println!();
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

/// A Deployment in the incremental-evaluation fixture: every fifth one privileged.
fn set_deployment(index: &mut Index, ns: &str, w: usize, privileged: bool) {
    let name = format!("app-{w}");
    let d = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {}, "template": {"spec": {"containers": [{
            "name": "app", "image": "nginx",
            "securityContext": {"privileged": privileged, "runAsNonRoot": true,
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"}}
        }]}}}
    }))
    .expect("deployment");
    index
        .workloads_mut(WorkloadKind::Deployment)
        .apply(Key::new(Some(ns), &name), facts::deployment(&d));
    index.touch("Deployment", Some(ns));
}

/// `policies` Enforce policies over every `env=prod` namespace; `distinct`: each with its own
/// spec (its own excluded namespace, alternating baseline and restricted), otherwise equal.
fn policies(count: usize, distinct: bool) -> Vec<ResponsibilityPolicy> {
    (0..count)
        .map(|i| {
            let (excluded, level) = if distinct {
                (format!("none-{i}"), ["restricted", "baseline"][i % 2])
            } else {
                ("none".to_string(), "restricted")
            };
            serde_json::from_value(json!({
                "apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
                "metadata": {"name": format!("p{i}")},
                "spec": {"serviceModel": "PaaS", "mode": "Enforce",
                         "namespaceSelector": {"matchLabels": {"env": "prod"}},
                         "excludedNamespaces": [excluded],
                         "controls": {"podSecurity": {"level": level}}}
            }))
            .expect("policy")
        })
        .collect()
}

/// Re-evaluation after a one-object change (a Deployment turns privileged or back), at 500
/// namespaces × 10 Deployments, with 1 and 100 policies that all govern the changed namespace.
/// Per change: every policy's evaluation and remediation preview, and the Enforce plan.
/// - before: what every reconcile did before incremental evaluation: the plan of all
///   policies, then the policy's evaluation and preview from scratch (per policy);
/// - after: the plan once, evaluations through the [`Evaluator`], previews through
///   [`Previews`] (per namespace and distinct want).
fn incremental() {
    const NAMESPACES: usize = 500;
    const WORKLOADS: usize = 10;
    let mut index = cluster(NAMESPACES, 0);
    for n in 0..NAMESPACES {
        let ns = format!("ns-{n:05}");
        for w in 0..WORKLOADS {
            set_deployment(&mut index, &ns, w, w % 5 == 0);
        }
    }
    let now = jiff::Timestamp::now();
    println!(
        "Re-evaluation after a one-object change, {NAMESPACES} namespaces × {WORKLOADS} Deployments"
    );
    println!(
        "{:>9} {:>9} {:>14} {:>14} {:>14} {:>14} {:>10}",
        "policies",
        "specs",
        "eval before",
        "eval after",
        "total before",
        "total after",
        "per policy"
    );
    for (count, distinct) in [(1, false), (100, false), (100, true)] {
        let policies = policies(count, distinct);
        let mut evaluator = Evaluator::default();
        let mut previews = Previews::default();
        let mut flip = 0usize;
        let mut change = |index: &mut Index| {
            flip += 1;
            let ns = format!("ns-{:05}", flip % NAMESPACES);
            set_deployment(index, &ns, 1, flip.is_multiple_of(2));
        };
        // Before: per policy, the plan of all policies, then evaluation and preview.
        let mut eval_before = Duration::ZERO;
        let runs = if count == 1 { 20 } else { 2 };
        let total_before = time(runs, || {
            change(&mut index);
            for p in &policies {
                let wants = wants(policies.iter(), &index, false);
                std::hint::black_box(plan(&wants, &index, PlanMode::Converge));
                let start = Instant::now();
                std::hint::black_box(evaluate(&p.spec, &index, now));
                eval_before += start.elapsed();
                std::hint::black_box(preview(p, &index));
            }
        });
        let eval_before = eval_before / (runs + 1);
        // After: the plan once per change, evaluations cached, previews per distinct spec.
        for p in &policies {
            evaluator.evaluate(&p.spec, &index, now);
            previews.get(p, &index);
        }
        let runs = 20;
        let mut eval_after = Duration::ZERO;
        let total_after = time(runs, || {
            change(&mut index);
            let wants = wants(policies.iter(), &index, false);
            std::hint::black_box(plan(&wants, &index, PlanMode::Converge));
            for p in &policies {
                let start = Instant::now();
                std::hint::black_box(evaluator.evaluate(&p.spec, &index, now));
                eval_after += start.elapsed();
                std::hint::black_box(previews.get(p, &index));
            }
        });
        let eval_after = eval_after / (runs + 1);
        let specs = if distinct { count } else { 1 };
        println!(
            "{count:>9} {specs:>9} {eval_before:>14?} {eval_after:>14?} {total_before:>14?} {total_after:>14?} {:>10?}",
            total_after / count as u32
        );
    }
}
