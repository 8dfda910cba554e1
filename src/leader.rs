//! Leader election on a `coordination.k8s.io/v1` Lease: one onus instance writes, the others
//! stand by and take over when the Lease is released or expires.
//!
//! Standbys are warm: every instance runs the watches and evaluates; only the holder of the
//! Lease writes (status, Events, remediations, finalizers), each write run through
//! [`Leadership::run`]. A new leader therefore writes correct status from caches it already
//! holds, without listing anything again.
//!
//! Every write is a create or a replace carrying the `resourceVersion` that was read, so of two
//! candidates racing for the same Lease the API server accepts exactly one. A leader that cannot
//! renew within `renew_deadline` stops writing before the Lease (valid for `lease_duration`
//! after its last renewal) can expire and be taken by another candidate.
//!
//! A candidate judges expiry by when *it* last saw the Lease change, on its own monotonic clock
//! (as client-go's leaderelection does): it takes another holder's Lease only after
//! `leaseDurationSeconds` without a change. The `renewTime` written by a holder whose wall clock
//! is off (behind, ahead, or stepped) therefore never decides a takeover; clocks only need to run
//! at about the same rate.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{Api, Client, api::PostParams};
use tokio::{
    sync::watch,
    time::{Instant, sleep_until, timeout, timeout_at},
};
use tracing::{debug, info, warn};

use crate::{http::Readiness, metrics::Metrics};

/// Where "now" comes from for the Lease timestamps this candidate writes (informational to
/// others: expiry is judged on each candidate's monotonic clock); injected so tests can skew it.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The default name of the leader Lease.
pub const DEFAULT_LEASE_NAME: &str = "onus-leader";

/// Which Lease to contend for, as whom, and how often.
#[derive(Clone)]
pub struct LeaseConfig {
    /// Name of the Lease object.
    pub name: String,
    /// Namespace of the Lease object.
    pub namespace: String,
    /// This candidate's identity (the pod name), written as `holderIdentity`.
    pub identity: String,
    /// How long a Lease stays valid after its last renewal.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long stops working (must be < `lease_duration`).
    pub renew_deadline: Duration,
    /// How often a leader renews.
    pub renew_interval: Duration,
    /// How often a standby retries, and a leader after a failed renewal.
    pub retry_interval: Duration,
    /// Source of the Lease timestamps this candidate writes.
    pub clock: Clock,
}

impl LeaseConfig {
    /// Production timing: a 15 s Lease renewed every 5 s, given up after 10 s without renewal,
    /// contended every 2 s.
    pub fn new(name: &str, namespace: &str, identity: &str) -> Self {
        LeaseConfig {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_interval: Duration::from_secs(5),
            retry_interval: Duration::from_secs(2),
            clock: Arc::new(Timestamp::now),
        }
    }

    /// Sets the timing (lease duration, renew deadline, renew interval, retry interval).
    pub fn timing(
        mut self,
        lease_duration: Duration,
        renew_deadline: Duration,
        renew_interval: Duration,
        retry_interval: Duration,
    ) -> Self {
        self.lease_duration = lease_duration;
        self.renew_deadline = renew_deadline;
        self.renew_interval = renew_interval;
        self.retry_interval = retry_interval;
        self
    }
}

/// What a candidate should do about the Lease as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// This candidate holds it: renew.
    Renew,
    /// Absent, released or expired: take it.
    Acquire,
    /// Another candidate holds a live Lease: stand by.
    Follow { holder: String },
}

/// The Lease as this candidate last read it, and since when (on this candidate's monotonic
/// clock) it has read it unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    spec: Option<LeaseSpec>,
    since: Instant,
}

impl Observation {
    /// The observation after reading `spec` at `now`: its time moves only when the spec changed
    /// (a renewal changes `renewTime`, a takeover the holder), so an unchanged Lease ages on this
    /// candidate's clock whatever time the holder wrote into it.
    pub fn next(previous: Option<&Observation>, spec: Option<&LeaseSpec>, now: Instant) -> Self {
        match previous {
            Some(seen) if seen.spec.as_ref() == spec => seen.clone(),
            _ => Observation {
                spec: spec.cloned(),
                since: now,
            },
        }
    }

    /// Since when the Lease has been seen unchanged.
    pub fn since(&self) -> Instant {
        self.since
    }
}

/// Decides from the Lease spec (None: no Lease yet) what candidate `identity` should do at
/// `now`, the spec having been seen unchanged since `unchanged_since`.
pub fn decide(
    spec: Option<&LeaseSpec>,
    identity: &str,
    unchanged_since: Instant,
    now: Instant,
) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => Decision::Acquire,
        Some(holder) if holder == identity => Decision::Renew,
        Some(_) if is_expired(spec, unchanged_since, now) => Decision::Acquire,
        Some(holder) => Decision::Follow {
            holder: holder.into(),
        },
    }
}

/// Whether `leaseDurationSeconds` have passed on this candidate's clock since it last saw the
/// Lease change. The holder's `renewTime` is not compared with anything: it was written by
/// another clock. A Lease without a duration cannot prove its holder alive and counts as expired.
pub fn is_expired(spec: &LeaseSpec, unchanged_since: Instant, now: Instant) -> bool {
    let Some(seconds) = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
    else {
        return true;
    };
    unchanged_since
        .checked_add(Duration::from_secs(seconds))
        .is_some_and(|valid_until| valid_until < now)
}

/// The spec that claims (acquires or renews) the Lease for `identity` at `now`.
pub fn claimed(
    previous: Option<&LeaseSpec>,
    identity: &str,
    lease_duration: Duration,
    now: Timestamp,
) -> LeaseSpec {
    let seconds = i32::try_from(lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let previous = previous.cloned().unwrap_or_default();
    let renewing = previous.holder_identity.as_deref() == Some(identity);
    LeaseSpec {
        holder_identity: Some(identity.into()),
        lease_duration_seconds: Some(seconds),
        renew_time: Some(MicroTime(now)),
        acquire_time: if renewing {
            previous.acquire_time.clone().or(Some(MicroTime(now)))
        } else {
            Some(MicroTime(now))
        },
        lease_transitions: match (renewing, previous.lease_transitions) {
            (true, n) => n.or(Some(0)),
            (false, None) if previous.holder_identity.is_none() => Some(0),
            (false, n) => Some(n.unwrap_or(0).saturating_add(1)),
        },
        ..previous
    }
}

/// The spec that hands the Lease back: no holder, so any candidate takes it at once.
pub fn released(previous: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        renew_time: Some(MicroTime(now)),
        ..previous.clone()
    }
}

/// Whether this instance leads, as [`campaign`] publishes it; everything that writes asks it
/// first. Cheap to clone; every clone follows the same campaign.
///
/// Leadership comes in terms, numbered from 1 (0: not leading), so a loss followed at once by a
/// new term is never mistaken for one unbroken term, however late a task looks.
///
/// Fail closed: once the campaign is gone (its [`Campaign`] dropped, e.g. the task aborted),
/// this instance does not lead, whatever was last published.
#[derive(Clone, Debug)]
pub struct Leadership {
    term: watch::Receiver<u64>,
    /// The campaign of an instance that leads without an election, kept alive.
    _unelected: Option<Arc<Campaign>>,
}

/// The sending side of a [`Leadership`]: what [`campaign`] drives.
#[derive(Debug)]
pub struct Campaign {
    term: watch::Sender<u64>,
    /// Terms begun so far: each new one gets the next number, never one seen before.
    terms: AtomicU64,
}

impl Campaign {
    /// A new term of leadership begins.
    pub fn lead(&self) {
        let term = self.terms.fetch_add(1, Ordering::Relaxed) + 1;
        self.term.send_replace(term);
    }

    /// This instance stands by (also: the current term ended).
    pub fn stand_by(&self) {
        self.term.send_if_modified(|term| {
            let was = *term;
            *term = 0;
            was != 0
        });
    }
}

impl Leadership {
    /// A leadership that [`campaign`] drives through the returned [`Campaign`]; not leading yet.
    pub fn elected() -> (Campaign, Leadership) {
        let (term, receiver) = watch::channel(0);
        (
            Campaign {
                term,
                terms: AtomicU64::new(0),
            },
            Leadership {
                term: receiver,
                _unelected: None,
            },
        )
    }

    /// Always leading (one term): a single instance run without leader election
    /// (`--no-leader-election`).
    pub fn unelected() -> Leadership {
        let (campaign, mut leadership) = Leadership::elected();
        campaign.lead();
        leadership._unelected = Some(Arc::new(campaign));
        leadership
    }

    /// The current term: `None` when not leading (or the campaign is gone).
    fn term(&self) -> Option<u64> {
        if self.term.has_changed().is_err() {
            return None;
        }
        Some(*self.term.borrow()).filter(|term| *term != 0)
    }

    /// Whether this instance leads now.
    pub fn is_leading(&self) -> bool {
        self.term().is_some()
    }

    /// Completes once this instance leads in a term after `after` (any term: `None`), and
    /// returns that term; never, once the campaign is gone.
    pub async fn gained(&self, after: Option<u64>) -> u64 {
        let mut term = self.term.clone();
        loop {
            // A closed channel keeps its last value: it is no leadership.
            if term.has_changed().is_err() {
                std::future::pending::<()>().await;
            }
            let now = *term.borrow_and_update();
            if now != 0 && after.is_none_or(|after| now != after) {
                return now;
            }
            if term.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Completes once term `of` has ended (at once if it is not the current one), or, for
    /// `None`, once this instance does not lead; also when the campaign is gone.
    pub async fn lost(&self, of: Option<u64>) {
        let mut term = self.term.clone();
        if term.has_changed().is_ok() {
            let _ = term
                .wait_for(|now| *now == 0 || of.is_some_and(|of| *now != of))
                .await;
        }
    }

    /// Runs `work` only within the current term: `None` without running it when this instance
    /// does not lead now, and `None` when the term ends before `work` completes. The unfinished
    /// `work` is then dropped at once, with the request it may have in flight: a former leader
    /// sends no write after it knows it lost, long before the Lease can expire for the others.
    pub async fn run<F: Future>(&self, work: F) -> Option<F::Output> {
        let term = self.term()?;
        tokio::select! {
            biased;
            () = self.lost(Some(term)) => None,
            output = work => Some(output),
        }
    }
}

/// Contends for the Lease until `shutdown`, publishing on `leading` whether this instance holds
/// it (also as the `onus_leader` gauge and in readiness). A term of leadership ends, and is
/// published as ended, as soon as a renewal fails to land within `renew_deadline` or another candidate
/// holds the Lease: before the Lease (valid `lease_duration` after the last renewal) can
/// expire for the others. On shutdown the end is published first and the Lease then released,
/// so a standby takes over at once.
pub async fn campaign(
    client: Client,
    config: LeaseConfig,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: impl Future<Output = ()>,
    leading: Campaign,
) {
    let elector = Elector {
        api: Api::namespaced(client, &config.namespace),
        config,
        readiness: readiness.clone(),
        observed: Mutex::new(None),
    };
    let publish = |now: bool| {
        if now {
            leading.lead();
        } else {
            leading.stand_by();
        }
        metrics.set_leader(now);
        readiness.set_leading(now);
    };
    let mut shutdown = std::pin::pin!(shutdown);
    publish(false);
    loop {
        let renewed = tokio::select! {
            () = &mut shutdown => {
                // An acquisition may have landed just as the shutdown came in.
                elector.release().await;
                return;
            }
            renewed = elector.acquire() => renewed,
        };
        info!(identity = %elector.config.identity, lease = %elector.config.name, "Became leader");
        readiness.set_standby(false);
        publish(true);
        let shutting_down = tokio::select! {
            () = &mut shutdown => true,
            () = elector.keep(renewed) => false,
        };
        publish(false);
        if shutting_down {
            elector.release().await;
            return;
        }
        warn!(identity = %elector.config.identity, "Lost leadership; writing nothing until leading again");
    }
}

/// The outcome of one look at the Lease.
enum Attempt {
    /// This candidate holds the Lease now.
    Leading,
    /// Another holds it (or won a race that a retry will reveal).
    Standby { holder: Option<String> },
}

struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    readiness: Readiness,
    /// The Lease as last read, kept across attempts so an unchanged Lease ages.
    observed: Mutex<Option<Observation>>,
}

impl Elector {
    /// Reads the Lease and claims it when [`decide`] says so; a lost write race is a standby.
    async fn attempt(&self) -> Result<Attempt, kube::Error> {
        let config = &self.config;
        let current = self.api.get_opt(&config.name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        // Read after the response: a change is dated no earlier than it happened, so the Lease
        // never seems older than it is.
        let now = Instant::now();
        let unchanged_since = {
            // Nothing panics while holding the lock; a poisoned one still holds a valid value.
            let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
            let next = Observation::next(observed.as_ref(), spec, now);
            let since = next.since();
            *observed = Some(next);
            since
        };
        if let Decision::Follow { holder } = decide(spec, &config.identity, unchanged_since, now) {
            return Ok(Attempt::Standby {
                holder: Some(holder),
            });
        }
        let spec = claimed(
            spec,
            &config.identity,
            config.lease_duration,
            (config.clock)(),
        );
        let written = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(config.name.clone()),
                        namespace: Some(config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                // The resourceVersion read above makes this a compare-and-swap.
                lease.metadata.managed_fields = None;
                lease.spec = Some(spec);
                self.api
                    .replace(&config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(_) => Ok(Attempt::Leading),
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
                debug!("Lost a race for the Lease");
                Ok(Attempt::Standby { holder: None })
            }
            Err(error) => Err(error),
        }
    }

    /// Stands by until this candidate holds the Lease; returns when the winning write was sent.
    async fn acquire(&self) -> Instant {
        let mut following: Option<String> = None;
        loop {
            let sent = Instant::now();
            match timeout(self.config.renew_deadline, self.attempt()).await {
                Ok(Ok(Attempt::Leading)) => return sent,
                Ok(Ok(Attempt::Standby { holder })) => {
                    self.readiness.set_standby(true);
                    if holder.is_some() && holder != following {
                        info!(
                            holder = holder.as_deref().unwrap_or_default(),
                            "Standing by"
                        );
                        following = holder;
                    }
                }
                Ok(Err(error)) => {
                    self.readiness.set_standby(false);
                    warn!(%error, "Reading the leader Lease failed");
                }
                Err(_) => {
                    self.readiness.set_standby(false);
                    warn!("Reading the leader Lease timed out");
                }
            }
            sleep_until(sent + self.config.retry_interval).await;
        }
    }

    /// Renews the Lease until leadership is lost: another holder, or no renewal for
    /// `renew_deadline` since the write sent at `renewed`.
    async fn keep(&self, mut renewed: Instant) {
        let config = &self.config;
        let mut wait = config.renew_interval;
        loop {
            let deadline = renewed + config.renew_deadline;
            sleep_until((Instant::now() + wait).min(deadline)).await;
            let sent = Instant::now();
            match timeout_at(deadline, self.attempt()).await {
                Ok(Ok(Attempt::Leading)) => {
                    renewed = sent;
                    wait = config.renew_interval;
                    continue;
                }
                Ok(Ok(Attempt::Standby {
                    holder: Some(holder),
                })) => {
                    warn!(%holder, "Another candidate holds the Lease");
                    return;
                }
                Ok(Ok(Attempt::Standby { holder: None })) => {}
                Ok(Err(error)) => warn!(%error, "Renewing the leader Lease failed"),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                warn!("Leader Lease not renewed within the renew deadline");
                return;
            }
            wait = config.retry_interval;
        }
    }

    /// Hands the Lease back if this candidate still holds it (best effort).
    async fn release(&self) {
        let config = &self.config;
        let release = async {
            let Some(mut lease) = self.api.get_opt(&config.name).await? else {
                return Ok(false);
            };
            let Some(spec) = lease.spec.as_ref() else {
                return Ok(false);
            };
            if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
                return Ok(false);
            }
            lease.spec = Some(released(spec, (config.clock)()));
            lease.metadata.managed_fields = None;
            self.api
                .replace(&config.name, &PostParams::default(), &lease)
                .await?;
            Ok::<_, kube::Error>(true)
        };
        match timeout(config.renew_deadline, release).await {
            Ok(Ok(true)) => info!(lease = %config.name, "Released the leader Lease"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => warn!(%error, "Releasing the leader Lease failed"),
            Err(_) => warn!("Releasing the leader Lease timed out"),
        }
    }
}

#[cfg(test)]
mod tests;
