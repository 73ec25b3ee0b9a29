//! What a node reports about itself: `GET /metrics` (Prometheus/OpenMetrics text, encoded
//! by the `prometheus-client` crate) and `GET /health` (can this node serve reads and
//! writes). Both are served on the client port to the root key (or a root-database admin
//! key), and without authentication on `--metrics-listen`, a port meant for a scraper on
//! a private network.
//!
//! Counters are recorded at three seams, so the write path itself carries no metrics code:
//! a router layer (every request: route, status, FQL error code, latency, a tenant's
//! queries and bytes), [`MeteredLog`] around the input log (append + fsync latency) and
//! [`MeteredMachine`] around the state machine (batch size, apply time). Gauges (queue
//! depth, bytes in flight, storage size, Raft state) are read when scraped.
//!
//! Cardinality is bounded: routes are the fixed set the router knows (anything else is
//! `other`), error codes come from the server's own list, and tenants (databases, by
//! internal id) get their own label value only for the first `tenants_max` seen since
//! start; later ones are counted together under `db="other"`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tally_calvin::{Batch, Log, LogError, StateMachine};

/// Tenants that get a label value of their own (`--metrics-tenants-max`).
pub const TENANTS_MAX_DEFAULT: usize = 100;
/// The label value every tenant past the cap shares.
pub const TENANT_OTHER: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    db: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantBytesLabels {
    db: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabels {
    file: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~52 s, doubling.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

/// What the query path tells the metrics layer about one answered query (a response
/// extension, so the handler code only tags its answer).
#[derive(Clone, Copy, Debug)]
pub struct QueryTag {
    pub db: u64,
    pub write: bool,
}

/// Bytes of the request body as read (response extension: a driver may send no
/// `content-length`).
#[derive(Clone, Copy, Debug)]
pub struct BytesIn(pub u64);

/// The FQL error code an error answer carried (response extension).
#[derive(Clone, Debug)]
pub struct ErrorCode(pub String);

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    errors: Family<CodeLabels, Counter>,
    query_seconds: HistogramFamily<KindLabels>,
    tenant_queries: Family<TenantLabels, Counter>,
    tenant_bytes: Family<TenantBytesLabels, Counter>,
    batch_inputs: Histogram,
    batch_apply_seconds: Histogram,
    log_append_seconds: Histogram,
    queue_inputs: Gauge,
    inflight_bytes: Gauge,
    storage_bytes: Family<FileLabels, Gauge>,
    applied_height: Gauge,
    leaf_index_leaves: Gauge,
    raft: RaftGauges,
    tenants: Mutex<Tenants>,
    tenants_max: usize,
    data_dir: PathBuf,
    /// Set when the input log refused an append: the node takes no more writes.
    log_failed: AtomicBool,
    /// Height of the last batch applied (the machine's own count).
    applied: AtomicU64,
    retention_removed: Counter,
    /// The executor's count of versions retention removed (`FqlMachine::retention_removed`)
    /// and how much of it `retention_removed` has counted.
    retention_source: Mutex<Option<Arc<AtomicU64>>>,
    retention_counted: AtomicU64,
}

/// The tenants seen so far, each with its counters, and the counters every tenant past the
/// cap shares.
#[derive(Default)]
struct Tenants {
    ids: BTreeMap<u64, TenantCounters>,
    other: TenantCounters,
}

/// A tenant's counters, looked up in their families (by label) the first time they are
/// needed and kept: a query then costs one map lookup and three increments, not three
/// label sets built, hashed and looked up.
#[derive(Default)]
struct TenantCounters {
    /// Queries read-only (0) and writing (1).
    queries: [Option<Counter>; 2],
    /// Bytes in and out.
    bytes: Option<[Counter; 2]>,
}

#[derive(Default)]
struct RaftGauges {
    term: Gauge,
    leader: Gauge,
    is_leader: Gauge,
    last_log_index: Gauge,
    committed_index: Gauge,
    applied_index: Gauge,
    lag: Family<PeerLabels, Gauge>,
}

impl Metrics {
    pub fn new(data_dir: &Path, tenants_max: usize) -> Arc<Metrics> {
        let mut m = Metrics {
            registry: Registry::with_prefix("tally"),
            requests: Family::default(),
            errors: Family::default(),
            query_seconds: Family::new_with_constructor(latency_histogram),
            tenant_queries: Family::default(),
            tenant_bytes: Family::default(),
            batch_inputs: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            batch_apply_seconds: latency_histogram(),
            log_append_seconds: latency_histogram(),
            queue_inputs: Gauge::default(),
            inflight_bytes: Gauge::default(),
            storage_bytes: Family::default(),
            applied_height: Gauge::default(),
            leaf_index_leaves: Gauge::default(),
            raft: RaftGauges::default(),
            tenants: Mutex::new(Tenants::default()),
            tenants_max,
            data_dir: data_dir.to_path_buf(),
            log_failed: AtomicBool::new(false),
            applied: AtomicU64::new(0),
            retention_removed: Counter::default(),
            retention_source: Mutex::new(None),
            retention_counted: AtomicU64::new(0),
        };
        m.register();
        Arc::new(m)
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        r.register("http_requests", "HTTP requests answered, by route and status", self.requests.clone());
        r.register("query_errors", "Queries answered with an FQL error, by its code", self.errors.clone());
        r.register(
            "query_duration_seconds",
            "Time from request to answer of FQL queries (kind: read, or write through the log)",
            self.query_seconds.clone(),
        );
        r.register(
            "tenant_queries",
            "Queries per tenant database (db: internal id; past the cap, \"other\")",
            self.tenant_queries.clone(),
        );
        r.register(
            "tenant_bytes",
            "Request (in) and answer (out) body bytes per tenant database",
            self.tenant_bytes.clone(),
        );
        r.register("batch_inputs", "Transactions per epoch batch applied", self.batch_inputs.clone());
        r.register("batch_apply_seconds", "Time to apply one epoch batch", self.batch_apply_seconds.clone());
        r.register(
            "log_append_seconds",
            "Time to append one batch to the input log, fsync included (single node)",
            self.log_append_seconds.clone(),
        );
        r.register("queue_inputs", "Transactions waiting for a batch", self.queue_inputs.clone());
        r.register("inflight_bytes", "Bytes of requests and answers in flight", self.inflight_bytes.clone());
        r.register("storage_bytes", "Bytes on disk: state store, input log, Raft log", self.storage_bytes.clone());
        r.register("applied_height", "Height of the last block applied", self.applied_height.clone());
        r.register(
            "leaf_index_leaves",
            "Leaves of the transaction log in this member's leaf-hash index (get-proof-by-hash); \
             the tree's size when it has caught up",
            self.leaf_index_leaves.clone(),
        );
        r.register(
            "retention_removed_versions",
            "Document versions and index entry versions removed by retention sweeps since this node started",
            self.retention_removed.clone(),
        );
        let g = &self.raft;
        r.register("raft_term", "Current Raft term", g.term.clone());
        r.register("raft_leader", "Node id of the known leader (-1: none)", g.leader.clone());
        r.register("raft_is_leader", "1 if this member leads", g.is_leader.clone());
        r.register("raft_last_log_index", "Index of the last Raft log entry", g.last_log_index.clone());
        r.register("raft_committed_index", "Index committed by the cluster", g.committed_index.clone());
        r.register("raft_applied_index", "Index applied by this member", g.applied_index.clone());
        r.register("raft_replication_lag_entries", "On the leader: entries each peer is behind its log", g.lag.clone());
    }

    /// One answered request.
    pub fn record(&self, route: &'static str, status: u16, elapsed_s: f64, bytes: (u64, u64), tag: Option<QueryTag>) {
        self.requests.get_or_create(&RequestLabels { route, status }).inc();
        let Some(tag) = tag else { return };
        let kind = if tag.write { "write" } else { "read" };
        self.query_seconds.get_or_create(&KindLabels { kind }).observe(elapsed_s);
        self.count_tenant(tag.db, tag.write, bytes);
    }

    /// A tenant's query and its bytes, under its own label while under the cap (the
    /// first `tenants_max` tenants seen), else under `other`.
    fn count_tenant(&self, db: u64, write: bool, (inb, out): (u64, u64)) {
        let Ok(mut t) = self.tenants.lock() else { return };
        let Tenants { ids, other } = &mut *t;
        let own = ids.len() < self.tenants_max || ids.contains_key(&db);
        let c = if own { ids.entry(db).or_default() } else { other };
        let label = || if own { db.to_string() } else { TENANT_OTHER.to_string() };
        let kind = if write { "write" } else { "read" };
        c.queries[usize::from(write)]
            .get_or_insert_with(|| self.tenant_queries.get_or_create(&TenantLabels { db: label(), kind }).clone())
            .inc();
        let [i, o] = c.bytes.get_or_insert_with(|| {
            let bytes =
                |direction| self.tenant_bytes.get_or_create(&TenantBytesLabels { db: label(), direction }).clone();
            [bytes("in"), bytes("out")]
        });
        i.inc_by(inb);
        o.inc_by(out);
    }

    pub fn error(&self, code: &str) {
        self.errors.get_or_create(&CodeLabels { code: code.to_string() }).inc();
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Count what the executor's retention sweeps remove (its `retention_removed`).
    pub fn follow_retention(&self, removed: Arc<AtomicU64>) {
        if let Ok(mut s) = self.retention_source.lock() {
            *s = Some(removed);
        }
    }

    pub fn log_failed(&self) -> bool {
        self.log_failed.load(Ordering::Relaxed)
    }

    /// The exposition, after reading the gauges of `st`.
    pub fn encode(&self, st: &crate::http::AppState) -> Result<String, std::fmt::Error> {
        self.read_gauges(st);
        let mut out = String::with_capacity(16 << 10);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    fn read_gauges(&self, st: &crate::http::AppState) {
        self.inflight_bytes.set(st.inflight.used() as i64);
        let head = st.head.lock().ok().and_then(|h| *h).map_or(0, |h| h.height);
        self.applied_height.set(head.max(self.applied.load(Ordering::Relaxed)) as i64);
        self.leaf_index_leaves.set(st.leaf_index.indexed() as i64);
        for (file, path) in [
            ("state", "state.redb"),
            ("input_log", "log"),
            ("raft_log", "raft"),
            ("leaf_index", crate::leaf_index::FILE),
        ] {
            self.storage_bytes.get_or_create(&FileLabels { file }).set(path_bytes(&self.data_dir.join(path)) as i64);
        }
        let queued = match (&st.cluster, st.sequencer.lock().ok().and_then(|s| s.clone())) {
            (Some(c), _) => c.node.queued(),
            (None, Some(seq)) => seq.queued(),
            (None, None) => 0,
        };
        self.queue_inputs.set(queued as i64);
        if let Some(src) = self.retention_source.lock().ok().and_then(|s| s.clone()) {
            let now = src.load(Ordering::Relaxed);
            let before = self.retention_counted.swap(now, Ordering::Relaxed);
            self.retention_removed.inc_by(now.saturating_sub(before));
        }
        if let Some(c) = &st.cluster {
            self.read_raft(&c.node);
        }
    }

    fn read_raft(&self, node: &tally_raft::node::RaftNode) {
        let m = node.metrics();
        let g = &self.raft;
        g.term.set(m.current_term as i64);
        g.leader.set(m.current_leader.map_or(-1, |l| l as i64));
        g.is_leader.set(i64::from(m.current_leader == Some(m.id)));
        let last = m.last_log_index.unwrap_or(0);
        g.last_log_index.set(last as i64);
        g.committed_index.set(m.cluster_committed.as_ref().map_or(0, |l| l.index()) as i64);
        g.applied_index.set(m.last_applied.as_ref().map_or(0, |l| l.index()) as i64);
        // Peers come and go with membership: the family is rebuilt on every scrape.
        g.lag.clear();
        for (peer, matched) in m.replication.iter().flatten() {
            let behind = last.saturating_sub(matched.as_ref().map_or(0, |l| l.index()));
            g.lag.get_or_create(&PeerLabels { peer: peer.to_string() }).set(behind as i64);
        }
    }
}

/// Bytes a file, or every file under a directory (one level deep is all Tally makes), holds.
fn path_bytes(p: &Path) -> u64 {
    let Ok(meta) = std::fs::metadata(p) else { return 0 };
    if meta.is_file() {
        return meta.len();
    }
    let Ok(dir) = std::fs::read_dir(p) else { return 0 };
    dir.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
}

/// The input log, timed. A failed append marks the node unable to write (for `/health`).
pub struct MeteredLog<L> {
    inner: L,
    metrics: Arc<Metrics>,
}

impl<L: Log> MeteredLog<L> {
    pub fn new(inner: L, metrics: Arc<Metrics>) -> Self {
        MeteredLog { inner, metrics }
    }
}

impl<L: Log> Log for MeteredLog<L> {
    fn append(&mut self, batch: &Batch) -> Result<(), LogError> {
        let t = Instant::now();
        let r = self.inner.append(batch);
        self.metrics.log_append_seconds.observe(t.elapsed().as_secs_f64());
        if r.is_err() {
            self.metrics.log_failed.store(true, Ordering::Relaxed);
        }
        r
    }
    fn replay_after(&mut self, height: u64, f: &mut dyn FnMut(Batch) -> Result<(), LogError>) -> Result<(), LogError> {
        self.inner.replay_after(height, f)
    }
    fn last_height(&self) -> u64 {
        self.inner.last_height()
    }
    fn last_ts(&self) -> u64 {
        self.inner.last_ts()
    }
}

/// The state machine, timed: inputs per batch and the time to apply it. Only wall-clock
/// *measurements* are taken here, outside the machine; nothing flows back into it.
pub struct MeteredMachine<M> {
    inner: M,
    metrics: Arc<Metrics>,
}

impl<M: StateMachine> MeteredMachine<M> {
    pub fn new(inner: M, metrics: Arc<Metrics>) -> Self {
        MeteredMachine { inner, metrics }
    }

    fn timed<T>(&mut self, batch: &Batch, f: impl FnOnce(&mut M) -> T) -> T {
        let t = Instant::now();
        let r = f(&mut self.inner);
        self.metrics.batch_apply_seconds.observe(t.elapsed().as_secs_f64());
        self.metrics.batch_inputs.observe(batch.inputs.len() as f64);
        self.metrics.applied.store(self.inner.applied_height(), Ordering::Relaxed);
        r
    }
}

impl<M: StateMachine> StateMachine for MeteredMachine<M> {
    fn applied_height(&self) -> u64 {
        self.inner.applied_height()
    }
    fn apply(&mut self, batch: &Batch) -> Vec<Vec<u8>> {
        self.timed(batch, |m| m.apply(batch))
    }
    fn apply_answering(&mut self, batch: &Batch, answer: &mut dyn FnMut(usize, Vec<u8>)) {
        self.timed(batch, |m| m.apply_answering(batch, answer))
    }
    fn apply_decoded(
        &mut self,
        batch: &Batch,
        decoded: &mut [Option<tally_apply::Decoded>],
        answer: &mut dyn FnMut(usize, Vec<u8>),
    ) {
        self.timed(batch, |m| m.apply_decoded(batch, decoded, answer))
    }
    /// Timed from the handover: when the log's sync takes longer than evaluation, the
    /// figure includes the wait for it.
    fn apply_logging(
        &mut self,
        batch: &Batch,
        decoded: &mut [Option<tally_apply::Decoded>],
        logged: &mut dyn FnMut() -> bool,
        answer: &mut dyn FnMut(usize, Vec<u8>),
    ) -> bool {
        self.timed(batch, |m| m.apply_logging(batch, decoded, logged, answer))
    }
    fn last_commit_ts(&self) -> u64 {
        self.inner.last_commit_ts()
    }
    fn rules(&self) -> u16 {
        self.inner.rules()
    }
}

impl<M: tally_calvin::ReplicatedMachine> tally_calvin::ReplicatedMachine for MeteredMachine<M> {
    fn apply_at(&mut self, batch: &Batch, position: &[u8]) -> Vec<Vec<u8>> {
        self.timed(batch, |m| m.apply_at(batch, position))
    }
    fn apply_at_answering(&mut self, batch: &Batch, position: &[u8], answer: &mut dyn FnMut(usize, Vec<u8>)) {
        self.timed(batch, |m| m.apply_at_answering(batch, position, answer))
    }
    fn apply_at_decoded(
        &mut self,
        batch: &Batch,
        position: &[u8],
        decoded: &mut [Option<tally_calvin::Decoded>],
        answer: &mut dyn FnMut(usize, Vec<u8>),
    ) {
        self.timed(batch, |m| m.apply_at_decoded(batch, position, decoded, answer))
    }
    fn set_position(&mut self, position: &[u8]) -> Result<(), tally_calvin::MachineError> {
        self.inner.set_position(position)
    }
    fn position(&self) -> Result<Option<Vec<u8>>, tally_calvin::MachineError> {
        self.inner.position()
    }
    fn checkpoint(&mut self) -> Result<(), tally_calvin::MachineError> {
        self.inner.checkpoint()
    }
    fn export(&self) -> Result<Vec<u8>, tally_calvin::MachineError> {
        self.inner.export()
    }
    fn import(&mut self, data: &[u8]) -> Result<(), tally_calvin::MachineError> {
        self.inner.import(data)
    }
    fn export_view(&self) -> Result<tally_calvin::ExportWriter, tally_calvin::MachineError> {
        self.inner.export_view()
    }
    fn import_from(&mut self, r: &mut dyn std::io::Read) -> Result<(), tally_calvin::MachineError> {
        self.inner.import_from(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first `tenants_max` tenants get labels of their own, every later one counts as
    /// `other`; reads and writes, bytes in and out, each under its own series, created only
    /// once counted.
    #[test]
    fn tenants_past_the_cap_count_as_other() {
        let m = Metrics::new(Path::new("/nonexistent"), 2);
        let tag = |db, write| Some(QueryTag { db, write });
        m.record("/", 200, 0.001, (10, 100), tag(7, false));
        m.record("/", 200, 0.001, (20, 200), tag(7, true));
        m.record("/", 200, 0.001, (1, 2), tag(8, false));
        m.record("/", 200, 0.001, (3, 4), tag(9, true));
        m.record("/", 200, 0.001, (5, 6), tag(10, true));
        m.record("/", 200, 0.001, (1, 1), tag(8, false));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry).expect("encodes");
        let value = |series: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
                .map(|v| v.parse::<u64>().expect("a count"))
        };
        let q = |db: &str, kind: &str| value(&format!("tally_tenant_queries_total{{db=\"{db}\",kind=\"{kind}\"}}"));
        let b = |db: &str, dir: &str| value(&format!("tally_tenant_bytes_total{{db=\"{db}\",direction=\"{dir}\"}}"));
        assert_eq!((q("7", "read"), q("7", "write")), (Some(1), Some(1)));
        assert_eq!((q("8", "read"), q("8", "write")), (Some(2), None), "{text}");
        assert_eq!((q("other", "read"), q("other", "write")), (None, Some(2)));
        assert_eq!((q("9", "write"), q("10", "write")), (None, None));
        assert_eq!((b("7", "in"), b("7", "out")), (Some(30), Some(300)));
        assert_eq!((b("8", "in"), b("8", "out")), (Some(2), Some(3)));
        assert_eq!((b("other", "in"), b("other", "out")), (Some(8), Some(10)));
    }
}
