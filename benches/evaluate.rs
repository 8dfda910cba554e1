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
    remediate::{PlanMode, Planner, Previews, plan, preview, wants},
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

/// The minimum and the median of `runs` runs of `f` (after one warm-up run): the minimum is
/// the figure least disturbed by other load on a shared machine.
fn min_median(runs: usize, mut f: impl FnMut() -> Duration) -> (Duration, Duration) {
    f();
    let mut all: Vec<Duration> = (0..runs).map(|_| f()).collect();
    all.sort();
    (all[0], all[all.len() / 2])
}

/// Re-evaluation after a one-object change (a Deployment turns privileged or back), at 500
/// namespaces × 10 Deployments, with 1 and 100 policies that all govern the changed namespace.
/// Per change: every policy's evaluation and remediation preview, and the Enforce plan.
/// - before: what every reconcile did before incremental evaluation: the plan of all
///   policies, then the policy's evaluation and preview from scratch (per policy);
/// - after: the plan once through the [`Planner`] (wants kept, actions planned again in the
///   changed namespace only), evaluations through the [`Evaluator`] and previews through
///   [`Previews`] (each memoised per spec and updated by the changed namespace's delta).
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
        "Per one-object change, {NAMESPACES} namespaces × {WORKLOADS} Deployments (min / median)"
    );
    println!(
        "{:>8} {:>5} {:>21} {:>21} {:>21} {:>21} {:>21} {:>21}",
        "policies",
        "specs",
        "before: evaluations",
        "before: total",
        "after: evaluations",
        "after: previews",
        "after: plan",
        "after: total"
    );
    let show = |(min, median): (Duration, Duration)| format!("{min:>9.2?} / {median:>9.2?}");
    let mut one_policy = Duration::ZERO;
    for (count, distinct) in [(1, false), (100, false), (100, true)] {
        let policies = policies(count, distinct);
        let mut flip = 0usize;
        let mut change = |index: &mut Index| {
            flip += 1;
            let ns = format!("ns-{:05}", flip % NAMESPACES);
            set_deployment(index, &ns, 1, flip.is_multiple_of(2));
        };
        // Before: per policy, the plan of all policies, then evaluation and preview.
        let runs = if count == 1 { 15 } else { 3 };
        let mut evals = Vec::new();
        let total_before = min_median(runs, || {
            change(&mut index);
            let start = Instant::now();
            let mut eval = Duration::ZERO;
            for p in &policies {
                let wants = wants(policies.iter(), &index, false);
                std::hint::black_box(plan(&wants, &index, PlanMode::Converge));
                let e = Instant::now();
                std::hint::black_box(evaluate(&p.spec, &index, now));
                eval += e.elapsed();
                std::hint::black_box(preview(p, &index));
            }
            evals.push(eval);
            start.elapsed()
        });
        evals.sort();
        let evals_before = (evals[0], evals[evals.len() / 2]);
        // After: the plan once per change, evaluations cached, previews per namespace and want.
        let mut evaluator = Evaluator::default();
        let mut previews = Previews::default();
        let mut planner = Planner::default();
        let refs: Vec<&ResponsibilityPolicy> = policies.iter().collect();
        planner.plan(&refs, &index);
        for p in &policies {
            evaluator.evaluate(&p.spec, &index, now);
            previews.get(p, &index);
        }
        let (mut evals, mut prevs, mut plans) = (Vec::new(), Vec::new(), Vec::new());
        let computed = evaluator.stats().namespaces_computed;
        let runs = 15;
        let total_after = min_median(runs, || {
            change(&mut index);
            let start = Instant::now();
            std::hint::black_box(planner.plan(&refs, &index));
            plans.push(start.elapsed());
            let (mut eval, mut prev) = (Duration::ZERO, Duration::ZERO);
            for p in &policies {
                let e = Instant::now();
                std::hint::black_box(evaluator.evaluate(&p.spec, &index, now));
                eval += e.elapsed();
                let e = Instant::now();
                std::hint::black_box(previews.get(p, &index));
                prev += e.elapsed();
            }
            evals.push(eval);
            prevs.push(prev);
            start.elapsed()
        });
        let stat = |mut v: Vec<Duration>| {
            v.sort();
            (v[0], v[v.len() / 2])
        };
        let specs = if distinct { count } else { 1 };
        if count == 1 {
            one_policy = total_after.0;
        }
        println!(
            "{count:>8} {specs:>5} {} {} {} {} {} {}",
            show(evals_before),
            show(total_before),
            show(stat(evals)),
            show(stat(prevs)),
            show(stat(plans)),
            show(total_after),
        );
        let per_change =
            (evaluator.stats().namespaces_computed - computed) as f64 / (runs + 1) as f64;
        let (stats, preview_stats, plan_stats) =
            (evaluator.stats(), previews.stats(), planner.stats());
        println!(
            "{:>14} namespace verdicts recomputed per change: {per_change}; per policy {:.2?} \
             (min); {:.1}× one policy (min); evaluations assembled {} / by delta {}, \
             previews assembled {} / by delta {}, plans full {} / by delta {}",
            "",
            total_after.0 / count as u32,
            total_after.0.as_secs_f64() / one_policy.as_secs_f64(),
            stats.assembled,
            stats.deltas,
            preview_stats.assembled,
            preview_stats.deltas,
            plan_stats.full,
            plan_stats.deltas,
        );
    }
}
