//! Faults a test can inject into a running control plane: a component killed (SIGKILL) and
//! started again, a second kube-apiserver on the same etcd (to change the cluster while the
//! first is down), and an etcd compaction (so a watch resuming from an older resourceVersion
//! gets `410 Gone`).

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    time::{Duration, Instant},
};

use kube::Client;

use crate::{ControlPlane, Error, client, free_port};

impl ControlPlane {
    /// Kills `component` (`etcd`, `kube-apiserver`, `kube-controller-manager`, or a replica
    /// started by [`ControlPlane::start_apiserver_replica`]) with SIGKILL. Returns whether it
    /// was running.
    pub fn kill(&self, component: &str) -> bool {
        self.lock().kill(component)
    }

    /// Starts a killed `component` again with its first arguments (same ports, same data) and
    /// waits until the API server answers `/readyz` (which includes its etcd check).
    ///
    /// After etcd or the API server comes back, the controller-manager is started afresh too.
    /// Its informers back off on every failed list or watch during the outage, up to a 30 s
    /// step with as much jitter again, and only forget that after two quiet minutes; a test
    /// that follows an outage would otherwise wait up to a minute for a namespace's default
    /// ServiceAccount (seen in CI, after the outage tests of `tests/faults.rs`).
    pub async fn restart(&self, component: &str) -> Result<(), Error> {
        self.lock().restart(component)?;
        self.wait_ready(component, Duration::from_secs(120)).await?;
        const KCM: &str = "kube-controller-manager";
        if matches!(component, "etcd" | "kube-apiserver") && self.lock().kill(KCM) {
            self.lock().restart(KCM)?;
        }
        Ok(())
    }

    /// Starts a second kube-apiserver named `name` on the same etcd, on a port of its own (its
    /// audit log is `audit-<name>.log` in the run's directory), waits until it serves and
    /// returns an admin client for it.
    pub async fn start_apiserver_replica(&self, name: &str) -> Result<Client, Error> {
        let (bin, args) = self
            .lock()
            .args("kube-apiserver")
            .ok_or_else(|| Error::Client("no kube-apiserver was started".into()))?;
        let port = free_port()?;
        let dir = self.dir.clone();
        let args: Vec<String> = args
            .into_iter()
            .map(|a| {
                if a.starts_with("--secure-port=") {
                    format!("--secure-port={port}")
                } else if a.starts_with("--audit-log-path=") {
                    format!(
                        "--audit-log-path={}",
                        dir.join(format!("audit-{name}.log")).display()
                    )
                } else if a.starts_with("--cert-dir=") {
                    format!("--cert-dir={}", dir.join(format!("{name}-certs")).display())
                } else {
                    a
                }
            })
            .collect();
        self.lock().spawn(name, &bin, &args)?;
        let kubeconfig = self.dir.join(format!("{name}.kubeconfig"));
        client::write_kubeconfig(
            &kubeconfig,
            &format!("https://127.0.0.1:{port}"),
            &self.dir.join("ca.crt"),
            &self.dir.join("admin.crt"),
            &self.dir.join("admin.key"),
        )?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            self.lock().check_alive()?;
            if let Ok(client) = client::client_from(&kubeconfig).await {
                let req = http::Request::get("/readyz")
                    .body(Vec::new())
                    .expect("static request");
                if let Ok(body) = client.request_text(req).await
                    && body.trim() == "ok"
                {
                    return Ok(client);
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    component: name.into(),
                    seconds: 120,
                    log: self.log_tail(name),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The audit log of an API server replica started by
    /// [`ControlPlane::start_apiserver_replica`].
    pub fn replica_audit_log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("audit-{name}.log"))
    }

    /// Compacts etcd at its current revision (every older revision is gone: a watch or list
    /// from an older resourceVersion gets `410 Gone`) and returns that revision.
    pub fn compact_etcd(&self) -> Result<i64, Error> {
        let (_, args) = self
            .lock()
            .args("etcd")
            .ok_or_else(|| Error::Client("no etcd was started".into()))?;
        let url = args
            .iter()
            .find_map(|a| a.strip_prefix("--listen-client-urls=http://"))
            .ok_or_else(|| Error::Client("etcd has no client URL".into()))?
            .to_string();
        // The gRPC gateway's JSON API: the header of any range answers the current revision.
        let range = etcd_post(&url, "/v3/kv/range", r#"{"key":"Lw==","limit":1}"#)?;
        let revision: i64 = range["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| Error::Client(format!("no revision in {range}")))?;
        etcd_post(
            &url,
            "/v3/kv/compaction",
            &format!(r#"{{"revision":"{revision}","physical":true}}"#),
        )?;
        Ok(revision)
    }
}

/// One HTTP/1.1 POST of a JSON body to etcd's plain-HTTP client port.
fn etcd_post(addr: &str, path: &str, body: &str) -> Result<serde_json::Value, Error> {
    let err = |e: std::io::Error| Error::io(format!("etcd {addr}{path}"), e);
    let mut stream = TcpStream::connect(addr).map_err(err)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(err)?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(err)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(err)?;
    let (head, payload) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::Client(format!("etcd {path}: no HTTP response: {response}")))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(Error::Client(format!("etcd {path}: {head}\n{payload}")));
    }
    // A chunked body: the JSON object is the one line that starts with `{`.
    let json = payload
        .lines()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or(payload);
    serde_json::from_str(json).map_err(|e| Error::Client(format!("etcd {path}: {e}: {payload}")))
}
