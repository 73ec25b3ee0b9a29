//! The FQL state machine: applies logged batches deterministically to the store.
//!
//! For each input in a batch, in order: decode it, evaluate it in write mode at its
//! commit ts (strictly increasing; spaced apart when a transaction issued more than
//! 1,000 ids, so ids derived from ts never collide), and apply its writes. Each batch
//! becomes a block whose header chains the previous one. The storage commit that
//! applies batch N also records `applied_height = N`, so a restart replays exactly the
//! batches after the last durable commit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tally_apply::{Batch, MachineError, ReplicatedMachine, StateMachine};
use tally_fql::auth::{Auth, Role};
use tally_fql::eval::{Limits, Mode};
use tally_fql::model::Write;
use tally_ledger::writer::{self, LogWriter};
use tally_ledger::{BlockBuilder, BlockHeader, GENESIS_PREV_HASH};
use tally_storage::{Space, Store};

use crate::pace::Pacer;
pub use crate::record::{JwtInput, TxnInput, TxnOutput};

/// The space byte of a write's effect leaf (`tally_ledger::leaf`).
fn effect_space(w: &Write) -> u8 {
    match w.space {
        Space::Docs => tally_ledger::leaf::SPACE_DOCS,
        Space::Index => tally_ledger::leaf::SPACE_INDEX,
    }
}

/// A logged input as the executor decoded it: a JSON tree and an expression tree, tens of
/// thousands of small allocations for a bulk `Do` of `Create`s.
struct Decoded {
    _input: TxnInput,
    _expr: Arc<tally_fql::expr::Expr>,
}

/// Inputs smaller than this are freed in place: waking the disposal thread costs more
/// than freeing a one-transfer query.
const DISPOSE_INPUT_BYTES_MIN: usize = 16 << 10;

/// Decoded inputs queued for the disposal thread; beyond this they are freed in place.
const DISPOSE_QUEUE_INPUTS_MAX: usize = 16;

/// Free a decoded input off the executor thread. Freeing those trees cost the executor as
/// much as building them (≈ 20 % of its time while bulk-loading 1,000-`Create`
/// transactions, almost all in the allocator), and the executor is the one serial stage
/// of the write path. The queue is bounded, so memory is too: when the disposal thread
/// falls behind (or could not be started), the executor frees the input itself.
fn dispose(d: Decoded) {
    use std::sync::mpsc::{sync_channel, SyncSender};
    static QUEUE: std::sync::OnceLock<Option<SyncSender<Decoded>>> = std::sync::OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = sync_channel::<Decoded>(DISPOSE_QUEUE_INPUTS_MAX);
        let spawned = std::thread::Builder::new().name("tally-dispose".into()).spawn(move || {
            for d in rx {
                drop(d);
            }
        });
        spawned.ok().map(|_| tx)
    });
    // On a full queue (or none) the input comes back and is freed here.
    if let Some(tx) = queue {
        drop(tx.try_send(d));
    }
}

/// Durable storage commits of a machine left with its clock-free default pacer
/// (`crate::pace::EveryBatches`: the simulation, tests and tools) happen every this many
/// batches; the log makes every batch durable. A node sets its own pacer, which
/// checkpoints on its clock alone (`tally-server` `pace.rs`).
pub const CHECKPOINT_BATCHES: u64 = 256;

pub const META_APPLIED_HEIGHT: &str = "applied_height";
pub const META_LAST_TS: &str = "last_ts";
pub const META_HEAD: &str = "head";
/// The replicated log's position (Raft log id + membership), written in the same commit as
/// the effects of the entry it names; absent on a single node.
pub const META_POSITION: &str = "raft_position";
/// The root key's hash (32 bytes), as the last applied root key record set it; absent
/// until the first (`crate::record::root_key`).
pub const META_ROOT_KEY: &str = "root_key_hash";

/// Where the next retention sweep starts (a document key; empty: at the beginning).
pub const META_RETENTION_CURSOR: &str = "retention_cursor";
/// Where the next retention sweep of index entries starts (an index key; empty: at the
/// beginning).
pub const META_RETENTION_INDEX_CURSOR: &str = "retention_index_cursor";

pub use crate::sweep_spacing::{IDLE_SWEEP_KEYS_FACTOR, META_RETENTION_SWEPT_TS};

/// Meta key of the removal record of the block at `height` (absent: it removed nothing).
pub fn retention_key(height: u64) -> String {
    tally_ledger::writer::numbered("retention/", height)
}

/// Meta key of the block header at `height`.
pub fn block_key(height: u64) -> String {
    tally_ledger::writer::numbered("block/", height)
}

pub struct FqlMachine {
    store: Arc<dyn Store>,
    applied_height: u64,
    last_ts: u64,
    prev_hash: [u8; 32],
    /// Latest commit ts visible to readers.
    pub applied_ts: Arc<AtomicU64>,
    pub head: Arc<std::sync::Mutex<Option<BlockHeader>>>,
    /// Height of the last batch end committed with `durable = true` (or found on open, or
    /// made durable by `checkpoint`/`import`): durable once the store's
    /// `wait_requested_durable` returns. What a single node's input log may retire up to
    /// (`--log-retain`): durable commits are only ever batch ends.
    pub checkpointed_height: Arc<AtomicU64>,
    /// Told of every transaction that changes what key authentication reads, before
    /// its commit is visible (the receiving node's `AuthCache` follows it).
    pub auth_changes: Arc<tally_fql::authcache::AuthChanges>,
    /// Collection ids, index definitions and retention settings, cached across
    /// transactions while no schema document changes (`tally_fql::schema_cache`).
    schema_cache: tally_fql::schema_cache::SchemaCache,
    batches_since_checkpoint: u64,
    /// When to release answers early and when to make a commit durable: the only
    /// decisions that follow a clock, and none of them changes a result.
    pacer: Box<dyn Pacer>,
    /// Fault injection for the divergence tests only: at this height the header's effects
    /// root is computed over one extra leaf, as a nondeterministic executor would.
    pub diverge_at: Option<u64>,
    /// The transparency log's right edge (one leaf per applied transaction).
    tlog: LogWriter,
    /// This member's key: it signs every tree head it computes (node-local, not replicated).
    pub signer: Option<Arc<tally_ledger::sth::MemberKey>>,
    /// Told of each transaction's writes once they are visible (change streams).
    pub publish: Option<Arc<dyn crate::publish::Publish>>,
    /// The replicated root key hash (`META_ROOT_KEY`), for the client port of a cluster
    /// member; set before any commit at or after the record's ts is visible to readers.
    pub root_key: Arc<tally_fql::authcache::RootKeyHash>,
    /// Apply batches stamped with other executor rules than [`RULES`] (and unstamped ones)
    /// under these rules instead of stopping (`tally serve --apply-other-rules`): for a log
    /// tail no build of its own rules can apply. Its blocks may then differ from what the
    /// build that sequenced them acknowledged.
    pub apply_other_rules: bool,
    /// The commit ts from which a retention sweep could remove something (0: now or
    /// unknown; `u64::MAX`: not as time alone passes), for the log of an idle node
    /// (`tally_apply::IdleSweep`): what [`crate::sweep_due::SweepDue`] says after each batch.
    pub retention_due: Arc<AtomicU64>,
    /// Versions (documents and index entries) retention sweeps removed since this
    /// machine opened (node-local, for metrics).
    pub retention_removed: Arc<AtomicU64>,
    /// The replicated [`crate::sweep_due::SweepDue`], as the store holds it (`due_stored`:
    /// its bytes there, None when absent) and as this machine has it.
    sweep_due: crate::sweep_due::SweepDue,
    due_stored: Option<Vec<u8>>,
    /// Whether each sweep's pass is under way (its cursor is not at the beginning), as
    /// the stored cursors say.
    sweep_running: [bool; 2],
    /// The stored [`META_RETENTION_SWEPT_TS`] (None: absent), read on open and after a
    /// snapshot install and kept equal to it by every commit that writes it: the
    /// replicated value the sweep spacing decides on (`crate::sweep_spacing`), held here
    /// so that a batch that skips its sweeps reads nothing.
    swept_ts: Option<u64>,
}

/// The version of the executor's rules: what a batch's inputs compute, the blocks and the
/// retention sweeps included. The log stamps every batch with it ([`Batch::rules`]), and
/// this machine applies only batches of these rules, so a replay can never compute other
/// results than the ones acknowledged. Bump it with every change to what an applied batch
/// computes (a limit, a write rule, retention, an error), and say what changed here:
///
/// 1. the rules as of batch format 2 (the first stamped batches).
/// 2. `Insert`/`Remove` at a past ts revise the index entries of the document's next
///    version (streams, issue 15).
/// 3. Retention floors 15 minutes lower (v4's `MVTOffset`), documents hidden at their
///    `ttl`, empty batches (idle sweeps: a block of no transactions whose sweep looks at
///    more keys), index entries swept under their own database's collection floor.
/// 4. Retention sweeps at a commit-ts cadence instead of every batch
///    (`crate::sweep_spacing`): a batch with inputs sweeps only when its last commit ts is
///    at least 10 ms past that of the last batch that swept (meta `retention_swept_ts`,
///    replicated, in snapshots), with a budget of 128 keys, 1,024 versions and 1 MiB per
///    10 ms since then, up to 4×; empty batches sweep as under rules 3. Blocks remove other
///    versions at other heights than under rules 3.
/// 5. Inputs in record version 2 (`crate::record`, docs/record.md): a query's tree with
///    well-known names by number and integers as varints, about half the bytes. A build of
///    rules 4 cannot read these inputs and would fail every such transaction where this
///    one runs it. Otherwise a transaction computes what it did, but for the limit on its
///    logged input (`crate::record::check_record`), which counts version 2's bytes, and the texts of a
///    malformed record's errors.
/// 6. Each of the two sweeps runs only while its pass is under way or when something
///    could be removable (`crate::sweep_due`, meta `retention_due`, replicated, in
///    snapshots): a pass's own finding, lowered by every write's earliest due ts. Batches
///    at the spacing of rules 4 whose sweeps are not due skip them (and do not write
///    `retention_swept_ts`). Blocks remove the same versions as under rules 5, at other
///    heights.
/// 7. The transparency log's subtrees of levels 0–3 are stored in one meta value per
///    16 leaves (`tlog/c/…`, `tally_ledger::writer` "Chunks"), written at the block's end,
///    instead of one `tlog/n/…` name each; levels from 4 up keep their names. Blocks and
///    proofs are the same; the state a snapshot carries is not.
pub const RULES: u16 = 7;

/// The root key hash recorded in the store, if any.
pub fn meta_root_key(store: &dyn Store) -> anyhow::Result<Option<[u8; 32]>> {
    match store.snapshot()?.meta(META_ROOT_KEY)? {
        None => Ok(None),
        Some(b) => {
            Ok(Some(b.as_slice().try_into().map_err(|_| anyhow::anyhow!("the stored root key hash is not 32 bytes"))?))
        }
    }
}

fn meta_u64(store: &dyn Store, key: &str) -> anyhow::Result<u64> {
    let snap = store.snapshot()?;
    Ok(match snap.meta(key)? {
        Some(b) if b.len() == 8 => u64::from_be_bytes(b.try_into().unwrap_or([0; 8])),
        _ => 0,
    })
}

/// The stored [`crate::sweep_due::SweepDue`], its stored bytes, and whether each sweep's
/// pass is under way.
type LoadedDue = (crate::sweep_due::SweepDue, Option<Vec<u8>>, [bool; 2]);

fn load_sweep_due(store: &dyn Store, applied_height: u64) -> anyhow::Result<LoadedDue> {
    let snap = store.snapshot()?;
    let stored = snap.meta(crate::sweep_due::META_SWEEP_DUE)?;
    let due = crate::sweep_due::SweepDue::load(stored.as_deref(), applied_height)?;
    let mut running = [false; 2];
    for (k, name) in [META_RETENTION_CURSOR, META_RETENTION_INDEX_CURSOR].into_iter().enumerate() {
        running[k] = snap.meta(name)?.is_some_and(|c| !c.is_empty());
    }
    Ok((due, stored, running))
}

/// The stored [`META_RETENTION_SWEPT_TS`] (None: absent); an error if it is not 8 bytes.
fn load_swept_ts(store: &dyn Store) -> anyhow::Result<Option<u64>> {
    match store.snapshot()?.meta(META_RETENTION_SWEPT_TS)? {
        None => Ok(None),
        Some(b) => crate::sweep_spacing::decode_swept_ts(&b)
            .map(Some)
            .ok_or_else(|| anyhow::anyhow!("the stored {META_RETENTION_SWEPT_TS} is {} bytes, not 8", b.len())),
    }
}

/// The last commit ts recorded in the store.
pub fn meta_last_ts(store: &dyn Store) -> anyhow::Result<u64> {
    meta_u64(store, META_LAST_TS)
}

/// The applied height recorded in the store.
pub fn meta_height(store: &dyn Store) -> anyhow::Result<u64> {
    meta_u64(store, META_APPLIED_HEIGHT)
}

impl FqlMachine {
    pub fn last_ts(&self) -> u64 {
        self.last_ts
    }

    pub fn open(store: Arc<dyn Store>) -> anyhow::Result<FqlMachine> {
        let applied_height = meta_u64(&*store, META_APPLIED_HEIGHT)?;
        let last_ts = meta_u64(&*store, META_LAST_TS)?;
        let head = match store.snapshot()?.meta(META_HEAD)? {
            Some(b) => Some(BlockHeader::decode(&b)?),
            None => None,
        };
        let prev_hash = head.as_ref().map(|h| h.hash()).unwrap_or(GENESIS_PREV_HASH);
        let tlog = load_tree(&*store, head.map_or(0, |h| h.tree_size))?;
        let root_key = meta_root_key(&*store)?.map(hex::encode).unwrap_or_default();
        let (sweep_due, due_stored, sweep_running) = load_sweep_due(&*store, applied_height)?;
        let swept_ts = load_swept_ts(&*store)?;
        Ok(FqlMachine {
            store,
            applied_height,
            last_ts,
            prev_hash,
            applied_ts: Arc::new(AtomicU64::new(last_ts)),
            head: Arc::new(std::sync::Mutex::new(head)),
            checkpointed_height: Arc::new(AtomicU64::new(applied_height)),
            auth_changes: Arc::new(tally_fql::authcache::AuthChanges::new()),
            schema_cache: tally_fql::schema_cache::SchemaCache::new(last_ts),
            batches_since_checkpoint: 0,
            pacer: Box::new(crate::pace::EveryBatches(CHECKPOINT_BATCHES)),
            diverge_at: None,
            tlog,
            signer: None,
            publish: None,
            root_key: Arc::new(tally_fql::authcache::RootKeyHash::new(&root_key)),
            apply_other_rules: false,
            retention_due: Arc::new(AtomicU64::new(sweep_due.due(sweep_running))),
            retention_removed: Arc::new(AtomicU64::new(0)),
            sweep_due,
            due_stored,
            sweep_running,
            swept_ts,
        })
    }

    /// Checkpoint every `batches` batches only, never on a clock, and release no answer
    /// before its batch ends: what survives a crash then depends on the input alone (the
    /// deterministic simulation). This is how a machine starts.
    pub fn checkpoint_every_batches(&mut self, batches: u64) {
        self.pacer = Box::new(crate::pace::EveryBatches(batches));
    }

    /// Take the release and checkpoint decisions from `pacer` (a node passes one that
    /// follows its clock).
    pub fn set_pacer(&mut self, pacer: Box<dyn Pacer>) {
        self.pacer = pacer;
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Re-read height, ts and head from the store (after its content was replaced).
    fn reload(&mut self) -> anyhow::Result<()> {
        let fresh = FqlMachine::open(self.store.clone())?;
        self.applied_height = fresh.applied_height;
        self.last_ts = fresh.last_ts;
        self.schema_cache.reset(fresh.last_ts);
        self.prev_hash = fresh.prev_hash;
        self.tlog = fresh.tlog;
        self.root_key.set(&fresh.root_key.get());
        self.applied_ts.store(fresh.last_ts, Ordering::Release);
        self.checkpointed_height.store(fresh.applied_height, Ordering::Release);
        // What the sweeps knew is about the replaced state.
        self.sweep_due = fresh.sweep_due;
        self.due_stored = fresh.due_stored;
        self.sweep_running = fresh.sweep_running;
        self.swept_ts = fresh.swept_ts;
        self.retention_due.store(fresh.retention_due.load(Ordering::Acquire), Ordering::Release);
        let head = *fresh.head.lock().map_err(|_| anyhow::anyhow!("head lock poisoned"))?;
        if let Ok(mut h) = self.head.lock() {
            *h = head;
        }
        Ok(())
    }

    fn run_input(
        &self,
        snap: &dyn tally_storage::Snapshot,
        ts: u64,
        input: &[u8],
        hint: Option<tally_apply::Decoded>,
    ) -> (TxnOutput, Vec<Write>, u64) {
        let mut decoded = None;
        let out = self.run_decoded(snap, ts, input, hint, &mut decoded);
        if let Some(d) = decoded.filter(|_| input.len() >= DISPOSE_INPUT_BYTES_MIN) {
            dispose(d);
        }
        out
    }

    /// Evaluate one logged input, decoded from its bytes or taken from `hint` (what the
    /// receiving node decoded from them, `crate::record::Predecoded`); its decoded form
    /// (input and expression) is left in `decoded` for the caller to dispose of.
    fn run_decoded(
        &self,
        snap: &dyn tally_storage::Snapshot,
        ts: u64,
        input: &[u8],
        hint: Option<tally_apply::Decoded>,
        decoded: &mut Option<Decoded>,
    ) -> (TxnOutput, Vec<Write>, u64) {
        let fail = |status: u16, err: tally_fql::FqlError| {
            (TxnOutput::json(status, &serde_json::json!({"errors": [err.to_json()]}), ts), Vec::new(), 0)
        };
        let pre = hint.and_then(|h| h.downcast::<crate::record::Predecoded>().ok());
        let (inp, expr) = match pre {
            Some(p) => (p.input, p.expr),
            // The query read from the record straight into an expression; where that
            // declines, the reference path below decides, with its own error.
            None => match crate::record::decode_input_expr(input) {
                Some((inp, expr)) => (inp, Arc::new(expr)),
                None => {
                    let inp = match crate::record::decode_input(input) {
                        Ok(i) => i,
                        Err(e) => {
                            return fail(
                                400,
                                tally_fql::FqlError::new("bad request", format!("undecodable transaction input: {e}")),
                            )
                        }
                    };
                    match tally_fql::expr::parse(&inp.q) {
                        Ok(e) => (inp, Arc::new(e)),
                        Err(e) => return fail(e.http_status(), e),
                    }
                }
            },
        };
        // The record's decoder refused any role this build does not know.
        let Some(role) = Role::parse(&inp.role) else {
            return fail(400, tally_fql::FqlError::new("bad request", format!("unknown role {:?}", inp.role)));
        };
        let entropy = inp.entropy;
        let limits = Limits { steps_max: inp.steps_max.max(1), ..Limits::default() };
        let mut auth = Auth::new(inp.db, role);
        let as_ref = |v: &Option<serde_json::Value>| match v.as_ref().map(tally_value::from_json) {
            Some(Ok(tally_value::Value::Ref(r))) => Some(r),
            _ => None,
        };
        auth.identity = as_ref(&inp.identity);
        auth.token = as_ref(&inp.token);
        auth.jwt = inp.jwt.as_ref().and_then(|j| {
            let login = tally_fql::jwt::JwtLogin::new(inp.db, j.provider.clone(), j.issuer.clone(), j.claims.clone());
            login.map(Arc::new)
        });
        let cache = Some(&self.schema_cache);
        let out = tally_fql::run::evaluate_cached(snap, ts, Mode::Write, auth, &expr, entropy, limits, None, cache);
        self.auth_changes.record(&out.writes, ts);
        self.schema_cache.record(&out.writes, ts);
        *decoded = Some(Decoded { _input: inp, _expr: expr });
        let (status, body) = match &out.result {
            Ok(v) => (200, encode_resource(v)),
            Err(e) => (e.http_status(), crate::record::encode_body(&serde_json::json!({"errors": [e.to_json()]}))),
        };
        (
            TxnOutput {
                status,
                body,
                ts,
                steps: out.steps,
                bytes_read: out.bytes_read,
                bytes_written: out.bytes_written,
                secrets: out.secrets,
            },
            out.writes,
            out.ids_issued,
        )
    }

    /// Apply a batch; outputs go to `answer` (index, output), all after the final commit,
    /// or, with `early`, also at intermediate commits made whenever the pacer says so. An intermediate commit carries whole inputs only and no block, height or
    /// position, and is never durable (durable commits happen at batch ends, and a crash
    /// replays the batch from the log onto the last durable batch end). Where the
    /// intermediate commits fall depends on timing, but not what any input reads or
    /// writes: each input runs on the state every earlier input left, committed or not.
    fn apply_inner(
        &mut self,
        batch: &Batch,
        position: Option<&[u8]>,
        early: bool,
        decoded: &mut [Option<tally_apply::Decoded>],
        logged: &mut dyn FnMut() -> bool,
        answer: &mut dyn FnMut(usize, Vec<u8>),
    ) -> anyhow::Result<()> {
        let mut logged = InLog { logged, known: false };
        let r = self.apply_batch(batch, position, early, decoded, &mut logged, answer);
        if r.is_err() {
            // The batch was not committed: what its transactions cached may describe
            // schema writes the store does not have.
            self.schema_cache.reset(self.last_ts);
            // What the sweeps decided is not in the store either.
            if let Ok((due, stored, running)) = load_sweep_due(&*self.store, self.applied_height) {
                self.sweep_due = due;
                self.due_stored = stored;
                self.sweep_running = running;
            }
        }
        r
    }

    fn apply_batch(
        &mut self,
        batch: &Batch,
        position: Option<&[u8]>,
        early: bool,
        decoded: &mut [Option<tally_apply::Decoded>],
        logged: &mut InLog<'_>,
        answer: &mut dyn FnMut(usize, Vec<u8>),
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            batch.height == self.applied_height + 1,
            "batch height {} does not follow the applied height {}",
            batch.height,
            self.applied_height
        );
        if batch.rules != RULES && !self.apply_other_rules {
            return Err(OtherRules(other_rules(batch)).into());
        }
        let mut b = self.store.begin()?;
        let mut builder = BlockBuilder::new();
        // Outputs not yet handed over: (index, output).
        let mut held: Vec<(usize, Vec<u8>)> = Vec::with_capacity(batch.inputs.len());
        let mut ts = batch.ts.max(self.last_ts + 1);
        let first_ts = ts;
        // Committed transactions not yet published (only when someone listens).
        let publish = self.publish.clone().filter(|p| p.wanted());
        let mut committed: Vec<crate::publish::CommittedTxn> = Vec::new();
        let mut last_ts = self.last_ts;
        // When the batch's writes can make something removable (`crate::sweep_due`).
        let mut writes_due = tally_fql::retention::WritesDue::default();
        self.pacer.batch_started();
        for (i, input) in batch.inputs.iter().enumerate() {
            let input_hash = builder.push_input(input)?;
            let hint = decoded.get_mut(i).and_then(Option::take);
            // A panic in evaluation is a bug, but it must not take the node down (a logged
            // input that panics would panic again on every replay). It is deterministic, so
            // every replica turns it into the same error.
            let run = if crate::record::root_key::is_root_key_record(input) {
                // It sets the node's root key in memory at once: only once it is logged.
                logged.wait()?;
                Ok(self.apply_root_key(&mut *b, ts, input)?)
            } else {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_input(&*b, ts, input, hint)))
            };
            let (out, writes, ids) = run.unwrap_or_else(|_| {
                let e = tally_fql::FqlError::new(
                    "internal server error",
                    "The query hit an internal error and was not applied.",
                );
                (TxnOutput::json(500, &serde_json::json!({"errors": [e.to_json()]}), ts), Vec::new(), 0)
            });
            let (out, writes) = admit(ts, input.len(), out, writes);
            let mut removed = Vec::new();
            let mut removed_entries = Vec::new();
            for w in &writes {
                if publish.is_some() && w.value.is_none() {
                    match w.space {
                        Space::Docs => removed.extend(removed_version(&*b, w)),
                        Space::Index => removed_entries.extend(removed_entry(&*b, w)),
                    }
                }
                writes_due.note(&*b, w).map_err(|e| {
                    anyhow::anyhow!("the state store failed while applying batch {}: {}", batch.height, e.description)
                })?;
                apply_write(&mut *b, w).map_err(|e| machine_fault(batch.height, e))?;
                builder.push_effect_hash(self.tlog.effect(effect_space(w), &w.key, w.ts, w.value.as_deref()));
            }
            if publish.is_some() && !writes.is_empty() {
                let mut txn = crate::publish::CommittedTxn::of(ts, &writes);
                txn.removed = removed;
                txn.removed_entries = removed_entries;
                committed.push(txn);
            }
            for (name, value) in self.tlog.finish_txn_hashed(ts, batch.height, i as u32, input, input_hash) {
                b.set_meta(&name, &value)?;
            }
            held.push((i, encode_output(&out)));
            last_ts = ts;
            ts += 1 + ids / 1000;
            if early && i + 1 < batch.inputs.len() && self.pacer.release_due() {
                logged.wait()?;
                b.commit(false)?;
                b = self.store.begin()?;
                self.applied_ts.store(last_ts, Ordering::Release);
                publish_now(&publish, &mut committed);
                for (j, out) in held.drain(..) {
                    answer(j, out);
                }
            }
        }
        if batch.inputs.is_empty() {
            // An empty batch (an idle log's, `tally_apply::IdleSweep`) commits at its own
            // ts: its sweep runs there, and the next batch's ts is above it.
            last_ts = first_ts;
        }
        let swept = self.sweep(&mut *b, batch.height, last_ts, &writes_due, batch.inputs.is_empty(), &mut builder)?;
        if self.diverge_at == Some(batch.height) {
            builder.push_effect(b"injected divergence");
        }
        for (name, value) in self.tlog.finish_block() {
            b.set_meta(&name, &value)?;
        }
        let tree = (self.tlog.size(), self.tlog.root());
        let header = builder.header(batch.height, self.prev_hash, first_ts, last_ts.max(first_ts), tree)?;
        b.set_meta(META_HEAD, &header.encode())?;
        if let Some(key) = &self.signer {
            let sig = key.sign(&tree_head(&header));
            b.set_meta(&writer::sig_key(batch.height), &[&key.public_key()[..], &sig[..]].concat())?;
        }
        b.set_meta(&block_key(batch.height), &header.encode())?;
        if let Some(p) = position {
            b.set_meta(META_POSITION, p)?;
        }
        b.set_meta(META_APPLIED_HEIGHT, &batch.height.to_be_bytes())?;
        b.set_meta(META_LAST_TS, &last_ts.to_be_bytes())?;
        self.batches_since_checkpoint += 1;
        let durable = self.pacer.checkpoint_due(self.batches_since_checkpoint);
        // Everything above is evaluation, which may overlap the log's sync; from the
        // commit on, the batch is seen outside the executor.
        logged.wait()?;
        b.commit(durable)?;
        if durable {
            self.batches_since_checkpoint = 0;
            self.pacer.checkpointed();
            self.checkpointed_height.store(batch.height, Ordering::Release);
        }
        self.prev_hash = header.hash();
        self.applied_height = batch.height;
        self.last_ts = last_ts;
        if swept {
            self.swept_ts = Some(last_ts);
        }
        self.applied_ts.store(last_ts, Ordering::Release);
        if let Ok(mut h) = self.head.lock() {
            *h = Some(header);
        }
        publish_now(&publish, &mut committed);
        for (j, out) in held {
            answer(j, out);
        }
        Ok(())
    }

    /// Retention (`tally_fql::retention`): at the end of a batch, remove the next
    /// bounded share of the versions retention hides at the batch's last commit ts,
    /// resuming where the previous batch's sweep stopped (`META_RETENTION_CURSOR`). The
    /// removals are effects of the block (op remove, after its transactions' effects)
    /// and are listed in its removal record (`retention_key`). Deterministic: the same
    /// state and ts on every member, never a clock. Whether the batch sweeps and how far
    /// is `crate::sweep_spacing`'s: a batch with inputs within 10 ms of commit ts of the
    /// last sweep skips it; an empty batch (`idle`) exists only for its sweep, which may
    /// look at [`IDLE_SWEEP_KEYS_FACTOR`] times as many keys. Of the two sweeps, each runs
    /// only while its pass is under way or when `crate::sweep_due` says something could
    /// be removable (first lowered by the batch's `writes`). Returns whether one ran (then
    /// [`META_RETENTION_SWEPT_TS`] is `now` in the batch).
    fn sweep(
        &mut self,
        b: &mut dyn tally_storage::Batch,
        height: u64,
        now: u64,
        writes: &tally_fql::retention::WritesDue,
        idle: bool,
        builder: &mut BlockBuilder,
    ) -> anyhow::Result<bool> {
        let failed =
            |e: tally_fql::FqlError| anyhow::anyhow!("the retention sweep of batch {height} failed: {}", e.description);
        if !writes.is_empty() {
            let due = writes.due(&*b, now, Some(&self.schema_cache)).map_err(failed)?;
            self.sweep_due.lower(crate::sweep_due::DOCS, due[0]);
            self.sweep_due.lower(crate::sweep_due::INDEX, due[1]);
        }
        let kinds = [(META_RETENTION_CURSOR, false), (META_RETENTION_INDEX_CURSOR, true)];
        let limits = crate::sweep_spacing::limits(idle, self.swept_ts, now)
            .filter(|_| (0..2).any(|k| self.sweep_due.wants(k, self.sweep_running[k], now)));
        let swept = limits.is_some();
        if let Some(limits) = limits {
            b.set_meta(META_RETENTION_SWEPT_TS, &now.to_be_bytes())?;
            let mut removals = Vec::new();
            // Documents first, then index entries, each from its own cursor: the index
            // sweep sees the document sweep's removals (it reads through the batch).
            for (kind, (name, index)) in kinds.into_iter().enumerate() {
                if !self.sweep_due.wants(kind, self.sweep_running[kind], now) {
                    continue;
                }
                let cursor = b.meta(name)?.filter(|c| !c.is_empty());
                self.sweep_due.before(kind, cursor.is_none());
                let swept = if index {
                    tally_fql::retention::sweep_index(&*b, now, cursor.as_deref(), limits)
                } else {
                    tally_fql::retention::sweep(&*b, now, cursor.as_deref(), limits)
                }
                .map_err(failed)?;
                for w in &swept.removals {
                    apply_write(b, w).map_err(|e| machine_fault(height, e))?;
                    let r = tally_ledger::leaf::Removal { space: effect_space(w), key: w.key.clone(), ts: w.ts };
                    builder.push_effect_hash(r.effect_hash());
                    removals.push(r);
                }
                self.sweep_due.after(kind, swept.due, swept.next.is_none());
                self.sweep_running[kind] = swept.next.is_some();
                if swept.next != cursor {
                    b.set_meta(name, swept.next.as_deref().unwrap_or(&[]))?;
                }
            }
            if !removals.is_empty() {
                self.retention_removed.fetch_add(removals.len() as u64, Ordering::Relaxed);
                b.set_meta(&retention_key(height), &tally_ledger::leaf::encode_removals(&removals))?;
                b.set_meta(tally_fql::retention::META_SWEEP_TS, &now.to_be_bytes())?;
            }
        }
        // Written whenever it differs from what the store holds (absent included: a store
        // of earlier rules, or a fresh one, holds it from its first batch of these on).
        let encoded = self.sweep_due.encode();
        if self.due_stored.as_deref() != Some(&encoded[..]) {
            b.set_meta(crate::sweep_due::META_SWEEP_DUE, &encoded)?;
            self.due_stored = Some(encoded);
        }
        self.retention_due.store(self.sweep_due.due(self.sweep_running), Ordering::Release);
        Ok(swept)
    }

    /// Apply a root key record (`crate::record::root_key`) at `ts`: a compare-and-set of
    /// the root key hash. A record that is malformed or whose expected hash is not the
    /// current one is that record's error and changes nothing.
    fn apply_root_key(
        &mut self,
        b: &mut dyn tally_storage::Batch,
        ts: u64,
        input: &[u8],
    ) -> anyhow::Result<(TxnOutput, Vec<Write>, u64)> {
        use crate::record::root_key;
        let fail = |status: u16, code: &'static str, msg: String| {
            let e = tally_fql::FqlError::new(code, msg);
            (TxnOutput::json(status, &serde_json::json!({"errors": [e.to_json()]}), ts), Vec::new(), 0)
        };
        let r = match root_key::decode_root_key(input) {
            Ok(r) => r,
            Err(e) => return Ok(fail(400, "bad request", format!("undecodable root key record: {e}"))),
        };
        let current = self.root_key_bytes();
        let new = match root_key::apply(current, &r) {
            Ok(h) => h,
            Err(refusal) => return Ok(fail(409, "root key changed", refusal.description().to_string())),
        };
        if Some(new) != current {
            b.set_meta(META_ROOT_KEY, &new)?;
            // Cached authentications made with the old hash end here, before any reader
            // can see this ts (tally_fql::authcache).
            self.auth_changes.root_key_changed(ts);
            self.root_key.set(&hex::encode(new));
        }
        let body =
            serde_json::json!({"resource": {"root_key": if Some(new) == current { "unchanged" } else { "set" }}});
        Ok((TxnOutput::json(200, &body, ts), Vec::new(), 0))
    }

    fn root_key_bytes(&self) -> Option<[u8; 32]> {
        hex::decode(&*self.root_key.get()).ok().and_then(|b| b.try_into().ok())
    }

    /// [`Self::apply_inner`] answering only at the end, as a list.
    fn apply_collect(&mut self, batch: &Batch, position: Option<&[u8]>) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut outputs = Vec::with_capacity(batch.inputs.len());
        self.apply_inner(batch, position, false, &mut [], &mut || true, &mut |_, out| outputs.push(out))?;
        Ok(outputs)
    }
}

/// `{"resource": v}` as JSON text, written straight from the value by the streamed
/// encoder the read path uses (tally_value::ChunkEncoder, byte for byte what `to_json`
/// gives): a large write answer costs its text, never also the JSON tree `to_json`
/// builds (several times the text for a big page).
fn encode_resource(v: &tally_value::Value) -> Vec<u8> {
    let mut body = Vec::new();
    let mut enc = tally_value::ChunkEncoder::new("{\"resource\":", v, "}");
    while !enc.is_done() {
        enc.fill(&mut body, usize::MAX);
    }
    body
}

/// The transparency log's head after `header`'s block, as members sign it.
pub fn tree_head(header: &BlockHeader) -> tally_ledger::sth::TreeHead {
    tally_ledger::sth::TreeHead {
        tree_size: header.tree_size,
        timestamp_ms: tally_ledger::sth::TreeHead::timestamp_for(header.last_ts),
        root: header.tree_root,
    }
}

/// The transparency log's writer continuing the stored tree of `size` leaves.
fn load_tree(store: &dyn Store, size: u64) -> anyhow::Result<LogWriter> {
    let snap = store.snapshot()?;
    let writer = LogWriter::load(size, &node_reader(&*snap))?;
    Ok(writer)
}

/// The stored subtree hashes of the transparency log in `snap`, in either layout
/// (`tally_ledger::writer::NodeReader`), a storage error reported as the ledger's. The
/// executor, the proof API and `tally verify` read them through this.
pub fn node_reader(
    snap: &dyn tally_storage::Snapshot,
) -> writer::NodeReader<impl Fn(&str) -> Result<Option<Vec<u8>>, tally_ledger::LedgerError> + '_> {
    writer::NodeReader::new(move |name: &str| {
        snap.meta(name).map_err(|e| tally_ledger::LedgerError::Storage(e.to_string()))
    })
}

/// Hand what was just committed to the stream hub (after `applied_ts` moved past it).
fn publish_now(to: &Option<Arc<dyn crate::publish::Publish>>, committed: &mut Vec<crate::publish::CommittedTxn>) {
    if let Some(p) = to {
        if !committed.is_empty() {
            p.publish(std::mem::take(committed));
        }
    }
}

// The transaction's leaf record is stored as one value of the state store.
const _: () = assert!(tally_ledger::leaf::RECORD_BYTES_MAX == tally_storage::VALUE_BYTES_MAX);

/// What of an evaluated transaction (`out`, `writes`, its input record `input_len` bytes
/// long) is applied. The evaluator refuses every write the store would refuse
/// (`tally_fql::limits`); should one slip through all the same, or should the
/// transaction's ledger record not fit in the store, it is this transaction's error,
/// never the batch's: nothing of it is applied, the same way on every replica. What is
/// admitted then cannot fail to apply for its content (only for a fault of the store).
fn admit(ts: u64, input_len: usize, out: TxnOutput, writes: Vec<Write>) -> (TxnOutput, Vec<Write>) {
    let refuse = |e: tally_fql::FqlError| {
        (TxnOutput::json(e.http_status(), &serde_json::json!({"errors": [e.to_json()]}), ts), Vec::new())
    };
    if let Err(e) = writes.iter().try_for_each(|w| tally_storage::check_put(&w.key, w.value.as_deref().unwrap_or(&[])))
    {
        return refuse(tally_fql::FqlError::new(
            tally_fql::error::code::INVALID_ARGUMENT,
            format!("The transaction was not applied: {e}. Write smaller documents or index entries."),
        ));
    }
    if let Err(e) = crate::record::check_record(input_len, writes.len()) {
        return refuse(e);
    }
    (out, writes)
}

/// For streams: the document version a history removal `w` takes away, as (key, ts,
/// whether it was a deletion). Only published, never hashed or applied.
fn removed_version(b: &dyn tally_storage::Batch, w: &Write) -> Option<(Vec<u8>, u64, bool)> {
    let v = b.get(w.space, &w.key, w.ts).ok()??;
    if v.ts != w.ts {
        return None;
    }
    let deleted = tally_fql::model::decode_doc(&v).map(|d| d.deleted).unwrap_or(false);
    Some((w.key.clone(), w.ts, deleted))
}

/// For streams: the index entry version a history removal `w` takes away, as (key, ts,
/// the stored entry). Only published, never hashed or applied.
fn removed_entry(b: &dyn tally_storage::Batch, w: &Write) -> Option<(Vec<u8>, u64, Vec<u8>)> {
    let v = b.get(w.space, &w.key, w.ts).ok()??;
    (v.ts == w.ts).then(|| (w.key.clone(), w.ts, v.value))
}

fn apply_write(b: &mut dyn tally_storage::Batch, w: &Write) -> tally_storage::Result<()> {
    match &w.value {
        Some(v) => b.put(w.space, &w.key, w.ts, v),
        None => b.remove(w.space, &w.key, w.ts).map(drop),
    }
}

/// A store failure while applying a batch: a fault of the machine (disk, I/O), not of any
/// transaction, so the node stops (see [`fail_stop`]).
fn machine_fault(height: u64, e: tally_storage::StorageError) -> anyhow::Error {
    anyhow::anyhow!("the state store failed while applying batch {height}: {e}")
}

/// An output as the log hands it over: its output record.
fn encode_output(out: &TxnOutput) -> Vec<u8> {
    crate::record::encode_output(out)
}

/// The log could not make the batch being applied durable (`StateMachine::apply_logging`).
#[derive(Debug, thiserror::Error)]
#[error("the batch is not in the input log: its append failed")]
struct NotLogged;

/// Whether the batch being applied is durable in the log: asked (and waited for) once,
/// before the first thing of the batch is seen outside the executor.
struct InLog<'a> {
    logged: &'a mut dyn FnMut() -> bool,
    known: bool,
}

impl InLog<'_> {
    fn wait(&mut self) -> Result<(), NotLogged> {
        if !self.known {
            if !(self.logged)() {
                return Err(NotLogged);
            }
            self.known = true;
        }
        Ok(())
    }
}

/// A batch of other executor rules than this build's: not applied (see [`RULES`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OtherRules(pub String);

/// The exit code of a node that stopped at a batch of other executor rules.
pub const EXIT_OTHER_RULES: i32 = 72;

/// Why a batch of other rules is not applied, and what to do.
pub fn other_rules(batch: &Batch) -> String {
    let sequenced = if batch.rules == Batch::UNSTAMPED {
        "was sequenced by a build from before batches carried executor rules".to_string()
    } else {
        format!("was sequenced under executor rules {}", batch.rules)
    };
    format!(
        "batch {} {sequenced}, and this build applies rules {RULES}: applying it here could compute other \
         results than the ones acknowledged. Start the build that sequenced it, stop it gracefully \
         (SIGTERM, so that everything is applied and checkpointed), then start this build; in a cluster, \
         every member runs the same build. If no such build can apply it, `tally serve --apply-other-rules` \
         applies the log under this build's rules",
        batch.height
    )
}

impl StateMachine for FqlMachine {
    fn applied_height(&self) -> u64 {
        self.applied_height
    }

    fn rules(&self) -> u16 {
        RULES
    }

    fn last_commit_ts(&self) -> u64 {
        self.last_ts
    }

    fn apply(&mut self, batch: &Batch) -> Vec<Vec<u8>> {
        let r = self.apply_collect(batch, None);
        fail_stop(r, batch.height)
    }

    fn apply_answering(&mut self, batch: &Batch, answer: &mut dyn FnMut(usize, Vec<u8>)) {
        let r = self.apply_inner(batch, None, true, &mut [], &mut || true, answer);
        fail_stop(r.map(|()| Vec::new()), batch.height);
    }

    fn apply_decoded(
        &mut self,
        batch: &Batch,
        decoded: &mut [Option<tally_apply::Decoded>],
        answer: &mut dyn FnMut(usize, Vec<u8>),
    ) {
        let r = self.apply_inner(batch, None, true, decoded, &mut || true, answer);
        fail_stop(r.map(|()| Vec::new()), batch.height);
    }

    fn apply_logging(
        &mut self,
        batch: &Batch,
        decoded: &mut [Option<tally_apply::Decoded>],
        logged: &mut dyn FnMut() -> bool,
        answer: &mut dyn FnMut(usize, Vec<u8>),
    ) -> bool {
        match self.apply_inner(batch, None, true, decoded, logged, answer) {
            // Nothing of the batch was committed or answered; its driver stops (see
            // `StateMachine::apply_logging`), so what evaluation left in memory (the
            // transparency log's right edge) is never used.
            Err(e) if e.is::<NotLogged>() => false,
            // A machine fault (say, the store stopped after a failed background write)
            // while the batch's append was still under way: if the append failed too, the
            // batch is not in the log and nothing of it was committed, so this is the log's
            // failure, which the sequencer reports; `fail_stop` would say the batch is in
            // the log and is applied again on restart. (`logged()` answers the same again.)
            Err(e) if !logged() => {
                tracing::error!(error = %e, height = batch.height, "applying a batch the log failed to write failed too; nothing of it was committed");
                false
            }
            r => {
                fail_stop(r.map(|()| Vec::new()), batch.height);
                true
            }
        }
    }
}

/// Fail-stop: state must never diverge from the log. The batch is already durable in the
/// log, so a restart replays it.
fn fail_stop(r: anyhow::Result<Vec<Vec<u8>>>, height: u64) -> Vec<Vec<u8>> {
    match r {
        Ok(o) => o,
        Err(e) if e.is::<OtherRules>() => {
            tracing::error!(error = %e, height, "a batch of other executor rules; stopping the node");
            eprintln!("tally: fatal: {e:#}\nNothing was applied from batch {height} on; the log is unchanged.");
            std::process::exit(EXIT_OTHER_RULES);
        }
        Err(e) => {
            tracing::error!(error = %e, height, "applying a batch failed; stopping the node");
            eprintln!(
                "tally: fatal: applying batch {height} failed: {e:#}\n\
                 The node stops so that its state never departs from the input log. Nothing \
                 acknowledged is lost: the batch is in the log and is applied again on restart. \
                 Check the data directory's disk (free space, permissions, I/O errors in the \
                 system log), then restart the node."
            );
            std::process::exit(70);
        }
    }
}

fn machine_err(e: impl std::fmt::Display) -> MachineError {
    MachineError(e.to_string())
}

impl ReplicatedMachine for FqlMachine {
    fn apply_at(&mut self, batch: &Batch, position: &[u8]) -> Vec<Vec<u8>> {
        let r = self.apply_collect(batch, Some(position));
        fail_stop(r, batch.height)
    }

    fn apply_at_answering(&mut self, batch: &Batch, position: &[u8], answer: &mut dyn FnMut(usize, Vec<u8>)) {
        self.apply_at_decoded(batch, position, &mut [], answer)
    }

    fn apply_at_decoded(
        &mut self,
        batch: &Batch,
        position: &[u8],
        decoded: &mut [Option<tally_apply::Decoded>],
        answer: &mut dyn FnMut(usize, Vec<u8>),
    ) {
        let r = self.apply_inner(batch, Some(position), true, decoded, &mut || true, answer);
        fail_stop(r.map(|()| Vec::new()), batch.height);
    }

    fn set_position(&mut self, position: &[u8]) -> Result<(), MachineError> {
        let mut b = self.store.begin().map_err(machine_err)?;
        b.set_meta(META_POSITION, position).map_err(machine_err)?;
        b.commit(false).map_err(machine_err)
    }

    fn position(&self) -> Result<Option<Vec<u8>>, MachineError> {
        self.store.snapshot().and_then(|s| s.meta(META_POSITION)).map_err(machine_err)
    }

    fn checkpoint(&mut self) -> Result<(), MachineError> {
        self.store.sync().map_err(machine_err)?;
        self.batches_since_checkpoint = 0;
        self.pacer.checkpointed();
        self.checkpointed_height.store(self.applied_height, Ordering::Release);
        Ok(())
    }

    fn export(&self) -> Result<Vec<u8>, MachineError> {
        crate::snapshot::export(&*self.store, self.applied_height).map_err(machine_err)
    }

    fn import(&mut self, data: &[u8]) -> Result<(), MachineError> {
        crate::snapshot::import(&*self.store, data).map_err(machine_err)?;
        self.after_import()
    }

    /// A read view of the store now; the writer streams it (`snapshot::export_to`).
    fn export_view(&self) -> Result<tally_apply::ExportWriter, MachineError> {
        let snap = self.store.snapshot().map_err(machine_err)?;
        let height = self.applied_height;
        Ok(Box::new(move |w: &mut dyn std::io::Write| {
            crate::snapshot::export_to(&*snap, height, w).map_err(machine_err)
        }))
    }

    fn import_from(&mut self, r: &mut dyn std::io::Read) -> Result<(), MachineError> {
        let mut reader = crate::snapshot::SnapshotReader::new(r).map_err(machine_err)?;
        crate::snapshot::import_replacing(&*self.store, &mut reader).map_err(machine_err)?;
        self.after_import()
    }
}

impl FqlMachine {
    /// After the store's content was replaced by a snapshot.
    fn after_import(&mut self) -> Result<(), MachineError> {
        self.reload().map_err(machine_err)?;
        // Anything cached was read from the replaced state (at or before the new one's
        // last commit: a member only installs a snapshot ahead of what it applied).
        self.auth_changes.reset(self.last_ts.saturating_add(1));
        self.batches_since_checkpoint = 0;
        self.pacer.checkpointed();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key_len: usize, value_len: usize) -> Write {
        Write { space: Space::Index, key: vec![1; key_len], ts: 5, value: Some(vec![2; value_len]) }
    }

    fn error_text(out: &TxnOutput) -> String {
        String::from_utf8(out.body.clone()).unwrap()
    }

    /// The executor's own guard, for writes the evaluator should have refused but did not
    /// (a limit missed in some function): the transaction fails alone, with nothing to
    /// apply, instead of making the batch fail in the store.
    #[test]
    fn a_write_the_store_refuses_is_the_transactions_error() {
        let ok = TxnOutput::json(200, &serde_json::json!({"resource": 1}), 5);
        let (out, writes) = admit(5, 100, ok.clone(), vec![put(10, 10), put(tally_storage::KEY_BYTES_MAX + 1, 1)]);
        assert_eq!((out.status, writes.len()), (400, 0));
        assert!(error_text(&out).contains("invalid argument") && error_text(&out).contains("exceeds the limit"));
        let (out, writes) = admit(5, 100, ok.clone(), vec![put(10, tally_storage::VALUE_BYTES_MAX + 1)]);
        assert_eq!((out.status, writes.len()), (400, 0));
        let (out, writes) = admit(5, 100, ok, vec![put(10, 10), put(tally_storage::KEY_BYTES_MAX, 10)]);
        assert_eq!((out.status, writes.len()), (200, 2));
    }

    /// The transaction's ledger leaf record must fit in one store value: an input and
    /// writes that together would not fail the transaction, as an input alone over
    /// `INPUT_BYTES_MAX` does (whatever its evaluation answered).
    #[test]
    fn a_transaction_whose_ledger_record_would_not_fit_fails_alone() {
        use crate::record::INPUT_BYTES_MAX;
        let ok = TxnOutput::json(200, &serde_json::json!({"resource": 1}), 5);
        let (out, writes) = admit(5, INPUT_BYTES_MAX - 64, ok.clone(), vec![put(10, 10); 2]);
        assert_eq!((out.status, writes.len()), (200, 2));
        let (out, writes) = admit(5, INPUT_BYTES_MAX - 64, ok.clone(), vec![put(10, 10); 3]);
        assert_eq!((out.status, writes.len()), (400, 0));
        assert!(error_text(&out).contains("ledger record would be 16777248 bytes"), "{}", error_text(&out));
        let failed = TxnOutput::json(400, &serde_json::json!({"errors": []}), 5);
        let (out, _) = admit(5, INPUT_BYTES_MAX + 1, failed, Vec::new());
        assert!(
            error_text(&out).contains("a transaction's input may be at most 16777127 bytes"),
            "{}",
            error_text(&out)
        );
        let (out, writes) = admit(5, 100, ok, vec![put(10, 10); 524_282]);
        assert_eq!((out.status, writes.len()), (200, 524_282));
    }

    /// A batch of other executor rules, or an unstamped one, is not applied: the machine
    /// refuses it before touching the store (the node then stops with this text), unless
    /// told to apply other rules.
    #[test]
    fn batches_of_other_rules_are_refused_before_anything_is_applied() {
        let store: Arc<dyn Store> = Arc::new(tally_storage::MemStore::new());
        let mut m = FqlMachine::open(store.clone()).unwrap();
        for rules in [Batch::UNSTAMPED, RULES + 1] {
            let b = Batch { height: 1, ts: 1_000_000, rules, inputs: Vec::new() };
            let e = m.apply_collect(&b, None).unwrap_err().to_string();
            assert!(e.contains("batch 1 ") && e.contains(&format!("this build applies rules {RULES}")), "{e}");
            assert!(e.contains("stop it gracefully") && e.contains("--apply-other-rules"), "{e}");
            assert_eq!((m.applied_height, meta_height(&*store).unwrap()), (0, 0));
        }
        let ok = Batch { height: 1, ts: 1_000_000, rules: RULES, inputs: Vec::new() };
        m.apply_collect(&ok, None).unwrap();
        assert_eq!(m.applied_height, 1);
        m.apply_other_rules = true;
        let other = Batch { height: 2, ts: 2_000_000, rules: Batch::UNSTAMPED, inputs: Vec::new() };
        m.apply_collect(&other, None).unwrap();
        assert_eq!(m.applied_height, 2);
    }
}
