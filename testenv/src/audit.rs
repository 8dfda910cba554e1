//! The API server's audit log: every write request, by whom, to what, with what outcome.
//!
//! Tests use it to prove what a component wrote (or did not write) from the API server's side,
//! independent of the component's own logs. Only writes are logged, at `Metadata` level (no
//! bodies), and only when complete, so the file stays small and one request is one line;
//! except for the users named in [`crate::Options::audit_users`], whose every request (reads
//! and watches too) is logged, so a benchmark can count an operator's LISTs and WATCHes.

use std::path::Path;

use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

use crate::{ControlPlane, Error};

/// The audit policy: writes at Metadata level, nothing else. `RequestReceived` is omitted so
/// each request is logged once, with its response code (a watch, being long-running, also
/// at `ResponseStarted`).
const POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
";

/// The policy, with a first rule logging every request of `users` (if any).
fn policy(users: &[String]) -> String {
    if users.is_empty() {
        return POLICY.to_string();
    }
    let names: Vec<String> = users
        .iter()
        .map(|u| serde_json::Value::String(u.clone()).to_string())
        .collect();
    POLICY.replacen(
        "rules:\n",
        &format!(
            "rules:\n- level: Metadata\n  users: [{}]\n",
            names.join(", ")
        ),
        1,
    )
}

/// The audit log file in a run's directory.
pub(crate) const LOG_FILE: &str = "audit.log";

/// Writes the policy into `dir` and returns the kube-apiserver flags that log to `dir`.
/// Every request of `users` is logged, not only their writes.
pub(crate) fn apiserver_args(dir: &Path, users: &[String]) -> Result<Vec<String>, Error> {
    let policy_path = dir.join("audit-policy.yaml");
    std::fs::write(&policy_path, policy(users)).map_err(|e| Error::io(&policy_path, e))?;
    let policy = policy_path;
    Ok(vec![
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", dir.join(LOG_FILE).display()),
        "--audit-log-format=json".into(),
        // The request returns only after its entry is written, so a test reads what it did.
        "--audit-log-mode=blocking".into(),
        // No rotation: the reader reads one file, and a test run stays far below any limit.
        "--audit-log-maxsize=0".into(),
    ])
}

/// One audited request (the fields of an `audit.k8s.io/v1` Event a test asks about).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// The authenticated user name.
    pub user: String,
    pub groups: Vec<String>,
    /// `create`, `update`, `patch`, `delete` or `deletecollection`.
    pub verb: String,
    /// The API group; empty for the core group.
    pub api_group: String,
    /// The resource (plural), e.g. `networkpolicies`.
    pub resource: String,
    /// The subresource, e.g. `status`; empty for the object itself.
    pub subresource: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    /// Empty for requests without a name (a `create` names the object in its body only).
    pub name: String,
    /// The HTTP status code of the response.
    pub code: Option<i32>,
    /// When the API server received the request.
    pub received: Timestamp,
    /// The request's URI (shows e.g. `fieldManager` and `dryRun`).
    pub uri: String,
    pub user_agent: String,
}

impl std::fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut resource = self.resource.clone();
        if !self.api_group.is_empty() {
            resource = format!("{resource}.{}", self.api_group);
        }
        if !self.subresource.is_empty() {
            resource = format!("{resource}/{}", self.subresource);
        }
        let object = match (self.namespace.as_str(), self.name.as_str()) {
            ("", name) => name.to_string(),
            (ns, name) => format!("{ns}/{name}"),
        };
        let code = self.code.map_or("-".to_string(), |c| c.to_string());
        write!(
            f,
            "{} {} {} {resource} {object} -> {code}",
            self.received, self.user, self.verb
        )
    }
}

impl ControlPlane {
    /// The audit log file (JSON lines, `audit.k8s.io/v1` Events), for readers that need more
    /// than [`AuditEvent`] holds (e.g. the stage and audit id of long-running requests).
    pub fn audit_log_path(&self) -> std::path::PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// Every write request the API server has logged so far, oldest first. Lines that do not
    /// decode (a partly written last line) are skipped.
    pub fn audit_events(&self) -> Vec<AuditEvent> {
        let path = self.dir.join(LOG_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text),
            // The API server creates the file with the first write it logs.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("reading the audit log {}: {e}", path.display()),
        }
    }
}

/// Decodes a JSON-lines audit log, skipping what does not decode.
pub fn parse(text: &str) -> Vec<AuditEvent> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<Raw>(line).ok())
        .map(AuditEvent::from)
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    verb: String,
    user: RawUser,
    #[serde(default)]
    object_ref: Option<RawObjectRef>,
    #[serde(default)]
    response_status: Option<RawStatus>,
    request_received_timestamp: Timestamp,
    #[serde(default, rename = "requestURI")]
    request_uri: String,
    #[serde(default)]
    user_agent: String,
}

#[derive(Deserialize)]
struct RawUser {
    #[serde(default)]
    username: String,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawObjectRef {
    resource: String,
    subresource: String,
    namespace: String,
    name: String,
    api_group: String,
}

#[derive(Deserialize)]
struct RawStatus {
    #[serde(default)]
    code: Option<i32>,
}

impl From<Raw> for AuditEvent {
    fn from(raw: Raw) -> Self {
        let object = raw.object_ref.unwrap_or_default();
        AuditEvent {
            user: raw.user.username,
            groups: raw.user.groups,
            verb: raw.verb,
            api_group: object.api_group,
            resource: object.resource,
            subresource: object.subresource,
            namespace: object.namespace,
            name: object.name,
            code: raw.response_status.and_then(|s| s.code),
            received: raw.request_received_timestamp,
            uri: raw.request_uri,
            user_agent: raw.user_agent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_logs_every_request_of_the_named_users_first() {
        assert_eq!(policy(&[]), POLICY);
        let p = policy(&["onus-bench".to_string()]);
        assert!(
            p.contains("rules:\n- level: Metadata\n  users: [\"onus-bench\"]\n- level: Metadata\n  verbs: [create"),
            "{p}"
        );
    }

    #[test]
    fn decodes_an_audit_line_and_skips_what_does_not_decode() {
        let log = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a","stage":"ResponseComplete","requestURI":"/apis/onus.dev/v1alpha1/responsibilitypolicies/p/status?fieldManager=onus\u0026force=true","verb":"patch","user":{"username":"onus-operator","groups":["system:masters","system:authenticated"]},"sourceIPs":["127.0.0.1"],"userAgent":"kube-rs/5.0.0","objectRef":{"resource":"responsibilitypolicies","name":"p","apiGroup":"onus.dev","apiVersion":"v1alpha1","subresource":"status"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-11-29T10:00:00.123456Z","stageTimestamp":"2026-11-29T10:00:00.130000Z","annotations":{}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Meta
{"verb":"create","user":{"username":"admin"},"objectRef":{"resource":"pods","namespace":"shop","apiVersion":"v1"},"responseStatus":{"code":201},"requestReceivedTimestamp":"2026-11-29T10:00:01Z"}
"#;
        let events = parse(log);
        assert_eq!(events.len(), 2, "{events:?}");
        let status = &events[0];
        assert_eq!(
            (
                status.user.as_str(),
                status.verb.as_str(),
                status.api_group.as_str(),
                status.resource.as_str(),
                status.subresource.as_str(),
                status.namespace.as_str(),
                status.name.as_str(),
                status.code,
            ),
            (
                "onus-operator",
                "patch",
                "onus.dev",
                "responsibilitypolicies",
                "status",
                "",
                "p",
                Some(200)
            )
        );
        assert_eq!(status.received.to_string(), "2026-11-29T10:00:00.123456Z");
        assert!(status.uri.contains("fieldManager=onus"));
        assert_eq!(
            events[1].to_string(),
            "2026-11-29T10:00:01Z admin create pods shop/ -> 201"
        );
    }
}
