//! The input log's segment files: their names, their header, and listing them.
//!
//! The log directory holds segment files named by the height of their first batch, twenty
//! decimal digits, `.seg` (`00000000000000000001.seg`), so names sort in log order. Each
//! starts with a 32-byte header, then frames (`len u32 | crc32 u32 | batch bytes`, see
//! `log.rs`), heights consecutive from the header's first height. Byte layout of the
//! header (big-endian; docs/record.md, "Input log segments"):
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `TALLYSEG` |
//! | 1 | version, `0x02` (this build writes 2 and reads 1 and 2) |
//! | 7 | reserved, zero |
//! | 8 | first height: the height of the segment's first batch (equal to its name) |
//! | 8 | previous ts: the `ts` of the batch before it (0 for height 1 or when unknown) |
//!
//! The versions differ only in how the last segment ends. In version 1 its frames run to
//! the end of the file. In version 2 the file may go on past the last frame with zeros
//! written ahead of the appends (so that a sync of an append need not also write the
//! file's new length), and a frame header of eight zero bytes marks the end of the frames:
//! a frame is never empty, so no frame starts with one. A closed segment of either version
//! ends at its last frame (`log.rs` cuts the zeros off before it makes the next segment).
//!
//! The decoder refuses another magic, a version it does not read, non-zero reserved bytes,
//! and a first height that disagrees with the file name.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::log::LogError;

/// Length of a segment header.
pub const SEGMENT_HEADER_BYTES: u64 = 32;
const MAGIC: &[u8; 8] = b"TALLYSEG";
/// The segment format this build writes.
pub const SEGMENT_VERSION: u8 = 2;
/// The segment formats this build reads: version 1 segments (frames to the end of the
/// file) are read, and appended to when last, as they are, and never pre-zeroed.
pub const SEGMENT_VERSIONS_READ: [u8; 2] = [1, 2];
const SUFFIX: &str = ".seg";
const NAME_DIGITS: usize = 20;

/// A segment's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's format version, one of [`SEGMENT_VERSIONS_READ`].
    pub version: u8,
    pub first_height: u64,
    pub prev_ts: u64,
}

impl SegmentHeader {
    /// The header of a new segment, in the version this build writes.
    pub fn new(first_height: u64, prev_ts: u64) -> SegmentHeader {
        SegmentHeader { version: SEGMENT_VERSION, first_height, prev_ts }
    }

    /// Whether the file may go on past the last frame with zeros that end the frames
    /// (version 2 and later).
    pub fn zeros_end_frames(&self) -> bool {
        self.version >= 2
    }

    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut out = [0u8; SEGMENT_HEADER_BYTES as usize];
        out[..8].copy_from_slice(MAGIC);
        out[8] = self.version;
        out[16..24].copy_from_slice(&self.first_height.to_be_bytes());
        out[24..32].copy_from_slice(&self.prev_ts.to_be_bytes());
        out
    }

    /// Decode a header; `Err` says what is wrong.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, String> {
        if b.len() < SEGMENT_HEADER_BYTES as usize {
            return Err(format!("the header is {} bytes, expected {SEGMENT_HEADER_BYTES}", b.len()));
        }
        if &b[..8] != MAGIC {
            return Err("no TALLYSEG magic: not an input log segment".into());
        }
        if !SEGMENT_VERSIONS_READ.contains(&b[8]) {
            return Err(format!(
                "segment format version {} (this build reads versions 1 and 2); open it with the build that wrote it",
                b[8]
            ));
        }
        if b[9..16].iter().any(|&x| x != 0) {
            return Err("reserved header bytes are not zero".into());
        }
        let u = |r: std::ops::Range<usize>| u64::from_be_bytes(b[r].try_into().unwrap_or([0; 8]));
        Ok(SegmentHeader { version: b[8], first_height: u(16..24), prev_ts: u(24..32) })
    }
}

/// One segment file found in the log directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Height of its first batch (from the name).
    pub first_height: u64,
    pub path: PathBuf,
}

/// The file name of the segment whose first batch has `height`.
pub fn segment_name(height: u64) -> String {
    format!("{height:0NAME_DIGITS$}{SUFFIX}")
}

/// The first height a segment file name stands for, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&h| h > 0)
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.to_path_buf(), source }
}

/// The segments in `dir`, in log order (other files are ignored).
pub fn list_segments(dir: &Path) -> Result<Vec<Segment>, LogError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        if let Some(first_height) = name.to_str().and_then(parse_segment_name) {
            out.push(Segment { first_height, path: entry.path() });
        }
    }
    out.sort_by_key(|s| s.first_height);
    Ok(out)
}

/// Read and check the header of the segment `seg` (open as `file`, positioned at 0).
pub fn read_header(file: &mut File, seg: &Segment) -> Result<SegmentHeader, LogError> {
    let mut b = Vec::with_capacity(SEGMENT_HEADER_BYTES as usize);
    Read::by_ref(file).take(SEGMENT_HEADER_BYTES).read_to_end(&mut b).map_err(io_err(&seg.path))?;
    let corrupt = |detail: String| LogError::Corrupt {
        height: seg.first_height,
        detail: format!("segment {}: {detail}", seg.path.display()),
    };
    let h = SegmentHeader::decode(&b).map_err(corrupt)?;
    if h.first_height != seg.first_height {
        return Err(corrupt(format!("its header says first height {}, its name {}", h.first_height, seg.first_height)));
    }
    Ok(h)
}

/// Make the directory entry changes in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

/// Whether the segment file at `path` holds a frame: more than its header, and not zeros
/// where the first frame would start (a version-2 segment may hold zeros written ahead).
pub fn segment_holds_frames(path: &Path) -> Result<bool, LogError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut head = Vec::with_capacity(SEGMENT_HEADER_BYTES as usize + 8);
    Read::by_ref(&mut file).take(SEGMENT_HEADER_BYTES + 8).read_to_end(&mut head).map_err(io_err(path))?;
    Ok(head.len() > SEGMENT_HEADER_BYTES as usize && head[SEGMENT_HEADER_BYTES as usize..].iter().any(|&b| b != 0))
}

/// Create the segment starting at `header.first_height` in `dir`: the header written and
/// fsynced, the directory entry fsynced. Fails if it exists. The file is opened for
/// positioned writes (not `O_APPEND`): a version-2 segment's appends go before its zeros.
pub fn create_segment(dir: &Path, header: SegmentHeader) -> Result<(File, PathBuf), LogError> {
    let path = dir.join(segment_name(header.first_height));
    let mut file =
        std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(io_err(&path))?;
    let written = file.write_all(&header.encode()).and_then(|()| file.sync_all());
    if let Err(e) = written.map_err(io_err(&path)).and_then(|()| sync_dir(dir)) {
        drop(file);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok((file, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header's bytes are fixed: a change here is a format change.
    #[test]
    fn golden_header_bytes() {
        let h = SegmentHeader::new(0x0102, 0x0a0b);
        let b = h.encode();
        assert_eq!(&b[..8], b"TALLYSEG");
        assert_eq!(b[8], 2);
        assert_eq!(&b[9..16], &[0; 7]);
        assert_eq!(&b[16..24], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&b[24..32], &[0, 0, 0, 0, 0, 0, 0x0a, 0x0b]);
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        assert!(h.zeros_end_frames());
        // Version 1 is still read, and its frames run to the end of the file.
        let mut v1 = b;
        v1[8] = 1;
        let old = SegmentHeader::decode(&v1).unwrap();
        assert_eq!((old.version, old.first_height, old.prev_ts), (1, 0x0102, 0x0a0b));
        assert!(!old.zeros_end_frames());
        assert_eq!(old.encode(), v1);
        for unknown in [0, 3, 0xff] {
            let mut v = b;
            v[8] = unknown;
            assert!(SegmentHeader::decode(&v).unwrap_err().contains(&format!("version {unknown} ")));
        }
        let mut reserved = b;
        reserved[12] = 1;
        assert!(SegmentHeader::decode(&reserved).is_err());
        assert!(SegmentHeader::decode(&b[..31]).is_err());
        let mut magic = b;
        magic[0] = b'X';
        assert!(SegmentHeader::decode(&magic).is_err());
    }

    #[test]
    fn names_sort_in_log_order() {
        assert_eq!(segment_name(1), "00000000000000000001.seg");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("00000000000000000000.seg"), None);
        assert_eq!(parse_segment_name("1.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000001.seg.tmp"), None);
        assert!(segment_name(9) < segment_name(10));
    }
}
