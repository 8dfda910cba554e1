use std::time::Duration;

use jiff::Timestamp;
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

/// A point on the candidate's monotonic clock, `seconds` after an arbitrary origin.
fn local(origin: Instant, seconds: u64) -> Instant {
    origin + Duration::from_secs(seconds)
}

#[test]
fn absent_lease_is_acquired() {
    let t = Instant::now();
    assert_eq!(decide(None, "a", t, t), Decision::Acquire);
}

#[test]
fn own_lease_is_renewed_even_when_expired() {
    let t = Instant::now();
    let spec = held("a", 0, 15);
    assert_eq!(decide(Some(&spec), "a", t, local(t, 5)), Decision::Renew);
    assert_eq!(decide(Some(&spec), "a", t, local(t, 60)), Decision::Renew);
}

#[test]
fn live_lease_of_another_is_followed() {
    let t = Instant::now();
    assert_eq!(
        decide(Some(&held("b", 0, 15)), "a", t, local(t, 15)),
        Decision::Follow { holder: "b".into() }
    );
}

#[test]
fn lease_of_another_unchanged_for_its_duration_is_acquired() {
    let t = Instant::now();
    assert_eq!(
        decide(Some(&held("b", 0, 15)), "a", t, local(t, 16)),
        Decision::Acquire
    );
}

#[test]
fn released_lease_is_acquired_at_once() {
    let t = Instant::now();
    let spec = released(&held("b", 10, 15), at(10));
    assert_eq!(decide(Some(&spec), "a", t, t), Decision::Acquire);
}

#[test]
fn lease_expires_strictly_after_its_duration_unchanged() {
    let t = Instant::now();
    let spec = held("b", 100, 15);
    assert!(!is_expired(&spec, t, local(t, 15)));
    assert!(is_expired(
        &spec,
        t,
        local(t, 15) + Duration::from_millis(1)
    ));
}

#[test]
fn lease_without_duration_is_expired() {
    let t = Instant::now();
    let no_duration = LeaseSpec {
        lease_duration_seconds: None,
        ..held("b", 0, 15)
    };
    assert!(is_expired(&no_duration, t, t));
    let zero = LeaseSpec {
        lease_duration_seconds: Some(0),
        ..held("b", 0, 15)
    };
    assert!(is_expired(&zero, t, t));
}

#[test]
fn lease_without_renew_time_is_judged_by_when_it_was_seen() {
    let t = Instant::now();
    let no_times = LeaseSpec {
        holder_identity: Some("b".into()),
        lease_duration_seconds: Some(15),
        ..LeaseSpec::default()
    };
    assert!(!is_expired(&no_times, t, local(t, 15)));
    assert!(is_expired(&no_times, t, local(t, 16)));
}

#[test]
fn an_unchanged_lease_keeps_its_first_observation_time() {
    let t = Instant::now();
    let first = Observation::next(None, Some(&held("b", 0, 15)), t);
    let again = Observation::next(Some(&first), Some(&held("b", 0, 15)), local(t, 10));
    assert_eq!(again.since(), t);
}

#[test]
fn a_renewal_or_a_new_holder_restarts_the_observation() {
    let t = Instant::now();
    let first = Observation::next(None, Some(&held("b", 0, 15)), t);
    let renewed = Observation::next(Some(&first), Some(&held("b", 5, 15)), local(t, 5));
    assert_eq!(renewed.since(), local(t, 5));
    let taken = Observation::next(Some(&renewed), Some(&held("c", 5, 15)), local(t, 6));
    assert_eq!(taken.since(), local(t, 6));
    let gone = Observation::next(Some(&taken), None, local(t, 7));
    assert_eq!(gone.since(), local(t, 7));
}

/// Candidate "a" reads the Lease once a second while holder "b" renews it `renewals` times with
/// `renew_time(i)`, then stops; returns a's decision `after` seconds past the last renewal.
fn standby_decision(renewals: i64, renew_time: impl Fn(i64) -> i64, after: u64) -> Decision {
    let t = Instant::now();
    let mut observed: Option<Observation> = None;
    let mut last = t;
    for i in 0..renewals {
        let spec = held("b", renew_time(i), 15);
        let now = local(t, u64::try_from(i).expect("renewal index"));
        let next = Observation::next(observed.as_ref(), Some(&spec), now);
        assert_eq!(
            decide(Some(&spec), "a", next.since(), now),
            Decision::Follow { holder: "b".into() },
            "renewal {i}"
        );
        observed = Some(next);
        last = now;
    }
    let spec = held("b", renew_time(renewals - 1), 15);
    let now = last + Duration::from_secs(after);
    let next = Observation::next(observed.as_ref(), Some(&spec), now);
    decide(Some(&spec), "a", next.since(), now)
}

#[test]
fn a_holder_whose_clock_is_an_hour_behind_is_followed_while_it_renews() {
    // Its renewTime is always an hour old by the candidate's wall clock.
    let decision = standby_decision(60, |i| i - 3600, 1);
    assert_eq!(decision, Decision::Follow { holder: "b".into() });
}

#[test]
fn a_holder_whose_clock_is_an_hour_ahead_is_replaced_once_renewals_stop() {
    let ahead = |i| i + 3600;
    assert_eq!(
        standby_decision(5, ahead, 15),
        Decision::Follow { holder: "b".into() }
    );
    assert_eq!(standby_decision(5, ahead, 16), Decision::Acquire);
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

#[tokio::test]
async fn an_elected_leadership_follows_its_campaign() {
    let (campaign, leadership) = Leadership::elected();
    assert!(!leadership.is_leading());
    assert_eq!(
        leadership.run(async { 1 }).await,
        None,
        "a standby ran a write"
    );
    campaign.lead();
    assert!(leadership.is_leading());
    assert_eq!(leadership.run(async { 1 }).await, Some(1));
    // `lost` completes at once while not leading, `gained` while leading.
    tokio::time::timeout(Duration::from_secs(1), leadership.gained(None))
        .await
        .expect("gained while leading");
    campaign.stand_by();
    tokio::time::timeout(Duration::from_secs(1), leadership.lost(None))
        .await
        .expect("lost while not leading");
}

#[tokio::test]
async fn a_write_in_flight_is_dropped_when_leadership_is_lost() {
    let (campaign, leadership) = Leadership::elected();
    campaign.lead();
    let (sent, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let write = {
        let leadership = leadership.clone();
        tokio::spawn(async move {
            leadership
                .run(async move {
                    sent.send(()).expect("send");
                    std::future::pending::<()>().await;
                })
                .await
        })
    };
    sent_rx.recv().await.expect("the write started");
    campaign.stand_by();
    let outcome = tokio::time::timeout(Duration::from_secs(1), write)
        .await
        .expect("the write was dropped at once")
        .expect("task");
    assert_eq!(outcome, None);
}

#[tokio::test]
async fn a_leadership_whose_campaign_is_gone_does_not_lead() {
    let (campaign, leadership) = Leadership::elected();
    campaign.lead();
    drop(campaign);
    assert!(!leadership.is_leading(), "fails closed");
    assert_eq!(leadership.run(async { 1 }).await, None);
    tokio::time::timeout(Duration::from_secs(1), leadership.lost(None))
        .await
        .expect("lost");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), leadership.gained(None))
            .await
            .is_err(),
        "gained without a campaign"
    );
}

#[tokio::test]
async fn an_unelected_leadership_always_leads() {
    let leadership = Leadership::unelected();
    assert!(leadership.is_leading());
    assert_eq!(leadership.clone().run(async { 2 }).await, Some(2));
}

#[tokio::test]
async fn a_write_of_an_ended_term_is_dropped_even_when_a_new_term_began_meanwhile() {
    let (campaign, leadership) = Leadership::elected();
    campaign.lead();
    let (sent, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let write = {
        let leadership = leadership.clone();
        tokio::spawn(async move {
            leadership
                .run(async move {
                    sent.send(()).expect("send");
                    std::future::pending::<()>().await;
                })
                .await
        })
    };
    sent_rx.recv().await.expect("the write started");
    // Lost and won again before the writing task looks: still another term.
    campaign.stand_by();
    campaign.lead();
    let outcome = tokio::time::timeout(Duration::from_secs(1), write)
        .await
        .expect("the write was dropped")
        .expect("task");
    assert_eq!(outcome, None);
    let first = leadership.gained(None).await;
    tokio::time::timeout(Duration::from_secs(1), leadership.lost(Some(first - 1)))
        .await
        .expect("an earlier term has ended");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), leadership.gained(Some(first)))
            .await
            .is_err(),
        "no term after the current one yet"
    );
}
