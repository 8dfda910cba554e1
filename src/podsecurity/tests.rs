use super::*;
use crate::crd::PodSecurityLevel::{Baseline, Restricted};
use Check::*;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EphemeralContainer, PodSecurityContext, SecurityContext, Sysctl,
    Volume,
};
use serde_json::json;

/// A pod under construction; starts with one container named "app".
#[derive(Clone)]
struct TestPod {
    meta: ObjectMeta,
    spec: PodSpec,
}

/// A pod with one container and no security settings: passes baseline only.
fn bare_pod() -> TestPod {
    TestPod {
        meta: ObjectMeta::default(),
        spec: PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("app".into()),
                ..Default::default()
            }],
            ..Default::default()
        },
    }
}

/// A pod that passes restricted at every version: the starting point tests then break.
fn restricted_pod() -> TestPod {
    bare_pod()
        .pod_security(|s| {
            s.run_as_non_root = Some(true);
            s.seccomp_profile = Some(from(json!({"type": "RuntimeDefault"})));
        })
        .app(hardened)
}

fn hardened(s: &mut SecurityContext) {
    s.allow_privilege_escalation = Some(false);
    s.capabilities = Some(Capabilities {
        drop: Some(vec!["ALL".into()]),
        add: None,
    });
}

fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("test literal")
}

impl TestPod {
    fn pod_security(mut self, f: impl FnOnce(&mut PodSecurityContext)) -> Self {
        f(self
            .spec
            .security_context
            .get_or_insert_with(Default::default));
        self
    }

    /// Changes the security context of the "app" container.
    fn app(mut self, f: impl FnOnce(&mut SecurityContext)) -> Self {
        if let Some(c) = self.spec.containers.first_mut() {
            f(c.security_context.get_or_insert_with(Default::default));
        }
        self
    }

    fn spec(mut self, f: impl FnOnce(&mut PodSpec)) -> Self {
        f(&mut self.spec);
        self
    }

    fn init_container(mut self, name: &str, f: impl FnOnce(&mut SecurityContext)) -> Self {
        let mut sc = SecurityContext::default();
        f(&mut sc);
        let init = self.spec.init_containers.get_or_insert_with(Vec::new);
        init.push(Container {
            name: name.into(),
            security_context: Some(sc),
            ..Default::default()
        });
        self
    }

    fn ephemeral_container(mut self, name: &str, f: impl FnOnce(&mut SecurityContext)) -> Self {
        let mut sc = SecurityContext::default();
        f(&mut sc);
        let eph = self.spec.ephemeral_containers.get_or_insert_with(Vec::new);
        eph.push(EphemeralContainer {
            name: name.into(),
            security_context: Some(sc),
            ..Default::default()
        });
        self
    }

    fn annotated(mut self, key: &str, value: &str) -> Self {
        let annotations = self.meta.annotations.get_or_insert_with(Default::default);
        annotations.insert(key.into(), value.into());
        self
    }

    fn volume(self, volume: serde_json::Value) -> Self {
        self.spec(|s| {
            s.volumes
                .get_or_insert_with(Vec::new)
                .push(from::<Volume>(volume))
        })
    }

    fn sysctl(self, name: &str) -> Self {
        self.pod_security(|s| {
            s.sysctls.get_or_insert_with(Vec::new).push(Sysctl {
                name: name.into(),
                value: "1".into(),
            })
        })
    }

    fn windows(self) -> Self {
        self.spec(|s| s.os = Some(from(json!({"name": "windows"}))))
    }

    fn user_namespaced(self) -> Self {
        self.spec(|s| s.host_users = Some(false))
    }
}

fn add_caps(caps: &[&str]) -> impl FnOnce(&mut SecurityContext) {
    let caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
    move |s| s.capabilities.get_or_insert_with(Default::default).add = Some(caps)
}

fn v(minor: u32) -> Version {
    Version::Minor(minor)
}

const LATEST: Version = Version::Latest;

#[test]
fn evaluates_like_the_admission() {
    let cases: Vec<(&str, TestPod, PodSecurityLevel, Version, &[Check])> = vec![
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
    ];
    let mut failures = Vec::new();
    for (name, pod, level, version, expected) in cases {
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

#[test]
fn privileged_detail_names_the_container() {
    let pod = bare_pod().app(|s| s.privileged = Some(true));
    let found = evaluate(&pod.meta, &pod.spec, Baseline, LATEST);
    let details: Vec<&str> = found.iter().map(|v| v.detail.as_str()).collect();
    assert_eq!(details, [r#"container "app" sets privileged=true"#]);
}

#[test]
fn parses_and_prints_versions() {
    for (text, version) in [
        ("latest", LATEST),
        ("v1.0", v(0)),
        ("v1.37", v(37)),
        ("v1.120", v(120)),
    ] {
        assert_eq!(text.parse::<Version>(), Ok(version));
        assert_eq!(version.to_string(), text);
    }
    for bad in [
        "",
        "Latest",
        "1.30",
        "v2.1",
        "v1.",
        "v1.01",
        "v1.-1",
        "v1.+3",
        "v1.99999999999",
    ] {
        let err = bad.parse::<Version>().expect_err(bad);
        assert!(err.contains(&format!("{bad:?}")), "{err}");
    }
}

#[test]
fn checks_have_distinct_ids() {
    let all = [
        HostProcess,
        HostNamespaces,
        Privileged,
        Capabilities,
        HostPathVolumes,
        HostPorts,
        AppArmor,
        SeLinux,
        ProcMount,
        SeccompBaseline,
        Sysctls,
        HostProbes,
        VolumeTypes,
        AllowPrivilegeEscalation,
        RunAsNonRoot,
        RunAsUser,
        SeccompRestricted,
        CapabilitiesRestricted,
    ];
    let ids: std::collections::BTreeSet<_> = all.iter().map(|c| c.id()).collect();
    assert_eq!(ids.len(), all.len());
    assert_eq!(Privileged.control(), "WKL-03");
    assert_eq!(VolumeTypes.control(), "WKL-09");
}

#[test]
fn details_name_the_offenders() {
    let pod = bare_pod()
        .app(add_caps(&["NET_RAW", "SYS_ADMIN"]))
        .init_container("init", |s| s.proc_mount = Some("Unmasked".into()))
        .annotated(
            "container.apparmor.security.beta.kubernetes.io/app",
            "unconfined",
        )
        .volume(json!({"name": "logs", "hostPath": {"path": "/var/log"}}));
    let details = |level| -> Vec<String> {
        evaluate(&pod.meta, &pod.spec, level, LATEST)
            .into_iter()
            .map(|v| format!("{} {}", v.check.id(), v.detail))
            .collect()
    };
    assert_eq!(
        details(Baseline),
        [
            r#"B4 container "app" adds non-default capabilities "NET_RAW", "SYS_ADMIN""#,
            r#"B5 pod uses hostPath volumes "logs""#,
            r#"B7 pod annotation container.apparmor.security.beta.kubernetes.io/app="unconfined""#,
            r#"B9 container "init" sets procMount "Unmasked""#,
        ]
    );
    assert!(
        details(Restricted)
            .contains(&r#"R1 pod uses restricted volume "logs" (hostPath)"#.to_string())
    );
    assert!(details(Restricted).contains(
        &r#"R2 containers "init", "app" do not set allowPrivilegeEscalation=false"#.to_string()
    ));
}

#[test]
fn never_panics_on_empty_or_odd_input() {
    let odd = bare_pod()
        .spec(|s| s.containers.clear())
        .volume(json!({"name": ""}))
        .annotated("container.apparmor.security.beta.kubernetes.io/", "")
        .annotated("seccomp.security.alpha.kubernetes.io/pod", "");
    for pod in [bare_pod(), odd] {
        for level in [Baseline, Restricted] {
            for version in [LATEST, v(0), v(u32::MAX)] {
                evaluate(&pod.meta, &pod.spec, level, version);
                evaluate(&ObjectMeta::default(), &PodSpec::default(), level, version);
            }
        }
    }
    assert_eq!(v(u32::MAX).to_string().parse::<Version>(), Ok(v(u32::MAX)));
}
