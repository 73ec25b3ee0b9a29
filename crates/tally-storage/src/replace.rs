//! [`Store::replace`]: the whole content of both spaces replaced by a stream of versions
//! (a Raft member installing a snapshot), as one commit, in memory bounded by the
//! backend's page cache rather than by the content's size where the backend allows it.
//!
//! A [`Batch`] buffers its writes in memory until it commits, so replacing a store of
//! gigabytes through one would hold all of it; splitting it into several commits would
//! let readers (and a crash) see half of the old content and half of the new. The redb
//! backend instead writes the versions straight into one redb write transaction, which
//! spills its dirty pages to the file as its cache fills and commits atomically: readers
//! keep the old content until the commit, a crash keeps the old content, and a `fill`
//! that fails (a damaged snapshot) aborts the transaction.

use crate::batch::Overlay;
use crate::{Batch, Result, Snapshot, Space, StorageError, Store, Ts, VALUE_BYTES_MAX};

/// Where [`Store::replace`] puts the new content.
pub trait Load {
    /// Add the version of `key` at `ts` ([`crate::check_put`] applies).
    fn put(&mut self, space: Space, key: &[u8], ts: Ts, value: &[u8]) -> Result<()>;
    /// Set a meta value (the reserved ones are refused, as by [`Batch::set_meta`]).
    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()>;
}

/// What fills the store in [`Store::replace`].
pub type Fill<'a> = &'a mut dyn FnMut(&mut dyn Load) -> Result<()>;

/// The rule every [`Load::set_meta`] applies.
pub(crate) fn check_meta(key: &str, value: &[u8]) -> Result<()> {
    if crate::reserved_meta(key) {
        return Err(StorageError::Invalid(format!("meta key {key:?} is reserved")));
    }
    if value.len() > VALUE_BYTES_MAX {
        return Err(StorageError::Invalid(format!("meta value of {} bytes is too large", value.len())));
    }
    Ok(())
}

struct BatchLoad<'a>(&'a mut dyn Batch);

impl Load for BatchLoad<'_> {
    fn put(&mut self, space: Space, key: &[u8], ts: Ts, value: &[u8]) -> Result<()> {
        self.0.put(space, key, ts, value)
    }
    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.0.set_meta(key, value)
    }
}

/// Every version of every key in `space` of `view`.
fn each_version(view: &dyn Snapshot, space: Space, f: &mut dyn FnMut(&[u8], Ts) -> Result<()>) -> Result<()> {
    for item in view.scan(space, &[], None, false, Ts::MAX)? {
        let (key, _) = item?;
        for v in view.history(space, &key, 0, Ts::MAX, false)? {
            f(&key, v?.ts)?;
        }
    }
    Ok(())
}

/// [`Store::replace`] through one [`Batch`]: every old version removed, the new ones put,
/// one durable commit. Holds everything in memory (the in-memory store, tests).
pub(crate) fn replace_via_batch<S: Store + ?Sized>(store: &S, fill: Fill<'_>) -> Result<()> {
    let mut b = store.begin()?;
    for space in [Space::Docs, Space::Index] {
        let mut old = Vec::new();
        each_version(&*b, space, &mut |key, ts| {
            old.push((key.to_vec(), ts));
            Ok(())
        })?;
        for (key, ts) in old {
            b.remove(space, &key, ts)?;
        }
    }
    fill(&mut BatchLoad(&mut *b))?;
    b.commit(true)?;
    store.sync()
}

/// The same as one [`Overlay`] over `view` (a write-behind backend without a bulk path).
pub(crate) fn overlay_replacing(view: &dyn Snapshot, fill: Fill<'_>) -> Result<Overlay> {
    let mut o = Overlay::default();
    for space in [Space::Docs, Space::Index] {
        each_version(view, space, &mut |key, ts| {
            o.insert(space, key, ts, None);
            Ok(())
        })?;
    }
    fill(&mut OverlayLoad(&mut o))?;
    Ok(o)
}

struct OverlayLoad<'a>(&'a mut Overlay);

impl Load for OverlayLoad<'_> {
    fn put(&mut self, space: Space, key: &[u8], ts: Ts, value: &[u8]) -> Result<()> {
        crate::check_put(key, value)?;
        self.0.bytes += key.len() + value.len();
        self.0.insert(space, key, ts, Some(value.to_vec()));
        Ok(())
    }
    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()> {
        check_meta(key, value)?;
        self.0.set_meta(key, value.to_vec());
        Ok(())
    }
}
