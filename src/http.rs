//! The operator's HTTP endpoints: `/metrics`, `/healthz` and `/readyz`.
//!
//! Readiness: every instance runs the watches (standbys are warm), and none is ready before its
//! caches have synced (the controller flips [`Readiness::set_synced`]). A synced instance is
//! then ready while it leads, or while it is a *healthy* standby, i.e. its last look at the
//! leader Lease succeeded. Reporting warm standbys as ready lets a Deployment's rolling update
//! and a PodDisruptionBudget count them as available, and only them: an update never removes
//! the leader before its successor holds the cluster in its caches. A standby that cannot reach
//! the API server is not ready: it could not take over.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// The content type of the OpenMetrics text exposition that [`Metrics::render`] produces.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether this instance should receive traffic (`/readyz`); cheap to clone, clones share state.
#[derive(Clone, Default)]
pub struct Readiness {
    inner: Arc<Flags>,
}

#[derive(Default)]
struct Flags {
    synced: AtomicBool,
    standby: AtomicBool,
    leading: AtomicBool,
}

impl Readiness {
    /// Not ready until told otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set by the controller once every watch has listed (true) and cleared when it stops.
    pub fn set_synced(&self, synced: bool) {
        self.inner.synced.store(synced, Ordering::Release);
    }

    /// Set by leader election while this instance is a healthy standby (not leading, and the
    /// Lease is observable).
    pub fn set_standby(&self, healthy: bool) {
        self.inner.standby.store(healthy, Ordering::Release);
    }

    /// Set while this instance leads (always, for a single instance without leader election).
    pub fn set_leading(&self, leading: bool) {
        self.inner.leading.store(leading, Ordering::Release);
    }

    /// Ready once synced, as the leader (or single instance) or as a healthy standby.
    pub fn is_ready(&self) -> bool {
        self.inner.synced.load(Ordering::Acquire)
            && (self.inner.leading.load(Ordering::Acquire)
                || self.inner.standby.load(Ordering::Acquire))
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    readiness: Readiness,
}

/// The router of the operator's HTTP endpoints.
pub fn router(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, readiness })
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        state.metrics.render(),
    )
}

/// Answering at all proves the process is alive and its runtime schedules tasks.
async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Binds the listening socket (separately from serving, so a taken port fails at startup).
///
/// The unspecified IPv6 address (`[::]`, the default) listens on IPv6 and IPv4 alike: the socket
/// is made dual-stack explicitly, whatever the node's `net.ipv6.bindv6only`. On a node without
/// IPv6 (disabled in the kernel) it falls back to `0.0.0.0` on the same port.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    if let SocketAddr::V6(v6) = addr
        && v6.ip().is_unspecified()
    {
        match dual_stack(addr) {
            Ok(listener) => return Ok(listener),
            Err(error) if ipv6_unavailable(&error) => {
                tracing::warn!(%error, "No IPv6 on this node; listening on IPv4 only");
                let v4 = SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, addr.port()));
                return TcpListener::bind(v4).await;
            }
            Err(error) => return Err(error),
        }
    }
    TcpListener::bind(addr).await
}

/// A listening IPv6 socket that accepts IPv4 connections too (IPv4-mapped addresses).
fn dual_stack(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(false)?;
    // As tokio's own bind: a restarted process rebinds while old connections linger.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// Whether binding failed because the node has no IPv6 (not e.g. because the port is taken).
fn ipv6_unavailable(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::AddrNotAvailable
        || error.raw_os_error() == Some(libc::EAFNOSUPPORT)
}

/// Serves `router` on `listener` until `shutdown` completes, then finishes open requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn get(router: &Router, path: &str) -> (StatusCode, String, Option<String>) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (
            status,
            String::from_utf8_lossy(&body).into_owned(),
            content_type,
        )
    }

    fn app() -> (Router, Metrics, Readiness) {
        let metrics = Metrics::new();
        let readiness = Readiness::new();
        (
            router(metrics.clone(), readiness.clone()),
            metrics,
            readiness,
        )
    }

    #[tokio::test]
    async fn healthz_answers_ok() {
        let (router, _, _) = app();
        assert_eq!(get(&router, "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn readyz_is_unavailable_before_caches_sync() {
        let (router, _, _) = app();
        assert_eq!(
            get(&router, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn readyz_is_ok_for_a_leader_once_caches_synced() {
        let (router, _, readiness) = app();
        readiness.set_leading(true);
        assert_eq!(
            get(&router, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        readiness.set_synced(true);
        assert_eq!(get(&router, "/readyz").await.0, StatusCode::OK);
        readiness.set_leading(false);
        assert_eq!(
            get(&router, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "neither leader nor standby"
        );
    }

    #[tokio::test]
    async fn readyz_is_ok_for_a_healthy_warm_standby() {
        let (router, _, readiness) = app();
        readiness.set_standby(true);
        assert_eq!(
            get(&router, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "a standby whose caches are cold could not take over at once"
        );
        readiness.set_synced(true);
        assert_eq!(get(&router, "/readyz").await.0, StatusCode::OK);
        readiness.set_standby(false);
        assert_eq!(
            get(&router, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn metrics_serves_the_exposition() {
        let (router, metrics, _) = app();
        metrics.set_leader(true);
        let (status, body, content_type) = get(&router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some(OPENMETRICS_CONTENT_TYPE));
        assert!(body.lines().any(|l| l == "onus_leader 1"), "{body}");
        assert!(body.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn unknown_path_is_not_found() {
        let (router, _, _) = app();
        assert_eq!(get(&router, "/nope").await.0, StatusCode::NOT_FOUND);
    }
}

#[cfg(test)]
mod bind_tests {
    use std::net::{Ipv4Addr, Ipv6Addr, TcpStream};

    use super::*;

    fn has_ipv6() -> bool {
        std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
    }

    #[tokio::test]
    async fn the_unspecified_ipv6_address_accepts_ipv4_and_ipv6() {
        let listener = bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let connect = move |ip: std::net::IpAddr| {
            std::thread::spawn(move || TcpStream::connect((ip, port)).map(|_| ()))
                .join()
                .expect("connect thread")
        };
        connect(Ipv4Addr::LOCALHOST.into()).expect("IPv4 connects");
        if has_ipv6() {
            assert!(listener.local_addr().expect("addr").is_ipv6());
            connect(Ipv6Addr::LOCALHOST.into()).expect("IPv6 connects");
        }
    }

    #[test]
    fn only_a_missing_ipv6_falls_back_to_ipv4() {
        let io = std::io::Error::from_raw_os_error;
        assert!(ipv6_unavailable(&io(libc::EAFNOSUPPORT)));
        assert!(ipv6_unavailable(&io(libc::EADDRNOTAVAIL)));
        assert!(!ipv6_unavailable(&io(libc::EADDRINUSE)));
        assert!(!ipv6_unavailable(&io(libc::EACCES)));
    }

    #[tokio::test]
    async fn a_taken_port_is_an_error_not_a_fallback() {
        let first = bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))
            .await
            .expect("bind");
        let port = first.local_addr().expect("addr").port();
        assert!(
            bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
                .await
                .is_err()
        );
    }
}
