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

/// Size of Tally's input log (every segment) under a data directory, without the zeros
/// the log writes ahead of its appends (up to 1 MiB at the end of the last segment; a
/// frame that itself ends in zero bytes is counted a few bytes short).
pub fn log_bytes(data_dir: &Path) -> u64 {
    let dir = data_dir.join("log");
    let zeros: u64 = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .map(|e| trailing_zeros(&e.path()))
                .sum()
        })
        .unwrap_or(0);
    dir_bytes(&dir) - zeros
}

/// How many zero bytes the file at `path` ends with, looking back at most 2 MiB.
fn trailing_zeros(path: &Path) -> u64 {
    use std::os::unix::fs::FileExt;
    const STEP: u64 = 64 << 10;
    let Ok(f) = std::fs::File::open(path) else { return 0 };
    let Ok(len) = f.metadata().map(|m| m.len()) else { return 0 };
    let mut buf = vec![0u8; STEP as usize];
    let mut end = len;
    while end > 0 && len - end < 2 << 20 {
        let from = end.saturating_sub(STEP);
        let chunk = &mut buf[..(end - from) as usize];
        if f.read_exact_at(chunk, from).is_err() {
            return 0;
        }
        match chunk.iter().rposition(|&b| b != 0) {
            Some(i) => return len - (from + i as u64 + 1),
            None => end = from,
        }
    }
    len - end
}

/// CPU time (user + system, seconds) a process has used so far, from /proc.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU time (seconds) of processes `pids` together (the members of a cluster); None when
/// there are none or one cannot be read.
pub fn cpu_seconds_of(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| cpu_seconds(p)).sum()
}

/// [`executor_cpu_seconds`] of processes `pids` together.
pub fn executor_cpu_seconds_of(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| executor_cpu_seconds(p)).sum()
}

/// CPU time (seconds) of the server's executor thread (`tally-sequencer`, or
/// `tally-executor` in a cluster): every write is applied there one after another, so its
/// CPU per document bounds the write rate.
pub fn executor_cpu_seconds(pid: u32) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.flatten().find_map(|t| {
        let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
        if thread_role(comm.trim_end()) != "executor" {
            return None;
        }
        stat_cpu_seconds(&t.path().join("stat").to_string_lossy())
    })
}

/// What a thread of `tally serve` does, from its name (`/proc/…/comm`, at most 15 bytes):
/// the part of the server its CPU is reported under (see [`ThreadCpu`]).
pub fn thread_role(comm: &str) -> &'static str {
    match comm {
        // Request threads: HTTP, the body's parse, authentication, answers; in a cluster
        // also the Raft network. Blocking-pool threads have the same name; `tally-accept`
        // takes connections (and answers probes), `tally-conn-N` serves them.
        "tokio-rt-worker" | "tally-accept" => "http",
        c if c.starts_with("tally-conn-") => "http",
        // The executor: one thread applies every write, one after another.
        "tally-sequencer" | "tally-executor" => "executor",
        // The write-behind flusher: queued commits into redb.
        "tally-store-flu" => "flusher",
        // The input log's appends and syncs (one node) or the Raft log's (a cluster).
        "tally-logger" | "tally-raftlog" => "log",
        "tally-leafhash" => "leaf index",
        "tally-long" => "long queries",
        _ => "other",
    }
}

/// CPU seconds a server's threads have used so far, summed by [`thread_role`], with the
/// whole process's beside them (a thread that ended is in the total, not in a role).
#[derive(Clone, Debug, Default)]
pub struct ThreadCpu {
    pub total: f64,
    pub by_role: std::collections::BTreeMap<&'static str, f64>,
}

impl ThreadCpu {
    /// The threads of process `pid`, from /proc. The total is read last: a thread's CPU
    /// only grows, so the roles never add up to more than it.
    pub fn read(pid: u32) -> Option<ThreadCpu> {
        let mut by_role = std::collections::BTreeMap::new();
        for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
            // A thread may end between the listing and the read: it is then left out.
            let Ok(comm) = std::fs::read_to_string(t.path().join("comm")) else { continue };
            let Some(s) = stat_cpu_seconds(&t.path().join("stat").to_string_lossy()) else { continue };
            *by_role.entry(thread_role(comm.trim_end())).or_insert(0.0) += s;
        }
        Some(ThreadCpu { total: cpu_seconds(pid)?, by_role })
    }

    /// [`ThreadCpu::read`] of processes `pids` together, role by role (the members of a
    /// cluster); None when there are none or one cannot be read.
    pub fn read_all(pids: &[u32]) -> Option<ThreadCpu> {
        if pids.is_empty() {
            return None;
        }
        let mut all = ThreadCpu::default();
        for &p in pids {
            let one = ThreadCpu::read(p)?;
            all.total += one.total;
            for (role, s) in one.by_role {
                *all.by_role.entry(role).or_insert(0.0) += s;
            }
        }
        Some(all)
    }

    /// Microseconds per operation of each role between `self` (before) and `after`, over
    /// `ops` operations, largest first. What no live thread accounts for (threads that
    /// ended within the window) goes to "other", so the parts add up to the process's CPU
    /// (to within the ticks that pass between the readings of one moment).
    pub fn per_op(&self, after: &ThreadCpu, ops: u64) -> Vec<(String, f64)> {
        let n = ops.max(1) as f64;
        let mut parts: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
        for (role, s1) in &after.by_role {
            let d = s1 - self.by_role.get(role).copied().unwrap_or(0.0);
            *parts.entry(role).or_insert(0.0) += d.max(0.0);
        }
        let roles: f64 = parts.values().sum();
        // Half a clock tick (/proc counts in 10 ms ticks) is rounding, not a thread.
        let rest = (after.total - self.total) - roles;
        if rest > 0.005 {
            *parts.entry("other").or_insert(0.0) += rest;
        }
        let mut out: Vec<(String, f64)> = parts.into_iter().map(|(r, s)| (r.to_string(), s * 1e6 / n)).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The log's size leaves out the zeros at the end of its segments (written ahead of
    /// the appends), across more than one read step, and nothing else.
    #[test]
    fn log_bytes_leave_out_the_zeros_written_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::create_dir(&log).unwrap();
        let mut last = vec![7u8; 1000];
        last.extend(std::iter::repeat_n(0u8, 300_000));
        std::fs::write(log.join("00000000000000000002.seg"), &last).unwrap();
        std::fs::write(log.join("00000000000000000001.seg"), vec![5u8; 4000]).unwrap();
        std::fs::write(log.join("notes.txt"), vec![0u8; 10]).unwrap();
        assert_eq!(log_bytes(dir.path()), 4000 + 1000 + 10);
        std::fs::write(log.join("00000000000000000003.seg"), vec![0u8; 100]).unwrap();
        assert_eq!(log_bytes(dir.path()), 4000 + 1000 + 10);
    }

    fn cpu(total: f64, roles: &[(&'static str, f64)]) -> ThreadCpu {
        ThreadCpu { total, by_role: roles.iter().copied().collect() }
    }

    /// Each role's growth per operation, largest first; CPU no live thread accounts for
    /// (a thread that ended in the window) is "other", so the parts add up to the total.
    #[test]
    fn per_op_splits_the_process_cpu_by_role_and_adds_up() {
        let before = cpu(10.0, &[("http", 4.0), ("executor", 3.0), ("other", 1.0)]);
        let after = cpu(13.0, &[("http", 5.5), ("executor", 4.0), ("flusher", 0.25), ("other", 1.0)]);
        let parts = per_op_map(&before.per_op(&after, 1000));
        assert_eq!(parts["http"], 1500.0);
        assert_eq!(parts["executor"], 1000.0);
        assert_eq!(parts["flusher"], 250.0);
        // 3 s in all, 2.75 s in live threads' roles: 0.25 s from a thread that ended.
        assert_eq!(parts["other"], 250.0);
        let sum: f64 = parts.values().sum();
        assert!((sum - 3000.0).abs() < 1e-6, "{parts:?}");
        let order: Vec<String> = before.per_op(&after, 1000).into_iter().map(|(r, _)| r).collect();
        assert_eq!(order, ["http", "executor", "flusher", "other"]);
    }

    fn per_op_map(v: &[(String, f64)]) -> std::collections::BTreeMap<String, f64> {
        v.iter().cloned().collect()
    }

    /// The server's thread names map to their parts; anything else is "other".
    #[test]
    fn thread_names_map_to_roles() {
        assert_eq!(thread_role("tokio-rt-worker"), "http");
        assert_eq!(thread_role("tally-sequencer"), "executor");
        assert_eq!(thread_role("tally-executor"), "executor");
        assert_eq!(thread_role("tally-store-flu"), "flusher");
        assert_eq!(thread_role("tally-raftlog"), "log");
        assert_eq!(thread_role("tally-logger"), "log");
        assert_eq!(thread_role("tally-accept"), "http");
        assert_eq!(thread_role("tally-conn-1"), "http");
        assert_eq!(thread_role("tally"), "other");
    }

    /// Reading a live process (this test's own) finds its threads, and they never add up
    /// to more than the process.
    #[test]
    fn reads_a_live_process_threads() {
        let busy = std::thread::Builder::new()
            .name("tally-sequencer".into())
            .spawn(|| {
                let t = std::time::Instant::now();
                let mut x = 0u64;
                while t.elapsed() < Duration::from_millis(60) {
                    x = x.wrapping_mul(31).wrapping_add(7);
                }
                std::hint::black_box(x);
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let cpu = ThreadCpu::read(std::process::id()).expect("/proc readable");
        busy.join().unwrap();
        assert!(cpu.by_role.contains_key("executor"), "{cpu:?}");
        let roles: f64 = cpu.by_role.values().sum();
        assert!(roles <= cpu.total + 0.011, "{cpu:?}");
    }
}
