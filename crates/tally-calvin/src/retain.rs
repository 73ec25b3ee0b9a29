//! Retiring input log segments (`tally serve --log-retain`).
//!
//! The log is what rebuilds the state after a crash: state = last durable checkpoint +
//! replay of the batches after it. A closed segment whose every batch is at or below the
//! durable checkpoint is therefore not needed to recover, and the policy says what becomes
//! of it:
//!
//! - `all` (the default): nothing; the log keeps every batch since genesis, which is what
//!   `tally verify` replays to check the chain and what rebuilds a state store moved aside;
//! - `checkpoint`: such segments are removed;
//! - `archive:DIR`: such segments are moved into `DIR` (renamed when on the same file
//!   system, else copied, fsynced, then removed), where `tally verify --log-archive DIR`
//!   reads them.
//!
//! The last segment (the one appends go to) is never retired, and segments go strictly
//! oldest first, so the log is always one run of consecutive batches. The caller says
//! which height is durable; this module only moves files.

use std::path::{Path, PathBuf};

use crate::log::LogError;
use crate::segment::{list_segments, sync_dir};

/// What becomes of segments wholly at or below the durable checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Retain {
    #[default]
    All,
    Checkpoint,
    Archive(PathBuf),
}

impl std::str::FromStr for Retain {
    type Err = String;
    fn from_str(s: &str) -> Result<Retain, String> {
        match s {
            "all" => Ok(Retain::All),
            "checkpoint" => Ok(Retain::Checkpoint),
            _ => match s.strip_prefix("archive:") {
                Some(dir) if !dir.is_empty() => Ok(Retain::Archive(PathBuf::from(dir))),
                _ => Err(format!("`{s}` is not a log retention policy; use all, checkpoint or archive:DIR")),
            },
        }
    }
}

impl std::fmt::Display for Retain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Retain::All => f.write_str("all"),
            Retain::Checkpoint => f.write_str("checkpoint"),
            Retain::Archive(d) => write!(f, "archive:{}", d.display()),
        }
    }
}

/// What one retirement did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retired {
    pub segments: u64,
    pub bytes: u64,
    /// The first height left in the log afterwards.
    pub first_height: u64,
}

/// The closed segments of `dir` that hold only batches at or below `durable_height`,
/// oldest first, with their sizes.
pub fn retirable(dir: &Path, durable_height: u64) -> Result<Vec<(PathBuf, u64)>, LogError> {
    let segments = list_segments(dir)?;
    let mut out = Vec::new();
    for pair in segments.windows(2) {
        // The segment ends right before the next one starts.
        if pair[1].first_height - 1 > durable_height {
            break;
        }
        let len = std::fs::metadata(&pair[0].path).map(|m| m.len()).unwrap_or(0);
        out.push((pair[0].path.clone(), len));
    }
    Ok(out)
}

/// Retire, by `policy`, every closed segment of `dir` holding only batches at or below
/// `durable_height`. The caller must know that height to be durable in the state store.
pub fn retire_segments(dir: &Path, durable_height: u64, policy: &Retain) -> Result<Retired, LogError> {
    let mut done = Retired::default();
    if *policy == Retain::All {
        return Ok(done);
    }
    let candidates = retirable(dir, durable_height)?;
    if let Retain::Archive(archive) = policy {
        std::fs::create_dir_all(archive).map_err(|source| LogError::Io { path: archive.clone(), source })?;
    }
    for (path, len) in &candidates {
        match policy {
            Retain::All => unreachable!(),
            Retain::Checkpoint => {
                std::fs::remove_file(path).map_err(|source| LogError::Io { path: path.clone(), source })?
            }
            Retain::Archive(archive) => move_into(path, archive)?,
        }
        done.segments += 1;
        done.bytes += len;
    }
    if !candidates.is_empty() {
        sync_dir(dir)?;
    }
    done.first_height = list_segments(dir)?.first().map_or(0, |s| s.first_height);
    Ok(done)
}

/// Move the file `path` into the directory `archive`, durably in both places.
fn move_into(path: &Path, archive: &Path) -> Result<(), LogError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| LogError::Io { path: p.clone(), source }
    };
    let name = path.file_name().unwrap_or_default();
    let target = archive.join(name);
    if std::fs::rename(path, &target).is_err() {
        // Another file system: copy under a temporary name, make it durable, rename, and
        // only then remove the original.
        let tmp = archive.join(format!("{}.tmp", name.to_string_lossy()));
        std::fs::copy(path, &tmp).map_err(io(&tmp))?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &target).map_err(io(&target))?;
        sync_dir(archive)?;
        std::fs::remove_file(path).map_err(io(path))?;
        return Ok(());
    }
    sync_dir(archive)
}
