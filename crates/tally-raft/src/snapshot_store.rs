//! A member's Raft snapshot on disk, and [`SnapshotFile`], the snapshot data openraft
//! hands around: an open file, never the snapshot's bytes in memory.
//!
//! The snapshot directory holds `snapshot.meta` (the current snapshot's Raft meta, a
//! record of [`crate::wire`]) and the data file that meta names,
//! `snapshot.TERM-NODE-INDEX.bin` after its last log id (the data is opaque here: the
//! machine's export), and while they are made, temporaries named `snapshot.bin.*`:
//! `.build` (a snapshot being built), `.recv-N` (one being received from the leader),
//! `.copy`. A temporary is written, fsynced, then renamed to its data file name; then the
//! meta is written to a temporary and renamed over `snapshot.meta`. That rename is the
//! one commit point: a crash before it leaves the previous meta naming the previous data
//! file, still there; after it, the meta names complete data. So the meta is never paired
//! with another snapshot's data, which would install a state at the wrong log position.
//! Data files the meta does not name (and temporaries) are removed after the commit and
//! when the directory is opened. Building, saving a received snapshot and reading the
//! current one take one lock. (Before, the data was always `snapshot.bin`, renamed before
//! the meta: a crash between the two paired the old meta with the new data. Such a
//! directory's `snapshot.bin` is still read when its meta's own file is absent.)
//!
//! Reading a snapshot to send it (`get_current_snapshot`) opens the data file; removing
//! or replacing it later does not change what that open handle reads.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::{Snapshot, SnapshotMeta};

const SNAPSHOT_META: &str = "snapshot.meta";
/// Where builds before the binary Raft records kept the meta (version 0, JSON).
const SNAPSHOT_META_V0: &str = "snapshot.meta.json";
/// The data file of directories written before data files were named by their meta.
const SNAPSHOT_DATA_V0: &str = "snapshot.bin";
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

/// The data file a snapshot's meta names (see the module doc).
pub fn data_file_name(meta: &SnapshotMeta) -> String {
    match &meta.last_log_id {
        Some(l) => format!("snapshot.{}-{}-{}.bin", l.leader_id.term, l.leader_id.node_id, l.index),
        None => "snapshot.none.bin".to_string(),
    }
}

/// A data file of this directory (current, superseded or of the old layout), not a temporary.
fn is_data_file(name: &str) -> bool {
    name.starts_with("snapshot.") && name.ends_with(".bin") && !name.starts_with(TEMP_PREFIX)
}

impl SnapshotDir {
    /// Create `dir` if needed and remove temporaries, and data files the meta does not
    /// name, that a crash left in it.
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
        let d = SnapshotDir { dir: dir.to_path_buf(), lock: Mutex::new(()), next_temp: AtomicU64::new(0) };
        if let Some(meta) = d.read_meta()? {
            d.remove_other_data(&data_file_name(&meta))?;
        }
        Ok(Arc::new(d))
    }

    /// Remove the data files other than `keep` — if `keep` exists (else the meta is of
    /// the old layout and `snapshot.bin` is its data).
    fn remove_other_data(&self, keep: &str) -> io::Result<()> {
        if !self.dir.join(keep).exists() {
            return Ok(());
        }
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if is_data_file(&name) && name != keep {
                match std::fs::remove_file(e.path()) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The current snapshot's data file (call with the lock held).
    fn data_path(&self, meta: &SnapshotMeta) -> PathBuf {
        let named = self.dir.join(data_file_name(meta));
        if named.exists() {
            named
        } else {
            self.dir.join(SNAPSHOT_DATA_V0)
        }
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
    /// renamed to the data file `meta` names (a file already under that name is kept),
    /// any other file copied (bounded buffer); then the meta is written (the commit
    /// point) and superseded data files removed. Returns the file under its new name.
    /// Blocking.
    pub fn save(&self, meta: &SnapshotMeta, mut data: SnapshotFile) -> io::Result<SnapshotFile> {
        let _g = self.locked()?;
        // A build that ran while a newer snapshot was installed must not replace it.
        if let Some(newer) = self.read_meta()?.filter(|m| m.last_log_id > meta.last_log_id) {
            if self.is_temp(&data.path) {
                std::fs::remove_file(&data.path)?;
            }
            tracing::info!(kept = ?newer.last_log_id, older = ?meta.last_log_id, "kept the newer snapshot");
            return SnapshotFile::open(&self.data_path(&newer));
        }
        let name = data_file_name(meta);
        let target = self.dir.join(&name);
        if data.path != target {
            let from = if self.is_temp(&data.path) {
                data.path.clone()
            } else {
                let tmp = self.temp_path("copy");
                let mut out = File::create(&tmp)?;
                io::copy(&mut io::BufReader::with_capacity(SNAPSHOT_IO_BUFFER_BYTES, data.reader()?), &mut out)?;
                out.sync_all()?;
                tmp
            };
            std::fs::rename(&from, &target)?;
            sync_dir(&self.dir);
            data.path = target;
        }
        write_atomic(&self.dir, SNAPSHOT_META, &crate::wire::encode_snapshot_meta(meta))?;
        // A meta file of an earlier build would name data that is gone.
        match std::fs::remove_file(self.dir.join(SNAPSHOT_META_V0)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.remove_other_data(&name)?;
        Ok(data)
    }

    /// The current snapshot, if any. Blocking.
    pub fn load(&self) -> io::Result<Option<Snapshot>> {
        let _g = self.locked()?;
        let Some(meta) = self.read_meta()? else { return Ok(None) };
        let data = SnapshotFile::open(&self.data_path(&meta))?;
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

#[cfg(test)]
mod tests {
    use openraft::impls::leader_id_adv::LeaderId;
    use openraft::StoredMembership;

    use super::*;
    use crate::LogId;

    fn meta(index: u64) -> SnapshotMeta {
        let last = LogId { leader_id: LeaderId { term: 2, node_id: 1 }, index };
        SnapshotMeta { last_log_id: Some(last), last_membership: StoredMembership::default() }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    fn read(s: &Snapshot) -> Vec<u8> {
        let mut b = Vec::new();
        io::Read::read_to_end(&mut s.snapshot.reader().unwrap(), &mut b).unwrap();
        b
    }

    #[test]
    fn the_meta_never_pairs_with_another_snapshots_data() {
        let tmp = tempfile::tempdir().unwrap();
        let d = SnapshotDir::open(tmp.path()).unwrap();
        d.build(&meta(10), |w| w.write_all(b"state at 10")).unwrap();
        d.build(&meta(20), |w| w.write_all(b"state at 20")).unwrap();
        assert_eq!(files(tmp.path()), ["snapshot.2-1-20.bin", "snapshot.meta"]);
        let s = d.load().unwrap().unwrap();
        assert_eq!((s.meta.clone(), read(&s)), (meta(20), b"state at 20".to_vec()));

        // A crash after the data of the snapshot at 30 was renamed into place but before
        // its meta was written: the meta still names the data at 20, which is still there.
        std::fs::write(tmp.path().join(data_file_name(&meta(30))), b"state at 30").unwrap();
        drop(d);
        let d = SnapshotDir::open(tmp.path()).unwrap();
        let s = d.load().unwrap().unwrap();
        assert_eq!((s.meta.clone(), read(&s)), (meta(20), b"state at 20".to_vec()));
        assert_eq!(files(tmp.path()), ["snapshot.2-1-20.bin", "snapshot.meta"], "the orphan is removed");
    }

    #[test]
    fn a_directory_of_the_old_layout_is_read_then_moved_to_the_new_one() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("snapshot.bin"), b"old layout").unwrap();
        std::fs::write(tmp.path().join("snapshot.meta"), crate::wire::encode_snapshot_meta(&meta(7))).unwrap();
        let d = SnapshotDir::open(tmp.path()).unwrap();
        let s = d.load().unwrap().unwrap();
        assert_eq!((s.meta.clone(), read(&s)), (meta(7), b"old layout".to_vec()));
        // Saved again (as openraft installs a member's own snapshot on a restart): copied
        // under its new name, the old file removed.
        let saved = d.save(&s.meta, s.snapshot).unwrap();
        assert_eq!(saved.path(), tmp.path().join("snapshot.2-1-7.bin"));
        assert_eq!(files(tmp.path()), ["snapshot.2-1-7.bin", "snapshot.meta"]);
        assert_eq!(read(&d.load().unwrap().unwrap()), b"old layout");
    }
}
