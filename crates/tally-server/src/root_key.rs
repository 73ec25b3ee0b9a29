//! The root key of a cluster, as cluster data (docs/cluster.md "The root key is cluster
//! data"): the hash every member authenticates root requests against is replicated
//! through the log as a root key record (`tally_exec::record::root_key`), never taken
//! from a member's own flags.
//!
//! - **Bootstrap**: a member started with `--root-key` whose state has no root key yet
//!   logs a bootstrap record with that key's hash (the leader at once, a follower after
//!   [`FOLLOWER_BOOTSTRAP_DELAY`], so that usually only one is logged). The first one
//!   applied wins; a later one with the same hash is a no-op, one with another hash is
//!   refused by the executor.
//! - **Rotation**: `POST /cluster/root-key {"root_key": NEW}` with the current root key
//!   (`tally root-key rotate`) logs a record that replaces the hash only if it is still
//!   the one the request was authenticated with.
//! - **A different `--root-key`**: a member whose flag is not the cluster's root key
//!   warns (on stderr, and in `/cluster/status`) and goes on: the flag opens nothing, the
//!   replicated hash alone decides who is root. Refusing to start would make a rotation
//!   depend on editing every member's command line at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};
use tally_calvin::{Tenant, WriteError, WritePath};
use tally_exec::record::root_key::{encode_root_key, RootKeySet};
use tally_fql::authcache::RootKeyHash;
use tally_raft::RaftNode;

use crate::http::AppState;

/// How long a follower with `--root-key` leaves the bootstrap to the leader.
pub const FOLLOWER_BOOTSTRAP_DELAY: Duration = Duration::from_secs(3);
/// How often the bootstrap task looks at the replicated hash.
const BOOTSTRAP_POLL: Duration = Duration::from_millis(300);
/// After a bootstrap record got an answer, the least time before another is logged.
const BOOTSTRAP_RETRY_MIN: Duration = Duration::from_secs(2);
const BOOTSTRAP_RETRY_MAX: Duration = Duration::from_secs(30);
/// The shortest root key a rotation accepts (as `--root-key`), and the longest.
pub const ROOT_KEY_CHARS_MIN: usize = 8;
pub const ROOT_KEY_BYTES_MAX: usize = 1024;

/// The root (admin) tenant's lane in the fair queue.
const ROOT_TENANT: Tenant = Tenant { id: tally_fql::model::ROOT_DB, weight: tally_fql::auth::PRIORITY_DEFAULT };

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn hash_bytes(hex_hash: &str) -> Option<[u8; 32]> {
    hex::decode(hex_hash).ok()?.try_into().ok()
}

/// How this member's `--root-key` compares with the cluster's, for `/cluster/status`.
pub fn flag_state(replicated: &RootKeyHash, flag: Option<&str>) -> &'static str {
    match (flag, replicated.get()) {
        (None, _) => "none",
        (Some(_), r) if r.is_empty() => "pending",
        (Some(f), r) if *r == *f => "matches",
        _ => "differs",
    }
}

fn warn_differs(node_id: u64) {
    let msg = format!(
        "tally: WARNING: member {node_id} was started with a --root-key that is not the cluster's root key (it was \
         rotated, or another member bootstrapped the cluster with another key). The flag is ignored: root requests \
         authenticate against the cluster's root key only. Start this member without --root-key (with mutual TLS \
         between members) or with the current key."
    );
    tracing::warn!("{msg}");
    eprintln!("{msg}");
}

/// Run on every member: bootstrap the root key from `flag` (this member's `--root-key`
/// hash) if the cluster has none, and warn when the flag is not the cluster's key.
pub async fn bootstrap(node: Arc<RaftNode>, replicated: Arc<RootKeyHash>, flag: Option<String>) {
    let Some(flag) = flag else {
        if !replicated.is_set() {
            println!(
                "tally member {}: no --root-key; root requests wait for the cluster's root key, which this member \
                 learns from the log (a member started with --root-key sets it when the cluster first starts)",
                node.id
            );
        }
        return;
    };
    let Some(hash) = hash_bytes(&flag) else { return };
    let record = encode_root_key(&RootKeySet { expected: None, hash });
    let mut leader_since: Option<Instant> = None;
    let mut next_try = Instant::now();
    let mut retry = BOOTSTRAP_RETRY_MIN;
    loop {
        let current = replicated.get();
        if !current.is_empty() {
            if *current != *flag {
                warn_differs(node.id);
            }
            return;
        }
        let leader = node.metrics().current_leader;
        let since = match leader {
            Some(_) => *leader_since.get_or_insert_with(Instant::now),
            None => {
                leader_since = None;
                tokio::time::sleep(BOOTSTRAP_POLL).await;
                continue;
            }
        };
        let my_turn = leader == Some(node.id) || since.elapsed() >= FOLLOWER_BOOTSTRAP_DELAY;
        if my_turn && Instant::now() >= next_try {
            match WritePath::submit(&*node, ROOT_TENANT, record.clone()).await {
                Ok(_) => {
                    next_try = Instant::now() + retry;
                    retry = (retry * 2).min(BOOTSTRAP_RETRY_MAX);
                }
                Err(e) => tracing::debug!(error = %e, "root key bootstrap not logged yet; retrying"),
            }
        }
        tokio::time::sleep(BOOTSTRAP_POLL).await;
    }
}

fn err_json(status: StatusCode, code: &str, desc: impl Into<String>) -> Response {
    (status, axum::Json(json!({"errors": [{"code": code, "description": desc.into()}]}))).into_response()
}

/// `POST /cluster/root-key {"root_key": NEW}`, authenticated with the current root key:
/// log a rotation and answer once this member applied it.
pub async fn rotate(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(c) = &st.cluster else {
        return err_json(
            StatusCode::NOT_FOUND,
            "not found",
            "This server runs as a single node: its root key is the --root-key it is started with; restart it with \
             another to change it.",
        );
    };
    let Some(secret) = crate::http::secret_of(&headers).filter(|s| crate::cluster::is_root_secret(&st, s)) else {
        return err_json(StatusCode::UNAUTHORIZED, "unauthorized", "rotating the root key needs the current root key");
    };
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some(new) = req["root_key"].as_str() else {
        return err_json(StatusCode::BAD_REQUEST, "bad request", "expected {\"root_key\": \"NEW SECRET\"}");
    };
    if new.chars().count() < ROOT_KEY_CHARS_MIN || new.len() > ROOT_KEY_BYTES_MAX {
        return err_json(
            StatusCode::BAD_REQUEST,
            "bad request",
            format!("the new root key must be {ROOT_KEY_CHARS_MIN} to {ROOT_KEY_BYTES_MAX} bytes long"),
        );
    }
    if new.contains(':') || new.chars().any(char::is_whitespace) {
        return err_json(
            StatusCode::BAD_REQUEST,
            "bad request",
            "the new root key may not contain ':' (it separates a secret's scope) or whitespace",
        );
    }
    let record = encode_root_key(&RootKeySet { expected: Some(sha256(&secret)), hash: sha256(new) });
    let out = match WritePath::submit(&*c.node, ROOT_TENANT, record).await {
        Ok(out) => out,
        Err(WriteError::Overloaded) => return crate::http::error_response(&crate::http::overloaded(), 0),
        Err(e) => return err_json(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()),
    };
    let out = match tally_exec::record::decode_output(&out) {
        Ok(o) => o,
        Err(e) => return err_json(StatusCode::INTERNAL_SERVER_ERROR, "internal server error", e.to_string()),
    };
    let status = StatusCode::from_u16(out.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body: serde_json::Value = serde_json::from_slice(&out.body).unwrap_or_default();
    if status != StatusCode::OK {
        return (status, axum::Json(body)).into_response();
    }
    tracing::warn!(member = c.node.id, "the root key was rotated");
    (StatusCode::OK, [("x-txn-time", out.ts.to_string())], axum::Json(json!({"rotated": true, "txn_ts": out.ts})))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_state_says_how_the_flag_compares() {
        let r = RootKeyHash::new("");
        assert_eq!(flag_state(&r, None), "none");
        assert_eq!(flag_state(&r, Some("ab")), "pending");
        r.set("ab");
        assert_eq!(flag_state(&r, Some("ab")), "matches");
        assert_eq!(flag_state(&r, Some("cd")), "differs");
    }
}
