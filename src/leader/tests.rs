use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{api::coordination::v1::LeaseSpec, apimachinery::pkg::apis::meta::v1::MicroTime};

use super::*;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).expect("timestamp")
}

/// A Lease held by `holder`, renewed at second `renewed` for `duration` seconds.
fn held(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(holder.into()),
        acquire_time: Some(MicroTime(at(0))),
        renew_time: Some(MicroTime(at(renewed))),
        lease_duration_seconds: Some(duration),
        lease_transitions: Some(3),
        ..LeaseSpec::default()
    }
}

#[test]
fn absent_lease_is_acquired() {
    assert_eq!(decide(None, "a", at(0)), Decision::Acquire);
}

#[test]
fn own_lease_is_renewed_even_when_expired() {
    assert_eq!(decide(Some(&held("a", 0, 15)), "a", at(5)), Decision::Renew);
    assert_eq!(
        decide(Some(&held("a", 0, 15)), "a", at(60)),
        Decision::Renew
    );
}

#[test]
fn live_lease_of_another_is_followed() {
    assert_eq!(
        decide(Some(&held("b", 0, 15)), "a", at(15)),
        Decision::Follow { holder: "b".into() }
    );
}

#[test]
fn expired_lease_of_another_is_acquired() {
    assert_eq!(
        decide(Some(&held("b", 0, 15)), "a", at(16)),
        Decision::Acquire
    );
}

#[test]
fn released_lease_is_acquired_at_once() {
    let spec = released(&held("b", 10, 15), at(10));
    assert_eq!(decide(Some(&spec), "a", at(10)), Decision::Acquire);
}

#[test]
fn lease_expires_strictly_after_renew_time_plus_duration() {
    let spec = held("b", 100, 15);
    assert!(!is_expired(&spec, at(115)));
    assert!(is_expired(&spec, at(115) + SignedDuration::from_millis(1)));
}

#[test]
fn lease_without_renew_time_or_duration_is_expired() {
    let no_times = LeaseSpec {
        holder_identity: Some("b".into()),
        lease_duration_seconds: Some(15),
        ..LeaseSpec::default()
    };
    assert!(is_expired(&no_times, at(0)));
    let no_duration = LeaseSpec {
        lease_duration_seconds: None,
        ..held("b", 0, 15)
    };
    assert!(is_expired(&no_duration, at(0)));
}

#[test]
fn acquiring_from_another_holder_counts_a_transition() {
    let spec = claimed(
        Some(&held("b", 0, 15)),
        "a",
        Duration::from_secs(15),
        at(20),
    );
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.acquire_time, Some(MicroTime(at(20))));
    assert_eq!(spec.renew_time, Some(MicroTime(at(20))));
    assert_eq!(spec.lease_duration_seconds, Some(15));
    assert_eq!(spec.lease_transitions, Some(4));
}

#[test]
fn renewing_keeps_acquire_time_and_transitions() {
    let spec = claimed(
        Some(&held("a", 5, 15)),
        "a",
        Duration::from_secs(15),
        at(10),
    );
    assert_eq!(spec.acquire_time, Some(MicroTime(at(0))));
    assert_eq!(spec.renew_time, Some(MicroTime(at(10))));
    assert_eq!(spec.lease_transitions, Some(3));
}

#[test]
fn first_acquisition_starts_at_zero_transitions() {
    let spec = claimed(None, "a", Duration::from_secs(3), at(0));
    assert_eq!(spec.lease_transitions, Some(0));
    assert_eq!(spec.lease_duration_seconds, Some(3));
}

#[test]
fn released_lease_has_no_holder() {
    let spec = released(&held("a", 5, 15), at(9));
    assert_eq!(spec.holder_identity, None);
    assert_eq!(spec.lease_transitions, Some(3));
}

#[test]
fn grace_is_the_time_between_giving_up_and_expiry() {
    let config = LeaseConfig::new("l", "ns", "a");
    assert_eq!(config.grace(), Duration::from_secs(5));
}
