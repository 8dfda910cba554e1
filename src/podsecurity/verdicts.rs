//! Every Pod Security check's outcome for one pod, kept in a few bytes, from which the failing
//! controls at any level and version are answered without the pod.
//!
//! The checks barely depend on the version; the version mostly decides which checks count.
//! [`Verdicts::of`] runs each check once (both variants of the version-dependent ones, and for
//! sysctls the minor from which they are all safe), and [`Verdicts::failing`] replays the very
//! gating [`evaluate`](super::evaluate) uses over those outcomes.

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{Check, Pod, Probe, Version, checks, gate};
use crate::crd::PodSecurityLevel;

/// The controls Pod Security checks are evidence for, in id order; bit `i` of [`Controls`] is
/// `CONTROLS[i]`.
const CONTROLS: [&str; 8] = [
    "WKL-02", "WKL-03", "WKL-04", "WKL-05", "WKL-06", "WKL-07", "WKL-08", "WKL-09",
];

/// A set of the WKL controls Pod Security checks are evidence for (WKL-02..WKL-09): a bitset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Controls(u8);

impl Controls {
    /// The set holding just `control`; empty if it is not a Pod Security control.
    fn of(control: &str) -> Controls {
        CONTROLS
            .iter()
            .position(|c| *c == control)
            .map_or(Controls(0), |i| Controls(1 << i))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, control: &str) -> bool {
        let one = Controls::of(control);
        !one.is_empty() && self.0 & one.0 != 0
    }

    /// The controls in id order.
    pub fn iter(self) -> impl Iterator<Item = &'static str> {
        CONTROLS
            .into_iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, c)| c)
    }

    pub fn difference(self, other: Controls) -> Controls {
        Controls(self.0 & !other.0)
    }

    pub fn union(self, other: Controls) -> Controls {
        Controls(self.0 | other.0)
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }
}

impl IntoIterator for Controls {
    type Item = &'static str;
    type IntoIter = Box<dyn Iterator<Item = &'static str>>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// The controls the checks are evidence for.
impl FromIterator<Check> for Controls {
    fn from_iter<I: IntoIterator<Item = Check>>(checks: I) -> Self {
        checks.into_iter().fold(Controls(0), |set, check| {
            set.union(Controls::of(check.control()))
        })
    }
}

/// Bit of the pod running Windows (`spec.os.name`).
const WINDOWS: u32 = 1 << 20;
/// Bit of the pod being user-namespaced (`hostUsers: false`).
const USER_NAMESPACED: u32 = 1 << 21;
/// Where the minor from which the pod's sysctls are all safe is kept (8 bits).
const SYSCTLS_SHIFT: u32 = 24;
/// The sysctls minor meaning "never safe": above every effective minor.
const NEVER: u32 = 0xff;

// "Never safe" lies above every effective minor, so sysctls fail at every version.
const _: () = assert!(super::NEWEST_MINOR < NEVER);

// Every probe bit lies below the flag bits.
const _: () = {
    let mut i = 0;
    while i < Probe::ALL.len() {
        assert!(1 << (Probe::ALL[i] as u32) < WINDOWS);
        i += 1;
    }
};

/// Every Pod Security check's raw outcome for one pod (or template): enough to answer any level
/// and version without the pod. Small and Copy: 4 bytes.
///
/// Layout of the `u32`: bit `probe as u32` is set when that probe fails (the `Sysctls` bit is
/// unused), then [`WINDOWS`], [`USER_NAMESPACED`], and in the top byte the lowest minor from
/// which the sysctls pass ([`NEVER`] if none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Verdicts(u32);

impl Probe {
    fn bit(self) -> u32 {
        1 << self as u32
    }
}

impl Verdicts {
    /// Runs every check on the pod once.
    pub fn of(meta: &ObjectMeta, spec: &PodSpec) -> Verdicts {
        let pod = Pod::new(meta, spec);
        let mut bits = 0;
        // Only `Sysctls` reads the minor, and it is kept apart below.
        for probe in Probe::ALL {
            if probe != Probe::Sysctls && probe.run(&pod, super::NEWEST_MINOR).is_some() {
                bits |= probe.bit();
            }
        }
        if pod.is_windows() {
            bits |= WINDOWS;
        }
        if pod.is_user_namespaced() {
            bits |= USER_NAMESPACED;
        }
        // A minor beyond the byte is beyond every effective minor too: never safe either way.
        let sysctls = checks::sysctls_safe_from(spec).map_or(NEVER, |from| from.min(NEVER));
        Verdicts(bits | sysctls << SYSCTLS_SHIFT)
    }

    /// Exactly the controls of `evaluate(meta, spec, level, version)`.
    pub fn failing(self, level: PodSecurityLevel, version: Version) -> Controls {
        let mut controls = Controls(0);
        self.for_each_failing(level, version, |check| {
            controls = controls.union(Controls::of(check.control()));
        });
        controls
    }

    /// Calls `f` with each check `evaluate` fails at `level` and `version`, in its order.
    pub(super) fn for_each_failing(
        self,
        level: PodSecurityLevel,
        version: Version,
        mut f: impl FnMut(Check),
    ) {
        let v = version.effective_minor();
        let windows = self.0 & WINDOWS != 0;
        let user_namespaced = self.0 & USER_NAMESPACED != 0;
        gate(level, v, windows, user_namespaced, |check, probe| {
            if self.fails(probe, v) {
                f(check);
            }
        });
    }

    /// Whether `probe` fails at effective minor `v`.
    pub(super) fn fails(self, probe: Probe, v: u32) -> bool {
        match probe {
            Probe::Sysctls => v < self.0 >> SYSCTLS_SHIFT,
            probe => self.0 & probe.bit() != 0,
        }
    }
}
