//! A member that needs a snapshot (the leader purged the entries it lacks) receives it
//! over the peer port, streamed from the leader's snapshot file into its own, installs it
//! and converges; a snapshot cut short or damaged on the way is refused and changes
//! nothing.
//!
//! Real members (Raft log on redb, openraft, peer ports on loopback) over a small machine
//! whose state carries a few MiB of bytes derived from what it applied, written and read
//! as a stream.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use tally_calvin::{Batch, ExportWriter, MachineError, ReplicatedMachine, StateMachine, Tenant};
use tally_raft::network::{Faults, PeerClient};
use tally_raft::{ClusterConfig, LogStore, Machine, RaftNode};

/// Bytes of state beyond the counters: several chunks of the transfer.
const BLOB_BYTES: u64 = 3 << 20;

#[derive(Default)]
struct Digest {
    height: u64,
    digest: u64,
    position: Option<Vec<u8>>,
}

fn blob_byte(digest: u64, i: u64) -> u8 {
    (digest.wrapping_mul(31).wrapping_add(i.wrapping_mul(2654435761)) >> 7) as u8
}

impl StateMachine for Digest {
    fn applied_height(&self) -> u64 {
        self.height
    }
    fn apply(&mut self, b: &Batch) -> Vec<Vec<u8>> {
        self.height = b.height;
        for i in &b.inputs {
            for &x in i {
                self.digest = self.digest.wrapping_mul(1_000_003).wrapping_add(x as u64);
            }
        }
        b.inputs.iter().map(|_| self.digest.to_be_bytes().to_vec()).collect()
    }
    fn last_commit_ts(&self) -> u64 {
        0
    }
    fn rules(&self) -> u16 {
        Batch::UNSTAMPED
    }
}

fn merr(e: impl std::fmt::Display) -> MachineError {
    MachineError(e.to_string())
}

impl ReplicatedMachine for Digest {
    fn apply_at(&mut self, b: &Batch, position: &[u8]) -> Vec<Vec<u8>> {
        self.position = Some(position.to_vec());
        self.apply(b)
    }
    fn set_position(&mut self, position: &[u8]) -> Result<(), MachineError> {
        self.position = Some(position.to_vec());
        Ok(())
    }
    fn position(&self) -> Result<Option<Vec<u8>>, MachineError> {
        Ok(self.position.clone())
    }
    fn checkpoint(&mut self) -> Result<(), MachineError> {
        Ok(())
    }
    fn export(&self) -> Result<Vec<u8>, MachineError> {
        let mut out = Vec::new();
        (self.export_view()?)(&mut out)?;
        Ok(out)
    }
    fn import(&mut self, data: &[u8]) -> Result<(), MachineError> {
        self.import_from(&mut &data[..])
    }
    /// Streams the counters and the blob in 64 KiB writes.
    fn export_view(&self) -> Result<ExportWriter, MachineError> {
        let (height, digest) = (self.height, self.digest);
        Ok(Box::new(move |w: &mut dyn Write| {
            w.write_all(&height.to_be_bytes()).map_err(merr)?;
            w.write_all(&digest.to_be_bytes()).map_err(merr)?;
            let mut chunk = vec![0u8; 64 << 10];
            let mut at = 0;
            while at < BLOB_BYTES {
                let n = chunk.len().min((BLOB_BYTES - at) as usize);
                for (k, b) in chunk[..n].iter_mut().enumerate() {
                    *b = blob_byte(digest, at + k as u64);
                }
                w.write_all(&chunk[..n]).map_err(merr)?;
                at += n as u64;
            }
            Ok(())
        }))
    }
    /// Reads it back in 64 KiB reads, checking every byte and the end.
    fn import_from(&mut self, r: &mut dyn Read) -> Result<(), MachineError> {
        let mut n = [0u8; 16];
        r.read_exact(&mut n).map_err(merr)?;
        let height = u64::from_be_bytes(n[..8].try_into().unwrap());
        let digest = u64::from_be_bytes(n[8..].try_into().unwrap());
        let mut chunk = vec![0u8; 64 << 10];
        let mut at = 0;
        while at < BLOB_BYTES {
            let k = chunk.len().min((BLOB_BYTES - at) as usize);
            r.read_exact(&mut chunk[..k]).map_err(merr)?;
            if chunk[..k].iter().enumerate().any(|(j, &b)| b != blob_byte(digest, at + j as u64)) {
                return Err(merr("a damaged export"));
            }
            at += k as u64;
        }
        if r.read(&mut [0u8; 1]).map_err(merr)? != 0 {
            return Err(merr("bytes after the export"));
        }
        (self.height, self.digest) = (height, digest);
        Ok(())
    }
}

struct Member {
    node: Arc<RaftNode>,
    server: tokio::task::JoinHandle<()>,
    addr: String,
    dir: tempfile::TempDir,
}

async fn start(id: u64, initial: BTreeMap<u64, String>, listener: tokio::net::TcpListener) -> Member {
    let addr = listener.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let log = LogStore::open(&dir.path().join("log.redb")).unwrap();
    let sm = Machine::open(Digest::default(), &dir.path().join("snapshot")).unwrap();
    let mut cfg = ClusterConfig::new(id, initial, "snapshot-test-token".into(), 0);
    cfg.write_timeout = Duration::from_secs(60);
    // A snapshot every 10 entries, and the log purged up to it but for the last 10.
    cfg.snapshot_logs = 10;
    let node = RaftNode::start(cfg, log, sm, Arc::new(Faults::default()), Default::default()).await.unwrap();
    let router = tally_raft::peer::router(node.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Member { node, server, addr, dir }
}

async fn listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The digest a member answers for its next input (its state, then that input).
async fn write(node: &RaftNode, input: &[u8]) -> u64 {
    let ok = node.submit(Tenant::DEFAULT, input.to_vec()).await.unwrap();
    u64::from_be_bytes(ok.output.try_into().unwrap())
}

/// The data file the member's snapshot meta names.
fn data_file(dir: &std::path::Path) -> std::path::PathBuf {
    let meta = std::fs::read(dir.join("snapshot/snapshot.meta")).unwrap();
    let meta = tally_raft::wire::decode_snapshot_meta(&meta).unwrap();
    dir.join("snapshot").join(tally_raft::snapshot_store::data_file_name(&meta))
}

fn snapshot_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("snapshot"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_the_purged_log_installs_a_streamed_snapshot_and_converges() {
    let l1 = listener().await;
    let a1 = l1.local_addr().unwrap().to_string();
    let m1 = start(1, BTreeMap::from([(1, a1.clone())]), l1).await;
    until("member 1 leads", || m1.node.metrics().current_leader == Some(1)).await;
    let mut last = 0;
    for i in 0..40u8 {
        last = write(&m1.node, &[i, i]).await;
    }
    until("the leader snapshotted and purged its log", || {
        let m = m1.node.metrics();
        m.purged.is_some_and(|p| p.index > 5) && m.snapshot.is_some()
    })
    .await;
    let snap_len = std::fs::metadata(data_file(m1.dir.path())).unwrap().len();
    assert_eq!(snap_len, 16 + BLOB_BYTES);

    // A new member lacks the purged entries: only a snapshot brings it up to date.
    let m2 = start(2, BTreeMap::new(), listener().await).await;
    m1.node.add_member(2, m2.addr.clone()).await.unwrap();
    until("member 2 installed a snapshot", || m2.node.metrics().snapshot.is_some()).await;
    let after = write(&m1.node, b"after").await;
    until("member 2 applied the write after the snapshot", || m2.node.applied_index() >= m1.node.applied_index()).await;
    assert_ne!(after, last);
    // The follower computes the same next state as the leader: it has the same state.
    let via_follower = write(&m2.node, b"through the follower").await;
    let mut expected = after;
    for &x in b"through the follower" {
        expected = expected.wrapping_mul(1_000_003).wrapping_add(x as u64);
    }
    assert_eq!(via_follower, expected);
    let m2_data = data_file(m2.dir.path());
    let m2_name = m2_data.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(snapshot_files(m2.dir.path()), [m2_name.as_str(), "snapshot.meta"], "no temporary left");
    assert_eq!(std::fs::metadata(&m2_data).unwrap().len(), snap_len);

    // A snapshot cut short, or whose data does not match its checksum, is refused
    // before Raft sees it.
    let body = std::fs::read(data_file(m1.dir.path())).unwrap();
    let vote = m1.node.metrics().vote;
    let meta = std::fs::read(m1.dir.path().join("snapshot/snapshot.meta")).unwrap();
    let meta = tally_raft::wire::decode_snapshot_meta(&meta).unwrap();
    let head = tally_raft::wire::encode_snapshot_head(&vote, &meta, body.len() as u64);
    let crc = crc32(&body);
    let client = PeerClient::new("snapshot-test-token", Arc::new(Faults::default()));
    // The write through the follower may be answered before the follower applied it.
    until("member 2 applied all the leader did", || m2.node.applied_index() >= m1.node.applied_index()).await;
    let applied = m2.node.applied_index();
    let send = |b: Vec<u8>| {
        let (client, addr) = (client.clone(), m2.addr.clone());
        async move { client.post_bytes(2, &addr, "/raft/snapshot", &[], b, Duration::from_secs(30)).await }
    };
    let whole = [&head[..], &body[..], &crc.to_be_bytes()[..]].concat();
    let cut = whole[..whole.len() - 100].to_vec();
    let mut damaged = whole.clone();
    damaged[head.len() + 1000] ^= 1;
    let mut longer = whole.clone();
    longer.push(0);
    for (bad, why) in [(cut, "ended after"), (damaged, "checksum"), (longer, "bytes follow")] {
        let err = send(bad).await.unwrap_err().to_string();
        assert!(err.contains("400") && err.contains(why), "{err}");
    }
    assert_eq!(snapshot_files(m2.dir.path()), [m2_name.as_str(), "snapshot.meta"], "refused files removed");
    assert_eq!(m2.node.applied_index(), applied);

    for m in [m2, m1] {
        m.node.shutdown().await;
        m.server.abort();
    }
}

fn crc32(b: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(b);
    h.finalize()
}
