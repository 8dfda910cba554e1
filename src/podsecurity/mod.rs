//! Pod Security Standards checks that agree with the Kubernetes PodSecurity admission
//! (`k8s.io/pod-security-admission` v0.37): same checks, same version gating, same exemptions.
//!
//! The admission's source is the specification; where this module looks odd (a restricted
//! check replacing a baseline one, an exemption appearing in some minor version), it is because
//! the admission does the same.

mod checks;
#[cfg(test)]
pub(crate) mod tests;
mod verdicts;

use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::{apis::meta::v1::ObjectMeta, version::Info};

use crate::crd::PodSecurityLevel;
use checks::Pod;
pub use verdicts::{Controls, Verdicts};

/// The newest policy version the v1.37 admission knows; newer pins evaluate as this one.
const NEWEST_MINOR: u32 = 37;

/// PSS version a policy pins: `latest` or `v1.N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    Latest,
    Minor(u32),
}

impl Version {
    /// The minor version whose checks apply: the admission clamps pins beyond what it knows.
    pub fn effective_minor(self) -> u32 {
        match self {
            Version::Latest => NEWEST_MINOR,
            Version::Minor(n) => n.min(NEWEST_MINOR),
        }
    }
}

impl Version {
    /// The version a server of minor `server` applies when asked for this one: its `latest`
    /// is its own minor, and it evaluates newer pins as that. An unknown server, or one at
    /// least as new as onus, changes nothing.
    pub fn on_server(self, server: Option<u32>) -> Version {
        match (self, server) {
            (Version::Latest, Some(s)) if s < NEWEST_MINOR => Version::Minor(s),
            (Version::Minor(n), Some(s)) if s < NEWEST_MINOR => Version::Minor(n.min(s)),
            _ => self,
        }
    }
}

/// The minor version of a Kubernetes 1.x server from its `/version` (`minor` may carry a
/// suffix, e.g. `33+` on some managed clusters).
pub fn server_minor(info: &Info) -> Option<u32> {
    if info.major.trim_end_matches('+') != "1" {
        return None;
    }
    let digits: String = info
        .minor
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

impl FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "latest" {
            return Ok(Version::Latest);
        }
        let bad = || format!("invalid Pod Security version {s:?}: must be \"latest\" or \"v1.N\"");
        let minor = s.strip_prefix("v1.").ok_or_else(bad)?;
        // Same grammar as the admission's label parser: no sign, no leading zeros.
        let digits_only = !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit());
        if !digits_only || (minor.len() > 1 && minor.starts_with('0')) {
            return Err(bad());
        }
        minor.parse().map(Version::Minor).map_err(|_| bad())
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Latest => f.write_str("latest"),
            Version::Minor(n) => write!(f, "v1.{n}"),
        }
    }
}

/// One Pod Security check of the catalog (B1..B12 baseline, R1..R6 restricted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Check {
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
}

impl Check {
    /// Catalog id: `B1`..`B12`, `R1`..`R6`.
    pub fn id(self) -> &'static str {
        match self {
            Check::HostProcess => "B1",
            Check::HostNamespaces => "B2",
            Check::Privileged => "B3",
            Check::Capabilities => "B4",
            Check::HostPathVolumes => "B5",
            Check::HostPorts => "B6",
            Check::AppArmor => "B7",
            Check::SeLinux => "B8",
            Check::ProcMount => "B9",
            Check::SeccompBaseline => "B10",
            Check::Sysctls => "B11",
            Check::HostProbes => "B12",
            Check::VolumeTypes => "R1",
            Check::AllowPrivilegeEscalation => "R2",
            Check::RunAsNonRoot => "R3",
            Check::RunAsUser => "R4",
            Check::SeccompRestricted => "R5",
            Check::CapabilitiesRestricted => "R6",
        }
    }

    /// The control (`WKL-xx`) this check is evidence for.
    pub fn control(self) -> &'static str {
        match self {
            Check::HostProcess
            | Check::HostNamespaces
            | Check::HostPathVolumes
            | Check::HostPorts => "WKL-02",
            Check::Privileged => "WKL-03",
            Check::Capabilities | Check::CapabilitiesRestricted => "WKL-04",
            Check::AppArmor
            | Check::SeLinux
            | Check::ProcMount
            | Check::SeccompBaseline
            | Check::Sysctls
            | Check::HostProbes => "WKL-05",
            Check::AllowPrivilegeEscalation => "WKL-06",
            Check::RunAsNonRoot | Check::RunAsUser => "WKL-07",
            Check::SeccompRestricted => "WKL-08",
            Check::VolumeTypes => "WKL-09",
        }
    }
}

/// A failed check, with what in the pod failed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub check: Check,
    pub detail: String,
}

/// Checks a pod (or pod template: its metadata carries the legacy AppArmor annotations) at a
/// level and version, exactly as the PodSecurity admission does. Empty = admitted.
pub fn evaluate(
    metadata: &ObjectMeta,
    spec: &PodSpec,
    level: PodSecurityLevel,
    version: Version,
) -> Vec<Violation> {
    let v = version.effective_minor();
    let pod = Pod::new(metadata, spec);
    let mut found = Vec::new();
    gate(
        level,
        v,
        pod.is_windows(),
        pod.is_user_namespaced(),
        |check, probe| {
            if let Some(detail) = probe.run(&pod, v) {
                found.push(Violation { check, detail });
            }
        },
    );
    found
}

/// One way of running a check: the check itself, or, for the checks whose outcome depends on
/// the policy version, the variant of it a version applies. [`Verdicts`] keeps one outcome per
/// probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    HostProcess,
    HostNamespaces,
    Privileged,
    CapabilitiesBaseline,
    HostPathVolumes,
    HostPorts,
    AppArmor,
    /// SELinux before v1.31: `container_engine_t` is not an allowed type yet.
    SeLinuxBefore31,
    /// SELinux from v1.31.
    SeLinux,
    ProcMount,
    /// Baseline seccomp before v1.19: the legacy annotations.
    SeccompAnnotations,
    /// Baseline seccomp from v1.19: the `seccompProfile` fields.
    SeccompFields,
    /// Sysctls at the version being evaluated (each sysctl is safe from some minor on).
    Sysctls,
    HostProbes,
    VolumeTypes,
    AllowPrivilegeEscalation,
    RunAsNonRoot,
    RunAsUser,
    SeccompRestricted,
    CapabilitiesRestricted,
}

impl Probe {
    /// Every probe. [`Verdicts`] records the outcome of each but `Sysctls` (it keeps the minor
    /// from which the sysctls pass instead).
    const ALL: [Probe; 20] = [
        Probe::HostProcess,
        Probe::HostNamespaces,
        Probe::Privileged,
        Probe::CapabilitiesBaseline,
        Probe::HostPathVolumes,
        Probe::HostPorts,
        Probe::AppArmor,
        Probe::SeLinuxBefore31,
        Probe::SeLinux,
        Probe::ProcMount,
        Probe::SeccompAnnotations,
        Probe::SeccompFields,
        Probe::Sysctls,
        Probe::HostProbes,
        Probe::VolumeTypes,
        Probe::AllowPrivilegeEscalation,
        Probe::RunAsNonRoot,
        Probe::RunAsUser,
        Probe::SeccompRestricted,
        Probe::CapabilitiesRestricted,
    ];

    /// Runs the probe on a pod; `minor` is the effective policy minor (only sysctls read it).
    fn run(self, pod: &Pod, minor: u32) -> Option<String> {
        match self {
            Probe::HostProcess => checks::host_process(pod),
            Probe::HostNamespaces => checks::host_namespaces(pod.spec()),
            Probe::Privileged => checks::privileged(pod),
            Probe::CapabilitiesBaseline => checks::capabilities_baseline(pod),
            Probe::HostPathVolumes => checks::host_path_volumes(pod.spec()),
            Probe::HostPorts => checks::host_ports(pod),
            Probe::AppArmor => checks::app_armor(pod),
            Probe::SeLinuxBefore31 => checks::se_linux(pod, false),
            Probe::SeLinux => checks::se_linux(pod, true),
            Probe::ProcMount => checks::proc_mount(pod),
            Probe::SeccompAnnotations => checks::seccomp_annotations(pod),
            Probe::SeccompFields => checks::seccomp_baseline(pod),
            Probe::Sysctls => checks::sysctls(pod.spec(), minor),
            Probe::HostProbes => checks::host_probes(pod),
            Probe::VolumeTypes => checks::volume_types(pod.spec()),
            Probe::AllowPrivilegeEscalation => checks::allow_privilege_escalation(pod),
            Probe::RunAsNonRoot => checks::run_as_non_root(pod),
            Probe::RunAsUser => checks::run_as_user(pod),
            Probe::SeccompRestricted => checks::seccomp_restricted(pod),
            Probe::CapabilitiesRestricted => checks::capabilities_restricted(pod),
        }
    }
}

/// The admission's version gating, shared by [`evaluate`] and [`Verdicts::failing`]: calls
/// `run` with every check a pod is held to at `level` and effective minor `v`, in report
/// order, each with the probe that decides it. `windows` and `user_namespaced` describe the
/// pod (`spec.os.name` is windows; `hostUsers: false`).
fn gate(
    level: PodSecurityLevel,
    v: u32,
    windows: bool,
    user_namespaced: bool,
    mut run: impl FnMut(Check, Probe),
) {
    let restricted = level == PodSecurityLevel::Restricted;
    // The admission exempts these pods from some checks, but only from the version it did so.
    let windows_exempt = v >= 25 && windows;
    let userns_relaxed = v >= 35 && user_namespaced;

    // Baseline checks; under restricted some are replaced by their stricter counterpart.
    run(Check::HostProcess, Probe::HostProcess);
    run(Check::HostNamespaces, Probe::HostNamespaces);
    run(Check::Privileged, Probe::Privileged);
    if !(restricted && v >= 22) {
        run(Check::Capabilities, Probe::CapabilitiesBaseline);
    }
    if !restricted {
        run(Check::HostPathVolumes, Probe::HostPathVolumes);
    }
    run(Check::HostPorts, Probe::HostPorts);
    run(Check::AppArmor, Probe::AppArmor);
    // container_engine_t is allowed from v1.31.
    let se_linux = if v >= 31 {
        Probe::SeLinux
    } else {
        Probe::SeLinuxBefore31
    };
    run(Check::SeLinux, se_linux);
    // From v1.35 restricted re-adds the strict procMount check that baseline relaxes.
    if restricted || !userns_relaxed {
        run(Check::ProcMount, Probe::ProcMount);
    }
    if !(restricted && v >= 19) {
        let seccomp = if v >= 19 {
            Probe::SeccompFields
        } else {
            Probe::SeccompAnnotations
        };
        run(Check::SeccompBaseline, seccomp);
    }
    run(Check::Sysctls, Probe::Sysctls);
    if v >= 34 {
        run(Check::HostProbes, Probe::HostProbes);
    }
    if !restricted {
        return;
    }

    run(Check::VolumeTypes, Probe::VolumeTypes);
    if v >= 8 && !windows_exempt {
        run(
            Check::AllowPrivilegeEscalation,
            Probe::AllowPrivilegeEscalation,
        );
    }
    if !userns_relaxed {
        run(Check::RunAsNonRoot, Probe::RunAsNonRoot);
        if v >= 23 {
            run(Check::RunAsUser, Probe::RunAsUser);
        }
    }
    if v >= 19 && !windows_exempt {
        run(Check::SeccompRestricted, Probe::SeccompRestricted);
    }
    if v >= 22 && !windows_exempt {
        run(Check::CapabilitiesRestricted, Probe::CapabilitiesRestricted);
    }
}
