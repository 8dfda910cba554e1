//! PolicyReports (optional, off by default): each policy's results in the report API the
//! ecosystem's tools read (Policy Reporter's UI and alerts, among others).
//!
//! Per policy, one report in each namespace it governs (and in any other namespace holding one
//! of its violations) and one cluster-scoped report for cluster-scoped objects, named
//! [`report_name`] and labelled [`MANAGED_BY`] and [`POLICY_UID_LABEL`]. A namespace's report
//! has one `fail` result per failing object and control, one `pass` result per checked control
//! with no failure there, and one `skip` result per control that is not checked (provider-owned,
//! disabled, unobservable, or all of its violations excepted); the cluster report does the same
//! for the RBAC controls (cluster-scoped bindings) and holds whatever fails without an object.
//! Results are capped ([`ReportSettings::max_results`], failures first); the summary counts are
//! exact either way.
//!
//! Written only when their content changed (what was written is remembered per term of
//! leadership; a new term lists once, and every [`ReportSettings::relist`] a policy's reports are
//! listed again, so that one deleted or edited by someone else is put back and one of onus's
//! that its memory misses, in a namespace the policy no longer reports on, goes; the policy is
//! reconciled again by then), only by the leader (they are written from the
//! reconcile, which runs under [`crate::leader::Leadership::run`]), and only objects onus
//! created: one of onus's names without its labels, or of another policy, is never taken over,
//! updated or deleted (the refusal shows in the policy's status). A report goes when its
//! namespace leaves the policy, and all of a policy's go with it (the finalizer; their owner
//! reference lets the garbage collector finish the job if onus was not running).
//!
//! Only when the API is served (discovery, looked at again every [`REDISCOVER`] while it is
//! not); the policy's `PolicyReports` condition says when it is not.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{
        ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions,
    },
};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::{
    FIELD_MANAGER,
    catalog::Family,
    crd::{ControlResult, ResponsibilityPolicy, ResponsibilityPolicyStatus},
    evaluate::{Evaluation, Violation},
    facts::MANAGED_BY,
};

/// The report API onus writes (`--report-api`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportApi {
    /// `openreports.io/v1alpha1` Report and ClusterReport (the current API).
    OpenReports,
    /// `wgpolicyk8s.io/v1alpha2` PolicyReport and ClusterPolicyReport (the older one).
    WgPolicyK8s,
}

impl ReportApi {
    /// The value of `--report-api`.
    pub fn parse(value: &str) -> Option<ReportApi> {
        match value {
            "openreports" => Some(ReportApi::OpenReports),
            "wgpolicyk8s" => Some(ReportApi::WgPolicyK8s),
            _ => None,
        }
    }

    fn group(self) -> &'static str {
        match self {
            ReportApi::OpenReports => "openreports.io",
            ReportApi::WgPolicyK8s => "wgpolicyk8s.io",
        }
    }

    fn version(self) -> &'static str {
        match self {
            ReportApi::OpenReports => "v1alpha1",
            ReportApi::WgPolicyK8s => "v1alpha2",
        }
    }

    /// `group/version`.
    pub fn api_version(self) -> String {
        format!("{}/{}", self.group(), self.version())
    }

    /// The namespaced kind and its plural, or the cluster-scoped ones.
    pub fn kind(self, cluster: bool) -> (&'static str, &'static str) {
        match (self, cluster) {
            (ReportApi::OpenReports, false) => ("Report", "reports"),
            (ReportApi::OpenReports, true) => ("ClusterReport", "clusterreports"),
            (ReportApi::WgPolicyK8s, false) => ("PolicyReport", "policyreports"),
            (ReportApi::WgPolicyK8s, true) => ("ClusterPolicyReport", "clusterpolicyreports"),
        }
    }

    /// The resource, for dynamic API calls.
    pub fn resource(self, cluster: bool) -> ApiResource {
        let (kind, plural) = self.kind(cluster);
        ApiResource {
            group: self.group().into(),
            version: self.version().into(),
            api_version: self.api_version(),
            kind: kind.into(),
            plural: plural.into(),
        }
    }
}

/// The default of [`ReportSettings::max_results`] (`--report-max-results`).
pub const DEFAULT_MAX_RESULTS: usize = 1000;

/// PolicyReports, when on (`--report-api`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportSettings {
    pub api: ReportApi,
    /// At most this many results per report (failures first); the summary stays exact.
    pub max_results: usize,
    /// How long what onus wrote is trusted before a policy's reports are listed again
    /// (`--report-relist-interval`; default [`RELIST`]).
    pub relist: Duration,
}

impl Default for ReportSettings {
    fn default() -> Self {
        ReportSettings {
            api: ReportApi::OpenReports,
            max_results: DEFAULT_MAX_RESULTS,
            relist: RELIST,
        }
    }
}

/// Label carrying the uid of the policy a report belongs to.
pub const POLICY_UID_LABEL: &str = "onus.dev/policy-uid";

/// How long a missing report API is believed missing before discovery looks again.
pub const REDISCOVER: Duration = Duration::from_secs(15);

/// When a refused report write is retried.
pub const RETRY: Duration = Duration::from_secs(10);

/// How long one reconcile spends publishing a policy's reports before its status is written
/// anyway (no write is started after it): the status (and so every violation) must not wait
/// for thousands of report writes, a slow API server or a slow webhook on the report API. The
/// rest is written by the next reconciles, soon after ([`CONTINUE`]).
pub const PUBLISH_BUDGET: Duration = Duration::from_secs(10);

/// When publishing that ran out of [`PUBLISH_BUDGET`] continues.
pub const CONTINUE: Duration = Duration::from_secs(1);

/// The default of [`ReportSettings::relist`]: how long what onus wrote is trusted without
/// listing the reports again; a report someone else deleted or edited is put back then (one
/// list per policy, no write unless it differs).
pub const RELIST: Duration = Duration::from_secs(300);

/// The bounds of `--report-relist-interval`: each relist is two list requests per policy.
pub const RELIST_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(10)..=Duration::from_secs(86_400);

/// The name of each of a policy's reports: `onus-<policy>` (shortened with the uid when that
/// would be longer than an object name may be).
pub fn report_name(policy: &str, uid: &str) -> String {
    let name = format!("onus-{policy}");
    if name.len() <= 253 {
        return name;
    }
    let short: String = uid.chars().filter(|c| *c != '-').take(10).collect();
    let keep = 253 - short.len() - 1;
    let mut cut = name[..keep].to_string();
    while !cut.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        cut.pop();
    }
    format!("{cut}-{short}")
}

/// Where a report lives: a namespace, or `None` for the cluster-scoped report.
pub type Scope = Option<String>;

/// The API group/version of an offender's kind.
fn api_version_of(kind: &str) -> &'static str {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => "apps/v1",
        "Job" | "CronJob" => "batch/v1",
        "NetworkPolicy" => "networking.k8s.io/v1",
        "RoleBinding" | "ClusterRoleBinding" | "Role" | "ClusterRole" => {
            "rbac.authorization.k8s.io/v1"
        }
        _ => "v1",
    }
}

/// The report holding a violation: its namespace's, or the cluster's.
fn scope_of(v: &Violation) -> Scope {
    v.namespace.clone()
}

fn skip_reason(result: ControlResult) -> &'static str {
    match result {
        ControlResult::ProviderOwned => "owned by the provider under this service model",
        ControlResult::Disabled => "disabled by the policy",
        ControlResult::NotObservable => "not observable through the Kubernetes API",
        ControlResult::Excepted => "every violation is excepted by the policy",
        ControlResult::Pass | ControlResult::Fail => "checked",
    }
}

/// What onus decides in each report (`results` and `summary`), by scope: compared with what
/// was written to know whether to write.
pub fn desired(
    policy: &str,
    eval: &Evaluation,
    governed: &BTreeSet<String>,
    max_results: usize,
) -> BTreeMap<Scope, Value> {
    // Per scope, per control (catalog index), per object: the violations' descriptions.
    type Failing<'a> = BTreeMap<usize, BTreeMap<(&'a str, &'a str), Vec<&'a str>>>;
    let mut failing: BTreeMap<Scope, Failing<'_>> = BTreeMap::new();
    for (i, outcome) in eval.outcomes.iter().enumerate() {
        for v in &outcome.violations {
            failing
                .entry(scope_of(v))
                .or_default()
                .entry(i)
                .or_default()
                .entry((v.kind.as_str(), v.name.as_str()))
                .or_default()
                .push(v.example.as_str());
        }
    }
    let mut scopes: BTreeSet<Scope> = governed.iter().cloned().map(Some).collect();
    scopes.extend(failing.keys().cloned());
    scopes.insert(None);
    let none = Failing::new();
    scopes
        .into_iter()
        .map(|scope| {
            let failing = failing.get(&scope).unwrap_or(&none);
            let content = report(policy, eval, &scope, failing, max_results);
            (scope, content)
        })
        .collect()
}

fn report(
    policy: &str,
    eval: &Evaluation,
    scope: &Scope,
    failing: &BTreeMap<usize, BTreeMap<(&str, &str), Vec<&str>>>,
    max_results: usize,
) -> Value {
    let (mut fails, mut others) = (Vec::new(), Vec::new());
    let (mut pass, mut skip) = (0u64, 0u64);
    let mut fail = 0u64;
    for (i, outcome) in eval.outcomes.iter().enumerate() {
        let control = outcome.control;
        let mut properties = serde_json::Map::new();
        properties.insert("owner".into(), json!(outcome.owner));
        if !control.frameworks.is_empty() {
            properties.insert("frameworks".into(), json!(control.frameworks.join(", ")));
        }
        let result = |result: &str, message: String| {
            json!({
                "source": "onus",
                "policy": policy,
                "rule": control.id,
                "category": control.family.field(),
                "severity": control.severity().as_str(),
                "result": result,
                "scored": true,
                "message": message,
                "properties": properties,
            })
        };
        // Only a failing control fails: the violations of a control that is disabled, the
        // provider's or unobservable are not the policy's to report.
        let objects = failing
            .get(&i)
            .filter(|_| outcome.result == ControlResult::Fail);
        if let Some(objects) = objects {
            for ((kind, name), examples) in objects {
                fail += 1;
                if fails.len() >= max_results {
                    continue;
                }
                let mut resource = json!({
                    "apiVersion": api_version_of(kind),
                    "kind": kind,
                    "name": name,
                });
                if let Some(ns) = scope.as_deref().filter(|_| {
                    *kind != "Namespace" && *kind != "ClusterRoleBinding" && *kind != "ClusterRole"
                }) {
                    resource["namespace"] = json!(ns);
                }
                let mut r = result(
                    "fail",
                    format!("{}: {}", control.title, examples.join("; ")),
                );
                r["resources"] = json!([resource]);
                fails.push(r);
            }
            continue;
        }
        let failing_without_object =
            outcome.result == ControlResult::Fail && outcome.violations.is_empty();
        let applies = scope.is_some() || control.family == Family::Rbac || failing_without_object;
        if !applies {
            continue;
        }
        match outcome.result {
            ControlResult::Fail if failing_without_object => {
                fail += 1;
                fails.push(result("fail", control.title.to_string()));
            }
            ControlResult::Pass | ControlResult::Fail => {
                pass += 1;
                others.push(result("pass", control.title.to_string()));
            }
            other => {
                skip += 1;
                others.push(result(
                    "skip",
                    format!("{}: {}", control.title, skip_reason(other)),
                ));
            }
        }
    }
    fails.extend(others);
    fails.truncate(max_results);
    json!({
        "results": fails,
        "summary": {"pass": pass, "fail": fail, "warn": 0, "error": 0, "skip": skip},
    })
}

/// What publishing a policy's reports came to (its `PolicyReports` condition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Published {
    /// Every report is as desired: how many namespaced reports there are.
    Done(usize),
    /// The report API is not served.
    Missing(String),
    /// A write was refused: the messages.
    Failed(String),
    /// [`PUBLISH_BUDGET`] ran out before every report was written: the next sync continues.
    Pending,
}

/// One report onus wrote (or found it had written).
#[derive(Clone, Debug)]
struct Written {
    uid: String,
    resource_version: String,
    content: Value,
}

#[derive(Default)]
struct State {
    /// Whether the API is served (an error message when not), and when that was learned.
    served: Option<(Result<(), String>, Instant)>,
    /// Per policy uid, when its reports were last listed and what they hold, by scope. A
    /// policy absent, or listed more than [`ReportSettings::relist`] ago, is listed on its next
    /// sync.
    written: HashMap<String, (Instant, BTreeMap<Scope, Written>)>,
}

/// The reports of every policy, kept by the leader.
pub struct Reports {
    pub settings: ReportSettings,
    /// [`PUBLISH_BUDGET`] (shorter in tests).
    budget: Duration,
    state: tokio::sync::Mutex<State>,
}

fn ours(obj: &DynamicObject, uid: &str, name: &str) -> bool {
    let labels = obj.labels();
    obj.name_any() == name
        && labels.get(MANAGED_BY.0).is_some_and(|v| v == MANAGED_BY.1)
        && labels.get(POLICY_UID_LABEL).is_some_and(|v| v == uid)
}

fn content_of(obj: &DynamicObject) -> Value {
    json!({
        "results": obj.data.get("results").cloned().unwrap_or_else(|| json!([])),
        "summary": obj.data.get("summary").cloned().unwrap_or(Value::Null),
    })
}

fn message(what: &str, error: &kube::Error) -> String {
    let why = match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    };
    format!("{what}: {why}")
}

impl Reports {
    pub fn new(settings: ReportSettings) -> Reports {
        Reports {
            settings,
            budget: PUBLISH_BUDGET,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// Forgets what was written (a lost Lease: the next term lists again).
    pub async fn forget(&self) {
        let mut state = self.state.lock().await;
        state.written.clear();
        state.served = None;
    }

    fn api(&self, client: &Client, scope: &Scope) -> Api<DynamicObject> {
        match scope {
            Some(ns) => {
                Api::namespaced_with(client.clone(), ns, &self.settings.api.resource(false))
            }
            None => Api::all_with(client.clone(), &self.settings.api.resource(true)),
        }
    }

    fn describe(&self, name: &str, scope: &Scope) -> String {
        let api = self.settings.api;
        match scope {
            Some(ns) => format!("{} {ns}/{name}", api.kind(false).0),
            None => format!("{} {name}", api.kind(true).0),
        }
    }

    /// Whether the API is served, by discovery (again after [`REDISCOVER`] while it is not).
    async fn served(&self, state: &mut State, client: &Client) -> Result<(), String> {
        match &state.served {
            Some((Ok(()), _)) => return Ok(()),
            Some((Err(m), at)) if at.elapsed() < REDISCOVER => return Err(m.clone()),
            _ => {}
        }
        let api = self.settings.api;
        let (kind, plural) = api.kind(false);
        let (cluster_kind, cluster_plural) = api.kind(true);
        let missing = format!(
            "the API server does not serve {} {kind} and {cluster_kind}: install their CRDs \
             to publish this policy's results as policy reports",
            api.api_version()
        );
        let found = match client.list_api_group_resources(&api.api_version()).await {
            Ok(list) => {
                let names: BTreeSet<&str> =
                    list.resources.iter().map(|r| r.name.as_str()).collect();
                if names.contains(plural) && names.contains(cluster_plural) {
                    Ok(())
                } else {
                    Err(missing)
                }
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Err(missing),
            Err(error) => Err(message(
                &format!("discovery of {}", api.api_version()),
                &error,
            )),
        };
        match &found {
            Ok(()) => info!(api = %api.api_version(), "Policy reports: the API is served"),
            Err(m) => warn!(api = %api.api_version(), "Policy reports: {m}"),
        }
        state.served = Some((found.clone(), Instant::now()));
        found
    }

    /// The reports of the policy `uid` that onus wrote (its labels and name), by scope.
    async fn list(
        &self,
        client: &Client,
        uid: &str,
        name: &str,
    ) -> Result<BTreeMap<Scope, Written>, String> {
        let params = ListParams::default().labels(&format!(
            "{}={},{POLICY_UID_LABEL}={uid}",
            MANAGED_BY.0, MANAGED_BY.1
        ));
        let api = self.settings.api;
        let mut out = BTreeMap::new();
        for cluster in [false, true] {
            let listed = Api::<DynamicObject>::all_with(client.clone(), &api.resource(cluster))
                .list(&params)
                .await
                .map_err(|e| message(&format!("listing {}", api.kind(cluster).1), &e))?;
            for obj in listed.items.into_iter().filter(|o| ours(o, uid, name)) {
                let scope = if cluster { None } else { obj.namespace() };
                out.insert(
                    scope,
                    Written {
                        uid: obj.uid().unwrap_or_default(),
                        resource_version: obj.resource_version().unwrap_or_default(),
                        content: content_of(&obj),
                    },
                );
            }
        }
        Ok(out)
    }

    /// Brings the policy's reports to `desired`.
    pub async fn sync(
        &self,
        client: &Client,
        policy: &ResponsibilityPolicy,
        desired: BTreeMap<Scope, Value>,
    ) -> Published {
        let mut state = self.state.lock().await;
        if let Err(m) = self.served(&mut state, client).await {
            return Published::Missing(m);
        }
        let Some(uid) = policy.meta().uid.clone() else {
            return Published::Failed("the policy has no uid yet".into());
        };
        let policy_name = policy.name_any();
        let name = report_name(&policy_name, &uid);
        let (listed, mut written) = match state.written.remove(&uid) {
            Some((at, w)) if at.elapsed() < self.settings.relist => (at, w),
            _ => match self.list(client, &uid, &name).await {
                Ok(w) => (Instant::now(), w),
                Err(m) => return self.failed(&mut state, m),
            },
        };
        // Past it, the rest is left to the next sync (what was written is remembered).
        let deadline = Instant::now() + self.budget;
        let mut pending = false;
        let mut errors = Vec::new();
        for (scope, content) in &desired {
            let before = written.get(scope);
            if before.is_some_and(|w| &w.content == content) {
                continue;
            }
            if Instant::now() >= deadline {
                pending = true;
                break;
            }
            match self
                .apply(client, policy, &uid, &name, scope, content, before)
                .await
            {
                Ok(Some(w)) => {
                    written.insert(scope.clone(), w);
                }
                // A namespace on its way out: its report goes with it.
                Ok(None) => {}
                Err(m) => errors.push(m),
            }
        }
        let stale: Vec<Scope> = written
            .keys()
            .filter(|s| !desired.contains_key(*s))
            .cloned()
            .collect();
        for scope in stale {
            if Instant::now() >= deadline {
                pending = true;
                break;
            }
            let Some(w) = written.remove(&scope) else {
                continue;
            };
            match self.delete(client, &name, &scope, &w.uid).await {
                Ok(()) => {
                    info!(policy = %policy_name, "Policy reports: removed {}", self.describe(&name, &scope))
                }
                Err(m) => errors.push(m),
            }
        }
        if !errors.is_empty() {
            errors.sort();
            errors.dedup();
            return self.failed(&mut state, errors.join("; "));
        }
        let reports = written.keys().filter(|s| s.is_some()).count();
        state.written.insert(uid, (listed, written));
        if pending {
            return Published::Pending;
        }
        Published::Done(reports)
    }

    /// A refusal: what was written is listed again on the next sync (and the API looked for
    /// again, in case its CRDs went).
    fn failed(&self, state: &mut State, message: String) -> Published {
        state.served = None;
        warn!("Policy reports: {message}");
        Published::Failed(message)
    }

    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        client: &Client,
        policy: &ResponsibilityPolicy,
        uid: &str,
        name: &str,
        scope: &Scope,
        content: &Value,
        before: Option<&Written>,
    ) -> Result<Option<Written>, String> {
        let api = self.api(client, scope);
        let what = self.describe(name, scope);
        // The object as last seen (onus's own), else as it is now: never one onus did not make.
        let resource_version = match before {
            Some(w) => Some(w.resource_version.clone()),
            None => match api.get_opt(name).await {
                Ok(Some(obj)) if ours(&obj, uid, name) => obj.resource_version(),
                Ok(Some(_)) => {
                    return Err(format!(
                        "{what} exists without the labels {}={} and {POLICY_UID_LABEL}={uid}; \
                         onus does not take it over (rename or remove it)",
                        MANAGED_BY.0, MANAGED_BY.1
                    ));
                }
                Ok(None) => None,
                Err(e) => return Err(message(&what, &e)),
            },
        };
        let (kind, _) = self.settings.api.kind(scope.is_none());
        let mut metadata = json!({
            "name": name,
            "labels": {MANAGED_BY.0: MANAGED_BY.1, POLICY_UID_LABEL: uid},
            "ownerReferences": [{
                "apiVersion": ResponsibilityPolicy::api_version(&()),
                "kind": ResponsibilityPolicy::kind(&()),
                "name": policy.name_any(),
                "uid": uid,
            }],
        });
        if let Some(ns) = scope {
            metadata["namespace"] = json!(ns);
        }
        // A compare-and-swap: what was read as onus's is what is replaced.
        if let Some(rv) = &resource_version {
            metadata["resourceVersion"] = json!(rv);
        }
        let mut body = json!({
            "apiVersion": self.settings.api.api_version(),
            "kind": kind,
            "metadata": metadata,
        });
        if let (Some(body), Some(content)) = (body.as_object_mut(), content.as_object()) {
            body.extend(content.clone());
        }
        let obj = match api
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
        {
            Ok(obj) => obj,
            // Nothing new may be created in a namespace being deleted (its report goes with
            // it); not a refusal worth reporting.
            Err(kube::Error::Api(s))
                if resource_version.is_none()
                    && s.code == 403
                    && s.message.contains("because it is being terminated") =>
            {
                return Ok(None);
            }
            Err(e) => return Err(message(&what, &e)),
        };
        info!(policy = %policy.name_any(), "Policy reports: wrote {what}");
        Ok(Some(Written {
            uid: obj.uid().unwrap_or_default(),
            resource_version: obj.resource_version().unwrap_or_default(),
            content: content.clone(),
        }))
    }

    /// Deletes exactly the report that was read (its uid).
    async fn delete(
        &self,
        client: &Client,
        name: &str,
        scope: &Scope,
        uid: &str,
    ) -> Result<(), String> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api(client, scope).delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(message(&self.describe(name, scope), &e)),
        }
    }

    /// Writes the policy's reports from its evaluation and says how that went in `status`'s
    /// `PolicyReports` condition; when to reconcile the policy again for them (to try again,
    /// to continue, or to list them again).
    pub async fn publish(
        &self,
        client: &Client,
        policy: &ResponsibilityPolicy,
        eval: &Evaluation,
        governed: &BTreeSet<String>,
        status: &mut ResponsibilityPolicyStatus,
        now: &Time,
    ) -> Option<Duration> {
        let contents = desired(
            &policy.name_any(),
            eval,
            governed,
            self.settings.max_results,
        );
        let published = self.sync(client, policy, contents).await;
        let api = self.settings.api;
        let (retry, outcome) = match published {
            // Reconciled again when the reports are due to be listed again: nothing else
            // tells onus that one was deleted or edited.
            Published::Done(n) => (
                Some(self.settings.relist),
                Ok(format!(
                    "results published as {}: a {} in each of {n} namespace(s) and a {}, \
                     named {}",
                    api.api_version(),
                    api.kind(false).0,
                    api.kind(true).0,
                    report_name(
                        &policy.name_any(),
                        policy.meta().uid.as_deref().unwrap_or_default()
                    )
                )),
            ),
            Published::Missing(m) => (Some(REDISCOVER), Err(("ReportApiMissing", m))),
            Published::Failed(m) => (Some(RETRY), Err(("ReportWriteFailed", m))),
            Published::Pending => (
                Some(CONTINUE),
                Err((
                    "ReportsPending",
                    format!(
                        "the reports are still being written ({}s at a time, so that the \
                         status is not held up); continuing",
                        self.budget.as_secs()
                    ),
                )),
            ),
        };
        let previous = policy.status.as_ref();
        crate::status::policy_reports(status, previous, now, outcome);
        retry
    }

    /// Removes every report of the policy (it is being deleted).
    pub async fn remove_all(
        &self,
        client: &Client,
        policy: &ResponsibilityPolicy,
    ) -> Result<(), String> {
        let mut state = self.state.lock().await;
        let Some(uid) = policy.meta().uid.clone() else {
            return Ok(());
        };
        state.written.remove(&uid);
        if self.served(&mut state, client).await.is_err() {
            // Nothing can have been written where the API is not served.
            return Ok(());
        }
        let policy_name = policy.name_any();
        let name = report_name(&policy_name, &uid);
        let found = self.list(client, &uid, &name).await?;
        // Within the budget too: this holds every other policy's publishing (and so its
        // status), and what is left goes with the policy anyway (the owner reference).
        let deadline = Instant::now() + self.budget;
        let total = found.len();
        for (done, (scope, w)) in found.into_iter().enumerate() {
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} of {total} report(s) not removed within {}s: left to the garbage \
                     collector (their owner reference is the policy)",
                    total - done,
                    self.budget.as_secs()
                ));
            }
            self.delete(client, &name, &scope, &w.uid).await?;
            info!(policy = %policy_name, "Policy reports: removed {}", self.describe(&name, &scope));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        catalog::control_by_id,
        crd::{Owner, OwnerSource},
        evaluate::{Outcome, ViolationData},
    };

    fn violation(namespace: Option<&str>, kind: &str, name: &str) -> Violation {
        ViolationData {
            namespace: namespace.map(String::from),
            kind: kind.into(),
            name: name.into(),
            example: match namespace {
                Some(ns) => format!("{kind}/{ns}/{name}"),
                None => format!("{kind}/{name}"),
            },
        }
        .into()
    }

    fn outcome(id: &str, result: ControlResult, violations: Vec<Violation>) -> Outcome {
        Outcome {
            control: control_by_id(id).expect("control"),
            owner: Owner::Customer,
            owner_source: OwnerSource::ServiceModel,
            result,
            violations,
            excepted: 0,
        }
    }

    fn evaluation(outcomes: Vec<Outcome>) -> Evaluation {
        Evaluation {
            namespaces: 2,
            outcomes,
            gaps: Vec::new(),
            expired_exceptions: Vec::new(),
            next_expiry: None,
        }
    }

    fn governed(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn results<'a>(report: &'a Value, result: &str) -> Vec<&'a Value> {
        report["results"]
            .as_array()
            .expect("results")
            .iter()
            .filter(|r| r["result"] == result)
            .collect()
    }

    #[test]
    fn one_report_per_namespace_and_one_for_the_cluster() {
        let eval = evaluation(vec![
            outcome(
                "WKL-03",
                ControlResult::Fail,
                vec![
                    violation(Some("shop"), "Deployment", "web"),
                    violation(Some("shop"), "Pod", "debug"),
                ],
            ),
            outcome(
                "IAM-01",
                ControlResult::Fail,
                vec![violation(None, "ClusterRoleBinding", "ops")],
            ),
            outcome("NET-05", ControlResult::Pass, vec![]),
            outcome("WKL-02", ControlResult::ProviderOwned, vec![]),
        ]);
        let reports = desired("p", &eval, &governed(&["shop", "lab"]), 1000);
        assert_eq!(
            reports.keys().cloned().collect::<Vec<_>>(),
            [None, Some("lab".into()), Some("shop".into())]
        );
        let shop = &reports[&Some("shop".to_string())];
        let fails = results(shop, "fail");
        assert_eq!(fails.len(), 2);
        assert_eq!(fails[0]["rule"], "WKL-03");
        assert_eq!(fails[0]["policy"], "p");
        assert_eq!(fails[0]["category"], "podSecurity");
        assert_eq!(fails[0]["severity"], "critical");
        assert_eq!(fails[0]["properties"]["owner"], "Customer");
        assert_eq!(fails[0]["properties"]["frameworks"], "CIS 5.2.2");
        assert_eq!(
            fails[0]["resources"],
            json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "shop"}])
        );
        // IAM-01 passes in the namespace (its failure is cluster-scoped); NET-05 passes.
        assert_eq!(
            shop["summary"],
            json!({"pass": 2, "fail": 2, "warn": 0, "error": 0, "skip": 1})
        );
        let lab = &reports[&Some("lab".to_string())];
        assert_eq!(
            lab["summary"],
            json!({"pass": 3, "fail": 0, "warn": 0, "error": 0, "skip": 1})
        );
        // The cluster report: the RBAC control, failing on the ClusterRoleBinding.
        let cluster = &reports[&None];
        assert_eq!(
            cluster["summary"],
            json!({"pass": 0, "fail": 1, "warn": 0, "error": 0, "skip": 0})
        );
        assert_eq!(
            results(cluster, "fail")[0]["resources"],
            json!([{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "name": "ops"}])
        );
    }

    #[test]
    fn a_control_that_is_not_checked_is_skipped_whatever_it_would_flag() {
        let eval = evaluation(vec![outcome(
            "IAM-09",
            ControlResult::Disabled,
            vec![violation(Some("shop"), "ServiceAccount", "default")],
        )]);
        let reports = desired("p", &eval, &governed(&["shop"]), 1000);
        let shop = &reports[&Some("shop".to_string())];
        assert_eq!(
            shop["summary"],
            json!({"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 1})
        );
        assert_eq!(
            results(shop, "skip")[0]["message"],
            "Default ServiceAccount token not mounted: disabled by the policy"
        );
    }

    #[test]
    fn results_are_capped_failures_first_and_the_summary_stays_exact() {
        let many = (0..30)
            .map(|i| violation(Some("shop"), "Deployment", &format!("d{i:02}")))
            .collect();
        let eval = evaluation(vec![
            outcome("NET-05", ControlResult::Pass, vec![]),
            outcome("WKL-03", ControlResult::Fail, many),
        ]);
        let reports = desired("p", &eval, &governed(&["shop"]), 10);
        let shop = &reports[&Some("shop".to_string())];
        assert_eq!(shop["results"].as_array().map(Vec::len), Some(10));
        assert_eq!(results(shop, "fail").len(), 10);
        assert_eq!(
            shop["summary"],
            json!({"pass": 1, "fail": 30, "warn": 0, "error": 0, "skip": 0})
        );
    }

    #[test]
    fn several_findings_on_one_object_are_one_result() {
        let finding = |subject: &str| -> Violation {
            ViolationData {
                namespace: Some("shop".into()),
                kind: "RoleBinding".into(),
                name: "rb".into(),
                example: format!("RoleBinding/shop/rb: {subject}"),
            }
            .into()
        };
        let (a, b) = (finding("User/alice"), finding("User/bob"));
        let eval = evaluation(vec![outcome("IAM-03", ControlResult::Fail, vec![a, b])]);
        let reports = desired("p", &eval, &governed(&["shop"]), 1000);
        let fails = results(&reports[&Some("shop".to_string())], "fail");
        assert_eq!(fails.len(), 1);
        assert_eq!(
            fails[0]["message"],
            "Secret read access is minimal: RoleBinding/shop/rb: User/alice; RoleBinding/shop/rb: User/bob"
        );
    }

    #[test]
    fn a_violation_outside_the_governed_namespaces_still_has_its_report() {
        let eval = evaluation(vec![outcome(
            "IAM-03",
            ControlResult::Fail,
            vec![violation(Some("elsewhere"), "RoleBinding", "rb")],
        )]);
        let reports = desired("p", &eval, &governed(&["shop"]), 1000);
        assert!(reports.contains_key(&Some("elsewhere".to_string())));
    }

    /// An API server serving the report API where every write takes half a second (a slow webhook
    /// on reports, an overloaded server): discovery, lists (empty) and reads (none) answer.
    fn slow_report_api() -> Client {
        slow_report_api_holding(0)
    }

    /// What the mock report APIs below share: discovery of openreports.io/v1alpha1, a list of
    /// `items` for a path ending in `reports`, and 404 for anything else.
    fn report_api_read(uri: &str, items: impl FnOnce() -> Vec<Value>) -> (u16, Value) {
        if uri == "/apis/openreports.io/v1alpha1" {
            (
                200,
                json!({"kind": "APIResourceList", "groupVersion": "openreports.io/v1alpha1",
                    "resources": [
                        {"name": "reports", "singularName": "report", "namespaced": true,
                         "kind": "Report", "verbs": ["get", "list", "patch", "delete"]},
                        {"name": "clusterreports", "singularName": "clusterreport",
                         "namespaced": false, "kind": "ClusterReport",
                         "verbs": ["get", "list", "patch", "delete"]}]}),
            )
        } else if uri.ends_with("reports") {
            (
                200,
                json!({"apiVersion": "openreports.io/v1alpha1", "kind": "ReportList",
                       "metadata": {"resourceVersion": "1"}, "items": items()}),
            )
        } else {
            (
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "NotFound", "code": 404, "message": "not found"}),
            )
        }
    }

    /// Policy `p`'s report in `namespace`, as listed.
    fn listed_report(namespace: &str, uid: &str) -> Value {
        json!({"apiVersion": "openreports.io/v1alpha1", "kind": "Report",
            "metadata": {"name": "onus-p", "namespace": namespace, "uid": uid,
                "resourceVersion": "1",
                "labels": {MANAGED_BY.0: MANAGED_BY.1, POLICY_UID_LABEL: POLICY_UID}}})
    }

    fn deleted() -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})
    }

    /// A client of a mock API server answering each request with `answer`'s status and body.
    fn mock_api<F, Fut>(answer: F) -> Client
    where
        F: Fn(axum::http::Request<kube::client::Body>) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = (u16, Value)> + Send + 'static,
    {
        let service = tower::service_fn(move |request| {
            let answer = answer.clone();
            async move {
                let (status, body) = answer(request).await;
                axum::http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(axum::body::Bytes::from(
                        body.to_string(),
                    )))
                    .map_err(tower::BoxError::from)
            }
        });
        Client::new(service, "default")
    }

    /// [`slow_report_api`] where policy `p` has `reports` namespaced reports (namespaces
    /// `n0`...), each deleted in half a second too.
    fn slow_report_api_holding(reports: usize) -> Client {
        mock_api(move |request| async move {
            let uri = request.uri().path().to_string();
            if request.method() == "DELETE" {
                tokio::time::sleep(Duration::from_millis(500)).await;
                (200, deleted())
            } else if request.method() == "PATCH" {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let name = uri.rsplit('/').next().unwrap_or_default().to_string();
                (
                    200,
                    json!({"apiVersion": "openreports.io/v1alpha1", "kind": "Report",
                           "metadata": {"name": name, "uid": "r", "resourceVersion": "2"}}),
                )
            } else {
                report_api_read(&uri, || {
                    (0..reports)
                        .filter(|_| uri.ends_with("/reports"))
                        .map(|i| listed_report(&format!("n{i}"), &format!("r{i}")))
                        .collect()
                })
            }
        })
    }

    const POLICY_UID: &str = "0b5e3c1a-0000-4000-8000-000000000001";

    #[tokio::test]
    async fn removing_many_reports_holds_no_one_up_and_leaves_the_rest_to_the_collector() {
        let mut reports = Reports::new(ReportSettings::default());
        reports.budget = Duration::from_millis(100);
        let policy: ResponsibilityPolicy = serde_json::from_value(json!({
            "apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
            "metadata": {"name": "p", "uid": POLICY_UID},
            "spec": {"serviceModel": "PaaS"}}))
        .expect("policy");
        let started = Instant::now();
        // Four reports: 2 s of deletes, under the lock every policy's publishing takes.
        let removed = reports
            .remove_all(&slow_report_api_holding(4), &policy)
            .await;
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1500), "held for {took:?}");
        let error = removed.expect_err("some are left");
        assert!(error.starts_with("3 of 4 report(s) not removed"), "{error}");
    }

    #[tokio::test]
    async fn slow_report_writes_do_not_hold_the_status_up() {
        let mut reports = Reports::new(ReportSettings::default());
        reports.budget = Duration::from_millis(100);
        let policy: ResponsibilityPolicy = serde_json::from_value(json!({
            "apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
            "metadata": {"name": "p", "uid": POLICY_UID},
            "spec": {"serviceModel": "PaaS"}}))
        .expect("policy");
        let eval = evaluation(vec![outcome("NET-05", ControlResult::Pass, vec![])]);
        let mut status = ResponsibilityPolicyStatus::default();
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        let started = Instant::now();
        // Four reports (three namespaces and the cluster's): 2 s of writes; one is
        // started within the budget, then the status is written.
        let retry = reports
            .publish(
                &slow_report_api(),
                &policy,
                &eval,
                &governed(&["a", "b", "c"]),
                &mut status,
                &now,
            )
            .await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(1500),
            "the status waited {took:?} for the reports"
        );
        assert_eq!(retry, Some(CONTINUE));
        let c = crate::status::condition(&status, crate::status::POLICY_REPORTS)
            .expect("PolicyReports condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "ReportsPending")
        );
        // The next reconciles continue where it stopped, one write each, until all are out.
        let mut syncs = 1;
        loop {
            let again = reports
                .publish(
                    &slow_report_api(),
                    &policy,
                    &eval,
                    &governed(&["a", "b", "c"]),
                    &mut status,
                    &now,
                )
                .await;
            syncs += 1;
            // Done: reconciled again when the reports are due to be listed again.
            if again == Some(RELIST) {
                break;
            }
            assert_eq!(again, Some(CONTINUE));
            assert!(syncs < 4, "no progress: {status:?}");
        }
        let c = crate::status::condition(&status, crate::status::POLICY_REPORTS)
            .expect("PolicyReports condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "Published")
        );
        assert_eq!(syncs, 4, "one write per sync");
    }

    /// A report API holding one report of policy `p`'s, in namespace `gone`, that counts its
    /// lists and records its deletes.
    fn counting_report_api(
        lists: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        deletes: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    ) -> Client {
        mock_api(move |request| {
            let (lists, deletes) = (lists.clone(), deletes.clone());
            async move {
                let uri = request.uri().path().to_string();
                if request.method() == "DELETE" {
                    deletes.lock().expect("deletes").push(uri);
                    (200, deleted())
                } else if request.method() == "PATCH" {
                    (
                        200,
                        json!({"apiVersion": "openreports.io/v1alpha1", "kind": "ClusterReport",
                               "metadata": {"name": "onus-p", "uid": "c", "resourceVersion": "2"}}),
                    )
                } else {
                    if uri.ends_with("reports") {
                        lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    report_api_read(&uri, || {
                        uri.ends_with("/reports")
                            .then(|| listed_report("gone", "r-gone"))
                            .into_iter()
                            .collect()
                    })
                }
            }
        })
    }

    #[tokio::test]
    async fn reports_are_listed_again_after_the_relist_interval_and_stale_ones_removed() {
        use std::sync::{Arc, Mutex, atomic::AtomicUsize, atomic::Ordering};
        let lists = Arc::new(AtomicUsize::new(0));
        let deletes = Arc::new(Mutex::new(Vec::new()));
        let client = counting_report_api(lists.clone(), deletes.clone());
        let relist = Duration::from_millis(300);
        let reports = Reports::new(ReportSettings {
            relist,
            ..ReportSettings::default()
        });
        let policy: ResponsibilityPolicy = serde_json::from_value(json!({
            "apiVersion": "onus.dev/v1alpha1", "kind": "ResponsibilityPolicy",
            "metadata": {"name": "p", "uid": POLICY_UID},
            "spec": {"serviceModel": "PaaS"}}))
        .expect("policy");
        // Only the cluster report is wanted: `gone`'s is stale.
        let desired = || BTreeMap::from([(None, json!({"results": [], "summary": {}}))]);
        let synced = |published: Published| assert!(matches!(published, Published::Done(0)));
        // A new term lists (two lists: namespaced and cluster reports), removes the stale one
        // and writes the missing one.
        synced(reports.sync(&client, &policy, desired()).await);
        assert_eq!(lists.load(Ordering::SeqCst), 2);
        let gone = "/apis/openreports.io/v1alpha1/namespaces/gone/reports/onus-p".to_string();
        assert_eq!(
            *deletes.lock().expect("deletes"),
            std::slice::from_ref(&gone)
        );
        // Within the interval what was written is trusted: no list, no write.
        synced(reports.sync(&client, &policy, desired()).await);
        assert_eq!(lists.load(Ordering::SeqCst), 2);
        // Past it, listed again: the stale report (back, as the mock keeps it) goes again.
        tokio::time::sleep(relist).await;
        synced(reports.sync(&client, &policy, desired()).await);
        assert_eq!(lists.load(Ordering::SeqCst), 4);
        assert_eq!(*deletes.lock().expect("deletes"), [gone.clone(), gone]);
    }

    #[test]
    fn names_fit_an_object_name() {
        assert_eq!(report_name("prod", "1234"), "onus-prod");
        let long = "a".repeat(253);
        let name = report_name(&long, "0123abcd-ef45-6789-aaaa-bbbbccccdddd");
        assert_eq!(name.len(), 253);
        assert!(name.ends_with("-0123abcdef"));
    }

    #[test]
    fn the_api_flag_names_both_apis() {
        assert_eq!(
            ReportApi::parse("openreports"),
            Some(ReportApi::OpenReports)
        );
        assert_eq!(
            ReportApi::parse("wgpolicyk8s"),
            Some(ReportApi::WgPolicyK8s)
        );
        assert_eq!(ReportApi::parse("kyverno"), None);
        assert_eq!(
            ReportApi::OpenReports.api_version(),
            "openreports.io/v1alpha1"
        );
        assert_eq!(
            ReportApi::WgPolicyK8s.kind(true),
            ("ClusterPolicyReport", "clusterpolicyreports")
        );
    }
}
