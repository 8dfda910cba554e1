//! The onus operator binary: configuration and wiring only; the work is in the library.

use anyhow::Context as _;
use onus::controller::{self, Settings};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

const USAGE: &str = "usage: onus [--log-format text|json]

Runs the onus operator against the cluster of the current kubeconfig (or in-cluster config).
Log level: RUST_LOG (default info).";

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry.with(fmt::layer().json()).init();
    } else {
        registry.with(fmt::layer()).init();
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
    tracing::info!("Shutting down");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["--log-format", "text"] => false,
        ["--log-format", "json"] => true,
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    init_logging(json);
    let client = kube::Client::try_default()
        .await
        .context("no usable kubeconfig or in-cluster configuration")?;
    let settings = Settings {
        instance: std::env::var("POD_NAME").unwrap_or_else(|_| "onus".into()),
        ..Settings::default()
    };
    controller::run(client, settings, shutdown_signal()).await;
    Ok(())
}
