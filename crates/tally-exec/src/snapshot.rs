//! A full copy of the state store, for Raft snapshots: a member that is new or too far
//! behind for the log receives one and replaces its store with it.
//!
//! Format (version 1, big-endian): `"TALLYSNP" | 0x01 | record* | 0x00 | crc32 u32`, the
//! crc covering every byte before it. Records:
//! - `0x01` document version / `0x02` index version: `key len u32 | key | ts u64 | value len u32 | value`
//! - `0x03` meta value: `name len u32 | name (UTF-8) | value len u32 | value`
//!
//! The snapshot ends itself (the end tag, then the crc), so it can be written to and read
//! from a stream with memory bounded by one record: online backups do both ([`export_to`],
//! [`SnapshotReader`], [`import_fresh`]), and so do Raft snapshots ([`export_to`] from a
//! view taken on the executor, [`import_replacing`] into the live store as one commit).
//! [`export`] and [`import`] (whole, in memory) remain for tests and small tools.

use std::io::{Read, Write};

use tally_storage::{Snapshot, Space, Store, Ts};

use crate::machine::{
    block_key, retention_key, META_APPLIED_HEIGHT, META_HEAD, META_LAST_TS, META_POSITION, META_RETENTION_CURSOR,
    META_RETENTION_INDEX_CURSOR, META_RETENTION_SWEPT_TS, META_ROOT_KEY,
};

const MAGIC: &[u8; 8] = b"TALLYSNP";
const FORMAT: u8 = 1;
const TAG_END: u8 = 0;
const TAG_DOC: u8 = 1;
const TAG_INDEX: u8 = 2;
const TAG_META: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("storage: {0}")]
    Storage(#[from] tally_storage::StorageError),
    #[error("snapshot is malformed: {0}")]
    Malformed(&'static str),
    #[error("snapshot I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The longest key or value a streamed snapshot record may declare: a damaged length
/// must not make the reader allocate gigabytes (a stored version is far below this).
pub const RECORD_BYTES_MAX: usize = 256 << 20;

/// Writes through to `w`, keeping the CRC-32 of everything written.
struct CrcWriter<'a> {
    w: &'a mut dyn Write,
    crc: crc32fast::Hasher,
}

impl CrcWriter<'_> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.crc.update(b);
        self.w.write_all(b)
    }
    fn put_bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.put(&(b.len() as u32).to_be_bytes())?;
        self.put(b)
    }
}

fn space_tag(space: Space) -> u8 {
    match space {
        Space::Docs => TAG_DOC,
        Space::Index => TAG_INDEX,
    }
}

/// Every version of every key in `space`.
fn all_versions(snap: &dyn Snapshot, space: Space, out: &mut CrcWriter) -> Result<(), SnapshotError> {
    for item in snap.scan(space, &[], None, false, Ts::MAX)? {
        let (key, _) = item?;
        for v in snap.history(space, &key, 0, Ts::MAX, false)? {
            let v = v?;
            out.put(&[space_tag(space)])?;
            out.put_bytes(&key)?;
            out.put(&v.ts.to_be_bytes())?;
            out.put_bytes(&v.value)?;
        }
    }
    Ok(())
}

pub fn export(store: &dyn Store, applied_height: u64) -> Result<Vec<u8>, SnapshotError> {
    export_of(&*store.snapshot()?, applied_height)
}

/// The store as it is now, whatever a concurrent executor commits meanwhile: the height
/// is read from the same point-in-time view as everything else (online backups).
/// Returns the snapshot and its applied height.
pub fn export_now(store: &dyn Store) -> Result<(Vec<u8>, u64), SnapshotError> {
    let snap = store.snapshot()?;
    let height = applied_height(&*snap)?;
    Ok((export_of(&*snap, height)?, height))
}

fn export_of(snap: &dyn Snapshot, applied_height: u64) -> Result<Vec<u8>, SnapshotError> {
    let mut out = Vec::with_capacity(1 << 16);
    export_to(snap, applied_height, &mut out)?;
    Ok(out)
}

/// The applied height recorded in `snap` (0 for a store that applied nothing).
pub fn applied_height(snap: &dyn Snapshot) -> Result<u64, SnapshotError> {
    Ok(match snap.meta(META_APPLIED_HEIGHT)? {
        Some(b) => u64::from_be_bytes(b.as_slice().try_into().map_err(|_| SnapshotError::Malformed("applied height"))?),
        None => 0,
    })
}

/// Write the snapshot of `snap` to `w` as it is read: memory stays at one record
/// whatever the store's size (online backups).
pub fn export_to(snap: &dyn Snapshot, applied_height: u64, w: &mut dyn Write) -> Result<(), SnapshotError> {
    let mut out = CrcWriter { w, crc: crc32fast::Hasher::new() };
    out.put(MAGIC)?;
    out.put(&[FORMAT])?;
    all_versions(snap, Space::Docs, &mut out)?;
    all_versions(snap, Space::Index, &mut out)?;
    // The retention cursors travel too: every member's next sweep must start at the same
    // key, or their blocks would remove different versions; and so does the last sweep's
    // ts and the sweeps' due state, which decide whether the next batch sweeps
    // (`crate::sweep_spacing`, `crate::sweep_due`).
    let fixed = [
        META_APPLIED_HEIGHT,
        META_LAST_TS,
        META_HEAD,
        META_POSITION,
        META_RETENTION_CURSOR,
        META_RETENTION_INDEX_CURSOR,
        META_RETENTION_SWEPT_TS,
        crate::sweep_due::META_SWEEP_DUE,
        tally_fql::retention::META_SWEEP_TS,
        META_ROOT_KEY,
    ]
    .map(String::from);
    // The transparency log travels with the state (its member signatures do not: each
    // member signs for itself).
    let tree_size = match snap.meta(META_HEAD)? {
        Some(b) => {
            tally_ledger::BlockHeader::decode(&b).map_err(|_| SnapshotError::Malformed("stored head"))?.tree_size
        }
        None => 0,
    };
    let blocks = (1..=applied_height).flat_map(|h| [block_key(h), retention_key(h)]);
    let mut put = |name: &str| -> Result<bool, SnapshotError> {
        let Some(v) = snap.meta(name)? else { return Ok(false) };
        out.put(&[TAG_META])?;
        out.put_bytes(name.as_bytes())?;
        out.put_bytes(&v)?;
        Ok(true)
    };
    for name in fixed.into_iter().chain(blocks) {
        put(&name)?;
    }
    // Subtrees: a chunk for each 16 leaves (executor rules 7), or, for leaves a store
    // wrote before rules 7, the names of their subtrees of levels 0–3; then the levels from
    // 4 up, a name each. Looking up only what a chunk does not hold keeps a snapshot from
    // asking for two names a leaf that are not there.
    use tally_ledger::writer::{self, CHUNK_LEAVES, CHUNK_LEVELS};
    for chunk in 0..tree_size.div_ceil(CHUNK_LEAVES) {
        if !put(&writer::chunk_key(chunk))? {
            let leaves = (tree_size - chunk * CHUNK_LEAVES).min(CHUNK_LEAVES);
            for id in writer::chunk_ids(chunk, leaves) {
                put(&writer::node_key(id))?;
            }
        }
    }
    for id in tally_ledger::tlog::node_ids(tree_size).filter(|id| id.level >= CHUNK_LEVELS) {
        put(&writer::node_key(id))?;
    }
    for index in 0..tree_size {
        put(&writer::leaf_key(index))?;
    }
    out.put(&[TAG_END])?;
    let crc = out.crc.clone().finalize();
    out.w.write_all(&crc.to_be_bytes())?;
    Ok(())
}

/// One record of a streamed snapshot.
pub enum OwnedRecord {
    Version(Space, Vec<u8>, Ts, Vec<u8>),
    Meta(String, Vec<u8>),
}

/// Reads a snapshot record by record from a stream, checking its format version, every
/// record and, at the end tag, its CRC-32 ([`SnapshotReader::next_record`] answers `None`
/// only after the CRC held). Reads nothing past the CRC.
pub struct SnapshotReader<R: Read> {
    r: R,
    crc: crc32fast::Hasher,
    done: bool,
}

impl<R: Read> SnapshotReader<R> {
    pub fn new(mut r: R) -> Result<SnapshotReader<R>, SnapshotError> {
        let mut head = [0u8; 9];
        r.read_exact(&mut head).map_err(|_| SnapshotError::Malformed("not a Tally snapshot"))?;
        if &head[..8] != MAGIC {
            return Err(SnapshotError::Malformed("not a Tally snapshot"));
        }
        if head[8] != FORMAT {
            return Err(SnapshotError::Malformed("unknown snapshot format version"));
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        Ok(SnapshotReader { r, crc, done: false })
    }

    fn take(&mut self, n: usize) -> Result<Vec<u8>, SnapshotError> {
        if n > RECORD_BYTES_MAX {
            return Err(SnapshotError::Malformed("a record is longer than the limit"));
        }
        let mut b = Vec::with_capacity(n.min(1 << 16));
        (&mut self.r).take(n as u64).read_to_end(&mut b)?;
        if b.len() != n {
            return Err(SnapshotError::Malformed("truncated"));
        }
        self.crc.update(&b);
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| SnapshotError::Malformed("u32"))?))
    }
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().map_err(|_| SnapshotError::Malformed("u64"))?))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, SnapshotError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// The next record, or `None` once the end tag and a matching CRC were read.
    pub fn next_record(&mut self) -> Result<Option<OwnedRecord>, SnapshotError> {
        if self.done {
            return Ok(None);
        }
        match self.take(1)?[0] {
            TAG_END => {
                let want = self.crc.clone().finalize();
                let mut got = [0u8; 4];
                self.r.read_exact(&mut got).map_err(|_| SnapshotError::Malformed("truncated"))?;
                if u32::from_be_bytes(got) != want {
                    return Err(SnapshotError::Malformed("checksum mismatch"));
                }
                self.done = true;
                Ok(None)
            }
            t @ (TAG_DOC | TAG_INDEX) => {
                let space = if t == TAG_DOC { Space::Docs } else { Space::Index };
                let key = self.bytes()?;
                let ts = self.u64()?;
                Ok(Some(OwnedRecord::Version(space, key, ts, self.bytes()?)))
            }
            TAG_META => {
                let name = String::from_utf8(self.bytes()?).map_err(|_| SnapshotError::Malformed("meta name"))?;
                Ok(Some(OwnedRecord::Meta(name, self.bytes()?)))
            }
            _ => Err(SnapshotError::Malformed("unknown record tag")),
        }
    }

    /// The underlying reader (after the CRC once `next_record` answered `None`).
    pub fn into_inner(self) -> R {
        self.r
    }
}

/// Bytes of records a streamed import writes per storage commit: keeps the write
/// transaction's memory bounded on a store of any size.
const IMPORT_COMMIT_BYTES: usize = 64 << 20;

/// Load a streamed snapshot into an **empty** store (a restore into a new data
/// directory), committing every [`IMPORT_COMMIT_BYTES`] and durably at the end. The
/// caller checks the stream beforehand (backups carry a SHA-256 of the whole file): a
/// failure part-way leaves a partly filled store, which the caller discards.
pub fn import_fresh<R: Read>(store: &dyn Store, reader: &mut SnapshotReader<R>) -> Result<u64, SnapshotError> {
    let mut records = 0u64;
    let mut b = store.begin()?;
    let mut pending = 0usize;
    while let Some(r) = reader.next_record()? {
        records += 1;
        match r {
            OwnedRecord::Version(space, key, ts, value) => {
                pending += key.len() + value.len();
                b.put(space, &key, ts, &value)?;
            }
            OwnedRecord::Meta(name, value) => {
                pending += name.len() + value.len();
                put_meta(&mut *b, &name, &value)?;
            }
        }
        if pending >= IMPORT_COMMIT_BYTES {
            b.commit(false)?;
            b = store.begin()?;
            pending = 0;
        }
    }
    b.commit(true)?;
    store.sync()?;
    Ok(records)
}

/// Replace the live store's content with a streamed snapshot, as one durable commit
/// ([`Store::replace`]): readers see the old state or the new, and a snapshot that turns
/// out damaged or truncated (its CRC is checked at its end, before the commit) leaves the
/// old state untouched. Memory: one record, plus what the store's commit holds (a redb
/// store writes it through its page cache). Meta values the snapshot does not carry are
/// kept, as [`import`] keeps them. Returns the records read.
pub fn import_replacing<R: Read>(store: &dyn Store, reader: &mut SnapshotReader<R>) -> Result<u64, SnapshotError> {
    let mut records = 0u64;
    // The reader's own error, which `replace` can only carry as a storage error.
    let mut failure = None;
    let r = store.replace(&mut |load| {
        load_records(reader, load, &mut records).map_err(|e| {
            let msg = e.to_string();
            failure = Some(e);
            tally_storage::StorageError::Invalid(msg)
        })
    });
    match (r, failure) {
        (Ok(()), _) => Ok(records),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(e.into()),
    }
}

fn load_records<R: Read>(
    reader: &mut SnapshotReader<R>,
    load: &mut dyn tally_storage::Load,
    records: &mut u64,
) -> Result<(), SnapshotError> {
    while let Some(r) = reader.next_record()? {
        *records += 1;
        match r {
            OwnedRecord::Version(space, key, ts, value) => load.put(space, &key, ts, &value)?,
            OwnedRecord::Meta(name, value) => put_meta(&mut MetaOf(&mut *load), &name, &value)?,
        }
    }
    // A whole snapshot is one stream: anything after its CRC is damage.
    match reader.r.read(&mut [0u8; 1])? {
        0 => Ok(()),
        _ => Err(SnapshotError::Malformed("bytes after the end")),
    }
}

/// Where [`put_meta`] sets a value: a batch or a [`Store::replace`] load.
trait SetMeta {
    fn set(&mut self, name: &str, value: &[u8]) -> Result<(), tally_storage::StorageError>;
}

impl SetMeta for dyn tally_storage::Batch + '_ {
    fn set(&mut self, name: &str, value: &[u8]) -> Result<(), tally_storage::StorageError> {
        self.set_meta(name, value)
    }
}

struct MetaOf<'a>(&'a mut dyn tally_storage::Load);

impl SetMeta for MetaOf<'_> {
    fn set(&mut self, name: &str, value: &[u8]) -> Result<(), tally_storage::StorageError> {
        self.0.set_meta(name, value)
    }
}

fn put_meta(b: &mut (impl SetMeta + ?Sized), name: &str, value: &[u8]) -> Result<(), SnapshotError> {
    // A leaf record must decode: a member installs a snapshot only as proofs can use it.
    if name.starts_with("tlog/l/") {
        tally_ledger::leaf::decode_record(value).map_err(|_| SnapshotError::Malformed("leaf record"))?;
    }
    // So must a chunk of subtree hashes (its number only names it: any is decoded alike).
    if name.starts_with("tlog/c/") {
        tally_ledger::writer::decode_chunk(0, value).map_err(|_| SnapshotError::Malformed("subtree chunk"))?;
    }
    b.set(name, value)?;
    Ok(())
}

enum Record<'a> {
    Version(Space, &'a [u8], Ts, &'a [u8]),
    Meta(&'a str, &'a [u8]),
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let s = self.b.get(self.pos..self.pos + n).ok_or(SnapshotError::Malformed("truncated"))?;
        self.pos += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| SnapshotError::Malformed("u32"))?))
    }
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().map_err(|_| SnapshotError::Malformed("u64"))?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], SnapshotError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

fn parse(data: &[u8]) -> Result<Vec<Record<'_>>, SnapshotError> {
    if data.len() < MAGIC.len() + 6 || &data[..8] != MAGIC {
        return Err(SnapshotError::Malformed("not a Tally snapshot"));
    }
    let (body, crc) = data.split_at(data.len() - 4);
    if crc32fast::hash(body).to_be_bytes() != crc {
        return Err(SnapshotError::Malformed("checksum mismatch"));
    }
    if body[8] != FORMAT {
        return Err(SnapshotError::Malformed("unknown snapshot format version"));
    }
    let mut r = Reader { b: body, pos: 9 };
    let mut out = Vec::new();
    loop {
        match r.take(1)?[0] {
            TAG_END if r.pos == body.len() => return Ok(out),
            TAG_END => return Err(SnapshotError::Malformed("bytes after the end")),
            t @ (TAG_DOC | TAG_INDEX) => {
                let space = if t == TAG_DOC { Space::Docs } else { Space::Index };
                let key = r.bytes()?;
                let ts = r.u64()?;
                out.push(Record::Version(space, key, ts, r.bytes()?));
            }
            TAG_META => {
                let name = std::str::from_utf8(r.bytes()?).map_err(|_| SnapshotError::Malformed("meta name"))?;
                out.push(Record::Meta(name, r.bytes()?));
            }
            _ => return Err(SnapshotError::Malformed("unknown record tag")),
        }
    }
}

/// Replace the store's content with the snapshot's, in one commit made durable before
/// returning. The snapshot
/// is checked completely before anything is touched.
pub fn import(store: &dyn Store, data: &[u8]) -> Result<(), SnapshotError> {
    let records = parse(data)?;
    let mut b = store.begin()?;
    for space in [Space::Docs, Space::Index] {
        let mut old = Vec::new();
        for item in b.scan(space, &[], None, false, Ts::MAX)? {
            let (key, _) = item?;
            for v in b.history(space, &key, 0, Ts::MAX, false)? {
                old.push((key.clone(), v?.ts));
            }
        }
        for (key, ts) in old {
            b.remove(space, &key, ts)?;
        }
    }
    for r in records {
        match r {
            Record::Version(space, key, ts, value) => b.put(space, key, ts, value)?,
            Record::Meta(name, value) => put_meta(&mut *b, name, value)?,
        }
    }
    b.commit(true)?;
    // The log before the snapshot may be purged once it is installed: the state must be
    // on disk first, also when the store writes behind.
    store.sync()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_storage::MemStore;

    #[test]
    fn round_trip_replaces_content() {
        let a = MemStore::new();
        let mut b = a.begin().unwrap();
        b.put(Space::Docs, b"k1", 5, b"v5").unwrap();
        b.put(Space::Docs, b"k1", 9, b"v9").unwrap();
        b.put(Space::Index, b"i", 7, b"x").unwrap();
        b.set_meta(META_APPLIED_HEIGHT, &1u64.to_be_bytes()).unwrap();
        b.set_meta(&block_key(1), b"hdr").unwrap();
        b.commit(true).unwrap();
        let snap = export(&a, 1).unwrap();

        let c = MemStore::new();
        let mut b = c.begin().unwrap();
        b.put(Space::Docs, b"old", 3, b"gone").unwrap();
        b.commit(true).unwrap();
        import(&c, &snap).unwrap();
        let s = c.snapshot().unwrap();
        assert!(s.get(Space::Docs, b"old", Ts::MAX).unwrap().is_none());
        assert_eq!(s.get(Space::Docs, b"k1", 6).unwrap().unwrap().value, b"v5");
        assert_eq!(s.get(Space::Docs, b"k1", 10).unwrap().unwrap().value, b"v9");
        assert_eq!(s.get(Space::Index, b"i", 10).unwrap().unwrap().value, b"x");
        assert_eq!(s.meta(&block_key(1)).unwrap().unwrap(), b"hdr");
        assert_eq!(export(&c, 1).unwrap(), snap);

        let mut bad = snap.clone();
        bad[12] ^= 1;
        assert!(import(&c, &bad).is_err());
    }

    #[test]
    fn streamed_snapshot_reads_back_and_refuses_damage() {
        let a = MemStore::new();
        let mut b = a.begin().unwrap();
        b.put(Space::Docs, b"k1", 5, b"v5").unwrap();
        b.put(Space::Index, b"i", 7, b"x").unwrap();
        b.set_meta(META_APPLIED_HEIGHT, &1u64.to_be_bytes()).unwrap();
        b.set_meta(&block_key(1), b"hdr").unwrap();
        b.commit(true).unwrap();
        let mut streamed = Vec::new();
        export_to(&*a.snapshot().unwrap(), 1, &mut streamed).unwrap();
        assert_eq!(streamed, export(&a, 1).unwrap());

        // Trailing bytes are the caller's: the reader stops at the CRC.
        let mut with_tail = streamed.clone();
        with_tail.extend_from_slice(b"tail");
        let mut r = SnapshotReader::new(std::io::Cursor::new(&with_tail)).unwrap();
        let c = MemStore::new();
        assert_eq!(import_fresh(&c, &mut r).unwrap(), 4);
        assert_eq!(r.into_inner().position() as usize, streamed.len());
        assert_eq!(export(&c, 1).unwrap(), streamed);

        for (at, what) in [(12, "checksum"), (streamed.len() - 1, "checksum")] {
            let mut bad = streamed.clone();
            bad[at] ^= 1;
            let mut r = SnapshotReader::new(std::io::Cursor::new(bad)).unwrap();
            let err = loop {
                match r.next_record() {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("damage at {at} not seen"),
                    Err(e) => break e.to_string(),
                }
            };
            assert!(err.contains(what) || err.contains("malformed"), "{err}");
        }
        let mut r = SnapshotReader::new(std::io::Cursor::new(&streamed[..streamed.len() - 3])).unwrap();
        assert!(std::iter::from_fn(|| match r.next_record() {
            Ok(Some(_)) => Some(false),
            Ok(None) => None,
            Err(_) => Some(true),
        })
        .any(|e| e));
    }

    /// A streamed snapshot replaces the live store's content as one commit; a truncated,
    /// damaged or overlong one is refused and leaves the store as it was.
    #[test]
    fn a_streamed_import_replaces_whole_or_not_at_all() {
        let a = MemStore::new();
        let mut b = a.begin().unwrap();
        b.put(Space::Docs, b"k1", 5, b"v5").unwrap();
        b.put(Space::Index, b"i", 7, b"x").unwrap();
        b.set_meta(META_APPLIED_HEIGHT, &1u64.to_be_bytes()).unwrap();
        b.commit(true).unwrap();
        let mut streamed = Vec::new();
        export_to(&*a.snapshot().unwrap(), 1, &mut streamed).unwrap();

        let c = MemStore::new();
        let mut b = c.begin().unwrap();
        b.put(Space::Docs, b"old", 3, b"gone").unwrap();
        b.commit(true).unwrap();
        let old = export(&c, 0).unwrap();
        let mut overlong = streamed.clone();
        overlong.push(0);
        let mut flipped = streamed.clone();
        flipped[12] ^= 1;
        for bad in [&streamed[..streamed.len() - 3], &streamed[..20], &flipped[..], &overlong[..]] {
            let mut r = SnapshotReader::new(bad).unwrap();
            assert!(import_replacing(&c, &mut r).is_err());
            assert_eq!(export(&c, 0).unwrap(), old, "a refused snapshot changed nothing");
        }
        let mut r = SnapshotReader::new(&streamed[..]).unwrap();
        assert_eq!(import_replacing(&c, &mut r).unwrap(), 3);
        assert_eq!(export(&c, 1).unwrap(), streamed);
    }
}
