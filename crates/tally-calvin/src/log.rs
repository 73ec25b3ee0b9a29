//! The durable input log.
//!
//! [`FileLog`] is the single-node implementation: one append-only file of frames
//! `len u32 | crc32 u32 | batch bytes`, fsynced after every append. On open, frames are
//! read and checked; a torn or corrupt tail (a crash mid-append, never acknowledged) is
//! truncated away. Everything before it was fsynced before any client heard of it.
//!
//! Reading is streamed: one frame at a time through a fixed buffer, so opening and
//! replaying a log holds at most one batch (at most [`FRAME_BYTES_MAX`]) in memory
//! however long the log or its unapplied tail is ([`Log::replay_after`]).
//!
//! A frame that fails its check while complete frames follow it is not a torn tail: those
//! later frames were appended only after it was fsynced, so it was acknowledged and has
//! since been damaged. Opening such a log fails ([`LogError::Corrupt`]) instead of
//! truncating acknowledged batches away.
//!
//! An append that fails (a full disk, a failing `fsync`) is rolled back: the file is cut
//! back to its length before the append, so the batch is not in the log and its
//! submitters are told it was not committed. After a failed append the log accepts no
//! more appends ([`LogError::Stopped`]): the node stops taking writes until it is
//! restarted once the fault is fixed. Fault tests: `tests/disk_faults.rs`.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tally_apply::Batch;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("log is corrupt at height {height}: {detail}")]
    Corrupt { height: u64, detail: String },
    #[error("log append out of order: expected height {expected}, got {got}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error(
        "appending batch {height} to the input log {path} failed: {source}; {}",
        if *rolled_back { "the batch was rolled back and is not committed" } else { "the batch could not be rolled back and may be replayed on restart" }
    )]
    AppendFailed { height: u64, path: PathBuf, source: std::io::Error, rolled_back: bool },
    #[error("the input log {path} stopped taking appends after an earlier failure; fix the disk and restart the node")]
    Stopped { path: PathBuf },
}

/// A durable, ordered log of batches.
pub trait Log: Send {
    /// Append `batch` durably; returns only once it survives a crash.
    fn append(&mut self, batch: &Batch) -> Result<(), LogError>;
    /// Call `f` with every batch of height > `height`, in order, one at a time: a
    /// restart replays a tail of any length in the memory of one batch. An error from
    /// `f` stops the replay and is returned.
    fn replay_after(&mut self, height: u64, f: &mut dyn FnMut(Batch) -> Result<(), LogError>) -> Result<(), LogError>;
    /// Every batch with height > `height`, in order, collected (tests and small tools;
    /// a restart uses [`Log::replay_after`]).
    fn read_after(&mut self, height: u64) -> Result<Vec<Batch>, LogError> {
        let mut out = Vec::new();
        self.replay_after(height, &mut |b| {
            out.push(b);
            Ok(())
        })?;
        Ok(out)
    }
    /// Height of the last batch (0 when empty).
    fn last_height(&self) -> u64;
    /// The `ts` of the last batch (0 when empty).
    fn last_ts(&self) -> u64;
}

/// Largest frame accepted when reading the log back.
pub const FRAME_BYTES_MAX: usize = 256 << 20;

pub struct FileLog {
    path: PathBuf,
    file: File,
    /// Bytes of valid frames: where the next append starts.
    len: u64,
    last_height: u64,
    last_ts: u64,
    /// Set by a failed append; every later append fails.
    stopped: bool,
}

impl FileLog {
    /// Open (or create) the log at `dir/input.log`, truncating a torn tail.
    pub fn open(dir: &Path) -> Result<FileLog, LogError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LogError::Io { path: path.clone(), source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join("input.log");
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io(&path))?;
        let (valid_len, last_height, last_ts) = scan(&mut file, &path, u64::MAX, |_| Ok(()))?;
        let len = file.metadata().map_err(io(&path))?.len();
        if valid_len < len {
            tracing::warn!(valid_len, len, "truncating torn tail of the input log");
            file.set_len(valid_len).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        // Make the directory entry durable too.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(FileLog { path, file, len: valid_len, last_height, last_ts, stopped: false })
    }

    /// Cut the file back to `len` after a failed append; true if that is durable.
    fn roll_back(&mut self) -> bool {
        self.file.set_len(self.len).and_then(|()| self.file.sync_all()).is_ok()
    }
}

/// Read buffer of the streamed scan: large enough that reading is sequential I/O in big
/// steps, small next to any memory budget.
const SCAN_BUFFER_BYTES: usize = 1 << 20;

/// A frame body buffer that grew past this (a large batch) is given back after use
/// rather than kept for the rest of the scan.
const BODY_KEEP_BYTES: usize = 8 << 20;

/// Read every valid frame, calling `f` with each batch of height > `after` (frames at or
/// below it are checked but not decoded); returns (valid length, last height, last ts).
/// Streams: memory is the read buffer and one frame, whatever the file's length.
fn scan(
    file: &mut File,
    path: &Path,
    after: u64,
    mut f: impl FnMut(Batch) -> Result<(), LogError>,
) -> Result<(u64, u64, u64), LogError> {
    let io = |source| LogError::Io { path: path.to_path_buf(), source };
    let file_len = file.metadata().map_err(io)?.len();
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut r = BufReader::with_capacity(SCAN_BUFFER_BYTES, &mut *file);
    let mut body = Vec::new();
    let mut pos = 0u64;
    let mut last_height = 0;
    let mut last_ts = 0;
    while pos + 8 <= file_len {
        let mut head = [0u8; 8];
        r.read_exact(&mut head).map_err(io)?;
        let (len, crc) = frame_head(&head);
        if len > FRAME_BYTES_MAX || pos + 8 + len as u64 > file_len {
            break;
        }
        body.clear();
        body.resize(len, 0);
        r.read_exact(&mut body).map_err(io)?;
        let next = pos + 8 + len as u64;
        let frame = if crc32fast::hash(&body) == crc { read_frame(&body, after) } else { None };
        let Some((height, ts, batch)) = frame else {
            if frame_follows(&mut r, file_len - next).map_err(io)? {
                return Err(LogError::Corrupt {
                    height: last_height + 1,
                    detail: format!(
                        "the frame at byte {pos} of {} fails its check but intact frames follow it, so it was \
                         acknowledged and has since been damaged; restore the data directory from a backup or \
                         another replica (the log is left as it is)",
                        path.display()
                    ),
                });
            }
            break;
        };
        if height != last_height + 1 {
            return Err(LogError::Corrupt { height, detail: format!("expected height {}", last_height + 1) });
        }
        last_height = height;
        last_ts = ts;
        if let Some(b) = batch {
            f(b)?;
        }
        if body.capacity() > BODY_KEEP_BYTES {
            body = Vec::new();
        }
        pos = next;
    }
    Ok((pos, last_height, last_ts))
}

/// A checksummed frame body's (height, ts, batch), the batch decoded only when its height
/// is above `after` (an applied frame is checked without copying its inputs); `None` when
/// it is not a well-formed batch.
fn read_frame(body: &[u8], after: u64) -> Option<(u64, u64, Option<Batch>)> {
    let (height, ts) = Batch::check(body).ok()?;
    if height <= after {
        return Some((height, ts, None));
    }
    Batch::decode(body).ok().map(|b| (height, ts, Some(b)))
}

/// A frame header's (body length, crc32).
fn frame_head(head: &[u8; 8]) -> (usize, u32) {
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    (len, crc)
}

/// The batches of the log in `dir` up to `height`, read without opening the log for
/// writing: a running node may be appending (its torn tail is where reading stops, and
/// nothing is truncated). For online backups.
pub fn read_log_dir(dir: &Path, height: u64) -> Result<Vec<Batch>, LogError> {
    let path = dir.join("input.log");
    let mut file = File::open(&path).map_err(|source| LogError::Io { path: path.clone(), source })?;
    let mut out = Vec::new();
    scan(&mut file, &path, 0, |b| {
        if b.height <= height {
            out.push(b);
        }
        Ok(())
    })?;
    Ok(out)
}

/// Whether the next `rest` bytes of `r` start with a complete frame whose checksum holds
/// (a torn append leaves nothing valid after it). Reads at most one frame.
fn frame_follows(r: &mut impl Read, rest: u64) -> std::io::Result<bool> {
    if rest < 8 {
        return Ok(false);
    }
    let mut head = [0u8; 8];
    r.read_exact(&mut head)?;
    let (len, crc) = frame_head(&head);
    if len > FRAME_BYTES_MAX || 8 + len as u64 > rest {
        return Ok(false);
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(crc32fast::hash(&body) == crc)
}

impl Log for FileLog {
    fn append(&mut self, batch: &Batch) -> Result<(), LogError> {
        if self.stopped {
            return Err(LogError::Stopped { path: self.path.clone() });
        }
        if batch.height != self.last_height + 1 {
            return Err(LogError::OutOfOrder { expected: self.last_height + 1, got: batch.height });
        }
        let body = batch.encode();
        let mut frame = Vec::with_capacity(body.len() + 8);
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        frame.extend_from_slice(&body);
        if let Err(source) = self.file.write_all(&frame).and_then(|()| self.file.sync_data()) {
            self.stopped = true;
            let rolled_back = self.roll_back();
            return Err(LogError::AppendFailed { height: batch.height, path: self.path.clone(), source, rolled_back });
        }
        self.len += frame.len() as u64;
        self.last_height = batch.height;
        self.last_ts = batch.ts;
        Ok(())
    }

    fn replay_after(&mut self, height: u64, f: &mut dyn FnMut(Batch) -> Result<(), LogError>) -> Result<(), LogError> {
        let path = self.path.clone();
        scan(&mut self.file, &path, height, f)?;
        Ok(())
    }

    fn last_height(&self) -> u64 {
        self.last_height
    }

    fn last_ts(&self) -> u64 {
        self.last_ts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_reopen_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = FileLog::open(dir.path()).unwrap();
            for h in 1..=3 {
                log.append(&Batch { height: h, ts: h * 10, inputs: vec![vec![h as u8; 5]] }).unwrap();
            }
            assert!(log.append(&Batch { height: 9, ts: 0, inputs: vec![] }).is_err());
        }
        // Simulate a torn append.
        let p = dir.path().join("input.log");
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[0, 0, 0, 50, 1, 2]).unwrap();
        drop(f);
        let mut log = FileLog::open(dir.path()).unwrap();
        assert_eq!(log.last_height(), 3);
        assert_eq!(log.last_ts(), 30);
        let after = log.read_after(1).unwrap();
        assert_eq!(after.iter().map(|b| b.height).collect::<Vec<_>>(), vec![2, 3]);
        log.append(&Batch { height: 4, ts: 40, inputs: vec![] }).unwrap();
        assert_eq!(FileLog::open(dir.path()).unwrap().last_height(), 4);
    }

    /// Frames larger than the scan's read buffer, read back one at a time: each batch
    /// whole and in order, those at or below the height skipped, and an error from the
    /// callback stops the replay.
    #[test]
    fn replay_streams_frames_across_the_read_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let input = |h: u64| vec![h as u8; SCAN_BUFFER_BYTES / 3 + h as usize];
        let mut log = FileLog::open(dir.path()).unwrap();
        for h in 1..=10 {
            log.append(&Batch { height: h, ts: h, inputs: vec![input(h), vec![7]] }).unwrap();
        }
        let mut log = FileLog::open(dir.path()).unwrap();
        assert_eq!(log.last_height(), 10);
        let mut seen = Vec::new();
        log.replay_after(3, &mut |b| {
            assert_eq!(b.inputs, vec![input(b.height), vec![7]]);
            seen.push(b.height);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, (4..=10).collect::<Vec<_>>());
        let mut calls = 0;
        let stopped = log.replay_after(0, &mut |b| {
            calls += 1;
            if b.height == 2 {
                return Err(LogError::Corrupt { height: 2, detail: "stop".into() });
            }
            Ok(())
        });
        assert!(matches!(stopped, Err(LogError::Corrupt { height: 2, .. })));
        assert_eq!(calls, 2);
    }
}
