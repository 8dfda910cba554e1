//! Prevention at admission, carried out: applies the ValidatingAdmissionPolicies and bindings
//! [`crate::admission::generate`] asks for (server-side apply under onus's field manager) and
//! removes those no policy asks for any more.
//!
//! onus only ever touches objects with a name it generates ([`admission::all_names`]) AND its
//! label `app.kubernetes.io/managed-by: onus`: a look-alike under another name is never seen,
//! and an object with one of onus's names but without the label is neither taken over nor
//! removed (the refusal is reported like any other). Every write is conditional on what was
//! read ([`write`], [`delete`]): something that appeared or changed in between is never
//! overwritten or deleted; the pass reads again.
//!
//! A refusal (the API server's, or onus's own `TooLarge`: [`admission::too_large`]) writes
//! nothing and removes nothing: the object in place stays, the control is not claimed as
//! prevented, and the refusal is reported with its control and reason (status, a Warning
//! Event, a metric: see `converge`).
//!
//! Applied when what is wanted changes, when a refusal is due for its retry, when someone else
//! deletes, relabels or edits a generated object (every replica watches them, the leader acts:
//! `converge::repair_on_change`, which asks [`Prevention::diverged`]), and every [`REPAIR`]
//! (in case that watch is refused or missed something).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    authentication::v1::SelfSubjectReview,
};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::{info, warn};

use crate::{
    FIELD_MANAGER,
    admission::{self, Generated},
    facts::MANAGED_BY,
};

/// How often the generated objects are applied again though nothing changed.
const REPAIR: Duration = Duration::from_secs(300);
/// The first retry of a refused write; doubled per failed pass up to [`REPAIR`].
const RETRY: Duration = Duration::from_secs(5);

/// The generated kinds, as [`Prevention`] keys what it wrote.
pub(super) const POLICY: &str = "ValidatingAdmissionPolicy";
pub(super) const BINDING: &str = "ValidatingAdmissionPolicyBinding";

/// What a watch saw of one of onus's generated objects.
#[derive(Clone, Copy, Debug)]
pub(super) enum Seen<'a> {
    /// It exists at this [`version`].
    Version(&'a str),
    /// It was deleted, or lost onus's label.
    Gone,
}

/// What was last carried out.
#[derive(Default)]
pub(super) struct Prevention {
    /// What was wanted at the last pass, and when it ran.
    done: Option<(BTreeMap<String, Generated>, Instant)>,
    /// The [`version`] of each object as onus last wrote it (or found it as wanted), by kind
    /// and name: a watch event at any other version is someone else's change.
    written: BTreeMap<(&'static str, String), String>,
    /// Someone else changed a generated object: the next pass runs though nothing else did.
    stale: bool,
    /// Names whose policy and binding the API server holds as generated.
    pub in_place: BTreeSet<String>,
    /// Refused writes by name: the message.
    pub failures: BTreeMap<String, String>,
    /// Objects someone else keeps changing right after onus puts them back, by name: the
    /// status line, until the paced repair's pass writes them again ([`Prevention::contest`]).
    pub contested: BTreeMap<String, String>,
    /// Passes in a row that left a refusal.
    failed_passes: u32,
}

impl Prevention {
    /// When a refused write is due again.
    pub fn next_retry(&self) -> Option<Instant> {
        match &self.done {
            Some((_, at)) if !self.failures.is_empty() => Some(*at + self.backoff()),
            _ => None,
        }
    }

    fn backoff(&self) -> Duration {
        RETRY
            .saturating_mul(2u32.saturating_pow(self.failed_passes.saturating_sub(1)))
            .min(REPAIR)
    }

    /// Brings the generated objects to `wanted`; records what is in place and what was refused.
    /// Returns the refusals that are new (or changed) in this pass, to be announced: name, the
    /// policies that asked for it, and the status line.
    pub async fn converge(
        &mut self,
        client: &Client,
        wanted: BTreeMap<String, Generated>,
    ) -> Vec<(String, Vec<String>, String)> {
        let now = Instant::now();
        let fresh = !self.stale
            && self.done.as_ref().is_some_and(|(done, at)| {
                done == &wanted
                    && now < *at + REPAIR
                    && (self.failures.is_empty() || now < *at + self.backoff())
            });
        if fresh {
            return Vec::new();
        }
        self.stale = false;
        let mut new_failures = Vec::new();
        for name in admission::all_names() {
            let result = match wanted.get(&name) {
                Some(g) => apply(client, &name, g).await,
                None => remove(client, &name).await.map(|what| (what, [None, None])),
            };
            // This pass wrote it (or was refused, and says so): no longer waiting for a repair.
            self.contested.remove(&name);
            match result {
                Ok((what, versions)) => {
                    if let Some(what) = what {
                        info!(name, "Admission: {what}");
                    }
                    self.failures.remove(&name);
                    for (kind, version) in [POLICY, BINDING].into_iter().zip(versions) {
                        match version {
                            Some(v) => self.written.insert((kind, name.clone()), v),
                            None => self.written.remove(&(kind, name.clone())),
                        };
                    }
                }
                Err(refusal) => {
                    let line = failure_line(&name, wanted.get(&name), &refusal);
                    warn!(name, reason = refusal.reason, error = %refusal.message, "Admission policy write refused");
                    if self.failures.get(&name) != Some(&line) {
                        let policies = wanted.get(&name).map(|g| g.policies.clone());
                        new_failures.push((
                            name.clone(),
                            policies.unwrap_or_default(),
                            line.clone(),
                        ));
                    }
                    self.failures.insert(name.clone(), line);
                }
            }
            if wanted.contains_key(&name) && !self.failures.contains_key(&name) {
                self.in_place.insert(name);
            } else if !wanted.contains_key(&name) {
                self.in_place.remove(&name);
            } else {
                // Refused: only what the API server holds counts, and that is unknown (or
                // what is wanted is not written at all: too large).
                self.in_place.remove(&name);
            }
        }
        self.failed_passes = if self.failures.is_empty() {
            0
        } else {
            self.failed_passes.saturating_add(1)
        };
        self.done = Some((wanted, now));
        new_failures
    }

    /// Whether what a watch saw of the generated object `kind`/`name` is someone else's
    /// change to one that is wanted: deleted, relabelled, or at a version onus did not write.
    /// Its own writes come back at the versions it recorded, and are not.
    pub fn diverged(&self, kind: &str, name: &str, seen: Seen<'_>) -> bool {
        let Some((wanted, _)) = &self.done else {
            // No pass yet: the first one writes everything.
            return false;
        };
        if !wanted.contains_key(name) {
            // Not wanted: the pass that removed it (or the next one) takes care of it.
            return false;
        }
        match seen {
            Seen::Gone => true,
            Seen::Version(v) => !at_or_before(v, self.version_written(kind, name)),
        }
    }

    /// The wanted objects of `kind` that a fresh list (`listed`: name → [`version`],
    /// onus's label only) does not show as onus left them: what a watch that was down missed.
    pub fn diverged_from(&self, kind: &str, listed: &BTreeMap<String, String>) -> Vec<String> {
        let Some((wanted, _)) = &self.done else {
            return Vec::new();
        };
        wanted
            .keys()
            .filter(|name| {
                self.version_written(kind, name) != listed.get(*name).map(String::as_str)
            })
            .cloned()
            .collect()
    }

    fn version_written(&self, kind: &str, name: &str) -> Option<&str> {
        self.written
            .iter()
            .find(|((k, n), _)| *k == kind && n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next pass runs whatever else it finds: a generated object was changed by someone
    /// else. Returns the policies that asked for `names`, whose status a pass may change.
    pub fn repair(&mut self, names: &[String]) -> BTreeSet<String> {
        self.stale = true;
        self.asking(names)
    }

    /// Someone else changed the wanted objects `names` while onus's repairs are paced (someone
    /// keeps changing them back right after onus puts them back), and their repair waits
    /// `delay`. Until that repair's
    /// pass they are not claimed as in place, and the status of the policies that asked for
    /// them says why. Returns those policies, to reconcile now.
    pub fn contest(&mut self, names: &[String], delay: Duration) -> BTreeSet<String> {
        let Some((wanted, _)) = &self.done else {
            return BTreeSet::new();
        };
        for name in names {
            let Some(g) = wanted.get(name) else {
                continue;
            };
            self.in_place.remove(name);
            self.contested.insert(
                name.clone(),
                format!(
                    "{} admission ({:?}) changed by someone else while onus paces its repairs \
                     (something keeps changing its objects); onus puts it back in {} s",
                    g.control,
                    g.action,
                    delay.as_secs().max(1)
                ),
            );
        }
        self.asking(names)
    }

    /// The policies that asked for `names` (those still wanted) at the last pass.
    pub fn asking(&self, names: &[String]) -> BTreeSet<String> {
        let Some((wanted, _)) = &self.done else {
            return BTreeSet::new();
        };
        names
            .iter()
            .filter_map(|n| wanted.get(n))
            .flat_map(|g| g.policies.iter().cloned())
            .collect()
    }
}

/// Whether the [`version`] `seen` is the one onus wrote last (`written`) or one before it (the
/// same object, an older generation): an event that comes late, of a state onus's last write
/// already replaced (its writes are over what it read), is nobody's new change.
fn at_or_before(seen: &str, written: Option<&str>) -> bool {
    let generation = |v: &str| {
        let (uid, generation) = v.rsplit_once('/')?;
        Some((uid.to_string(), generation.parse::<i64>().ok()?))
    };
    match (generation(seen), written.and_then(generation)) {
        (Some((seen_uid, seen)), Some((uid, written))) => seen_uid == uid && seen <= written,
        _ => false,
    }
}

/// The status line of a refused write: the control, the action, the reason and the message,
/// e.g. `IAM-01 admission (Deny) failed, reason TooLarge: ValidatingAdmissionPolicy …`.
fn failure_line(name: &str, wanted: Option<&Generated>, refusal: &Refusal) -> String {
    match wanted {
        Some(g) => format!(
            "{} admission ({:?}) failed, reason {}: {}",
            g.control, g.action, refusal.reason, refusal.message
        ),
        None => format!(
            "removing {name} failed, reason {}: {}",
            refusal.reason, refusal.message
        ),
    }
}

fn ours(meta: &kube::api::ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY.0))
        .is_some_and(|v| v == MANAGED_BY.1)
}

fn message(kind: &str, name: &str, error: &kube::Error) -> String {
    let why = match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    };
    format!("{kind} {name}: {why}")
}

/// Why a write failed, as the status and Events name it: the API server's reason (e.g.
/// `Invalid`, `Forbidden`, `AlreadyExists`, `Conflict`), or onus's own `TooLarge`, `NotOurs`.
fn reason_of(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.reason.is_empty() => status.reason.clone(),
        kube::Error::Api(status) => format!("HTTP {}", status.code),
        _ => "Unreachable".into(),
    }
}

/// A refused write: the reason and the message.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    pub reason: String,
    pub message: String,
}

impl Refusal {
    fn api(kind: &str, name: &str, error: &kube::Error) -> Self {
        Refusal {
            reason: reason_of(error),
            message: message(kind, name, error),
        }
    }

    /// A write refused because what onus read changed before its write landed.
    fn is_conflict(&self) -> bool {
        self.reason == "Conflict"
    }
}

/// The object of that name as read before a write: absent, or onus's (one onus did not create
/// is refused: never taken over).
pub async fn observe<K>(api: &Api<K>, kind: &str, name: &str) -> Result<Option<K>, Refusal>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(Some(obj)) if !ours(obj.meta()) => Err(Refusal {
            reason: "NotOurs".into(),
            message: format!(
                "{kind} {name}: exists without the label {}={}; onus does not take it over \
                 (rename or remove it to let onus check this control at admission)",
                MANAGED_BY.0, MANAGED_BY.1
            ),
        }),
        Ok(obj) => Ok(obj),
        Err(e) => Err(Refusal::api(kind, name, &e)),
    }
}

/// The resourceVersion a write of an object read as absent carries: the API server creates
/// the object when there is none (an apply may create) and refuses the write as a conflict
/// when there is one (no object written since the store's first revision has it). So a
/// look-alike created between onus's read and its write is never overwritten, and the create
/// stays an apply to one of onus's names (the ClusterRole allows `create` for those names
/// only, which a POST, naming no object, could not use).
const ABSENT: &str = "1";

/// Writes `desired` only over what was read (`before`), never blindly, with the
/// resourceVersion read as a precondition: refused as a `Conflict` when the object changed
/// meanwhile (a look-alike created, or onus's object taken over, relabelled or recreated by
/// someone else is never overwritten; [`apply`] reads again and retries).
///
/// Absent when read: a server-side apply under onus's field manager with [`ABSENT`] as the
/// version, which can only create. onus's when read: its whole `spec` replaced (a JSON
/// Patch). A server-side apply would keep what other field managers added next to onus's
/// fields (an element added to a set or a keyed list, or a field onus leaves unset: say a
/// match condition that never matches, or `Audit` next to a binding's `Deny`), and the
/// object would keep that bypass while the status called the control prevented.
pub async fn write<K>(
    api: &Api<K>,
    kind: &str,
    name: &str,
    desired: &Value,
    before: Option<&K>,
) -> Result<K, Refusal>
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let written = match before.and_then(|b| b.meta().resource_version.clone()) {
        None => {
            let mut desired = desired.clone();
            desired["metadata"]["resourceVersion"] = ABSENT.into();
            let params = PatchParams::apply(FIELD_MANAGER).force();
            api.patch(name, &params, &Patch::Apply(&desired)).await
        }
        Some(read) => {
            let ops = serde_json::json!([
                {"op": "replace", "path": "/metadata/resourceVersion", "value": read},
                {"op": "replace", "path": "/spec", "value": desired["spec"]},
            ]);
            let patch: json_patch::Patch =
                serde_json::from_value(ops).expect("a JSON Patch of two replace operations");
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            };
            api.patch(name, &params, &Patch::Json::<()>(patch)).await
        }
    };
    written.map_err(|e| Refusal::api(kind, name, &e))
}

/// How often a write that met a concurrent change is read and tried again within one pass.
const ATTEMPTS: usize = 3;

/// Reads, then writes over what was read (see [`write`]); again from the read when someone
/// else's change came in between.
async fn converge_one<K>(
    api: &Api<K>,
    kind: &str,
    name: &str,
    desired: &Value,
) -> Result<(Option<K>, K), Refusal>
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = observe(api, kind, name).await?;
        match write(api, kind, name, desired, before.as_ref()).await {
            Ok(after) => return Ok((before, after)),
            Err(refusal) if refusal.is_conflict() && attempt < ATTEMPTS => continue,
            Err(refusal) => return Err(refusal),
        }
    }
}

/// Applies one generated policy and its binding; the policy first, so a binding never points
/// at a policy onus could not write. Nothing is written when the policy is too large
/// ([`admission::too_large`]): whatever is in place stays.
/// Returns what was done (nothing when both were in place as wanted) and the [`version`]s of
/// the policy and the binding as they now are.
pub async fn apply(
    client: &Client,
    name: &str,
    g: &Generated,
) -> Result<(Option<String>, [Option<String>; 2]), Refusal> {
    if let Some(why) = admission::too_large(g) {
        return Err(Refusal {
            reason: "TooLarge".into(),
            message: format!(
                "ValidatingAdmissionPolicy {name}: not written, {why}; the one in place (if \
                 any) stays"
            ),
        });
    }
    let policies = Api::<ValidatingAdmissionPolicy>::all(client.clone());
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone());
    let (before, after) = converge_one(&policies, POLICY, name, &g.policy).await?;
    let (binding_before, binding_after) =
        converge_one(&bindings, BINDING, name, &g.binding).await?;
    let changed = before.and_then(|b| b.metadata.resource_version)
        != after.metadata.resource_version
        || binding_before.and_then(|b| b.metadata.resource_version)
            != binding_after.metadata.resource_version;
    let what = changed.then(|| {
        format!(
            "applied ValidatingAdmissionPolicy {name} ({:?}) for {}",
            g.action,
            g.policies.join(", ")
        )
    });
    Ok((
        what,
        [version(&after.metadata), version(&binding_after.metadata)],
    ))
}

/// What tells one state of a generated object's spec from another: its uid and generation. Not
/// its resourceVersion: the API server's own type checking writes each policy's status after
/// every change of its spec (kube-controller-manager's
/// validatingadmissionpolicy-status-controller), which is no one's edit and would otherwise be
/// taken for one (a needless pass, and a false warning of someone else's change, at each
/// write). An edit of the spec changes the generation; deleting, relabelling or recreating the
/// object is seen as such (or changes the uid).
pub(super) fn version(meta: &kube::api::ObjectMeta) -> Option<String> {
    Some(format!(
        "{}/{}",
        meta.uid.as_deref()?,
        meta.generation.unwrap_or_default()
    ))
}

async fn remove(client: &Client, name: &str) -> Result<Option<String>, Refusal> {
    let mut removed = Vec::new();
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone());
    let kind = "ValidatingAdmissionPolicyBinding";
    if let Some(b) = bindings
        .get_opt(name)
        .await
        .map_err(|e| Refusal::api(kind, name, &e))?
        .filter(|b| ours(&b.metadata))
    {
        delete(&bindings, name, &b.metadata)
            .await
            .map_err(|e| Refusal::api(kind, name, &e))?;
        removed.push("binding");
    }
    let policies = Api::<ValidatingAdmissionPolicy>::all(client.clone());
    let kind = "ValidatingAdmissionPolicy";
    if let Some(p) = policies
        .get_opt(name)
        .await
        .map_err(|e| Refusal::api(kind, name, &e))?
        .filter(|p| ours(&p.metadata))
    {
        delete(&policies, name, &p.metadata)
            .await
            .map_err(|e| Refusal::api(kind, name, &e))?;
        removed.push("policy");
    }
    Ok((!removed.is_empty()).then(|| {
        format!(
            "removed ValidatingAdmissionPolicy {name} ({})",
            removed.join(", ")
        )
    }))
}

/// Deletes exactly the object that was read, as it was read (its uid and resourceVersion):
/// one recreated, relabelled or otherwise changed meanwhile by someone else is left alone
/// (the refusal is reported and the next pass looks again).
pub async fn delete<K>(
    api: &Api<K>,
    name: &str,
    read: &kube::api::ObjectMeta,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: read.uid.clone(),
            resource_version: read.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// onus's own user name, as the API server authenticates it (exempt from what it generates).
pub(super) async fn own_user(client: &Client) -> Option<String> {
    let review: SelfSubjectReview = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
    }))
    .ok()?;
    match Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
    {
        Ok(r) => r.status?.user_info?.username,
        Err(error) => {
            warn!(%error, "Could not learn onus's own user name (SelfSubjectReview); it is not exempt from the admission policies onus generates");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_event_of_a_state_onus_wrote_over_is_no_change() {
        assert!(at_or_before("u/3", Some("u/3")));
        assert!(at_or_before("u/2", Some("u/3")));
        assert!(!at_or_before("u/4", Some("u/3")));
        // Recreated (another uid), or never written by onus: a change.
        assert!(!at_or_before("v/1", Some("u/3")));
        assert!(!at_or_before("u/1", None));
    }
}
