//! Reading a segment file's frames the way a test needs to damage them: where each frame
//! starts, and where the frames end (a version-2 segment may go on with zeros after).

#![allow(dead_code)]

use std::path::Path;

use tally_calvin::SEGMENT_HEADER_BYTES;

/// The byte offsets at which the frames of the segment at `path` start, walked by their
/// length fields from the header to the first zero or short header.
pub fn frame_starts(path: &Path) -> Vec<usize> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = SEGMENT_HEADER_BYTES as usize;
    while pos + 8 <= bytes.len() && bytes[pos..pos + 8] != [0; 8] {
        out.push(pos);
        pos += 8 + u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
    }
    out
}

/// Where the frames of the segment at `path` end: the next append's offset.
pub fn frames_end(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    match frame_starts(path).last() {
        Some(&last) => last + 8 + u32::from_be_bytes(bytes[last..last + 4].try_into().unwrap()) as usize,
        None => SEGMENT_HEADER_BYTES as usize,
    }
}

/// Write `bytes` into the file at `path` at `offset`, in place.
pub fn write_at(path: &Path, offset: usize, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset as u64).unwrap();
}

/// The length of the file at `path`.
pub fn file_len(path: &Path) -> usize {
    std::fs::metadata(path).unwrap().len() as usize
}
