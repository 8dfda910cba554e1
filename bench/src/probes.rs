//! Detection latency: probes (one privileged Pod each) under background churn (compliant Pods
//! created and deleted at a fixed rate in governed namespaces).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams},
};

use crate::{
    fixture::{self, CHURN_LABEL, Fixture, PROBE_LABEL},
    policies::{self, Watcher},
};

/// Latencies of one probe batch.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    /// The probe stored (its create request answered) → the first policy's status shows it.
    pub first: Vec<Duration>,
    /// The probe stored → every policy's status shows it.
    pub all: Vec<Duration>,
    /// Create request sent → the first policy's status shows it: [`Self::first`] plus the API
    /// server's handling of the create (admission and storage), which is no part of onus.
    pub sent_to_first: Vec<Duration>,
    /// Background changes per second actually made during the batch.
    pub churn_rate: f64,
    /// The last probe was not seen within its time budget (and the batch stopped there).
    pub timed_out: bool,
    /// That budget.
    pub probe_timeout: Duration,
    /// Each probe seen: its Pod's name, and when (microseconds since the Unix epoch) its create
    /// was sent and the first policy's status showed it, to line up with the audit log.
    pub walls: Vec<(String, i64, i64)>,
}

/// Microseconds since the Unix epoch, `ago` before now.
fn wall_micros(ago: Duration) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.saturating_sub(ago).as_micros() as i64
}

/// Background churn: `rate` changes per second, alternating creations and deletions of
/// compliant bare Pods spread over the fixture namespaces.
pub struct Churn {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    started: Instant,
    task: Option<tokio::task::JoinHandle<()>>,
    live: Arc<Mutex<Vec<(usize, String)>>>,
    client: Client,
}

impl Churn {
    pub fn start(client: &Client, fx: &Fixture, rate: u32) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let live: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
        let task = (rate > 0).then(|| {
            let (stop, done, live) = (stop.clone(), done.clone(), live.clone());
            let client = client.clone();
            let namespaces = fx.namespaces;
            tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
                let mut n: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                        continue; // the API server is behind: this change is skipped
                    };
                    n += 1;
                    let client = client.clone();
                    let (done, live) = (done.clone(), live.clone());
                    // Keep about 20 churn Pods alive: create while fewer, else delete the oldest.
                    let victim = {
                        let mut live = live.lock().unwrap_or_else(|p| p.into_inner());
                        (live.len() >= 20).then(|| live.remove(0))
                    };
                    tokio::spawn(async move {
                        let ok = match victim {
                            Some((i, name)) => Api::<Pod>::namespaced(client, &fixture::ns_name(i))
                                .delete(&name, &DeleteParams::default().grace_period(0))
                                .await
                                .is_ok(),
                            None => {
                                let i = (n as usize * 7919) % namespaces;
                                let name = format!("churn-{n}");
                                let pod = fixture::bare_pod(&name, i, false, CHURN_LABEL);
                                let ok = fixture::create::<Pod>(&client, pod).await.is_ok();
                                if ok {
                                    live.lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .push((i, name));
                                }
                                ok
                            }
                        };
                        if ok {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        drop(permit);
                    });
                }
            })
        });
        Churn {
            stop,
            done,
            started: Instant::now(),
            task,
            live,
            client: client.clone(),
        }
    }

    /// Changes made so far, per second.
    pub fn rate(&self) -> f64 {
        self.done.load(Ordering::Relaxed) as f64 / self.started.elapsed().as_secs_f64()
    }

    /// Stops the churn and deletes the churn Pods still alive.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            task.await?;
        }
        // Requests still in flight finish within this.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let live: Vec<_> =
            std::mem::take(&mut *self.live.lock().unwrap_or_else(|p| p.into_inner()));
        for (i, name) in live {
            let _ = Api::<Pod>::namespaced(self.client.clone(), &fixture::ns_name(i))
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
        }
        Ok(())
    }
}

/// How long probing may take: one probe, and a whole batch (the rest is then not probed).
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub probe: Duration,
    pub batch: Duration,
}

/// The probes of one batch still present, and the WKL-03 counts to come back to.
pub struct Made {
    base: HashMap<String, u64>,
    namespaces: Vec<usize>,
}

/// Runs up to `count` probes one after the other: each creates a privileged Pod in the next
/// fixture namespace and waits until every one of `policies` policies counts it under WKL-03.
/// A probe not seen within `budget.probe` is recorded as that long and ends the batch
/// (`Latencies::timed_out`); so does the batch's time budget, without a timeout. [`cleanup`]
/// then still demands the right counts.
pub async fn run(
    client: &Client,
    watcher: &Watcher,
    fx: &Fixture,
    policies: usize,
    count: usize,
    budget: Budget,
    tag: &str,
) -> anyhow::Result<(Latencies, Made)> {
    let batch_start = Instant::now();
    let base: HashMap<String, u64> = {
        let views = watcher.snapshot();
        (0..policies)
            .map(|k| {
                let n = policies::name(k);
                let wkl03 = views
                    .get(&n)
                    .and_then(|v| v.counts.get("WKL-03"))
                    .map_or(0, |(c, _)| *c);
                (n, wkl03)
            })
            .collect()
    };
    let mut out = Latencies {
        probe_timeout: budget.probe,
        ..Latencies::default()
    };
    let mut made = Made {
        base,
        namespaces: Vec::new(),
    };
    for p in 0..count {
        if batch_start.elapsed() > budget.batch {
            eprintln!("  time budget of the batch spent after {p} probes");
            break;
        }
        let i = (p * 37 + 11) % fx.namespaces;
        let name = format!("probe-{tag}-{p}");
        let pod = fixture::bare_pod(&name, i, true, PROBE_LABEL);
        let sent = Instant::now();
        let _: Pod = fixture::create(client, pod)
            .await
            .with_context(|| format!("probe {name}"))?;
        // The change exists from here on: detection latency counts from its storage, not from
        // the request (the API server's admission of a Pod can take tens of ms on its own;
        // BENCHMARKS.md, "where a quiet probe's time goes").
        let stored = Instant::now();
        made.namespaces.push(i);
        let want = p as u64 + 1;
        let seen = watcher
            .wait(
                budget.probe,
                &format!("probe {name} in every policy's WKL-03"),
                |views| {
                    let mut first = None::<Instant>;
                    let mut all = None::<Instant>;
                    for (n, b) in &made.base {
                        let (c, since) = views.get(n)?.counts.get("WKL-03")?;
                        if *c != b + want {
                            return None;
                        }
                        first = Some(first.map_or(*since, |f| f.min(*since)));
                        all = Some(all.map_or(*since, |a| a.max(*since)));
                    }
                    Some((first?, all?))
                },
            )
            .await;
        match seen {
            Ok((first, all)) => {
                out.walls.push((
                    name.clone(),
                    wall_micros(sent.elapsed()),
                    wall_micros(first.elapsed()),
                ));
                out.first.push(first.saturating_duration_since(stored));
                out.all.push(all.saturating_duration_since(stored));
                out.sent_to_first
                    .push(first.saturating_duration_since(sent));
            }
            Err(_) => {
                eprintln!(
                    "  probe {name} not seen within {:?}: the batch stops",
                    budget.probe
                );
                out.first.push(budget.probe);
                out.all.push(budget.probe);
                out.sent_to_first.push(budget.probe);
                out.timed_out = true;
                break;
            }
        }
    }
    Ok((out, made))
}

/// Deletes the probes and waits until every count is back (a wrong count fails the run).
pub async fn cleanup(client: &Client, watcher: &Watcher, made: Made) -> anyhow::Result<()> {
    let mut namespaces = made.namespaces;
    namespaces.sort_unstable();
    namespaces.dedup();
    for i in namespaces {
        Api::<Pod>::namespaced(client.clone(), &fixture::ns_name(i))
            .delete_collection(
                &DeleteParams::default().grace_period(0),
                &ListParams::default().labels(PROBE_LABEL),
            )
            .await?;
    }
    let base = made.base;
    watcher
        .wait(
            Duration::from_secs(180),
            "the probes to leave WKL-03",
            |views| {
                base.iter()
                    .all(|(n, b)| {
                        views
                            .get(n)
                            .and_then(|v| v.counts.get("WKL-03"))
                            .is_some_and(|(c, _)| c == b)
                    })
                    .then_some(())
            },
        )
        .await
}

/// The `q`-quantile (0..=1) of `samples` (nearest rank).
pub fn quantile(samples: &[Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut s = samples.to_vec();
    s.sort_unstable();
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&ms, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&ms, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&ms, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }
}
