//! The `onus report` command line and its run.

use std::io::Write;

use super::{Document, cluster, from_file, render};

pub const USAGE: &str = "usage: onus report [POLICY] [--format markdown|html|json] [-o FILE]
                   [--from FILE] [--kubeconfig FILE] [--context NAME]

Writes the responsibility report of the current cluster (kubeconfig or in-cluster config):
the cluster's identity (server URL, version, kube-system namespace UID), and for every policy
(or POLICY alone) the responsibility matrix (control, owner and where it came from, mode,
result, violations, every offender, framework ids), the exceptions with expiry and validity,
the responsibility gaps and the state of Enforce. Results come from the policies' status;
offenders from a live read evaluated with the controller's code.

  --format FORMAT   markdown (default), html (one self-contained file) or json
  -o, --output FILE write the report to FILE instead of standard output
  --from FILE       report offline from a file instead of a cluster: `onus check --output
                    json`, a ResponsibilityPolicy, or `kubectl get responsibilitypolicies
                    -o json|yaml` (status only: offenders are the capped examples)
  --kubeconfig FILE the kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or the
                    in-cluster configuration)
  --context NAME    the kubeconfig context to use (default: its current context)

Exit codes: 0 report written, 2 bad arguments, unreadable input or cluster unreachable.";

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Html,
    Json,
}

/// The parsed `onus report` arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    pub policy: Option<String>,
    pub format: Format,
    pub output: Option<String>,
    pub from: Option<String>,
    /// `--kubeconfig`: the kubeconfig file instead of the inferred configuration.
    pub kubeconfig: Option<String>,
    /// `--context`: a context of the kubeconfig other than its current one.
    pub context: Option<String>,
}

/// What the `report` command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Report(Args),
    Help,
}

pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut out = Args {
        policy: None,
        format: Format::Markdown,
        output: None,
        from: None,
        kubeconfig: None,
        context: None,
    };
    let mut args = crate::args::Flags::new(args);
    while let Some((flag, inline)) = args.next_flag() {
        let mut value = || {
            args.value(&flag, &inline)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--format" => {
                out.format = match value()?.as_str() {
                    "markdown" | "md" => Format::Markdown,
                    "html" => Format::Html,
                    "json" => Format::Json,
                    other => return Err(format!("unknown format {other:?}")),
                }
            }
            "-o" | "--output" => out.output = Some(value()?),
            "--from" => out.from = Some(value()?),
            "--kubeconfig" => out.kubeconfig = Some(value()?),
            "--context" => out.context = Some(value()?),
            positional if !positional.starts_with('-') && inline.is_none() => {
                if out.policy.replace(positional.to_string()).is_some() {
                    return Err("one POLICY at most".into());
                }
            }
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    Ok(Command::Report(out))
}

/// Renders the document in the format asked for.
pub fn render(document: &Document, format: Format) -> String {
    match format {
        Format::Markdown => render::markdown(document),
        Format::Html => render::html(document),
        Format::Json => render::json(document),
    }
}

/// The client configuration: `--kubeconfig` and `--context` as kubectl reads them, otherwise
/// inferred ($KUBECONFIG, ~/.kube/config, in-cluster).
async fn client_config(args: &Args) -> anyhow::Result<kube::Config> {
    let options = kube::config::KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    Ok(match (&args.kubeconfig, &args.context) {
        (Some(path), _) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options).await?,
        (None, None) => kube::Config::infer().await?,
    })
}

async fn from_cluster(args: &Args, now: jiff::Timestamp) -> anyhow::Result<Document> {
    let policy = args.policy.as_deref();
    let config = client_config(args).await?;
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)?;
    cluster::report(&client, server, policy, now).await
}

/// Builds and writes the report; returns the exit code.
pub fn run(args: &Args) -> i32 {
    let now = jiff::Timestamp::now();
    let document = match &args.from {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| format!("{file}: cannot read: {e}"))
            .and_then(|text| from_file(file, &text, args.policy.as_deref(), now)),
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                rt.block_on(from_cluster(args, now))
                    .map_err(|e| format!("{e:#}"))
            }),
    };
    let document = match document {
        Ok(d) => d,
        Err(e) => {
            eprintln!("onus report: {e}");
            return 2;
        }
    };
    let text = render(&document, args.format);
    let written = match &args.output {
        Some(path) => std::fs::write(path, text),
        None => std::io::stdout().lock().write_all(text.as_bytes()),
    };
    match written {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("onus report: cannot write the report: {e}");
            2
        }
    }
}

/// Runs `onus report` with the process's arguments after `report`; returns the exit code.
pub fn main(args: impl IntoIterator<Item = String>) -> i32 {
    match parse(args) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            0
        }
        Ok(Command::Report(args)) => run(&args),
        Err(message) => {
            eprintln!("onus report: {message}\n\n{USAGE}");
            2
        }
    }
}
