//! Pod Security Standards checks — placeholder with the agreed interface; the real checks land
//! from the `psa` branch.

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::PodSecurityLevel;

/// PSS version a policy pins: `latest` or `v1.N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    Latest,
    Minor(u32),
}

impl std::str::FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "latest" {
            return Ok(Version::Latest);
        }
        s.strip_prefix("v1.")
            .and_then(|m| m.parse().ok())
            .map(Version::Minor)
            .ok_or_else(|| format!("invalid Pod Security version {s:?}"))
    }
}

/// One Pod Security check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Check {
    Privileged,
}

impl Check {
    /// Catalog control of the check.
    pub fn control(self) -> &'static str {
        "WKL-03"
    }
}

/// One failed check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub check: Check,
    pub detail: String,
}

/// Checks a pod at a level and version.
pub fn evaluate(
    _metadata: &ObjectMeta,
    _spec: &PodSpec,
    _level: PodSecurityLevel,
    _version: Version,
) -> Vec<Violation> {
    Vec::new()
}
