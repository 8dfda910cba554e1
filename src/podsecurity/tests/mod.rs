mod builders;
mod cases;
pub(crate) mod verdicts;

use super::*;
use crate::crd::PodSecurityLevel::{Baseline, Restricted};
use Check::*;
use builders::*;
use serde_json::json;

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
    let all = ALL_CHECKS;
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

#[test]
fn an_older_server_applies_its_own_latest_and_clamps_newer_pins() {
    assert_eq!(LATEST.on_server(Some(33)), v(33));
    assert_eq!(v(35).on_server(Some(33)), v(33));
    assert_eq!(v(30).on_server(Some(33)), v(30));
    // As new as onus or newer, or unknown: as asked.
    assert_eq!(LATEST.on_server(Some(37)), LATEST);
    assert_eq!(LATEST.on_server(Some(40)), LATEST);
    assert_eq!(v(35).on_server(None), v(35));
}

#[test]
fn reads_the_server_minor_from_its_version_info() {
    let info = |major: &str, minor: &str| k8s_openapi::apimachinery::pkg::version::Info {
        major: major.into(),
        minor: minor.into(),
        ..Default::default()
    };
    assert_eq!(server_minor(&info("1", "33")), Some(33));
    assert_eq!(server_minor(&info("1", "33+")), Some(33));
    assert_eq!(server_minor(&info("1", "")), None);
    assert_eq!(server_minor(&info("2", "0")), None);
}

/// Every check of the catalog, in declaration order.
pub(super) const ALL_CHECKS: [Check; 18] = [
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
