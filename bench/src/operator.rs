//! The onus binary as a child process: start, /proc figures, /metrics, stop.

use std::{
    fs::File,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A running onus process.
pub struct Operator {
    child: Child,
    pub pid: u32,
    pub port: u16,
    /// When the process was spawned.
    pub started: Instant,
    pub log: PathBuf,
}

impl Operator {
    /// Starts `binary` against the cluster of `kubeconfig`, logging to `log`: a single instance
    /// (no leader election).
    pub fn start(
        binary: &Path,
        kubeconfig: &Path,
        null_evaluation: bool,
        log: PathBuf,
    ) -> anyhow::Result<Operator> {
        let mut args = vec!["--no-leader-election".to_string()];
        if null_evaluation {
            args.push("--null-evaluation".into());
        }
        Self::spawn(binary, kubeconfig, &args, &[], log)
    }

    /// Starts `binary` as one replica of an install with leader election, as the chart runs it:
    /// `$POD_NAME` (its identity in the Lease) and `$POD_NAMESPACE` (where the Lease lives).
    pub fn start_replica(
        binary: &Path,
        kubeconfig: &Path,
        pod_name: &str,
        pod_namespace: &str,
        log: PathBuf,
    ) -> anyhow::Result<Operator> {
        Self::spawn(
            binary,
            kubeconfig,
            &[],
            &[("POD_NAME", pod_name), ("POD_NAMESPACE", pod_namespace)],
            log,
        )
    }

    fn spawn(
        binary: &Path,
        kubeconfig: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> anyhow::Result<Operator> {
        let port = free_port()?;
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(binary);
        cmd.args(args)
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{port}"))
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("ONUS_BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent. The driver
        // spawns from its main thread, which lives as long as the driver.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Operator {
            pid: child.id(),
            child,
            port,
            started,
            log,
        })
    }

    /// Fails (with the log's tail) if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("onus exited ({status}); log:\n{}", tail.join("\n"));
        }
        Ok(())
    }

    /// `(VmRSS, VmHWM)` in bytes.
    pub fn memory(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("{name} in /proc/{}/status", self.pid))?;
            let kb: u64 = line.split_whitespace().nth(1).context("value")?.parse()?;
            Ok(kb * 1024)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// User plus system CPU time so far.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        process_cpu(self.pid)
    }

    /// GET a path of the HTTP endpoint: `(status code, body)`.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("HTTP status")?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((code, body))
    }

    /// Waits until `/readyz` answers 200 (the caches have synced); returns when that was seen.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if let Ok((200, _)) = self.get("/readyz").await {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!("onus not ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The operator's metrics that the bench reads.
    pub async fn metrics(&self) -> anyhow::Result<Metrics> {
        let (code, body) = self.get("/metrics").await?;
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        Ok(Metrics::parse(&body))
    }

    /// Sends `signal` (e.g. `libc::SIGKILL`) to the process.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: plain syscall on a pid we own and have not reaped.
        unsafe { libc::kill(self.pid as libc::pid_t, signal) };
    }

    /// Waits until the process has exited; its exit status (None: still running after
    /// `timeout`).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(mut self) {
        // SAFETY: plain syscall on a pid we own and have not reaped.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Figures from onus's `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Metrics {
    /// `onus_watch_events_total`, every kind.
    pub watch_events: f64,
    /// `onus_reconcile_duration_seconds` sum and count.
    pub reconcile_seconds: f64,
    pub reconciles: f64,
    /// `onus_detection_latency_seconds` sum and count: a watched change reaching the index →
    /// the status write that reflects it, as onus itself sees it.
    pub detection_seconds: f64,
    pub detections: f64,
    /// `onus_standby_evaluations_total`: evaluations made while standing by.
    pub standby_evaluations: f64,
    /// `onus_leader`: 1 while this instance leads.
    pub leader: f64,
}

impl Metrics {
    fn parse(text: &str) -> Self {
        let mut m = Metrics::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let metric = name.split('{').next().unwrap_or(name);
            match metric {
                "onus_watch_events_total" => m.watch_events += value,
                "onus_reconcile_duration_seconds_sum" => m.reconcile_seconds += value,
                "onus_reconcile_duration_seconds_count" => m.reconciles += value,
                "onus_detection_latency_seconds_sum" => m.detection_seconds += value,
                "onus_detection_latency_seconds_count" => m.detections += value,
                "onus_standby_evaluations_total" => m.standby_evaluations += value,
                "onus_leader" => m.leader = value,
                _ => {}
            }
        }
        m
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// User plus system CPU time of process `pid` so far.
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')').context("stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields[11].parse()?;
    let stime: u64 = fields[12].parse()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(
        (utime + stime) * 1_000_000_000 / ticks,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_metrics_the_bench_needs() {
        let text = "# HELP onus_watch_events Watch events received.\n\
            # TYPE onus_watch_events counter\n\
            onus_watch_events_total{kind=\"Pod\"} 120\n\
            onus_watch_events_total{kind=\"Namespace\"} 3\n\
            onus_reconcile_duration_seconds_sum 0.5\n\
            onus_reconcile_duration_seconds_count 10\n\
            onus_reconcile_duration_seconds_bucket{le=\"0.001\"} 1\n\
            onus_detection_latency_seconds_sum{policy=\"a\"} 0.25\n\
            onus_detection_latency_seconds_count{policy=\"a\"} 5\n\
            onus_standby_evaluations_total 7\n\
            onus_leader 0\n";
        let m = Metrics::parse(text);
        assert_eq!(m.watch_events, 123.0);
        assert_eq!(m.reconcile_seconds, 0.5);
        assert_eq!(m.reconciles, 10.0);
        assert_eq!(m.detection_seconds, 0.25);
        assert_eq!(m.detections, 5.0);
        assert_eq!(m.standby_evaluations, 7.0);
        assert_eq!(m.leader, 0.0);
    }
}
