//! Pod Security Standards checks that agree with the Kubernetes PodSecurity admission
//! (`k8s.io/pod-security-admission` v0.37): same checks, same version gating, same exemptions.
//!
//! The admission's source is the specification; where this module looks odd (a restricted
//! check replacing a baseline one, an exemption appearing in some minor version), it is because
//! the admission does the same.

mod checks;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::{apis::meta::v1::ObjectMeta, version::Info};

use crate::crd::PodSecurityLevel;
use checks::Pod;

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
    let restricted = level == PodSecurityLevel::Restricted;
    let pod = Pod::new(metadata, spec);
    // The admission exempts these pods from some checks, but only from the version it did so.
    let windows_exempt = v >= 25 && pod.is_windows();
    let userns_relaxed = v >= 35 && pod.is_user_namespaced();

    let mut found = Vec::new();
    let mut record = |check: Check, detail: Option<String>| {
        if let Some(detail) = detail {
            found.push(Violation { check, detail });
        }
    };

    // Baseline checks; under restricted some are replaced by their stricter counterpart.
    record(Check::HostProcess, checks::host_process(&pod));
    record(Check::HostNamespaces, checks::host_namespaces(spec));
    record(Check::Privileged, checks::privileged(&pod));
    if !(restricted && v >= 22) {
        record(Check::Capabilities, checks::capabilities_baseline(&pod));
    }
    if !restricted {
        record(Check::HostPathVolumes, checks::host_path_volumes(spec));
    }
    record(Check::HostPorts, checks::host_ports(&pod));
    record(Check::AppArmor, checks::app_armor(&pod));
    record(Check::SeLinux, checks::se_linux(&pod, v));
    // From v1.35 restricted re-adds the strict procMount check that baseline relaxes.
    if restricted || !userns_relaxed {
        record(Check::ProcMount, checks::proc_mount(&pod));
    }
    if !(restricted && v >= 19) {
        let detail = if v >= 19 {
            checks::seccomp_baseline(&pod)
        } else {
            checks::seccomp_annotations(&pod)
        };
        record(Check::SeccompBaseline, detail);
    }
    record(Check::Sysctls, checks::sysctls(spec, v));
    if v >= 34 {
        record(Check::HostProbes, checks::host_probes(&pod));
    }
    if !restricted {
        return found;
    }

    record(Check::VolumeTypes, checks::volume_types(spec));
    if v >= 8 && !windows_exempt {
        record(
            Check::AllowPrivilegeEscalation,
            checks::allow_privilege_escalation(&pod),
        );
    }
    if !userns_relaxed {
        record(Check::RunAsNonRoot, checks::run_as_non_root(&pod));
        if v >= 23 {
            record(Check::RunAsUser, checks::run_as_user(&pod));
        }
    }
    if v >= 19 && !windows_exempt {
        record(Check::SeccompRestricted, checks::seccomp_restricted(&pod));
    }
    if v >= 22 && !windows_exempt {
        record(
            Check::CapabilitiesRestricted,
            checks::capabilities_restricted(&pod),
        );
    }
    found
}
