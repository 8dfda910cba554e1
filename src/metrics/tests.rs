use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::crd::ResponsibilityPolicySpec;

/// A status literal: Compliant condition, summary violations and (control, owner, violations).
fn status(compliant: bool, controls: &[(&str, &str, u64)]) -> ResponsibilityPolicyStatus {
    let violations: u64 = controls.iter().map(|c| c.2).sum();
    let controls: Vec<_> = controls
        .iter()
        .map(|(id, owner, n)| {
            json!({"id": id, "title": "t", "family": "f", "owner": owner,
                   "ownerSource": "ServiceModel", "result": if *n > 0 { "Fail" } else { "Pass" },
                   "violations": n})
        })
        .collect();
    serde_json::from_value(json!({
        "conditions": [{"type": "Compliant", "status": if compliant { "True" } else { "False" },
                        "reason": "r", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "summary": {"namespaces": 1, "controls": 2, "customerOwned": 2, "passing": 1,
                    "failing": 1, "violations": violations, "excepted": 0},
        "controls": controls,
    }))
    .expect("status literal")
}

/// The sample lines of the exposition (no `#` comments).
fn samples(metrics: &Metrics) -> Vec<String> {
    metrics
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(String::from)
        .collect()
}

fn has(metrics: &Metrics, line: &str) -> bool {
    samples(metrics).iter().any(|l| l == line)
}

#[test]
fn recorded_policy_renders_with_its_labels_and_values() {
    let metrics = Metrics::new();
    metrics.record_policy(
        "prod",
        &status(
            false,
            &[("NET-01", "Customer", 3), ("NET-04", "Provider", 0)],
        ),
        2,
    );
    let text = metrics.render();
    assert!(
        has(&metrics, r#"onus_policy_compliant{policy="prod"} 0"#),
        "{text}"
    );
    assert!(
        has(&metrics, r#"onus_policy_violations{policy="prod"} 3"#),
        "{text}"
    );
    assert!(
        has(
            &metrics,
            r#"onus_exceptions_expiring_soon{policy="prod"} 2"#
        ),
        "{text}"
    );
    assert!(
        has(
            &metrics,
            r#"onus_control_violations{policy="prod",control="NET-01",owner="Customer"} 3"#
        ),
        "{text}"
    );
    assert!(
        has(
            &metrics,
            r#"onus_control_violations{policy="prod",control="NET-04",owner="Provider"} 0"#
        ),
        "{text}"
    );
}

#[test]
fn compliant_policy_renders_one() {
    let metrics = Metrics::new();
    metrics.record_policy("prod", &status(true, &[("NET-01", "Customer", 0)]), 0);
    assert!(has(&metrics, r#"onus_policy_compliant{policy="prod"} 1"#));
}

#[test]
fn forget_removes_every_series_of_the_policy_only() {
    let metrics = Metrics::new();
    metrics.record_policy("gone", &status(false, &[("NET-01", "Customer", 3)]), 1);
    metrics.record_policy("kept", &status(true, &[("NET-01", "Customer", 0)]), 0);
    metrics.forget_policy("gone");
    let samples = samples(&metrics);
    assert!(
        !samples.iter().any(|l| l.contains(r#"policy="gone""#)),
        "{samples:#?}"
    );
    assert!(
        samples.iter().any(|l| l.contains(r#"policy="kept""#)),
        "{samples:#?}"
    );
}

#[test]
fn control_whose_owner_changed_loses_its_old_series() {
    let metrics = Metrics::new();
    metrics.record_policy("prod", &status(false, &[("NET-04", "Customer", 2)]), 0);
    metrics.record_policy("prod", &status(true, &[("NET-04", "Provider", 0)]), 0);
    assert!(!has(
        &metrics,
        r#"onus_control_violations{policy="prod",control="NET-04",owner="Customer"} 2"#
    ));
    assert!(has(
        &metrics,
        r#"onus_control_violations{policy="prod",control="NET-04",owner="Provider"} 0"#
    ));
}

#[test]
fn invalid_policy_without_summary_is_not_compliant() {
    let metrics = Metrics::new();
    metrics.record_policy("bad", &ResponsibilityPolicyStatus::default(), 0);
    assert!(has(&metrics, r#"onus_policy_compliant{policy="bad"} 0"#));
    assert!(has(&metrics, r#"onus_policy_violations{policy="bad"} 0"#));
}

#[test]
fn timer_counts_ok_only_when_marked_succeeded() {
    let metrics = Metrics::new();
    {
        let mut timer = metrics.reconcile_timer("prod");
        timer.succeeded();
    }
    {
        let _failed = metrics.reconcile_timer("prod");
    }
    metrics.reconcile_error("prod", "patch_status");
    assert!(has(
        &metrics,
        r#"onus_reconciliations_total{policy="prod",result="ok"} 1"#
    ));
    assert!(has(
        &metrics,
        r#"onus_reconciliations_total{policy="prod",result="error"} 1"#
    ));
    assert!(has(
        &metrics,
        r#"onus_reconcile_errors_total{policy="prod",category="patch_status"} 1"#
    ));
    assert!(has(
        &metrics,
        r#"onus_reconcile_duration_seconds_count{policy="prod"} 2"#
    ));
}

#[test]
fn a_deleted_policy_leaves_no_reconciliation_series() {
    let metrics = Metrics::new();
    for policy in ["gone", "kept"] {
        metrics.reconcile_timer(policy).succeeded();
        metrics.reconcile_error(policy, "patch_status");
        metrics.detection_latency(policy, Duration::from_millis(100));
    }
    metrics.forget_policy("gone");
    let text = metrics.render();
    assert!(!text.contains(r#"policy="gone""#), "{text}");
    for series in [
        r#"onus_reconciliations_total{policy="kept",result="ok"} 1"#,
        r#"onus_reconcile_errors_total{policy="kept",category="patch_status"} 1"#,
        r#"onus_reconcile_duration_seconds_count{policy="kept"} 1"#,
        r#"onus_detection_latency_seconds_count{policy="kept"} 1"#,
    ] {
        assert!(has(&metrics, series), "{series} missing from\n{text}");
    }
}

#[test]
fn watch_events_detection_latency_and_leader_render() {
    let metrics = Metrics::new();
    metrics.watch_event("Pod");
    metrics.watch_event("Pod");
    metrics.detection_latency("prod", Duration::from_millis(250));
    metrics.set_leader(true);
    assert!(has(&metrics, r#"onus_watch_events_total{kind="Pod"} 2"#));
    assert!(has(
        &metrics,
        r#"onus_detection_latency_seconds_count{policy="prod"} 1"#
    ));
    assert!(has(
        &metrics,
        r#"onus_detection_latency_seconds_sum{policy="prod"} 0.25"#
    ));
    assert!(has(&metrics, "onus_leader 1"));
    metrics.set_leader(false);
    assert!(has(&metrics, "onus_leader 0"));
}

#[test]
fn build_info_carries_the_crate_version() {
    let metrics = Metrics::new();
    let line = format!(
        r#"onus_build_info{{version="{}"}} 1"#,
        env!("CARGO_PKG_VERSION")
    );
    assert!(has(&metrics, &line), "{}", metrics.render());
}

#[test]
fn exposition_ends_with_eof_marker() {
    assert!(Metrics::new().render().ends_with("# EOF\n"));
}

fn spec_with_expiries(expiries: &[&str]) -> ResponsibilityPolicySpec {
    let exceptions: Vec<_> = expiries
        .iter()
        .map(|t| json!({"controls": ["WKL-03"], "reason": "r", "expires": t}))
        .collect();
    serde_json::from_value(json!({"serviceModel": "PaaS", "exceptions": exceptions}))
        .expect("spec literal")
}

#[test]
fn expiring_soon_counts_future_expiries_within_seven_days() {
    let now: Timestamp = "2026-03-01T00:00:00Z".parse().expect("time");
    let spec = spec_with_expiries(&[
        "2026-02-28T00:00:00Z", // already expired
        "2026-03-02T00:00:00Z", // in a day
        "2026-03-08T00:00:00Z", // exactly seven days
        "2026-03-09T00:00:00Z", // beyond
    ]);
    assert_eq!(expiring_soon(&spec, now), 2);
}

#[test]
fn exceptions_without_expiry_never_expire_soon() {
    let mut spec = spec_with_expiries(&[]);
    spec.exceptions = serde_json::from_value(json!([{"controls": ["WKL-03"], "reason": "r"}]))
        .expect("exceptions");
    assert_eq!(expiring_soon(&spec, Timestamp::now()), 0);
}

#[test]
fn a_control_result_is_one_series_that_moves_with_the_result() {
    let metrics = Metrics::new();
    metrics.record_policy("prod", &status(false, &[("NET-01", "Customer", 2)]), 0);
    assert!(has(
        &metrics,
        r#"onus_control_result{policy="prod",control="NET-01",owner="Customer",result="Fail"} 1"#
    ));
    metrics.record_policy("prod", &status(true, &[("NET-01", "Customer", 0)]), 0);
    let samples = samples(&metrics);
    let results: Vec<_> = samples
        .iter()
        .filter(|l| l.starts_with("onus_control_result{"))
        .collect();
    assert_eq!(
        results,
        [r#"onus_control_result{policy="prod",control="NET-01",owner="Customer",result="Pass"} 1"#],
    );
    metrics.forget_policy("prod");
    assert!(!metrics.render().contains("onus_control_result{"));
}

/// A status with only the given conditions (type, status).
fn with_conditions(conditions: &[(&str, &str)]) -> ResponsibilityPolicyStatus {
    let conditions: Vec<_> = conditions
        .iter()
        .map(|(t, s)| {
            json!({"type": t, "status": s, "reason": "r", "message": "",
                   "lastTransitionTime": "2026-01-01T00:00:00Z"})
        })
        .collect();
    serde_json::from_value(json!({ "conditions": conditions })).expect("status literal")
}

#[test]
fn an_invalid_spec_and_a_responsibility_gap_have_their_own_gauges() {
    let metrics = Metrics::new();
    metrics.record_policy("bad", &with_conditions(&[("Ready", "False")]), 0);
    metrics.record_policy(
        "gap",
        &with_conditions(&[("Ready", "True"), ("ResponsibilityGap", "True")]),
        0,
    );
    for line in [
        r#"onus_policy_ready{policy="bad"} 0"#,
        r#"onus_policy_responsibility_gap{policy="bad"} 0"#,
        r#"onus_policy_ready{policy="gap"} 1"#,
        r#"onus_policy_responsibility_gap{policy="gap"} 1"#,
    ] {
        assert!(has(&metrics, line), "{line} missing:\n{}", metrics.render());
    }
    metrics.forget_policy("gap");
    assert!(!metrics.render().contains(r#"policy="gap""#));
}
