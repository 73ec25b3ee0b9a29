//! Running `tally serve` as a child process on a loopback port, and measuring its data
//! directory.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

pub struct Server {
    child: Child,
    pub addr: crate::client::Endpoint,
    pub data_dir: PathBuf,
}

/// A free loopback port (the listener is dropped before the server binds it; nothing
/// else on this machine is expected to race for it).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Server {
    /// Start `bin serve` on a fresh port with `data_dir`; its output goes to `<data_dir>.log`.
    /// With `tls`, it serves https with a certificate from a CA made beside `data_dir`.
    pub async fn start(
        bin: &Path,
        data_dir: &Path,
        root_key: &str,
        epoch_ms: Option<u64>,
        tls: bool,
    ) -> anyhow::Result<Server> {
        let mut s = Server::spawn(bin, data_dir, root_key, epoch_ms, tls, None)?;
        if let Err(e) = crate::client::wait_ready(s.addr, 300).await {
            s.stop();
            let log_path = data_dir.with_extension("log");
            return Err(e.context(format!("tally serve did not come up; see {}", log_path.display())));
        }
        Ok(s)
    }

    /// Start `bin serve` as [`Server::start`] does (on `port`, or a fresh one), without
    /// waiting for it to answer; its output is appended to `<data_dir>.log`.
    pub fn spawn(
        bin: &Path,
        data_dir: &Path,
        root_key: &str,
        epoch_ms: Option<u64>,
        tls: bool,
        port: Option<u16>,
    ) -> anyhow::Result<Server> {
        Server::spawn_with(bin, data_dir, root_key, epoch_ms, tls, port, &[])
    }

    /// [`Server::spawn`] with more `serve` flags.
    pub fn spawn_with(
        bin: &Path,
        data_dir: &Path,
        root_key: &str,
        epoch_ms: Option<u64>,
        tls: bool,
        port: Option<u16>,
        extra: &[String],
    ) -> anyhow::Result<Server> {
        let port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let certs = data_dir.with_extension("certs");
        let log_path = data_dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--root-key")
            .arg(root_key)
            .env_remove("TALLY_ROOT_KEY")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(ms) = epoch_ms {
            cmd.arg("--epoch-ms").arg(ms.to_string());
        }
        cmd.args(extra);
        let ep = if tls {
            let made = Command::new(bin)
                .args(["cluster", "init-certs", "--out"])
                .arg(&certs)
                .stdout(Stdio::null())
                .status()?;
            anyhow::ensure!(made.success(), "tally cluster init-certs failed");
            cmd.arg("--tls-cert").arg(certs.join("server.pem")).arg("--tls-key").arg(certs.join("server.key"));
            crate::client::Endpoint::https(addr, &certs.join("ca.pem"))?
        } else {
            crate::client::Endpoint::plain(addr)
        };
        let child = cmd.spawn().with_context(|| format!("starting {} serve", bin.display()))?;
        Ok(Server { child, addr: ep, data_dir: data_dir.to_path_buf() })
    }

    /// SIGKILL: the process gets no chance to checkpoint or flush anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then wait (bounded) for a clean stop; SIGKILL if it hangs.
    pub fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// (resident, peak resident) set size of process `pid` in bytes, from /proc (`VmRSS`,
/// `VmHWM`).
pub fn rss_bytes(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Total size in bytes of the files under `path` (0 when missing).
pub fn dir_bytes(path: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(path) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Size of Tally's input log (every segment) under a data directory.
pub fn log_bytes(data_dir: &Path) -> u64 {
    dir_bytes(&data_dir.join("log"))
}

/// CPU time (user + system, seconds) a process has used so far, from /proc.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU time (seconds) of the server's executor thread (`tally-sequencer`): every write
/// is applied there one after another, so its CPU per document bounds the write rate.
pub fn executor_cpu_seconds(pid: u32) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.flatten().find_map(|t| {
        let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
        if comm.trim() != "tally-sequencer" {
            return None;
        }
        stat_cpu_seconds(&t.path().join("stat").to_string_lossy())
    })
}

fn stat_cpu_seconds(path: &str) -> Option<f64> {
    let f = stat_fields(path)?;
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The fields of a /proc stat file after the command name (field 3 onwards).
fn stat_fields(path: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The parent of process `pid`.
pub fn parent_pid(pid: u32) -> Option<u32> {
    stat_fields(&format!("/proc/{pid}/stat"))?.get(1)?.parse().ok()
}

/// CPU time (seconds) of a process and all its children, exited ones included: its own,
/// what it has reaped from children that exited (`cutime`, `cstime`), and its live
/// children's own. For PostgreSQL's postmaster that is the whole server, whose
/// backends come and go with connections.
pub fn tree_cpu_seconds(pid: u32) -> Option<f64> {
    let f = stat_fields(&format!("/proc/{pid}/stat"))?;
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    let mut ticks = field(11)? + field(12)? + field(13)? + field(14)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if parent_pid(child) == Some(pid) {
            ticks += stat_cpu_seconds(&format!("/proc/{child}/stat")).unwrap_or(0.0) * 100.0;
        }
    }
    Some(ticks / 100.0)
}
