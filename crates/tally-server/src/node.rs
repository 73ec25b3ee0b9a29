//! Starting and stopping one node: open storage and the log, replay, start the
//! sequencer, bind the HTTP listener, shut down cleanly on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use sha2::{Digest, Sha256};
use tally_calvin::{Clock, FileLog, Sequencer, SequencerConfig};
use tally_storage::{BehindLimits, RedbStore, Store};

use crate::http::AppState;
use tally_exec::FqlMachine;

/// A single node's default epoch: 0, group commit. The logger takes what is queued as soon
/// as its previous append is synced and the executor is free for it, so a lone write
/// waits for one fsync instead of an epoch, and under load the batch is everything that
/// arrived while the executor applied the last one (tally-calvin `log_batches`).
/// (Measured in docs/benchmarks.md, "Group commit on a single node".)
pub const SINGLE_NODE_EPOCH_MS: u64 = 0;

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub root_key: Option<String>,
    /// How long a batch stays open after its first input (`--epoch-ms`); None: the
    /// default of a single node ([`SINGLE_NODE_EPOCH_MS`]) or a cluster member
    /// ([`crate::cluster::MEMBER_EPOCH_MS`]).
    pub epoch_ms: Option<u64>,
    pub body_bytes_max: usize,
    /// Fetch access providers' keys from loopback, private and link-local addresses,
    /// and over plain http (`--jwks-allow-private`; off by default, see `crate::jwt::addr`).
    pub jwks_allow_private: bool,
    /// Client connection bounds (see `crate::conn`).
    pub conn: crate::conn::ConnLimits,
    /// Bytes of requests and answers in flight (see `crate::inflight`).
    pub inflight_bytes_max: u64,
    /// Run as a member of a replicated cluster instead of a single node.
    pub cluster: Option<crate::cluster::ClusterOptions>,
    /// Serve clients over TLS (`--tls-cert`/`--tls-key`).
    pub tls: Option<crate::tls::TlsFiles>,
    /// Also serve `/metrics` and `/health` here, without authentication.
    pub metrics_listen: Option<SocketAddr>,
    /// Tenants with a metrics label of their own (see `crate::metrics`).
    pub metrics_tenants_max: usize,
    /// How the single node's input log is kept.
    pub log: LogConfig,
    /// Apply logged batches of other executor rules under this build's
    /// (`--apply-other-rules`; see `tally_exec::machine::RULES`).
    pub apply_other_rules: bool,
}

/// How a single node keeps its input log (`--log-retain`, `--log-segment-mib`).
#[derive(Clone, Debug, Default)]
pub struct LogConfig {
    pub retain: tally_calvin::Retain,
    /// Size at which a segment is closed (0: the default).
    pub segment_bytes_max: u64,
}

const ROOT_HASH_FILE: &str = "root_key.sha256";

/// The root key of Fauna's development image, accepted for the same use (local scripts
/// and tests written against that image).
pub const DEV_ROOT_KEY: &str = "secret";

/// Anyone who can reach the port can guess the development key: say so when the node
/// listens beyond loopback.
fn dev_key_warning(cfg: &ServeConfig) {
    if !cfg.listen.ip().is_loopback() {
        let msg = format!(
            "tally: WARNING: the root key is the development default `{DEV_ROOT_KEY}` and the node listens on {}, \
             beyond loopback: anyone who can reach it is root. Give a long random --root-key outside development.",
            cfg.listen
        );
        // On stderr whatever TALLY_LOG says: this must not be filtered out.
        eprintln!("{msg}");
    }
}

pub(crate) fn hash_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The root key's hash: from the given secret, or the stored one, or a newly
/// generated secret (printed once; only its hash is kept).
fn root_key_hash(cfg: &ServeConfig) -> anyhow::Result<String> {
    let path = cfg.data_dir.join(ROOT_HASH_FILE);
    if let Some(h) = flag_root_key_hash(cfg)? {
        return Ok(h);
    }
    if let Ok(h) = std::fs::read_to_string(&path) {
        return Ok(h.trim().to_string());
    }
    use rand::RngCore;
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    let secret = format!("tally-root-{}", hex::encode(b));
    let h = hash_hex(&secret);
    std::fs::write(&path, &h).with_context(|| format!("writing {}", path.display()))?;
    println!("Generated root key (shown only once; store it safely): {secret}");
    Ok(h)
}

/// The hash of `--root-key`, checked (at least 8 characters, or the development key).
fn flag_root_key_hash(cfg: &ServeConfig) -> anyhow::Result<Option<String>> {
    let Some(k) = &cfg.root_key else { return Ok(None) };
    if k == DEV_ROOT_KEY {
        dev_key_warning(cfg);
    } else if k.len() < 8 {
        anyhow::bail!("the root key must be at least 8 characters (or `{DEV_ROOT_KEY}` for development)");
    }
    Ok(Some(hash_hex(k)))
}

/// A cluster member's `--root-key`: optional, because the root key is cluster data
/// (docs/cluster.md). Given, it is this member's bootstrap proposal and, between members
/// over plain HTTP, the source of their shared token, which is why plain peers need it.
fn member_root_key_hash(cfg: &ServeConfig, opts: &crate::cluster::ClusterOptions) -> anyhow::Result<Option<String>> {
    let hash = flag_root_key_hash(cfg)?;
    anyhow::ensure!(
        hash.is_some() || opts.peer_tls.is_some(),
        "a cluster member without --root-key must talk mutual TLS with the others (--peer-cert, --peer-key, \
         --peer-ca; see `tally cluster init-certs`): over plain HTTP the members' shared token derives from the \
         root key, so give every member the same --root-key"
    );
    Ok(hash)
}

/// Open the state store. A damaged file (redb refuses it, or panics reading it) stops the
/// node with what to do: the state is derived data, rebuilt from the log.
fn open_state(path: &std::path::Path, cluster: bool) -> anyhow::Result<Arc<dyn Store>> {
    let cache = state_cache_bytes();
    let opened = std::panic::catch_unwind(|| {
        RedbStore::open_with_cache(path, Some(cache))
            .and_then(|s| s.write_behind(BehindLimits::default()))
            .map_err(|e| e.to_string())
    });
    let err = match opened {
        Ok(Ok(store)) => {
            store.on_failure(state_store_failed);
            return Ok(Arc::new(store));
        }
        Ok(Err(e)) => e,
        Err(_) => "the store panicked while reading it (see above)".to_string(),
    };
    let remedy = if cluster {
        "on a cluster member, move the whole data directory aside and add the member again (`tally cluster add`) so it \
         copies the state from the others"
    } else {
        "move it aside (e.g. `mv state.redb state.redb.damaged`) and start again: the node rebuilds the state by \
         replaying its input log, if that holds every batch since the first (with --log-retain checkpoint or \
         archive it does not, and the state comes back from a backup instead: `tally restore`)"
    };
    anyhow::bail!(
        "the state store {} cannot be opened: {err}. It is damaged or not a Tally store; {remedy}.",
        path.display()
    )
}

/// The state store's page cache, from `TALLY_STATE_CACHE_MIB` (default: 1 GiB less the
/// [`tally_storage::REMEMBERED_BYTES_MAX`] the executor's batches keep of the store's
/// newest versions, a cache of the same pages' content, so the two stay within redb's
/// former 1 GiB, and less the 64 MiB the write-behind queue grew by to hold two seconds
/// of writes, whose overlays reads also find the newest versions in first: 896 MiB).
/// After a write flood it is most of what the process keeps resident (docs/benchmarks.md).
/// Not lowered to fit the 2 GiB total: at 512 MiB, with more data written than the cache
/// holds (64 documents of 16 MiB), a page of one ref took 0.5 s instead of 0.06 s and
/// `/ping` stalled 0.9–1.9 s (docs/benchmarks.md, "The attacks at the issue's own scale").
fn state_cache_bytes() -> usize {
    let given = std::env::var("TALLY_STATE_CACHE_MIB").ok().and_then(|v| v.trim().parse::<usize>().ok());
    given.map_or(STATE_CACHE_DEFAULT_BYTES, |mib| mib.saturating_mul(1 << 20))
}

/// The state store's page cache unless `TALLY_STATE_CACHE_MIB` says otherwise.
const STATE_CACHE_DEFAULT_BYTES: usize = (1 << 30) - tally_storage::REMEMBERED_BYTES_MAX - (64 << 20);

/// Fail-stop when the state store's background writer fails (a full disk, an I/O
/// error): from then on the store refuses every read and write, so the node could only
/// answer errors. It stops at once instead, like the executor does for a failed apply:
/// nothing acknowledged is lost, because every applied batch is in the input log and the
/// state is replayed from the last durable checkpoint on restart.
fn state_store_failed(reason: &str) {
    tracing::error!(reason, "the state store failed to write; stopping the node");
    eprintln!(
        "tally: fatal: writing the state store failed: {reason}\n\
         The node stops so that it does not go on answering from a store that can no longer \
         write. Nothing acknowledged is lost: every applied batch is in the input log and is \
         applied again on restart. Check the data directory's disk (free space, permissions, \
         I/O errors in the system log), then restart the node."
    );
    std::process::exit(70);
}

pub async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    crate::datadir::check_or_init(&cfg.data_dir)?;
    if let Some(opts) = &cfg.cluster {
        let flag_hash = member_root_key_hash(&cfg, opts)?;
        let store = open_state(&cfg.data_dir.join("state.redb"), true)?;
        let metrics = crate::metrics::Metrics::new(&cfg.data_dir, cfg.metrics_tenants_max);
        return crate::cluster::serve_member(&cfg, opts, store, flag_hash, metrics).await;
    }
    let root_hash = root_key_hash(&cfg)?;
    // Written behind: the executor applies a batch and goes on while a background thread
    // writes it to the file and makes it durable (the input log already is).
    let store = open_state(&cfg.data_dir.join("state.redb"), false)?;
    let metrics = crate::metrics::Metrics::new(&cfg.data_dir, cfg.metrics_tenants_max);
    let log_dir = cfg.data_dir.join("log");
    let segment_bytes_max =
        if cfg.log.segment_bytes_max == 0 { tally_calvin::SEGMENT_BYTES_DEFAULT } else { cfg.log.segment_bytes_max };
    let log = FileLog::open_with(&log_dir, tally_calvin::LogOptions { segment_bytes_max, ..Default::default() })
        .context("opening the input log")?;
    let log = crate::metrics::MeteredLog::new(log, metrics.clone());
    let log_last_ts = tally_calvin::Log::last_ts(&log);
    let mut machine = FqlMachine::open(store.clone())?;
    machine.apply_other_rules = cfg.apply_other_rules;
    let member_key = Arc::new(crate::datadir::member_key(&cfg.data_dir)?);
    machine.signer = Some(member_key.clone());
    machine.publish = Some(crate::stream::hub().clone());
    machine.set_pacer(Box::new(crate::pace::WallPacer::default()));
    let applied_ts = machine.applied_ts.clone();
    let head = machine.head.clone();
    let checkpointed = machine.checkpointed_height.clone();
    let auth_cache = tally_fql::authcache::AuthCache::new(machine.auth_changes.clone());
    let seq_cfg = SequencerConfig {
        epoch_ms: cfg.epoch_ms.unwrap_or(SINGLE_NODE_EPOCH_MS),
        idle_sweep: Some(tally_apply::IdleSweep::new(machine.retention_due.clone())),
        ..Default::default()
    };
    let clock = Arc::new(Clock::new(machine.last_ts().max(log_last_ts)));
    metrics.follow_retention(machine.retention_removed.clone());
    let machine = crate::metrics::MeteredMachine::new(machine, metrics.clone());
    let (sequencer, seq_thread) =
        Sequencer::start(log, machine, seq_cfg, clock.clone()).context("starting the sequencer")?;
    crate::log_retain::spawn(&store, checkpointed, log_dir, cfg.log.retain.clone())
        .context("starting the input log's retirement thread")?;
    let r = sequencer.replayed();
    if r.batches > 0 {
        // Said on every start that replays: how long a restart takes is an operator's figure.
        let secs = r.elapsed.as_secs_f64();
        let rate = r.inputs as f64 / secs.max(1e-9);
        println!(
            "tally replayed {} batches ({} inputs) from the input log in {secs:.2} s ({rate:.0} inputs/s)",
            r.batches, r.inputs
        );
    }
    let leaf_index = crate::leaf_index::LeafIndex::open(&cfg.data_dir)?;
    leaf_index.spawn(&store).context("starting the leaf-hash index's thread")?;
    let state = Arc::new(AppState {
        store,
        sequencer: std::sync::Mutex::new(Some(sequencer)),
        applied_ts,
        clock,
        head,
        root_key_hash: Arc::new(tally_fql::authcache::RootKeyHash::new(&root_hash)),
        body_bytes_max: cfg.body_bytes_max,
        cluster: None,
        jwks: Arc::new(crate::jwt::JwksCache::new(cfg.jwks_allow_private)?),
        inflight: crate::inflight::InFlight::with_requests_max(cfg.inflight_bytes_max, cfg.conn.requests_max),
        body_read_timeout: cfg.conn.body_read_timeout,
        member_key,
        auth_cache,
        metrics,
        leaf_index,
    });
    spawn_metrics_listener(cfg.metrics_listen, &state).await?;
    let app = crate::http::App::new(state.clone());
    let listener = crate::conn::bind(cfg.listen).with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let tls = crate::tls::client_port(cfg.tls.as_ref(), addr)?;
    println!("tally listening on {addr}{}", if tls.is_some() { " (https)" } else { "" });
    println!("web console: {} (sign in with the root key or a key's secret)", crate::console::url(addr, tls.is_some()));
    tracing::info!(%addr, data_dir = %cfg.data_dir.display(), "listening");
    crate::inflight::spawn_trimmer(state.inflight.clone());
    crate::conn::serve(listener, app, cfg.conn.clone(), state.inflight.clone(), tls, shutdown_signal()).await?;
    // Stop accepting writes, then let the sequencer drain and exit.
    if let Ok(mut s) = state.sequencer.lock() {
        s.take();
    }
    state.leaf_index.stop();
    drop(state);
    let _ = tokio::task::spawn_blocking(move || seq_thread.join()).await;
    println!("tally stopped");
    Ok(())
}

/// `--metrics-listen`: `/metrics` and `/health` without authentication, on their own port.
pub(crate) async fn spawn_metrics_listener(addr: Option<SocketAddr>, state: &Arc<AppState>) -> anyhow::Result<()> {
    let Some(addr) = addr else { return Ok(()) };
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding --metrics-listen {addr}"))?;
    println!("tally metrics on {}", listener.local_addr()?);
    let app = crate::health::metrics_router(state.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics listener stopped");
        }
    });
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
