//! A snapshot over the peer port, streamed both ways: the leader reads its snapshot file
//! in chunks into the request body, the receiver writes the body to a temporary file as
//! it arrives; neither holds more than a few chunks. The body's layout (a head with the
//! data's length, the data, its CRC-32) is in [`crate::wire::encode_snapshot_head`] and
//! docs/record.md.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;

use crate::snapshot_store::{SnapshotDir, SnapshotFile};
use crate::wire::{self, WireError};
use crate::{SnapshotMeta, Vote};

/// Bytes of snapshot data per chunk read from the file (sender) and per write (receiver).
pub const SNAPSHOT_CHUNK_BYTES: usize = 256 << 10;
/// Chunks queued between the file and the socket, each way: with the chunk size, what a
/// snapshot in flight holds in memory (1 MiB), whatever its size.
pub const SNAPSHOT_CHUNKS_QUEUED: usize = 4;
/// The largest snapshot a member accepts (its data's declared length).
pub const SNAPSHOT_DATA_BYTES_MAX: u64 = 1 << 40;

/// A peer request body.
pub type PeerBody = UnsyncBoxBody<Bytes, io::Error>;

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The body of `POST /raft/snapshot` sending `data`: read in [`SNAPSHOT_CHUNK_BYTES`]
/// chunks by a blocking task as the socket takes them. A read error ends the body with
/// that error (the receiver then refuses the cut snapshot).
pub fn send_body(vote: &Vote, meta: &SnapshotMeta, data: SnapshotFile) -> PeerBody {
    let head = Bytes::from(wire::encode_snapshot_head(vote, meta, data.len()));
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(SNAPSHOT_CHUNKS_QUEUED);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = read_chunks(&data, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let chunks = futures_util::stream::once(async move { Ok(head) })
        .chain(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }));
    http_body_util::StreamBody::new(chunks.map(|c| c.map(hyper::body::Frame::data))).boxed_unsync()
}

/// The data, then its CRC-32; stops quietly when the request is gone.
fn read_chunks(data: &SnapshotFile, tx: &tokio::sync::mpsc::Sender<io::Result<Bytes>>) -> io::Result<()> {
    let mut f = data.reader()?;
    let mut crc = crc32fast::Hasher::new();
    let mut left = data.len();
    while left > 0 {
        let n = left.min(SNAPSHOT_CHUNK_BYTES as u64) as usize;
        let mut buf = vec![0u8; n];
        f.read_exact(&mut buf)?;
        crc.update(&buf);
        left -= n as u64;
        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
            return Ok(());
        }
    }
    let _ = tx.blocking_send(Ok(Bytes::copy_from_slice(&crc.finalize().to_be_bytes())));
    Ok(())
}

/// Why a received snapshot was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("unreadable snapshot head: {0}")]
    Head(#[from] WireError),
    #[error("the snapshot head is {0} bytes, over the limit of {SNAPSHOT_HEAD_BYTES_MAX}", SNAPSHOT_HEAD_BYTES_MAX = wire::SNAPSHOT_HEAD_BYTES_MAX)]
    HeadTooLong(u64),
    #[error("the snapshot is {0} bytes, over the limit of {SNAPSHOT_DATA_BYTES_MAX}")]
    TooLarge(u64),
    #[error("the snapshot ended after {got} of {want} bytes")]
    Truncated { got: u64, want: u64 },
    #[error("bytes follow the snapshot's checksum")]
    TrailingBytes,
    #[error("the snapshot's checksum does not match its data")]
    Checksum,
    #[error("receiving the snapshot: {0}")]
    Io(#[from] io::Error),
}

/// Reads a snapshot body: [`read_head`](Self::read_head), then
/// [`read_data`](Self::read_data).
pub struct Receiver<S> {
    body: S,
    /// Bytes received past what was consumed.
    pending: Vec<u8>,
    received: u64,
}

impl<S, E> Receiver<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    pub fn new(body: S) -> Receiver<S> {
        Receiver { body, pending: Vec::new(), received: 0 }
    }

    /// The next chunk of the body; None at its end.
    async fn next(&mut self) -> Result<Option<Bytes>, ReceiveError> {
        match self.body.next().await {
            None => Ok(None),
            Some(Ok(b)) => {
                self.received += b.len() as u64;
                Ok(Some(b))
            }
            Some(Err(e)) => Err(ReceiveError::Io(io_err(format!("the request body failed: {e}")))),
        }
    }

    /// Exactly `n` bytes (n is small: the head).
    async fn take(&mut self, n: usize) -> Result<Vec<u8>, ReceiveError> {
        while self.pending.len() < n {
            match self.next().await? {
                Some(b) => self.pending.extend_from_slice(&b),
                None => return Err(ReceiveError::Head(WireError::Truncated)),
            }
        }
        let rest = self.pending.split_off(n);
        Ok(std::mem::replace(&mut self.pending, rest))
    }

    /// The sender's vote, the snapshot's meta and the data's length.
    pub async fn read_head(&mut self) -> Result<(Vote, SnapshotMeta, u64), ReceiveError> {
        let len = u64::from_be_bytes(self.take(8).await?.try_into().map_err(|_| WireError::Truncated)?);
        if len > wire::SNAPSHOT_HEAD_BYTES_MAX {
            return Err(ReceiveError::HeadTooLong(len));
        }
        let head = self.take(len as usize).await?;
        let (vote, meta, data_len) = wire::decode_snapshot_head(&head)?;
        if data_len > SNAPSHOT_DATA_BYTES_MAX {
            return Err(ReceiveError::TooLarge(data_len));
        }
        Ok((vote, meta, data_len))
    }

    /// Stream `len` bytes of data into a new temporary file of `dir` (written and fsynced
    /// by a blocking task, at most [`SNAPSHOT_CHUNKS_QUEUED`] chunks behind), then check
    /// the CRC-32 and that the body ends there. On any failure the file is removed.
    pub async fn read_data(mut self, dir: &SnapshotDir, len: u64) -> Result<SnapshotFile, ReceiveError> {
        let path = dir.temp_path("recv");
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(SNAPSHOT_CHUNKS_QUEUED);
        let p2 = path.clone();
        let writer = tokio::task::spawn_blocking(move || write_chunks(&p2, rx));
        let fed = self.feed(len, tx).await;
        let written = writer.await.map_err(io_err).and_then(|r| r);
        let result = match (fed, written) {
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(e.into()),
            (Ok(want), Ok(got)) if want != got => Err(ReceiveError::Checksum),
            (Ok(_), Ok(_)) => SnapshotFile::open(&path).map_err(ReceiveError::from),
        };
        if result.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        result
    }

    /// Hand `len` bytes of data to the writer; the CRC-32 the sender put after them.
    async fn feed(&mut self, len: u64, tx: std::sync::mpsc::SyncSender<Bytes>) -> Result<u32, ReceiveError> {
        let mut left = len;
        let mut chunk = Bytes::from(std::mem::take(&mut self.pending));
        loop {
            let n = (chunk.len() as u64).min(left) as usize;
            if n > 0 {
                let data = chunk.split_to(n);
                left -= n as u64;
                let stopped = || io_err("the snapshot file writer stopped");
                match tx.try_send(data) {
                    Ok(()) => {}
                    // The queue is short; a full one waits for the disk without holding
                    // an async thread.
                    Err(std::sync::mpsc::TrySendError::Full(data)) => {
                        let tx = tx.clone();
                        tokio::task::spawn_blocking(move || tx.send(data))
                            .await
                            .map_err(io_err)?
                            .map_err(|_| stopped())?;
                    }
                    Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(stopped().into()),
                }
            }
            if left == 0 {
                self.pending.extend_from_slice(&chunk);
                break;
            }
            chunk = match self.next().await? {
                Some(b) => b,
                None => return Err(ReceiveError::Truncated { got: len - left, want: len }),
            };
        }
        drop(tx);
        while self.pending.len() < 4 {
            match self.next().await? {
                Some(b) => self.pending.extend_from_slice(&b),
                None => return Err(ReceiveError::Truncated { got: len, want: len }),
            }
        }
        if self.pending.len() > 4 || self.next().await?.is_some_and(|b| !b.is_empty()) {
            return Err(ReceiveError::TrailingBytes);
        }
        Ok(u32::from_be_bytes(self.pending[..4].try_into().map_err(|_| ReceiveError::Checksum)?))
    }
}

/// Write what arrives on `rx` to a new file at `path` until the channel closes; fsync;
/// the CRC-32 of what was written.
fn write_chunks(path: &PathBuf, rx: std::sync::mpsc::Receiver<Bytes>) -> io::Result<u32> {
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    let mut crc = crc32fast::Hasher::new();
    while let Ok(b) = rx.recv() {
        crc.update(&b);
        f.write_all(&b)?;
    }
    f.sync_all()?;
    Ok(crc.finalize())
}
