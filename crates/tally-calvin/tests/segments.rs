//! The segmented input log: rolling, reopening, damage per segment, retirement
//! (`--log-retain`) and the conversion of a format-2 single-file log.

use std::path::Path;

use tally_calvin::{
    list_segments, migrate_single_file, replay_dirs, retire_segments, segment_holds_frames, segment_name, Batch,
    FileLog, Log, LogError, LogOptions, Retain, SEGMENT_HEADER_BYTES,
};

mod common;
use common::{file_len, frame_starts, frames_end, write_at};

fn batch(height: u64) -> Batch {
    Batch { height, ts: height * 10, rules: 1, inputs: vec![vec![height as u8; 40]] }
}

/// Segments of about four batches each, zeros written 100 bytes ahead.
fn small() -> LogOptions {
    LogOptions { segment_bytes_max: 300, prezero_bytes: 100 }
}

fn write(dir: &Path, upto: u64) -> FileLog {
    let mut log = FileLog::open_with(dir, small()).unwrap();
    for h in log.last_height() + 1..=upto {
        log.append(&batch(h)).unwrap();
    }
    log
}

fn heights(log: &mut FileLog, after: u64) -> Vec<u64> {
    log.read_after(after).unwrap().iter().map(|b| b.height).collect()
}

fn firsts(dir: &Path) -> Vec<u64> {
    list_segments(dir).unwrap().iter().map(|s| s.first_height).collect()
}

#[test]
fn appends_roll_into_segments_that_reopen_and_replay_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = write(dir.path(), 30);
    let segs = firsts(dir.path());
    assert!(segs.len() >= 5, "{segs:?}");
    assert_eq!(segs[0], 1);
    for seg in list_segments(dir.path()).unwrap() {
        let len = std::fs::metadata(&seg.path).unwrap().len();
        assert!(len <= 300, "{} is {len} bytes", seg.path.display());
    }
    assert_eq!(heights(&mut log, 0), (1..=30).collect::<Vec<_>>());
    drop(log);
    let mut log = FileLog::open_with(dir.path(), small()).unwrap();
    assert_eq!((log.last_height(), log.last_ts()), (30, 300));
    assert_eq!(heights(&mut log, 17), (18..=30).collect::<Vec<_>>());
    // A batch larger than a segment gets one of its own.
    log.append(&Batch { height: 31, ts: 310, rules: 1, inputs: vec![vec![1; 1000]] }).unwrap();
    log.append(&batch(32)).unwrap();
    let segs = firsts(dir.path());
    assert_eq!(&segs[segs.len() - 2..], &[31, 32]);
    assert_eq!(heights(&mut log, 29), vec![30, 31, 32]);
}

#[test]
fn a_torn_tail_of_the_last_segment_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    drop(write(dir.path(), 10));
    let last = list_segments(dir.path()).unwrap().pop().unwrap();
    write_at(&last.path, frames_end(&last.path), &[0, 0, 0, 90, 1, 2, 3]);
    let mut log = FileLog::open_with(dir.path(), small()).unwrap();
    assert_eq!(log.last_height(), 10);
    log.append(&batch(11)).unwrap();
    let mut log = FileLog::open_with(dir.path(), small()).unwrap();
    assert_eq!(heights(&mut log, 0), (1..=11).collect::<Vec<_>>());
}

/// A crash while a new segment was being made leaves it with part of a header: it held
/// nothing and goes; an empty new segment (header complete, no frame yet) stays and
/// knows the ts before it.
#[test]
fn a_segment_cut_short_while_being_made_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    drop(write(dir.path(), 10));
    let torn = dir.path().join(segment_name(11));
    std::fs::write(&torn, &b"TALLYSEG\x01"[..]).unwrap();
    let mut log = FileLog::open_with(dir.path(), small()).unwrap();
    assert!(!torn.exists());
    assert_eq!((log.last_height(), log.last_ts()), (10, 100));
    log.append(&batch(11)).unwrap();
    drop(log);
    // A complete header but garbage after it is not a torn roll: refused.
    let seg = dir.path().join(segment_name(12));
    std::fs::write(&seg, vec![7u8; SEGMENT_HEADER_BYTES as usize + 4]).unwrap();
    let err = FileLog::open_with(dir.path(), small()).err().expect("refused");
    assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
}

#[test]
fn a_damaged_frame_in_a_closed_segment_stops_replay_through_it_but_not_opening() {
    let dir = tempfile::tempdir().unwrap();
    drop(write(dir.path(), 30));
    let segs = list_segments(dir.path()).unwrap();
    let middle = &segs[2];
    let mut bytes = std::fs::read(&middle.path).unwrap();
    bytes[SEGMENT_HEADER_BYTES as usize + 20] ^= 0x10;
    std::fs::write(&middle.path, &bytes).unwrap();
    // Opening reads only the last segment's frames.
    let mut log = FileLog::open_with(dir.path(), small()).unwrap();
    assert_eq!(log.last_height(), 30);
    let err = log.read_after(0).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { height, .. } if height == middle.first_height), "{err}");
    assert!(err.to_string().contains("restore"), "{err}");
    // A replay that starts after the damaged segment does not read it.
    let after = segs[3].first_height - 1;
    assert_eq!(heights(&mut log, after), (after + 1..=30).collect::<Vec<_>>());
    // A closed segment cut short is damage too, never a torn tail.
    let mut bytes = std::fs::read(&segs[1].path).unwrap();
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&segs[1].path, &bytes).unwrap();
    let err = log.read_after(segs[1].first_height - 1).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
}

#[test]
fn retirement_takes_only_closed_segments_at_or_below_the_durable_height() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = write(dir.path(), 30);
    let before = firsts(dir.path());
    assert_eq!(retire_segments(dir.path(), 30, &Retain::All).unwrap().segments, 0);
    let r = retire_segments(dir.path(), 13, &Retain::Checkpoint).unwrap();
    let after = firsts(dir.path());
    // Every segment left after the first starts above 14; the first one left holds 13's
    // successor or 13 itself, never a batch above 13 is lost.
    assert!(after[0] <= 14 && after.len() < before.len(), "{before:?} -> {after:?}");
    assert_eq!(r.segments as usize, before.len() - after.len());
    assert_eq!(r.first_height, after[0]);
    assert_eq!(heights(&mut log, 13), (14..=30).collect::<Vec<_>>());
    let err = log.read_after(0).unwrap_err();
    assert!(matches!(err, LogError::Retired { height: 1, .. }), "{err}");
    assert!(err.to_string().contains("--log-retain"), "{err}");
    // The last segment is never retired, whatever the height.
    retire_segments(dir.path(), u64::MAX, &Retain::Checkpoint).unwrap();
    assert_eq!(firsts(dir.path()), vec![*before.last().unwrap()]);
    drop(log);
    let mut log = FileLog::open_with(dir.path(), small()).unwrap();
    assert_eq!(log.last_height(), 30);
    log.append(&batch(31)).unwrap();
    assert_eq!(log.first_height().unwrap(), *before.last().unwrap());
}

#[test]
fn archived_segments_are_moved_and_replay_with_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let archive = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    drop(write(&log_dir, 30));
    let r = retire_segments(&log_dir, 20, &Retain::Archive(archive.path().to_path_buf())).unwrap();
    assert!(r.segments >= 3);
    assert_eq!(firsts(archive.path()).len() as u64, r.segments);
    let mut seen = Vec::new();
    replay_dirs(&[archive.path().to_path_buf(), log_dir.clone()], 0, &mut |b| {
        seen.push(b.height);
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, (1..=30).collect::<Vec<_>>());
    // Without the archive the log alone starts later.
    let err = replay_dirs(std::slice::from_ref(&log_dir), 0, &mut |_| Ok(())).unwrap_err();
    assert!(matches!(err, LogError::Retired { .. }), "{err}");
}

/// A format-2 log (`input.log`, frames from height 1 without a header) becomes the first
/// segment, including after a crash left the conversion half done.
#[test]
fn a_single_file_log_is_converted_into_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    // Write frames as format 2 did: the segment's bytes after its header.
    drop(write(dir.path(), 3));
    let seg = dir.path().join(segment_name(1));
    let frames = std::fs::read(&seg).unwrap()[SEGMENT_HEADER_BYTES as usize..].to_vec();
    std::fs::remove_file(&seg).unwrap();
    let legacy = dir.path().join("input.log");
    std::fs::write(&legacy, &frames).unwrap();
    // A crash mid-copy left a temporary file: redone from the start.
    std::fs::write(dir.path().join(format!("{}.tmp", segment_name(1))), b"partial").unwrap();
    let mut log = FileLog::open(dir.path()).unwrap();
    assert!(!legacy.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert_eq!(heights(&mut log, 0), vec![1, 2, 3]);
    log.append(&batch(4)).unwrap();
    drop(log);
    // A crash after the rename but before removing input.log: the segment wins.
    std::fs::write(&legacy, &frames).unwrap();
    migrate_single_file(dir.path()).unwrap();
    assert!(!legacy.exists());
    assert_eq!(FileLog::open(dir.path()).unwrap().last_height(), 4);
}

#[test]
fn a_log_can_start_at_a_later_height() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = FileLog::create_at(dir.path(), small(), 41, 999).unwrap();
    assert_eq!((log.last_height(), log.last_ts()), (40, 999));
    assert!(log.append(&batch(1)).is_err());
    drop(log);
    let mut log = FileLog::open_with(dir.path(), small()).unwrap();
    assert_eq!((log.last_height(), log.last_ts()), (40, 999));
    log.append(&batch(41)).unwrap();
    assert_eq!(heights(&mut log, 40), vec![41]);
    assert!(matches!(log.read_after(0), Err(LogError::Retired { height: 1, first: 41, .. })));
    assert!(FileLog::create_at(dir.path(), small(), 1, 0).is_err(), "refuses a directory holding a log");
}

/// A version-2 segment goes on past its frames with zeros: they stay when the log is
/// reopened (no torn tail), appends go into them, they never pass the segment size, and a
/// closed segment is cut to its last frame.
#[test]
fn zeros_ahead_stay_on_reopen_and_closed_segments_end_at_their_last_frame() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = write(dir.path(), 1);
    let seg = dir.path().join(segment_name(1));
    let end = frames_end(&seg);
    assert!(file_len(&seg) >= end + 100, "zeros ahead: {} after {end}", file_len(&seg));
    assert!(std::fs::read(&seg).unwrap()[end..].iter().all(|&b| b == 0));
    assert!(segment_holds_frames(&seg).unwrap());
    drop(log);
    let len = file_len(&seg);
    log = FileLog::open_with(dir.path(), small()).unwrap();
    assert_eq!(file_len(&seg), len, "the zeros are kept, not cut off as a torn tail");
    log.append(&batch(2)).unwrap();
    assert_eq!(frame_starts(&seg).len(), 2);
    drop(log);
    let mut log = write(dir.path(), 30);
    let segs = list_segments(dir.path()).unwrap();
    assert!(segs.len() >= 5);
    for (i, s) in segs.iter().enumerate() {
        let (len, end) = (file_len(&s.path), frames_end(&s.path));
        assert!(len <= 300, "{} is {len} bytes", s.path.display());
        assert_eq!(std::fs::read(&s.path).unwrap()[8], 2, "version 2");
        if i + 1 < segs.len() {
            assert_eq!(len, end, "closed segment {} ends at its last frame", s.path.display());
        }
    }
    assert_eq!(heights(&mut log, 0), (1..=30).collect::<Vec<_>>());
    // An empty segment with zeros ahead holds no frame.
    let empty = tempfile::tempdir().unwrap();
    let e = empty.path().join(segment_name(1));
    drop(FileLog::open_with(empty.path(), small()).unwrap());
    write_at(&e, SEGMENT_HEADER_BYTES as usize, &[0; 64]);
    assert!(!segment_holds_frames(&e).unwrap());
    assert_eq!(FileLog::open_with(empty.path(), small()).unwrap().last_height(), 0);
}

/// A crash mid-append leaves part of a frame among the zeros: with its header written or
/// not, it is cut off on open (the file ends at the last whole frame), and the log goes on.
#[test]
fn a_torn_append_inside_the_zeros_is_cut_off() {
    for torn in [&[0u8, 0, 0, 60, 9, 9, 9, 9, 1, 2][..], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 6, 7][..]] {
        let dir = tempfile::tempdir().unwrap();
        drop(write(dir.path(), 2));
        let seg = dir.path().join(segment_name(1));
        let end = frames_end(&seg);
        assert!(file_len(&seg) > end + torn.len());
        write_at(&seg, end, torn);
        let mut log = FileLog::open_with(dir.path(), small()).unwrap();
        assert_eq!(log.last_height(), 2, "{torn:?}");
        assert_eq!(file_len(&seg), end, "{torn:?}: the torn append and the zeros are cut off");
        log.append(&batch(3)).unwrap();
        assert_eq!(heights(&mut log, 0), vec![1, 2, 3]);
        drop(log);
        assert_eq!(FileLog::open_with(dir.path(), small()).unwrap().last_height(), 3);
    }
    // A damaged acknowledged frame that an intact one follows is refused, zeros or not.
    let dir = tempfile::tempdir().unwrap();
    drop(write(dir.path(), 2));
    let seg = dir.path().join(segment_name(1));
    let first = frame_starts(&seg)[0];
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[first + 20] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let err = FileLog::open_with(dir.path(), small()).err().expect("refused");
    assert!(matches!(err, LogError::Corrupt { height: 1, .. }), "{err}");
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "left as it was");
}

/// A version-1 segment (an older build's, frames to the end of the file) is read and
/// appended to without zeros; zeros after its frames are a torn tail, not an end; the next
/// segment the log makes is version 2.
#[test]
fn a_version_1_segment_is_read_and_appended_to_then_followed_by_version_2() {
    let dir = tempfile::tempdir().unwrap();
    let plain = LogOptions { segment_bytes_max: 300, prezero_bytes: 0 };
    let mut log = FileLog::open_with(dir.path(), plain).unwrap();
    for h in 1..=2 {
        log.append(&batch(h)).unwrap();
    }
    drop(log);
    let seg = dir.path().join(segment_name(1));
    assert_eq!(file_len(&seg), frames_end(&seg), "no zeros without the option");
    write_at(&seg, 8, &[1]);
    // Zeros after a version-1 segment's frames are no end marker: a torn tail, cut off.
    let end = frames_end(&seg);
    write_at(&seg, end, &[0; 40]);
    let mut log = FileLog::open_with(dir.path(), small()).unwrap();
    assert_eq!(file_len(&seg), end);
    log.append(&batch(3)).unwrap();
    assert_eq!(file_len(&seg), frames_end(&seg), "a version-1 segment gets no zeros");
    for h in 4..=8 {
        log.append(&batch(h)).unwrap();
    }
    let segs = list_segments(dir.path()).unwrap();
    assert!(segs.len() >= 2, "rolled");
    assert_eq!(std::fs::read(&segs[0].path).unwrap()[8], 1);
    assert_eq!(std::fs::read(&segs[1].path).unwrap()[8], 2);
    assert_eq!(heights(&mut log, 0), (1..=8).collect::<Vec<_>>());
    drop(log);
    let mut log = FileLog::open_with(dir.path(), small()).unwrap();
    assert_eq!(heights(&mut log, 0), (1..=8).collect::<Vec<_>>());
}

/// Zeros over an acknowledged frame (a sector zeroed by a failing disk) end the frames
/// where they start, but whole frames of later batches follow them: that is damage, not a
/// torn append, and opening refuses instead of cutting acknowledged batches off. With and
/// without zeros ahead, over the header alone or the header and part of the body.
#[test]
fn zeros_over_an_acknowledged_frame_are_refused_not_cut_off() {
    for prezero_bytes in [0, 500] {
        for zeroed in [8, 30] {
            let dir = tempfile::tempdir().unwrap();
            let options = LogOptions { segment_bytes_max: 10_000, prezero_bytes };
            let mut log = FileLog::open_with(dir.path(), options).unwrap();
            for h in 1..=4 {
                log.append(&batch(h)).unwrap();
            }
            drop(log);
            let seg = dir.path().join(segment_name(1));
            let second = frame_starts(&seg)[1];
            write_at(&seg, second, &vec![0; zeroed]);
            let bytes = std::fs::read(&seg).unwrap();
            let err = FileLog::open_with(dir.path(), options).err().expect("refused");
            let msg = err.to_string();
            assert!(matches!(err, LogError::Corrupt { height: 2, .. }), "{prezero_bytes} {zeroed}: {msg}");
            assert!(msg.contains("intact frame of a later batch") && msg.contains("restore"), "{msg}");
            assert_eq!(std::fs::read(&seg).unwrap(), bytes, "left as it was");
        }
    }
}

/// A reader of a running node's log (an online backup) asks up to a height and stops
/// there: in a closed segment that is no short segment, and nothing after the height is
/// read.
#[test]
fn reading_up_to_a_height_stops_there() {
    let dir = tempfile::tempdir().unwrap();
    drop(write(dir.path(), 30));
    for upto in [1, 6, 13, 29, 30] {
        let got: Vec<u64> = tally_calvin::read_log_dir(dir.path(), upto).unwrap().iter().map(|b| b.height).collect();
        assert_eq!(got, (1..=upto).collect::<Vec<_>>());
    }
    // Junk after the frame asked for (an append in progress) is never looked at.
    let last = list_segments(dir.path()).unwrap().pop().unwrap();
    write_at(&last.path, frames_end(&last.path), &[0xff; 40]);
    let got = tally_calvin::read_log_dir(dir.path(), 30).unwrap();
    assert_eq!(got.last().map(|b| b.height), Some(30));
}
