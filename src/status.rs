//! Builds a policy's status from an evaluation. Pure and idempotent: the same evaluation and the
//! same previous status give the same status, and `lastTransitionTime` only moves when a
//! condition's status does, so a steady cluster causes no status writes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::{
    crd::{
        ControlResult, ControlStatus, Exception, Mode, Owner, RemediationKind, RemediationStatus,
        ResponsibilityPolicyStatus, Summary,
    },
    evaluate::Evaluation,
    remediate::{DenyWaiting, NamespaceWaiting, Preview},
};

/// At most this many example offenders per control; counts stay exact.
pub const MAX_EXAMPLES: usize = 10;

/// Condition types.
pub const READY: &str = "Ready";
pub const COMPLIANT: &str = "Compliant";
pub const RESPONSIBILITY_GAP: &str = "ResponsibilityGap";
pub const ENFORCED: &str = "Enforced";
pub const DEFAULT_DENY_IN_FRONT_OF_BACKENDS: &str = "DefaultDenyInFrontOfBackends";

/// How to let a held default-deny go in, said once in the Enforced condition.
const DENY_HINT: &str = "a default-deny in front of a Service the API server calls can break \
    the cluster's API; once that traffic is allowed by a NetworkPolicy of its own, list the \
    namespace in spec.controls.network.allowDefaultDenyInFrontOfWebhooks (never possible for \
    onus's own namespace), or exclude the namespace";

struct Conditions<'a> {
    previous: &'a [Condition],
    generation: Option<i64>,
    now: &'a Time,
    out: Vec<Condition>,
}

impl<'a> Conditions<'a> {
    fn new(
        previous: Option<&'a ResponsibilityPolicyStatus>,
        generation: Option<i64>,
        now: &'a Time,
    ) -> Self {
        Conditions {
            previous: previous
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default(),
            generation,
            now,
            out: Vec::new(),
        }
    }

    fn set(&mut self, type_: &str, status: bool, reason: &str, message: String) {
        let status = if status { "True" } else { "False" }.to_string();
        let last_transition_time = self
            .previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| self.now.clone(), |c| c.last_transition_time.clone());
        self.out.push(Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message,
            observed_generation: self.generation,
            last_transition_time,
        });
    }
}

fn counts_against_customer(owner: Owner) -> bool {
    owner != Owner::Provider
}

/// One namespace's waiting `enforce` label, e.g. `enforce=baseline in shop; restricted waits
/// for 1 workload (Deployment/shop/rootapp)`.
pub fn waiting_message(w: &NamespaceWaiting) -> String {
    let ns = &w.namespace;
    let now = match &w.enforced {
        Some(level) => format!("enforce={level} in {ns}"),
        None => format!("no enforce label in {ns}"),
    };
    let objects = &w.waiting.objects;
    let mut sample: Vec<&str> = objects.iter().take(3).map(String::as_str).collect();
    if objects.len() > sample.len() {
        sample.push("…");
    }
    format!(
        "{now}; {} waits for {} workload{} ({})",
        crate::evaluate::level_name(w.waiting.level),
        objects.len(),
        if objects.len() == 1 { "" } else { "s" },
        sample.join(", ")
    )
}

/// The active exceptions that cover objects a waiting `enforce` label waits for, as
/// `spec.exceptions[0] (WKL-03) covers Deployment/shop/rootapp`: an exception silences onus's
/// check, never the Pod Security admission, so the label would wait for them forever.
pub fn blocking_exceptions(
    w: &NamespaceWaiting,
    exceptions: &[Exception],
    now: &Time,
) -> Vec<String> {
    let ns = &w.namespace;
    let mut out = Vec::new();
    for (i, e) in exceptions.iter().enumerate() {
        if e.expires.as_ref().is_some_and(|t| t.0 <= now.0) {
            continue;
        }
        let controls: Vec<&str> = e
            .controls
            .iter()
            .map(String::as_str)
            .filter(|c| c.starts_with("WKL-") && *c != "WKL-01")
            .collect();
        if controls.is_empty() || !(e.namespaces.is_empty() || e.namespaces.contains(ns)) {
            continue;
        }
        let covered: Vec<&str> = w
            .waiting
            .objects
            .iter()
            .filter(|o| {
                let mut parts = o.splitn(3, '/');
                let (kind, name) = (
                    parts.next().unwrap_or_default(),
                    parts.nth(1).unwrap_or_default(),
                );
                e.resources.is_empty()
                    || e.resources
                        .iter()
                        .any(|r| r.kind.eq_ignore_ascii_case(kind) && r.name == name)
            })
            .map(String::as_str)
            .collect();
        if covered.is_empty() {
            continue;
        }
        let mut shown: Vec<&str> = covered.iter().take(3).copied().collect();
        if covered.len() > shown.len() {
            shown.push("…");
        }
        out.push(format!(
            "spec.exceptions[{i}] ({}) covers {}",
            controls.join(", "),
            shown.join(", ")
        ));
    }
    out
}

/// [`waiting_message`], and when exceptions cover what it waits for, which ones and how to
/// proceed.
pub fn waiting_message_for(w: &NamespaceWaiting, exceptions: &[Exception], now: &Time) -> String {
    let base = waiting_message(w);
    let blocking = blocking_exceptions(w, exceptions, now);
    if blocking.is_empty() {
        return base;
    }
    format!(
        "{base}; {} (an exception silences onus's check, not the PodSecurity admission: fix \
         them, set spec.controls.podSecurity.forceEnforce, or govern {} with a policy at a level \
         they meet and list it in spec.excludedNamespaces here)",
        blocking.join("; "),
        w.namespace
    )
}

/// One namespace's held default-deny, e.g. `NetworkPolicy waits in cert-manager: backs
/// webhook cert-manager-webhook`.
pub fn deny_waiting_message(w: &DenyWaiting) -> String {
    format!(
        "NetworkPolicy waits in {}: {}",
        w.namespace,
        w.reasons.join(", ")
    )
}

/// One namespace whose `onus-default-deny` (applied before) now stands in front of a backend,
/// e.g. `onus-default-deny in cert-manager stays in front of webhook cert-manager-webhook`.
pub fn deny_kept_message(w: &DenyWaiting) -> String {
    let what: Vec<&str> = w
        .reasons
        .iter()
        .map(|r| match r.as_str() {
            "onus runs there" => "onus itself",
            other => other.strip_prefix("backs ").unwrap_or(other),
        })
        .collect();
    format!(
        "onus-default-deny in {} stays in front of {}",
        w.namespace,
        what.join(", ")
    )
}

/// Reason of `Enforced=False` (and `Warned=False`) while the API server refuses a write.
pub const REMEDIATION_FAILED: &str = "RemediationFailed";

/// The refused writes, as `Enforced` and `Warned` say them: the count and up to
/// [`MAX_EXAMPLES`] lines.
fn refused_message(failures: &[String]) -> String {
    // One more than shown is enough for `sample` to know there are more.
    let shown = sample(failures.iter().take(MAX_EXAMPLES + 1).cloned().collect());
    format!(
        "{} remediations refused (retrying): {}",
        failures.len(),
        shown.join("; ")
    )
}

/// Up to [`MAX_EXAMPLES`] of `items`, and `…` when there are more.
fn sample(mut items: Vec<String>) -> Vec<String> {
    if items.len() > MAX_EXAMPLES {
        items.truncate(MAX_EXAMPLES);
        items.push("…".into());
    }
    items
}

/// The status of a valid policy. `failures` are the remediations the API server refused in
/// the policy's namespaces (each naming the object and the server's message).
#[allow(clippy::too_many_arguments)]
pub fn evaluated(
    eval: &Evaluation,
    preview: &Preview,
    exceptions: &[Exception],
    failures: &[String],
    mode: Mode,
    generation: Option<i64>,
    previous: Option<&ResponsibilityPolicyStatus>,
    now: &Time,
) -> ResponsibilityPolicyStatus {
    let controls: Vec<ControlStatus> = eval
        .outcomes
        .iter()
        .map(|o| ControlStatus {
            id: o.control.id.into(),
            title: o.control.title.into(),
            family: o.control.family.field().into(),
            owner: o.owner,
            owner_source: o.owner_source,
            result: o.result,
            violations: o.violations.len() as u64,
            excepted: o.excepted,
            examples: o
                .violations
                .iter()
                .take(MAX_EXAMPLES)
                .map(|v| v.example.clone())
                .collect(),
            frameworks: o.control.frameworks.iter().map(|f| f.to_string()).collect(),
            admission: None,
        })
        .collect();

    let failing: Vec<&ControlStatus> = controls
        .iter()
        .filter(|c| c.result == ControlResult::Fail)
        .collect();
    let summary = Summary {
        namespaces: eval.namespaces as u32,
        controls: controls.len() as u32,
        customer_owned: controls
            .iter()
            .filter(|c| counts_against_customer(c.owner))
            .count() as u32,
        passing: controls
            .iter()
            .filter(|c| c.result == ControlResult::Pass)
            .count() as u32,
        failing: failing.len() as u32,
        violations: failing.iter().map(|c| c.violations).sum(),
        excepted: controls.iter().map(|c| c.excepted).sum(),
    };

    let mut conditions = Conditions::new(previous, generation, now);
    conditions.set(
        READY,
        true,
        "Evaluated",
        format!(
            "{} controls evaluated in {} namespaces",
            summary.controls, summary.namespaces
        ),
    );
    if failing.is_empty() {
        conditions.set(
            COMPLIANT,
            true,
            "AllControlsPass",
            "every customer-owned control passes".into(),
        );
    } else {
        let ids: Vec<&str> = failing.iter().map(|c| c.id.as_str()).collect();
        conditions.set(
            COMPLIANT,
            false,
            "ViolationsFound",
            format!(
                "{} violations in {} customer-owned controls: {}",
                summary.violations,
                failing.len(),
                ids.join(", ")
            ),
        );
    }
    match eval.gaps.first() {
        None => conditions.set(
            RESPONSIBILITY_GAP,
            false,
            "NoGap",
            "every customer-owned control is owned and enabled".into(),
        ),
        Some(first) => conditions.set(
            RESPONSIBILITY_GAP,
            true,
            first.reason,
            eval.gaps
                .iter()
                .map(|g| g.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
    let waiting: Vec<String> = preview
        .enforce_waiting
        .iter()
        .take(MAX_EXAMPLES)
        .map(|w| waiting_message_for(w, exceptions, now))
        .collect();
    let held = || preview.deny_waiting.iter().filter(|w| w.waits);
    let deny_waiting = sample(held().map(deny_waiting_message).collect());
    if mode == Mode::Enforce {
        let kept: Vec<&DenyWaiting> = preview.deny_waiting.iter().filter(|w| w.kept).collect();
        if kept.is_empty() {
            conditions.set(
                DEFAULT_DENY_IN_FRONT_OF_BACKENDS,
                false,
                "NoneInFront",
                "no onus-default-deny stands in front of a webhook, APIService or onus itself"
                    .into(),
            );
        } else {
            conditions.set(
                DEFAULT_DENY_IN_FRONT_OF_BACKENDS,
                true,
                "KeptInFrontOfBackends",
                format!(
                    "{}; onus keeps what it applied (removing a protection is not its call): \
                     allow that traffic with a NetworkPolicy and list the namespace in \
                     spec.controls.network.allowDefaultDenyInFrontOfWebhooks, or exclude the \
                     namespace to have onus remove its default-deny",
                    sample(kept.iter().map(|w| deny_kept_message(w)).collect()).join("; ")
                ),
            );
        }
        if !failures.is_empty() {
            conditions.set(
                ENFORCED,
                false,
                REMEDIATION_FAILED,
                refused_message(failures),
            );
        } else if preview.is_done() {
            conditions.set(
                ENFORCED,
                true,
                "Remediated",
                "every safe remediation is in place".into(),
            );
        } else if preview.network_policies + preview.pod_security_labels + preview.service_accounts
            == 0
        {
            let mut parts = Vec::new();
            if !preview.enforce_waiting.is_empty() {
                parts.push(format!(
                    "Pod Security enforce label waits for existing workloads in {} namespaces: {}",
                    preview.enforce_waiting.len(),
                    waiting.join("; ")
                ));
            }
            if !deny_waiting.is_empty() {
                parts.push(format!(
                    "default-deny NetworkPolicy held in {} namespaces: {} ({DENY_HINT})",
                    preview.deny_waiting.iter().filter(|w| w.waits).count(),
                    deny_waiting.join("; ")
                ));
            }
            conditions.set(ENFORCED, false, "EnforceWaiting", parts.join("; "));
        } else {
            conditions.set(
                ENFORCED,
                false,
                "Pending",
                format!(
                    "remediations pending: {} NetworkPolicies, {} namespaces' Pod Security labels, {} ServiceAccounts{}",
                    preview.network_policies,
                    preview.pod_security_labels,
                    preview.service_accounts,
                    if deny_waiting.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; default-deny NetworkPolicy held: {} ({DENY_HINT})",
                            deny_waiting.join("; ")
                        )
                    }
                ),
            );
        }
    }
    let remediation = (!preview.is_done()).then(|| RemediationStatus {
        kind: if mode == Mode::Enforce {
            RemediationKind::Pending
        } else {
            RemediationKind::WouldApply
        },
        network_policies: preview.network_policies,
        pod_security_labels: preview.pod_security_labels,
        service_accounts: preview.service_accounts,
        enforce_waiting: waiting,
        network_policy_waiting: held()
            .take(MAX_EXAMPLES)
            .map(deny_waiting_message)
            .collect(),
    });

    ResponsibilityPolicyStatus {
        observed_generation: generation,
        conditions: conditions.out,
        summary: Some(summary),
        controls,
        remediation,
        enforced_spec: None,
        pod_security_version: None,
    }
}

/// The status of a policy whose spec cannot be evaluated.
pub fn invalid(
    message: &str,
    generation: Option<i64>,
    previous: Option<&ResponsibilityPolicyStatus>,
    now: &Time,
) -> ResponsibilityPolicyStatus {
    let mut conditions = Conditions::new(previous, generation, now);
    conditions.set(READY, false, "InvalidSpec", message.into());
    ResponsibilityPolicyStatus {
        observed_generation: generation,
        conditions: conditions.out,
        summary: None,
        controls: Vec::new(),
        remediation: None,
        enforced_spec: None,
        pod_security_version: None,
    }
}

/// Reason of `Enforced=False` on an Audit-only install.
pub const ENFORCE_UNAVAILABLE: &str = "EnforceUnavailable";

/// An Enforce policy on an Audit-only install (`--audit-only`): `Enforced` says that nothing is
/// remediated and which permissions are missing, and the remediation counts become a dry run
/// (`WouldApply`). The evaluation is left as it is.
pub fn enforce_unavailable(
    status: &mut ResponsibilityPolicyStatus,
    previous: Option<&ResponsibilityPolicyStatus>,
    now: &Time,
) {
    let would = match &mut status.remediation {
        Some(r) => {
            r.kind = RemediationKind::WouldApply;
            format!(
                "it would apply {} NetworkPolicies, {} namespaces' Pod Security labels, {} ServiceAccounts",
                r.network_policies, r.pod_security_labels, r.service_accounts
            )
        }
        None => "nothing would change now".into(),
    };
    let mut conditions = Conditions::new(previous, status.observed_generation, now);
    conditions.set(
        ENFORCED,
        false,
        ENFORCE_UNAVAILABLE,
        format!(
            "onus is installed Audit-only (--audit-only, chart value enforce.enabled=false): it \
             may not patch namespaces or serviceaccounts, nor create, patch or delete \
             networkpolicies, so nothing is remediated ({would}); install onus with \
             enforce.enabled=true, or set mode: Audit"
        ),
    );
    let enforced = conditions.out.remove(0);
    match status.conditions.iter_mut().find(|c| c.type_ == ENFORCED) {
        Some(c) => *c = enforced,
        None => status.conditions.push(enforced),
    }
}

/// Reason of `Ready=False` while the API server refuses onus a watch it needs.
pub const FORBIDDEN: &str = "Forbidden";

/// Marks an evaluated status as not ready while the API server refuses onus the watch of some
/// kinds (`refused`: kind → the API server's message): what the controls read from those kinds
/// is what onus last saw, and may be stale. Every control is still evaluated and listed.
pub fn watches_refused(
    status: &mut ResponsibilityPolicyStatus,
    previous: Option<&ResponsibilityPolicyStatus>,
    now: &Time,
    refused: &std::collections::BTreeMap<&'static str, String>,
) {
    if refused.is_empty() {
        return;
    }
    let what: Vec<String> = refused
        .iter()
        .map(|(kind, message)| format!("{kind} ({message})"))
        .collect();
    let mut conditions = Conditions::new(previous, status.observed_generation, now);
    conditions.set(
        READY,
        false,
        FORBIDDEN,
        format!(
            "the API server refuses onus the watch of {}: what the controls read from them is \
             what onus last saw and may be stale (every other input is current); grant onus \
             list and watch on them again (the chart's ClusterRole)",
            what.join(", ")
        ),
    );
    let ready = conditions.out.remove(0);
    match status.conditions.iter_mut().find(|c| c.type_ == READY) {
        Some(c) => *c = ready,
        None => status.conditions.insert(0, ready),
    }
}

/// Reason of `Ready=False` while objects the policy governs could not be decoded.
pub const UNDECODABLE: &str = "UndecodableObjects";

/// At most this many undecodable objects are named in the condition (all are counted).
const MAX_UNDECODABLE_NAMED: usize = 5;

/// Marks an evaluated status as not ready while objects the policy governs could not be decoded
/// (`objects`: `Kind namespace/name: why`, in order): the controls did not see them as they
/// are (their last readable facts, if any, were kept). Every control is still evaluated and
/// listed. A refused watch (reason Forbidden) takes precedence: it is the wider blind spot.
pub fn undecodable_objects(
    status: &mut ResponsibilityPolicyStatus,
    previous: Option<&ResponsibilityPolicyStatus>,
    now: &Time,
    objects: &[String],
) {
    if objects.is_empty()
        || condition(status, READY).is_some_and(|c| c.status == "False" && c.reason == FORBIDDEN)
    {
        return;
    }
    let named: Vec<&str> = objects
        .iter()
        .take(MAX_UNDECODABLE_NAMED)
        .map(|o| truncated(o, 300))
        .collect();
    let more = objects.len().saturating_sub(named.len());
    let mut conditions = Conditions::new(previous, status.observed_generation, now);
    conditions.set(
        READY,
        false,
        UNDECODABLE,
        format!(
            "{} object(s) it governs could not be decoded, so the controls could not judge them \
             as they are (their last readable state counts): {}{}; see onus's log and \
             onus_undecodable_objects_total",
            objects.len(),
            named.join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        ),
    );
    let ready = conditions.out.remove(0);
    match status.conditions.iter_mut().find(|c| c.type_ == READY) {
        Some(c) => *c = ready,
        None => status.conditions.insert(0, ready),
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncated(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Type of the condition on how the policy's results are published as policy reports (only
/// when reports are on).
pub const POLICY_REPORTS: &str = "PolicyReports";

/// Sets the `PolicyReports` condition: true with `message` when every report is written,
/// false with `reason` when the report API is missing or a write was refused.
pub fn policy_reports(
    status: &mut ResponsibilityPolicyStatus,
    previous: Option<&ResponsibilityPolicyStatus>,
    now: &Time,
    published: Result<String, (&str, String)>,
) {
    let mut conditions = Conditions::new(previous, status.observed_generation, now);
    match published {
        Ok(message) => conditions.set(POLICY_REPORTS, true, "Published", message),
        Err((reason, message)) => conditions.set(POLICY_REPORTS, false, reason, message),
    }
    status.conditions.retain(|c| c.type_ != POLICY_REPORTS);
    status.conditions.append(&mut conditions.out);
}

/// Type of the condition of an Audit policy with `admission: Warn` (on an install that
/// generates admission policies): whether the ValidatingAdmissionPolicies that warn for it are
/// in place. An Enforce policy says the same in `Enforced`.
pub const WARNED: &str = "Warned";

/// Sets `Warned` from the policy's controls (their `admission`, already set) and the writes
/// for it the API server (or onus: `TooLarge`, `NotOurs`) refused, each a line naming the
/// control, the action and the reason: false with reason `RemediationFailed` while any is
/// refused, as `Enforced` says it for an Enforce policy; true naming the controls warned at
/// admission otherwise.
pub fn warned(
    status: &mut ResponsibilityPolicyStatus,
    previous: Option<&ResponsibilityPolicyStatus>,
    now: &Time,
    refused: &[String],
) {
    let mut conditions = Conditions::new(previous, status.observed_generation, now);
    let ids: Vec<&str> = status
        .controls
        .iter()
        .filter(|c| c.admission == Some(crate::crd::AdmissionAction::Warn))
        .map(|c| c.id.as_str())
        .collect();
    if !refused.is_empty() {
        conditions.set(WARNED, false, REMEDIATION_FAILED, refused_message(refused));
    } else if ids.is_empty() {
        conditions.set(
            WARNED,
            false,
            "Pending",
            "no generated ValidatingAdmissionPolicy warns for this policy yet".into(),
        );
    } else {
        conditions.set(
            WARNED,
            true,
            "InPlace",
            format!(
                "the API server warns at admission (validationActions Warn, Audit) for {}",
                ids.join(", ")
            ),
        );
    }
    status.conditions.retain(|c| c.type_ != WARNED);
    status.conditions.append(&mut conditions.out);
}

/// A condition of a status, by type.
pub fn condition<'a>(status: &'a ResponsibilityPolicyStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        evaluate::evaluate,
        facts::NamespaceFact,
        index::{Index, Key},
    };

    fn time(s: &str) -> Time {
        Time(s.parse().expect("timestamp"))
    }

    fn evaluation(namespaces: usize) -> Evaluation {
        let mut index = Index::default();
        for i in 0..namespaces {
            index.namespaces.apply(
                Key::new(None, &format!("ns-{i:02}")),
                Some(NamespaceFact::default()),
            );
        }
        let spec =
            serde_json::from_value(serde_json::json!({"serviceModel": "PaaS"})).expect("spec");
        evaluate(&spec, &index, "2026-11-28T12:00:00Z".parse().expect("ts"))
    }

    #[test]
    fn undecodable_objects_make_a_status_not_ready_and_are_named() {
        let eval = evaluation(2);
        let now = time("2026-11-28T12:00:00Z");
        let mut status = audit_status(&eval, None, "2026-11-28T12:00:00Z");
        let before = status.clone();
        undecodable_objects(&mut status, None, &now, &[]);
        assert_eq!(status, before, "nothing undecodable: nothing said");
        let objects: Vec<String> = (0..7)
            .map(|i| format!("Pod ns-00/p{i}: invalid type"))
            .collect();
        undecodable_objects(&mut status, None, &now, &objects);
        let ready = condition(&status, READY).expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", UNDECODABLE)
        );
        assert!(
            ready.message.starts_with("7 object(s)"),
            "{}",
            ready.message
        );
        assert!(ready.message.contains("Pod ns-00/p4: invalid type"));
        assert!(
            !ready.message.contains("p5"),
            "five named: {}",
            ready.message
        );
        assert!(ready.message.contains("and 2 more"), "{}", ready.message);
        assert!(
            ready.message.contains("could not judge them as they are"),
            "one sentence, no runs of blanks: {}",
            ready.message
        );
        // Every control is still evaluated and listed.
        assert_eq!(status.controls, before.controls);
        // A refused watch is the wider blind spot: it keeps its reason.
        let mut forbidden = before.clone();
        let refused = [("Pod", "forbidden".to_string())].into();
        watches_refused(&mut forbidden, None, &now, &refused);
        let said = forbidden.clone();
        undecodable_objects(&mut forbidden, None, &now, &objects);
        assert_eq!(forbidden, said);
    }

    /// The status of an Audit policy at generation 1, evaluated at `at`.
    fn audit_status(
        eval: &Evaluation,
        previous: Option<&ResponsibilityPolicyStatus>,
        at: &str,
    ) -> ResponsibilityPolicyStatus {
        evaluated(
            eval,
            &Preview::default(),
            &[],
            &[],
            Mode::Audit,
            Some(1),
            previous,
            &time(at),
        )
    }

    #[test]
    fn an_audit_only_install_says_enforce_is_unavailable_and_keeps_the_evaluation() {
        let eval = evaluation(2);
        let preview = Preview {
            network_policies: 2,
            service_accounts: 1,
            ..Preview::default()
        };
        let at = time("2026-11-28T12:00:00Z");
        let enforce = evaluated(&eval, &preview, &[], &[], Mode::Enforce, Some(1), None, &at);
        let mut s = enforce.clone();
        enforce_unavailable(&mut s, None, &at);
        let c = condition(&s, ENFORCED).expect("Enforced");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", ENFORCE_UNAVAILABLE)
        );
        for part in [
            "--audit-only",
            "enforce.enabled=false",
            "patch namespaces or serviceaccounts",
            "create, patch or delete networkpolicies",
            "2 NetworkPolicies",
            "1 ServiceAccounts",
        ] {
            assert!(c.message.contains(part), "{part:?} not in {:?}", c.message);
        }
        assert_eq!(
            s.conditions.iter().filter(|c| c.type_ == ENFORCED).count(),
            1
        );
        // The evaluation is untouched; only the remediation counts become a dry run.
        assert_eq!(s.controls, enforce.controls);
        assert_eq!(s.summary, enforce.summary);
        for t in [READY, COMPLIANT, RESPONSIBILITY_GAP] {
            assert_eq!(condition(&s, t), condition(&enforce, t));
        }
        let r = s.remediation.as_ref().expect("remediation");
        assert_eq!(
            (r.kind, r.network_policies),
            (RemediationKind::WouldApply, 2)
        );
        // Steady: the same inputs give the same status (no status write).
        let mut again = enforce.clone();
        enforce_unavailable(&mut again, Some(&s), &time("2026-11-28T12:05:00Z"));
        assert_eq!(again, s);
    }

    #[test]
    fn a_refused_remediation_is_named_in_the_enforced_condition() {
        let refused = "NetworkPolicy locked/onus-default-deny: denied by no-netpol".to_string();
        let s = evaluated(
            &evaluation(0),
            &Preview::default(),
            &[],
            std::slice::from_ref(&refused),
            Mode::Enforce,
            Some(1),
            None,
            &time("2026-11-28T12:00:00Z"),
        );
        let c = condition(&s, ENFORCED).expect("Enforced");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "RemediationFailed")
        );
        assert!(c.message.contains(&refused), "{}", c.message);
    }

    /// An Audit policy with `admission: Warn`: a refused warning says so in `Warned` (as a
    /// refusal of an Enforce policy does in `Enforced`), never only in an Event.
    #[test]
    fn a_refused_warning_of_an_audit_policy_is_named_in_the_warned_condition() {
        let eval = evaluation(1);
        let at = "2026-11-28T12:00:00Z";
        let mut s = audit_status(&eval, None, at);
        assert!(condition(&s, WARNED).is_none(), "only set when asked for");
        assert!(condition(&s, ENFORCED).is_none());
        let refused = "IAM-01 admission (Warn) failed, reason TooLarge: ValidatingAdmissionPolicy \
                       onus-iam-01-warn: not written"
            .to_string();
        warned(
            &mut s,
            None,
            &time(at),
            &[refused.clone(), refused.replace("IAM-01", "IAM-02")],
        );
        let c = condition(&s, WARNED).expect("Warned");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", REMEDIATION_FAILED)
        );
        assert!(
            c.message.starts_with("2 remediations refused (retrying): ")
                && c.message.contains(&refused),
            "{}",
            c.message
        );
        // The same shape as Enforced's.
        let enforce = evaluated(
            &eval,
            &Preview::default(),
            &[],
            std::slice::from_ref(&refused),
            Mode::Enforce,
            Some(1),
            None,
            &time(at),
        );
        let e = condition(&enforce, ENFORCED).expect("Enforced");
        let mut one = audit_status(&eval, None, at);
        warned(&mut one, None, &time(at), std::slice::from_ref(&refused));
        let w = condition(&one, WARNED).expect("Warned");
        assert_eq!((&w.reason, &w.message), (&e.reason, &e.message));

        // In place: true, naming the controls warned; set again, one condition of the type.
        let mut ok = audit_status(&eval, Some(&s), "2026-11-28T12:05:00Z");
        for c in &mut ok.controls {
            if c.id == "DAT-01" || c.id == "IAM-07" {
                c.admission = Some(crate::crd::AdmissionAction::Warn);
            }
        }
        warned(&mut ok, Some(&s), &time("2026-11-28T12:05:00Z"), &[]);
        warned(&mut ok, Some(&s), &time("2026-11-28T12:05:00Z"), &[]);
        assert_eq!(
            ok.conditions.iter().filter(|c| c.type_ == WARNED).count(),
            1
        );
        let c = condition(&ok, WARNED).expect("Warned");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "InPlace"));
        assert!(c.message.ends_with("for IAM-07, DAT-01"), "{}", c.message);
    }

    #[test]
    fn a_waiting_level_names_the_level_in_place_and_what_it_waits_for() {
        let w = NamespaceWaiting {
            namespace: "shop".into(),
            enforced: Some("baseline".into()),
            waiting: crate::remediate::Waiting {
                level: crate::crd::PodSecurityLevel::Restricted,
                objects: vec!["Deployment/shop/rootapp".into()],
            },
        };
        assert_eq!(
            waiting_message(&w),
            "enforce=baseline in shop; restricted waits for 1 workload (Deployment/shop/rootapp)"
        );
    }

    #[test]
    fn a_waiting_label_names_the_exception_that_holds_it_and_how_to_proceed() {
        let w = NamespaceWaiting {
            namespace: "shop".into(),
            enforced: Some("baseline".into()),
            waiting: crate::remediate::Waiting {
                level: crate::crd::PodSecurityLevel::Restricted,
                objects: vec![
                    "Deployment/shop/rootapp".into(),
                    "Deployment/shop/web".into(),
                ],
            },
        };
        let exceptions: Vec<Exception> = serde_json::from_value(serde_json::json!([
            {"controls": ["NET-01"], "reason": "other family"},
            {"controls": ["WKL-03"], "namespaces": ["lab"], "reason": "other namespace"},
            {"controls": ["WKL-03", "WKL-07"], "namespaces": ["shop"],
             "resources": [{"kind": "deployment", "name": "rootapp"}], "reason": "legacy"},
            {"controls": ["WKL-07"], "reason": "expired", "expires": "2026-01-01T00:00:00Z"},
        ]))
        .expect("exceptions");
        let now = time("2026-11-28T12:00:00Z");
        assert_eq!(
            blocking_exceptions(&w, &exceptions, &now),
            ["spec.exceptions[2] (WKL-03, WKL-07) covers Deployment/shop/rootapp"]
        );
        let message = waiting_message_for(&w, &exceptions, &now);
        assert!(message.starts_with(&waiting_message(&w)), "{message}");
        assert!(message.contains("forceEnforce"), "{message}");
        assert!(message.contains("spec.excludedNamespaces"), "{message}");
        // No exception covers anything: the plain message.
        assert_eq!(
            waiting_message_for(&w, &exceptions[..2], &now),
            waiting_message(&w)
        );
    }

    fn enforce_status(preview: &Preview) -> ResponsibilityPolicyStatus {
        evaluated(
            &evaluation(0),
            preview,
            &[],
            &[],
            Mode::Enforce,
            Some(1),
            None,
            &time("2026-11-28T12:00:00Z"),
        )
    }

    #[test]
    fn a_held_default_deny_is_named_in_status_with_what_it_waits_for() {
        let preview = Preview {
            deny_waiting: vec![DenyWaiting {
                namespace: "cert-manager".into(),
                reasons: vec!["backs webhook cert-manager-webhook".into()],
                waits: true,
                kept: false,
            }],
            ..Preview::default()
        };
        let s = enforce_status(&preview);
        let remediation = s.remediation.as_ref().expect("remediation");
        assert_eq!(
            remediation.network_policy_waiting,
            ["NetworkPolicy waits in cert-manager: backs webhook cert-manager-webhook"]
        );
        let enforced = condition(&s, ENFORCED).expect("Enforced");
        assert_eq!(
            (enforced.status.as_str(), enforced.reason.as_str()),
            ("False", "EnforceWaiting")
        );
        assert!(
            enforced
                .message
                .contains("allowDefaultDenyInFrontOfWebhooks"),
            "{}",
            enforced.message
        );
        let front = condition(&s, DEFAULT_DENY_IN_FRONT_OF_BACKENDS).expect("condition");
        assert_eq!(front.status, "False");
    }

    #[test]
    fn a_kept_default_deny_in_front_of_a_webhook_raises_a_warning_condition() {
        let preview = Preview {
            deny_waiting: vec![DenyWaiting {
                namespace: "cert-manager".into(),
                reasons: vec!["backs webhook cert-manager-webhook".into()],
                waits: false,
                kept: true,
            }],
            ..Preview::default()
        };
        let s = enforce_status(&preview);
        assert_eq!(
            condition(&s, ENFORCED).map(|c| c.status.as_str()),
            Some("True")
        );
        let front = condition(&s, DEFAULT_DENY_IN_FRONT_OF_BACKENDS).expect("condition");
        assert_eq!(
            (front.status.as_str(), front.reason.as_str()),
            ("True", "KeptInFrontOfBackends")
        );
        assert!(
            front.message.starts_with(
                "onus-default-deny in cert-manager stays in front of webhook cert-manager-webhook;"
            ),
            "{}",
            front.message
        );
    }

    #[test]
    fn the_same_evaluation_later_gives_the_same_status() {
        let eval = evaluation(2);
        let first = audit_status(&eval, None, "2026-11-28T12:00:00Z");
        let again = audit_status(&eval, Some(&first), "2026-11-28T13:00:00Z");
        assert_eq!(first, again);
    }

    #[test]
    fn a_condition_that_flips_gets_a_new_transition_time() {
        let failing = audit_status(&evaluation(1), None, "2026-11-28T12:00:00Z");
        let passing = audit_status(&evaluation(0), Some(&failing), "2026-11-28T13:00:00Z");
        let compliant = condition(&passing, COMPLIANT).expect("Compliant");
        assert_eq!(compliant.status, "True");
        assert_eq!(compliant.last_transition_time, time("2026-11-28T13:00:00Z"));
        let ready = condition(&passing, READY).expect("Ready");
        assert_eq!(ready.last_transition_time, time("2026-11-28T12:00:00Z"));
    }

    #[test]
    fn examples_are_capped_while_counts_stay_exact() {
        let s = audit_status(&evaluation(25), None, "2026-11-28T12:00:00Z");
        let net01 = s
            .controls
            .iter()
            .find(|c| c.id == "NET-01")
            .expect("NET-01");
        assert_eq!(net01.violations, 25);
        assert_eq!(net01.examples.len(), MAX_EXAMPLES);
    }

    #[test]
    fn an_invalid_spec_is_not_ready_and_names_the_field() {
        let s = invalid(
            "spec.exceptions[0].controls[0]: unknown control",
            Some(2),
            None,
            &time("2026-11-28T12:00:00Z"),
        );
        let ready = condition(&s, READY).expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidSpec")
        );
        assert!(ready.message.starts_with("spec.exceptions[0]"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 24,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Status stays under a fixed size whatever the cluster: any number of namespaces with
        /// names of any length Kubernetes allows (63), each failing several controls.
        #[test]
        fn status_size_is_bounded_whatever_the_cluster(
            count in 0usize..600,
            length in 1usize..=63,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let mut index = Index::default();
            for i in 0..count {
                let tag = format!("{seed:x}{i:x}");
                let name: String = tag.chars().cycle().take(length.max(tag.len())).collect();
                let name = &name[name.len().saturating_sub(length).min(name.len() - 1)..];
                index.namespaces.apply(
                    Key::new(None, &format!("{name}{i}")),
                    Some(NamespaceFact::default()),
                );
            }
            let spec =
                serde_json::from_value(serde_json::json!({"serviceModel": "PaaS"})).expect("spec");
            let eval = evaluate(&spec, &index, "2026-11-28T12:00:00Z".parse().expect("ts"));
            let s = audit_status(&eval, None, "2026-11-28T12:00:00Z");
            let bytes = serde_json::to_vec(&s).expect("json").len();
            proptest::prop_assert!(bytes < 64 * 1024, "{} namespaces: status is {} bytes", count, bytes);
        }
    }

    #[test]
    fn a_huge_cluster_still_has_a_small_status() {
        let s = audit_status(&evaluation(20_000), None, "2026-11-28T12:00:00Z");
        assert_eq!(s.summary.as_ref().map(|s| s.violations), Some(4 * 20_000));
        let bytes = serde_json::to_vec(&s).expect("json").len();
        assert!(bytes < 16 * 1024, "status is {bytes} bytes");
    }
}
