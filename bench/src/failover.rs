//! Fail-over (issue 10, "warm standbys"): two onus replicas contend for one Lease, as the
//! chart runs them; the leader is killed (SIGKILL: its Lease must expire) or stopped (SIGTERM:
//! it releases the Lease), right after a change that alters every policy's status. Measured:
//! (a) signal → the Lease's holder changes (the driver's watch on the Lease), and (b) the Lease
//! moves → the new leader's first status write that shows the correct counts (the API server's
//! audit log: who wrote which status when; the driver's watch on the policies: what it holds).
//!
//! Every fail-over is checked, in `--quick` too: each policy's status ends correct, the write
//! that made it so came from the new leader, the standby wrote nothing while standing by, and
//! the old leader wrote nothing after the signal (with SIGTERM, but its Lease release).

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{Namespace, Pod},
    },
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use onus_testenv::AuditEvent;
use tokio::sync::watch;

use crate::{
    Ctx, MANY, audit,
    fixture::{self, PROBE_LABEL, Size},
    operator::Operator,
    policies,
    report::{Goal, Report},
};

/// The two replicas' users (distinct, so the audit log tells their requests apart; the chart's
/// replicas share one ServiceAccount) and pod names (their identities in the Lease).
pub const USERS: [&str; 2] = ["onus-bench-replica-a", "onus-bench-replica-b"];
const PODS: [&str; 2] = ["onus-7f9c6d5b8-a1b2c", "onus-7f9c6d5b8-d3e4f"];
/// The operator's namespace (`$POD_NAMESPACE`), where the Lease lives.
const NAMESPACE: &str = "onus-bench-system";
/// The chart's (and onus's default) Lease name.
const LEASE: &str = "onus-leader";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Kill,
    Term,
}

impl Stop {
    fn label(self) -> &'static str {
        match self {
            Stop::Kill => "SIGKILL",
            Stop::Term => "SIGTERM",
        }
    }
}

/// The Lease's holder as the driver's watch last saw it, and since when.
#[derive(Clone)]
struct LeaseWatch {
    holder: watch::Receiver<Option<(String, Instant)>>,
}

impl LeaseWatch {
    fn start(client: &Client) -> LeaseWatch {
        let api = Api::<Lease>::namespaced(client.clone(), NAMESPACE);
        let (tx, holder) = watch::channel(None);
        tokio::spawn(async move {
            let config = watcher::Config::default().fields(&format!("metadata.name={LEASE}"));
            let mut stream = watcher::watcher(api, config)
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(event) = stream.next().await {
                let now = Instant::now();
                match event {
                    Ok(lease) => {
                        let h = lease
                            .spec
                            .and_then(|s| s.holder_identity)
                            .unwrap_or_default();
                        tx.send_if_modified(|cur| {
                            if cur.as_ref().map(|(c, _)| c) == Some(&h) {
                                return false;
                            }
                            *cur = Some((h, now));
                            true
                        });
                    }
                    Err(error) => eprintln!("  lease watch: {error}"),
                }
            }
        });
        LeaseWatch { holder }
    }

    /// Waits until `identity` holds the Lease; when the watch first saw it.
    async fn wait_holder(&self, identity: &str, timeout: Duration) -> anyhow::Result<Instant> {
        let mut rx = self.holder.clone();
        let seen = tokio::time::timeout(
            timeout,
            rx.wait_for(|h| h.as_ref().is_some_and(|(n, _)| n == identity)),
        )
        .await
        .with_context(|| format!("{identity} did not take the Lease within {timeout:?}"))?
        .context("the Lease watch ended")?;
        Ok(seen.as_ref().map(|(_, t)| *t).unwrap_or_else(Instant::now))
    }
}

/// The wall-clock time of a monotonic instant (the audit log dates requests by the wall clock
/// of the same machine).
#[derive(Clone, Copy)]
struct Clock {
    instant: Instant,
    wall: Timestamp,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            instant: Instant::now(),
            wall: Timestamp::now(),
        }
    }

    fn wall(self, at: Instant) -> Timestamp {
        let d = if at >= self.instant {
            SignedDuration::try_from(at - self.instant).unwrap_or(SignedDuration::MAX)
        } else {
            -SignedDuration::try_from(self.instant - at).unwrap_or(SignedDuration::MAX)
        };
        self.wall.checked_add(d).unwrap_or(self.wall)
    }
}

fn seconds(d: SignedDuration) -> Duration {
    Duration::from_secs_f64(d.as_secs_f64().max(0.0))
}

/// One replica: its index (user and pod name) and its process.
struct Replica {
    index: usize,
    onus: Operator,
}

async fn start_replica(
    ctx: &Ctx<'_>,
    kubeconfigs: &[PathBuf; 2],
    index: usize,
    generation: usize,
) -> anyhow::Result<Replica> {
    let log = ctx
        .args
        .out
        .join(format!("onus-failover-{}-{generation}.log", PODS[index]));
    let onus = Operator::start_replica(
        &ctx.args.onus,
        &kubeconfigs[index],
        PODS[index],
        NAMESPACE,
        log,
    )?;
    Ok(Replica { index, onus })
}

/// Waits until `replica` stands by warm: ready (caches synced, the Lease readable), not leading,
/// and has evaluated every policy at least once.
async fn wait_warm(replica: &mut Replica, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        replica.onus.check_alive()?;
        let ready = matches!(replica.onus.get("/readyz").await, Ok((200, _)));
        if ready && let Ok(m) = replica.onus.metrics().await {
            if m.leader == 1.0 {
                bail!("{} leads, but should stand by", PODS[replica.index]);
            }
            if m.standby_evaluations >= MANY as f64 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{} not a warm standby within {timeout:?}",
                PODS[replica.index]
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `user` has made no write for 3 s (a new leader publishes its violation Events
/// after the status), at most `limit`.
async fn quiet(ctx: &Ctx<'_>, user: &str, limit: Duration) -> anyhow::Result<()> {
    let path = ctx.cp.audit_log_path();
    let deadline = Instant::now() + limit;
    let mut from = audit::offset(&path);
    let mut last_write = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let to = audit::offset(&path);
        let writes = audit::Requests::read(&path, from, to, user)?.writes;
        from = to;
        // Lease renewals go on; they are no work.
        if writes.keys().any(|w| !w.ends_with(" leases")) {
            last_write = Instant::now();
        }
        if last_write.elapsed() >= Duration::from_secs(3) || Instant::now() > deadline {
            return Ok(());
        }
    }
}

/// The audit events between two offsets.
fn audit_events(ctx: &Ctx<'_>, from: u64) -> anyhow::Result<Vec<AuditEvent>> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let path = ctx.cp.audit_log_path();
    let mut file = std::fs::File::open(&path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(onus_testenv::parse_audit_log(&text))
}

fn is_status_write(e: &AuditEvent) -> bool {
    e.resource == "responsibilitypolicies"
        && e.subresource == "status"
        && matches!(e.verb.as_str(), "patch" | "update")
}

/// A write that stores something (a SelfSubjectReview, asked at start, stores nothing).
fn stores(e: &AuditEvent) -> bool {
    matches!(
        e.verb.as_str(),
        "create" | "update" | "patch" | "delete" | "deletecollection"
    ) && e.resource != "selfsubjectreviews"
        && !e.uri.contains("dryRun")
}

/// What one fail-over measured.
#[derive(Debug)]
struct Measured {
    /// Signal → the driver's watch sees the new holder.
    lease: Duration,
    /// The new leader's Lease write → its first status write with the correct counts.
    first: Duration,
    /// … → the last policy's first correct status write.
    all: Duration,
    /// LIST requests of the new leader after it took the Lease (warm: none).
    lists: u64,
}

/// The fail-over phase: `rounds` rounds of one SIGKILL and one SIGTERM of the leader, the
/// replicas alternating as leader. Adds its rows to `report`.
pub async fn measure(ctx: &Ctx<'_>, rounds: usize, report: &mut Report) -> anyhow::Result<()> {
    let client = ctx.client;
    let fx = ctx.fx;
    let kubeconfigs = [
        ctx.cp
            .kubeconfig_as(USERS[0], Some("system:masters"))
            .context("replica kubeconfig")?,
        ctx.cp
            .kubeconfig_as(USERS[1], Some("system:masters"))
            .context("replica kubeconfig")?,
    ];
    let namespaces = Api::<Namespace>::all(client.clone());
    if namespaces.get_opt(NAMESPACE).await?.is_none() {
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE},
        }))?;
        namespaces.create(&PostParams::default(), &ns).await?;
    }
    policies::ensure(client, MANY).await?;
    let timeout = Duration::from_secs(120 + fx.namespaces as u64 / 5);
    let lease_watch = LeaseWatch::start(client);

    // The first leader, with every status right, then a warm standby.
    eprintln!("  fail-over: starting two replicas, {MANY} policies");
    let mut generation = 0;
    let mut leader = start_replica(ctx, &kubeconfigs, 0, generation).await?;
    lease_watch.wait_holder(PODS[0], timeout).await?;
    leader.onus.wait_ready(timeout).await?;
    policies::wait_correct(ctx.watcher, fx, MANY, 0, timeout).await?;
    let mut standby = start_replica(ctx, &kubeconfigs, 1, generation).await?;
    let mut probes: u64 = 0;

    let order: Vec<Stop> = (0..rounds)
        .flat_map(|r| {
            if r % 2 == 0 {
                [Stop::Kill, Stop::Term]
            } else {
                [Stop::Term, Stop::Kill]
            }
        })
        .collect();
    let mut results: Vec<(Stop, Measured)> = Vec::new();
    for (n, stop) in order.into_iter().enumerate() {
        wait_warm(&mut standby, timeout).await?;
        quiet(ctx, USERS[leader.index], Duration::from_secs(60)).await?;
        let (old, new) = (leader.index, standby.index);
        eprintln!(
            "  fail-over {}: {} of the leader {}",
            n + 1,
            stop.label(),
            PODS[old]
        );
        let audit_from = audit::offset(&ctx.cp.audit_log_path());
        let clock = Clock::now();
        let signalled = clock.instant;
        leader.onus.signal(match stop {
            Stop::Kill => libc::SIGKILL,
            Stop::Term => libc::SIGTERM,
        });
        // The change the new leader must report: one more privileged Pod.
        let i = (n * 37 + 5) % fx.namespaces;
        let pod = fixture::bare_pod(&format!("failover-{n}"), i, true, PROBE_LABEL);
        let _: Pod = fixture::create(client, pod).await?;
        probes += 1;

        // (a) The Lease moves: after it expires (SIGKILL), or at the standby's next try after
        // the release (SIGTERM).
        let moved = lease_watch
            .wait_holder(PODS[new], Duration::from_secs(60))
            .await?;
        // (b) Every policy's status shows the change; when the driver's watch saw each right.
        let mut correct_at: HashMap<usize, Instant> = HashMap::new();
        let mut last_problem = String::new();
        let watched = ctx
            .watcher
            .wait(
                Duration::from_secs(60),
                "every policy's status after the fail-over",
                |views| {
                    for k in 0..MANY {
                        if correct_at.contains_key(&k) {
                            continue;
                        }
                        let view = views.get(&policies::name(k))?;
                        match policies::mismatch(fx, k, view, probes) {
                            None if view.status.is_some() => {
                                correct_at.insert(k, view.received);
                            }
                            problem => {
                                last_problem = format!(
                                    "{}: {}",
                                    policies::name(k),
                                    problem.unwrap_or_else(|| "no status".into())
                                );
                            }
                        }
                    }
                    (correct_at.len() == MANY).then_some(())
                },
            )
            .await;
        watched.map_err(|e| anyhow::anyhow!("{e}\nlast problem: {last_problem}"))?;
        let exit = leader.onus.wait_exit(Duration::from_secs(20)).await;
        if stop == Stop::Term && !exit.is_some_and(|s| s.success()) {
            bail!("{} did not exit cleanly on SIGTERM: {exit:?}", PODS[old]);
        }
        // A request is logged when it completes, which can follow the client seeing it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let events = audit_events(ctx, audit_from)?;
        let measured = judge(
            &events,
            stop,
            old,
            new,
            clock,
            signalled,
            moved,
            &correct_at,
        )?;
        eprintln!(
            "    Lease moved {:.2} s after the signal; first correct status {:.3} s, every policy's {:.3} s after the Lease write",
            measured.lease.as_secs_f64(),
            measured.first.as_secs_f64(),
            measured.all.as_secs_f64()
        );
        results.push((stop, measured));

        // The old leader comes back as the standby.
        generation += 1;
        let restarted = start_replica(ctx, &kubeconfigs, old, generation).await?;
        let previous = std::mem::replace(&mut leader, standby);
        drop(previous);
        standby = restarted;
    }

    // The probes go while a leader still writes; every count must come back.
    eprintln!("  fail-over: cleaning up");
    for n in 0..probes as usize {
        let i = (n * 37 + 5) % fx.namespaces;
        Api::<Pod>::namespaced(client.clone(), &fixture::ns_name(i))
            .delete(
                &format!("failover-{n}"),
                &DeleteParams::default().grace_period(0),
            )
            .await?;
    }
    policies::wait_correct(ctx.watcher, fx, MANY, 0, Duration::from_secs(120)).await?;
    leader.onus.stop();
    standby.onus.stop();

    let goal = match ctx.args.size {
        Size::M => Goal::MaxSeconds(2.0),
        _ => Goal::None,
    };
    for stop in [Stop::Kill, Stop::Term] {
        let label = stop.label();
        for (_, m) in results.iter().filter(|(s, _)| *s == stop) {
            report.seconds(
                &format!("fail-over, {label}: signal → Lease holder changed"),
                Goal::None,
                m.lease,
            );
            report.seconds(
                &format!(
                    "fail-over, {label}: Lease moved → first correct status write, {MANY} policies"
                ),
                goal,
                m.first,
            );
            report.seconds(
                &format!(
                    "fail-over, {label}: Lease moved → every policy's correct status written, {MANY} policies"
                ),
                Goal::None,
                m.all,
            );
            report.number(
                &format!("fail-over, {label}: LISTs by the new leader after the Lease moved"),
                Goal::Zero,
                m.lists as f64,
            );
        }
    }
    Ok(())
}

/// Checks one fail-over in the audit log and measures it.
#[allow(clippy::too_many_arguments)]
fn judge(
    events: &[AuditEvent],
    stop: Stop,
    old: usize,
    new: usize,
    clock: Clock,
    signalled: Instant,
    moved: Instant,
    correct_at: &HashMap<usize, Instant>,
) -> anyhow::Result<Measured> {
    let show = |es: &[&AuditEvent]| {
        es.iter()
            .take(10)
            .map(|e| format!("    {e}\n"))
            .collect::<String>()
    };
    let signal_wall = clock.wall(signalled);
    // The old leader: nothing after the signal (with SIGTERM, but releasing its Lease).
    let old_writes: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.user == USERS[old] && e.received >= signal_wall && stores(e))
        .filter(|e| !(stop == Stop::Term && e.resource == "leases"))
        .collect();
    if !old_writes.is_empty() {
        bail!(
            "the old leader {} wrote after its {}:\n{}",
            PODS[old],
            stop.label(),
            show(&old_writes)
        );
    }
    // The new leader's Lease write (the first that succeeded).
    let new_events: Vec<&AuditEvent> = events.iter().filter(|e| e.user == USERS[new]).collect();
    let lease_write = new_events
        .iter()
        .find(|e| {
            e.resource == "leases"
                && matches!(e.verb.as_str(), "update" | "create")
                && e.code.is_some_and(|c| c < 300)
        })
        .with_context(|| format!("no Lease write by the new leader {}", PODS[new]))?;
    // The standby wrote nothing before it led.
    let early: Vec<&AuditEvent> = new_events
        .iter()
        .copied()
        .filter(|e| e.received < lease_write.received && stores(e))
        .collect();
    if !early.is_empty() {
        bail!(
            "the standby {} wrote before it took the Lease:\n{}",
            PODS[new],
            show(&early)
        );
    }
    // Per policy: the status write that the driver then saw correct must be the new leader's.
    let mut first: Option<SignedDuration> = None;
    let mut all: Option<SignedDuration> = None;
    for (k, at) in correct_at {
        let name = policies::name(*k);
        let seen = clock.wall(*at);
        let writer = events
            .iter()
            .rfind(|e| {
                is_status_write(e)
                    && e.name == name
                    && e.received <= seen
                    && e.code.is_some_and(|c| c < 300)
            })
            .with_context(|| {
                format!("{name}: its correct status after the fail-over has no status write")
            })?;
        if writer.user != USERS[new] || writer.received < lease_write.received {
            bail!(
                "{name}: the correct status after the fail-over was written by {} at {}, not by the new leader {} after its Lease write at {}",
                writer.user,
                writer.received,
                USERS[new],
                lease_write.received
            );
        }
        let d = writer.received.duration_since(lease_write.received);
        first = Some(first.map_or(d, |f| f.min(d)));
        all = Some(all.map_or(d, |a| a.max(d)));
    }
    let lists = new_events
        .iter()
        .filter(|e| e.verb == "list" && e.received >= lease_write.received)
        .count() as u64;
    Ok(Measured {
        lease: moved.saturating_duration_since(signalled),
        first: seconds(first.context("no policies")?),
        all: seconds(all.context("no policies")?),
        lists,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(
        user: &str,
        verb: &str,
        resource: &str,
        sub: &str,
        name: &str,
        at: Timestamp,
    ) -> AuditEvent {
        AuditEvent {
            user: user.into(),
            groups: vec!["system:masters".into()],
            verb: verb.into(),
            api_group: String::new(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: String::new(),
            name: name.into(),
            code: Some(200),
            received: at,
            uri: String::new(),
            user_agent: String::new(),
        }
    }

    /// A SIGKILL at t0; the new leader (b) takes the Lease at t0 + 15 s and writes both
    /// policies' status 0.2 s and 0.5 s later; the driver sees them 0.1 s after each.
    fn scenario() -> (Clock, Vec<AuditEvent>, HashMap<usize, Instant>) {
        let clock = Clock::now();
        let at = |ms: i64| {
            clock
                .wall
                .checked_add(SignedDuration::from_millis(ms))
                .expect("time")
        };
        let events = vec![
            event(USERS[1], "get", "leases", "", LEASE, at(2_000)),
            event(USERS[1], "update", "leases", "", LEASE, at(15_000)),
            event(
                USERS[1],
                "patch",
                "responsibilitypolicies",
                "status",
                "bench-00",
                at(15_200),
            ),
            event(
                USERS[1],
                "patch",
                "responsibilitypolicies",
                "status",
                "bench-01",
                at(15_500),
            ),
            event(USERS[1], "create", "events", "", "", at(15_600)),
        ];
        let correct_at = HashMap::from([
            (0, clock.instant + Duration::from_millis(15_300)),
            (1, clock.instant + Duration::from_millis(15_600)),
        ]);
        (clock, events, correct_at)
    }

    fn run(
        stop: Stop,
        events: &[AuditEvent],
        clock: Clock,
        correct_at: &HashMap<usize, Instant>,
    ) -> anyhow::Result<Measured> {
        let moved = clock.instant + Duration::from_millis(15_050);
        judge(events, stop, 0, 1, clock, clock.instant, moved, correct_at)
    }

    #[test]
    fn a_clean_fail_over_is_measured_from_the_lease_write() {
        let (clock, events, correct_at) = scenario();
        let m = run(Stop::Kill, &events, clock, &correct_at).expect("clean");
        assert_eq!(m.lease, Duration::from_millis(15_050));
        assert!((m.first.as_secs_f64() - 0.2).abs() < 1e-6, "{:?}", m.first);
        assert!((m.all.as_secs_f64() - 0.5).abs() < 1e-6, "{:?}", m.all);
        assert_eq!(m.lists, 0);
    }

    #[test]
    fn a_write_of_the_old_leader_after_the_signal_fails() {
        let (clock, events, correct_at) = scenario();
        let at = clock
            .wall
            .checked_add(SignedDuration::from_millis(100))
            .expect("time");
        let mut status = events.clone();
        status.push(event(
            USERS[0],
            "patch",
            "responsibilitypolicies",
            "status",
            "bench-00",
            at,
        ));
        assert!(run(Stop::Kill, &status, clock, &correct_at).is_err());
        assert!(run(Stop::Term, &status, clock, &correct_at).is_err());
        // Releasing its Lease is what a SIGTERM asks for (and what a SIGKILL cannot).
        let mut released = events;
        released.push(event(USERS[0], "update", "leases", "", LEASE, at));
        assert!(run(Stop::Term, &released, clock, &correct_at).is_ok());
        assert!(run(Stop::Kill, &released, clock, &correct_at).is_err());
    }

    #[test]
    fn a_correct_status_not_written_by_the_new_leader_fails() {
        let (clock, mut events, correct_at) = scenario();
        // The last status write of bench-01 before the driver saw it right is someone else's.
        let at = clock
            .wall
            .checked_add(SignedDuration::from_millis(15_550))
            .expect("time");
        events.push(event(
            "someone",
            "patch",
            "responsibilitypolicies",
            "status",
            "bench-01",
            at,
        ));
        let e = run(Stop::Kill, &events, clock, &correct_at).expect_err("not the new leader's");
        assert!(e.to_string().contains("bench-01"), "{e}");
    }

    #[test]
    fn a_standby_that_wrote_or_a_new_leader_that_listed_is_caught() {
        let (clock, mut events, correct_at) = scenario();
        let early = clock
            .wall
            .checked_add(SignedDuration::from_millis(5_000))
            .expect("time");
        events.push(event(USERS[1], "patch", "namespaces", "", "team-a", early));
        assert!(run(Stop::Kill, &events, clock, &correct_at).is_err());

        let (clock, mut events, correct_at) = scenario();
        let late = clock
            .wall
            .checked_add(SignedDuration::from_millis(15_100))
            .expect("time");
        events.push(event(USERS[1], "list", "pods", "", "", late));
        assert_eq!(
            run(Stop::Kill, &events, clock, &correct_at)
                .expect("ok")
                .lists,
            1
        );
    }
}
