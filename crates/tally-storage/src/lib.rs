//! tally-storage: a temporal, ordered key/value store.
//!
//! # What it owns
//!
//! Keys and values are opaque bytes chosen by the layer above. Every write adds a *version*
//! of a key at a commit timestamp ([`Ts`]); a read asks for the newest version at or before a
//! read timestamp. There are two independent keyspaces ([`Space::Docs`], [`Space::Index`]) and
//! a small table of named metadata values. Two implementations share one contract:
//! [`MemStore`] (tests, deterministic simulation) and [`RedbStore`] (on disk).
//!
//! # What it must not do
//!
//! It knows nothing about FQL, documents, indexes, the network or the log: it never decodes a
//! key or value. It has no clock and no randomness; timestamps come from the caller.
//!
//! # Concurrency
//!
//! [`Store::snapshot`] returns an owned (`'static`) consistent view that is `Send`, so it can
//! be moved into `tokio::task::spawn_blocking`. There is a single writer: [`Store::begin`]
//! fails with [`StorageError::WriterBusy`] while another [`Batch`] is alive. A batch buffers
//! its writes in memory (reads through it see them) and applies them atomically on commit.
//! A snapshot taken before a commit never sees it.
//! Snapshots are cheap but not free to hold: a [`RedbStore`] snapshot is a redb read
//! transaction and pins the pages it can see (the file grows while it lives), and a live
//! [`MemStore`] snapshot makes the next commit copy the tables it touches. Hold one per
//! query, not indefinitely.
//!
//! # On-disk format (`RedbStore`, format version 2)
//!
//! One redb file with three tables:
//!
//! | table   | key                | value   |
//! |---------|--------------------|---------|
//! | `docs`  | `(&[u8], u64)`     | `&[u8]` |
//! | `index` | `(&[u8], u64)`     | `&[u8]` |
//! | `meta`  | `&str`             | `&[u8]` |
//!
//! In `docs`/`index` the tuple is `(user key, u64::MAX - ts)`: redb compares tuples element by
//! element (so user keys need not be prefix-free) and the inverted timestamp sorts the versions
//! of one key newest first, so "newest version <= T" is one seek to `(key, MAX - T)`.
//! `meta["format_version"]` is the single byte `2`; [`RedbStore::open`] refuses any other
//! value but `1`, and a file whose `meta` table lacks it, with
//! [`StorageError::FormatVersion`]. A file without a `meta` table is treated as new and
//! initialised.
//!
//! `meta["max_version_ts"]` ([`META_MAX_TS`], 8 bytes, big-endian) is at or after the ts
//! of every version and removal ever written to `docs` and `index`: every write
//! transaction raises it to the greatest ts it writes, a replace sets it to the greatest
//! ts it loads. It is only an upper bound (a removal or an older version leaves it). A
//! read view uses it as its [`Snapshot::ts_bound`]; a value of any other length is
//! refused as corruption. Version 1 lacks it: opening a version 1 file computes it with
//! one pass over both tables and writes it with `format_version` 2, in one durable
//! transaction (a build that reads only version 1 then refuses the file, so none can
//! write a version the bound does not cover).
//!
//! # Crash argument
//!
//! Each [`Batch::commit`] is one redb write transaction, hence atomic. `commit(durable=false)`
//! uses redb `Durability::None`: later snapshots see it, but it lives only until the next
//! durable commit reaches disk. `commit(durable=true)` uses `Durability::Immediate` (fsync,
//! with quick-repair so reopening after a crash does not walk the whole file) and makes every
//! earlier non-durable commit durable too, because redb persists the whole committed tree.
//! So a crash loses at most the non-durable commits after the last durable one, and never
//! part of a commit. [`WriteBehind`] puts either store behind a queue written by a
//! background thread: commits return once visible, and the same guarantee holds with
//! "durable" meaning "durable once written", which [`Store::sync`] waits for. The layer above records its position in the meta value
//! `"applied_height"` in the same batch as the effects, makes it durable at checkpoints, and
//! after a crash replays its log from the durable `applied_height`.

mod batch;
mod behind;
mod mem;
mod read;
mod redb_store;
mod remembered;
mod replace;

pub use behind::{BehindLimits, WriteBehind, META_BEHIND_SEQ};
pub use mem::MemStore;
pub use redb_store::RedbStore;
pub use remembered::REMEMBERED_BYTES_MAX;
pub use replace::{Fill, Load};

/// Commit timestamp, microseconds since the Unix epoch.
pub type Ts = u64;

/// Largest key accepted by [`Batch::put`]; keeps every B-tree page useful.
pub const KEY_BYTES_MAX: usize = 32 * 1024;
/// Largest value accepted by [`Batch::put`].
pub const VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Whether [`Batch::put`] accepts `key` and `value`: the one rule every store applies, so
/// a layer above can check a write before handing it over (a write the store would refuse
/// after a transaction was logged must be refused while the transaction is evaluated).
pub fn check_put(key: &[u8], value: &[u8]) -> Result<()> {
    if key.len() > KEY_BYTES_MAX || value.len() > VALUE_BYTES_MAX {
        return Err(StorageError::Invalid(format!(
            "key of {} bytes / value of {} bytes exceeds the limit of {KEY_BYTES_MAX} / {VALUE_BYTES_MAX} bytes",
            key.len(),
            value.len()
        )));
    }
    Ok(())
}
/// The on-disk format this build reads and writes (it upgrades version 1 on open).
pub const FORMAT_VERSION: u8 = 2;
/// Meta key holding [`FORMAT_VERSION`]; reserved, [`Batch::set_meta`] refuses it.
pub const META_FORMAT_VERSION: &str = "format_version";
/// Meta key of a [`RedbStore`] holding a ts at or after every version and removal ever
/// written to its `docs` and `index` tables (8 bytes, big-endian); reserved.
pub const META_MAX_TS: &str = "max_version_ts";

/// Whether `key` is a meta key only the store itself writes.
pub(crate) fn reserved_meta(key: &str) -> bool {
    key == META_FORMAT_VERSION || key == META_MAX_TS || key == behind::META_BEHIND_SEQ
}

/// One of the two independent keyspaces (separate redb tables).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Space {
    Docs,
    Index,
}

/// One version of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub ts: Ts,
    pub value: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O error: {0}")]
    Io(String),
    #[error("storage is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "unsupported storage format version {found} (this build reads version {expected}); \
         use a matching build of tally or start from an empty data directory"
    )]
    FormatVersion { found: String, expected: u8 },
    #[error("the database file is already open (by this or another process)")]
    AlreadyOpen,
    #[error("a write batch is already open; commit or drop it before beginning another")]
    WriterBusy,
    #[error("invalid storage request: {0}")]
    Invalid(String),
    #[error("storage backend error: {0}")]
    Backend(String),
}

pub type Result<T> = std::result::Result<T, StorageError>;

pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Version)>> + 'a>;
pub type HistIter<'a> = Box<dyn Iterator<Item = Result<Version>> + 'a>;

/// `it` with every value cut to its first `head` bytes.
pub fn cut_values(it: ScanIter<'_>, head: usize) -> ScanIter<'_> {
    Box::new(it.map(move |r| {
        r.map(|(k, mut v)| {
            v.value.truncate(head);
            (k, v)
        })
    }))
}

/// A consistent read view.
pub trait Snapshot: Send {
    /// Newest version of `key` whose ts <= at.
    fn get(&self, space: Space, key: &[u8], at: Ts) -> Result<Option<Version>>;
    /// [`Snapshot::get`], given the hash the store's key filters probe with, computed by
    /// a layer above (a stack of write-behind layers then hashes a read's key once). Only
    /// the store's own layers call it; a snapshot without filters answers as `get`.
    fn get_hashed(&self, space: Space, key: &[u8], hash: u64, at: Ts) -> Result<Option<Version>> {
        let _ = hash;
        self.get(space, key, at)
    }
    /// Versions of exactly `key` with lo <= ts <= hi; newest first if `desc`, else oldest first.
    fn history<'a>(&'a self, space: Space, key: &[u8], lo: Ts, hi: Ts, desc: bool) -> Result<HistIter<'a>>;
    /// Distinct keys that start with `prefix`, ascending by bytes (descending if `desc`),
    /// starting at `from` (inclusive; None = start of the prefix range in that direction;
    /// `from` need not exist nor start with the prefix: it is clamped to the prefix range).
    /// Yields each key's newest version with ts <= at, skipping keys that have none.
    /// Lazy: the cost is proportional to what the caller consumes.
    fn scan<'a>(&'a self, space: Space, prefix: &[u8], from: Option<&[u8]>, desc: bool, at: Ts)
        -> Result<ScanIter<'a>>;
    /// [`Snapshot::scan`] giving only the first `head` bytes of each value: for listings
    /// that need a key and a flag, not a document body. The backends copy only those
    /// bytes (this default copies everything, then cuts).
    fn scan_heads<'a>(
        &'a self,
        space: Space,
        prefix: &[u8],
        from: Option<&[u8]>,
        desc: bool,
        at: Ts,
        head: usize,
    ) -> Result<ScanIter<'a>> {
        Ok(cut_values(self.scan(space, prefix, from, desc, at)?, head))
    }
    /// Every version of every key of `space` from key `from` on (inclusive; None: the
    /// first key), in storage order: keys ascending, each key's versions newest first. For
    /// a walk that looks at the versions of many consecutive keys (the retention sweeps),
    /// where one ordered pass replaces a seek per key. Lazy: the cost is proportional to
    /// what the caller consumes.
    fn versions_from<'a>(&'a self, space: Space, from: Option<&[u8]>) -> Result<ScanIter<'a>>;
    /// A key at or after `from` such that no key from `from` up to it (exclusive) has a
    /// version in this view; None: no key at or after `from` has one. The first key
    /// holding a version is such a key, and so is any key between `from` and it: a stack
    /// of layers answers with the least key any of them holds an entry for, a removal
    /// included, without merging their versions (`NewestMemo`'s absent ranges).
    fn next_key_bound(&self, space: Space, from: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.versions_from(space, Some(from))?.next() {
            None => Ok(None),
            Some(item) => Ok(Some(item?.0)),
        }
    }
    /// Small named metadata values (e.g. "applied_height").
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// A ts no version in this view is newer than ([`Ts::MAX`]: the view cannot tell).
    /// A view stacked on this one answers [`Snapshot::get`] from its own writes alone when
    /// its newest version of the key is at or after it (see `Layer`).
    fn ts_bound(&self) -> Ts {
        Ts::MAX
    }
}

/// A write batch: reads see the batch's own uncommitted writes. Dropping it without
/// committing discards the writes.
pub trait Batch: Snapshot {
    /// Add (or replace) the version of `key` at `ts`.
    fn put(&mut self, space: Space, key: &[u8], ts: Ts, value: &[u8]) -> Result<()>;
    /// Remove one version (history editing / retention). Returns whether it existed.
    fn remove(&mut self, space: Space, key: &[u8], ts: Ts) -> Result<bool>;
    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()>;
    /// durable=false: visible to later snapshots but may be lost on crash;
    /// durable=true: fsynced; also makes every earlier non-durable commit durable.
    fn commit(self: Box<Self>, durable: bool) -> Result<()>;
}

pub trait Store: Send + Sync + 'static {
    /// An owned consistent view of the latest commit.
    fn snapshot(&self) -> Result<Box<dyn Snapshot>>;
    /// Start the single write batch; [`StorageError::WriterBusy`] if one is alive.
    fn begin(&self) -> Result<Box<dyn Batch>>;
    /// Return once every commit made so far is durable (call it between units of work made
    /// of several commits: everything up to now becomes durable). Fails with
    /// [`StorageError::WriterBusy`] while a batch is alive on a store that makes commits
    /// durable itself (the default: an empty durable commit).
    fn sync(&self) -> Result<()> {
        self.begin()?.commit(true)
    }
    /// Return once every commit made so far with `durable = true` is durable, without
    /// making any other commit durable (unlike [`Store::sync`], which would make a commit
    /// that ends no unit of work durable, e.g. the executor's mid-batch commits). Safe from
    /// any thread. A store whose durable commits return only once durable (the default)
    /// has nothing to wait for.
    fn wait_requested_durable(&self) -> Result<()> {
        Ok(())
    }
    /// Replace every version of both spaces with what `fill` loads, as one durable
    /// commit; meta values `fill` sets are set, the others kept. Readers see the old
    /// content or the new, never a mix; a crash keeps one or the other; an error from
    /// `fill` (or the store) leaves the old. Fails with [`StorageError::WriterBusy`] while
    /// a batch is alive. [`RedbStore`] (and [`WriteBehind`] over it) writes the versions
    /// straight into one redb transaction, in memory bounded by its page cache; the
    /// default goes through one [`Batch`], in memory (see `replace.rs`).
    fn replace(&self, fill: Fill<'_>) -> Result<()> {
        replace::replace_via_batch(self, fill)
    }
}
