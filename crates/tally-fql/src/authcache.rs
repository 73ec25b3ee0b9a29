//! A cache of authenticated key secrets, so that a request does not look its key up,
//! walk its database's ancestry and hash its secret again every time.
//!
//! What may be cached: a key's secret (scoped or not) whose authentication read no
//! document with a `ttl` (a `ttl` ends a key without any write, so such a key is looked
//! up every time). Tokens, `@doc` scopes (both depend on an identity document, a user
//! document any write may delete) and JWT logins are never cached, nor are refusals.
//!
//! Invalidation: authenticating a key reads only schema documents (`keys`, `databases`,
//! `roles` of some database) and the database registry. The executor tells
//! [`AuthChanges`] the commit ts of every transaction that writes a document of a native
//! collection or of the registry ([`touches_auth`]) *before* that commit becomes visible
//! to any reader, and a cached entry is used only while no such commit is newer than the
//! read ts it was computed at. So an entry never outlives a change that a fresh
//! authentication would see: a reader that can see the change also sees the newer
//! change ts. A root key record (a rotation) counts as such a change
//! ([`AuthChanges::root_key_changed`]). Replacing the whole store (a snapshot install, which only moves a member
//! forward) calls [`AuthChanges::reset`] with a ts past everything read before it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use tally_storage::{Snapshot, Space};

use crate::auth::Auth;
use crate::model::{native, Ts, Write};
use crate::Result;

/// Secrets cached at most; a full cache is emptied (a flood of distinct valid secrets
/// costs each one lookup, as without a cache).
pub const AUTH_CACHE_ENTRIES_MAX: usize = 16_384;

/// The newest commit ts that changed what authenticating a key reads (see module doc).
#[derive(Debug, Default)]
pub struct AuthChanges {
    changed_ts: AtomicU64,
}

impl AuthChanges {
    pub fn new() -> AuthChanges {
        AuthChanges::default()
    }

    /// Record that a transaction committing at `ts` wrote `writes`. Call before the
    /// commit is visible to readers.
    pub fn record(&self, writes: &[Write], ts: Ts) {
        if touches_auth(writes) {
            self.changed_ts.fetch_max(ts, Ordering::AcqRel);
        }
    }

    /// The root key hash changed at commit ts `ts` (a root key record): the root key a
    /// cached entry may have matched is no longer root. Call before the new hash is set.
    pub fn root_key_changed(&self, ts: Ts) {
        self.changed_ts.fetch_max(ts, Ordering::AcqRel);
    }

    /// Forget everything cached at a read ts before `ts`: the store's content was
    /// replaced by a state whose last commit is before `ts`.
    pub fn reset(&self, ts: Ts) {
        self.changed_ts.fetch_max(ts, Ordering::AcqRel);
    }

    fn changed_ts(&self) -> Ts {
        self.changed_ts.load(Ordering::Acquire)
    }
}

/// Does any of `writes` touch a document that authenticating a key may read: a document
/// of a native collection (other than tokens and credentials, which key authentication
/// never reads) in any database, or a database registry entry?
pub fn touches_auth(writes: &[Write]) -> bool {
    writes.iter().any(|w| {
        if w.space != Space::Docs || w.key.len() < 16 {
            return false;
        }
        let db = u64::from_be_bytes(w.key[0..8].try_into().unwrap_or_default());
        let coll = u64::from_be_bytes(w.key[8..16].try_into().unwrap_or_default());
        db == crate::run::REGISTRY_DB
            || (native::name(coll).is_some() && coll != native::TOKENS && coll != native::CREDENTIALS)
    })
}

struct Entry {
    auth: Auth,
    /// The read ts the entry was computed at.
    at: Ts,
}

/// Authenticated key secrets by the SHA-256 of the whole secret (never the secret).
pub struct AuthCache {
    changes: std::sync::Arc<AuthChanges>,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl AuthCache {
    pub fn new(changes: std::sync::Arc<AuthChanges>) -> AuthCache {
        AuthCache { changes, entries: Mutex::new(HashMap::new()) }
    }

    /// [`crate::run::authenticate`], from the cache when an entry is still valid at `ts`.
    pub fn authenticate(&self, snap: &dyn Snapshot, ts: Ts, secret: &str, root_key_hash: &str) -> Result<Auth> {
        self.authenticate_opening(ts, secret, root_key_hash, || Ok(Snap::Borrowed(snap)))
    }

    /// [`Self::authenticate`] with the snapshot opened by `open` only when the cache cannot
    /// answer: opening one is most of what a cached authentication would cost.
    pub fn authenticate_opening<'a>(
        &self,
        ts: Ts,
        secret: &str,
        root_key_hash: &str,
        open: impl FnOnce() -> Result<Snap<'a>>,
    ) -> Result<Auth> {
        let id: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let changed = self.changes.changed_ts();
        if let Ok(entries) = self.entries.lock() {
            // Valid: computed at or before `ts` (an older read must not see a key created
            // since) and at or after every change so far.
            if let Some(e) = entries.get(&id).filter(|e| e.at >= changed && e.at <= ts) {
                return Ok(e.auth.clone());
            }
        }
        let snap = open()?;
        let (auth, cacheable) = crate::run::authenticate_cacheable(snap.get(), ts, secret, root_key_hash)?;
        if cacheable {
            if let Ok(mut entries) = self.entries.lock() {
                if entries.len() >= AUTH_CACHE_ENTRIES_MAX {
                    entries.clear();
                }
                entries.insert(id, Entry { auth: auth.clone(), at: ts });
            }
        }
        Ok(auth)
    }
}

/// The snapshot [`AuthCache::authenticate_opening`] authenticates on: one the caller
/// holds, or one opened for the purpose.
pub enum Snap<'a> {
    Borrowed(&'a dyn Snapshot),
    Owned(Box<dyn Snapshot>),
}

impl Snap<'_> {
    fn get(&self) -> &dyn Snapshot {
        match self {
            Snap::Borrowed(s) => *s,
            Snap::Owned(s) => &**s,
        }
    }
}

/// The root key's hash (hex SHA-256; empty while there is none) that root requests are
/// authenticated against: fixed on a single node (its `--root-key`), and on a cluster
/// member the replicated one, which the executor sets when it applies a root key record.
#[derive(Debug, Default)]
pub struct RootKeyHash {
    hex: std::sync::RwLock<std::sync::Arc<str>>,
}

impl RootKeyHash {
    pub fn new(hex: &str) -> RootKeyHash {
        RootKeyHash { hex: std::sync::RwLock::new(hex.into()) }
    }

    /// The current hash, hex (empty: no root key, so no secret is root).
    pub fn get(&self) -> std::sync::Arc<str> {
        self.hex.read().map(|h| h.clone()).unwrap_or_else(|_| "".into())
    }

    pub fn set(&self, hex: &str) {
        if let Ok(mut h) = self.hex.write() {
            *h = hex.into();
        }
    }

    pub fn is_set(&self) -> bool {
        !self.get().is_empty()
    }
}
