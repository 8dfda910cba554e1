//! The individual checks. Each returns `Some(detail)` when the pod fails it.
//!
//! They mirror `policy/check_*.go` of the PodSecurity admission, including its quirks (an empty
//! seccomp annotation is forbidden, capability names are compared case-sensitively).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    ContainerPort, Lifecycle, LifecycleHandler, PodSecurityContext, PodSpec, Probe,
    SecurityContext, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";
const SECCOMP_POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
const SECCOMP_CONTAINER_ANNOTATION_PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";

const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Safe sysctls, each with the policy minor version that first allows it.
const SAFE_SYSCTLS: &[(&str, u32)] = &[
    ("kernel.shm_rmid_forced", 0),
    ("net.ipv4.ip_local_port_range", 0),
    ("net.ipv4.tcp_syncookies", 0),
    ("net.ipv4.ping_group_range", 0),
    ("net.ipv4.ip_unprivileged_port_start", 0),
    ("net.ipv4.ip_local_reserved_ports", 27),
    ("net.ipv4.tcp_keepalive_time", 29),
    ("net.ipv4.tcp_fin_timeout", 29),
    ("net.ipv4.tcp_keepalive_intvl", 29),
    ("net.ipv4.tcp_keepalive_probes", 29),
    ("net.ipv4.tcp_rmem", 32),
    ("net.ipv4.tcp_wmem", 32),
    ("net.ipv4.tcp_slow_start_after_idle", 37),
    ("net.ipv4.tcp_notsent_lowat", 37),
];

/// The parts of a container the checks read; init, regular and ephemeral containers alike.
pub(super) struct ContainerView<'a> {
    name: &'a str,
    security: Option<&'a SecurityContext>,
    ports: &'a [ContainerPort],
    probes: [Option<&'a Probe>; 3],
    lifecycle: Option<&'a Lifecycle>,
}

/// A pod as the checks see it: metadata, spec and every container in admission order.
pub(super) struct Pod<'a> {
    meta: &'a ObjectMeta,
    spec: &'a PodSpec,
    containers: Vec<ContainerView<'a>>,
}

macro_rules! view {
    ($c:expr) => {
        ContainerView {
            name: &$c.name,
            security: $c.security_context.as_ref(),
            ports: $c.ports.as_deref().unwrap_or_default(),
            probes: [
                $c.liveness_probe.as_ref(),
                $c.readiness_probe.as_ref(),
                $c.startup_probe.as_ref(),
            ],
            lifecycle: $c.lifecycle.as_ref(),
        }
    };
}

impl<'a> Pod<'a> {
    pub(super) fn new(meta: &'a ObjectMeta, spec: &'a PodSpec) -> Self {
        let mut containers = Vec::new();
        for c in spec.init_containers.iter().flatten() {
            containers.push(view!(c));
        }
        for c in &spec.containers {
            containers.push(view!(c));
        }
        for c in spec.ephemeral_containers.iter().flatten() {
            containers.push(view!(c));
        }
        Pod {
            meta,
            spec,
            containers,
        }
    }

    pub(super) fn is_windows(&self) -> bool {
        self.spec.os.as_ref().is_some_and(|os| os.name == "windows")
    }

    pub(super) fn spec(&self) -> &'a PodSpec {
        self.spec
    }

    pub(super) fn is_user_namespaced(&self) -> bool {
        self.spec.host_users == Some(false)
    }

    fn security(&self) -> Option<&'a PodSecurityContext> {
        self.spec.security_context.as_ref()
    }

    /// Names of the containers whose security context matches `bad`.
    fn containers_where(&self, mut bad: impl FnMut(&SecurityContext) -> bool) -> Vec<&'a str> {
        self.containers
            .iter()
            .filter(|c| c.security.is_some_and(&mut bad))
            .map(|c| c.name)
            .collect()
    }

    fn annotations(&self) -> impl Iterator<Item = (&'a String, &'a String)> {
        self.meta.annotations.iter().flatten()
    }
}

fn quoted<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    items
        .into_iter()
        .map(|s| format!("{:?}", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "pod", `container "a"`, `pod and containers "a", "b"`, with the verb agreeing.
fn subject(pod: bool, containers: &[&str], verb: (&str, &str)) -> Option<String> {
    let mut parts = Vec::new();
    if pod {
        parts.push("pod".to_string());
    }
    match containers.len() {
        0 => {}
        1 => parts.push(format!("container {}", quoted(containers))),
        _ => parts.push(format!("containers {}", quoted(containers))),
    }
    let verb = match (parts.len(), containers.len()) {
        (0, _) => return None,
        (1, 0 | 1) => verb.0,
        _ => verb.1,
    };
    Some(format!("{} {verb}", parts.join(" and ")))
}

fn sets(pod: bool, containers: &[&str], what: &str) -> Option<String> {
    subject(pod, containers, ("sets", "set")).map(|s| format!("{s} {what}"))
}

pub(super) fn host_process(pod: &Pod) -> Option<String> {
    let host_process = |w: Option<&k8s_openapi::api::core::v1::WindowsSecurityContextOptions>| {
        w.and_then(|w| w.host_process) == Some(true)
    };
    let pod_bad = pod
        .security()
        .is_some_and(|s| host_process(s.windows_options.as_ref()));
    let bad = pod.containers_where(|s| host_process(s.windows_options.as_ref()));
    sets(pod_bad, &bad, "windowsOptions.hostProcess=true")
}

pub(super) fn host_namespaces(spec: &PodSpec) -> Option<String> {
    let shared: Vec<&str> = [
        (spec.host_network, "hostNetwork=true"),
        (spec.host_pid, "hostPID=true"),
        (spec.host_ipc, "hostIPC=true"),
    ]
    .into_iter()
    .filter(|(set, _)| *set == Some(true))
    .map(|(_, what)| what)
    .collect();
    (!shared.is_empty()).then(|| format!("pod sets {}", shared.join(", ")))
}

pub(super) fn privileged(pod: &Pod) -> Option<String> {
    let bad = pod.containers_where(|s| s.privileged == Some(true));
    sets(false, &bad, "privileged=true")
}

/// Containers adding a capability outside `allowed`, and the capabilities they add.
fn added_capabilities<'a>(pod: &Pod<'a>, allowed: &[&str]) -> (Vec<&'a str>, BTreeSet<String>) {
    let mut added = BTreeSet::new();
    let bad = pod.containers_where(|s| {
        let adds = s.capabilities.as_ref().and_then(|c| c.add.as_ref());
        let extra: Vec<&String> = adds
            .into_iter()
            .flatten()
            .filter(|cap| !allowed.contains(&cap.as_str()))
            .collect();
        added.extend(extra.iter().map(|c| c.to_string()));
        !extra.is_empty()
    });
    (bad, added)
}

pub(super) fn capabilities_baseline(pod: &Pod) -> Option<String> {
    let (bad, added) = added_capabilities(pod, BASELINE_CAPABILITIES);
    subject(false, &bad, ("adds", "add"))
        .map(|s| format!("{s} non-default capabilities {}", quoted(&added)))
}

pub(super) fn capabilities_restricted(pod: &Pod) -> Option<String> {
    let no_drop_all: Vec<&str> = pod
        .containers
        .iter()
        .filter(|c| {
            let drops = c
                .security
                .and_then(|s| s.capabilities.as_ref())
                .and_then(|c| c.drop.as_ref());
            !drops.into_iter().flatten().any(|cap| cap == "ALL")
        })
        .map(|c| c.name)
        .collect();
    let (bad_add, added) = added_capabilities(pod, &["NET_BIND_SERVICE"]);
    let mut parts = Vec::new();
    if let Some(s) = subject(false, &no_drop_all, ("does", "do")) {
        parts.push(format!("{s} not drop \"ALL\" capabilities"));
    }
    if let Some(s) = subject(false, &bad_add, ("adds", "add")) {
        parts.push(format!("{s} capabilities {}", quoted(&added)));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

pub(super) fn host_path_volumes(spec: &PodSpec) -> Option<String> {
    let bad: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.host_path.is_some())
        .map(|v| v.name.as_str())
        .collect();
    (!bad.is_empty()).then(|| format!("pod uses hostPath volumes {}", quoted(bad)))
}

pub(super) fn host_ports(pod: &Pod) -> Option<String> {
    let mut ports = BTreeSet::new();
    let mut bad = Vec::new();
    for c in &pod.containers {
        let used: Vec<i32> = c
            .ports
            .iter()
            .filter_map(|p| p.host_port)
            .filter(|&p| p != 0)
            .collect();
        if !used.is_empty() {
            bad.push(c.name);
            ports.extend(used);
        }
    }
    let ports: Vec<String> = ports.iter().map(i32::to_string).collect();
    subject(false, &bad, ("uses", "use")).map(|s| format!("{s} hostPort {}", ports.join(", ")))
}

pub(super) fn app_armor(pod: &Pod) -> Option<String> {
    let allowed = |t: &str| t == "RuntimeDefault" || t == "Localhost";
    let mut values = BTreeSet::new();
    let pod_bad = match pod.security().and_then(|s| s.app_armor_profile.as_ref()) {
        Some(p) if !allowed(&p.type_) => {
            values.insert(p.type_.clone());
            true
        }
        _ => false,
    };
    let bad = pod.containers_where(|s| match &s.app_armor_profile {
        Some(p) if !allowed(&p.type_) => {
            values.insert(p.type_.clone());
            true
        }
        _ => false,
    });
    let mut parts: Vec<String> = sets(pod_bad, &bad, "AppArmor profile ")
        .map(|s| s + &quoted(&values))
        .into_iter()
        .collect();
    // The deprecated annotations still count, whichever container they name.
    let annotations: Vec<String> = pod
        .annotations()
        .filter(|(k, v)| {
            k.starts_with(APPARMOR_ANNOTATION_PREFIX)
                && !(v.is_empty() || *v == "runtime/default" || v.starts_with("localhost/"))
        })
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    if !annotations.is_empty() {
        let noun = if annotations.len() == 1 {
            "annotation"
        } else {
            "annotations"
        };
        parts.push(format!("pod {noun} {}", annotations.join(", ")));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// `engine_allowed`: whether `container_engine_t` is an allowed type (it is from v1.31).
pub(super) fn se_linux(pod: &Pod, engine_allowed: bool) -> Option<String> {
    let allowed_type = |t: &str| {
        matches!(
            t,
            "" | "container_t" | "container_init_t" | "container_kvm_t"
        ) || (engine_allowed && t == "container_engine_t")
    };
    let mut problems = BTreeSet::new();
    let mut check = |o: Option<&k8s_openapi::api::core::v1::SELinuxOptions>| {
        let Some(o) = o else { return false };
        let mut bad = false;
        let ty = o.type_.as_deref().unwrap_or_default();
        if !allowed_type(ty) {
            problems.insert(format!("type {ty:?}"));
            bad = true;
        }
        if o.user.as_deref().is_some_and(|u| !u.is_empty()) {
            problems.insert("user".to_string());
            bad = true;
        }
        if o.role.as_deref().is_some_and(|r| !r.is_empty()) {
            problems.insert("role".to_string());
            bad = true;
        }
        bad
    };
    let pod_bad = check(pod.security().and_then(|s| s.se_linux_options.as_ref()));
    let bad = pod.containers_where(|s| check(s.se_linux_options.as_ref()));
    let problems: Vec<String> = problems.into_iter().collect();
    sets(pod_bad, &bad, "forbidden seLinuxOptions ").map(|s| s + &problems.join(", "))
}

pub(super) fn proc_mount(pod: &Pod) -> Option<String> {
    let mut types = BTreeSet::new();
    let bad = pod.containers_where(|s| match &s.proc_mount {
        Some(t) if t != "Default" => {
            types.insert(t.clone());
            true
        }
        _ => false,
    });
    sets(false, &bad, "procMount ").map(|s| s + &quoted(&types))
}

fn valid_seccomp(t: &str) -> bool {
    t == "RuntimeDefault" || t == "Localhost"
}

/// Pod and containers explicitly setting a forbidden seccomp type, and the types they set.
fn explicit_seccomp<'a>(pod: &Pod<'a>) -> (Option<bool>, Vec<&'a str>, BTreeSet<String>) {
    let mut types = BTreeSet::new();
    let pod_type = pod
        .security()
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.type_.as_str());
    if let Some(t) = pod_type.filter(|t| !valid_seccomp(t)) {
        types.insert(t.to_string());
    }
    let bad = pod.containers_where(|s| match &s.seccomp_profile {
        Some(p) if !valid_seccomp(&p.type_) => {
            types.insert(p.type_.clone());
            true
        }
        _ => false,
    });
    (pod_type.map(valid_seccomp), bad, types)
}

pub(super) fn seccomp_baseline(pod: &Pod) -> Option<String> {
    let (pod_valid, bad, types) = explicit_seccomp(pod);
    sets(pod_valid == Some(false), &bad, "seccompProfile ").map(|s| s + &quoted(&types))
}

/// Before v1.19 seccomp lived in annotations, and those are what the old policy reads.
pub(super) fn seccomp_annotations(pod: &Pod) -> Option<String> {
    let valid =
        |v: &str| v == "runtime/default" || v == "docker/default" || v.starts_with("localhost/");
    let annotations = pod.meta.annotations.as_ref();
    let keys = std::iter::once(SECCOMP_POD_ANNOTATION.to_string()).chain(
        pod.containers
            .iter()
            .map(|c| format!("{SECCOMP_CONTAINER_ANNOTATION_PREFIX}{}", c.name)),
    );
    let bad: BTreeSet<String> = keys
        .filter_map(|k| {
            let v = annotations?.get(&k)?;
            (!valid(v)).then(|| format!("{k}={v:?}"))
        })
        .collect();
    (!bad.is_empty()).then(|| format!("forbidden seccomp annotations {}", quoted(&bad)))
}

pub(super) fn seccomp_restricted(pod: &Pod) -> Option<String> {
    let (pod_valid, bad, types) = explicit_seccomp(pod);
    if let Some(s) = sets(pod_valid == Some(false), &bad, "seccompProfile ") {
        return Some(s + &quoted(&types));
    }
    if pod_valid == Some(true) {
        return None;
    }
    let unset: Vec<&str> = pod
        .containers
        .iter()
        .filter(|c| {
            c.security
                .and_then(|s| s.seccomp_profile.as_ref())
                .is_none()
        })
        .map(|c| c.name)
        .collect();
    subject(false, &unset, ("does", "do")).map(|s| {
        format!("pod or {s} not set seccompProfile to \"RuntimeDefault\" or \"Localhost\"")
    })
}

/// The policy minor version from which a sysctl is safe; `None`: never.
fn sysctl_safe_from(name: &str) -> Option<u32> {
    SAFE_SYSCTLS
        .iter()
        .find(|&&(s, _)| s == name)
        .map(|&(_, from)| from)
}

fn sysctl_names(spec: &PodSpec) -> impl Iterator<Item = &str> {
    spec.security_context
        .as_ref()
        .and_then(|s| s.sysctls.as_ref())
        .into_iter()
        .flatten()
        .map(|s| s.name.as_str())
}

pub(super) fn sysctls(spec: &PodSpec, minor: u32) -> Option<String> {
    let bad: Vec<&str> = sysctl_names(spec)
        .filter(|name| sysctl_safe_from(name).is_none_or(|from| from > minor))
        .collect();
    (!bad.is_empty()).then(|| format!("pod sets unsafe sysctls {}", quoted(bad)))
}

/// The lowest policy minor version from which every sysctl the pod sets is safe, so that
/// `sysctls(spec, minor)` fails exactly when `minor` is below it; `None`: it fails at every
/// version.
pub(super) fn sysctls_safe_from(spec: &PodSpec) -> Option<u32> {
    sysctl_names(spec).try_fold(0, |lowest, name| Some(lowest.max(sysctl_safe_from(name)?)))
}

pub(super) fn host_probes(pod: &Pod) -> Option<String> {
    fn hosts<'a>(
        http: Option<&'a Option<String>>,
        tcp: Option<&'a Option<String>>,
    ) -> impl Iterator<Item = &'a str> {
        [http, tcp]
            .into_iter()
            .flatten()
            .filter_map(|h| h.as_deref())
            .filter(|h| !h.is_empty())
    }
    let handler = |h: Option<&'_ LifecycleHandler>| {
        h.map(|h| {
            hosts(
                h.http_get.as_ref().map(|a| &a.host),
                h.tcp_socket.as_ref().map(|a| &a.host),
            )
            .map(str::to_string)
            .collect::<Vec<_>>()
        })
        .unwrap_or_default()
    };
    let mut all_hosts = BTreeSet::new();
    let mut bad = Vec::new();
    for c in &pod.containers {
        let mut found: Vec<String> = c
            .probes
            .iter()
            .flatten()
            .flat_map(|p| {
                hosts(
                    p.http_get.as_ref().map(|a| &a.host),
                    p.tcp_socket.as_ref().map(|a| &a.host),
                )
            })
            .map(str::to_string)
            .collect();
        if let Some(l) = c.lifecycle {
            found.extend(handler(l.post_start.as_ref()));
            found.extend(handler(l.pre_stop.as_ref()));
        }
        if !found.is_empty() {
            bad.push(c.name);
            all_hosts.extend(found);
        }
    }
    sets(false, &bad, "probe or lifecycle host ").map(|s| s + &quoted(&all_hosts))
}

pub(super) fn volume_types(spec: &PodSpec) -> Option<String> {
    let bad: Vec<String> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| {
            !(v.config_map.is_some()
                || v.csi.is_some()
                || v.downward_api.is_some()
                || v.empty_dir.is_some()
                || v.ephemeral.is_some()
                || v.image.is_some()
                || v.persistent_volume_claim.is_some()
                || v.projected.is_some()
                || v.secret.is_some())
        })
        .map(|v| format!("{:?} ({})", v.name, volume_type(v)))
        .collect();
    let noun = if bad.len() == 1 { "volume" } else { "volumes" };
    (!bad.is_empty()).then(|| format!("pod uses restricted {noun} {}", bad.join(", ")))
}

/// The volume source's field name (`hostPath`, `nfs`, ...), read off the serialized form so
/// that every source, including future ones, is named.
fn volume_type(volume: &Volume) -> String {
    let json = serde_json::to_value(volume).unwrap_or_default();
    json.as_object()
        .and_then(|fields| fields.keys().find(|k| *k != "name").cloned())
        .unwrap_or_else(|| "unknown".to_string())
}

pub(super) fn allow_privilege_escalation(pod: &Pod) -> Option<String> {
    let bad: Vec<&str> = pod
        .containers
        .iter()
        .filter(|c| c.security.and_then(|s| s.allow_privilege_escalation) != Some(false))
        .map(|c| c.name)
        .collect();
    subject(false, &bad, ("does", "do"))
        .map(|s| format!("{s} not set allowPrivilegeEscalation=false"))
}

pub(super) fn run_as_non_root(pod: &Pod) -> Option<String> {
    let pod_value = pod.security().and_then(|s| s.run_as_non_root);
    let explicit = pod.containers_where(|s| s.run_as_non_root == Some(false));
    if let Some(s) = sets(pod_value == Some(false), &explicit, "runAsNonRoot=false") {
        return Some(s);
    }
    if pod_value == Some(true) {
        return None;
    }
    let unset: Vec<&str> = pod
        .containers
        .iter()
        .filter(|c| c.security.and_then(|s| s.run_as_non_root).is_none())
        .map(|c| c.name)
        .collect();
    subject(false, &unset, ("does", "do")).map(|s| format!("pod or {s} not set runAsNonRoot=true"))
}

pub(super) fn run_as_user(pod: &Pod) -> Option<String> {
    let pod_root = pod.security().and_then(|s| s.run_as_user) == Some(0);
    let bad = pod.containers_where(|s| s.run_as_user == Some(0));
    sets(pod_root, &bad, "runAsUser=0")
}
