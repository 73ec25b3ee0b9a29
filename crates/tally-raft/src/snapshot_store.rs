//! A member's Raft snapshot on disk, and [`SnapshotFile`], the snapshot data openraft
//! hands around: an open file, never the snapshot's bytes in memory.
//!
//! The snapshot directory holds `snapshot.bin` (the data, opaque here: the machine's
//! export) and `snapshot.meta` (its Raft meta, a record of [`crate::wire`]), and while
//! they are made, temporaries named `snapshot.bin.*`: `.build` (a snapshot being built),
//! `.recv-N` (one being received from the leader), `.copy`. A temporary is written,
//! fsynced, then renamed to `snapshot.bin`; the meta follows the same way (data first: the
//! meta file names a complete data file). Temporaries left by a crash are removed when
//! the directory is opened. Building, saving a received snapshot and reading the current
//! one take one lock, so a reader never pairs one snapshot's meta with another's data.
//!
//! Reading a snapshot to send it (`get_current_snapshot`) opens `snapshot.bin`; a later
//! build renaming a new file over it does not change what that open handle reads.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::{Snapshot, SnapshotMeta};

const SNAPSHOT_META: &str = "snapshot.meta";
/// Where builds before the binary Raft records kept the meta (version 0, JSON).
const SNAPSHOT_META_V0: &str = "snapshot.meta.json";
const SNAPSHOT_DATA: &str = "snapshot.bin";
/// Prefix of every temporary data file.
const TEMP_PREFIX: &str = "snapshot.bin.";
/// Buffer of the file writers and readers: large sequential writes, bounded memory.
pub const SNAPSHOT_IO_BUFFER_BYTES: usize = 1 << 20;

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// A snapshot's data: an open file and where it was opened (see the module doc).
#[derive(Debug)]
pub struct SnapshotFile {
    file: File,
    len: u64,
    path: PathBuf,
}

impl SnapshotFile {
    pub fn open(path: &Path) -> io::Result<SnapshotFile> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(SnapshotFile { file, len, path: path.to_path_buf() })
    }

    /// Bytes of data.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle reading the data from its start (it shares the file's position with
    /// this one: use one reader at a time).
    pub fn reader(&self) -> io::Result<File> {
        let mut f = self.file.try_clone()?;
        f.seek(SeekFrom::Start(0))?;
        Ok(f)
    }
}

/// The snapshot directory of one member (see the module doc).
#[derive(Debug)]
pub struct SnapshotDir {
    dir: PathBuf,
    lock: Mutex<()>,
    next_temp: AtomicU64,
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir);
    Ok(())
}

impl SnapshotDir {
    /// Create `dir` if needed and remove temporaries a crash left in it.
    pub fn open(dir: &Path) -> io::Result<Arc<SnapshotDir>> {
        std::fs::create_dir_all(dir)?;
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TEMP_PREFIX) || name.ends_with(".tmp") {
                std::fs::remove_file(e.path())?;
            }
        }
        Ok(Arc::new(SnapshotDir { dir: dir.to_path_buf(), lock: Mutex::new(()), next_temp: AtomicU64::new(0) }))
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn locked(&self) -> io::Result<std::sync::MutexGuard<'_, ()>> {
        self.lock.lock().map_err(|_| io_err("the snapshot directory lock was poisoned by a panic"))
    }

    /// A fresh temporary name for a snapshot being received (`tag`) in this directory.
    pub fn temp_path(&self, tag: &str) -> PathBuf {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{TEMP_PREFIX}{tag}-{n}"))
    }

    fn is_temp(&self, path: &Path) -> bool {
        path.parent() == Some(&*self.dir)
            && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(TEMP_PREFIX))
    }

    /// Build the current snapshot: `write` streams the data to a temporary file (through a
    /// [`SNAPSHOT_IO_BUFFER_BYTES`] buffer), which is fsynced and saved with `meta`.
    /// Blocking.
    pub fn build(
        &self,
        meta: &SnapshotMeta,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<SnapshotFile> {
        let tmp = self.temp_path("build");
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&tmp)?;
        let written = (|| {
            let mut w = BufWriter::with_capacity(SNAPSHOT_IO_BUFFER_BYTES, &file);
            write(&mut w)?;
            w.flush()?;
            drop(w);
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let len = file.metadata()?.len();
        let data = SnapshotFile { file, len, path: tmp };
        self.save(meta, data)
    }

    /// Make `data` the current snapshot with `meta`: a temporary of this directory is
    /// renamed, `snapshot.bin` itself kept, any other file copied (bounded buffer).
    /// Returns the file under its new name. Blocking.
    pub fn save(&self, meta: &SnapshotMeta, mut data: SnapshotFile) -> io::Result<SnapshotFile> {
        let current = self.dir.join(SNAPSHOT_DATA);
        let _g = self.locked()?;
        // A build that ran while a newer snapshot was installed must not replace it.
        if let Some(newer) = self.read_meta()?.filter(|m| m.last_log_id > meta.last_log_id) {
            if self.is_temp(&data.path) {
                std::fs::remove_file(&data.path)?;
            }
            tracing::info!(kept = ?newer.last_log_id, older = ?meta.last_log_id, "kept the newer snapshot");
            return SnapshotFile::open(&current);
        }
        if data.path != current {
            let from = if self.is_temp(&data.path) {
                data.path.clone()
            } else {
                let tmp = self.temp_path("copy");
                let mut out = File::create(&tmp)?;
                io::copy(&mut io::BufReader::with_capacity(SNAPSHOT_IO_BUFFER_BYTES, data.reader()?), &mut out)?;
                out.sync_all()?;
                tmp
            };
            std::fs::rename(&from, &current)?;
            sync_dir(&self.dir);
            data.path = current;
        }
        write_atomic(&self.dir, SNAPSHOT_META, &crate::wire::encode_snapshot_meta(meta))?;
        // A meta file of an earlier build would name data that is gone.
        match std::fs::remove_file(self.dir.join(SNAPSHOT_META_V0)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        Ok(data)
    }

    /// The current snapshot, if any. Blocking.
    pub fn load(&self) -> io::Result<Option<Snapshot>> {
        let _g = self.locked()?;
        let Some(meta) = self.read_meta()? else { return Ok(None) };
        let data = SnapshotFile::open(&self.dir.join(SNAPSHOT_DATA))?;
        Ok(Some(Snapshot { meta, snapshot: data }))
    }

    /// The current snapshot's meta (call with the lock held).
    fn read_meta(&self) -> io::Result<Option<SnapshotMeta>> {
        let read = |name: &str| match std::fs::read(self.dir.join(name)) {
            Ok(b) => crate::wire::decode_snapshot_meta(&b)
                .map(Some)
                .map_err(|e| io_err(format!("snapshot meta {}: {e}", self.dir.join(name).display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        match read(SNAPSHOT_META)? {
            Some(m) => Ok(Some(m)),
            None => read(SNAPSHOT_META_V0),
        }
    }
}
