//! `onus report`: the document an auditor asks for. For each policy: the service model, the
//! responsibility matrix (every control with its owner and where the owner came from, mode,
//! result, violation count, every offender, framework ids), the exceptions with expiry and
//! whether each still applies, the responsibility gaps and what Enforce applied or waits for;
//! and the cluster's identity.
//!
//! The document is built from one of three sources, and says which:
//! - the cluster ([`cluster`]): the policies' status (the controller's verdict), plus a live
//!   read of the objects the controls read, evaluated with the same code, for the complete
//!   offender lists that status caps;
//! - `onus check --output json` (offline: everything it found, with file:line);
//! - exported policies (`kubectl get responsibilitypolicies -o json`, or one policy): their
//!   status only, so offenders are the capped examples and the document says so.

pub mod cli;
pub mod cluster;
pub mod render;

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

use crate::{
    catalog::{self, Family},
    crd::{
        AdmissionAction, ControlResult, ControlStatus, Exception, Mode, Owner, OwnerSource,
        ResponsibilityPolicy, ResponsibilityPolicySpec, ServiceModel,
    },
    evaluate::Evaluation,
    status,
};

/// The whole report.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    /// RFC 3339.
    pub generated_at: String,
    /// `cluster`, `check` (an `onus check --output json` file) or `status` (exported
    /// policies).
    pub source: String,
    /// The file read, for `check` and `status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Set when the report was made against a cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterIdentity>,
    pub policies: Vec<PolicyReport>,
}

/// Which cluster the report is about.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterIdentity {
    /// The API server's URL, as the kubeconfig names it.
    pub server: String,
    /// The API server's `gitVersion`.
    pub version: String,
    /// The `kube-system` namespace's UID: stable for the life of the cluster.
    pub kube_system_uid: String,
}

/// One policy's part of the report.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReport {
    pub name: String,
    pub service_model: ServiceModel,
    pub mode: Mode,
    /// The Pod Security version workloads were judged at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_security_version: Option<String>,
    /// Namespaces the policy governs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<u64>,
    /// Every customer-owned control passes (and, for `check`, every input was read).
    pub compliant: bool,
    pub controls: Vec<ControlRow>,
    pub exceptions: Vec<ExceptionRow>,
    pub gaps: Vec<GapRow>,
    /// What Enforce applied and what waits (from status).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
    /// What the reader should know about the completeness of this part.
    pub notes: Vec<String>,
}

/// One row of the responsibility matrix.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ControlRow {
    pub id: String,
    pub title: String,
    pub family: String,
    pub owner: Owner,
    pub owner_source: OwnerSource,
    /// The reason given in `spec.responsibilities` when the owner is an override.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_reason: Option<String>,
    /// The family's mode (the policy's unless the family overrides it).
    pub mode: Mode,
    pub result: ControlResult,
    pub violations: u64,
    pub excepted: u64,
    /// The offending objects: all of them when `offendersComplete`.
    pub offenders: Vec<Offender>,
    pub offenders_complete: bool,
    pub frameworks: Vec<String>,
    /// `Deny`: prevented at admission (a generated ValidatingAdmissionPolicy the API server
    /// accepted); `Warn`: warned there; absent: only detected after the fact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission: Option<AdmissionAction>,
}

impl ControlRow {
    /// Where the control is enforced: `prevented` or `warned` at admission, `detected` after
    /// the fact, or `-` for a control this policy does not check (provider-owned, not
    /// observable, disabled).
    pub fn checked_at(&self) -> &'static str {
        match (self.admission, self.result) {
            (Some(AdmissionAction::Deny), _) => "prevented",
            (Some(AdmissionAction::Warn), _) => "warned",
            (None, ControlResult::Pass | ControlResult::Fail | ControlResult::Excepted) => {
                "detected"
            }
            (None, _) => "-",
        }
    }
}

/// One offending object, with its namespace (none for cluster-scoped objects) and, from
/// `onus check`, where it is in the input.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Offender {
    pub object: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// One exception of the policy.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExceptionRow {
    pub controls: Vec<String>,
    /// Empty: every governed namespace.
    pub namespaces: Vec<String>,
    /// `Kind/name`; empty: every object.
    pub resources: Vec<String>,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Not expired when the report was generated.
    pub valid: bool,
}

/// A control the customer owns but nobody checks (a disabled family, a provider override).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GapRow {
    pub control: String,
    pub reason: String,
    pub message: String,
}

/// Enforce's state, from status.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Enforcement {
    /// The `Enforced` condition: status, reason, message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// `Pending` (Enforce still to apply) or `WouldApply` (Audit: a dry run), with counts in
    /// namespaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remediation: Option<Value>,
}

/// The mode of a family: its own, else the policy's.
pub fn family_mode(spec: &ResponsibilityPolicySpec, family: Family) -> Mode {
    let c = &spec.controls;
    let own = match family {
        Family::Rbac => c.rbac.mode,
        Family::ServiceAccounts => c.service_accounts.mode,
        Family::PodSecurity => c.pod_security.mode,
        Family::Network => c.network.mode,
        Family::Data => c.data.mode,
        Family::Audit => c.audit.mode,
    };
    own.unwrap_or(spec.mode)
}

/// The exceptions of a spec, each with whether it still applies at `now`.
pub fn exceptions(spec: &ResponsibilityPolicySpec, now: Timestamp) -> Vec<ExceptionRow> {
    spec.exceptions
        .iter()
        .map(|e: &Exception| ExceptionRow {
            controls: e.controls.clone(),
            namespaces: e.namespaces.clone(),
            resources: e
                .resources
                .iter()
                .map(|r| format!("{}/{}", r.kind, r.name))
                .collect(),
            reason: e.reason.clone(),
            expires: e.expires.as_ref().map(|t| t.0.to_string()),
            valid: e.expires.as_ref().is_none_or(|t| t.0 > now),
        })
        .collect()
}

fn owner_reason(spec: &ResponsibilityPolicySpec, id: &str, source: OwnerSource) -> Option<String> {
    (source == OwnerSource::Override)
        .then(|| {
            spec.responsibilities
                .iter()
                .find(|r| r.control == id)
                .map(|r| r.reason.clone())
        })
        .flatten()
}

fn row(
    spec: &ResponsibilityPolicySpec,
    c: &ControlStatus,
    offenders: Vec<Offender>,
    complete: bool,
) -> ControlRow {
    let family = catalog::control_by_id(&c.id).map(|k| k.family);
    ControlRow {
        id: c.id.clone(),
        title: c.title.clone(),
        family: c.family.clone(),
        owner: c.owner,
        owner_source: c.owner_source,
        owner_reason: owner_reason(spec, &c.id, c.owner_source),
        mode: family.map_or(spec.mode, |f| family_mode(spec, f)),
        result: c.result,
        violations: c.violations,
        excepted: c.excepted,
        offenders,
        offenders_complete: complete,
        frameworks: c.frameworks.clone(),
        admission: c.admission,
    }
}

/// The namespace of an offender as status names it (`Kind/ns/name`, `Kind/name` for
/// cluster-scoped kinds, a binding's subject after `: `).
fn namespace_of(object: &str) -> Option<String> {
    let object = object.split(": ").next().unwrap_or(object);
    let mut parts = object.splitn(3, '/');
    let kind = parts.next()?;
    let first = parts.next()?;
    match (kind, parts.next()) {
        ("Namespace", None) => Some(first.to_string()),
        (_, Some(_)) => Some(first.to_string()),
        _ => None,
    }
}

fn offender(object: &str, location: Option<String>) -> Offender {
    Offender {
        object: object.to_string(),
        namespace: namespace_of(object),
        location,
    }
}

/// A policy's part from its status alone (offenders: the capped examples), or from its
/// status and an evaluation of the live objects (offenders: all of them).
pub fn from_policy(
    policy: &ResponsibilityPolicy,
    live: Option<&Evaluation>,
    now: Timestamp,
) -> PolicyReport {
    let spec = &policy.spec;
    let name = policy.metadata.name.clone().unwrap_or_default();
    let Some(st) = policy.status.as_ref() else {
        return PolicyReport {
            name,
            service_model: spec.service_model,
            mode: spec.mode,
            pod_security_version: None,
            namespaces: None,
            compliant: false,
            controls: Vec::new(),
            exceptions: exceptions(spec, now),
            gaps: Vec::new(),
            enforcement: None,
            notes: vec!["the policy has no status yet: onus has not evaluated it".into()],
        };
    };
    let mut notes = Vec::new();
    let generation = policy.metadata.generation;
    if st.observed_generation != generation {
        notes.push(format!(
            "status is of generation {:?}, the spec is at {:?}: the controller has not \
             evaluated the latest spec yet",
            st.observed_generation, generation
        ));
    }
    let controls = st
        .controls
        .iter()
        .map(|c| {
            let live_violations = live.and_then(|e| {
                e.outcomes
                    .iter()
                    .find(|o| o.control.id == c.id)
                    .map(|o| &o.violations)
            });
            match live_violations {
                // The same count and every example of status among them: the same
                // violations as status, all of them.
                Some(v)
                    if v.len() as u64 == c.violations
                        && c.examples.iter().all(|e| v.iter().any(|v| &v.example == e)) =>
                {
                    row(
                        spec,
                        c,
                        v.iter().map(|v| offender(&v.example, None)).collect(),
                        true,
                    )
                }
                Some(v) => {
                    notes.push(format!(
                        "{}: status counts {} violations, a live read finds {} (or others); \
                         the cluster changed since the last evaluation, so the examples of \
                         status are shown",
                        c.id,
                        c.violations,
                        v.len()
                    ));
                    row(spec, c, examples(c), false)
                }
                None => {
                    let complete = c.examples.len() as u64 == c.violations;
                    row(spec, c, examples(c), complete)
                }
            }
        })
        .collect::<Vec<_>>();
    if live.is_none() && controls.iter().any(|c| !c.offenders_complete) {
        notes.push(format!(
            "exported status lists at most {} offenders per control; counts are exact",
            status::MAX_EXAMPLES
        ));
    }
    let gaps = match live {
        Some(e) => e
            .gaps
            .iter()
            .map(|g| GapRow {
                control: g.control.to_string(),
                reason: g.reason.to_string(),
                message: g.message.clone(),
            })
            .collect(),
        None => status::condition(st, status::RESPONSIBILITY_GAP)
            .filter(|c| c.status == "True")
            .map(|c| GapRow {
                control: String::new(),
                reason: c.reason.clone(),
                message: c.message.clone(),
            })
            .into_iter()
            .collect(),
    };
    let enforced = status::condition(st, status::ENFORCED)
        .map(|c| format!("{} {}: {}", c.status, c.reason, c.message));
    let remediation = st
        .remediation
        .as_ref()
        .and_then(|r| serde_json::to_value(r).ok());
    let compliant = status::condition(st, status::COMPLIANT).is_some_and(|c| c.status == "True");
    PolicyReport {
        name,
        service_model: spec.service_model,
        mode: spec.mode,
        pod_security_version: st.pod_security_version.clone(),
        namespaces: st.summary.as_ref().map(|s| u64::from(s.namespaces)),
        compliant,
        controls,
        exceptions: exceptions(spec, now),
        gaps,
        enforcement: (enforced.is_some() || remediation.is_some()).then_some(Enforcement {
            condition: enforced,
            remediation,
        }),
        notes,
    }
}

fn examples(c: &ControlStatus) -> Vec<Offender> {
    c.examples.iter().map(|e| offender(e, None)).collect()
}

/// The part of an `onus check --output json` document.
pub fn from_check(document: &Value, now: Timestamp) -> Result<PolicyReport, String> {
    let spec: ResponsibilityPolicySpec = serde_json::from_value(document["policy"]["spec"].clone())
        .map_err(|e| format!("policy.spec: {e}"))?;
    let name = match &document["policy"]["source"] {
        Value::String(s) if s == "default" => "onus check (built-in default policy)".to_string(),
        source => format!(
            "onus check ({})",
            source["file"].as_str().unwrap_or("policy file")
        ),
    };
    let statuses: Vec<ControlStatus> = document["controls"]
        .as_array()
        .ok_or("no controls: not an `onus check --output json` document")?
        .iter()
        .map(|c| {
            let mut c = c.clone();
            c["examples"] = Value::Array(Vec::new());
            serde_json::from_value::<ControlStatus>(c).map_err(|e| format!("controls: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let controls = statuses
        .iter()
        .zip(document["controls"].as_array().into_iter().flatten())
        .map(|(c, raw)| {
            let offenders = raw["offenders"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| {
                    let at = &o["location"];
                    let location = if at["file"].is_string() {
                        Some(format!(
                            "{}:{}",
                            at["file"].as_str().unwrap_or(""),
                            at["line"]
                        ))
                    } else if at["impliedBy"]["file"].is_string() {
                        Some(format!(
                            "implied by {}:{}",
                            at["impliedBy"]["file"].as_str().unwrap_or(""),
                            at["impliedBy"]["line"]
                        ))
                    } else {
                        None
                    };
                    offender(o["object"].as_str().unwrap_or_default(), location)
                })
                .collect();
            row(&spec, c, offenders, true)
        })
        .collect();
    let mut notes = vec!["offline: `onus check` on manifests, not a cluster's state".to_string()];
    let errors = document["input"]["errors"].as_array().map_or(0, Vec::len);
    if errors > 0 {
        notes.push(format!(
            "{errors} input errors: the files that could not be read are not in this report"
        ));
    }
    Ok(PolicyReport {
        name,
        service_model: spec.service_model,
        mode: spec.mode,
        pod_security_version: document["podSecurityVersion"].as_str().map(String::from),
        namespaces: document["namespaces"].as_u64(),
        compliant: document["summary"]["compliant"] == true,
        controls,
        exceptions: exceptions(&spec, now),
        gaps: document["gaps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| GapRow {
                control: g["control"].as_str().unwrap_or_default().into(),
                reason: g["reason"].as_str().unwrap_or_default().into(),
                message: g["message"].as_str().unwrap_or_default().into(),
            })
            .collect(),
        enforcement: None,
        notes,
    })
}

/// A report from a file: `onus check --output json`, a ResponsibilityPolicy, or a List of
/// them (`kubectl get responsibilitypolicies -o json|yaml`). `only` keeps one policy.
pub fn from_file(
    file: &str,
    text: &str,
    only: Option<&str>,
    now: Timestamp,
) -> Result<Document, String> {
    let value: Value = serde_yaml::from_str(text).map_err(|e| format!("{file}: {e}"))?;
    let mut document = Document {
        generated_at: now.to_string(),
        source: String::new(),
        file: Some(file.to_string()),
        cluster: None,
        policies: Vec::new(),
    };
    if value.get("controls").is_some() && value.get("exitCode").is_some() {
        document.source = "check".into();
        document
            .policies
            .push(from_check(&value, now).map_err(|e| format!("{file}: {e}"))?);
        return Ok(document);
    }
    let items: Vec<Value> = match value.get("kind").and_then(Value::as_str) {
        Some("ResponsibilityPolicy") => vec![value],
        Some(k) if k.ends_with("List") => value["items"].as_array().cloned().unwrap_or_default(),
        _ => {
            return Err(format!(
                "{file}: neither `onus check --output json` nor ResponsibilityPolicy objects"
            ));
        }
    };
    document.source = "status".into();
    for item in items {
        let policy: ResponsibilityPolicy =
            serde_json::from_value(item).map_err(|e| format!("{file}: {e}"))?;
        if only.is_none_or(|n| policy.metadata.name.as_deref() == Some(n)) {
            document.policies.push(from_policy(&policy, None, now));
        }
    }
    if let Some(name) = only
        && document.policies.is_empty()
    {
        return Err(format!("{file}: no policy named {name}"));
    }
    Ok(document)
}

#[cfg(test)]
mod tests;
