//! Child processes of a control plane and their lifetime.
//!
//! Children are spawned by one supervisor thread that lives as long as the process, with
//! `PR_SET_PDEATHSIG=SIGKILL`: the kernel signals the child when the *thread* that spawned it
//! exits, so spawning from a short-lived test thread would kill etcd when that test ends.

use std::{
    fs::{self, File},
    io::{Read, Seek, SeekFrom},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex, OnceLock,
        mpsc::{Sender, channel},
    },
    time::{Duration, Instant},
};

use crate::Error;

type SpawnRequest = (Command, Sender<std::io::Result<Child>>);

fn supervisor() -> &'static Mutex<Sender<SpawnRequest>> {
    static SUPERVISOR: OnceLock<Mutex<Sender<SpawnRequest>>> = OnceLock::new();
    SUPERVISOR.get_or_init(|| {
        let (tx, rx) = channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("onus-testenv-supervisor".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the supervisor thread");
        Mutex::new(tx)
    })
}

fn spawn_supervised(mut cmd: Command) -> std::io::Result<Child> {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = channel();
    supervisor()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("supervisor thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("supervisor thread is gone"))?
}

/// The processes of one control plane, in start order, and its directory.
pub(crate) struct Processes {
    dir: PathBuf,
    children: Vec<(String, Child)>,
    /// How each component was started, so a test can kill it and start it again.
    specs: Vec<(String, PathBuf, Vec<String>)>,
    stopped: bool,
}

impl Processes {
    pub fn new(dir: PathBuf) -> Self {
        Processes {
            dir,
            children: Vec::new(),
            specs: Vec::new(),
            stopped: false,
        }
    }

    pub fn spawn(&mut self, name: &str, bin: &Path, args: &[String]) -> Result<(), Error> {
        self.specs.retain(|(n, _, _)| n != name);
        self.specs
            .push((name.to_string(), bin.to_path_buf(), args.to_vec()));
        self.start(name, bin, args, false)
    }

    /// Starts `name` (its log appended to on a restart, so the earlier run stays readable).
    fn start(
        &mut self,
        name: &str,
        bin: &Path,
        args: &[String],
        append: bool,
    ) -> Result<(), Error> {
        let log_path = self.dir.join(format!("{name}.log"));
        let log = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&log_path)
            .map_err(|e| Error::io(&log_path, e))?;
        let log2 = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .current_dir(&self.dir);
        let child = spawn_supervised(cmd).map_err(|e| Error::io(bin, e))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// Kills `name` with SIGKILL (no chance to clean up) and reaps it; it can be started again
    /// with [`Processes::restart`]. Returns whether it was running.
    pub fn kill(&mut self, name: &str) -> bool {
        let Some(i) = self.children.iter().position(|(n, _)| n == name) else {
            return false;
        };
        let (_, mut child) = self.children.remove(i);
        let _ = child.kill();
        let _ = child.wait();
        true
    }

    /// Starts `name` again, as it was first started (after [`Processes::kill`]).
    pub fn restart(&mut self, name: &str) -> Result<(), Error> {
        if self.stopped || self.children.iter().any(|(n, _)| n == name) {
            return Ok(());
        }
        let (_, bin, args) = self
            .specs
            .iter()
            .find(|(n, _, _)| n == name)
            .cloned()
            .ok_or_else(|| Error::Client(format!("no component named {name} was started")))?;
        self.start(name, &bin, &args, true)
    }

    /// The arguments `name` was started with.
    pub fn args(&self, name: &str) -> Option<(PathBuf, Vec<String>)> {
        self.specs
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, bin, args)| (bin.clone(), args.clone()))
    }

    /// The process id of the component `name` (e.g. `kube-apiserver`), while it runs.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, child)| child.id())
    }

    /// Fails with the component's log if any child has exited.
    pub fn check_alive(&mut self) -> Result<(), Error> {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Exited {
                    component: name.clone(),
                    status: status.to_string(),
                    log: log_tail(&self.dir, name),
                });
            }
        }
        Ok(())
    }

    /// Stops children in reverse start order (SIGTERM, then SIGKILL after a grace period)
    /// and removes the directory.
    pub fn shutdown(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        while let Some((_, mut child)) = self.children.pop() {
            let pid = child.id() as libc::pid_t;
            // SAFETY: plain syscall on a pid we own and have not reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        archive_audit_logs(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The directory named by `$ONUS_AUDIT_DIR`, where each run's audit logs are kept after the
/// run (as `<run>-<file>`), so a check after the whole suite can read what every test's API
/// server logged (`make test` sets it).
pub const AUDIT_DIR_ENV: &str = "ONUS_AUDIT_DIR";

fn archive_audit_logs(dir: &Path) {
    let Some(archive) = std::env::var_os(AUDIT_DIR_ENV).map(PathBuf::from) else {
        return;
    };
    let run = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    if fs::create_dir_all(&archive).is_err() {
        return;
    }
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("audit") && name.ends_with(".log") {
            let _ = fs::copy(entry.path(), archive.join(format!("{run}-{name}")));
        }
    }
}

/// Creates `<base>/<pid>-<random>` for a new run.
pub(crate) fn new_run_dir(base: &Path) -> Result<PathBuf, Error> {
    let dir = base.join(format!(
        "{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir)
}

/// Removes run directories whose owning process is gone (a run killed with SIGKILL cannot
/// clean up after itself; its children died with it through PDEATHSIG).
pub(crate) fn sweep_stale_runs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the pid exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// The last ~40 lines of `<dir>/<component>.log`.
pub(crate) fn log_tail(dir: &Path, component: &str) -> String {
    let path = dir.join(format!("{component}.log"));
    let Ok(mut file) = File::open(&path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(8192)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Runs `f` when the process exits normally (libtest returns from main or calls exit).
pub(crate) fn stop_at_exit(f: extern "C" fn()) {
    // SAFETY: registering a plain extern "C" function; it only takes a Mutex and kills children.
    unsafe {
        libc::atexit(f);
    }
}
