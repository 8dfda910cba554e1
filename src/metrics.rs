//! Prometheus metrics of the operator.
//!
//! Every label value comes from a bounded set: policy names (one per policy object), control ids
//! (the catalog), owners and results (enums), and `&'static str` categories and kinds chosen in
//! code. Nothing is formatted from `Debug`, so cardinality cannot grow with cluster contents.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use jiff::{SignedDuration, Timestamp};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

use crate::{
    crd::{ControlResult, Owner, ResponsibilityPolicySpec, ResponsibilityPolicyStatus},
    status::{self, COMPLIANT},
};

/// How far ahead an exception's expiry counts as "expiring soon".
pub const EXPIRING_SOON: SignedDuration = SignedDuration::from_hours(7 * 24);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControlLabels {
    policy: String,
    control: String,
    owner: &'static str,
}

/// A control's result as a series of its own, for the responsibility matrix.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControlResultLabels {
    policy: String,
    control: String,
    owner: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    policy: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    policy: String,
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// The version of this build (`onus --version`, `onus_build_info`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The operator's metrics; cheap to clone, every clone records into the same registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    policy_compliant: Family<PolicyLabels, Gauge>,
    policy_ready: Family<PolicyLabels, Gauge>,
    policy_gap: Family<PolicyLabels, Gauge>,
    policy_violations: Family<PolicyLabels, Gauge>,
    control_violations: Family<ControlLabels, Gauge>,
    control_result: Family<ControlResultLabels, Gauge>,
    exceptions_expiring_soon: Family<PolicyLabels, Gauge>,
    reconciliations: Family<ResultLabels, Counter>,
    reconcile_errors: Family<CategoryLabels, Counter>,
    reconcile_duration: Family<PolicyLabels, Histogram>,
    standby_evaluations: Counter,
    watch_events: Family<KindLabels, Counter>,
    undecodable: Family<KindLabels, Counter>,
    remediation_failures: Family<KindLabels, Counter>,
    detection_latency: Family<PolicyLabels, Histogram>,
    leader: Gauge,
    /// The control series last written per policy, so stale ones can be removed.
    controls_of: Mutex<HashMap<String, Vec<(ControlLabels, ControlResultLabels)>>>,
    /// The error categories counted per policy, so a deleted policy's series can be removed.
    error_categories: Mutex<HashMap<String, std::collections::BTreeSet<&'static str>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every onus metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("onus");
        let policy_compliant = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "policy_compliant",
            "Whether the policy is compliant (1) or not (0)",
            policy_compliant.clone(),
        );
        let policy_ready = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "policy_ready",
            "Whether the policy's spec is valid and was evaluated (1) or not (0: InvalidSpec)",
            policy_ready.clone(),
        );
        let policy_gap = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "policy_responsibility_gap",
            "Whether the policy disables or assigns away a control the customer owns (1) or not (0)",
            policy_gap.clone(),
        );
        let policy_violations = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "policy_violations",
            "Violations of customer-owned controls in the policy",
            policy_violations.clone(),
        );
        let control_violations = Family::<ControlLabels, Gauge>::default();
        registry.register(
            "control_violations",
            "Violations per control of a policy, with the control's owner",
            control_violations.clone(),
        );
        let control_result = Family::<ControlResultLabels, Gauge>::default();
        registry.register(
            "control_result",
            "1 for each control of a policy, labelled with its owner and result",
            control_result.clone(),
        );
        let exceptions_expiring_soon = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "exceptions_expiring_soon",
            "Exceptions of the policy that expire within 7 days",
            exceptions_expiring_soon.clone(),
        );
        let reconciliations = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciliations",
            "Policy reconciliations by result (ok, error)",
            reconciliations.clone(),
        );
        let reconcile_errors = Family::<CategoryLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciliations by error category",
            reconcile_errors.clone(),
        );
        let reconcile_duration =
            Family::<PolicyLabels, Histogram>::new_with_constructor(reconcile_buckets as fn() -> _);
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of one policy reconciliation",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let standby_evaluations = Counter::default();
        registry.register(
            "standby_evaluations",
            "Policy evaluations by a standby, keeping its caches warm (it writes nothing; the \
             leader's count as reconciliations)",
            standby_evaluations.clone(),
        );
        let watch_events = Family::<KindLabels, Counter>::default();
        registry.register(
            "watch_events",
            "Watch events received, by kind of watched object",
            watch_events.clone(),
        );
        let undecodable = Family::<KindLabels, Counter>::default();
        registry.register(
            "undecodable_objects",
            "Watched objects skipped because they could not be decoded (not evaluated!), by kind",
            undecodable.clone(),
        );
        let remediation_failures = Family::<KindLabels, Counter>::default();
        registry.register(
            "remediation_failures",
            "Enforce-mode changes the API server refused, by kind of object",
            remediation_failures.clone(),
        );
        let detection_latency =
            Family::<PolicyLabels, Histogram>::new_with_constructor(latency_buckets as fn() -> _);
        registry.register_with_unit(
            "detection_latency",
            "Time from a watched change reaching the index to the status write reflecting it",
            Unit::Seconds,
            detection_latency.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "Whether this instance holds the leader Lease (1) or not (0); only the leader exports \
             per-policy series",
            leader.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels { version: VERSION })
            .set(1);
        registry.register(
            "build_info",
            "1, labelled with the version of the running onus",
            build_info,
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                policy_compliant,
                policy_ready,
                policy_gap,
                policy_violations,
                control_violations,
                control_result,
                exceptions_expiring_soon,
                reconciliations,
                reconcile_errors,
                reconcile_duration,
                standby_evaluations,
                watch_events,
                undecodable,
                remediation_failures,
                detection_latency,
                leader,
                controls_of: Mutex::new(HashMap::new()),
                error_categories: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The exposition in the OpenMetrics text format (which Prometheus scrapes natively).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }

    /// Records the compliance of one policy from the status just computed for it.
    pub fn record_policy(
        &self,
        policy: &str,
        status: &ResponsibilityPolicyStatus,
        expiring_soon: u64,
    ) {
        let labels = PolicyLabels {
            policy: policy.to_string(),
        };
        let compliant = status::condition(status, COMPLIANT).is_some_and(|c| c.status == "True");
        let m = &self.inner;
        m.policy_compliant
            .get_or_create(&labels)
            .set(i64::from(compliant));
        let ready = status::condition(status, status::READY).is_some_and(|c| c.status == "True");
        m.policy_ready.get_or_create(&labels).set(i64::from(ready));
        let gap = status::condition(status, status::RESPONSIBILITY_GAP)
            .is_some_and(|c| c.status == "True");
        m.policy_gap.get_or_create(&labels).set(i64::from(gap));
        let violations = status.summary.as_ref().map_or(0, |s| s.violations);
        m.policy_violations
            .get_or_create(&labels)
            .set(saturating_i64(violations));
        m.exceptions_expiring_soon
            .get_or_create(&labels)
            .set(saturating_i64(expiring_soon));

        let mut current = Vec::with_capacity(status.controls.len());
        for control in &status.controls {
            let labels = ControlLabels {
                policy: policy.to_string(),
                control: control.id.clone(),
                owner: owner_label(control.owner),
            };
            m.control_violations
                .get_or_create(&labels)
                .set(saturating_i64(control.violations));
            let result = ControlResultLabels {
                policy: labels.policy.clone(),
                control: labels.control.clone(),
                owner: labels.owner,
                result: result_label(control.result),
            };
            m.control_result.get_or_create(&result).set(1);
            current.push((labels, result));
        }
        let mut controls_of = m.controls_of.lock().unwrap_or_else(|p| p.into_inner());
        let previous = controls_of.insert(policy.to_string(), current.clone());
        // A control whose owner or result changed (or that left the status) must not keep its
        // old series.
        for (violations, result) in previous.unwrap_or_default() {
            if !current.iter().any(|(v, _)| *v == violations) {
                m.control_violations.remove(&violations);
            }
            if !current.iter().any(|(_, r)| *r == result) {
                m.control_result.remove(&result);
            }
        }
    }

    /// Removes every series of a deleted policy.
    pub fn forget_policy(&self, policy: &str) {
        let labels = PolicyLabels {
            policy: policy.to_string(),
        };
        let m = &self.inner;
        m.policy_compliant.remove(&labels);
        m.policy_ready.remove(&labels);
        m.policy_gap.remove(&labels);
        m.policy_violations.remove(&labels);
        m.exceptions_expiring_soon.remove(&labels);
        let mut controls_of = m.controls_of.lock().unwrap_or_else(|p| p.into_inner());
        for (violations, result) in controls_of.remove(policy).unwrap_or_default() {
            m.control_violations.remove(&violations);
            m.control_result.remove(&result);
        }
        drop(controls_of);
        // Its reconciliation series too: a deleted policy's counters would stay forever.
        m.reconcile_duration.remove(&labels);
        m.detection_latency.remove(&labels);
        let policy = labels.policy;
        for result in ["ok", "error"] {
            m.reconciliations.remove(&ResultLabels {
                policy: policy.clone(),
                result,
            });
        }
        let categories = m
            .error_categories
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&policy)
            .unwrap_or_default();
        for category in categories {
            m.reconcile_errors.remove(&CategoryLabels {
                policy: policy.clone(),
                category,
            });
        }
    }

    /// Starts timing one reconciliation of `policy`; see [`ReconcileTimer`].
    pub fn reconcile_timer(&self, policy: &str) -> ReconcileTimer {
        ReconcileTimer {
            metrics: self.clone(),
            policy: policy.to_string(),
            start: Instant::now(),
            succeeded: false,
        }
    }

    /// Counts a failed reconciliation of `policy` by its error category (`Error::category()`).
    pub fn reconcile_error(&self, policy: &str, category: &'static str) {
        self.inner
            .error_categories
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(policy.to_string())
            .or_default()
            .insert(category);
        self.inner
            .reconcile_errors
            .get_or_create(&CategoryLabels {
                policy: policy.to_string(),
                category,
            })
            .inc();
    }

    /// Counts one evaluation a standby made (it writes nothing).
    pub fn standby_evaluation(&self) {
        self.inner.standby_evaluations.inc();
    }

    /// Counts one remediation the API server refused, by the kind of object it changes.
    pub fn remediation_failure(&self, kind: &'static str) {
        self.inner
            .remediation_failures
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// Counts one watched object skipped as undecodable (it is not evaluated: alert on it).
    pub fn undecodable(&self, kind: &'static str) {
        self.inner
            .undecodable
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// Counts one watch event for a kind of watched object (e.g. `Pod::KIND`).
    pub fn watch_event(&self, kind: &'static str) {
        self.inner
            .watch_events
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// Observes the time from a change reaching the index to the write of `policy`'s status
    /// reflecting it.
    pub fn detection_latency(&self, policy: &str, latency: Duration) {
        self.inner
            .detection_latency
            .get_or_create(&PolicyLabels {
                policy: policy.to_string(),
            })
            .observe(latency.as_secs_f64());
    }

    /// Sets whether this instance currently leads.
    pub fn set_leader(&self, leading: bool) {
        self.inner.leader.set(i64::from(leading));
    }
}

/// Times one reconciliation; when dropped it observes the duration and counts the
/// reconciliation as `ok` if [`ReconcileTimer::succeeded`] was called, else as `error` (so an
/// early `?` return counts as a failure without further code).
#[must_use = "the reconciliation is timed until the guard is dropped"]
pub struct ReconcileTimer {
    metrics: Metrics,
    policy: String,
    start: Instant,
    succeeded: bool,
}

impl ReconcileTimer {
    /// Marks the reconciliation as successful; the guard still records when dropped.
    pub fn succeeded(&mut self) {
        self.succeeded = true;
    }
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        let m = &self.metrics.inner;
        let policy = std::mem::take(&mut self.policy);
        m.reconcile_duration
            .get_or_create(&PolicyLabels {
                policy: policy.clone(),
            })
            .observe(self.start.elapsed().as_secs_f64());
        let result = if self.succeeded { "ok" } else { "error" };
        m.reconciliations
            .get_or_create(&ResultLabels { policy, result })
            .inc();
    }
}

/// How many of a policy's exceptions expire after `now` but within [`EXPIRING_SOON`].
pub fn expiring_soon(spec: &ResponsibilityPolicySpec, now: Timestamp) -> u64 {
    let horizon = now.saturating_add(EXPIRING_SOON).unwrap_or(Timestamp::MAX);
    let count = spec
        .exceptions
        .iter()
        .filter_map(|e| e.expires.as_ref())
        .filter(|t| t.0 > now && t.0 <= horizon)
        .count();
    count as u64
}

fn owner_label(owner: Owner) -> &'static str {
    match owner {
        Owner::Customer => "Customer",
        Owner::Provider => "Provider",
        Owner::Shared => "Shared",
    }
}

fn result_label(result: ControlResult) -> &'static str {
    match result {
        ControlResult::Pass => "Pass",
        ControlResult::Fail => "Fail",
        ControlResult::Excepted => "Excepted",
        ControlResult::ProviderOwned => "ProviderOwned",
        ControlResult::NotObservable => "NotObservable",
        ControlResult::Disabled => "Disabled",
    }
}

/// Buckets of `onus_reconcile_duration_seconds`: 1 ms to 16 s.
fn reconcile_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Buckets of `onus_detection_latency_seconds`: 5 ms to 41 s.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
