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
    #[serde(rename = "auditID", default)]
    audit_id: String,
    stage: String,
    verb: String,
    user: User,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    request_received_timestamp: String,
    #[serde(default)]
    stage_timestamp: String,
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
    #[serde(default)]
    name: String,
}

/// The current end of the audit log (0 while it does not exist).
pub fn offset(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The log's text between two offsets.
fn read_between(path: &Path, from: u64, to: u64) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.take(to.saturating_sub(from)).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
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
        Ok(Self::parse(&read_between(path, from, to)?, user))
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

/// Where a probe's time goes, from the audit log's timestamps (the API server's clock, the same
/// host's as the bench's): the Pod's create request (received → stored), then the first status
/// write of the policy by onus received after it (received → stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeTimes {
    pub create_received: i64,
    pub create_done: i64,
    pub status_received: i64,
    pub status_done: i64,
}

/// Microseconds since the Unix epoch of an audit timestamp (RFC 3339).
fn micros(timestamp: &str) -> Option<i64> {
    timestamp
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_microsecond())
}

/// For each probe (its Pod's name, and when the bench saw it in the policy's status, in
/// microseconds since the Unix epoch), its [`ProbeTimes`] from the log between two offsets: the
/// completed `create pods` of that name, and the status write of `policy` by `onus_user` that
/// the bench saw: the last one received after the create was and stored by the time the bench
/// saw it (onus may receive the Pod, and write, before the create's own answer is complete).
/// Probes without both are left out.
pub fn probe_times(
    path: &Path,
    from: u64,
    to: u64,
    probes: &[(String, i64)],
    policy: &str,
    onus_user: &str,
) -> anyhow::Result<BTreeMap<String, ProbeTimes>> {
    Ok(parse_probe_times(
        &read_between(path, from, to)?,
        probes,
        policy,
        onus_user,
    ))
}

fn parse_probe_times(
    text: &str,
    probes: &[(String, i64)],
    policy: &str,
    onus_user: &str,
) -> BTreeMap<String, ProbeTimes> {
    let seen: BTreeMap<&str, i64> = probes.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    let mut creates: Vec<(String, i64, i64)> = Vec::new();
    let mut writes: Vec<(i64, i64)> = Vec::new();
    for line in text.lines() {
        let Ok(e) = serde_json::from_str::<Line>(line) else {
            continue;
        };
        if e.stage != "ResponseComplete" {
            continue;
        }
        let o = e.object_ref.unwrap_or_default();
        let (Some(received), Some(done)) = (
            micros(&e.request_received_timestamp),
            micros(&e.stage_timestamp),
        ) else {
            continue;
        };
        if e.verb == "create" && o.resource == "pods" && seen.contains_key(o.name.as_str()) {
            creates.push((o.name, received, done));
        } else if e.user.username == onus_user
            && matches!(e.verb.as_str(), "patch" | "update")
            && o.resource == "responsibilitypolicies"
            && o.subresource == "status"
            && o.name == policy
        {
            writes.push((received, done));
        }
    }
    writes.sort_unstable();
    creates
        .into_iter()
        .filter_map(|(name, create_received, create_done)| {
            let by = *seen.get(name.as_str())?;
            let &(status_received, status_done) = writes
                .iter()
                .rev()
                .find(|(received, done)| *received >= create_received && *done <= by)?;
            Some((
                name,
                ProbeTimes {
                    create_received,
                    create_done,
                    status_received,
                    status_done,
                },
            ))
        })
        .collect()
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

    #[test]
    fn a_probe_is_timed_by_its_create_and_the_next_status_write_of_the_policy() {
        let log = r#"{"stage":"ResponseComplete","verb":"patch","user":{"username":"onus"},"objectRef":{"resource":"responsibilitypolicies","subresource":"status","name":"p0"},"requestReceivedTimestamp":"2026-11-29T10:00:00.000000Z","stageTimestamp":"2026-11-29T10:00:00.005000Z"}
{"stage":"ResponseComplete","verb":"create","user":{"username":"bench"},"objectRef":{"resource":"pods","name":"probe-1"},"requestReceivedTimestamp":"2026-11-29T10:00:01.000000Z","stageTimestamp":"2026-11-29T10:00:01.008000Z"}
{"stage":"ResponseComplete","verb":"patch","user":{"username":"onus"},"objectRef":{"resource":"responsibilitypolicies","subresource":"status","name":"p1"},"requestReceivedTimestamp":"2026-11-29T10:00:01.010000Z","stageTimestamp":"2026-11-29T10:00:01.011000Z"}
{"stage":"ResponseComplete","verb":"patch","user":{"username":"onus"},"objectRef":{"resource":"responsibilitypolicies","subresource":"status","name":"p0"},"requestReceivedTimestamp":"2026-11-29T10:00:01.030000Z","stageTimestamp":"2026-11-29T10:00:01.042000Z"}
{"stage":"ResponseComplete","verb":"create","user":{"username":"bench"},"objectRef":{"resource":"pods","name":"probe-2"},"requestReceivedTimestamp":"2026-11-29T10:00:02.000000Z","stageTimestamp":"2026-11-29T10:00:02.001000Z"}
{"stage":"ResponseComplete","verb":"create","user":{"username":"bench"},"objectRef":{"resource":"pods","name":"other"},"requestReceivedTimestamp":"2026-11-29T10:00:03.000000Z","stageTimestamp":"2026-11-29T10:00:03.001000Z"}
"#;
        let base = 1_795_946_400_000_000; // 2026-11-29T10:00:00Z
        let probes = [
            ("probe-1".to_string(), base + 1_050_000),
            ("probe-2".to_string(), base + 2_050_000),
        ];
        let t = parse_probe_times(log, &probes, "p0", "onus");
        assert_eq!(
            t.get("probe-1"),
            Some(&ProbeTimes {
                create_received: base + 1_000_000,
                create_done: base + 1_008_000,
                status_received: base + 1_030_000,
                status_done: base + 1_042_000,
            })
        );
        // No status write of the policy after it: left out.
        assert!(!t.contains_key("probe-2"));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_status_write_received_before_the_create_is_answered_is_the_probes_own() {
        // onus has the Pod from its watch, and writes, while the create's answer is still on
        // its way: that write, not the next probe's, is the one the bench saw.
        let log = r#"{"stage":"ResponseComplete","verb":"create","user":{"username":"bench"},"objectRef":{"resource":"pods","name":"probe-1"},"requestReceivedTimestamp":"2026-11-29T10:00:01.000000Z","stageTimestamp":"2026-11-29T10:00:01.080000Z"}
{"stage":"ResponseComplete","verb":"patch","user":{"username":"onus"},"objectRef":{"resource":"responsibilitypolicies","subresource":"status","name":"p0"},"requestReceivedTimestamp":"2026-11-29T10:00:01.079000Z","stageTimestamp":"2026-11-29T10:00:01.090000Z"}
{"stage":"ResponseComplete","verb":"create","user":{"username":"bench"},"objectRef":{"resource":"pods","name":"probe-2"},"requestReceivedTimestamp":"2026-11-29T10:00:01.200000Z","stageTimestamp":"2026-11-29T10:00:01.280000Z"}
{"stage":"ResponseComplete","verb":"patch","user":{"username":"onus"},"objectRef":{"resource":"responsibilitypolicies","subresource":"status","name":"p0"},"requestReceivedTimestamp":"2026-11-29T10:00:01.285000Z","stageTimestamp":"2026-11-29T10:00:01.290000Z"}
"#;
        let base = 1_795_946_400_000_000;
        let probes = [
            ("probe-1".to_string(), base + 1_095_000),
            ("probe-2".to_string(), base + 1_295_000),
        ];
        let t = parse_probe_times(log, &probes, "p0", "onus");
        assert_eq!(t["probe-1"].status_received, base + 1_079_000);
        assert_eq!(t["probe-2"].status_received, base + 1_285_000);
    }
}
