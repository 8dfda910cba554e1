//! `Verdicts` answers exactly as `evaluate` does, at both levels and every version: over the
//! table's pods and over generated ones.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Map, Value, json};

use super::builders::*;
use super::cases::cases;
use super::*;

/// Latest and v1.0 ..= v1.40: past the newest minor, which evaluates as latest.
fn versions() -> impl Iterator<Item = Version> {
    std::iter::once(LATEST).chain((0..=40).map(v))
}

/// Every disagreement between `Verdicts` and `evaluate` on one pod, at both levels and every
/// version: the checks in order, and the controls.
fn disagreements(meta: &ObjectMeta, spec: &PodSpec) -> Vec<String> {
    let verdicts = Verdicts::of(meta, spec);
    let mut found = Vec::new();
    for level in [Baseline, Restricted] {
        for version in versions() {
            let expected: Vec<Check> = evaluate(meta, spec, level, version)
                .iter()
                .map(|v| v.check)
                .collect();
            let mut got = Vec::new();
            verdicts.for_each_failing(level, version, |c| got.push(c));
            if got != expected {
                found.push(format!(
                    "{level:?} {version}: checks {got:?}, evaluate {expected:?}"
                ));
            }
            let controls = verdicts.failing(level, version);
            let expected: BTreeSet<&str> = expected.iter().map(|c| c.control()).collect();
            if controls.iter().collect::<BTreeSet<_>>() != expected {
                found.push(format!(
                    "{level:?} {version}: controls {:?}, evaluate {expected:?}",
                    controls.iter().collect::<Vec<_>>()
                ));
            }
        }
    }
    found
}

#[test]
fn verdicts_answer_like_evaluate_for_the_table_pods() {
    let odd = bare_pod()
        .spec(|s| s.containers.clear())
        .volume(json!({"name": ""}))
        .annotated("container.apparmor.security.beta.kubernetes.io/", "")
        .annotated("seccomp.security.alpha.kubernetes.io/pod", "");
    let extra = [
        ("odd pod", odd),
        (
            "several sysctls, newest wins",
            bare_pod()
                .sysctl("net.ipv4.tcp_keepalive_time")
                .sysctl("net.ipv4.tcp_rmem")
                .sysctl("kernel.shm_rmid_forced"),
        ),
        (
            "an unsafe sysctl among safe ones",
            bare_pod()
                .sysctl("net.ipv4.tcp_rmem")
                .sysctl("kernel.msgmax"),
        ),
        (
            "Windows and user-namespaced",
            bare_pod()
                .windows()
                .user_namespaced()
                .app(|s| s.proc_mount = Some("Unmasked".into())),
        ),
    ];
    let pods = cases()
        .into_iter()
        .map(|(name, pod, ..)| (name, pod))
        .chain(extra);
    let mut failures = Vec::new();
    for (name, pod) in pods {
        for d in disagreements(&pod.meta, &pod.spec) {
            failures.push(format!("{name}: {d}"));
        }
    }
    for d in disagreements(&ObjectMeta::default(), &PodSpec::default()) {
        failures.push(format!("empty pod: {d}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn verdicts_fit_in_eight_bytes() {
    assert!(std::mem::size_of::<Verdicts>() <= 8);
}

#[test]
fn the_gate_only_asks_for_probes_verdicts_record() {
    for level in [Baseline, Restricted] {
        for minor in 0..=NEWEST_MINOR {
            for (windows, userns) in [(false, false), (true, false), (false, true), (true, true)] {
                gate(level, minor, windows, userns, |_, probe| {
                    assert!(Probe::ALL.contains(&probe), "{probe:?}");
                });
            }
        }
    }
    let distinct: BTreeSet<u32> = Probe::ALL.iter().map(|p| *p as u32).collect();
    assert_eq!(distinct.len(), Probe::ALL.len());
}

#[test]
fn controls_is_a_set_of_wkl_ids() {
    let set: Controls = [Privileged, HostPorts, HostNamespaces, VolumeTypes]
        .into_iter()
        .collect();
    assert_eq!(
        set.iter().collect::<Vec<_>>(),
        ["WKL-02", "WKL-03", "WKL-09"]
    );
    assert_eq!(set.len(), 3);
    assert!(set.contains("WKL-03") && !set.contains("WKL-04"));
    assert!(!set.contains("WKL-01") && !set.contains("") && !set.contains("RBAC-01"));
    let other: Controls = [Privileged, RunAsUser].into_iter().collect();
    assert_eq!(
        set.difference(other).iter().collect::<Vec<_>>(),
        ["WKL-02", "WKL-09"]
    );
    assert_eq!(set.union(other).len(), 4);
    assert!(Controls::default().is_empty() && !set.is_empty());
    // Every check's control is one the set can hold.
    for check in super::ALL_CHECKS {
        let one: Controls = [check].into_iter().collect();
        assert_eq!(one.iter().collect::<Vec<_>>(), [check.control()]);
    }
}

/// Reads a pod's choices off a byte string: every choice is a byte, 0 the plainest answer
/// (unset, first option), so that proptest shrinks towards plain pods.
struct Dice<'a>(std::slice::Iter<'a, u8>);

impl Dice<'_> {
    fn roll(&mut self) -> usize {
        self.0.next().copied().unwrap_or(0).into()
    }

    fn pick<T: Clone>(&mut self, options: &[T]) -> T {
        options[self.roll() % options.len()].clone()
    }

    /// Unset three times in four.
    fn maybe<T: Clone>(&mut self, options: &[T]) -> Option<T> {
        (self.roll() % 4 == 3).then(|| self.pick(options))
    }

    fn count(&mut self, below: usize) -> usize {
        self.roll() % below
    }

    /// Sets `key` in `object` to one of `options`, sometimes.
    fn set<T: Clone + Into<Value>>(
        &mut self,
        object: &mut Map<String, Value>,
        key: &str,
        options: &[T],
    ) {
        if let Some(value) = self.maybe(options) {
            object.insert(key.into(), value.into());
        }
    }
}

const SECCOMP_TYPES: &[&str] = &["RuntimeDefault", "Localhost", "Unconfined", ""];
const APPARMOR_TYPES: &[&str] = &["RuntimeDefault", "Localhost", "Unconfined", ""];
const SELINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
    "spc_t",
];
const CAPABILITIES: &[&str] = &["NET_BIND_SERVICE", "CHOWN", "NET_RAW", "SYS_ADMIN", "chown"];
const SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_slow_start_after_idle",
    "net.ipv4.tcp_notsent_lowat",
    "kernel.msgmax",
    "",
];
/// The container names generated pods use, which the annotations name too.
const NAMES: &[&str] = &["app", "side", "init", "debug"];

fn se_linux_options(d: &mut Dice) -> Value {
    let mut o = Map::new();
    d.set(&mut o, "type", SELINUX_TYPES);
    d.set(&mut o, "user", &["", "system_u"]);
    d.set(&mut o, "role", &["", "system_r"]);
    d.set(&mut o, "level", &["s0:c1"]);
    o.into()
}

fn typed(d: &mut Dice, types: &[&str]) -> Option<Value> {
    d.maybe(types).map(|t| json!({"type": t}))
}

/// Fields the pod-level and container-level security contexts share.
fn common_security(d: &mut Dice, s: &mut Map<String, Value>) {
    if let Some(host_process) = d.maybe(&[true, false]) {
        s.insert(
            "windowsOptions".into(),
            json!({"hostProcess": host_process}),
        );
    }
    if let Some(p) = typed(d, APPARMOR_TYPES) {
        s.insert("appArmorProfile".into(), p);
    }
    if d.maybe(&[()]).is_some() {
        s.insert("seLinuxOptions".into(), se_linux_options(d));
    }
    if let Some(p) = typed(d, SECCOMP_TYPES) {
        s.insert("seccompProfile".into(), p);
    }
    d.set(s, "runAsNonRoot", &[true, false]);
    d.set(s, "runAsUser", &[0, 1000]);
}

fn container(d: &mut Dice, name: &str) -> Value {
    let mut c = Map::new();
    c.insert("name".into(), name.into());
    if let Some(host_port) = d.maybe(&[0, 8080]) {
        c.insert(
            "ports".into(),
            json!([{"containerPort": 80, "hostPort": host_port}]),
        );
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(host) = d.maybe(&["", "10.0.0.1"]) {
            let handler = d.pick(&["tcpSocket", "httpGet"]);
            c.insert(probe.into(), json!({handler: {"port": 80, "host": host}}));
        }
    }
    if let Some(host) = d.maybe(&["", "example.com"]) {
        let hook = d.pick(&["preStop", "postStart"]);
        c.insert(
            "lifecycle".into(),
            json!({hook: {"httpGet": {"port": 80, "host": host}}}),
        );
    }
    if d.pick(&[false, true]) {
        let mut s = Map::new();
        common_security(d, &mut s);
        d.set(&mut s, "privileged", &[true, false]);
        d.set(&mut s, "allowPrivilegeEscalation", &[false, true]);
        d.set(&mut s, "procMount", &["Default", "Unmasked"]);
        if d.maybe(&[()]).is_some() {
            let mut caps = Map::new();
            if d.maybe(&[()]).is_some() {
                let add: Vec<&str> = (0..1 + d.count(2)).map(|_| d.pick(CAPABILITIES)).collect();
                caps.insert("add".into(), add.into());
            }
            let drop = d.pick(&[vec!["ALL"], vec![], vec!["all"], vec!["NET_RAW", "ALL"]]);
            caps.insert("drop".into(), drop.into());
            s.insert("capabilities".into(), caps.into());
        }
        c.insert("securityContext".into(), s.into());
    }
    c.into()
}

/// A pod (metadata and spec) that can fail or pass every check.
fn pod_from(bytes: &[u8]) -> (ObjectMeta, PodSpec) {
    let d = &mut Dice(bytes.iter());
    let mut spec = Map::new();
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        d.set(&mut spec, field, &[true, false]);
    }
    d.set(&mut spec, "hostUsers", &[false, true]);
    if let Some(os) = d.maybe(&["windows", "linux"]) {
        spec.insert("os".into(), json!({"name": os}));
    }
    if d.pick(&[false, true]) {
        let mut s = Map::new();
        common_security(d, &mut s);
        if d.maybe(&[()]).is_some() {
            let sysctls: Vec<Value> = (0..1 + d.count(3))
                .map(|_| json!({"name": d.pick(SYSCTLS), "value": "1"}))
                .collect();
            s.insert("sysctls".into(), sysctls.into());
        }
        spec.insert("securityContext".into(), s.into());
    }
    let volumes: Vec<Value> = (0..d.count(3))
        .map(|i| {
            let source = d.pick(&[
                json!({"emptyDir": {}}),
                json!({"configMap": {"name": "c"}}),
                json!({"secret": {"secretName": "s"}}),
                json!({"hostPath": {"path": "/"}}),
                json!({"nfs": {"server": "s", "path": "/"}}),
                json!({"projected": {"sources": []}}),
                json!({}),
            ]);
            let mut v = source.as_object().cloned().unwrap_or_default();
            v.insert("name".into(), format!("v{i}").into());
            Value::from(v)
        })
        .collect();
    if !volumes.is_empty() {
        spec.insert("volumes".into(), volumes.into());
    }
    let containers: Vec<Value> = (0..1 + d.count(2))
        .map(|i| container(d, NAMES[i]))
        .collect();
    spec.insert("containers".into(), containers.into());
    if d.pick(&[false, true]) {
        spec.insert("initContainers".into(), json!([container(d, "init")]));
    }
    if d.pick(&[false, true]) {
        spec.insert("ephemeralContainers".into(), json!([container(d, "debug")]));
    }

    let mut annotations = Map::new();
    for name in NAMES.iter().chain(&[""]) {
        let key = format!("container.apparmor.security.beta.kubernetes.io/{name}");
        d.set(
            &mut annotations,
            &key,
            &["unconfined", "runtime/default", "localhost/p", ""],
        );
    }
    let seccomp = std::iter::once("seccomp.security.alpha.kubernetes.io/pod".to_string()).chain(
        NAMES
            .iter()
            .map(|n| format!("container.seccomp.security.alpha.kubernetes.io/{n}")),
    );
    for key in seccomp {
        let values = [
            "unconfined",
            "runtime/default",
            "docker/default",
            "localhost/p",
            "",
        ];
        d.set(&mut annotations, &key, &values);
    }
    let meta = from(json!({"name": "p", "annotations": annotations}));
    (meta, from(Value::from(spec)))
}

/// Enough bytes for every choice of the largest pod.
const ROLLS: usize = 256;

/// Generated pods (metadata and spec) that can fail or pass every check; the facts projection's
/// property tests use them too.
pub(crate) fn pods() -> impl Strategy<Value = (ObjectMeta, PodSpec)> {
    proptest::collection::vec(any::<u8>(), ROLLS).prop_map(|bytes| pod_from(&bytes))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn verdicts_answer_like_evaluate_for_generated_pods((meta, spec) in pods()) {
        let found = disagreements(&meta, &spec);
        prop_assert!(found.is_empty(), "{}\n{}", serde_json::to_string(&spec).unwrap_or_default(), found.join("\n"));
    }
}

/// The generator reaches every check and every sysctl boundary: each check fails for some
/// generated pods and passes for others, at some level and version.
#[test]
fn generated_pods_exercise_every_check() {
    let mut runner = TestRunner::deterministic();
    let strategy = pods();
    let mut failed = BTreeSet::new();
    let mut passed = BTreeSet::new();
    let mut sysctl_boundaries = BTreeSet::new();
    // Probes that pass [0] and fail [1] for some pod.
    let mut probes = [BTreeSet::new(), BTreeSet::new()];
    let (mut engine_only, mut windows, mut user_namespaced) = (0, 0, 0);
    for _ in 0..1024 {
        let (meta, spec) = strategy.new_tree(&mut runner).expect("a pod").current();
        for level in [Baseline, Restricted] {
            for version in [v(0), v(18), v(24), v(30), v(34), LATEST] {
                let checks: BTreeSet<Check> = evaluate(&meta, &spec, level, version)
                    .iter()
                    .map(|v| v.check)
                    .collect();
                let mut asked = Vec::new();
                gate(level, version.effective_minor(), false, false, |c, _| {
                    asked.push(c)
                });
                for check in asked {
                    if checks.contains(&check) {
                        failed.insert(check);
                    } else {
                        passed.insert(check);
                    }
                }
            }
        }
        sysctl_boundaries.insert(checks::sysctls_safe_from(&spec));
        let verdicts = Verdicts::of(&meta, &spec);
        for probe in Probe::ALL {
            if probe != Probe::Sysctls {
                probes[usize::from(verdicts.fails(probe, 0))].insert(probe as u32);
            }
        }
        if verdicts.fails(Probe::SeLinuxBefore31, 0) && !verdicts.fails(Probe::SeLinux, 0) {
            engine_only += 1;
        }
        let os = spec.os.as_ref().map(|os| os.name.as_str());
        windows += usize::from(os == Some("windows"));
        user_namespaced += usize::from(spec.host_users == Some(false));
    }
    let expected: BTreeSet<Check> = super::ALL_CHECKS.into();
    assert_eq!(failed, expected, "checks no generated pod fails");
    assert_eq!(passed, expected, "checks every generated pod fails");
    for boundary in [None, Some(0), Some(27), Some(29), Some(32), Some(37)] {
        assert!(
            sysctl_boundaries.contains(&boundary),
            "sysctls safe from {boundary:?}"
        );
    }
    let recorded: BTreeSet<u32> = Probe::ALL
        .iter()
        .filter(|p| **p != Probe::Sysctls)
        .map(|p| *p as u32)
        .collect();
    assert_eq!(probes[0], recorded, "probes every generated pod fails");
    assert_eq!(probes[1], recorded, "probes no generated pod fails");
    assert!(engine_only > 0, "no pod fails SELinux only before v1.31");
    assert!(windows > 0 && user_namespaced > 0);
}
