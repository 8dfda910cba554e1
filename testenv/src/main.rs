//! `onus-testenv up`: starts the same local control plane the tests use, writes its admin
//! kubeconfig and keeps it running until interrupted (Ctrl-C or SIGTERM).

use std::path::PathBuf;

use onus_testenv::{ControlPlane, Options, kubernetes_version};

const USAGE: &str = "usage: onus-testenv up [--kubeconfig PATH]

Starts etcd, kube-apiserver and kube-controller-manager on loopback, writes an admin
kubeconfig to PATH (default: ./target/onus-testenv/kubeconfig), prints
`export KUBECONFIG=PATH` and runs until interrupted.";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.as_slice() {
        [up] if up == "up" => PathBuf::from("target/onus-testenv/kubeconfig"),
        [up, flag, path] if up == "up" && flag == "--kubeconfig" => PathBuf::from(path),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let cp = match ControlPlane::start(Options::default()) {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("onus-testenv: {e}");
            std::process::exit(1);
        }
    };
    if let Some(parent) = out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    // Written last, and atomically: its presence tells scripts the cluster is ready.
    let tmp = out.with_extension("tmp");
    if let Err(e) =
        std::fs::copy(cp.kubeconfig_path(), &tmp).and_then(|_| std::fs::rename(&tmp, &out))
    {
        eprintln!("onus-testenv: writing {}: {e}", out.display());
        std::process::exit(1);
    }
    eprintln!(
        "onus-testenv: Kubernetes {} serving at {} (logs in {})",
        kubernetes_version(),
        cp.server(),
        cp.dir().display()
    );
    println!("export KUBECONFIG={}", out.display());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
    eprintln!("onus-testenv: stopping");
    let _ = std::fs::remove_file(&out);
    cp.stop();
}
