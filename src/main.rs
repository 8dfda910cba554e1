//! The onus operator binary: configuration and wiring only; the work is in the library.

// The global allocator: jemalloc (the default feature), mimalloc when its feature is on, the
// system's with `--no-default-features`. `make bench-allocators` measures the three. jemalloc
// because it costs the operator nothing (same cold start and resident size at M as glibc's)
// and takes a third off `onus check`, whose time is mostly allocating parsed YAML; the image's
// libc is musl, whose allocator is slower still. Numbers in BENCHMARKS.md.
#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{io::IsTerminal as _, net::SocketAddr, time::Duration};

use anyhow::Context as _;
use onus::{
    controller::{self, Settings},
    http::{self, Readiness},
    leader::{self, DEFAULT_LEASE_NAME, Leadership, LeaseConfig},
    metrics::{Metrics, VERSION},
};
use tokio::sync::watch;
use tracing::{error, info, warn};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

const USAGE: &str = "usage: onus [--version] [--log-format text|json] [--http-addr ADDR]
            [--leader-election-namespace NS] [--leader-election-id NAME]
            [--no-leader-election] [--audit-only] [--null-evaluation]
            [--policy-selector SELECTOR]
            [--report-api openreports|wgpolicyk8s] [--report-max-results N]
            [--report-relist-interval SECONDS]

Runs the onus operator against the cluster of the current kubeconfig (or in-cluster config).

  --log-format text|json            log format (default text)
  --http-addr ADDR                  address of /metrics, /healthz, /readyz (default [::]:8080:
                                    IPv6 and IPv4, IPv4 only on a node without IPv6)
  --leader-election-namespace NS    namespace of the leader Lease
                                    (default: $POD_NAMESPACE, else default)
  --leader-election-id NAME         name of the leader Lease (default onus-leader)
  --no-leader-election              run without a Lease (a single instance only)
  --version                         print the version and exit
  --audit-only                      an install without remediation permissions: evaluate and
                                    report every policy, remediate nothing (Enforce policies
                                    report Enforced=False, reason EnforceUnavailable)
  --policy-selector SELECTOR        serve only the ResponsibilityPolicies matching this label
                                    selector (several onus installs in one cluster)
  --report-api openreports|wgpolicyk8s
                                    publish each policy's results as policy reports
                                    (openreports.io/v1alpha1 Report/ClusterReport, or
                                    wgpolicyk8s.io/v1alpha2 PolicyReport/ClusterPolicyReport),
                                    one per governed namespace and one cluster-scoped, when
                                    the API server serves them (default: no reports)
  --report-max-results N            at most N results per report, failures first; the
                                    summary counts stay exact (default 1000)
  --report-relist-interval SECONDS  how often each policy's reports are listed again, so that
                                    one deleted or edited by someone else is put back and a
                                    stale one of onus's removed (10 to 86400; default 300)
  --null-evaluation                 benchmark floor: watch everything, evaluate and write
                                    nothing (never use it to protect a cluster)

Every instance watches and evaluates; only the holder of the Lease writes (warm standbys).
Identity in the Lease: $POD_NAME, else the host name. Log level: RUST_LOG (default info).
onus's own namespace ($POD_NAMESPACE, else its ServiceAccount's) never gets a default-deny.

       onus check -f PATH... [--policy FILE] [--output table|json|sarif|junit]
evaluates manifests offline with the same checks (onus check --help).
       onus report [POLICY] [--format markdown|html|json] [-o FILE] [--from FILE]
writes the responsibility report for auditors (onus report --help).";

/// The command line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cli {
    json_logs: bool,
    http_addr: SocketAddr,
    lease_namespace: Option<String>,
    lease_name: String,
    leader_election: bool,
    audit_only: bool,
    null_evaluation: bool,
    policy_selector: Option<String>,
    report_api: Option<onus::controller::ReportApi>,
    report_max_results: usize,
    report_relist: Duration,
}

impl Default for Cli {
    fn default() -> Self {
        Cli {
            json_logs: false,
            http_addr: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 8080)),
            lease_namespace: None,
            lease_name: DEFAULT_LEASE_NAME.into(),
            leader_election: true,
            audit_only: false,
            null_evaluation: false,
            policy_selector: None,
            report_api: None,
            report_max_results: onus::controller::DEFAULT_MAX_RESULTS,
            report_relist: onus::controller::REPORT_RELIST,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run(Cli),
    Help,
    Version,
}

/// Parses the arguments after the program name; `--flag value` and `--flag=value` both work.
fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut cli = Cli::default();
    let mut args = onus::args::Flags::new(args);
    while let Some((flag, inline)) = args.next_flag() {
        let mut value = || args.value(&flag, &inline);
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" if inline.is_none() => return Ok(Command::Version),
            "--log-format" => {
                cli.json_logs = match value()?.as_str() {
                    "text" => false,
                    "json" => true,
                    other => return Err(format!("unknown log format {other:?}")),
                }
            }
            "--http-addr" => {
                let addr = value()?;
                cli.http_addr = addr
                    .parse()
                    .map_err(|_| format!("--http-addr: {addr:?} is not an IP:PORT address"))?;
            }
            "--leader-election-namespace" => {
                cli.lease_namespace = Some(non_empty(&flag, value()?)?)
            }
            "--leader-election-id" => cli.lease_name = non_empty(&flag, value()?)?,
            "--no-leader-election" if inline.is_none() => cli.leader_election = false,
            "--audit-only" if inline.is_none() => cli.audit_only = true,
            "--null-evaluation" if inline.is_none() => cli.null_evaluation = true,
            "--policy-selector" => cli.policy_selector = Some(non_empty(&flag, value()?)?),
            "--report-api" => {
                let api = value()?;
                cli.report_api =
                    Some(onus::controller::ReportApi::parse(&api).ok_or_else(|| {
                        format!("--report-api: {api:?} is neither openreports nor wgpolicyk8s")
                    })?)
            }
            "--report-max-results" => {
                let n = value()?;
                cli.report_max_results = n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!("--report-max-results: {n:?} is not a positive number")
                })?
            }
            "--report-relist-interval" => {
                let n = value()?;
                let range = onus::controller::REPORT_RELIST_RANGE;
                cli.report_relist = n
                    .parse()
                    .ok()
                    .map(Duration::from_secs)
                    .filter(|d| range.contains(d))
                    .ok_or_else(|| {
                        format!(
                            "--report-relist-interval: {n:?} is not a number of seconds from {} \
                             to {}",
                            range.start().as_secs(),
                            range.end().as_secs()
                        )
                    })?
            }
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    Ok(Command::Run(cli))
}

fn non_empty(flag: &str, value: String) -> Result<String, String> {
    if value.is_empty() {
        Err(format!("{flag} must not be empty"))
    } else {
        Ok(value)
    }
}

/// The Lease namespace: the flag, else `$POD_NAMESPACE`, else `default`.
fn lease_namespace(flag: Option<&str>, pod_namespace: Option<String>) -> String {
    flag.map(String::from)
        .or(pod_namespace.filter(|ns| !ns.is_empty()))
        .unwrap_or_else(|| "default".into())
}

/// The namespace of the pod's ServiceAccount, mounted into every pod that mounts its token.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The namespace onus runs in, which never gets a default-deny: `$POD_NAMESPACE` (the chart
/// sets it), else the mounted ServiceAccount's namespace, else none (outside a cluster).
fn own_namespace(
    pod_namespace: Option<String>,
    service_account: &std::path::Path,
) -> Option<String> {
    pod_namespace.filter(|ns| !ns.is_empty()).or_else(|| {
        std::fs::read_to_string(service_account)
            .ok()
            .map(|ns| ns.trim().to_string())
            .filter(|ns| !ns.is_empty())
    })
}

/// This instance's identity: `$POD_NAME`, else the host name, else a random id.
fn identity() -> String {
    let from_env = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    from_env("POD_NAME")
        .or_else(|| from_env("HOSTNAME"))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(random_id)
}

fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("onus-{:012x}", hasher.finish() & 0xffff_ffff_ffff)
}

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry.with(fmt::layer().json()).init();
    } else {
        // No colour codes in files and container logs.
        let ansi = std::io::stdout().is_terminal();
        registry.with(fmt::layer().with_ansi(ansi)).init();
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("Shutting down");
}

/// A future that completes once `flag` is set (or its sender is gone).
async fn when_set(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

/// The usage of the binary installed as `kubectl-onus` (a kubectl plugin: `kubectl onus ...`).
const PLUGIN_USAGE: &str =
    "usage: kubectl onus check -f PATH... [--policy FILE] [--output table|json|sarif|junit]
       kubectl onus report [POLICY] [--format markdown|html|json] [-o FILE] [--from FILE]
                           [--kubeconfig FILE] [--context NAME]
       kubectl onus --version

The onus binary installed as the kubectl plugin kubectl-onus: the offline check of manifests
(kubectl onus check --help) and the responsibility report (kubectl onus report --help). The
operator itself runs in the cluster (the Helm chart), never as a plugin.";

/// Whether this process was started under a kubectl plugin name (`kubectl-onus`, a copy or a
/// link of the onus binary, found by kubectl on PATH). Any `kubectl-` name counts: kubectl runs
/// the longest matching plugin, so a link named `kubectl-onus-check` is run for `kubectl onus
/// check` without the `check`, and must not start the operator with the user's credentials.
fn invoked_as_plugin(program: Option<&std::ffi::OsStr>) -> bool {
    program
        .and_then(|p| std::path::Path::new(p).file_stem())
        .is_some_and(|stem| stem.to_string_lossy().starts_with("kubectl-"))
}

fn main() -> anyhow::Result<()> {
    let plugin = invoked_as_plugin(std::env::args_os().next().as_deref());
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("check") {
        std::process::exit(onus::check::cli::main(args.skip(1)));
    }
    if args.peek().map(String::as_str) == Some("report") {
        std::process::exit(onus::report::cli::main(args.skip(1)));
    }
    if plugin {
        // `kubectl onus` with anything else: help, the version, or a usage error. Starting the
        // operator from a user's kubectl (with the user's credentials) is never what was meant.
        match args.next().as_deref() {
            Some("-h" | "--help" | "help") => println!("{PLUGIN_USAGE}"),
            Some("-V" | "--version" | "version") => println!("onus {VERSION}"),
            other => {
                let what = other.map_or("a command".to_string(), |o| format!("{o:?}"));
                eprintln!("kubectl onus: expected check or report, not {what}\n\n{PLUGIN_USAGE}");
                std::process::exit(2);
            }
        }
        return Ok(());
    }
    operator(args)
}

#[tokio::main]
async fn operator(args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let cli = match parse(args) {
        Ok(Command::Run(cli)) => cli,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return Ok(());
        }
        Ok(Command::Version) => {
            println!("onus {VERSION}");
            return Ok(());
        }
        Err(message) => {
            eprintln!("onus: {message}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    init_logging(cli.json_logs);

    let metrics = Metrics::new();
    let readiness = Readiness::new();
    let listener = http::bind(cli.http_addr)
        .await
        .with_context(|| format!("listening on {}", cli.http_addr))?;
    let (stop_http, http_stopped) = watch::channel(false);
    let server = tokio::spawn(http::serve(
        listener,
        http::router(metrics.clone(), readiness.clone()),
        when_set(http_stopped),
    ));
    info!(addr = %cli.http_addr, "Serving /metrics, /healthz and /readyz");

    let client = kube::Client::try_default()
        .await
        .context("no usable kubeconfig or in-cluster configuration")?;
    let identity = identity();
    let (campaign, leadership) = if cli.leader_election {
        let (campaign, leadership) = Leadership::elected();
        (Some(campaign), leadership)
    } else {
        (None, Leadership::unelected())
    };
    let settings = Settings {
        instance: identity.clone(),
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        null_evaluation: cli.null_evaluation,
        audit_only: cli.audit_only,
        policy_selector: cli.policy_selector.clone(),
        leadership,
        reports: cli.report_api.map(|api| onus::controller::ReportSettings {
            api,
            max_results: cli.report_max_results,
            relist: cli.report_relist,
        }),
        own_namespace: own_namespace(
            std::env::var("POD_NAMESPACE").ok(),
            std::path::Path::new(SERVICE_ACCOUNT_NAMESPACE),
        ),
        ..Settings::default()
    };
    let (shutdown_tx, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = shutdown_tx.send(true);
    });

    // The controller (watches, evaluation) runs on every instance; the campaign only decides
    // whether it may write.
    let mut controller = tokio::spawn(controller::run(
        client.clone(),
        settings,
        when_set(shutdown.clone()),
    ));
    let ended_by_itself = if let Some(campaign) = campaign {
        let namespace = lease_namespace(
            cli.lease_namespace.as_deref(),
            std::env::var("POD_NAMESPACE").ok(),
        );
        info!(%identity, %namespace, lease = %cli.lease_name, "Contending for leadership");
        let config = LeaseConfig::new(&cli.lease_name, &namespace, &identity);
        let (controller_ended, ended) = watch::channel(false);
        let shutting_down = shutdown.clone();
        let elect = leader::campaign(
            client,
            config,
            metrics.clone(),
            readiness.clone(),
            // A controller that ended stops the campaign too: its Lease is released.
            async move {
                tokio::select! {
                    () = when_set(shutting_down) => {}
                    () = when_set(ended) => {}
                }
            },
            campaign,
        );
        let mut elect = std::pin::pin!(elect);
        tokio::select! {
            () = &mut elect => {
                // Shut down: the Lease is released; the controller stops with the same signal.
                let _ = controller.await;
                false
            }
            _ = &mut controller => {
                let _ = controller_ended.send(true);
                elect.await;
                true
            }
        }
    } else {
        readiness.set_leading(true);
        metrics.set_leader(true);
        let _ = (&mut controller).await;
        true
    };

    let _ = stop_http.send(true);
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => warn!(%error, "HTTP server failed"),
        Ok(Err(error)) => warn!(%error, "HTTP server task failed"),
        Err(_) => warn!("HTTP server did not stop in time"),
    }
    if ended_by_itself && !*shutdown.borrow() {
        error!("The controller stopped unexpectedly");
        anyhow::bail!("the controller stopped unexpectedly");
    }
    info!("Stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubectl_plugin_name_is_recognised_by_its_file_name() {
        use std::ffi::OsStr;
        for plugin in [
            "kubectl-onus",
            "/usr/local/bin/kubectl-onus",
            "kubectl-onus.exe",
            // What kubectl runs for `kubectl onus check` when such a link is on PATH.
            "kubectl-onus-check",
            "/usr/local/bin/kubectl-onus-x",
        ] {
            assert!(invoked_as_plugin(Some(OsStr::new(plugin))), "{plugin}");
        }
        for operator in ["onus", "/usr/local/bin/onus", "kubectl", ""] {
            assert!(!invoked_as_plugin(Some(OsStr::new(operator))), "{operator}");
        }
        assert!(!invoked_as_plugin(None));
    }

    fn run(args: &[&str]) -> Result<Cli, String> {
        match parse(args.iter().map(|a| a.to_string()))? {
            Command::Run(cli) => Ok(cli),
            Command::Help => Err("help".into()),
            Command::Version => Err("version".into()),
        }
    }

    #[test]
    fn no_arguments_give_the_defaults() {
        let cli = run(&[]).expect("parses");
        assert_eq!(cli, Cli::default());
        assert_eq!(cli.http_addr.to_string(), "[::]:8080");
        assert_eq!(cli.lease_name, "onus-leader");
        assert!(cli.leader_election);
        assert_eq!(cli.report_relist, Duration::from_secs(300));
    }

    #[test]
    fn every_flag_is_understood() {
        let cli = run(&[
            "--log-format",
            "json",
            "--http-addr",
            "127.0.0.1:9090",
            "--leader-election-namespace",
            "onus-system",
            "--leader-election-id",
            "my-lease",
            "--no-leader-election",
            "--audit-only",
            "--policy-selector",
            "team=a",
            "--report-api",
            "wgpolicyk8s",
            "--report-max-results",
            "50",
            "--report-relist-interval",
            "60",
        ])
        .expect("parses");
        assert_eq!(
            cli,
            Cli {
                json_logs: true,
                http_addr: "127.0.0.1:9090".parse().expect("addr"),
                lease_namespace: Some("onus-system".into()),
                lease_name: "my-lease".into(),
                leader_election: false,
                audit_only: true,
                null_evaluation: false,
                policy_selector: Some("team=a".into()),
                report_api: Some(onus::controller::ReportApi::WgPolicyK8s),
                report_max_results: 50,
                report_relist: Duration::from_secs(60),
            }
        );
    }

    #[test]
    fn flags_take_inline_values() {
        let cli = run(&["--http-addr=[::1]:8081", "--log-format=text"]).expect("parses");
        assert_eq!(cli.http_addr.to_string(), "[::1]:8081");
    }

    #[test]
    fn unknown_flags_and_bad_values_are_refused() {
        assert!(run(&["--verbose"]).is_err());
        assert!(run(&["--log-format", "xml"]).is_err());
        assert!(run(&["--log-format"]).is_err());
        assert!(run(&["--http-addr", "localhost"]).is_err());
        assert!(run(&["--leader-election-id", ""]).is_err());
        assert!(run(&["--no-leader-election=true"]).is_err());
        assert!(run(&["--audit-only=false"]).is_err());
        assert!(run(&["positional"]).is_err());
        assert!(run(&["--report-api", "kyverno"]).is_err());
        assert!(run(&["--report-max-results", "0"]).is_err());
        assert!(run(&["--report-max-results", "many"]).is_err());
        assert!(run(&["--report-relist-interval", "9"]).is_err());
        assert!(run(&["--report-relist-interval", "86401"]).is_err());
        assert!(run(&["--report-relist-interval", "5m"]).is_err());
        assert!(run(&["--report-relist-interval", "-1"]).is_err());
    }

    #[test]
    fn help_is_not_an_error() {
        assert_eq!(parse(["--help".to_string()]), Ok(Command::Help));
    }

    #[test]
    fn version_is_understood() {
        assert_eq!(parse(["--version".to_string()]), Ok(Command::Version));
        assert_eq!(parse(["-V".to_string()]), Ok(Command::Version));
        assert!(run(&["--version=1"]).is_err());
    }

    #[test]
    fn own_namespace_is_pod_namespace_else_the_service_accounts() {
        let dir = std::env::temp_dir().join(format!("onus-own-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("namespace");
        std::fs::write(&file, "onus-system\n").expect("write");
        assert_eq!(own_namespace(Some("a".into()), &file).as_deref(), Some("a"));
        assert_eq!(
            own_namespace(Some(String::new()), &file).as_deref(),
            Some("onus-system")
        );
        assert_eq!(own_namespace(None, &dir.join("absent")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lease_namespace_prefers_flag_then_pod_namespace() {
        assert_eq!(lease_namespace(Some("a"), Some("b".into())), "a");
        assert_eq!(lease_namespace(None, Some("b".into())), "b");
        assert_eq!(lease_namespace(None, Some(String::new())), "default");
        assert_eq!(lease_namespace(None, None), "default");
    }
}
