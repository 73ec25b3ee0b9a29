//! A full copy of the state store, for Raft snapshots: a member that is new or too far
//! behind for the log receives one and replaces its store with it.
//!
//! Format (version 1, big-endian): `"TALLYSNP" | 0x01 | record* | 0x00 | crc32 u32`, the
//! crc covering every byte before it. Records:
//! - `0x01` document version / `0x02` index version: `key len u32 | key | ts u64 | value len u32 | value`
//! - `0x03` meta value: `name len u32 | name (UTF-8) | value len u32 | value`
//!
//! The whole snapshot is held in memory (both when built and when installed); that bounds
//! the store size a cluster can ship this way, and is the first thing to stream when
//! stores grow past a few GiB.

use tally_storage::{Snapshot, Space, Store, Ts};

use crate::machine::{
    block_key, retention_key, META_APPLIED_HEIGHT, META_HEAD, META_LAST_TS, META_POSITION, META_RETENTION_CURSOR,
    META_RETENTION_INDEX_CURSOR, META_ROOT_KEY,
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
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn space_tag(space: Space) -> u8 {
    match space {
        Space::Docs => TAG_DOC,
        Space::Index => TAG_INDEX,
    }
}

/// Every version of every key, and the meta values the machine keeps.
fn all_versions(snap: &dyn Snapshot, space: Space, out: &mut Vec<u8>) -> Result<(), SnapshotError> {
    for item in snap.scan(space, &[], None, false, Ts::MAX)? {
        let (key, _) = item?;
        for v in snap.history(space, &key, 0, Ts::MAX, false)? {
            let v = v?;
            out.push(space_tag(space));
            put_bytes(out, &key);
            out.extend_from_slice(&v.ts.to_be_bytes());
            put_bytes(out, &v.value);
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
    let height = match snap.meta(META_APPLIED_HEIGHT)? {
        Some(b) => u64::from_be_bytes(b.as_slice().try_into().map_err(|_| SnapshotError::Malformed("applied height"))?),
        None => 0,
    };
    Ok((export_of(&*snap, height)?, height))
}

fn export_of(snap: &dyn Snapshot, applied_height: u64) -> Result<Vec<u8>, SnapshotError> {
    let mut out = Vec::with_capacity(1 << 16);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    all_versions(snap, Space::Docs, &mut out)?;
    all_versions(snap, Space::Index, &mut out)?;
    // The retention cursor travels too: every member's next sweep must start at the same
    // key, or their blocks would remove different versions.
    let fixed = [
        META_APPLIED_HEIGHT,
        META_LAST_TS,
        META_HEAD,
        META_POSITION,
        META_RETENTION_CURSOR,
        META_RETENTION_INDEX_CURSOR,
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
    let tlog = tally_ledger::tlog::node_ids(tree_size)
        .map(tally_ledger::writer::node_key)
        .chain((0..tree_size).map(tally_ledger::writer::leaf_key));
    let blocks = (1..=applied_height).flat_map(|h| [block_key(h), retention_key(h)]);
    for name in fixed.into_iter().chain(blocks).chain(tlog) {
        if let Some(v) = snap.meta(&name)? {
            out.push(TAG_META);
            put_bytes(&mut out, name.as_bytes());
            put_bytes(&mut out, &v);
        }
    }
    out.push(TAG_END);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    Ok(out)
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
            Record::Meta(name, value) => {
                b.set_meta(name, value)?;
                // The leaf-hash lookup (get-proof-by-hash) is derived from the leaf
                // records, so it is rebuilt here rather than carried.
                if let Some(index) = name.strip_prefix("tlog/l/") {
                    let index = u64::from_str_radix(index, 16).map_err(|_| SnapshotError::Malformed("leaf name"))?;
                    let rec = tally_ledger::leaf::decode_record(value)
                        .map_err(|_| SnapshotError::Malformed("leaf record"))?;
                    b.set_meta(&tally_ledger::writer::hash_key(&rec.leaf.hash()), &index.to_be_bytes())?;
                }
            }
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
}
