//! The ResponsibilityPolicies of the bench, and a watch on them that records when each
//! control's count of each policy changed.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use kube::{
    Api, Client, ResourceExt as _,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{
        WatchStreamExt as _,
        watcher::{self, Event},
    },
};
use onus::crd::{ResponsibilityPolicy, ResponsibilityPolicyStatus};
use serde_json::json;
use tokio::sync::watch;

use crate::fixture::{FIXTURE_LABEL, FIXTURE_VALUE, Fixture, MANAGER, NOT_FAILING};

/// Name of the bench policy `k`.
pub fn name(k: usize) -> String {
    format!("bench-{k:02}")
}

/// Policy `k`: Audit, every fixture namespace; levels alternate (restricted first) and the
/// Pod Security versions vary from `latest` down to v1.25 (the checks the fixture trips are the
/// same in all of them).
pub fn policy(k: usize) -> ResponsibilityPolicy {
    let level = if restricted(k) {
        "restricted"
    } else {
        "baseline"
    };
    let version = match k % 13 {
        0 => "latest".to_string(),
        n => format!("v1.{}", 38 - n),
    };
    serde_json::from_value(json!({
        "apiVersion": "onus.dev/v1alpha1",
        "kind": "ResponsibilityPolicy",
        "metadata": {"name": name(k), "labels": {"onus-bench": "policy"}},
        "spec": {
            "serviceModel": if k % 3 == 2 { "IaaS" } else { "PaaS" },
            "mode": "Audit",
            "namespaceSelector": {"matchLabels": {FIXTURE_LABEL: FIXTURE_VALUE}},
            "controls": {"podSecurity": {"level": level, "version": version}},
        },
    }))
    .expect("policy literal")
}

pub fn restricted(k: usize) -> bool {
    k.is_multiple_of(2)
}

/// Makes exactly policies `0..count` exist.
pub async fn ensure(client: &Client, count: usize) -> anyhow::Result<()> {
    let api = Api::<ResponsibilityPolicy>::all(client.clone());
    let existing: Vec<String> = api
        .list(&Default::default())
        .await?
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    for k in 0..count {
        if !existing.contains(&name(k)) {
            let pp = PostParams {
                field_manager: Some(MANAGER.into()),
                ..Default::default()
            };
            api.create(&pp, &policy(k))
                .await
                .with_context(|| format!("creating policy {}", name(k)))?;
        }
    }
    for n in existing {
        if (count..100).all(|k| name(k) != n) {
            continue;
        }
        api.delete(&n, &DeleteParams::default()).await?;
    }
    Ok(())
}

/// Removes every policy's status, so the next onus process starts from none.
pub async fn reset_status(client: &Client, count: usize) -> anyhow::Result<()> {
    let api = Api::<ResponsibilityPolicy>::all(client.clone());
    for k in 0..count {
        api.patch_status(
            &name(k),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": null})),
        )
        .await
        .with_context(|| format!("clearing the status of {}", name(k)))?;
        let p = api.get_status(&name(k)).await?;
        if p.status.is_some() {
            bail!("the status of {} survived the reset", name(k));
        }
    }
    Ok(())
}

/// What the bench knows of one policy.
#[derive(Clone, Debug)]
pub struct View {
    pub status: Option<ResponsibilityPolicyStatus>,
    /// Per control: violations, and since when (the event that first showed that count).
    pub counts: HashMap<String, (u64, Instant)>,
    /// When the last event arrived.
    pub received: Instant,
}

/// A watch on every policy.
#[derive(Clone)]
pub struct Watcher {
    views: Arc<Mutex<HashMap<String, View>>>,
    changed: watch::Receiver<u64>,
}

impl Watcher {
    pub fn start(client: &Client) -> Watcher {
        let api = Api::<ResponsibilityPolicy>::all(client.clone());
        let views: Arc<Mutex<HashMap<String, View>>> = Arc::default();
        let (tx, changed) = watch::channel(0u64);
        let state = views.clone();
        tokio::spawn(async move {
            let mut stream = watcher::watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = stream.next().await {
                let now = Instant::now();
                let mut views = state.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    Ok(Event::Apply(p) | Event::InitApply(p)) => {
                        let name = p.name_any();
                        let old = views.remove(&name);
                        let mut counts = HashMap::new();
                        for c in p.status.iter().flat_map(|s| &s.controls) {
                            let since = old
                                .as_ref()
                                .and_then(|o| o.counts.get(&c.id))
                                .filter(|(n, _)| *n == c.violations)
                                .map_or(now, |(_, t)| *t);
                            counts.insert(c.id.clone(), (c.violations, since));
                        }
                        views.insert(
                            name,
                            View {
                                status: p.status,
                                counts,
                                received: now,
                            },
                        );
                    }
                    Ok(Event::Delete(p)) => {
                        views.remove(&p.name_any());
                    }
                    Ok(Event::Init | Event::InitDone) => {}
                    Err(error) => eprintln!("  policy watch: {error}"),
                }
                drop(views);
                tx.send_modify(|n| *n += 1);
            }
        });
        Watcher { views, changed }
    }

    /// Waits until `check` returns `Some` over the current views (checked after every event).
    pub async fn wait<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&HashMap<String, View>) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.changed.clone();
        loop {
            changed.borrow_and_update();
            {
                let views = self.views.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(t) = check(&views) {
                    return Ok(t);
                }
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("the policy watch ended"),
                Err(_) => {
                    let views = self.views.lock().unwrap_or_else(|p| p.into_inner());
                    bail!(
                        "timed out after {timeout:?} waiting for {what}; statuses now:\n{}",
                        describe(&views)
                    );
                }
            }
        }
    }

    pub fn snapshot(&self) -> HashMap<String, View> {
        self.views.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Per policy: the control counts, for failure messages.
pub fn describe(views: &HashMap<String, View>) -> String {
    let mut names: Vec<_> = views.keys().collect();
    names.sort();
    names
        .into_iter()
        .take(4)
        .map(|n| {
            let v = &views[n];
            let counts: BTreeMap<_, _> = v.counts.iter().map(|(c, (n, _))| (c, n)).collect();
            format!(
                "  {n}: {}",
                if v.status.is_none() {
                    "no status".to_string()
                } else {
                    format!("{counts:?}")
                }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Why a policy's status does not show the fixture with `probes` probe Pods (None: it does).
pub fn mismatch(fx: &Fixture, k: usize, view: &View, probes: u64) -> Option<String> {
    let status = view.status.as_ref()?;
    let summary = status.summary.as_ref()?;
    let expected = fx.expected(restricted(k), probes);
    if summary.namespaces as usize != fx.namespaces {
        return Some(format!(
            "{} namespaces, expected {}",
            summary.namespaces, fx.namespaces
        ));
    }
    let mut wrong = Vec::new();
    for c in &status.controls {
        let want = expected.get(c.id.as_str()).copied().unwrap_or(0);
        if c.violations != want {
            wrong.push(format!("{} {} (expected {want})", c.id, c.violations));
        }
    }
    for (id, want) in &expected {
        if !status.controls.iter().any(|c| c.id == *id) {
            wrong.push(format!("{id} missing (expected {want})"));
        }
    }
    let want_violations: u64 = expected
        .iter()
        .filter(|(id, _)| !NOT_FAILING.contains(id))
        .map(|(_, n)| n)
        .sum();
    if summary.violations != want_violations {
        wrong.push(format!(
            "summary.violations {} (expected {want_violations})",
            summary.violations
        ));
    }
    (!wrong.is_empty()).then(|| wrong.join(", "))
}

/// Waits until policies `0..count` all show the fixture (`probes` probe Pods present); returns
/// when the last matching status arrived. A status with wrong counts is an error after
/// `timeout` (reported with what is wrong).
pub async fn wait_correct(
    watcher: &Watcher,
    fx: &Fixture,
    count: usize,
    probes: u64,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let mut last_problem = String::new();
    let result = watcher
        .wait(timeout, "every policy's status", |views| {
            let mut latest = None::<Instant>;
            for k in 0..count {
                let Some(view) = views.get(&name(k)) else {
                    last_problem = format!("{} not seen", name(k));
                    return None;
                };
                if view.status.is_none() {
                    last_problem = format!("{} has no status", name(k));
                    return None;
                }
                if let Some(problem) = mismatch(fx, k, view, probes) {
                    last_problem = format!("{}: {problem}", name(k));
                    return None;
                }
                latest = Some(latest.map_or(view.received, |l| l.max(view.received)));
            }
            latest
        })
        .await;
    result.map_err(|e| anyhow::anyhow!("{e}\nlast problem: {last_problem}"))
}
