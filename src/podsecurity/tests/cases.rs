//! The main table: each row a pod, a level, a version and the checks the admission fails.

use super::builders::*;
use crate::crd::PodSecurityLevel::{self, Baseline, Restricted};
use crate::podsecurity::{Check, Check::*, Version, evaluate};
use k8s_openapi::api::core::v1::Capabilities;
use serde_json::json;

/// A name, a pod, a level, a version and the checks the admission fails there.
pub(super) type Case = (
    &'static str,
    TestPod,
    PodSecurityLevel,
    Version,
    &'static [Check],
);

/// The table; its pods are also the corpus other tests run at every level and version.
pub(super) fn cases() -> Vec<Case> {
    vec![
        (
            "restricted pod passes restricted",
            restricted_pod(),
            Restricted,
            LATEST,
            &[],
        ),
        (
            "restricted pod passes at v1.0",
            restricted_pod(),
            Restricted,
            v(0),
            &[],
        ),
        (
            "bare pod passes baseline",
            bare_pod(),
            Baseline,
            LATEST,
            &[],
        ),
        (
            "bare pod fails restricted",
            bare_pod(),
            Restricted,
            LATEST,
            &[
                AllowPrivilegeEscalation,
                RunAsNonRoot,
                SeccompRestricted,
                CapabilitiesRestricted,
            ],
        ),
        (
            "capabilities restricted from v1.22",
            bare_pod(),
            Restricted,
            v(21),
            &[AllowPrivilegeEscalation, RunAsNonRoot, SeccompRestricted],
        ),
        (
            "seccomp restricted from v1.19",
            bare_pod(),
            Restricted,
            v(18),
            &[AllowPrivilegeEscalation, RunAsNonRoot],
        ),
        (
            "privilege escalation from v1.8",
            bare_pod(),
            Restricted,
            v(7),
            &[RunAsNonRoot],
        ),
        (
            "privileged container",
            bare_pod().app(|s| s.privileged = Some(true)),
            Baseline,
            LATEST,
            &[Privileged],
        ),
        (
            "privileged init container",
            bare_pod().init_container("init", |s| s.privileged = Some(true)),
            Baseline,
            LATEST,
            &[Privileged],
        ),
        (
            "ephemeral container must not escalate",
            restricted_pod().ephemeral_container("debug", |s| {
                s.capabilities = Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: None,
                })
            }),
            Restricted,
            LATEST,
            &[AllowPrivilegeEscalation],
        ),
        (
            "NET_RAW is not a default capability",
            bare_pod().app(add_caps(&["NET_RAW"])),
            Baseline,
            LATEST,
            &[Capabilities],
        ),
        (
            "capability names are case-sensitive",
            bare_pod().app(add_caps(&["chown"])),
            Baseline,
            LATEST,
            &[Capabilities],
        ),
        (
            "restricted replaces the baseline capability check",
            restricted_pod().app(add_caps(&["SYS_ADMIN"])),
            Restricted,
            LATEST,
            &[CapabilitiesRestricted],
        ),
        (
            "before v1.22 restricted uses the baseline capability check",
            restricted_pod().app(add_caps(&["SYS_ADMIN"])),
            Restricted,
            v(21),
            &[Capabilities],
        ),
        (
            "NET_BIND_SERVICE may be added",
            restricted_pod().app(add_caps(&["NET_BIND_SERVICE"])),
            Restricted,
            LATEST,
            &[],
        ),
        (
            "lowercase all is not ALL",
            restricted_pod().app(|s| {
                s.capabilities = Some(Capabilities {
                    drop: Some(vec!["all".into()]),
                    add: None,
                })
            }),
            Restricted,
            LATEST,
            &[CapabilitiesRestricted],
        ),
        (
            "hostPath at baseline",
            bare_pod().volume(json!({"name": "h", "hostPath": {"path": "/"}})),
            Baseline,
            LATEST,
            &[HostPathVolumes],
        ),
        (
            "hostPath at restricted is a volume type",
            restricted_pod().volume(json!({"name": "h", "hostPath": {"path": "/"}})),
            Restricted,
            LATEST,
            &[VolumeTypes],
        ),
        (
            "nfs passes baseline",
            bare_pod().volume(json!({"name": "n", "nfs": {"server": "s", "path": "/"}})),
            Baseline,
            LATEST,
            &[],
        ),
        (
            "nfs fails restricted",
            restricted_pod().volume(json!({"name": "n", "nfs": {"server": "s", "path": "/"}})),
            Restricted,
            LATEST,
            &[VolumeTypes],
        ),
        (
            "image volumes are allowed",
            restricted_pod().volume(json!({"name": "i", "image": {"reference": "x"}})),
            Restricted,
            LATEST,
            &[],
        ),
        (
            "hostPort 8080",
            bare_pod().spec(|s| {
                s.containers[0].ports =
                    Some(vec![from(json!({"containerPort": 80, "hostPort": 8080}))])
            }),
            Baseline,
            LATEST,
            &[HostPorts],
        ),
        (
            "hostPort 0 is no host port",
            bare_pod().spec(|s| {
                s.containers[0].ports =
                    Some(vec![from(json!({"containerPort": 80, "hostPort": 0}))])
            }),
            Baseline,
            LATEST,
            &[],
        ),
        (
            "host namespaces",
            bare_pod().spec(|s| s.host_ipc = Some(true)),
            Baseline,
            LATEST,
            &[HostNamespaces],
        ),
        (
            "hostProcess",
            bare_pod().app(|s| s.windows_options = Some(from(json!({"hostProcess": true})))),
            Baseline,
            LATEST,
            &[HostProcess],
        ),
        (
            "AppArmor annotation unconfined",
            bare_pod().annotated(
                "container.apparmor.security.beta.kubernetes.io/app",
                "unconfined",
            ),
            Baseline,
            LATEST,
            &[AppArmor],
        ),
        (
            "AppArmor annotation localhost",
            bare_pod().annotated(
                "container.apparmor.security.beta.kubernetes.io/app",
                "localhost/p",
            ),
            Baseline,
            LATEST,
            &[],
        ),
        (
            "AppArmor field unconfined",
            bare_pod()
                .pod_security(|s| s.app_armor_profile = Some(from(json!({"type": "Unconfined"})))),
            Baseline,
            LATEST,
            &[AppArmor],
        ),
        (
            "SELinux container_engine_t from v1.31",
            bare_pod()
                .app(|s| s.se_linux_options = Some(from(json!({"type": "container_engine_t"})))),
            Baseline,
            LATEST,
            &[],
        ),
        (
            "SELinux container_engine_t before v1.31",
            bare_pod()
                .app(|s| s.se_linux_options = Some(from(json!({"type": "container_engine_t"})))),
            Baseline,
            v(30),
            &[SeLinux],
        ),
        (
            "SELinux user",
            bare_pod().pod_security(|s| s.se_linux_options = Some(from(json!({"user": "root"})))),
            Baseline,
            LATEST,
            &[SeLinux],
        ),
        (
            "SELinux level is free",
            bare_pod().pod_security(|s| s.se_linux_options = Some(from(json!({"level": "s0:c1"})))),
            Baseline,
            LATEST,
            &[],
        ),
        (
            "procMount Unmasked",
            bare_pod().app(|s| s.proc_mount = Some("Unmasked".into())),
            Baseline,
            LATEST,
            &[ProcMount],
        ),
        (
            "procMount Unmasked in a user namespace",
            bare_pod()
                .user_namespaced()
                .app(|s| s.proc_mount = Some("Unmasked".into())),
            Baseline,
            LATEST,
            &[],
        ),
        (
            "procMount user-namespace relaxation from v1.35",
            bare_pod()
                .user_namespaced()
                .app(|s| s.proc_mount = Some("Unmasked".into())),
            Baseline,
            v(34),
            &[ProcMount],
        ),
        (
            "restricted keeps procMount strict in a user namespace",
            restricted_pod()
                .user_namespaced()
                .app(|s| s.proc_mount = Some("Unmasked".into())),
            Restricted,
            LATEST,
            &[ProcMount],
        ),
        (
            "seccomp Unconfined at baseline",
            bare_pod()
                .pod_security(|s| s.seccomp_profile = Some(from(json!({"type": "Unconfined"})))),
            Baseline,
            LATEST,
            &[SeccompBaseline],
        ),
        (
            "seccomp Unconfined at restricted",
            restricted_pod().app(|s| s.seccomp_profile = Some(from(json!({"type": "Unconfined"})))),
            Restricted,
            LATEST,
            &[SeccompRestricted],
        ),
        (
            "container-level seccomp is enough",
            restricted_pod()
                .pod_security(|s| s.seccomp_profile = None)
                .app(|s| s.seccomp_profile = Some(from(json!({"type": "RuntimeDefault"})))),
            Restricted,
            LATEST,
            &[],
        ),
        (
            "seccomp annotations before v1.19",
            bare_pod().annotated("seccomp.security.alpha.kubernetes.io/pod", "unconfined"),
            Baseline,
            v(18),
            &[SeccompBaseline],
        ),
        (
            "seccomp annotations ignored from v1.19",
            bare_pod().annotated("seccomp.security.alpha.kubernetes.io/pod", "unconfined"),
            Baseline,
            LATEST,
            &[],
        ),
        (
            "unsafe sysctl",
            bare_pod().sysctl("kernel.msgmax"),
            Baseline,
            LATEST,
            &[Sysctls],
        ),
        (
            "sysctl safe from v1.37",
            bare_pod().sysctl("net.ipv4.tcp_slow_start_after_idle"),
            Baseline,
            LATEST,
            &[],
        ),
        (
            "sysctl not yet safe at v1.36",
            bare_pod().sysctl("net.ipv4.tcp_slow_start_after_idle"),
            Baseline,
            v(36),
            &[Sysctls],
        ),
        (
            "probe host",
            bare_pod().spec(|s| {
                s.containers[0].liveness_probe =
                    Some(from(json!({"tcpSocket": {"port": 80, "host": "10.0.0.1"}})))
            }),
            Baseline,
            LATEST,
            &[HostProbes],
        ),
        (
            "probe host checked from v1.34",
            bare_pod().spec(|s| {
                s.containers[0].liveness_probe =
                    Some(from(json!({"tcpSocket": {"port": 80, "host": "10.0.0.1"}})))
            }),
            Baseline,
            v(33),
            &[],
        ),
        (
            "lifecycle host",
            bare_pod().spec(|s| {
                s.containers[0].lifecycle = Some(from(
                    json!({"preStop": {"httpGet": {"port": 80, "host": "example.com"}}}),
                ))
            }),
            Baseline,
            LATEST,
            &[HostProbes],
        ),
        (
            "runAsNonRoot false on a container",
            restricted_pod().app(|s| s.run_as_non_root = Some(false)),
            Restricted,
            LATEST,
            &[RunAsNonRoot],
        ),
        (
            "runAsUser 0 on the pod",
            restricted_pod().pod_security(|s| s.run_as_user = Some(0)),
            Restricted,
            LATEST,
            &[RunAsUser],
        ),
        (
            "runAsUser checked from v1.23",
            restricted_pod().app(|s| s.run_as_user = Some(0)),
            Restricted,
            v(22),
            &[],
        ),
        (
            "user-namespaced pods may run as root",
            restricted_pod().user_namespaced().pod_security(|s| {
                s.run_as_non_root = None;
                s.run_as_user = Some(0)
            }),
            Restricted,
            LATEST,
            &[],
        ),
        (
            "user-namespace relaxation from v1.35",
            restricted_pod().user_namespaced().pod_security(|s| {
                s.run_as_non_root = None;
                s.run_as_user = Some(0)
            }),
            Restricted,
            v(34),
            &[RunAsNonRoot, RunAsUser],
        ),
        (
            "Windows pods are exempt from Linux-only fields",
            bare_pod()
                .windows()
                .pod_security(|s| s.run_as_non_root = Some(true)),
            Restricted,
            LATEST,
            &[],
        ),
        (
            "Windows exemptions from v1.25",
            bare_pod()
                .windows()
                .pod_security(|s| s.run_as_non_root = Some(true)),
            Restricted,
            v(24),
            &[
                AllowPrivilegeEscalation,
                SeccompRestricted,
                CapabilitiesRestricted,
            ],
        ),
        (
            "versions beyond the newest evaluate as latest",
            bare_pod().sysctl("net.ipv4.tcp_notsent_lowat"),
            Baseline,
            v(99),
            &[],
        ),
    ]
}

#[test]
fn evaluates_like_the_admission() {
    let mut failures = Vec::new();
    for (name, pod, level, version, expected) in cases() {
        let got = evaluate(&pod.meta, &pod.spec, level, version);
        let got_checks: Vec<Check> = got.iter().map(|v| v.check).collect();
        if got_checks != expected {
            failures.push(format!(
                "{name} ({level:?} {version}): expected {expected:?}, got {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
