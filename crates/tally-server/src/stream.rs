//! `POST /stream`: change streams as the v4 drivers use them (docs/streams.md).
//!
//! The executor publishes every applied transaction's written keys to the [`Hub`]
//! (`tally_exec::publish`), in commit order, after they are visible to readers. Each
//! stream subscribes to the hub *before* it picks its start ts (the applied ts), so every
//! commit after the start reaches it, and it skips those at or before the start. It keeps
//! only the commits that touch its document or set, reads what changed at the commit's ts
//! with the caller's secret (authenticated again at that ts, so a revoked key or a lost
//! privilege ends the stream with an `error` event), and sends one JSON object per line.
//!
//! Nothing here can stall the executor or another stream: publishing is a send on a
//! bounded broadcast that never waits; a stream that falls more than
//! [`HUB_BATCHES`] publications behind, or whose client leaves [`EVENTS_BUFFERED`] events
//! unread, gets an `error` event and is closed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value as Json};
use tally_exec::publish::{CommittedTxn, Publish};
use tally_fql::FqlError;
use tokio::sync::{broadcast, mpsc};

use crate::http::{error_response, AppState};

mod events;
use events::{Fields, Watch};

/// Publications (one per executor commit) a stream may fall behind before it is closed.
pub const HUB_BATCHES: usize = 4096;
/// Smallest bound `TALLY_STREAM_LAG_MAX` may set.
const HUB_BATCHES_MIN: usize = 2;
/// Events a stream holds for a client that does not read them, before it is closed.
pub const EVENTS_BUFFERED: usize = 256;
/// Streams per client connection; one more is refused with `too many streams` (HTTP
/// 429), well below the HTTP/2 stream limit so the connection still carries queries and
/// a client learns of the bound instead of waiting for a free HTTP/2 stream.
pub const STREAMS_PER_CONNECTION: usize = 100;
/// Open streams per node by default; one more is refused with `too many streams`
/// (HTTP 429). `TALLY_STREAMS_MAX` sets another bound (read once, at the first stream).
pub const STREAMS_MAX_DEFAULT: usize = 10_000;

fn streams_max() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        std::env::var("TALLY_STREAMS_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(STREAMS_MAX_DEFAULT)
    })
}

/// Where the executor publishes; one per process (a process runs one node).
pub struct Hub {
    tx: broadcast::Sender<Arc<Vec<CommittedTxn>>>,
    open: Arc<AtomicUsize>,
}

impl Publish for Hub {
    fn wanted(&self) -> bool {
        // Always: a stream may subscribe while a batch runs, and it must see the commits
        // of that batch after its start ts (copying keys is small next to applying).
        true
    }

    fn publish(&self, txns: Vec<CommittedTxn>) {
        if self.tx.receiver_count() > 0 {
            // Never waits: a receiver too far behind is told so on its next receive.
            let _ = self.tx.send(Arc::new(txns));
        }
    }
}

/// Publications a stream may fall behind: [`HUB_BATCHES`], or for tests only a lower
/// bound from `TALLY_STREAM_LAG_MAX` (clamped to 2..=4,096 and rounded up to a power of
/// two as the broadcast channel rounds its capacity; read once, at the first
/// stream), so a test can make a stream overflow without 4,096 commits. It can only
/// lower the bound: a stream never buffers more than it would by default.
fn lag_max() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        std::env::var("TALLY_STREAM_LAG_MAX")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(HUB_BATCHES, |n| n.clamp(HUB_BATCHES_MIN, HUB_BATCHES).next_power_of_two())
    })
}

pub fn hub() -> &'static Arc<Hub> {
    static HUB: OnceLock<Arc<Hub>> = OnceLock::new();
    HUB.get_or_init(|| Arc::new(Hub { tx: broadcast::channel(lag_max()).0, open: Arc::new(AtomicUsize::new(0)) }))
}

/// Counts an open stream against a bound while alive.
struct Count(Arc<AtomicUsize>);

fn take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Count> {
    let mut n = counter.load(Ordering::Relaxed);
    loop {
        if n >= max {
            return None;
        }
        match counter.compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Some(Count(counter.clone())),
            Err(now) => n = now,
        }
    }
}

impl Drop for Count {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream's places in the node's and its connection's bounds.
struct Slot {
    _node: Count,
    _conn: Option<Count>,
}

fn too_many(desc: String) -> Response {
    let mut r = error_response(&FqlError::new("too many streams", desc), 0);
    *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    r
}

/// A place in both bounds, or the refusal's description.
fn take_slot(conn: Option<&crate::conn::ConnStreams>) -> Result<Slot, String> {
    let conn = match conn {
        Some(c) => Some(take(&c.0, STREAMS_PER_CONNECTION).ok_or_else(|| {
            format!(
                "A connection carries at most {STREAMS_PER_CONNECTION} streams; open another connection (another client)."
            )
        })?),
        None => None,
    };
    let node = take(&hub().open, streams_max()).ok_or_else(|| {
        format!("This node serves at most {} streams at once; close some, or use another member.", streams_max())
    })?;
    Ok(Slot { _node: node, _conn: conn })
}

#[derive(serde::Deserialize)]
pub struct StreamParams {
    fields: Option<String>,
}

/// `POST /stream?fields=action,document,diff,prev,index` with the streamed expression
/// (a document ref or a set) as the body.
pub async fn stream(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    axum::extract::Query(p): axum::extract::Query<StreamParams>,
    conn: Option<axum::Extension<crate::conn::ConnStreams>>,
    body: Body,
) -> Response {
    let fields = match Fields::parse(p.fields.as_deref()) {
        Ok(f) => f,
        Err(e) => return error_response(&e, 0),
    };
    let Some(secret) = crate::http::secret_of(&headers) else {
        let e =
            FqlError::new("unauthorized", "Unauthorized: send the key's secret as `Authorization: Bearer <secret>`.");
        return error_response(&e, 0);
    };
    if crate::jwt::looks_like_jwt(&secret) {
        let e = FqlError::new("invalid argument", "Streams take a key or token secret; JWT secrets are not supported.");
        return error_response(&e, 0);
    }
    let (bytes, held) = match crate::body::read(&st, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let expr = match crate::body::parse_query(bytes).await {
        Ok(parsed) => parsed.expr,
        Err(e) => return error_response(&e, 0),
    };
    drop(held);
    let slot = match take_slot(conn.as_ref().map(|c| &c.0)) {
        Ok(s) => s,
        Err(desc) => return too_many(desc),
    };
    // Subscribe first, then fix the start: every commit after the start is received.
    let rx = hub().tx.subscribe();
    let start = st.applied_ts.load(Ordering::Acquire);
    let st2 = st.clone();
    let secret2 = secret.clone();
    let watch = tokio::task::spawn_blocking(move || Watch::open(&st2, &secret2, &expr, start, fields)).await;
    let watch = match watch {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => return error_response(&e, start),
        Err(e) => return error_response(&FqlError::new("internal server error", e.to_string()), start),
    };
    let (tx, body_rx) = mpsc::channel::<Bytes>(EVENTS_BUFFERED);
    tokio::spawn(run(st, secret, watch, rx, tx, slot));
    let mut r = Body::new(LineBody { rx: body_rx }).into_response();
    r.extensions_mut().insert(crate::conn::LongLived);
    r.headers_mut().insert("content-type", "application/json;charset=utf-8".parse().expect("static header"));
    r.headers_mut().insert("x-txn-time", start.to_string().parse().expect("digits"));
    r
}

fn line(v: &Json) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

fn error_event(txn: u64, code: &str, description: &str) -> Json {
    json!({"type": "error", "txn": txn, "event": {"code": code, "description": description}})
}

/// Send one event unless the client left too many unread: then the last free slot
/// carries an `error` event and the stream ends (false).
fn send(tx: &mpsc::Sender<Bytes>, txn: u64, event: &Json) -> bool {
    if tx.capacity() <= 1 {
        let e = error_event(
            txn,
            "stream overflow",
            &format!("The client left {EVENTS_BUFFERED} events unread; the stream was closed. Read events as they come, and reopen it."),
        );
        let _ = tx.try_send(line(&e));
        return false;
    }
    tx.try_send(line(event)).is_ok()
}

async fn run(
    st: Arc<AppState>,
    secret: String,
    mut watch: Watch,
    mut rx: broadcast::Receiver<Arc<Vec<CommittedTxn>>>,
    tx: mpsc::Sender<Bytes>,
    _slot: Slot,
) {
    let start = watch.start;
    if !send(&tx, start, &json!({"type": "start", "txn": start, "event": start})) {
        return;
    }
    loop {
        let txns = tokio::select! {
            r = rx.recv() => r,
            _ = tx.closed() => return, // the client went away
        };
        let txns = match txns {
            Ok(t) => t,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let last = watch.last_txn;
                let desc = format!(
                    "The stream fell more than {} commits behind the database and was closed; reopen it.",
                    lag_max()
                );
                let _ = tx.try_send(line(&error_event(last, "stream overflow", &desc)));
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if !watch.interested(&txns) {
            continue;
        }
        let st2 = st.clone();
        let secret2 = secret.clone();
        let (w, out) = match tokio::task::spawn_blocking(move || {
            let out = watch.events(&st2, &secret2, &txns);
            (watch, out)
        })
        .await
        {
            Ok(x) => x,
            Err(_) => return,
        };
        watch = w;
        for (txn, ev) in &out.events {
            if !send(&tx, *txn, ev) {
                return;
            }
        }
        if out.end {
            return;
        }
    }
}

/// The stream's body: one JSON event per line, as they come.
struct LineBody {
    rx: mpsc::Receiver<Bytes>,
}

impl axum::body::HttpBody for LineBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|c| c.map(|c| Ok(hyper::body::Frame::data(c))))
    }
}
