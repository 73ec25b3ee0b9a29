//! The durable input log.
//!
//! [`FileLog`] is the single-node implementation: a directory of segment files
//! (`segment.rs`: named by their first height, each with a versioned header), each an
//! append-only run of frames `len u32 | crc32 u32 | batch bytes`, fsynced after every
//! append. A segment is closed once it holds `segment_bytes_max` bytes (a batch larger
//! than that gets a segment of its own) and the next batch starts a new one, so whole
//! closed segments can be retired (`retain.rs`, `--log-retain`) once the state store has
//! made everything in them durable.
//!
//! Zeros ahead (segment version 2): the active segment's file is extended with written
//! zeros [`LogOptions::prezero_bytes`] at a time, ahead of the appends, and an append
//! overwrites zeros in place. Its sync (`fdatasync`) then writes only the frame's pages,
//! not the file's new length as well: one metadata write fewer per append, which on this
//! project's machines was 3–4 % of uniform transfers' throughput (docs/benchmarks.md). An
//! eight-byte zero frame header ends the frames (no frame is empty); when it is reached
//! on open and everything after it is zeros, the zeros stay for the next appends; anything
//! else after it is a torn append and is cut off like any torn tail. Before the next
//! segment is made the active one is cut to its last frame, so a closed segment holds no
//! zeros. A version-1 last segment (written by an older build) is appended to as before,
//! without zeros; the next segment is version 2. If writing the zeros fails (a disk
//! nearly full), the segment goes on without them: appends extend the file as in version
//! 1, and only a failing append stops the log.
//!
//! Opening reads the header of every segment but scans only the last one's frames: a torn
//! or corrupt tail there (a crash mid-append, never acknowledged) is truncated away.
//! Everything before it was fsynced before any client heard of it. A crash while a new
//! segment was being made leaves a last segment with an incomplete header and nothing
//! after it; it held nothing acknowledged and is removed.
//!
//! Reading is streamed: one frame at a time through a fixed buffer, so replaying a log
//! holds at most one batch (at most [`FRAME_BYTES_MAX`]) in memory however long the log or
//! its unapplied tail is ([`Log::replay_after`]). Replay opens only the segments that hold
//! batches after the asked height.
//!
//! A frame that fails its check while complete frames follow it is not a torn tail: those
//! later frames were appended only after it was fsynced, so it was acknowledged and has
//! since been damaged. Opening such a log fails ([`LogError::Corrupt`]) instead of
//! truncating acknowledged batches away. Before any tail is cut off, the whole of it is
//! searched for an intact frame of a later batch at any offset (zeros over an acknowledged
//! frame's header hide where the next one starts), and finding one refuses the log too.
//! A closed segment was complete when the next one was made, so any damaged, missing or
//! short frame in it is [`LogError::Corrupt`] when replay reaches it.
//!
//! An append that fails (a full disk, a failing `fsync`) is rolled back: the segment is cut
//! back to its length before the append, so the batch is not in the log and its
//! submitters are told it was not committed. After a failed append the log accepts no
//! more appends ([`LogError::Stopped`]): the node stops taking writes until it is
//! restarted once the fault is fixed. Fault tests: `tests/disk_faults.rs`.
//!
//! A data directory of format 2 kept the log as one file, `input.log` (the frames without
//! a header); opening converts it into the first segment ([`migrate_single_file`]).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tally_apply::Batch;

use crate::segment::{
    create_segment, list_segments, read_header, segment_name, sync_dir, Segment, SegmentHeader, SEGMENT_HEADER_BYTES,
};

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
    #[error(
        "batch {height} is no longer in the input log {}: the log starts at batch {first}, the segments before it \
         were retired by --log-retain (removed, or moved to the archive directory of `--log-retain archive:DIR`)",
        dir.display()
    )]
    Retired { height: u64, first: u64, dir: PathBuf },
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

/// Default size at which a segment is closed (`tally serve --log-segment-mib`): large
/// enough that a busy node makes a new file every few seconds at most, small enough that
/// retiring whole segments keeps the log within a few of them.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;

/// Default length of the zeros written ahead of the appends at a time: one write and one
/// metadata sync per this many bytes of log (about a thousand unbatched transfers), short
/// enough that the append that writes them is not held up noticeably.
pub const PREZERO_BYTES_DEFAULT: u64 = 1 << 20;

/// How a [`FileLog`] is kept.
#[derive(Clone, Copy, Debug)]
pub struct LogOptions {
    /// A segment holding at least one frame is closed before an append would take it past
    /// this many bytes.
    pub segment_bytes_max: u64,
    /// Zeros written ahead of the appends at a time (never past `segment_bytes_max`);
    /// 0 writes none, and appends extend the file.
    pub prezero_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions { segment_bytes_max: SEGMENT_BYTES_DEFAULT, prezero_bytes: PREZERO_BYTES_DEFAULT }
    }
}

pub struct FileLog {
    dir: PathBuf,
    options: LogOptions,
    /// The segment appends go to (the last one).
    path: PathBuf,
    file: File,
    active_first: u64,
    /// Bytes of the active segment's header and valid frames: where the next append starts.
    len: u64,
    /// The active segment file's length: zeros from `len` to here (version 2), or `len`.
    file_len: u64,
    /// Whether appends to the active segment write zeros ahead: a version-2 segment whose
    /// zeros have not failed to write.
    prezero: bool,
    last_height: u64,
    last_ts: u64,
    /// Set by a failed append; every later append fails.
    stopped: bool,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> LogError {
    let path = path.to_path_buf();
    move |source| LogError::Io { path: path.clone(), source }
}

impl FileLog {
    /// Open (or create) the log in `dir` with the default options.
    pub fn open(dir: &Path) -> Result<FileLog, LogError> {
        FileLog::open_with(dir, LogOptions::default())
    }

    /// Open (or create, starting at height 1) the log in `dir`: converts a format-2
    /// `input.log`, drops a segment whose making was cut short, truncates a torn tail of
    /// the last segment.
    pub fn open_with(dir: &Path, options: LogOptions) -> Result<FileLog, LogError> {
        FileLog::open_or_start(dir, options, SegmentHeader::new(1, 0))
    }

    /// Make a new log in `dir` (which must hold no segment) whose first batch will have
    /// height `first` (a restored backup whose earlier batches were retired).
    pub fn create_at(dir: &Path, options: LogOptions, first: u64, prev_ts: u64) -> Result<FileLog, LogError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        if !list_segments(dir)?.is_empty() || dir.join(LEGACY_FILE).exists() {
            return Err(LogError::Corrupt { height: first, detail: format!("{} already holds a log", dir.display()) });
        }
        FileLog::open_or_start(dir, options, SegmentHeader::new(first.max(1), prev_ts))
    }

    fn open_or_start(dir: &Path, options: LogOptions, start: SegmentHeader) -> Result<FileLog, LogError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        migrate_single_file(dir)?;
        let mut segments = list_segments(dir)?;
        if segments.is_empty() {
            create_segment(dir, start)?;
            segments = list_segments(dir)?;
        }
        // Every header is checked (one small read each); only the last segment's frames are.
        let mut header = None;
        while let Some(last) = segments.last().cloned() {
            let mut file = OpenOptions::new().read(true).write(true).open(&last.path).map_err(io(&last.path))?;
            match read_header(&mut file, &last) {
                Ok(h) => {
                    header = Some((last, file, h));
                    break;
                }
                Err(e) => {
                    let len = file.metadata().map_err(io(&last.path))?.len();
                    if len > SEGMENT_HEADER_BYTES {
                        return Err(e);
                    }
                    // Cut short while being made: nothing was ever appended to it.
                    drop(file);
                    tracing::warn!(path = %last.path.display(), "removing an input log segment whose making was cut short");
                    std::fs::remove_file(&last.path).map_err(io(&last.path))?;
                    sync_dir(dir)?;
                    segments.pop();
                    if segments.is_empty() {
                        create_segment(dir, SegmentHeader::new(last.first_height, 0))?;
                        segments = list_segments(dir)?;
                    }
                }
            }
        }
        let Some((last, mut file, h)) = header else { unreachable!("a segment exists") };
        for seg in &segments[..segments.len() - 1] {
            let mut f = File::open(&seg.path).map_err(io(&seg.path))?;
            read_header(&mut f, seg)?;
        }
        let end = scan(&mut file, &last, h, false, u64::MAX, u64::MAX, |_| Ok(()))?;
        let mut len = file.metadata().map_err(io(&last.path))?.len();
        let zeros_after = end.valid_len < len
            && h.zeros_end_frames()
            && zeros_from(&mut file, end.valid_len).map_err(io(&last.path))?;
        if end.valid_len < len && !zeros_after {
            // A torn append leaves no whole frame after it. One found anywhere in the tail
            // (zeros over an acknowledged frame's header, say) was acknowledged: refused.
            if let Some(at) = intact_frame_in(&file, end.valid_len, len, end.last_height).map_err(io(&last.path))? {
                return Err(LogError::Corrupt {
                    height: end.last_height + 1,
                    detail: format!(
                        "the frames of {} end at byte {} but an intact frame of a later batch follows at byte {at}, \
                         so what lies between was acknowledged and has since been damaged; restore the data directory \
                         from a backup or another replica (the log is left as it is)",
                        last.path.display(),
                        end.valid_len
                    ),
                });
            }
            tracing::warn!(valid_len = end.valid_len, len, "truncating torn tail of the input log");
            file.set_len(end.valid_len).map_err(io(&last.path))?;
            file.sync_all().map_err(io(&last.path))?;
            len = end.valid_len;
        }
        sync_dir(dir)?;
        Ok(FileLog {
            dir: dir.to_path_buf(),
            options,
            path: last.path,
            file,
            active_first: last.first_height,
            len: end.valid_len,
            file_len: len,
            prezero: h.zeros_end_frames(),
            last_height: end.last_height,
            last_ts: end.last_ts,
            stopped: false,
        })
    }

    /// Height of the first batch still in the log (the one the next append gets when the
    /// log holds none).
    pub fn first_height(&self) -> Result<u64, LogError> {
        Ok(list_segments(&self.dir)?.first().map_or(self.active_first, |s| s.first_height))
    }

    /// The directory the segments are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Cut the active segment back to `len` after a failed append (its zeros go too);
    /// true if that is durable.
    fn roll_back(&mut self) -> bool {
        let cut = self.file.set_len(self.len).and_then(|()| self.file.sync_all()).is_ok();
        if cut {
            self.file_len = self.len;
        }
        cut
    }

    /// Close the active segment and start the one whose first batch is `height`. The
    /// closed segment is first cut to its last frame, durably, so that closed segments
    /// never hold zeros.
    fn roll(&mut self, height: u64) -> Result<(), LogError> {
        // The file's own length, not `file_len`: zeros a failed write left are cut too.
        let on_disk = self.file.metadata().map_err(io(&self.path))?.len();
        if on_disk > self.len {
            self.file.set_len(self.len).and_then(|()| self.file.sync_all()).map_err(io(&self.path))?;
            self.file_len = self.len;
        }
        let (file, path) = create_segment(&self.dir, SegmentHeader::new(height, self.last_ts))?;
        self.file = file;
        self.path = path;
        self.active_first = height;
        self.len = SEGMENT_HEADER_BYTES;
        self.file_len = SEGMENT_HEADER_BYTES;
        self.prezero = true;
        Ok(())
    }

    /// Write zeros ahead so that the file reaches `end` plus the zeros option, never past
    /// the segment size (an append that reaches it extends the file itself). A failure (a
    /// nearly full disk) takes the zeros written so far away again and turns them off for
    /// this segment: its appends then extend the file, as in version 1.
    fn zero_ahead(&mut self, end: u64) {
        let target = end.saturating_add(self.options.prezero_bytes).min(self.options.segment_bytes_max);
        if target <= end || target <= self.file_len {
            return;
        }
        // The frame itself writes [len, end): zeros go after it.
        let from = self.file_len.max(end);
        let zeros = vec![0u8; (target - from) as usize];
        match self.file.write_all_at(&zeros, from) {
            Ok(()) => self.file_len = target,
            Err(e) => {
                tracing::warn!(
                    path = %self.path.display(),
                    error = %e,
                    "could not write zeros ahead in the input log; appending to this segment without them"
                );
                self.prezero = false;
                // What this write added goes; the zeros written before stay usable.
                let _ = self.file.set_len(self.file_len);
            }
        }
    }
}

/// The single file of a format-2 data directory's log.
const LEGACY_FILE: &str = "input.log";

/// Convert a format-2 log (`dir/input.log`: frames from height 1, no header) into the
/// segment `00000000000000000001.seg`, safely against a crash at any point: the segment is
/// written under a temporary name, fsynced and renamed (the commit point), and only then
/// is `input.log` removed. Run again after a crash, it finishes what was left: a segment
/// present means the copy completed. Leftover temporary files are removed.
pub fn migrate_single_file(dir: &Path) -> Result<(), LogError> {
    let legacy = dir.join(LEGACY_FILE);
    let tmp = dir.join(format!("{}.tmp", segment_name(1)));
    if legacy.exists() {
        if list_segments(dir)?.is_empty() {
            tracing::info!(path = %legacy.display(), "converting the single-file input log into segments");
            let _ = std::fs::remove_file(&tmp);
            let mut src = File::open(&legacy).map_err(io(&legacy))?;
            let mut out = OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(io(&tmp))?;
            out.write_all(&SegmentHeader::new(1, 0).encode()).map_err(io(&tmp))?;
            std::io::copy(&mut src, &mut out).map_err(io(&tmp))?;
            out.sync_all().map_err(io(&tmp))?;
            drop(out);
            std::fs::rename(&tmp, dir.join(segment_name(1))).map_err(io(&tmp))?;
            sync_dir(dir)?;
        }
        std::fs::remove_file(&legacy).map_err(io(&legacy))?;
        sync_dir(dir)?;
    } else if tmp.exists() {
        std::fs::remove_file(&tmp).map_err(io(&tmp))?;
    }
    Ok(())
}

/// Read buffer of the streamed scan: large enough that reading is sequential I/O in big
/// steps, small next to any memory budget.
const SCAN_BUFFER_BYTES: usize = 1 << 20;

/// A frame body buffer that grew past this (a large batch) is given back after use
/// rather than kept for the rest of the scan.
const BODY_KEEP_BYTES: usize = 8 << 20;

/// Where a segment's valid frames end.
struct ScanEnd {
    valid_len: u64,
    last_height: u64,
    last_ts: u64,
}

/// Read the valid frames of the segment `seg` (open as `file`, header `header`), calling
/// `f` with each batch of height > `after` (frames at or below it are checked but not
/// decoded), and stopping after the frame of height `upto`. In the last segment a torn tail
/// ends the scan; in a `closed` one everything up to the end of the file must be intact
/// frames. Streams: memory is the read buffer and one frame, whatever the file's length.
///
/// A reader of a running node's log (an online backup) may see the last segment change
/// under it: an append in progress, the zeros ahead cut off when it rolls. It asks only
/// for frames that were synced before it started (`upto`), so it stops before either, and
/// a last segment that ends sooner than its length said ends the frames.
fn scan(
    file: &mut File,
    seg: &Segment,
    header: SegmentHeader,
    closed: bool,
    after: u64,
    upto: u64,
    mut f: impl FnMut(Batch) -> Result<(), LogError>,
) -> Result<ScanEnd, LogError> {
    let path = &seg.path;
    let io = |source| LogError::Io { path: path.to_path_buf(), source };
    // In the last segment, a read past what is there now is the end of the frames.
    let short = |e: &std::io::Error| !closed && e.kind() == std::io::ErrorKind::UnexpectedEof;
    let file_len = file.metadata().map_err(io)?.len();
    // Only the last segment of version 2 may end its frames with zeros.
    let zeros_end = header.zeros_end_frames() && !closed;
    file.seek(SeekFrom::Start(SEGMENT_HEADER_BYTES)).map_err(io)?;
    let mut r = BufReader::with_capacity(SCAN_BUFFER_BYTES, &mut *file);
    let mut body = Vec::new();
    let mut pos = SEGMENT_HEADER_BYTES;
    let mut last_height = header.first_height - 1;
    let mut last_ts = header.prev_ts;
    let damaged = |pos: u64, last_height: u64, why: &str| LogError::Corrupt {
        height: last_height + 1,
        detail: format!(
            "the frame at byte {pos} of {} {why}, so it was acknowledged and has since been damaged; restore the \
             data directory from a backup or another replica (the log is left as it is)",
            path.display()
        ),
    };
    let mut stopped = false;
    while pos + 8 <= file_len {
        if last_height >= upto {
            stopped = true;
            break;
        }
        let mut head = [0u8; 8];
        match r.read_exact(&mut head) {
            Err(e) if short(&e) => break,
            read => read.map_err(io)?,
        }
        if zeros_end && head == [0; 8] {
            break;
        }
        let (len, crc) = frame_head(&head);
        if len > FRAME_BYTES_MAX || pos + 8 + len as u64 > file_len {
            break;
        }
        body.clear();
        body.resize(len, 0);
        match r.read_exact(&mut body) {
            Err(e) if short(&e) => break,
            read => read.map_err(io)?,
        }
        let next = pos + 8 + len as u64;
        let frame = if crc32fast::hash(&body) == crc { read_frame(&body, after) } else { None };
        let Some((height, ts, batch)) = frame else {
            if closed {
                return Err(damaged(pos, last_height, "fails its check in a closed segment"));
            }
            let follows = match frame_follows(&mut r, file_len - next) {
                Err(e) if short(&e) => false,
                other => other.map_err(io)?,
            };
            if follows {
                return Err(damaged(pos, last_height, "fails its check but intact frames follow it"));
            }
            break;
        };
        if height != last_height + 1 {
            return Err(LogError::Corrupt {
                height,
                detail: format!("expected height {} in {}", last_height + 1, path.display()),
            });
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
    if closed && !stopped && pos != file_len {
        return Err(damaged(pos, last_height, "is cut short in a closed segment"));
    }
    Ok(ScanEnd { valid_len: pos, last_height, last_ts })
}

/// Call `f` with every batch of height > `after` in the segments of `dir`, stopping after
/// `upto`. A segment before the last must end right before the next one starts. Fails
/// with [`LogError::Retired`] when batch `after + 1` is no longer in the log.
fn replay_dir(
    dir: &Path,
    after: u64,
    upto: u64,
    f: &mut dyn FnMut(Batch) -> Result<(), LogError>,
) -> Result<(), LogError> {
    replay_segments(dir, list_segments(dir)?, after, upto, f)
}

/// [`replay_dir`] over the segments of several directories taken as one log (an archive
/// of `--log-retain archive:DIR` and the log itself); a segment in more than one is read
/// from the first directory that has it. For `tally verify`.
pub fn replay_dirs(
    dirs: &[PathBuf],
    after: u64,
    f: &mut dyn FnMut(Batch) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let mut segments: Vec<Segment> = Vec::new();
    for dir in dirs {
        for seg in list_segments(dir)? {
            if !segments.iter().any(|s| s.first_height == seg.first_height) {
                segments.push(seg);
            }
        }
    }
    segments.sort_by_key(|s| s.first_height);
    let dir = dirs.last().cloned().unwrap_or_default();
    replay_segments(&dir, segments, after, u64::MAX, f)
}

fn replay_segments(
    dir: &Path,
    segments: Vec<Segment>,
    after: u64,
    upto: u64,
    f: &mut dyn FnMut(Batch) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let Some(first) = segments.first() else { return Ok(()) };
    if after + 1 < first.first_height {
        return Err(LogError::Retired { height: after + 1, first: first.first_height, dir: dir.to_path_buf() });
    }
    for (i, seg) in segments.iter().enumerate() {
        let next_first = segments.get(i + 1).map(|s| s.first_height);
        if next_first.is_some_and(|n| n <= after + 1) || seg.first_height > upto {
            continue;
        }
        let mut file = File::open(&seg.path).map_err(io(&seg.path))?;
        let header = read_header(&mut file, seg)?;
        let end = scan(&mut file, seg, header, next_first.is_some(), after, upto, |b| {
            if b.height <= upto {
                f(b)?;
            }
            Ok(())
        })?;
        if end.last_height >= upto {
            break;
        }
        if let Some(n) = next_first {
            if end.last_height + 1 != n {
                return Err(LogError::Corrupt {
                    height: end.last_height + 1,
                    detail: format!(
                        "segment {} ends at height {} but the next segment starts at {n}",
                        seg.path.display(),
                        end.last_height
                    ),
                });
            }
        }
    }
    Ok(())
}

/// A checksummed frame body's (height, ts, batch), the batch decoded only when its height
/// is above `after` (an applied frame is checked without copying its inputs); `None` when
/// it is not a well-formed batch.
fn read_frame(body: &[u8], after: u64) -> Option<(u64, u64, Option<Batch>)> {
    let tally_apply::BatchHead { height, ts, .. } = Batch::check(body).ok()?;
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

/// The batches of the log in `dir` from the first one still there (earlier ones may have
/// been retired) up to `height`, read without opening the log for writing: a running
/// node may be appending (its torn tail is where reading stops, and nothing is truncated)
/// and retiring segments (one that goes while this reads is skipped when nothing was read
/// from it yet, so the batches returned are always consecutive and end at `height` if the
/// log reaches it). For online backups.
pub fn read_log_dir(dir: &Path, height: u64) -> Result<Vec<Batch>, LogError> {
    let mut out = Vec::new();
    stream_log_dir(dir, height, &mut |b| {
        out.push(b);
        Ok(())
    })?;
    Ok(out)
}

/// [`read_log_dir`] one batch at a time, in height order, without holding them (online
/// backups stream the log). A segment retired between listing and opening is skipped if
/// nothing was handed to `f` yet (retirement only ever takes the oldest segments, so
/// this ends); once a batch was handed over, a retirement under the reader is an error.
pub fn stream_log_dir(
    dir: &Path,
    height: u64,
    f: &mut dyn FnMut(Batch) -> Result<(), LogError>,
) -> Result<(), LogError> {
    for _ in 0..8 {
        let first = list_segments(dir)?.first().map_or(1, |s| s.first_height);
        let mut handed = false;
        match replay_dir(dir, first - 1, height, &mut |b| {
            handed = true;
            f(b)
        }) {
            Ok(()) => return Ok(()),
            Err(LogError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound && !handed => {}
            Err(LogError::Retired { .. }) if !handed => {}
            Err(e) => return Err(e),
        }
    }
    Err(LogError::Corrupt { height, detail: format!("the segments of {} kept changing while read", dir.display()) })
}

/// Where, between `from` and `file_len` of `file`, an intact frame of a batch above
/// `last_height` starts, if one does: a frame header whose body is a batch of such a height
/// and whose checksum holds, at any byte offset. Candidates are found by their batch
/// format byte and a height in range before any checksum is computed, so a tail of junk
/// costs one read of it. Run on open before a tail is cut off as a torn append.
fn intact_frame_in(file: &File, from: u64, file_len: u64, last_height: u64) -> std::io::Result<Option<u64>> {
    // A frame header, a batch's format byte, its rules (format 2) and its height.
    const NEED: usize = 8 + 1 + 2 + 8;
    let mut buf = vec![0u8; SCAN_BUFFER_BYTES.min(file_len.saturating_sub(from) as usize)];
    let mut base = from;
    while base < file_len {
        let n = ((file_len - base) as usize).min(buf.len());
        let chunk = &mut buf[..n];
        file.read_exact_at(chunk, base)?;
        let last_chunk = base + n as u64 == file_len;
        let starts = if last_chunk { n } else { n - NEED };
        for q in 0..starts {
            let height_at = match chunk.get(q + 8) {
                Some(1) => q + 9,
                Some(2) => q + 11,
                _ => continue,
            };
            let Some(h) = chunk.get(height_at..height_at + 8) else { continue };
            let h = u64::from_be_bytes(h.try_into().unwrap_or([0; 8]));
            if h <= last_height || h - last_height > 1 << 32 {
                continue;
            }
            let (len, crc) = frame_head(chunk[q..q + 8].try_into().unwrap_or(&[0; 8]));
            let at = base + q as u64;
            if len == 0 || len > FRAME_BYTES_MAX || at + 8 + len as u64 > file_len {
                continue;
            }
            let mut body = vec![0u8; len];
            file.read_exact_at(&mut body, at + 8)?;
            if crc32fast::hash(&body) == crc && Batch::check(&body).is_ok() {
                return Ok(Some(at));
            }
        }
        if last_chunk {
            break;
        }
        base += (n - NEED) as u64;
    }
    Ok(None)
}

/// Whether every byte of `file` from `pos` to its end is zero: the zeros a version-2
/// segment keeps ahead of its appends, rather than a torn append. Reads the tail once
/// (at most the zeros option plus one frame).
fn zeros_from(file: &mut File, pos: u64) -> std::io::Result<bool> {
    file.seek(SeekFrom::Start(pos))?;
    let mut r = BufReader::with_capacity(SCAN_BUFFER_BYTES, &mut *file);
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(true);
        }
        if buf.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        let n = buf.len();
        r.consume(n);
    }
}

/// Whether the next `rest` bytes of `r` start with a complete frame whose checksum holds
/// (a torn append leaves nothing valid after it). Reads at most one frame. An empty frame
/// is never one (zeros written ahead are not a frame).
fn frame_follows(r: &mut impl Read, rest: u64) -> std::io::Result<bool> {
    if rest < 8 {
        return Ok(false);
    }
    let mut head = [0u8; 8];
    r.read_exact(&mut head)?;
    let (len, crc) = frame_head(&head);
    if len == 0 || len > FRAME_BYTES_MAX || 8 + len as u64 > rest {
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
        if self.len > SEGMENT_HEADER_BYTES && self.len + frame.len() as u64 > self.options.segment_bytes_max {
            if let Err(e) = self.roll(batch.height) {
                // Nothing of this batch was written; the log stays as it was.
                self.stopped = true;
                let source = match e {
                    LogError::Io { source, .. } => source,
                    other => std::io::Error::other(other.to_string()),
                };
                return Err(LogError::AppendFailed {
                    height: batch.height,
                    path: self.dir.join(segment_name(batch.height)),
                    source,
                    rolled_back: true,
                });
            }
        }
        let end = self.len + frame.len() as u64;
        if self.prezero && end > self.file_len {
            self.zero_ahead(end);
        }
        if let Err(source) = self.file.write_all_at(&frame, self.len).and_then(|()| self.file.sync_data()) {
            self.stopped = true;
            let rolled_back = self.roll_back();
            return Err(LogError::AppendFailed { height: batch.height, path: self.path.clone(), source, rolled_back });
        }
        self.len = end;
        self.file_len = self.file_len.max(end);
        self.last_height = batch.height;
        self.last_ts = batch.ts;
        Ok(())
    }

    fn replay_after(&mut self, height: u64, f: &mut dyn FnMut(Batch) -> Result<(), LogError>) -> Result<(), LogError> {
        if height >= self.last_height {
            return Ok(());
        }
        replay_dir(&self.dir, height, self.last_height, f)
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
        let end = {
            let mut log = FileLog::open(dir.path()).unwrap();
            for h in 1..=3 {
                log.append(&Batch { height: h, ts: h * 10, rules: 1, inputs: vec![vec![h as u8; 5]] }).unwrap();
            }
            assert!(log.append(&Batch { height: 9, ts: 0, rules: 1, inputs: vec![] }).is_err());
            assert!(log.file_len > log.len, "zeros ahead");
            log.len
        };
        // Simulate a torn append, into the zeros after the last frame.
        let p = dir.path().join(segment_name(1));
        OpenOptions::new().write(true).open(&p).unwrap().write_all_at(&[0, 0, 0, 50, 1, 2], end).unwrap();
        let mut log = FileLog::open(dir.path()).unwrap();
        assert_eq!(log.len, end, "cut back to the last whole frame");
        assert_eq!(log.last_height(), 3);
        assert_eq!(log.last_ts(), 30);
        let after = log.read_after(1).unwrap();
        assert_eq!(after.iter().map(|b| b.height).collect::<Vec<_>>(), vec![2, 3]);
        log.append(&Batch { height: 4, ts: 40, rules: 1, inputs: vec![] }).unwrap();
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
            log.append(&Batch { height: h, ts: h, rules: 1, inputs: vec![input(h), vec![7]] }).unwrap();
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
