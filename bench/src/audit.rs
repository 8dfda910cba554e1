//! onus's API requests by verb, from the API server's audit log (the control plane logs every
//! request of the operator's own user, reads and watches too).

use std::{
    collections::{BTreeMap, HashSet},
    io::{Read as _, Seek as _, SeekFrom},
    path::Path,
};

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    #[serde(rename = "auditID")]
    audit_id: String,
    stage: String,
    verb: String,
    user: User,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
}

#[derive(Deserialize)]
struct User {
    #[serde(default)]
    username: String,
}

#[derive(Deserialize, Default)]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
}

/// The current end of the audit log (0 while it does not exist).
pub fn offset(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Requests of `user` logged between two offsets: verb → count (requests without an object,
/// such as GET /version, as `get (non-resource)`); `verb resource` detail for the writes. A
/// watch counts once, when it starts (`ResponseStarted`); every other request once, when
/// complete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    pub by_verb: BTreeMap<String, u64>,
    pub writes: BTreeMap<String, u64>,
}

const WRITES: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

impl Requests {
    pub fn read(path: &Path, from: u64, to: u64, user: &str) -> anyhow::Result<Requests> {
        let mut file = std::fs::File::open(path)?;
        file.seek(SeekFrom::Start(from))?;
        let mut bytes = Vec::new();
        file.take(to.saturating_sub(from)).read_to_end(&mut bytes)?;
        Ok(Self::parse(&String::from_utf8_lossy(&bytes), user))
    }

    fn parse(text: &str, user: &str) -> Requests {
        let mut seen = HashSet::new();
        let mut r = Requests::default();
        for line in text.lines() {
            let Ok(e) = serde_json::from_str::<Line>(line) else {
                continue;
            };
            if e.user.username != user {
                continue;
            }
            let counts = match (e.verb.as_str(), e.stage.as_str()) {
                ("watch", "ResponseStarted") => true,
                ("watch", _) => false,
                (_, "ResponseComplete" | "Panic") => true,
                _ => false,
            };
            if !counts || !seen.insert(e.audit_id) {
                continue;
            }
            // A request without an object (e.g. GET /version) is no LIST/GET of objects.
            let verb = match &e.object_ref {
                Some(_) => e.verb.clone(),
                None => format!("{} (non-resource)", e.verb),
            };
            *r.by_verb.entry(verb).or_default() += 1;
            if WRITES.contains(&e.verb.as_str()) {
                let o = e.object_ref.unwrap_or_default();
                let what = if o.subresource.is_empty() {
                    format!("{} {}", e.verb, o.resource)
                } else {
                    format!("{} {}/{}", e.verb, o.resource, o.subresource)
                };
                *r.writes.entry(what).or_default() += 1;
            }
        }
        r
    }

    pub fn count(&self, verbs: &[&str]) -> u64 {
        verbs
            .iter()
            .map(|v| self.by_verb.get(*v).copied().unwrap_or(0))
            .sum()
    }

    pub fn writes_total(&self) -> u64 {
        self.count(WRITES)
    }

    /// e.g. `list 16, watch 16, get 1, create 12`.
    pub fn summary(&self) -> String {
        if self.by_verb.is_empty() {
            return "none".into();
        }
        self.by_verb
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_counts_once_and_other_users_not_at_all() {
        let log = r#"{"auditID":"1","stage":"ResponseStarted","verb":"watch","user":{"username":"onus"},"objectRef":{"resource":"pods"}}
{"auditID":"2","stage":"ResponseComplete","verb":"list","user":{"username":"onus"},"objectRef":{"resource":"pods"}}
{"auditID":"3","stage":"ResponseComplete","verb":"patch","user":{"username":"onus"},"objectRef":{"resource":"responsibilitypolicies","subresource":"status"}}
{"auditID":"1","stage":"ResponseComplete","verb":"watch","user":{"username":"onus"},"objectRef":{"resource":"pods"}}
{"auditID":"4","stage":"ResponseComplete","verb":"list","user":{"username":"admin"}}
{"auditID":"5","stage":"ResponseComplete","verb":"get","user":{"username":"onus"}}
"#;
        let r = Requests::parse(log, "onus");
        assert_eq!(
            r.summary(),
            "get (non-resource) 1, list 1, patch 1, watch 1"
        );
        assert_eq!(r.writes_total(), 1);
        assert_eq!(r.count(&["list", "get"]), 1);
        assert_eq!(
            r.writes.keys().collect::<Vec<_>>(),
            ["patch responsibilitypolicies/status"]
        );
    }
}
