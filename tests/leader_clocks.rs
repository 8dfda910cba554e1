//! Leader election between candidates whose wall clocks disagree, against the real API server:
//! a standby judges the holder by whether the Lease keeps changing, on its own monotonic clock,
//! never by comparing the holder's `renewTime` with its own wall clock.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use onus::{
    http::Readiness,
    leader::{Leadership, LeaseConfig, campaign},
    metrics::Metrics,
};
use tokio::task::JoinHandle;

const LEASE: &str = "onus-leader";
const LEASE_DURATION: Duration = Duration::from_secs(3);
const RENEW_INTERVAL: Duration = Duration::from_secs(1);
/// The most a renewal's read and write take here, even under a parallel test suite's load
/// (CI once saw the takeover 3.4 ms inside the bound without it).
const ROUND_TRIP: Duration = Duration::from_millis(300);
const HOUR: SignedDuration = SignedDuration::from_hours(1);

/// An in-process candidate whose wall clock is `skew` off.
struct Candidate {
    leadership: Leadership,
    task: JoinHandle<()>,
}

impl Candidate {
    fn start(client: &Client, namespace: &str, identity: &str, skew: SignedDuration) -> Self {
        let mut config = LeaseConfig::new(LEASE, namespace, identity).timing(
            LEASE_DURATION,
            Duration::from_secs(2),
            RENEW_INTERVAL,
            Duration::from_millis(500),
        );
        config.clock = Arc::new(move || Timestamp::now() + skew);
        let (sender, leadership) = Leadership::elected();
        let task = tokio::spawn(campaign(
            client.clone(),
            config,
            Metrics::new(),
            Readiness::new(),
            std::future::pending(),
            sender,
        ));
        Candidate { leadership, task }
    }

    fn is_leading(&self) -> bool {
        self.leadership.is_leading()
    }

    /// Waits until this candidate leads; panics after `within`.
    async fn wait_leading(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.is_leading() {
            assert!(Instant::now() < deadline, "not leading after {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Candidate {
    /// Dies without releasing the Lease, like a crashed or partitioned process.
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn renew_time(client: &Client, namespace: &str) -> Timestamp {
    Api::<Lease>::namespaced(client.clone(), namespace)
        .get(LEASE)
        .await
        .expect("get lease")
        .spec
        .and_then(|s| s.renew_time)
        .expect("renewTime")
        .0
}

async fn setup(prefix: &str) -> (Client, String) {
    let cp = onus_testenv::shared();
    let client = cp.client().await;
    let namespace = cp.namespace(&client, prefix, &[]).await;
    (client, namespace)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_holder_whose_clock_is_behind_keeps_leading_while_it_renews() {
    let (client, ns) = setup("skew-behind").await;
    let holder = Candidate::start(&client, &ns, "behind", -HOUR);
    holder.wait_leading(Duration::from_secs(10)).await;
    let stamped = renew_time(&client, &ns).await;
    assert!(
        stamped < Timestamp::now() - SignedDuration::from_mins(50),
        "the holder's renewTime {stamped} is not an hour behind"
    );

    let standby = Candidate::start(&client, &ns, "on-time", SignedDuration::ZERO);
    // Well past the Lease duration, with renewals every second: the standby must stay one.
    let until = Instant::now() + 3 * LEASE_DURATION;
    while Instant::now() < until {
        assert!(
            !standby.is_leading(),
            "took over a Lease that is being renewed"
        );
        assert!(holder.is_leading(), "the renewing holder lost the Lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_holder_whose_clock_is_ahead_is_replaced_a_lease_duration_after_it_dies() {
    let (client, ns) = setup("skew-ahead").await;
    let holder = Candidate::start(&client, &ns, "ahead", HOUR);
    holder.wait_leading(Duration::from_secs(10)).await;
    let standby = Candidate::start(&client, &ns, "on-time", SignedDuration::ZERO);
    // The standby sees a few renewals (each stamped an hour ahead) before the holder dies.
    tokio::time::sleep(2 * RENEW_INTERVAL).await;
    assert!(!standby.is_leading(), "took over a live Lease");
    let stamped = renew_time(&client, &ns).await;
    assert!(
        stamped > Timestamp::now() + SignedDuration::from_mins(50),
        "the holder's renewTime {stamped} is not an hour ahead"
    );

    let died = Instant::now();
    drop(holder);
    standby.wait_leading(3 * LEASE_DURATION).await;
    // Its last renewal landed at most one renew interval, plus that renewal's own round trip
    // (read and write), before it died; ROUND_TRIP bounds the round trip on a loaded machine.
    // Taking over on the first look after the death (a retry interval), or judging the Lease by
    // its hour-ahead renewTime, fails this or the wait above.
    let after = died.elapsed();
    assert!(
        after + RENEW_INTERVAL + ROUND_TRIP >= LEASE_DURATION,
        "took over {after:?} after the holder died: before the Lease could have expired"
    );
}
