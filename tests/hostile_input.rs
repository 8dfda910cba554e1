//! Hostile and broken input, without a cluster: a corpus of more than a thousand generated
//! policies and objects (semantically wrong policies the schema lets through, huge policies,
//! unicode and maximum-length names, 1 MiB annotations, 1000 containers, deep selectors, wrong
//! types), then a bounded mutation fuzzer over the same decoding paths (policy decode and
//! validation, Pod and workload decode and projection).
//!
//! Each input must decode or be refused with an error, never panic; a policy refused by
//! validation gets a message naming a `spec.` field and a status under a fixed size; a valid
//! object is projected (never silently dropped). The fuzzer runs `ONUS_FUZZ_SECS` seconds per
//! target (10 by default; `make fuzz` runs longer) from a seed that `ONUS_FUZZ_SEED` can fix;
//! a failure prints the seed and the input.

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use onus::{
    crd::ResponsibilityPolicy,
    facts::{self, WorkloadKind, wire},
    status, validate,
};
use serde_json::{Value, json};

/// A status must stay under this size whatever the policy said.
const STATUS_BOUND: usize = 64 * 1024;

fn policy(spec: Value) -> Value {
    json!({"apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
           "metadata": {"name": "p", "generation": 3}, "spec": spec})
}

fn unicode_name(i: usize) -> String {
    let pieces = [
        "ü",
        "名前",
        "🙂",
        "\u{202e}",
        "a\u{0301}",
        "\u{0000}",
        "ß",
        "-",
        ".",
    ];
    (0..(i % 60 + 1))
        .map(|j| pieces[(i + j) % pieces.len()])
        .collect()
}

/// The policy corpus: `n` specs cycling through the kinds of hostile input.
fn policies(n: usize) -> Vec<Value> {
    let controls = [
        "WKL-03", "NET-01", "NOPE-99", "", "wkl-03", "IAM-01", "WKL-01",
    ];
    (0..n)
        .map(|i| match i % 12 {
            // Semantically wrong, schema-valid.
            0 => policy(json!({"serviceModel": "PaaS", "mode": "Audit",
                "controls": {"network": {"mode": "Enforce"}}})),
            1 => policy(json!({"serviceModel": "PaaS",
                "exceptions": [{"controls": [controls[i % controls.len()]],
                                "reason": "r", "expires": "2001-01-01T00:00:00Z"}]})),
            2 => policy(json!({"serviceModel": (["IaaS", "PaaS", "SaaS", "CaaS"][i % 4]),
                "responsibilities": [{"control": controls[i % controls.len()], "owner": "Provider"},
                                     {"control": controls[i % controls.len()], "owner": "Customer"}]})),
            // Huge: many exceptions, many namespaces (a few of each: they are slow to build).
            3 if i % 120 == 3 => policy(json!({"serviceModel": "PaaS",
                "exceptions": (0..10_000).map(|j| json!({"controls": ["WKL-03"],
                    "namespaces": [format!("ns-{j}")], "reason": "legacy"})).collect::<Vec<_>>()})),
            4 if i % 120 == 4 => policy(json!({"serviceModel": "PaaS",
                "excludedNamespaces": (0..10_000).map(|j| format!("ns-{j}")).collect::<Vec<_>>()})),
            // Names: unicode, maximum length and beyond.
            5 => policy(json!({"serviceModel": "PaaS",
                "excludedNamespaces": [unicode_name(i), "x".repeat(63 + i % 300)],
                "exceptions": [{"controls": ["WKL-03"], "reason": unicode_name(i),
                                "resources": [{"kind": unicode_name(i + 1), "name": "y".repeat(253 + i % 10)}]}]})),
            // Deep selectors.
            6 => policy(json!({"serviceModel": "PaaS", "namespaceSelector": {
                "matchLabels": (0..(i % 200)).map(|j| (format!("k{j}"), json!(unicode_name(j)))).collect::<serde_json::Map<_, _>>(),
                "matchExpressions": (0..(i % 300)).map(|j| json!({"key": format!("k{j}"),
                    "operator": (["In", "NotIn", "Exists", "DoesNotExist", "Bogus"][j % 5]),
                    "values": (0..(j % 7)).map(|v| format!("v{v}")).collect::<Vec<_>>()})).collect::<Vec<_>>()}})),
            // Wrong types where the schema would catch them (onus must not rely on it).
            7 => policy(json!({"serviceModel": 5, "mode": ["Enforce"]})),
            8 => policy(json!({"serviceModel": "PaaS", "exceptions": "all"})),
            9 => policy(json!({"serviceModel": "PaaS",
                "controls": {"podSecurity": {"level": (["privileged", "baseline", "restricted", "paranoid"][i % 4]),
                                             "version": (["latest", "v1.0", "v9.99", "", "1.30", "v1.37"][i % 6])}}})),
            10 => policy(json!({"serviceModel": "PaaS", "mode": "Enforce",
                "controls": {"network": {"defaultDeny": [(["Ingress", "Egress", "Sideways", ""][i % 4])],
                             "allowDefaultDenyInFrontOfWebhooks": [unicode_name(i)]}}})),
            _ => policy(json!({"serviceModel": "PaaS", "excludedNamespaces": [null, 1, {}]})),
        })
        .collect()
}

fn container(i: usize, privileged: bool) -> Value {
    json!({"name": format!("c{i}"), "image": "x",
           "securityContext": {"privileged": privileged, "runAsUser": i as i64 - 3,
                               "capabilities": {"add": ["SYS_ADMIN", unicode_name(i)]}}})
}

/// The object corpus: Pods and workloads, some invalid.
fn objects(n: usize) -> Vec<(WorkloadKind, Value)> {
    let kinds = [
        WorkloadKind::Pod,
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
        WorkloadKind::ReplicaSet,
        WorkloadKind::Job,
        WorkloadKind::CronJob,
    ];
    (0..n)
        .map(|i| {
            let kind = kinds[i % kinds.len()];
            let containers: Vec<Value> = match i % 9 {
                0 if i % 90 == 0 => (0..1000).map(|c| container(c, c == 999)).collect(),
                1 => vec![json!("not a container")],
                2 => vec![json!({"name": "c", "securityContext": 7})],
                _ => (0..(i % 5 + 1)).map(|c| container(c, i % 2 == 0)).collect(),
            };
            let mut annotations = serde_json::Map::new();
            if i % 100 == 7 {
                annotations.insert("big".into(), json!("a".repeat(1 << 20)));
            }
            annotations.insert(unicode_name(i), json!(unicode_name(i + 3)));
            let name = match i % 4 {
                0 => unicode_name(i),
                1 => "n".repeat(253),
                2 => "n".repeat(254 + i),
                _ => format!("w{i}"),
            };
            let pod_spec = json!({"containers": containers, "hostPID": i % 3 == 0,
                "volumes": [{"name": "v", "hostPath": {"path": "/"}}]});
            let template = json!({"metadata": {"labels": {"a": "b"}}, "spec": pod_spec});
            let metadata = json!({"name": name, "namespace": unicode_name(i + 1),
                                  "annotations": annotations, "uid": format!("u{i}")});
            let obj = match kind {
                WorkloadKind::Pod => json!({"metadata": metadata, "spec": pod_spec}),
                WorkloadKind::CronJob => json!({"metadata": metadata,
                    "spec": {"jobTemplate": {"spec": {"template": template}}}}),
                _ => json!({"metadata": metadata, "spec": {"template": template}}),
            };
            (kind, obj)
        })
        .collect()
}

fn now() -> Time {
    Time("2026-11-30T00:00:00Z".parse().expect("time"))
}

/// The policy path: decode, validate, and the status of a refused spec. Returns whether the
/// input decoded.
fn check_policy(text: &str) -> bool {
    let Ok(policy) = serde_json::from_str::<ResponsibilityPolicy>(text) else {
        return false;
    };
    if let Err(message) = validate::validate(&policy.spec) {
        assert!(
            message.starts_with("spec."),
            "a refusal must name the field: {message}"
        );
        let s = status::invalid(&message, policy.metadata.generation, None, &now());
        let size = serde_json::to_vec(&s).expect("status json").len();
        assert!(
            size < STATUS_BOUND,
            "status of {size} bytes for: {message:.200}"
        );
    }
    true
}

/// The object path: decode into the wire shape, project into facts. Returns whether it decoded.
fn check_object(kind: WorkloadKind, text: &str) -> bool {
    if kind == WorkloadKind::Pod {
        let Ok(pod) = serde_json::from_str::<wire::PodObject>(text) else {
            return false;
        };
        let _ = facts::pod(&pod);
    } else {
        let Ok(obj) = serde_json::from_str::<wire::WorkloadObject>(text) else {
            return false;
        };
        let _ = facts::workload(kind, &obj);
    }
    true
}

#[test]
fn the_hostile_corpus_is_decoded_or_refused_never_a_panic() {
    let policies = policies(720);
    let objects = objects(630);
    assert!(policies.len() + objects.len() >= 1000);
    let decoded = policies
        .iter()
        .filter(|p| check_policy(&p.to_string()))
        .count();
    // The well-typed ones decode (and are then validated); wrong types and unknown enum
    // values are refused by the decoder.
    assert!(
        decoded >= policies.len() / 3,
        "{decoded} of {} decoded",
        policies.len()
    );
    let mut projected = 0;
    for (kind, obj) in &objects {
        if check_object(*kind, &obj.to_string()) {
            projected += 1;
        }
    }
    assert!(
        projected >= objects.len() / 2,
        "{projected} of {} decoded",
        objects.len()
    );
}

#[test]
fn a_pod_with_1000_containers_keeps_its_one_privileged_container() {
    let (_, pod) = objects(1)
        .into_iter()
        .next()
        .expect("the first object has 1000 containers");
    let mut tame = pod.clone();
    tame["spec"]["containers"][999]["securityContext"]["privileged"] = json!(false);
    let verdicts = |v: Value| {
        let pod: wire::PodObject = serde_json::from_value(v).expect("decodes");
        format!("{:?}", facts::pod(&pod).expect("projected").verdicts)
    };
    // The last of 1000 containers still counts: only it differs.
    assert_ne!(verdicts(pod), verdicts(tame));
}

// ---- the bounded fuzzer ----

/// xorshift64*: deterministic from the seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "null",
    "true",
    "-1",
    "1e999",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"Enforce\"",
    "\"WKL-03\"",
    "{\"a\":",
    "[[[[[[[[",
    "9223372036854775808",
];

/// One mutation of `input`: a byte flipped, a span deleted or duplicated, a token inserted,
/// or a span of another seed spliced in.
fn mutate(rng: &mut Rng, input: &str, seeds: &[String]) -> String {
    let mut bytes = input.as_bytes().to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(5) {
            0 if !bytes.is_empty() => {
                let i = at.min(bytes.len() - 1);
                bytes[i] ^= 1 << rng.below(8);
            }
            1 => {
                let end = (at + rng.below(16)).min(bytes.len());
                bytes.drain(at..end);
            }
            2 => {
                let end = (at + rng.below(64)).min(bytes.len());
                let span = bytes[at..end].to_vec();
                bytes.splice(at..at, span);
            }
            3 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                bytes.splice(at..at, t.iter().copied());
            }
            _ => {
                let other = seeds[rng.below(seeds.len())].as_bytes();
                let from = rng.below(other.len());
                let end = (from + rng.below(128)).min(other.len());
                bytes.splice(at..at, other[from..end].iter().copied());
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn fuzz_budget() -> (Duration, u64) {
    let secs = std::env::var("ONUS_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let seed = std::env::var("ONUS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    (Duration::from_secs(secs), seed)
}

/// Mutates seeds for the budget, feeding each input to `check`; a panic is reported with the
/// seed and the input. Returns (inputs tried, inputs that decoded).
fn fuzz(target: &str, seeds: Vec<String>, check: impl Fn(&str) -> bool) -> (u64, u64) {
    let (budget, seed) = fuzz_budget();
    let mut rng = Rng(seed);
    let deadline = Instant::now() + budget;
    let (mut tried, mut decoded) = (0u64, 0u64);
    // Small seeds only: mutating the megabyte inputs would spend the budget copying them.
    let seeds: Vec<String> = seeds.into_iter().filter(|s| s.len() < 16 * 1024).collect();
    while Instant::now() < deadline {
        let base = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, base, &seeds);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
        match outcome {
            Ok(ok) => decoded += ok as u64,
            Err(_) => panic!(
                "{target}: panic on input (ONUS_FUZZ_SEED={seed}, input #{tried}):\n{input:.2000}"
            ),
        }
        tried += 1;
    }
    eprintln!("{target}: {tried} inputs in {budget:?} (seed {seed}), {decoded} decoded");
    (tried, decoded)
}

#[test]
fn fuzz_policy_decoding_and_validation() {
    let seeds: Vec<String> = policies(240).iter().map(Value::to_string).collect();
    let (tried, _) = fuzz("policy", seeds, check_policy);
    assert!(tried > 0);
}

#[test]
fn fuzz_object_decoding_and_projection() {
    let objects = objects(140);
    let seeds: Vec<String> = objects.iter().map(|(_, o)| o.to_string()).collect();
    let kinds: Vec<WorkloadKind> = objects.iter().map(|(k, _)| *k).collect();
    let (tried, _) = fuzz("object", seeds, |text| {
        // Every kind's decoder sees every input.
        kinds
            .iter()
            .take(7)
            .fold(false, |any, k| check_object(*k, text) | any)
    });
    assert!(tried > 0);
}
