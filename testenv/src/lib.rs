//! A real Kubernetes control plane on loopback for onus tests and demos.
//!
//! [`ControlPlane::start`] runs etcd, kube-apiserver and (optionally) kube-controller-manager as
//! child processes with generated certificates, on free loopback ports, and waits until they
//! serve. The binaries come from `hack/build-control-plane.sh` (cached under
//! `~/.cache/onus/k8s-<version>/bin`) and from the `etcd-bin-vendored` crate.
//!
//! Tests share one control plane per test binary through [`shared`], and isolate themselves with
//! [`ControlPlane::namespace`]. Children are killed when the test process ends, however it ends:
//! normally through an exit hook, abnormally through `PR_SET_PDEATHSIG` on a supervisor thread
//! that lives as long as the process; directories of dead runs are swept on the next start.
//!
//! The API server logs every write to an audit log ([`ControlPlane::audit_events`]), and
//! [`ControlPlane::client_as`] gives a component under test an identity of its own, so a test
//! can prove from the API server's side what that component wrote.

mod audit;
mod client;
mod faults;
mod pki;
mod process;

pub use audit::{AuditEvent, parse as parse_audit_log};
pub use process::AUDIT_DIR_ENV;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::{Api, Client, api::PostParams};
use pki::Ca;
use process::Processes;

/// The Kubernetes version the binaries are built from and the tests run against.
pub const KUBERNETES_VERSION: &str = "v1.37.2";

/// kube-controller-manager controllers a test cluster runs by default: enough for namespace
/// deletion, garbage collection, ServiceAccounts and their tokens, and Deployments creating Pods
/// (which stay Pending: there is no kubelet and no scheduler).
pub const DEFAULT_CONTROLLERS: &[&str] = &[
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "deployment-controller",
    "replicaset-controller",
];

/// Why a control plane could not be started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{binary} not found at {path}: run hack/build-control-plane.sh (or set ONUS_K8S_BIN)")]
    MissingBinary { binary: String, path: PathBuf },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("generating certificates: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("{component} exited before it was ready ({status}); last log lines:\n{log}")]
    Exited {
        component: String,
        status: String,
        log: String,
    },
    #[error("{component} not ready after {seconds}s; last log lines:\n{log}")]
    Timeout {
        component: String,
        seconds: u64,
        log: String,
    },
    #[error("building a client: {0}")]
    Client(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// What to start.
#[derive(Clone, Debug)]
pub struct Options {
    /// Controllers for kube-controller-manager; empty runs no controller manager.
    pub controllers: Vec<String>,
    /// Where the run's directory (certificates, etcd data, logs, kubeconfig) is created.
    pub base_dir: PathBuf,
    /// Users whose every request is audited, reads and watches too (only writes otherwise).
    pub audit_users: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            controllers: DEFAULT_CONTROLLERS.iter().map(|c| c.to_string()).collect(),
            base_dir: std::env::temp_dir().join("onus-testenv"),
            audit_users: Vec::new(),
        }
    }
}

/// A running etcd + kube-apiserver (+ kube-controller-manager). Stopped and removed on drop.
pub struct ControlPlane {
    dir: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    bin_dir: PathBuf,
    processes: Mutex<Processes>,
    /// Issues client certificates for further identities.
    ca: Ca,
}

/// The Kubernetes version the tests run against: `$ONUS_K8S_VERSION` (`make test-oldest` sets
/// it with the binaries, `$ONUS_K8S_BIN`), else [`KUBERNETES_VERSION`].
pub fn kubernetes_version() -> String {
    std::env::var("ONUS_K8S_VERSION").unwrap_or_else(|_| KUBERNETES_VERSION.to_string())
}

/// Directory holding kube-apiserver, kube-controller-manager and kubectl.
pub fn kubernetes_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ONUS_K8S_BIN") {
        return PathBuf::from(dir);
    }
    cache_dir()
        .join(format!("k8s-{}", kubernetes_version()))
        .join("bin")
}

/// The helm version `hack/build-control-plane.sh` builds and the chart tests run.
pub const HELM_VERSION: &str = "v3.22.0";

fn cache_dir() -> PathBuf {
    std::env::var_os("ONUS_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/onus")))
        .unwrap_or_else(|| PathBuf::from("/tmp/onus-cache"))
}

/// The `helm` binary: in `$ONUS_HELM_BIN` if set, else in the cache where
/// `hack/build-control-plane.sh` puts it.
pub fn helm_bin() -> PathBuf {
    std::env::var_os("ONUS_HELM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join(format!("helm-{HELM_VERSION}")).join("bin"))
        .join("helm")
}

fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("127.0.0.1:0", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("127.0.0.1:0", e))
}

fn binary(dir: &Path, name: &str) -> Result<PathBuf, Error> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingBinary {
            binary: name.to_string(),
            path,
        })
    }
}

impl ControlPlane {
    /// Starts a control plane and blocks until it serves. Must not be called from inside an
    /// async context (it runs its own short-lived runtime for the readiness checks).
    pub fn start(options: Options) -> Result<ControlPlane, Error> {
        let bin_dir = kubernetes_bin_dir();
        let apiserver_bin = binary(&bin_dir, "kube-apiserver")?;
        let kcm_bin = binary(&bin_dir, "kube-controller-manager")?;
        let etcd_bin = etcd_bin_vendored::etcd_bin_path()
            .map_err(|e| Error::Client(e.to_string()))?
            .to_path_buf();

        process::sweep_stale_runs(&options.base_dir);
        let dir = process::new_run_dir(&options.base_dir)?;
        let ca = pki::write(&dir)?;
        let mut processes = Processes::new(dir.clone());

        let etcd_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        processes.spawn(
            "etcd",
            &etcd_bin,
            &[
                "--name=onus-testenv".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                format!("--initial-cluster=onus-testenv=http://127.0.0.1:{etcd_peer_port}"),
                // Test data is thrown away: durability only costs time here.
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        )?;

        let port = free_port()?;
        let server = format!("https://127.0.0.1:{port}");
        let d = |f: &str| dir.join(f).display().to_string();
        let audit = audit::apiserver_args(&dir, &options.audit_users)?;
        processes.spawn(
            "kube-apiserver",
            &apiserver_bin,
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                // The endpoint reconciler refuses a loopback address; nothing here needs the
                // `kubernetes` Service endpoints.
                "--endpoint-reconciler-type=none".into(),
                format!("--secure-port={port}"),
                format!("--tls-cert-file={}", d("apiserver.crt")),
                format!("--tls-private-key-file={}", d("apiserver.key")),
                format!("--client-ca-file={}", d("ca.crt")),
                format!("--service-account-key-file={}", d("sa.pub")),
                format!("--service-account-signing-key-file={}", d("sa.key")),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--authorization-mode=RBAC".into(),
                // Tests create privileged pods to check that onus reports them.
                "--allow-privileged=true".into(),
                format!("--cert-dir={}", d("apiserver-certs")),
            ]
            .into_iter()
            .chain(audit)
            .collect::<Vec<_>>(),
        )?;

        let kubeconfig = dir.join("kubeconfig");
        client::write_kubeconfig(
            &kubeconfig,
            &server,
            &dir.join("ca.crt"),
            &dir.join("admin.crt"),
            &dir.join("admin.key"),
        )?;

        let cp = ControlPlane {
            dir: dir.clone(),
            kubeconfig: kubeconfig.clone(),
            server,
            bin_dir,
            processes: Mutex::new(processes),
            ca,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        runtime.block_on(cp.wait_ready("kube-apiserver", Duration::from_secs(120)))?;

        if !options.controllers.is_empty() {
            let kcm_port = free_port()?;
            let kc = kubeconfig.display().to_string();
            cp.lock().spawn(
                "kube-controller-manager",
                &kcm_bin,
                &[
                    format!("--kubeconfig={kc}"),
                    format!("--authentication-kubeconfig={kc}"),
                    format!("--authorization-kubeconfig={kc}"),
                    format!("--controllers={}", options.controllers.join(",")),
                    format!("--service-account-private-key-file={}", d("sa.key")),
                    format!("--root-ca-file={}", d("ca.crt")),
                    "--use-service-account-credentials=false".into(),
                    "--leader-elect=false".into(),
                    "--bind-address=127.0.0.1".into(),
                    format!("--secure-port={kcm_port}"),
                    format!("--cert-dir={}", d("kcm-certs")),
                ],
            )?;
            if options
                .controllers
                .iter()
                .any(|c| c == "serviceaccount-controller")
            {
                let client = runtime.block_on(cp.admin_client())?;
                runtime.block_on(cp.wait_default_service_account(
                    &client,
                    "default",
                    Duration::from_secs(120),
                ))?;
            }
        }
        Ok(cp)
    }

    /// Path of an admin kubeconfig for this control plane (client certificate in system:masters).
    /// The process id of a component (`etcd`, `kube-apiserver`, `kube-controller-manager`),
    /// e.g. to read its CPU time.
    pub fn pid(&self, component: &str) -> Option<u32> {
        self.processes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pid(component)
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The run's directory (certificates, logs, etcd data).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A `kubectl` command with this control plane's kubeconfig.
    pub fn kubectl(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(self.bin_dir.join("kubectl"));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// Waits until the CustomResourceDefinition `name` (`<plural>.<group>`) is Established and
    /// kubectl finds its kind in discovery; panics after `timeout`.
    /// (`kubectl wait --for=condition=Established` fails at once, instead of waiting, when it
    /// reads the CRD before the API server has written any condition.)
    pub fn wait_crd_established(&self, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let jsonpath = r#"jsonpath={.status.conditions[?(@.type=="Established")].status}"#;
        loop {
            let out = self
                .kubectl()
                .args(["get", "crd", name, "-o", jsonpath])
                .output()
                .expect("kubectl runs");
            if out.status.success() && out.stdout == b"True" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "CRD {name} not Established after {timeout:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The API server updates discovery after the condition: until then kubectl finds no
        // mapping for the kind (a miss makes it read discovery afresh; its cache is per server).
        loop {
            let out = self
                .kubectl()
                .args(["get", name, "-o", "name"])
                .output()
                .expect("kubectl runs");
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "CRD {name} not in discovery after {timeout:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates a namespace named `<prefix>-<random>` with the given labels and waits until
    /// its `default` ServiceAccount exists (so Pods can be created in it).
    pub async fn namespace(
        &self,
        client: &Client,
        prefix: &str,
        labels: &[(&str, &str)],
    ) -> String {
        let name = format!("{prefix}-{}", random_suffix());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            }
        }))
        .expect("namespace literal");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        self.wait_default_service_account(client, &name, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("namespace {name}: no default ServiceAccount: {e}"));
        name
    }

    /// The last lines of a component's log (for failure messages).
    pub fn log_tail(&self, component: &str) -> String {
        process::log_tail(&self.dir, component)
    }

    /// Stops every process and removes the run's directory. Idempotent.
    pub fn stop(&self) {
        self.lock().shutdown();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Processes> {
        self.processes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn wait_ready(&self, component: &str, timeout: Duration) -> Result<(), Error> {
        let client = self.admin_client().await?;
        let deadline = Instant::now() + timeout;
        loop {
            self.lock().check_alive()?;
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("static request");
            if let Ok(body) = client.request_text(req).await
                && body.trim() == "ok"
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    component: component.into(),
                    seconds: timeout.as_secs(),
                    log: self.log_tail(component),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for the controller-manager to create `namespace`'s default ServiceAccount; fails
    /// at once if a component exited, and with the controller-manager's last log lines on
    /// timeout (it is the one that creates it).
    async fn wait_default_service_account(
        &self,
        client: &Client,
        namespace: &str,
        timeout: Duration,
    ) -> Result<(), Error> {
        let api = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
        let deadline = Instant::now() + timeout;
        loop {
            self.lock().check_alive()?;
            if let Ok(Some(_)) = api.get_opt("default").await {
                return Ok(());
            }
            if Instant::now() > deadline {
                let component = "kube-controller-manager";
                return Err(Error::Timeout {
                    component: component.into(),
                    seconds: timeout.as_secs(),
                    log: self.log_tail(component),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Eight random hex digits, for unique names in tests.
pub fn random_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

static SHARED: OnceLock<ControlPlane> = OnceLock::new();
static SHARED_OPTIONS: OnceLock<Options> = OnceLock::new();

/// Sets the options the shared control plane of this test binary starts with (e.g. users whose
/// reads are audited too). Must come before the first [`shared`]; returns false (changing
/// nothing) if the options were set already or the control plane runs.
pub fn configure_shared(options: Options) -> bool {
    SHARED.get().is_none() && SHARED_OPTIONS.set(options).is_ok()
}

/// The control plane shared by every test in this test binary, started on first use and
/// stopped when the process exits. Panics (failing the test) if it cannot start.
pub fn shared() -> &'static ControlPlane {
    SHARED.get_or_init(|| {
        // Called from async tests too: start on a plain thread, outside any runtime.
        let options = SHARED_OPTIONS.get().cloned().unwrap_or_default();
        let cp = std::thread::spawn(move || ControlPlane::start(options))
            .join()
            .expect("control plane start thread panicked")
            .unwrap_or_else(|e| panic!("starting the test control plane: {e}"));
        process::stop_at_exit(stop_shared);
        cp
    })
}

extern "C" fn stop_shared() {
    if let Some(cp) = SHARED.get() {
        cp.stop();
    }
}
