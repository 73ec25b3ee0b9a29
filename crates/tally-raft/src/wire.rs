//! The Raft records: every byte string of the replication path — the Raft log store's
//! entries and meta values, the position the state store records with each entry,
//! snapshot meta (file and wire), append-entries requests and answers, snapshot answers,
//! and forwarded writes' answers. This module is their one owner; the byte layout is in
//! `docs/record.md` ("Raft records").
//!
//! Every record starts with the format version (`0x01`) and a kind byte, integers are
//! big-endian, and a decoder refuses an unknown version or kind, a truncated record, a
//! length longer than what is left, a bad tag, and trailing bytes, with a [`WireError`].
//!
//! Version 0 was serde JSON of openraft's types (batches in base64). A data directory
//! written by an earlier build still opens: the log store, the state store's position and
//! the snapshot meta file read a value that starts with `{` (or is `null`) as version 0.
//! Nothing writes version 0 any more, and the peer protocol speaks version 1 only (a
//! cluster is upgraded all at once, ARCHITECTURE.md).

use std::collections::{BTreeMap, BTreeSet};

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::vote::RaftLeaderId;
use openraft::{BasicNode, EntryPayload, Membership};

use crate::node::{SubmitError, SubmitOk};
use crate::{BatchRequest, Entry, LogId, SnapshotMeta, StoredMembership, TypeConfig, Vote};

/// Version byte of the records this build writes.
pub const VERSION: u8 = 1;

/// Kind bytes.
const KIND_ENTRY: u8 = b'E';
const KIND_VOTE: u8 = b'V';
const KIND_LOG_ID: u8 = b'L';
const KIND_POSITION: u8 = b'P';
/// `H` (0x48) was the head of a snapshot sent whole, without its length or a checksum;
/// no longer written nor read.
const KIND_SNAPSHOT_HEAD: u8 = b'T';
const KIND_APPEND: u8 = b'A';
const KIND_APPEND_ANSWER: u8 = b'a';
const KIND_SNAPSHOT_ANSWER: u8 = b's';
const KIND_SUBMIT_ANSWER: u8 = b'F';

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the record ends early")]
    Truncated,
    #[error(
        "unknown Raft record version {0} (this build reads version 1, and version 0 JSON from its data directory)"
    )]
    UnknownVersion(u8),
    #[error("expected a Raft record of kind {want:#04x}, found {found:#04x}")]
    WrongKind { want: u8, found: u8 },
    #[error("{0} bytes follow the end of the record")]
    TrailingBytes(usize),
    #[error("unknown tag {0:#04x}")]
    BadTag(u8),
    #[error("a length of {0} exceeds what is left of the record")]
    LengthTooLarge(u64),
    #[error("a string is not UTF-8")]
    BadUtf8,
    #[error("a node set is not strictly ascending")]
    Unordered,
    #[error("invalid membership: {0}")]
    BadMembership(String),
    #[error("version 0 (JSON) value: {0}")]
    Legacy(String),
}

// ---- writing ----

fn header(kind: u8, capacity: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(capacity + 2);
    b.push(VERSION);
    b.push(kind);
    b
}

fn put_u64(b: &mut Vec<u8>, n: u64) {
    b.extend_from_slice(&n.to_be_bytes());
}

fn put_bytes(b: &mut Vec<u8>, s: &[u8]) {
    put_u64(b, s.len() as u64);
    b.extend_from_slice(s);
}

fn put_log_id(b: &mut Vec<u8>, id: &LogId) {
    put_u64(b, id.leader_id.term);
    put_u64(b, id.leader_id.node_id);
    put_u64(b, id.index);
}

fn put_opt_log_id(b: &mut Vec<u8>, id: &Option<LogId>) {
    match id {
        None => b.push(0),
        Some(id) => {
            b.push(1);
            put_log_id(b, id);
        }
    }
}

fn put_vote(b: &mut Vec<u8>, v: &Vote) {
    put_u64(b, v.leader_id.term);
    put_u64(b, v.leader_id.node_id);
    b.push(v.committed as u8);
}

fn put_membership(b: &mut Vec<u8>, m: &Membership<u64, BasicNode>) {
    let configs = m.get_joint_config();
    put_u64(b, configs.len() as u64);
    for c in configs {
        put_u64(b, c.len() as u64);
        for id in c {
            put_u64(b, *id);
        }
    }
    let nodes: Vec<_> = m.nodes().collect();
    put_u64(b, nodes.len() as u64);
    for (id, node) in nodes {
        put_u64(b, *id);
        put_bytes(b, node.addr.as_bytes());
    }
}

fn put_stored_membership(b: &mut Vec<u8>, m: &StoredMembership) {
    put_opt_log_id(b, m.log_id());
    put_membership(b, m.membership());
}

fn put_entry(b: &mut Vec<u8>, e: &Entry) {
    put_log_id(b, &e.log_id);
    match &e.payload {
        EntryPayload::Blank => b.push(0),
        EntryPayload::Normal(batch) => {
            b.push(1);
            put_bytes(b, &batch.0);
        }
        EntryPayload::Membership(m) => {
            b.push(2);
            put_membership(b, m);
        }
    }
}

fn entry_size(e: &Entry) -> usize {
    match &e.payload {
        EntryPayload::Normal(batch) => batch.0.len() + 40,
        _ => 128,
    }
}

// ---- reading ----

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader past the version and kind bytes of a record of `kind`.
    fn open(bytes: &'a [u8], kind: u8) -> Result<Reader<'a>, WireError> {
        let mut r = Reader { bytes, pos: 0 };
        match r.u8()? {
            VERSION => {}
            v => return Err(WireError::UnknownVersion(v)),
        }
        match r.u8()? {
            k if k == kind => Ok(r),
            found => Err(WireError::WrongKind { want: kind, found }),
        }
    }

    fn done(self) -> Result<(), WireError> {
        match self.bytes.len() - self.pos {
            0 => Ok(()),
            n => Err(WireError::TrailingBytes(n)),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or(WireError::Truncated)?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().map_err(|_| WireError::Truncated)?))
    }

    fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(WireError::BadTag(t)),
        }
    }

    /// A count of items each at least `item_bytes` long: never more than what is left.
    fn count(&mut self, item_bytes: u64) -> Result<u64, WireError> {
        let n = self.u64()?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(item_bytes) > left {
            return Err(WireError::LengthTooLarge(n));
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.count(1)?;
        self.take(n as usize)
    }

    fn str(&mut self) -> Result<String, WireError> {
        std::str::from_utf8(self.bytes()?).map(str::to_string).map_err(|_| WireError::BadUtf8)
    }

    fn log_id(&mut self) -> Result<LogId, WireError> {
        let (term, node_id, index) = (self.u64()?, self.u64()?, self.u64()?);
        Ok(LogId { leader_id: openraft::impls::leader_id_adv::LeaderId::new(term, node_id), index })
    }

    fn opt_log_id(&mut self) -> Result<Option<LogId>, WireError> {
        Ok(if self.bool()? { Some(self.log_id()?) } else { None })
    }

    fn vote(&mut self) -> Result<Vote, WireError> {
        let (term, node_id) = (self.u64()?, self.u64()?);
        let committed = self.bool()?;
        Ok(Vote { leader_id: openraft::impls::leader_id_adv::LeaderId::new(term, node_id), committed })
    }

    /// Ascending, distinct node ids.
    fn node_set(&mut self) -> Result<BTreeSet<u64>, WireError> {
        let n = self.count(8)?;
        let mut set = BTreeSet::new();
        for _ in 0..n {
            let id = self.u64()?;
            if set.last().is_some_and(|&last| last >= id) {
                return Err(WireError::Unordered);
            }
            set.insert(id);
        }
        Ok(set)
    }

    fn membership(&mut self) -> Result<Membership<u64, BasicNode>, WireError> {
        let n = self.count(8)?;
        let mut configs = Vec::with_capacity(n as usize);
        for _ in 0..n {
            configs.push(self.node_set()?);
        }
        let n = self.count(16)?;
        let mut nodes = BTreeMap::new();
        for _ in 0..n {
            let id = self.u64()?;
            if nodes.last_key_value().is_some_and(|(&last, _)| last >= id) {
                return Err(WireError::Unordered);
            }
            nodes.insert(id, BasicNode { addr: self.str()? });
        }
        if configs.is_empty() && nodes.is_empty() {
            return Ok(Membership::default());
        }
        Membership::new(configs, nodes).map_err(|e| WireError::BadMembership(e.to_string()))
    }

    fn stored_membership(&mut self) -> Result<StoredMembership, WireError> {
        let log_id = self.opt_log_id()?;
        Ok(StoredMembership::new(log_id, self.membership()?))
    }

    fn entry(&mut self) -> Result<Entry, WireError> {
        let log_id = self.log_id()?;
        let payload = match self.u8()? {
            0 => EntryPayload::Blank,
            1 => EntryPayload::Normal(BatchRequest(self.bytes()?.to_vec())),
            2 => EntryPayload::Membership(self.membership()?),
            t => return Err(WireError::BadTag(t)),
        };
        Ok(Entry { log_id, payload })
    }
}

/// A version 0 value (serde JSON), as earlier builds wrote it to the data directory.
fn legacy<T: serde::de::DeserializeOwned>(b: &[u8]) -> Option<Result<T, WireError>> {
    let json = matches!(b.first(), Some(b'{')) || b == b"null";
    json.then(|| serde_json::from_slice(b).map_err(|e| WireError::Legacy(e.to_string())))
}

// ---- the records ----

/// A Raft log entry as the log store keeps it.
pub fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut b = header(KIND_ENTRY, entry_size(e));
    put_entry(&mut b, e);
    b
}

pub fn decode_entry(b: &[u8]) -> Result<Entry, WireError> {
    if let Some(old) = legacy(b) {
        return old;
    }
    let mut r = Reader::open(b, KIND_ENTRY)?;
    let e = r.entry()?;
    r.done()?;
    Ok(e)
}

/// The vote the log store keeps.
pub fn encode_vote(v: &Vote) -> Vec<u8> {
    let mut b = header(KIND_VOTE, 17);
    put_vote(&mut b, v);
    b
}

pub fn decode_vote(b: &[u8]) -> Result<Vote, WireError> {
    if let Some(old) = legacy(b) {
        return old;
    }
    let mut r = Reader::open(b, KIND_VOTE)?;
    let v = r.vote()?;
    r.done()?;
    Ok(v)
}

/// An optional log id (the log store's committed and purged ids).
pub fn encode_log_id(id: &Option<LogId>) -> Vec<u8> {
    let mut b = header(KIND_LOG_ID, 25);
    put_opt_log_id(&mut b, id);
    b
}

pub fn decode_log_id(b: &[u8]) -> Result<Option<LogId>, WireError> {
    if let Some(old) = legacy(b) {
        return old;
    }
    let mut r = Reader::open(b, KIND_LOG_ID)?;
    let id = r.opt_log_id()?;
    r.done()?;
    Ok(id)
}

/// Where the state machine is in the log: the last applied log id and membership,
/// recorded in the state store with each entry's effects (and, the same, a snapshot's
/// meta).
pub fn encode_position(last: &Option<LogId>, membership: &StoredMembership) -> Vec<u8> {
    let mut b = header(KIND_POSITION, 128);
    put_opt_log_id(&mut b, last);
    put_stored_membership(&mut b, membership);
    b
}

pub fn decode_position(b: &[u8]) -> Result<(Option<LogId>, StoredMembership), WireError> {
    if let Some(old) = legacy::<crate::state_machine::Position>(b) {
        return old.map(|p| (p.log_id, p.membership));
    }
    let mut r = Reader::open(b, KIND_POSITION)?;
    let last = r.opt_log_id()?;
    let m = r.stored_membership()?;
    r.done()?;
    Ok((last, m))
}

/// A snapshot's meta (its file beside the data, and what installs it).
pub fn encode_snapshot_meta(meta: &SnapshotMeta) -> Vec<u8> {
    encode_position(&meta.last_log_id, &meta.last_membership)
}

pub fn decode_snapshot_meta(b: &[u8]) -> Result<SnapshotMeta, WireError> {
    if let Some(old) = legacy::<SnapshotMeta>(b) {
        return old;
    }
    let (last_log_id, last_membership) = decode_position(b)?;
    Ok(SnapshotMeta { last_log_id, last_membership })
}

/// The longest snapshot head a member accepts (it holds a vote and a membership).
pub const SNAPSHOT_HEAD_BYTES_MAX: u64 = 1 << 20;

/// The start of a snapshot sent to a member (`POST /raft/snapshot`), before its data:
/// `head record length u64 | head`, the head holding the sender's vote, the snapshot's
/// meta and the data's length. The body goes on with exactly that many bytes of data,
/// then the CRC-32 (IEEE) of the data as a big-endian `u32`, then ends: so the receiver,
/// which streams the data to a file, can tell a complete snapshot from a cut or damaged
/// one before installing it.
pub fn encode_snapshot_head(vote: &Vote, meta: &SnapshotMeta, data_len: u64) -> Vec<u8> {
    let mut head = header(KIND_SNAPSHOT_HEAD, 168);
    put_vote(&mut head, vote);
    put_opt_log_id(&mut head, &meta.last_log_id);
    put_stored_membership(&mut head, &meta.last_membership);
    put_u64(&mut head, data_len);
    let mut b = Vec::with_capacity(head.len() + 8);
    put_bytes(&mut b, &head);
    b
}

/// The sender's vote, the meta and the data's length, from the head record (what follows
/// its length).
pub fn decode_snapshot_head(head: &[u8]) -> Result<(Vote, SnapshotMeta, u64), WireError> {
    let mut r = Reader::open(head, KIND_SNAPSHOT_HEAD)?;
    let vote = r.vote()?;
    let last_log_id = r.opt_log_id()?;
    let last_membership = r.stored_membership()?;
    let data_len = r.u64()?;
    r.done()?;
    Ok((vote, SnapshotMeta { last_log_id, last_membership }, data_len))
}

/// An append-entries request.
pub fn encode_append(req: &AppendEntriesRequest<TypeConfig>) -> Vec<u8> {
    let size = req.entries.iter().map(entry_size).sum::<usize>() + 96;
    let mut b = header(KIND_APPEND, size);
    put_vote(&mut b, &req.vote);
    put_opt_log_id(&mut b, &req.prev_log_id);
    put_opt_log_id(&mut b, &req.leader_commit);
    put_u64(&mut b, req.entries.len() as u64);
    for e in &req.entries {
        put_entry(&mut b, e);
    }
    b
}

pub fn decode_append(b: &[u8]) -> Result<AppendEntriesRequest<TypeConfig>, WireError> {
    let mut r = Reader::open(b, KIND_APPEND)?;
    let vote = r.vote()?;
    let prev_log_id = r.opt_log_id()?;
    let leader_commit = r.opt_log_id()?;
    // An entry is at least a log id and a tag.
    let n = r.count(25)?;
    let mut entries = Vec::with_capacity(n as usize);
    for _ in 0..n {
        entries.push(r.entry()?);
    }
    r.done()?;
    Ok(AppendEntriesRequest { vote, prev_log_id, entries, leader_commit })
}

/// A peer's answer to an append: the response, or its error's text (the sender can only
/// report it: openraft turns any error from the transport into a network error).
pub fn encode_append_answer<E: std::fmt::Display>(r: &Result<AppendEntriesResponse<TypeConfig>, E>) -> Vec<u8> {
    let mut b = header(KIND_APPEND_ANSWER, 32);
    match r {
        Ok(AppendEntriesResponse::Success) => b.push(0),
        Ok(AppendEntriesResponse::PartialSuccess(id)) => {
            b.push(1);
            put_opt_log_id(&mut b, id);
        }
        Ok(AppendEntriesResponse::Conflict) => b.push(2),
        Ok(AppendEntriesResponse::HigherVote(v)) => {
            b.push(3);
            put_vote(&mut b, v);
        }
        Err(e) => {
            b.push(0xFF);
            put_bytes(&mut b, e.to_string().as_bytes());
        }
    }
    b
}

pub fn decode_append_answer(b: &[u8]) -> Result<Result<AppendEntriesResponse<TypeConfig>, String>, WireError> {
    let mut r = Reader::open(b, KIND_APPEND_ANSWER)?;
    let out = match r.u8()? {
        0 => Ok(AppendEntriesResponse::Success),
        1 => Ok(AppendEntriesResponse::PartialSuccess(r.opt_log_id()?)),
        2 => Ok(AppendEntriesResponse::Conflict),
        3 => Ok(AppendEntriesResponse::HigherVote(r.vote()?)),
        0xFF => Err(r.str()?),
        t => return Err(WireError::BadTag(t)),
    };
    r.done()?;
    Ok(out)
}

/// A peer's answer to an installed snapshot: its vote, or its error's text.
pub fn encode_snapshot_answer<E: std::fmt::Display>(r: &Result<Vote, E>) -> Vec<u8> {
    let mut b = header(KIND_SNAPSHOT_ANSWER, 32);
    match r {
        Ok(v) => {
            b.push(0);
            put_vote(&mut b, v);
        }
        Err(e) => {
            b.push(0xFF);
            put_bytes(&mut b, e.to_string().as_bytes());
        }
    }
    b
}

pub fn decode_snapshot_answer(b: &[u8]) -> Result<Result<Vote, String>, WireError> {
    let mut r = Reader::open(b, KIND_SNAPSHOT_ANSWER)?;
    let out = match r.u8()? {
        0 => Ok(r.vote()?),
        0xFF => Err(r.str()?),
        t => return Err(WireError::BadTag(t)),
    };
    r.done()?;
    Ok(out)
}

/// The leader's answer to a forwarded write: the transaction's output record and where
/// its input landed, or why it was not (or may not have been) applied.
pub fn encode_submit_answer(r: &Result<SubmitOk, SubmitError>) -> Vec<u8> {
    let mut b = header(KIND_SUBMIT_ANSWER, r.as_ref().map(|ok| ok.output.len()).unwrap_or(0) + 40);
    match r {
        Ok(ok) => {
            b.push(0);
            put_u64(&mut b, ok.index);
            put_u64(&mut b, ok.height);
            put_u64(&mut b, ok.slot as u64);
            put_bytes(&mut b, &ok.output);
        }
        Err(SubmitError::Unavailable(m)) => put_message(&mut b, 1, m),
        Err(SubmitError::Ambiguous(m)) => put_message(&mut b, 2, m),
        Err(SubmitError::Overloaded) => b.push(3),
        Err(SubmitError::NotLeader(leader)) => {
            b.push(4);
            match leader {
                None => b.push(0),
                Some(id) => {
                    b.push(1);
                    put_u64(&mut b, *id);
                }
            }
        }
        Err(SubmitError::Retry(m)) => put_message(&mut b, 5, m),
    }
    b
}

fn put_message(b: &mut Vec<u8>, tag: u8, m: &str) {
    b.push(tag);
    put_bytes(b, m.as_bytes());
}

pub fn decode_submit_answer(b: &[u8]) -> Result<Result<SubmitOk, SubmitError>, WireError> {
    let mut r = Reader::open(b, KIND_SUBMIT_ANSWER)?;
    let out = match r.u8()? {
        0 => {
            let (index, height, slot) = (r.u64()?, r.u64()?, r.u64()?);
            let slot = usize::try_from(slot).map_err(|_| WireError::LengthTooLarge(slot))?;
            Ok(SubmitOk { output: r.bytes()?.to_vec(), index, height, slot })
        }
        1 => Err(SubmitError::Unavailable(r.str()?)),
        2 => Err(SubmitError::Ambiguous(r.str()?)),
        3 => Err(SubmitError::Overloaded),
        4 => Err(SubmitError::NotLeader(if r.bool()? { Some(r.u64()?) } else { None })),
        5 => Err(SubmitError::Retry(r.str()?)),
        t => return Err(WireError::BadTag(t)),
    };
    r.done()?;
    Ok(out)
}

#[cfg(test)]
mod tests;
