//! The data directory's format marker.
//!
//! A data directory holds the state store (`state.redb`), the input log (`log/`, single
//! node) or the Raft log (`raft/`, cluster member), and the file `FORMAT`, one line of
//! ASCII: `tally data directory format <N>` followed by a newline. `N` names the layout of
//! the whole directory: which files exist and which format each file has (each also
//! carries its own version: the store's `format_version` meta value, the version byte of
//! every logged batch). A build reads exactly the formats it names in [`FORMATS_READ`] and
//! refuses any other with a message that says what to do, before it opens anything else.
//!
//! | format | written by | layout |
//! |---|---|---|
//! | 1 | builds from the marker's introduction to the transparency log; also any non-empty directory without a marker | `state.redb` (store format 1, block headers v1), `log/input.log` (batch version 1) or `raft/` (JSON records) |
//! | 2 | builds from the transaction log to the segmented input log | as 1, with block headers v2 (committing to the transaction log, `docs/ledger.md`), the transaction log's `tlog/` meta, binary Raft records (`docs/record.md`) and `member.key` |
//! | 3 | builds from the segmented input log to the node-local leaf-hash lookup | as 2, with the single node's input log in segment files `log/<first height, 20 digits>.seg` (`docs/record.md`, "Input log segments") instead of `log/input.log` |
//! | 4 | builds from the node-local leaf-hash lookup to input log segments with zeros ahead | as 3, with the leaf-hash lookup of `get-proof-by-hash` in `leafhash.redb` (`crate::leaf_index`: derived, rebuilt when missing) instead of the state's `tlog/h/` meta entries, which the executor no longer writes |
//! | 5 | this build | as 4, with new input log segments in version 2 (zeros written ahead of the appends end the frames; `docs/record.md`, "Input log segments"); version-1 segments stay as they are and are still read |
//!
//! A format-4 directory is upgraded by rewriting its marker: its segments keep version 1
//! and the next segment the log makes is version 2. A format-4 build must not open a
//! format-5 directory: it cannot read a version-2 segment.
//!
//! A format-3 directory is upgraded by rewriting its marker: its `tlog/h/` entries stay
//! and are never read, and `leafhash.redb` is built from the state's tree in the
//! background. A format-3 build must not open a format-4 directory: it would find no
//! lookup entry for the leaves written since.
//!
//! A format-2 directory is upgraded in place: the marker is rewritten to 5 first (so no
//! format-2 build opens it afterwards), then opening the input log converts `input.log`
//! into the first segment (`tally_calvin::migrate_single_file`: copied under a temporary
//! name, fsynced, renamed, and only then is `input.log` removed; a crash at any point is
//! finished by the next open). A cluster member's directory has no input log; only its
//! marker changes.
//!
//! A format-1 directory is refused with what to do (move the data with `tally export` /
//! `tally import`, or `tally backup` / `restore`, using the build that wrote it): its
//! blocks cannot gain the transaction log's commitments without changing their hashes.
//! An empty directory (or one holding only a marker-less `member.key`) is new and gets
//! the marker of format 5.
//!
//! The directory also holds `member.key`, this member's ed25519 signing key for tree
//! heads (`docs/ledger.md`): the 32-byte RFC 8032 secret seed, raw, mode 0600, made on
//! first start. It is the member's own and never replicated; losing it loses nothing but
//! the ability to sign as the same key (rotation: `docs/ledger.md`).

use std::path::Path;

use anyhow::Context;

/// The format this build writes.
pub const FORMAT: u32 = 5;
/// The formats this build opens (2, 3 and 4 are upgraded to 5 on open).
pub const FORMATS_READ: &[u32] = &[2, 3, 4, 5];
/// The last commit whose build writes format 1: it has the executor's limits (issue 11),
/// so it opens a format-1 directory that stopped earlier builds, for `tally export`.
const LAST_FORMAT_1_BUILD: &str = "commit bb86f26";
/// The marker's file name, in the data directory.
pub const MARKER_FILE: &str = "FORMAT";
const MARKER_PREFIX: &str = "tally data directory format ";

/// Parse a marker file's content.
fn parse_marker(text: &str) -> Option<u32> {
    let line = text.strip_suffix('\n').unwrap_or(text);
    let n = line.strip_prefix(MARKER_PREFIX)?;
    if n.is_empty() || n.len() > 9 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// Check (and, for a new or unmarked directory, write) the format marker of `dir`, which
/// must exist. Refuses a directory of another format with a clear error.
pub fn check_or_init(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(MARKER_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let Some(found) = parse_marker(&text) else {
                anyhow::bail!(
                    "{} is not a valid format marker (expected one line `{MARKER_PREFIX}<N>`); \
                     the data directory may be damaged or not Tally's",
                    path.display()
                );
            };
            if !FORMATS_READ.contains(&found) {
                anyhow::bail!(
                    "the data directory {} has format {found}, and this build of tally reads format {}; \
                     open it with a build that reads format {found}, or move the data with that build \
                     (`tally export` there, `tally import` here)",
                    dir.display(),
                    FORMATS_READ.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
                );
            }
            if found < FORMAT {
                tracing::info!(from = found, to = FORMAT, dir = %dir.display(), "upgrading the data directory's format");
                write_marker(dir)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Data without a marker was written before the marker existed: format 1.
            let has_data = ["state.redb", "log", "raft"].iter().any(|f| dir.join(f).exists());
            if has_data {
                anyhow::bail!(
                    "the data directory {} has format 1 (it has no {MARKER_FILE} marker: it was written by an \
                     earlier build), and this build of tally reads format {FORMAT}; move the data with the build \
                     that wrote it (`tally export` there, `tally import` here). If that build stops on the directory \
                     (a transaction that broke the store's limits), use {LAST_FORMAT_1_BUILD}, the last build of \
                     format 1, which replays such a transaction as a failed one",
                    dir.display()
                );
            }
            write_marker(dir)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Write the marker atomically (temporary file, fsync, rename, fsync of the directory).
fn write_marker(dir: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{MARKER_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(format!("{MARKER_PREFIX}{FORMAT}\n").as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(MARKER_FILE)).with_context(|| format!("writing {}/{MARKER_FILE}", dir.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// The member key's file name, in the data directory.
pub const MEMBER_KEY_FILE: &str = "member.key";

/// This member's signing key: read from `dir/member.key`, or made and written there
/// (mode 0600, atomically) when the file does not exist yet.
pub fn member_key(dir: &Path) -> anyhow::Result<tally_ledger::sth::MemberKey> {
    let path = dir.join(MEMBER_KEY_FILE);
    match std::fs::read(&path) {
        Ok(seed) => tally_ledger::sth::MemberKey::from_seed(&seed).with_context(|| {
            format!(
                "{} is damaged (expected 32 bytes); restore it from a backup or rotate the key (docs/ledger.md)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
                .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
            write_private(dir, &seed)?;
            Ok(tally_ledger::sth::MemberKey::from_seed(&seed)?)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Write the key file readable by its owner only (temporary file, fsync, rename).
fn write_private(dir: &Path, seed: &[u8; 32]) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{MEMBER_KEY_FILE}.tmp"));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(seed)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(MEMBER_KEY_FILE))
        .with_context(|| format!("writing {}/{MEMBER_KEY_FILE}", dir.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_parse_strictly() {
        assert_eq!(parse_marker("tally data directory format 1\n"), Some(1));
        assert_eq!(parse_marker("tally data directory format 12"), Some(12));
        for bad in [
            "",
            "tally data directory format \n",
            "tally data directory format -1\n",
            "format 1\n",
            "tally data directory format 1 \n",
            "tally data directory format 1\n\n",
            "tally data directory format 9999999999\n",
        ] {
            assert_eq!(parse_marker(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn new_directory_gets_a_marker_and_other_formats_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        check_or_init(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(MARKER_FILE)).unwrap();
        assert_eq!(text, "tally data directory format 5\n");
        check_or_init(dir.path()).unwrap();
        // Formats 2, 3 and 4 are upgraded: the marker says 5 afterwards (the log converts on
        // open, the leaf-hash lookup is built in the background, new segments are version 2).
        for old in [2, 3, 4] {
            std::fs::write(dir.path().join(MARKER_FILE), format!("tally data directory format {old}\n")).unwrap();
            check_or_init(dir.path()).unwrap();
            let text = std::fs::read_to_string(dir.path().join(MARKER_FILE)).unwrap();
            assert_eq!(text, "tally data directory format 5\n");
        }
        std::fs::write(dir.path().join(MARKER_FILE), "tally data directory format 1\n").unwrap();
        let e = check_or_init(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("has format 1") && e.contains("reads format 2, 3, 4, 5") && e.contains("tally export"),
            "{e}"
        );
        // Data without a marker is format 1, written before the marker existed.
        let old = tempfile::tempdir().unwrap();
        std::fs::write(old.path().join("state.redb"), b"").unwrap();
        let e = check_or_init(old.path()).unwrap_err().to_string();
        assert!(e.contains("has format 1") && e.contains("no FORMAT marker"), "{e}");
        assert!(!old.path().join(MARKER_FILE).exists());
        std::fs::write(dir.path().join(MARKER_FILE), "garbage").unwrap();
        let e = check_or_init(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a valid format marker"), "{e}");
    }

    #[test]
    fn member_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = member_key(dir.path()).unwrap();
        let b = member_key(dir.path()).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(MEMBER_KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(MEMBER_KEY_FILE), b"short").unwrap();
        assert!(member_key(dir.path()).unwrap_err().to_string().contains("damaged"));
    }
}
