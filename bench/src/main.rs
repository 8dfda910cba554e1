//! `make bench`: the real onus binary against a real control plane with an S/M/L fixture.
//!
//! Builds the fixture once, then per run starts onus as a process (1 policy, then 50, then the
//! null operator) and measures cold start, memory, CPU, detection latency under churn, API
//! requests (from the API server's audit log) and status size. Prints one Markdown table and
//! writes it to `target/bench/results-<size>.md`. A wrong status count, or any LIST/GET or
//! write while idle, fails the run; outside `--quick`, so does a missed goal.

mod audit;
mod failover;
mod fixture;
mod operator;
mod policies;
mod probes;
mod report;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use kube::{Api, Client, api::PostParams};
use onus_testenv::{ControlPlane, DEFAULT_CONTROLLERS, Options};

use fixture::{Fixture, Owners, Size};
use operator::Operator;
use policies::Watcher;
use report::{Goal, Report};

const USAGE: &str = "usage: onus-bench --onus PATH [--size S|M|L] [--runs N] [--quick]
                  [--owned-pods driver|controllers] [--allocators NAME=PATH,...]
                  [--failover-rounds N] [--failover-only] [--hold] [--out DIR]
       onus-bench manifests DIR [N]   (writes N fixture objects as YAML files, default 10000)

  --onus PATH         the onus binary to measure (release build)
  --size S|M|L        fixture: S ≈ 2.9k, M ≈ 29k, L ≈ 143k watched objects (default S)
  --runs N            onus runs per figure, shown as min / median / max (default 1)
  --quick             CI smoke: fewer probes, no timing goals asserted (counts and
                      idle requests still are)
  --owned-pods WHO    who makes ReplicaSets and owned Pods: the driver (default, with the
                      controllers' ownerReferences) or kube-controller-manager's controllers
  --allocators LIST   also measure cold start and RSS of these binaries, e.g.
                      system=target/bench/onus-system,jemalloc=target/bench/onus-jemalloc
  --allocators-only   measure only the allocators (not the main table)
  --failover-rounds N fail-over phase (first run only): N rounds of one SIGKILL and one
                      SIGTERM of the leader of two replicas (default 3, 1 with --quick;
                      0: no fail-over phase)
  --failover-only     measure only the fail-over phase (not the main table)
  --hold              build the fixture, print the kubeconfigs and the API server's pid,
                      and wait until interrupted (to measure or profile onus by hand)
  --out DIR           where results-<size>.md goes (default target/bench)";

/// The operator's identity (its own, so the audit log tells its requests apart).
const ONUS_USER: &str = "onus-bench-operator";
/// How many policies the many-policies figures use.
const MANY: usize = 50;

#[derive(Debug)]
struct Args {
    onus: PathBuf,
    size: Size,
    runs: usize,
    quick: bool,
    owners: Owners,
    allocators: Vec<(String, PathBuf)>,
    allocators_only: bool,
    failover_rounds: Option<usize>,
    failover_only: bool,
    hold: bool,
    out: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        onus: PathBuf::new(),
        size: Size::S,
        runs: 1,
        quick: false,
        owners: Owners::Driver,
        allocators: Vec::new(),
        allocators_only: false,
        failover_rounds: None,
        failover_only: false,
        hold: false,
        out: PathBuf::from("target/bench"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--onus" => args.onus = PathBuf::from(value()?),
            "--size" => args.size = value()?.parse()?,
            "--runs" => {
                args.runs = value()?
                    .parse()
                    .map_err(|_| "--runs needs a number".to_string())?
            }
            "--quick" => args.quick = true,
            "--owned-pods" => {
                args.owners = match value()?.as_str() {
                    "driver" => Owners::Driver,
                    "controllers" => Owners::Controllers,
                    other => return Err(format!("--owned-pods: unknown {other:?}")),
                }
            }
            "--allocators" => {
                for item in value()?.split(',').filter(|s| !s.is_empty()) {
                    let (name, path) = item
                        .split_once('=')
                        .ok_or_else(|| format!("--allocators: {item:?} is not NAME=PATH"))?;
                    args.allocators.push((name.into(), PathBuf::from(path)));
                }
            }
            "--allocators-only" => args.allocators_only = true,
            "--failover-rounds" => {
                args.failover_rounds = Some(
                    value()?
                        .parse()
                        .map_err(|_| "--failover-rounds needs a number".to_string())?,
                )
            }
            "--failover-only" => args.failover_only = true,
            "--hold" => args.hold = true,
            "--out" => args.out = PathBuf::from(value()?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.onus.as_os_str().is_empty() {
        return Err("--onus PATH is required".into());
    }
    if args.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(args)
}

/// `onus-bench manifests DIR [N]`: writes the fixture's manifests as YAML files, one object a
/// file under a directory per namespace, until N objects (default 10000), for the `onus check`
/// benchmark (bench/check-vs-kube-score.sh).
fn write_manifests(mut rest: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let dir = PathBuf::from(rest.next().context("usage: onus-bench manifests DIR [N]")?);
    let total: usize = match rest.next() {
        Some(n) => n.parse().context("N: a number of objects")?,
        None => 10_000,
    };
    let fx = Fixture {
        namespaces: usize::MAX,
    };
    let mut written = 0;
    for i in 0.. {
        let ns_dir = dir.join(fixture::ns_name(i));
        std::fs::create_dir_all(&ns_dir)?;
        for object in fx.manifests(i) {
            if written == total {
                return Ok(());
            }
            let kind = object["kind"].as_str().unwrap_or("object").to_lowercase();
            let name = object["metadata"]["name"].as_str().unwrap_or("unnamed");
            let file = ns_dir.join(format!("{kind}-{name}.yaml"));
            std::fs::write(&file, serde_yaml::to_string(&object)?)?;
            written += 1;
        }
    }
    Ok(())
}

fn main() {
    let mut argv = std::env::args().skip(1).peekable();
    if argv.peek().map(String::as_str) == Some("manifests") {
        if let Err(e) = write_manifests(argv.skip(1)) {
            eprintln!("onus-bench manifests: {e:#}");
            std::process::exit(2);
        }
        return;
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("onus-bench: {message}\n");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    // The control plane starts outside any async runtime (it runs its own for readiness).
    let controllers: Vec<String> = DEFAULT_CONTROLLERS
        .iter()
        .filter(|c| {
            args.owners == Owners::Controllers
                || !matches!(**c, "deployment-controller" | "replicaset-controller")
        })
        .map(|c| c.to_string())
        .collect();
    eprintln!("onus-bench: starting the control plane");
    let cp = match ControlPlane::start(Options {
        controllers,
        base_dir: std::env::temp_dir().join("onus-bench"),
        audit_users: std::iter::once(ONUS_USER)
            .chain(failover::USERS)
            .map(String::from)
            .collect(),
    }) {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("onus-bench: {e}");
            std::process::exit(1);
        }
    };
    // Orchestration runs on this (the main) thread inside block_on: onus processes are
    // spawned from it, and die with it (PDEATHSIG).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(bench(&cp, &args));
    drop(runtime);
    cp.stop();
    match result {
        Ok(true) => {}
        Ok(false) => {
            eprintln!(
                "onus-bench: goals missed (see the table; with --quick only the 0 goals count)"
            );
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("onus-bench: FAILED: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Everything; returns whether every asserted goal was met.
async fn bench(cp: &ControlPlane, args: &Args) -> anyhow::Result<bool> {
    let client = cp.client().await;
    let fx = Fixture::new(args.size);
    let onus_kubeconfig = cp
        .kubeconfig_as(ONUS_USER, Some("system:masters"))
        .context("onus kubeconfig")?;
    std::fs::create_dir_all(&args.out)?;

    install_crd(&client).await?;
    eprintln!(
        "onus-bench: building fixture {} ({} namespaces, {} watched objects, {} violating Deployments; owned Pods by the {})",
        args.size,
        fx.namespaces,
        fx.objects(),
        fx.violating_deployments(),
        match args.owners {
            Owners::Driver => "driver",
            Owners::Controllers => "controllers",
        }
    );
    let t = Instant::now();
    fixture::build(&client, &fx, args.owners, 32).await?;
    let fixture_time = t.elapsed();
    eprintln!(
        "onus-bench: fixture ready in {:.0} s",
        fixture_time.as_secs_f64()
    );

    if args.hold {
        eprintln!(
            "onus-bench: holding the control plane (Ctrl-C ends it)\n  admin kubeconfig: {}\n  \
             onus kubeconfig:  {}\n  kube-apiserver pid: {}",
            cp.kubeconfig_path().display(),
            onus_kubeconfig.display(),
            cp.pid("kube-apiserver")
                .map_or_else(|| "?".into(), |p| p.to_string()),
        );
        std::future::pending::<()>().await;
    }
    let watcher = Watcher::start(&client);
    let mut report = Report::new(args.size, args.quick);
    let ctx = Ctx {
        cp,
        client: &client,
        fx: &fx,
        watcher: &watcher,
        kubeconfig: &onus_kubeconfig,
        args,
    };
    let measured = async {
        if args.failover_only {
            failover::measure(&ctx, failover_rounds(args).max(1), &mut report).await?;
            return anyhow::Ok(());
        }
        for run in (0..args.runs).filter(|_| !args.allocators_only) {
            eprintln!("onus-bench: run {}/{}", run + 1, args.runs);
            measure_run(&ctx, run, &mut report).await?;
        }
        // Round by round, each binary once per round: the API server's cost of a start grows
        // as it serves lists (session 10 saw it double), so one binary's runs all after the
        // other's would be measured on an older control plane.
        for run in 0..args.runs {
            for (name, binary) in &args.allocators {
                eprintln!(
                    "onus-bench: allocator {name}, run {}/{}",
                    run + 1,
                    args.runs
                );
                measure_allocator(&ctx, name, binary, run, &mut report).await?;
            }
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = measured {
        eprintln!("{}", report.markdown("(partial: the run failed)"));
        return Err(e);
    }

    let header = format!(
        "Fixture {}: {} namespaces, {} watched objects ({} violating Deployments), built in {:.0} s; \
         ReplicaSets and owned Pods made by {}. {} run(s){}; onus `{}`.",
        args.size,
        fx.namespaces,
        fx.objects(),
        fx.violating_deployments(),
        fixture_time.as_secs_f64(),
        match args.owners {
            Owners::Driver => "the driver (controllers' ownerReferences)",
            Owners::Controllers => "kube-controller-manager",
        },
        args.runs,
        if args.runs > 1 {
            ", values min / median / max"
        } else {
            ""
        },
        args.onus.display(),
    );
    let table = report.markdown(&header);
    println!("{table}");
    let path = args.out.join(format!(
        "results-{}{}.md",
        args.size,
        if args.allocators_only {
            "-allocators"
        } else if args.failover_only {
            "-failover"
        } else {
            ""
        }
    ));
    std::fs::write(&path, &table).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("onus-bench: wrote {}", path.display());
    Ok(report.goals_met())
}

struct Ctx<'a> {
    cp: &'a ControlPlane,
    client: &'a Client,
    fx: &'a Fixture,
    watcher: &'a Watcher,
    kubeconfig: &'a Path,
    args: &'a Args,
}

async fn install_crd(client: &Client) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    // Embedded, so the binary does not depend on the checkout it was built from.
    const CRD: &str = include_str!("../../crds/responsibilitypolicy.yaml");
    let crd: CustomResourceDefinition = serde_yaml::from_str(CRD)?;
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    api.create(&PostParams::default(), &crd).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let crd = api.get("responsibilitypolicies.onus.dev").await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            // Discovery catches up a moment after Established.
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the CRD was not established within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// An onus process after its cold start.
struct Started {
    onus: Operator,
    /// Process start → `/readyz` (caches synced).
    ready: Duration,
    /// Process start → every policy's status right.
    status: Duration,
    /// The audit log's end before the process started.
    audit_from: u64,
}

/// Starts onus with `policies` policies and cleared statuses, and waits until every status
/// shows the fixture's counts.
async fn cold_start(
    ctx: &Ctx<'_>,
    binary: &Path,
    policies: usize,
    label: &str,
) -> anyhow::Result<Started> {
    policies::ensure(ctx.client, policies).await?;
    policies::reset_status(ctx.client, policies).await?;
    // The watch has seen the cleared statuses.
    ctx.watcher
        .wait(Duration::from_secs(30), "cleared statuses", |views| {
            (0..policies)
                .all(|k| {
                    views
                        .get(&policies::name(k))
                        .is_some_and(|v| v.status.is_none())
                })
                .then_some(())
        })
        .await?;
    let audit_from = audit::offset(&ctx.cp.audit_log_path());
    let log = ctx.args.out.join(format!("onus-{label}.log"));
    eprintln!("  cold start, {policies} policies ({label})");
    let mut onus = Operator::start(binary, ctx.kubeconfig, false, log)?;
    let ready = onus.wait_ready(Duration::from_secs(600)).await?;
    let timeout = Duration::from_secs(120 + ctx.fx.namespaces as u64 / 5);
    let done = policies::wait_correct(ctx.watcher, ctx.fx, policies, 0, timeout).await?;
    onus.check_alive()?;
    Ok(Started {
        ready: ready - onus.started,
        status: done.saturating_duration_since(onus.started),
        onus,
        audit_from,
    })
}

/// Waits until onus has made no write for 5 s (the Events it publishes about violations follow
/// the status writes); returns how long after its start that last write came. Gives up after
/// 180 s (the idle window then shows the writes).
async fn settle(ctx: &Ctx<'_>, onus: &Operator, audit_from: u64) -> anyhow::Result<Duration> {
    let path = ctx.cp.audit_log_path();
    let quiet_for = Duration::from_secs(5);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut writes = u64::MAX;
    let mut last_write = Instant::now();
    loop {
        let now = audit::Requests::read(&path, audit_from, audit::offset(&path), ONUS_USER)?
            .writes_total();
        if now != writes {
            writes = now;
            last_write = Instant::now();
        }
        if last_write.elapsed() >= quiet_for || Instant::now() > deadline {
            return Ok(last_write.saturating_duration_since(onus.started));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn settle_time(args: &Args) -> Duration {
    Duration::from_secs(if args.quick { 3 } else { 5 })
}

async fn measure_run(ctx: &Ctx<'_>, run: usize, report: &mut Report) -> anyhow::Result<()> {
    let args = ctx.args;
    let size = args.size;
    let objects = ctx.fx.objects() as f64;
    let probes = if args.quick { 10 } else { 200 };
    let churns: [u32; 3] = [0, 20, 200];
    let audit_log = ctx.cp.audit_log_path();

    // One policy.
    let Started {
        onus,
        ready,
        status,
        ..
    } = cold_start(ctx, &args.onus, 1, &format!("r{run}-1policy")).await?;
    report.seconds(
        "cold start → full status, 1 policy",
        Goal::cold_start(size),
        status,
    );
    report.seconds(
        "cold start → caches synced (/readyz), 1 policy",
        Goal::None,
        ready,
    );
    tokio::time::sleep(settle_time(args)).await;
    let (rss, hwm) = onus.memory()?;
    report.mib("RSS steady, 1 policy", Goal::rss(size), mib(rss));
    report.mib(
        "RSS peak (VmHWM) after cold start, 1 policy",
        Goal::None,
        mib(hwm),
    );
    for churn in churns {
        let m0 = onus.metrics().await?;
        let log_from = audit::offset(&ctx.cp.audit_log_path());
        let lat = probe_batch(ctx, 1, probes, churn, &format!("r{run}-p1-c{churn}")).await?;
        let log_to = audit::offset(&ctx.cp.audit_log_path());
        let m1 = onus.metrics().await?;
        let quiet = churn == 0;
        report.latency(
            &format!("change → status, 1 policy, {}", churn_label(churn)),
            if quiet {
                Goal::MaxMs(100.0)
            } else {
                Goal::None
            },
            &lat,
            false,
        );
        report.latency_from_request(
            &format!(
                "  from the probe's create request sent (its admission and storage included), 1 policy, {}",
                churn_label(churn)
            ),
            &lat,
        );
        if churn > 0 {
            report.number(
                &format!("  churn achieved (changes/s), 1 policy, {churn}/s asked"),
                Goal::None,
                lat.churn_rate,
            );
        }
        // Where the time goes: onus's own part (the change reaching its index → its status
        // write), against the end-to-end figure above, which also holds the probe's create,
        // the watch deliveries and the status write's round trip.
        let detections = m1.detections - m0.detections;
        if detections > 0.0 {
            report.number(
                &format!(
                    "  onus's part: change in its index → status write, mean (ms), 1 policy, {}",
                    churn_label(churn)
                ),
                Goal::None,
                (m1.detection_seconds - m0.detection_seconds) * 1000.0 / detections,
            );
        }
        if quiet {
            report_probe_phases(ctx, &lat, log_from, log_to, report)?;
        }
        let reconciles = m1.reconciles - m0.reconciles;
        if reconciles > 0.0 {
            report.number(
                &format!(
                    "  one reconcile, wall time, mean (ms), 1 policy, {}",
                    churn_label(churn)
                ),
                Goal::None,
                (m1.reconcile_seconds - m0.reconcile_seconds) * 1000.0 / reconciles,
            );
            report.number(
                &format!("  reconciles per probe, 1 policy, {}", churn_label(churn)),
                Goal::None,
                reconciles / lat.all.len().max(1) as f64,
            );
        }
    }
    onus.stop();

    // Many policies.
    let Started {
        onus,
        ready,
        status,
        audit_from,
    } = cold_start(ctx, &args.onus, MANY, &format!("r{run}-{MANY}policies")).await?;
    report.seconds(
        &format!("cold start → full status, {MANY} policies"),
        Goal::cold_start(size),
        status,
    );
    report.seconds(
        &format!("cold start → caches synced (/readyz), {MANY} policies"),
        Goal::None,
        ready,
    );
    let settled = settle(ctx, &onus, audit_from).await?;
    report.seconds(
        &format!("cold start → last start-up write (Events), {MANY} policies"),
        Goal::None,
        settled,
    );
    let (rss, hwm) = onus.memory()?;
    report.mib(
        &format!("RSS steady, {MANY} policies"),
        Goal::rss(size),
        mib(rss),
    );
    report.mib(
        &format!("RSS peak (VmHWM) after cold start, {MANY} policies"),
        Goal::PeakOf(mib(rss) * 1.3),
        mib(hwm),
    );
    report.number(
        &format!("RSS steady per watched object (bytes), {MANY} policies"),
        Goal::None,
        rss as f64 / objects,
    );
    // Every request of this process so far: its start (and settling).
    let start =
        audit::Requests::read(&audit_log, audit_from, audit::offset(&audit_log), ONUS_USER)?;
    report.text(
        &format!("API requests at start, {MANY} policies"),
        Goal::None,
        start.summary(),
    );
    report.text(
        &format!("  writes at start, {MANY} policies"),
        Goal::None,
        start
            .writes
            .iter()
            .map(|(w, n)| format!("{w} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    report.number(
        &format!("  LIST + WATCH at start, {MANY} policies"),
        Goal::None,
        start.count(&["list", "watch"]) as f64,
    );

    // Idle.
    let idle_secs = 30;
    let from = audit::offset(&audit_log);
    let cpu0 = onus.cpu()?;
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let cpu1 = onus.cpu()?;
    let idle = audit::Requests::read(&audit_log, from, audit::offset(&audit_log), ONUS_USER)?;
    report.text(
        &format!("API requests while idle ({idle_secs} s), {MANY} policies"),
        Goal::None,
        idle.summary(),
    );
    report.number(
        &format!("LIST/GET of objects while idle ({idle_secs} s)"),
        Goal::Zero,
        idle.count(&["list", "get"]) as f64,
    );
    report.number(
        &format!("writes while idle ({idle_secs} s)"),
        Goal::Zero,
        idle.writes_total() as f64,
    );
    report.number(
        "CPU while idle (ms per s)",
        Goal::None,
        (cpu1 - cpu0).as_secs_f64() * 1000.0 / idle_secs as f64,
    );
    // Asserted through the goals (0), at the end: the remaining figures are still measured.
    if idle.count(&["list", "get"]) > 0 || idle.writes_total() > 0 {
        eprintln!(
            "  onus made requests while idle: {} (writes: {:?})",
            idle.summary(),
            idle.writes
        );
    }

    let apiserver = ctx.cp.pid("kube-apiserver").context("kube-apiserver pid")?;
    for churn in churns {
        let m0 = onus.metrics().await?;
        let cpu0 = onus.cpu()?;
        let (api0, wall0) = (operator::process_cpu(apiserver)?, Instant::now());
        let audit_from = audit::offset(&audit_log);
        let lat = probe_batch(
            ctx,
            MANY,
            probes,
            churn,
            &format!("r{run}-p{MANY}-c{churn}"),
        )
        .await?;
        let cpu1 = onus.cpu()?;
        let (api1, wall) = (operator::process_cpu(apiserver)?, wall0.elapsed());
        let m1 = onus.metrics().await?;
        let requests =
            audit::Requests::read(&audit_log, audit_from, audit::offset(&audit_log), ONUS_USER)?;
        let status_writes = requests
            .writes
            .get("patch responsibilitypolicies/status")
            .copied()
            .unwrap_or(0);
        // Where the time goes: the API server serves the churn, the status writes and the
        // watches of every client on the same two cores.
        report.number(
            &format!(
                "  CPU, % of one core: onus, {MANY} policies, {}",
                churn_label(churn)
            ),
            Goal::None,
            (cpu1 - cpu0).as_secs_f64() * 100.0 / wall.as_secs_f64(),
        );
        report.number(
            &format!(
                "  CPU, % of one core: kube-apiserver, {MANY} policies, {}",
                churn_label(churn)
            ),
            Goal::None,
            (api1 - api0).as_secs_f64() * 100.0 / wall.as_secs_f64(),
        );
        // The status writes the batch cost the API server: each probe changes every policy's
        // counts, so up to MANY writes follow each one.
        report.number(
            &format!(
                "  status writes per second, {MANY} policies, {}",
                churn_label(churn)
            ),
            Goal::None,
            status_writes as f64 / wall.as_secs_f64(),
        );
        if status_writes > 0 {
            // An upper bound: the API server also served the churn and the watches.
            report.number(
                &format!(
                    "  kube-apiserver CPU per onus status write, upper bound (ms), {MANY} \
                     policies, {}",
                    churn_label(churn)
                ),
                Goal::None,
                (api1 - api0).as_secs_f64() * 1000.0 / status_writes as f64,
            );
        }
        let goal = if churn == 200 {
            Goal::MaxMs(250.0)
        } else {
            Goal::None
        };
        report.latency(
            &format!(
                "change → status (every policy), {MANY} policies, {}",
                churn_label(churn)
            ),
            goal,
            &lat,
            false,
        );
        report.latency(
            &format!(
                "change → status (first policy), {MANY} policies, {}",
                churn_label(churn)
            ),
            Goal::None,
            &lat,
            true,
        );
        if churn > 0 {
            report.number(
                &format!("  churn achieved (changes/s), {MANY} policies, {churn}/s asked"),
                Goal::None,
                lat.churn_rate,
            );
        }
        let events = m1.watch_events - m0.watch_events;
        if churn > 0 && events > 0.0 {
            report.number(
                &format!(
                    "CPU per 1k watch events (ms), {MANY} policies, {}",
                    churn_label(churn)
                ),
                Goal::None,
                (cpu1 - cpu0).as_secs_f64() * 1000.0 * 1000.0 / events,
            );
        }
        let reconciles = m1.reconciles - m0.reconciles;
        if reconciles > 0.0 {
            // The cost of one policy's reconcile is the operator's CPU time over the batch per
            // reconcile (an upper bound: it includes decoding the churn's watch events). The
            // wall time of a reconcile also holds its waits (the status write's round trip, the
            // other policies' reconciles on the same two cores): shown, not the goal.
            report.number(
                &format!(
                    "one reconcile, CPU (ms), {MANY} policies, {}",
                    churn_label(churn)
                ),
                Goal::MaxMsPlain(5.0),
                (cpu1 - cpu0).as_secs_f64() * 1000.0 / reconciles,
            );
            report.number(
                &format!(
                    "  one reconcile, wall time, mean (ms), {MANY} policies, {}",
                    churn_label(churn)
                ),
                Goal::None,
                (m1.reconcile_seconds - m0.reconcile_seconds) * 1000.0 / reconciles,
            );
        }
    }
    let (_, hwm) = onus.memory()?;
    report.mib(
        &format!("RSS peak (VmHWM) at the end, {MANY} policies"),
        Goal::PeakOf(mib(rss) * 1.3),
        mib(hwm),
    );
    let sizes: Vec<usize> = ctx
        .watcher
        .snapshot()
        .values()
        .filter_map(|v| v.status.as_ref())
        .map(|s| serde_json::to_vec(s).map(|b| b.len()).unwrap_or(0))
        .collect();
    report.number(
        &format!("status size, largest of {MANY} (bytes of .status JSON)"),
        Goal::None,
        sizes.iter().copied().max().unwrap_or(0) as f64,
    );
    onus.stop();

    // Fail-over between two replicas (once: it takes a Lease expiry per SIGKILL).
    let rounds = failover_rounds(args);
    if run == 0 && rounds > 0 {
        failover::measure(ctx, rounds, report).await?;
    }

    // The null operator: the same watches, no evaluation.
    let log = args.out.join(format!("onus-r{run}-null.log"));
    let mut null = Operator::start(&args.onus, ctx.kubeconfig, true, log)?;
    let ready = null.wait_ready(Duration::from_secs(600)).await?;
    report.seconds(
        "null operator: cold start → caches synced",
        Goal::None,
        ready - null.started,
    );
    tokio::time::sleep(settle_time(args)).await;
    let (rss, hwm) = null.memory()?;
    report.mib("null operator: RSS steady", Goal::None, mib(rss));
    report.mib("null operator: RSS peak (VmHWM)", Goal::None, mib(hwm));
    null.check_alive()?;
    null.stop();
    policies::ensure(ctx.client, 1).await?;
    Ok(())
}

/// Rounds of the fail-over phase: the flag, else 3 (1 with `--quick`).
fn failover_rounds(args: &Args) -> usize {
    args.failover_rounds
        .unwrap_or(if args.quick { 1 } else { 3 })
}

fn churn_label(churn: u32) -> String {
    if churn == 0 {
        "quiet".into()
    } else {
        format!("{churn} changes/s")
    }
}

/// The quiet probes' time split at the API server's audit timestamps, medians in ms: the
/// probe's create reaching the API server, the create stored, onus's status write received
/// (the Pod's watch event reaching onus, its evaluation and its write request), that write
/// stored, and the bench's policy watch showing it.
fn report_probe_phases(
    ctx: &Ctx<'_>,
    lat: &probes::Latencies,
    from: u64,
    to: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let seen: Vec<(String, i64)> = lat.walls.iter().map(|(n, _, s)| (n.clone(), *s)).collect();
    let times = audit::probe_times(
        &ctx.cp.audit_log_path(),
        from,
        to,
        &seen,
        &policies::name(0),
        ONUS_USER,
    )?;
    let mut phases: [Vec<Duration>; 5] = Default::default();
    // The figure's own start point checked on the API server's clock: create stored → seen.
    let mut stored_to_seen = Vec::new();
    let mut out_of_order = 0;
    for (name, sent, seen) in &lat.walls {
        let Some(t) = times.get(name) else { continue };
        let points = [
            *sent,
            t.create_received,
            t.create_done,
            t.status_received,
            t.status_done,
            *seen,
        ];
        stored_to_seen.push(Duration::from_micros((*seen - t.create_done).max(0) as u64));
        if points.windows(2).any(|w| w[1] < w[0]) {
            // onus wrote before the create's answer was complete: no clean split.
            out_of_order += 1;
            continue;
        }
        for (i, phase) in phases.iter_mut().enumerate() {
            phase.push(Duration::from_micros((points[i + 1] - points[i]) as u64));
        }
    }
    report.number(
        "  audit log split, quiet, 1 policy: probes matched in the log",
        Goal::None,
        stored_to_seen.len() as f64,
    );
    report.number(
        "  audit log split, quiet, 1 policy: probes whose status write began before the create was answered",
        Goal::None,
        out_of_order as f64,
    );
    if !stored_to_seen.is_empty() {
        for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
            report.number(
                &format!(
                    "  audit log, quiet, 1 policy: probe stored (the create's stage timestamp) → seen by the bench, {name} (ms)"
                ),
                Goal::None,
                probes::quantile(&stored_to_seen, q).as_secs_f64() * 1000.0,
            );
        }
    }
    const PHASES: [&str; 5] = [
        "probe create sent → received by the API server",
        "probe create received → stored",
        "probe stored → onus's status write received (watch to onus, evaluation, request)",
        "onus's status write received → stored",
        "status stored → seen by the bench's watch",
    ];
    for (label, samples) in PHASES.iter().zip(&phases) {
        if samples.is_empty() {
            continue;
        }
        report.number(
            &format!("  audit log split, quiet, 1 policy: {label}, p50 (ms)"),
            Goal::None,
            probes::quantile(samples, 0.5).as_secs_f64() * 1000.0,
        );
    }
    Ok(())
}

async fn probe_batch(
    ctx: &Ctx<'_>,
    policies: usize,
    count: usize,
    churn: u32,
    tag: &str,
) -> anyhow::Result<probes::Latencies> {
    eprintln!("  {count} probes, {policies} policies, {churn} changes/s");
    let background = probes::Churn::start(ctx.client, ctx.fx, churn);
    // Let the churn reach its rate before probing.
    if churn > 0 {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let budget = if ctx.args.quick {
        probes::Budget {
            probe: Duration::from_secs(10),
            batch: Duration::from_secs(30),
        }
    } else {
        probes::Budget {
            probe: Duration::from_secs(30),
            batch: Duration::from_secs(180),
        }
    };
    let result = probes::run(
        ctx.client,
        ctx.watcher,
        ctx.fx,
        policies,
        count,
        budget,
        tag,
    )
    .await;
    let rate = background.rate();
    background.stop().await?;
    let (mut lat, made) = result?;
    probes::cleanup(ctx.client, ctx.watcher, made).await?;
    lat.churn_rate = rate;
    Ok(lat)
}

async fn measure_allocator(
    ctx: &Ctx<'_>,
    name: &str,
    binary: &Path,
    run: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let size = ctx.args.size;
    let Started { onus, status, .. } =
        cold_start(ctx, binary, MANY, &format!("alloc-{name}-r{run}")).await?;
    tokio::time::sleep(settle_time(ctx.args)).await;
    let (rss, hwm) = onus.memory()?;
    onus.stop();
    report.seconds(
        &format!("allocator {name}: cold start → full status, {MANY} policies"),
        Goal::cold_start(size),
        status,
    );
    report.mib(
        &format!("allocator {name}: RSS steady"),
        Goal::rss(size),
        mib(rss),
    );
    report.mib(
        &format!("allocator {name}: RSS peak (VmHWM)"),
        Goal::PeakOf(mib(rss) * 1.3),
        mib(hwm),
    );
    policies::ensure(ctx.client, 1).await?;
    Ok(())
}
