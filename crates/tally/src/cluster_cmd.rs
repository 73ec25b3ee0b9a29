//! Cluster subcommands and flags: `serve --node-id/--cluster`, `dev-cluster`, and
//! `cluster status|add|remove`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};

/// `tally serve` flags that make the server a member of a replicated cluster.
#[derive(Args, Clone, Debug, Default)]
pub struct ClusterFlags {
    /// This member's id (with --cluster).
    #[arg(long, env = "TALLY_NODE_ID")]
    pub node_id: Option<u64>,
    /// The members' peer addresses, `1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003`.
    /// Starting every listed member forms the cluster; restarts rejoin it.
    #[arg(long, env = "TALLY_CLUSTER")]
    pub cluster: Option<String>,
    /// Peer address of a member that is not in --cluster (it waits for `tally cluster add`).
    #[arg(long, env = "TALLY_PEER_LISTEN")]
    pub peer_listen: Option<SocketAddr>,
    /// Milliseconds added to every message to and from a peer (each way), to emulate members far apart: one
    /// number for every peer, or per peer as `2=50,3=150`.
    #[arg(long, default_value = "0", env = "TALLY_PEER_LATENCY_MS")]
    pub peer_latency_ms: String,
    /// Longest a write waits for a majority before answering 503 unavailable.
    #[arg(long, env = "TALLY_WRITE_TIMEOUT_MS")]
    pub write_timeout_ms: Option<u64>,
    /// While tenants compete, the estimated apply work (ms) the leader keeps proposed ahead
    /// of its executor; more waits in the fair queue. Lower favours a quiet tenant's
    /// latency, higher a flooding tenant's throughput. Default: 7 + 4 × the peer latency.
    #[arg(long, env = "TALLY_WORK_AHEAD_MS")]
    pub work_ahead_ms: Option<u64>,
    /// This member's certificate for mutual TLS with the other members (PEM; it must name
    /// the member as the DNS name member-ID.tally.invalid, see `tally cluster init-certs`).
    /// With --peer-key and --peer-ca; members then need no shared token.
    #[arg(long, requires_all = ["peer_key", "peer_ca"])]
    pub peer_cert: Option<PathBuf>,
    /// The private key of --peer-cert (PEM).
    #[arg(long, requires = "peer_cert")]
    pub peer_key: Option<PathBuf>,
    /// The cluster CA (PEM): peers must present a certificate it signed.
    #[arg(long, requires = "peer_cert")]
    pub peer_ca: Option<PathBuf>,
    /// Open peer-port connections at most (members hold a few each; the rest is
    /// headroom); past it a new connection is closed at once.
    #[arg(long, default_value_t = 4_096, env = "TALLY_PEER_CONNECTIONS_MAX")]
    pub peer_connections_max: usize,
    /// Longest a peer request's headers (and, with --peer-cert, the TLS handshake) may
    /// take to arrive.
    #[arg(long, default_value_t = 10_000, env = "TALLY_PEER_HEADER_READ_TIMEOUT_MS")]
    pub peer_header_read_timeout_ms: u64,
    /// A peer connection with no request in progress for this long is closed.
    #[arg(long, default_value_t = 120_000, env = "TALLY_PEER_IDLE_TIMEOUT_MS")]
    pub peer_idle_timeout_ms: u64,
    /// A peer request body that sends nothing for this long is dropped.
    #[arg(long, default_value_t = 30_000, env = "TALLY_PEER_BODY_STALL_TIMEOUT_MS")]
    pub peer_body_stall_timeout_ms: u64,
    /// Test-only: enables POST /admin/faults (isolate this member from its peers).
    #[arg(long, hide = true)]
    pub fault_injection: bool,
    /// Build a Raft snapshot every this many log entries.
    #[arg(long, hide = true)]
    pub snapshot_logs: Option<u64>,
    /// Build a Raft snapshot (and let the log before it be purged) every this many MiB of
    /// log entries appended (default 256; docs/operations.md).
    #[arg(long, env = "TALLY_SNAPSHOT_LOG_MIB")]
    pub snapshot_log_mib: Option<u64>,
}

impl ClusterFlags {
    pub fn options(&self) -> anyhow::Result<Option<tally_server::ClusterOptions>> {
        let (Some(node_id), Some(list)) = (self.node_id, self.cluster.as_deref()) else {
            anyhow::ensure!(self.node_id.is_none() && self.cluster.is_none(), "--node-id and --cluster go together");
            return Ok(None);
        };
        Ok(Some(tally_server::ClusterOptions {
            node_id,
            members: tally_server::cluster::parse_members(list)?,
            peer_listen: self.peer_listen,
            peer_latency_ms: tally_server::cluster::parse_latency(&self.peer_latency_ms)?,
            fault_injection: self.fault_injection,
            snapshot_logs: self.snapshot_logs,
            snapshot_log_bytes: self.snapshot_log_mib.map(|m| m.max(1) << 20),
            write_timeout_ms: self.write_timeout_ms,
            work_ahead_ms: self.work_ahead_ms,
            peer_tls: self.peer_tls(),
            peer_limits: self.peer_limits(),
        }))
    }
}

impl ClusterFlags {
    fn peer_limits(&self) -> tally_server::peer_port::PeerPortLimits {
        let ms = |v: u64| std::time::Duration::from_millis(v.max(1));
        tally_server::peer_port::PeerPortLimits {
            connections_max: self.peer_connections_max.max(1),
            header_read_timeout: ms(self.peer_header_read_timeout_ms),
            idle_timeout: ms(self.peer_idle_timeout_ms),
            body_stall_timeout: ms(self.peer_body_stall_timeout_ms),
        }
    }

    fn peer_tls(&self) -> Option<tally_server::peer_tls::PeerTlsFiles> {
        let (cert, key, ca) = (self.peer_cert.clone()?, self.peer_key.clone()?, self.peer_ca.clone()?);
        Some(tally_server::peer_tls::PeerTlsFiles { cert, key, ca })
    }
}

#[derive(Args, Debug)]
pub struct DevClusterArgs {
    /// How many members.
    #[arg(long, default_value_t = 3)]
    pub replicas: u64,
    /// Parent directory of the members' data directories (node1, node2, …).
    #[arg(long, default_value = "./tally-cluster")]
    pub data_dir: PathBuf,
    /// Member i serves clients on BASE+i-1 and peers on BASE+100+i-1.
    #[arg(long, default_value_t = 8441)]
    pub base_port: u16,
    #[arg(long, env = "TALLY_ROOT_KEY", hide_env_values = true)]
    pub root_key: Option<String>,
    /// Milliseconds added to every message between members, each way.
    #[arg(long, default_value_t = 0)]
    pub peer_latency_ms: u64,
    /// Each member's epoch (`tally serve --epoch-ms`).
    #[arg(long, default_value_t = tally_server::cluster::MEMBER_EPOCH_MS)]
    pub epoch_ms: u64,
    /// Members authenticate each other with the shared root-key token over plain HTTP
    /// instead of mutual TLS with the certificates made in DATA_DIR/certs.
    #[arg(long)]
    pub plain_peers: bool,
}

pub fn dev_cluster(a: DevClusterArgs) -> anyhow::Result<()> {
    anyhow::ensure!((1..=9).contains(&a.replicas), "--replicas must be between 1 and 9");
    let exe = std::env::current_exe().context("locating the tally binary")?;
    std::fs::create_dir_all(&a.data_dir)?;
    let key_file = a.data_dir.join("root_key");
    let root_key = match a.root_key.clone() {
        Some(k) => k,
        None => match std::fs::read_to_string(&key_file) {
            Ok(k) => k.trim().to_string(),
            Err(_) => {
                let k = crate::root_key_cmd::generate("tally-dev-");
                std::fs::write(&key_file, &k)?;
                k
            }
        },
    };
    let peer = |i: u64| format!("127.0.0.1:{}", a.base_port as u64 + 100 + i - 1);
    let client = |i: u64| format!("127.0.0.1:{}", a.base_port as u64 + i - 1);
    let list: Vec<String> = (1..=a.replicas).map(|i| format!("{i}={}", peer(i))).collect();
    let list = list.join(",");
    let certs = a.data_dir.join("certs");
    if !a.plain_peers {
        dev_certs(&certs, a.replicas)?;
    }
    let mut children: Vec<(u64, Child)> = Vec::new();
    for i in 1..=a.replicas {
        let dir = a.data_dir.join(format!("node{i}"));
        let mut cmd = Command::new(&exe);
        cmd.args(["serve", "--node-id", &i.to_string(), "--cluster", &list, "--listen", &client(i)]);
        if !a.plain_peers {
            let f = |ext: &str| certs.join(format!("member-{i}.{ext}"));
            cmd.arg("--peer-cert").arg(f("pem")).arg("--peer-key").arg(f("key"));
            cmd.arg("--peer-ca").arg(certs.join("ca.pem"));
        }
        // The root key is cluster data: with mutual TLS only member 1 is given it, and
        // logs it when the cluster first starts; the others never hold it. Plain peers
        // derive their shared token from it, so there every member needs it.
        if i == 1 || a.plain_peers {
            cmd.env("TALLY_ROOT_KEY", &root_key);
        } else {
            cmd.env_remove("TALLY_ROOT_KEY");
        }
        let child = cmd
            .arg("--data-dir")
            .arg(&dir)
            .args(["--epoch-ms", &a.epoch_ms.to_string(), "--peer-latency-ms", &a.peer_latency_ms.to_string()])
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting member {i}"))?;
        children.push((i, child));
    }
    println!("tally dev-cluster: {} members, data in {}", a.replicas, a.data_dir.display());
    if a.plain_peers {
        println!("root key: {root_key}");
    } else {
        // The cluster's root key is replicated data: this is only member 1's bootstrap
        // proposal, and stops being the root key after `tally root-key rotate`.
        println!("root key: {root_key} (given to member 1 only; it sets the cluster's root key on first start)");
    }
    if !a.plain_peers {
        println!("members talk mutual TLS with the certificates in {}", certs.display());
    }
    for i in 1..=a.replicas {
        println!("  member {i}: http://{}   (peer port {})", client(i), peer(i));
    }
    println!("Point any FQL v4 driver at any member. Ctrl-C stops them all.");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut poll = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = poll.tick() => {
                    for (i, c) in children.iter_mut() {
                        if let Ok(Some(st)) = c.try_wait() {
                            eprintln!("tally dev-cluster: member {i} exited ({st}); the others keep running");
                        }
                    }
                    children.retain_mut(|(_, c)| !matches!(c.try_wait(), Ok(Some(_))));
                    if children.is_empty() {
                        break;
                    }
                }
            }
        }
        anyhow::Ok(())
    })?;
    for (_, c) in &children {
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, c) in children.iter_mut() {
        while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(c.try_wait(), Ok(None)) {
            eprintln!("tally dev-cluster: member {i} did not stop; killing it");
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    println!("tally dev-cluster: stopped");
    Ok(())
}

/// The CA and member certificates a dev cluster needs, made once.
fn dev_certs(dir: &std::path::Path, replicas: u64) -> anyhow::Result<()> {
    let missing: Vec<u64> = (1..=replicas).filter(|i| !dir.join(format!("member-{i}.pem")).exists()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    crate::certs_cmd::init_certs(&crate::certs_cmd::InitCertsArgs {
        members: missing,
        out: dir.to_path_buf(),
        hosts: vec!["localhost".into(), "127.0.0.1".into()],
        days: 825,
        expired: false,
    })
}

/// How a cluster command reaches a member (`tally cluster …`, `tally root-key …`).
#[derive(Args, Debug)]
pub struct MemberArgs {
    /// Client endpoint of any member, e.g. http://127.0.0.1:8441.
    #[arg(long, default_value = "http://127.0.0.1:8441", global = true)]
    pub endpoint: String,
    /// The (current) root key.
    #[arg(long, env = "TALLY_ROOT_KEY", hide_env_values = true, global = true)]
    pub root_key: Option<String>,
    /// The CA (PEM) to trust for an https:// --endpoint (e.g. ca.pem of init-certs).
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub member: MemberArgs,
    #[command(subcommand)]
    pub cmd: ClusterCmd,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Show the member's view of the cluster.
    Status,
    /// Add a member (started with `serve --node-id ID --peer-listen PEER --cluster …`):
    /// it catches up (by snapshot if needed), then votes.
    Add {
        #[arg(long)]
        id: u64,
        /// The new member's peer address.
        #[arg(long)]
        peer: SocketAddr,
    },
    /// Remove a member from the cluster.
    Remove {
        #[arg(long)]
        id: u64,
    },
    /// Make a cluster CA and per-member certificates for mutual TLS (and a client-port
    /// certificate), for a quick start.
    InitCerts(crate::certs_cmd::InitCertsArgs),
}

pub fn cluster(a: ClusterArgs) -> anyhow::Result<()> {
    let key = a.member.root_key.clone().unwrap_or_default();
    let (method, path, body) = match &a.cmd {
        ClusterCmd::InitCerts(c) => return crate::certs_cmd::init_certs(c),
        ClusterCmd::Status => ("GET", "/cluster/status".to_string(), String::new()),
        ClusterCmd::Add { id, peer } => {
            ("POST", "/cluster/members".to_string(), format!("{{\"id\":{id},\"peer\":\"{peer}\"}}"))
        }
        ClusterCmd::Remove { id } => ("DELETE", format!("/cluster/members/{id}"), String::new()),
    };
    let (status, body) = http(&a.member.endpoint, a.member.ca.as_deref(), method, &path, &key, &body)?;
    println!("{body}");
    anyhow::ensure!(status == 200, "the member answered HTTP {status}");
    Ok(())
}

/// Either end of what `http` talks over.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// One HTTP/1.1 request over a TCP connection, or TLS for an https:// endpoint (no client
/// library needed).
pub(crate) fn http(
    endpoint: &str,
    ca: Option<&std::path::Path>,
    method: &str,
    path: &str,
    key: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let tls = endpoint.starts_with("https://");
    let host = endpoint.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
    let s = TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
    s.set_read_timeout(Some(Duration::from_secs(180)))?;
    let mut s: Box<dyn Stream> = if tls { Box::new(tls_stream(s, host, ca)?) } else { Box::new(s) };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    // A server may close without TLS close_notify; what arrived is the answer.
    if let Err(e) = s.read_to_end(&mut raw) {
        anyhow::ensure!(!raw.is_empty(), "reading the answer: {e}");
    }
    let resp = String::from_utf8_lossy(&raw);
    let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

fn tls_stream(
    tcp: TcpStream,
    host: &str,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let ca = ca.context("an https:// --endpoint needs --ca (the CA that signed the member's certificate)")?;
    let mut roots = rustls::RootCertStore::empty();
    for c in
        rustls::pki_types::CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots.add(c.with_context(|| format!("reading {}", ca.display()))?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host).trim_matches(['[', ']']);
    let name = rustls::pki_types::ServerName::try_from(name.to_string())?;
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name)?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}
