//! The HTTP API as the FQL v4 drivers expect it.
//!
//! `POST /` (and `/linearized`) with the query as JSON; Bearer or Basic auth;
//! `{"resource": ...}` or `{"errors": [...]}` with the status codes the drivers map;
//! the `x-txn-time`/`x-query-time`/`x-*-ops` headers; `GET /ping`; `GET /ledger/head`;
//! CORS for browsers. HTTP/1.1 and h2c (prior knowledge) are served on the same port.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use tally_calvin::{Sequencer, WriteError, WritePath};
use tally_fql::eval::{Limits, Mode};
use tally_fql::FqlError;
use tally_ledger::BlockHeader;
use tally_storage::Store;
use tower_http::cors::{Any, CorsLayer};

use tally_exec::machine::{TxnInput, TxnOutput};

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub sequencer: Mutex<Option<Sequencer>>,
    pub applied_ts: Arc<AtomicU64>,
    pub clock: Arc<tally_calvin::Clock>,
    pub head: Arc<Mutex<Option<BlockHeader>>>,
    /// What root requests authenticate against: a single node's `--root-key`, or on a
    /// cluster member the replicated hash its executor keeps (docs/cluster.md).
    pub root_key_hash: Arc<tally_fql::authcache::RootKeyHash>,
    pub body_bytes_max: usize,
    /// Set when this server is a member of a replicated cluster (writes go through Raft).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Access providers' signing keys, for JWT secrets (see `crate::jwt`).
    pub jwks: Arc<crate::jwt::JwksCache>,
    /// Bytes in flight server-wide (see `crate::inflight`).
    pub inflight: Arc<crate::inflight::InFlight>,
    /// Longest a request body may take to arrive.
    pub body_read_timeout: Duration,
    /// This member's tree-head signing key (`crate::datadir::member_key`).
    pub member_key: Arc<tally_ledger::sth::MemberKey>,
    /// Authenticated key secrets, invalidated by the executor (`tally_fql::authcache`).
    pub auth_cache: tally_fql::authcache::AuthCache,
    /// The leaf-hash lookup for `get-proof-by-hash` (`crate::leaf_index`).
    pub leaf_index: Arc<crate::leaf_index::LeafIndex>,
    /// Counters and gauges for `/metrics` (see `crate::metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Evaluation steps granted per millisecond of `X-Query-Timeout` (the executor's
/// deterministic stand-in for a wall-clock timeout).
pub const STEPS_PER_MS: u64 = 20_000;
pub const QUERY_TIMEOUT_DEFAULT_MS: u64 = 60_000;
pub const QUERY_TIMEOUT_MAX_MS: u64 = 600_000;

/// The client port's service: the router, with the FQL endpoints' queries (`POST /` and
/// `POST /linearized`, nearly every request a driver sends) dispatched to their handler
/// directly. A query gets the same from both: the request's metrics
/// ([`crate::health::observed`]) and the CORS layer's headers ([`cors_answer_headers`]);
/// no other layer applies to it (the body limit is the handler's own, `crate::body::read`).
/// What the direct dispatch skips is the router's machinery, a boxed future and a cloned
/// service per layer and a copy of the headers: 7 µs of a 100,000-account transfer's
/// 52 µs on the request threads (docs/benchmarks.md, "Queries past the router").
#[derive(Clone)]
pub struct App(Arc<AppInner>);

struct AppInner {
    router: Router,
    state: Arc<AppState>,
    /// What the CORS layer adds to a query's answer ([`cors_answer_headers`]).
    cors: HeaderMap,
}

impl App {
    pub fn new(state: Arc<AppState>) -> App {
        App(Arc::new(AppInner { router: router(state.clone()), state, cors: cors_answer_headers(&cors()) }))
    }

    /// Answer one request.
    pub async fn call(&self, req: axum::extract::Request) -> Response {
        use tower::ServiceExt;
        let linearized = match (req.method(), req.uri().path()) {
            (&Method::POST, "/") => false,
            (&Method::POST, "/linearized") => true,
            _ => return self.0.router.clone().oneshot(req).await.unwrap_or_else(|e| match e {}),
        };
        let st = &self.0.state;
        crate::health::observed(st, req, |req| async move {
            let (parts, body) = req.into_parts();
            // Boxed: one allocation where the router made one per layer, and a future
            // type shallow enough for the compiler's layout queries.
            let mut resp = Box::pin(query_any(st.clone(), parts.headers, body, linearized)).await;
            resp.headers_mut().extend(self.0.cors.clone());
            resp
        })
        .await
    }
}

/// The headers the CORS layer adds to an answer that is not a preflight. Under [`cors`]'s
/// policy (any origin, no credentials) they are the same whatever the request (the test
/// `cors_answer_headers_do_not_depend_on_the_request` holds them to that), so they are
/// taken from the layer once instead of the layer running for every query.
fn cors_answer_headers(cors: &CorsLayer) -> HeaderMap {
    cors_headers_for(cors, axum::http::Request::post("/").body(Body::empty()).unwrap_or_default())
}

/// What `cors` adds to an empty answer to `req`.
fn cors_headers_for(cors: &CorsLayer, req: axum::extract::Request) -> HeaderMap {
    use std::future::Future;
    use tower::{Layer, ServiceExt};
    let svc = cors.layer(tower::service_fn(|_req: axum::extract::Request| async {
        Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
    }));
    // Every future here is ready at once (the inner service answers without waiting).
    let mut fut = std::pin::pin!(svc.oneshot(req));
    match fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(Ok(r)) => r.headers().clone(),
        _ => HeaderMap::new(),
    }
}

/// CORS only where a browser needs it: the FQL endpoints the JS driver calls from a web
/// page (queries carry their own secret, never a cookie) and `/ping`, which tells
/// nothing. The ledger and cluster endpoints describe every tenant: no web page may read
/// them, whatever secret it holds.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(Any)
        .expose_headers(Any)
        .max_age(Duration::from_secs(3600))
}

/// Every route of the client port ([`App`] sends queries past it).
fn router(state: Arc<AppState>) -> Router {
    let limit = state.body_bytes_max;
    // OPTIONS is routed explicitly: a route without it would send a browser's preflight
    // to the router-wide 405 fallback, outside this layer (the layer answers it first).
    let preflight = || async { StatusCode::NO_CONTENT };
    let browser = Router::new()
        .route("/", post(query).options(preflight))
        .route("/linearized", post(query_linearized).options(preflight))
        .route("/ping", get(ping).options(preflight))
        .route("/stream", post(crate::stream::stream).options(preflight))
        .layer(cors());
    Router::new()
        .merge(browser)
        .route("/ledger/head", get(ledger_head))
        .merge(crate::ledger_api::routes())
        .merge(crate::console::routes())
        .merge(crate::cluster::client_routes())
        .merge(crate::health::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::health::observe))
        .with_state(state)
}

/// Any other path: an FQL error body, as for every other refusal (drivers parse it).
async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    let e = FqlError::new(
        "not found",
        format!("{method} {} is not an endpoint; send queries as POST / (or /linearized).", uri.path()),
    );
    let mut r = error_response(&e, 0);
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    let e = FqlError::new(
        "method not allowed",
        format!("{method} is not allowed on {}; queries are POST, /ping and /ledger/head are GET.", uri.path()),
    );
    let mut r = error_response(&e, 0);
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

#[derive(serde::Deserialize)]
struct PingParams {
    scope: Option<String>,
}

/// `GET /ping?scope=node|local|global|write|read`.
async fn ping(headers: HeaderMap, axum::extract::Query(p): axum::extract::Query<PingParams>) -> Response {
    let mut r = ping_inner(p);
    r.headers_mut().insert(TRACEPARENT, traceparent(&headers));
    r
}

fn ping_inner(p: PingParams) -> Response {
    let scope = p.scope.unwrap_or_else(|| "write".into());
    if !matches!(scope.as_str(), "node" | "local" | "global" | "write" | "read" | "all") {
        let e = bad_request(format!("Unknown ping scope `{scope}`; use node, local, global, read or write."));
        return error_response(&e, 0);
    }
    (StatusCode::OK, axum::Json(json!({"resource": format!("Scope {scope} is OK")}))).into_response()
}

/// `x-fauna-tags`, as v4 read it: `key=value` pairs joined by `,`, keys and values of
/// ASCII letters, digits and `_`; at most 3,000 bytes, 25 pairs, keys of 40 and values
/// of 80 bytes, no key twice. An empty header means no tags. The answer echoes them in
/// v4's order, which is the reverse of the request's (v4 folded the pairs from the
/// right), and a bad header is answered with v4's `Invalid header 'x-fauna-tags': …`.
const TAGS_HEADER_MAX: usize = 3000;
const TAGS_MAX: usize = 25;
const TAG_KEY_MAX: usize = 40;
const TAG_VALUE_MAX: usize = 80;

fn check_tags(headers: &HeaderMap) -> Result<Option<String>, &'static str> {
    let Some(raw) = headers.get("x-fauna-tags") else {
        return Ok(None);
    };
    let raw = raw.as_bytes();
    if raw.len() > TAGS_HEADER_MAX {
        return Err("header is too long");
    }
    if raw.is_empty() {
        return Ok(None);
    }
    let word = |s: &[u8]| !s.is_empty() && s.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_');
    let mut pairs = Vec::new();
    for p in raw.split(|b| *b == b',') {
        let mut kv = p.splitn(2, |b| *b == b'=');
        match (kv.next(), kv.next()) {
            (Some(k), Some(v)) if word(k) && word(v) => pairs.push((k, v)),
            _ => return Err("invalid tags"),
        }
    }
    if pairs.len() > TAGS_MAX {
        return Err("too many tags");
    }
    let mut echoed: Vec<String> = Vec::with_capacity(pairs.len());
    let mut seen = std::collections::BTreeSet::new();
    for (k, v) in pairs.iter().rev() {
        if k.len() > TAG_KEY_MAX {
            return Err("invalid key");
        }
        if v.len() > TAG_VALUE_MAX {
            return Err("invalid value");
        }
        if !seen.insert(*k) {
            return Err("duplicate key");
        }
        // Only ASCII word characters got here.
        echoed.push(format!("{}={}", String::from_utf8_lossy(k), String::from_utf8_lossy(v)));
    }
    Ok(Some(echoed.join(",")))
}

/// v4's answer to a bad `x-fauna-tags` header (no `position`: there is no query yet).
fn tags_refused(reason: &str) -> Response {
    let desc = format!("Invalid header 'x-fauna-tags': {reason}");
    (StatusCode::BAD_REQUEST, axum::Json(json!({"errors": [{"code": "bad request", "description": desc}]})))
        .into_response()
}

const TRACEPARENT: axum::http::HeaderName = axum::http::HeaderName::from_static("traceparent");

/// W3C trace context: keep a valid incoming trace id (lowercased) and its flags, else
/// start a trace; a new span either way. Written into one buffer: this runs for every
/// request.
fn traceparent(headers: &HeaderMap) -> HeaderValue {
    use rand::RngCore;
    // `00-<trace: 32 hex>-<span: 16 hex>-<flags: 2 hex>`
    const DASHES: [usize; 3] = [2, 35, 52];
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    let mut rng = rand::thread_rng();
    let incoming = headers.get("traceparent").map(HeaderValue::as_bytes).filter(|v| {
        v.len() == out.len()
            && v.iter().enumerate().all(|(i, b)| if DASHES.contains(&i) { *b == b'-' } else { b.is_ascii_hexdigit() })
    });
    match incoming {
        Some(v) => {
            out[3..35].copy_from_slice(&v[3..35]);
            out[3..35].make_ascii_lowercase();
            out[53..].copy_from_slice(&v[53..]);
        }
        None => {
            let mut trace = [0u8; 16];
            rng.fill_bytes(&mut trace);
            // The lengths match: 16 bytes, 32 digits.
            let _ = hex::encode_to_slice(trace, &mut out[3..35]);
        }
    }
    let mut span = [0u8; 8];
    rng.fill_bytes(&mut span);
    let _ = hex::encode_to_slice(span, &mut out[36..52]);
    // Dashes and hex digits only: always a valid header value.
    HeaderValue::from_bytes(&out)
        .unwrap_or(HeaderValue::from_static("00-00000000000000000000000000000000-0000000000000000-00"))
}

/// May this request read the ledger (`/ledger/head`)? The ledger's heads move with
/// every tenant's writes, so only the root database's administrators may watch them:
/// the root key, or an admin key of the root database (not one scoped to a child).
pub(crate) fn may_read_ledger(st: &AppState, headers: &HeaderMap) -> Result<(), FqlError> {
    let refused = || {
        FqlError::new(
            tally_fql::error::code::UNAUTHORIZED,
            "Unauthorized: the ledger needs the root key or an admin key of the root database.",
        )
    };
    let secret = secret_of(headers).ok_or_else(refused)?;
    if crate::jwt::looks_like_jwt(&secret) {
        return Err(refused());
    }
    let snap = st.store.snapshot().map_err(|e| FqlError::new("internal server error", format!("storage: {e}")))?;
    let auth =
        tally_fql::run::authenticate(&*snap, read_ts(st), &secret, &st.root_key_hash.get()).map_err(|_| refused())?;
    let root_admin = auth.db == tally_fql::model::ROOT_DB
        && auth.role == tally_fql::auth::Role::Admin
        && auth.identity.is_none()
        && auth.token.as_ref().is_none_or(|t| t.native_parent() != Some("tokens"));
    if root_admin {
        Ok(())
    } else {
        Err(FqlError::new(
            tally_fql::error::code::PERMISSION_DENIED,
            "Permission denied: the ledger needs the root key or an admin key of the root database.",
        ))
    }
}

async fn ledger_head(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = may_read_ledger(&st, &headers) {
        return error_response(&e, 0);
    }
    let head = st.head.lock().ok().and_then(|h| *h);
    let mut body = match head {
        Some(h) => json!({"height": h.height, "hash": hex::encode(h.hash()), "header": h}),
        None => json!({"height": 0, "hash": hex::encode([0u8; 32])}),
    };
    body["member_key"] = json!(hex::encode(st.member_key.public_key()));
    if let Some(c) = &st.cluster {
        // Every voter's key, to count a quorum certificate's signers (docs/ledger.md).
        body["member_keys"] = json!(crate::quorum::member_keys(c, &st.member_key).await);
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

pub(crate) fn error_response(err: &FqlError, ts: u64) -> Response {
    let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = (status, axum::Json(json!({"errors": [err.to_json()]}))).into_response();
    r.extensions_mut().insert(crate::metrics::ErrorCode(err.code.to_string()));
    if ts > 0 {
        set_header(r.headers_mut(), "x-txn-time", ts.to_string());
    }
    if status == StatusCode::UNAUTHORIZED {
        // As v4: the drivers (and browsers) see a standard challenge.
        set_header(r.headers_mut(), "www-authenticate", "Basic realm=\"Unauthorized\"".to_string());
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // Overload and unavailability pass: say when to come back.
        set_header(r.headers_mut(), "retry-after", "1".to_string());
    }
    r
}

fn set_header(h: &mut HeaderMap, k: &'static str, v: String) {
    if let Ok(v) = HeaderValue::from_str(&v) {
        h.insert(k, v);
    }
}

/// The secret from `Authorization: Bearer <secret>` or Basic `<secret>:` (the whole
/// secret is the user name and the password is empty, as the drivers send it). A scoped
/// secret holds `:` itself (`S:child:client`), so the user name runs up to the *last*
/// `:`; a non-empty password is refused rather than guessed at, so a secret is never
/// cut short into a broader one.
pub(crate) fn secret_of(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("authorization")?.to_str().ok()?.trim();
    if let Some(s) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
        return Some(s.trim().to_string());
    }
    if let Some(b) = v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")) {
        return basic_user(b.trim());
    }
    None
}

/// The user name of a Basic credential whose password is empty (see [`secret_of`]).
fn basic_user(b64: &str) -> Option<String> {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    use base64::Engine;
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let s = String::from_utf8(LENIENT.decode(b64).ok()?).ok()?;
    match s.rsplit_once(':') {
        Some((user, "")) => Some(user.to_string()),
        Some(_) => None,
        None => Some(s),
    }
}

/// A numeric request header: absent is `None`; present but not a non-negative integer is
/// a `bad request` naming the header (a typo must not silently mean "the default").
fn u64_header(headers: &HeaderMap, name: &str, what: &str) -> Result<Option<u64>, FqlError> {
    let Some(v) = headers.get(name) else { return Ok(None) };
    let parsed = v.to_str().ok().map(str::trim).and_then(|v| v.parse::<u64>().ok());
    match parsed {
        Some(n) => Ok(Some(n)),
        None => {
            let shown: String = String::from_utf8_lossy(v.as_bytes()).chars().take(40).collect();
            Err(bad_request(format!("invalid {name} header {shown:?}: send {what} as a non-negative integer")))
        }
    }
}

/// `X-Query-Timeout` in ms: 0 or absent is the default, larger values are capped.
fn timeout_ms(headers: &HeaderMap) -> Result<u64, FqlError> {
    let ms = u64_header(headers, "x-query-timeout", "the timeout in milliseconds")?;
    Ok(ms.filter(|ms| *ms > 0).unwrap_or(QUERY_TIMEOUT_DEFAULT_MS).min(QUERY_TIMEOUT_MAX_MS))
}

/// Longest a read waits for this node to apply up to the client's `X-Last-Seen-Txn`.
pub const LAST_SEEN_WAIT_MAX_MS: u64 = 5_000;

/// Honour `X-Last-Seen-Txn`: a client that has seen a commit at ts `t` must never read
/// an older state. Wait (bounded) until this node has applied through `t`; on one node
/// every acknowledged write is already applied, so this returns at once.
async fn wait_for_last_seen(st: &AppState, seen: Option<u64>, max: Duration) {
    let Some(seen) = seen else {
        return;
    };
    // Every timestamp this node handed out is covered by what it has applied or by the
    // read clock; only a timestamp from elsewhere (another member) needs waiting for.
    // A cluster member reads at its applied ts, so it waits for anything newer.
    if st.cluster.is_none() && seen <= st.clock.issued() {
        return;
    }
    let deadline = Instant::now() + max;
    while st.applied_ts.load(Ordering::Acquire) < seen && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub(crate) fn bad_request(desc: impl Into<String>) -> FqlError {
    FqlError::new(tally_fql::error::code::BAD_REQUEST, desc)
}

async fn query(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    query_any(st, headers, body, false).await
}

/// `POST /linearized`: a strictly serializable read (also asked for with `X-Linearized: true`).
async fn query_linearized(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    query_any(st, headers, body, true).await
}

async fn query_any(st: Arc<AppState>, headers: HeaderMap, body: Body, linearized: bool) -> Response {
    let tp = traceparent(&headers);
    // Held until the answer exists: a burst of requests beyond the cap is refused here,
    // before any of its work, instead of waiting in the runtime (inflight.rs).
    let Some(_slot) = st.inflight.try_enter_request() else {
        let busy = error_response(&crate::body::overloaded("too many requests in progress"), 0);
        let deadline = Instant::now() + st.body_read_timeout;
        return crate::body::refuse_unread(body, deadline, st.body_bytes_max, busy);
    };
    let (tags, mut resp) = match check_tags(&headers) {
        Err(reason) => (None, tags_refused(reason)),
        Ok(tags) => match crate::body::read(&st, &headers, body).await {
            // The reservation is held until the answer exists (parsed query, queued input).
            Ok((body, _held)) => {
                let bytes_in = crate::metrics::BytesIn(body.len() as u64);
                let mut r = query_inner(st, &headers, body, linearized).await;
                r.extensions_mut().insert(bytes_in);
                (tags, r)
            }
            Err(r) => (None, r),
        },
    };
    let h = resp.headers_mut();
    h.insert(TRACEPARENT, tp);
    if let Some(t) = tags {
        set_header(h, "x-fauna-tags", t);
    }
    resp
}

pub(crate) async fn query_inner(st: Arc<AppState>, headers: &HeaderMap, body: Bytes, linearized: bool) -> Response {
    let started = Instant::now();
    let Some(secret) = secret_of(headers) else {
        return error_response(
            &FqlError::new("unauthorized", "Unauthorized: send the key's secret as `Authorization: Bearer <secret>`."),
            0,
        );
    };
    let headers_checked = timeout_ms(headers).and_then(|t| {
        let seen = u64_header(headers, "x-last-seen-txn", "the x-txn-time of an earlier answer")?;
        Ok((t, seen))
    });
    let (tmo, last_seen) = match headers_checked {
        Ok(x) => x,
        Err(e) => return error_response(&e, 0),
    };
    // A large query is turned into its logged input off the async threads (write_path).
    let large = body.len() > crate::body::INLINE_BYTES_MAX;
    let (json, expr) = match crate::body::parse_query(body).await {
        Ok(parsed) => (parsed.query, Arc::new(parsed.expr)),
        Err(e) => return error_response(&e, 0),
    };
    // A JWT is verified here, off the executor (clock, network); what it proves then
    // travels with the query as a `JwtLogin`.
    let jwt = if crate::jwt::looks_like_jwt(&secret) {
        match verify_jwt(&st, &secret).await {
            Ok(login) => Some(login),
            Err(e) => return error_response(&e, 0),
        }
    } else {
        None
    };
    let linearized = linearized
        || headers.get("x-linearized").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if let (true, Some(c)) = (linearized, &st.cluster) {
        // Read index: the leader confirms it still leads with a majority; this member then
        // applies up to that index, so the read sees every write acknowledged before it.
        let deadline = Instant::now() + Duration::from_millis(tmo.min(LAST_SEEN_WAIT_MAX_MS));
        match c.node.read_index().await {
            Ok(index) if c.node.wait_applied(index, deadline.into()).await => {}
            Ok(_) => {
                let e = FqlError::new("unavailable", "This member could not catch up for a linearized read in time.");
                return error_response(&e, 0);
            }
            Err(e) => return error_response(&FqlError::new("unavailable", e.to_string()), 0),
        }
    }
    wait_for_last_seen(&st, last_seen, Duration::from_millis(tmo.min(LAST_SEEN_WAIT_MAX_MS))).await;
    if tally_fql::purity::writes_directly(&expr) {
        // A read-only pass would stop at the first write and be thrown away: authenticate
        // and log it at once.
        return match authenticate_now(&st, &secret, jwt) {
            Ok(auth) => {
                let tag = crate::metrics::QueryTag { db: auth.db, write: true };
                let mut resp = write_path(st, json, expr, auth, tmo, started, large).await;
                resp.extensions_mut().insert(tag);
                resp
            }
            Err(e) => error_response(&e, 0),
        };
    }
    let deadline = started + Duration::from_millis(tmo);
    // A short read runs right here, on the thread that parsed it: under a saturated CPU
    // each hand-off to another thread waits for the OS to schedule it, which was most of
    // a quiet tenant's point-read p99 under another tenant's flood. Only when a slot is
    // free without waiting, and only for `INLINE_STEPS_MAX` steps; a longer query starts
    // again on the blocking pool (its first steps are repeated: reads have no effects).
    let inline = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_read(&st, &secret, jwt.clone(), &expr, tmo, deadline, true)
    }));
    let read = match inline {
        Ok(Some(r)) => Ok(r),
        Ok(None) => {
            let st2 = st.clone();
            let secret2 = secret.clone();
            let expr = expr.clone();
            // On a low-priority thread (longpool.rs): short work preempts it.
            crate::longpool::spawn(move || run_read(&st2, &secret2, jwt, &expr, tmo, deadline, false))
                .await
                .map(|r| r.unwrap_or_else(|| Err(FqlError::new("internal server error", "read was not run"))))
        }
        Err(_) => Ok(Err(FqlError::new("internal server error", "The query hit an internal error."))),
    };
    let (auth, out, ts) = match read {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return error_response(&e, 0),
        Err(e) => return error_response(&FqlError::new("internal server error", format!("query task failed: {e}")), 0),
    };
    let mut tag = crate::metrics::QueryTag { db: auth.db, write: false };
    let mut resp = match out.result {
        Ok(v) => {
            let wire_len = tally_fql::budget::wire_len(&v);
            if wire_len > crate::body::INLINE_BYTES_MAX as u64 {
                // A large answer is encoded as its client takes it (body.rs): it holds its
                // value (about its wire size, twice for many small values) and a few chunks.
                let Some(room) = st.inflight.try_reserve(2 * wire_len) else {
                    return error_response(&crate::body::overloaded("too many answers waiting to be sent"), ts);
                };
                let body = crate::body::stream_answer(v, room);
                let mut resp = respond_body(200, body, ts, started, out.steps, out.bytes_read, 0);
                resp.extensions_mut().insert(tag);
                return resp;
            }
            // A small answer waits in memory until its client takes it: it needs room in
            // flight, three times over while it is encoded (the value, its JSON tree, the bytes).
            let Some(_room) = st.inflight.try_reserve(3 * wire_len) else {
                return error_response(&crate::body::overloaded("too many answers waiting to be sent"), ts);
            };
            let body = crate::body::encode_answer(v).await;
            respond_bytes(200, body, ts, started, out.steps, out.bytes_read, 0)
        }
        Err(e) if !e.needs_write => error_response(&e, ts),
        Err(_) => {
            tag.write = true;
            write_path(st, json, expr, auth, tmo, started, large).await
        }
    };
    resp.extensions_mut().insert(tag);
    resp
}

/// The ts this node reads at: a member reads at what it has applied (later commits may
/// be in flight elsewhere); a single node at its read clock.
/// Evaluation steps a read may take on the request's own thread (`run_read` inline);
/// point reads and small index reads take tens to hundreds.
const INLINE_STEPS_MAX: u64 = 1_000;
/// Bytes of work (values built, bytes read) a read may do on the request's own thread:
/// about a millisecond. A query of few steps can still be heavy (an `NGram` or `Repeat`
/// of a long string, a page of large documents); past this it stops — before the
/// function about to do the work, which announces it (`Eval::will_build`) — and runs
/// again on the long pool.
const INLINE_WORK_BYTES_MAX: u64 = 1 << 20;

type ReadOutcome = Result<(tally_fql::auth::Auth, tally_fql::run::Outcome, u64), FqlError>;

/// Authenticate and evaluate a query read-only at the latest applied ts. `inline`: only
/// if a scheduler slot is free at once and the query finishes within
/// [`INLINE_STEPS_MAX`] steps and [`INLINE_WORK_BYTES_MAX`] of work (None otherwise: run it again with `inline` false, on a
/// thread that may block). The inline run never yields its slot (yielding could block
/// an async worker), which is what the step bound is for.
fn run_read(
    st: &AppState,
    secret: &str,
    jwt: Option<tally_fql::jwt::JwtLogin>,
    expr: &tally_fql::expr::Expr,
    tmo: u64,
    deadline: Instant,
    inline: bool,
) -> Option<ReadOutcome> {
    let ts = read_ts(st);
    let snap = match st.store.snapshot() {
        Ok(s) => s,
        Err(e) => return Some(Err(FqlError::new("internal server error", format!("storage: {e}")))),
    };
    let auth = match authenticate_at(st, &*snap, ts, secret, jwt) {
        Ok(a) => a,
        Err(e) => return Some(Err(e)),
    };
    let steps_full = tmo * STEPS_PER_MS;
    // Weighted fair admission by tenant (see scheduler.rs); held while evaluating.
    let sched = crate::scheduler::global();
    let (_slot, steps_max) = if inline {
        (sched.try_acquire(auth.db, auth.priority)?, steps_full.min(INLINE_STEPS_MAX))
    } else {
        // A query that waited its whole timeout for a slot is refused, not started: the
        // machine is busier than it can finish in time (see scheduler.rs).
        match sched.acquire(auth.db, auth.priority, Some(deadline)) {
            Ok(slot) => (slot, steps_full),
            Err(_) => return Some(Err(waited_past_timeout())),
        }
    };
    let work_bytes_max = if inline { INLINE_WORK_BYTES_MAX } else { u64::MAX };
    let limits = Limits { steps_max, work_bytes_max, ..Limits::default() };
    let out = tally_fql::run::evaluate(&*snap, ts, Mode::ReadOnly, auth.clone(), expr, [0; 32], limits, Some(deadline));
    if (steps_max < steps_full && out.steps > steps_max) || out.work_stopped {
        return None;
    }
    Some(Ok((auth, out, ts)))
}

/// Who sends this query, at snapshot `snap` (read ts `ts`): a JWT login, else a secret
/// (through the cache of authenticated key secrets).
fn authenticate_at(
    st: &AppState,
    snap: &dyn tally_storage::Snapshot,
    ts: u64,
    secret: &str,
    jwt: Option<tally_fql::jwt::JwtLogin>,
) -> Result<tally_fql::auth::Auth, FqlError> {
    match jwt {
        Some(login) => tally_fql::jwt::authenticate(snap, ts, login),
        None => st.auth_cache.authenticate(snap, ts, secret, &st.root_key_hash.get()),
    }
}

/// [`authenticate_at`] on the latest applied state.
fn authenticate_now(
    st: &AppState,
    secret: &str,
    jwt: Option<tally_fql::jwt::JwtLogin>,
) -> Result<tally_fql::auth::Auth, FqlError> {
    let ts = read_ts(st);
    let open = || st.store.snapshot().map_err(|e| FqlError::new("internal server error", format!("storage: {e}")));
    match jwt {
        Some(login) => tally_fql::jwt::authenticate(&*open()?, ts, login),
        // A cached key needs no snapshot.
        None => st.auth_cache.authenticate_opening(ts, secret, &st.root_key_hash.get(), || {
            open().map(tally_fql::authcache::Snap::Owned)
        }),
    }
}

fn waited_past_timeout() -> FqlError {
    FqlError::new(
        tally_fql::error::code::TIME_OUT,
        "Query timed out waiting for an evaluation slot (the server is busy with long queries); \
         retry after the time in Retry-After, or raise X-Query-Timeout.",
    )
}

fn read_ts(st: &AppState) -> u64 {
    let applied = st.applied_ts.load(Ordering::Acquire);
    if st.cluster.is_some() {
        applied
    } else {
        st.clock.read_ts(applied)
    }
}

/// Verify a JWT secret (see `crate::jwt`): the login it proves, or `unauthorized`.
async fn verify_jwt(st: &Arc<AppState>, token: &str) -> Result<tally_fql::jwt::JwtLogin, FqlError> {
    use crate::jwt::JwtError;
    let refused = |e: JwtError| {
        // The reason, never the token, and only at debug level: a flood of bad tokens
        // must not flood the log.
        tracing::debug!(reason = %e, "JWT refused");
        e.to_fql()
    };
    let jwt = crate::jwt::parse(token).map_err(refused)?;
    crate::jwt::check_times(&jwt.claims, crate::jwt::unix_now_s()).map_err(refused)?;
    let issuer = jwt.claims.get("iss").and_then(|v| v.as_str()).map(str::to_string);
    let db = tally_fql::jwt::audience_db(jwt.claims.get("aud"));
    let (Some(issuer), Some(db)) = (issuer, db) else { return Err(refused(JwtError::NoProvider)) };
    let (st2, iss2) = (st.clone(), issuer.clone());
    let found = tokio::task::spawn_blocking(move || {
        let snap = st2.store.snapshot().map_err(|e| FqlError::new("internal server error", format!("storage: {e}")))?;
        // The last applied state: a lookup needs no read ts of its own.
        tally_fql::jwt::find_provider(&*snap, st2.applied_ts.load(Ordering::Acquire), db, &iss2)
    })
    .await
    .map_err(|e| FqlError::new("internal server error", format!("JWT task failed: {e}")))??;
    let provider = found.ok_or_else(|| refused(JwtError::NoProvider))?;
    let key = st.jwks.key(&provider.jwks_uri, jwt.kid.as_deref()).await.map_err(refused)?;
    crate::jwt::verify_signature(&jwt, &key).map_err(refused)?;
    tally_fql::jwt::JwtLogin::new(db, provider.name, issuer, jwt.claims).ok_or_else(|| refused(JwtError::Malformed))
}

/// Drop a parsed query; a large one on the long-work pool (freeing a tree of a 16 MiB
/// query takes milliseconds an async thread owes to `/ping` and small queries).
fn drop_off_thread<T: Send + 'static>(v: T, large: bool) {
    if large {
        drop(crate::longpool::spawn(move || drop(v)));
    } else {
        drop(v);
    }
}

/// The record of `input` (its query from `tree` when given, else `input.q`), and for this
/// node's executor what it would decode from it (a single node's sequencer runs it in
/// this process; Raft drops it). The query's JSON tree, if any, is freed in here, on the
/// thread that built it, before the wait for the log, after which the task may resume on
/// another worker: glibc frees another thread's memory through that arena's lock, which
/// made dropping the query's JSON tree a tenth of a transfer's CPU.
fn encode_record(
    input: TxnInput,
    tree: Option<&tally_exec::record::QueryTree>,
    expr: Option<Arc<tally_fql::expr::Expr>>,
) -> Result<(Vec<u8>, Option<tally_calvin::Decoded>), tally_exec::record::RecordError> {
    use tally_exec::record as r;
    let boxed = |pre: Option<r::Predecoded>| pre.map(|p| Box::new(p) as tally_calvin::Decoded);
    match (tree, expr) {
        (Some(tree), Some(expr)) => r::encode_input_with_tree_predecoded(input, tree, expr).map(|(b, p)| (b, boxed(p))),
        (Some(tree), None) => r::encode_input_with_tree(&input, tree).map(|b| (b, None)),
        (None, Some(expr)) => r::encode_input_predecoded(input, expr).map(|(b, p)| (b, boxed(p))),
        (None, None) => {
            let bytes = r::encode_input(&input);
            drop(input);
            bytes.map(|b| (b, None))
        }
    }
}

async fn write_path(
    st: Arc<AppState>,
    query: crate::body::QueryJson,
    expr: Arc<tally_fql::expr::Expr>,
    auth: tally_fql::auth::Auth,
    tmo: u64,
    started: Instant,
    large: bool,
) -> Response {
    use rand::RngCore;
    // Secrets issued by this write come from `seed`, which is never logged; the log
    // holds only its hash (see tally_fql::secret).
    let mut seed = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut seed);
    let entropy = tally_fql::secret::entropy_for_seed(&seed);
    let tenant = tally_calvin::Tenant { id: auth.db, weight: auth.priority };
    // A large query's expression is freed on the long-work pool, and the executor parses
    // the logged query itself; a small one's travels beside the record (parse once).
    let expr = if large {
        drop_off_thread(expr, true);
        None
    } else {
        Some(expr)
    };
    // Held until the answer is in, so the expression is freed here, on the thread that
    // built it, and not by the executor, the one serial stage of the write path (5 % of
    // its time for one-transfer requests, most of it handing jemalloc memory of another
    // thread back); the executor's copy only drops a count.
    let _freed_here = expr.clone();
    let build = move || {
        let as_json =
            |r: &Option<tally_value::Ref>| r.clone().map(|r| tally_value::to_json(&tally_value::Value::Ref(r)));
        let input = TxnInput {
            q: serde_json::Value::Null,
            db: auth.db,
            role: auth.role.name().to_string(),
            entropy,
            steps_max: tmo * STEPS_PER_MS,
            identity: as_json(&auth.identity),
            token: as_json(&auth.token),
            jwt: auth.jwt.as_ref().map(|l| tally_exec::record::JwtInput {
                provider: l.provider.clone(),
                issuer: l.issuer.clone(),
                claims: l.claims.clone(),
            }),
        };
        let q = match query {
            crate::body::QueryJson::Tree(q) => q,
            // Written as the body was parsed, when nothing in it can need redacting (the
            // same bytes as from its JSON tree, docs/record.md).
            crate::body::QueryJson::Encoded(tree) => {
                return encode_record(input, Some(&tree), expr).map_err(|e| e.to_string())
            }
            // A parsed body is valid JSON.
            crate::body::QueryJson::Text(text) => match tally_value::parse_json_unbounded(&text) {
                Ok(q) => q,
                Err(e) => return Err(format!("the query is not JSON: {e}")),
            },
        };
        // Literal passwords never reach the log: only their digests do, tagged for this
        // input alone. This is the only place inputs are built (a cluster member builds
        // them here too, then forwards the bytes to the leader).
        let mut input = TxnInput { q, ..input };
        // The expression parsed from the body is the logged query's unless a password
        // was replaced: then the executor parses the logged query itself.
        let expr = expr.filter(|_| tally_fql::secret::redact_passwords(&mut input.q, &entropy) == 0);
        encode_record(input, None, expr).map_err(|e| e.to_string())
    };
    // A large query's redaction walk, encoding and freeing cost milliseconds: on the
    // long-work pool, so they do not stall the async threads (issue 13 item 4).
    let encoded = if large {
        match crate::longpool::spawn(build).await {
            Ok(b) => b,
            Err(e) => {
                return error_response(&FqlError::new("internal server error", format!("input task failed: {e}")), 0)
            }
        }
    } else {
        build()
    };
    let (bytes, decoded) = match encoded {
        Ok(b) => b,
        Err(e) => return error_response(&bad_request(format!("cannot encode transaction: {e}")), 0),
    };
    // An input too large for its ledger record is refused before it is logged; the
    // executor applies the same rule (with the writes counted) to everything logged.
    if let Err(e) = tally_exec::record::check_record(bytes.len(), 0) {
        return error_response(&e, 0);
    }
    // Batches are composed fairly across tenant databases, weighted by priority (on a
    // single node and on a cluster's leader alike): `tenant` above.
    // One seam to "logged and applied": the local log's sequencer, or Raft.
    let seq = st.sequencer.lock().ok().and_then(|s| s.clone());
    let path: &dyn WritePath = match (&st.cluster, &seq) {
        (Some(c), _) => &*c.node,
        (None, Some(seq)) => seq,
        (None, None) => {
            return error_response(
                &FqlError::new("unavailable", "The node is shutting down; retry on another node."),
                0,
            )
        }
    };
    let submitted = match decoded {
        Some(d) => path.submit_decoded(tenant, bytes, d),
        None => path.submit(tenant, bytes),
    };
    match submitted.await {
        Ok(out) => output_response(out, started, seed).await,
        Err(WriteError::Overloaded) => error_response(&overloaded(), 0),
        Err(e @ (WriteError::Unavailable(_) | WriteError::Ambiguous(_))) => {
            error_response(&FqlError::new("unavailable", e.to_string()), 0)
        }
    }
}

/// The answer to a write the fair queue pushed out or refused (single node or leader).
pub(crate) fn overloaded() -> FqlError {
    FqlError::new("unavailable", "Too many transactions are queued; retry shortly.")
}

async fn output_response(out: Vec<u8>, started: Instant, seed: [u8; 32]) -> Response {
    // Decoding, revealing secrets and encoding again cost about the answer's size: a
    // large answer does it off the async threads.
    let large = out.len() > crate::body::INLINE_BYTES_MAX;
    let finish = move || {
        let mut out: TxnOutput = tally_exec::record::decode_output(&out)
            .map_err(|e| FqlError::new("internal server error", format!("bad executor output: {e}")))?;
        // The body is the JSON text the client gets; only an answer carrying new secrets
        // is parsed, to complete them.
        if !out.secrets.is_empty() {
            let mut body: serde_json::Value = tally_value::parse_json_unbounded(&out.body)
                .map_err(|e| FqlError::new("internal server error", format!("bad executor answer: {e}")))?;
            tally_fql::secret::reveal(&mut body, &seed, &out.secrets);
            out.body = serde_json::to_vec(&body)
                .map_err(|e| FqlError::new("internal server error", format!("cannot encode the answer: {e}")))?;
        }
        let body = std::mem::take(&mut out.body);
        Ok::<_, FqlError>((out, body))
    };
    let done = if large {
        crate::longpool::spawn(finish)
            .await
            .unwrap_or_else(|e| Err(FqlError::new("internal server error", format!("answer task failed: {e}"))))
    } else {
        finish()
    };
    match done {
        Ok((out, body)) => {
            // An error answer is small: read its code back for the metrics.
            let code = (out.status >= 400).then(|| {
                serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_string))
            });
            let mut r = respond_bytes(out.status, body, out.ts, started, out.steps, out.bytes_read, out.bytes_written);
            if let Some(code) = code {
                r.extensions_mut().insert(crate::metrics::ErrorCode(code.unwrap_or_else(|| "unknown".into())));
            }
            r
        }
        Err(e) => error_response(&e, 0),
    }
}

fn respond_bytes(
    status: u16,
    body: Vec<u8>,
    ts: u64,
    started: Instant,
    steps: u64,
    read: u64,
    written: u64,
) -> Response {
    respond_body(status, Body::from(body), ts, started, steps, read, written)
}

fn respond_body(status: u16, body: Body, ts: u64, started: Instant, steps: u64, read: u64, written: u64) -> Response {
    use axum::http::header::{HeaderName, CONTENT_TYPE};
    // Names and constant values made once, at compile time: building them from strings
    // on every answer was a few percent of a write's time on the request threads.
    const TXN_TIME: HeaderName = HeaderName::from_static("x-txn-time");
    const QUERY_TIME: HeaderName = HeaderName::from_static("x-query-time");
    const COMPUTE_OPS: HeaderName = HeaderName::from_static("x-compute-ops");
    const BYTE_READ_OPS: HeaderName = HeaderName::from_static("x-byte-read-ops");
    const BYTE_WRITE_OPS: HeaderName = HeaderName::from_static("x-byte-write-ops");
    const TXN_RETRIES: HeaderName = HeaderName::from_static("x-txn-retries");
    const BUILD: HeaderName = HeaderName::from_static("x-faunadb-build");
    const JSON: HeaderValue = HeaderValue::from_static("application/json");
    const ZERO: HeaderValue = HeaderValue::from_static("0");
    const VERSION: HeaderValue = HeaderValue::from_static(env!("CARGO_PKG_VERSION"));
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    // The headers below, traceparent and CORS's three.
    h.reserve(12);
    h.insert(CONTENT_TYPE, JSON);
    h.insert(TXN_TIME, HeaderValue::from(ts));
    h.insert(QUERY_TIME, HeaderValue::from(started.elapsed().as_millis() as u64));
    h.insert(COMPUTE_OPS, HeaderValue::from(steps / 50 + 1));
    h.insert(BYTE_READ_OPS, HeaderValue::from(read.div_ceil(4096)));
    h.insert(BYTE_WRITE_OPS, HeaderValue::from(written.div_ceil(1024)));
    h.insert(TXN_RETRIES, ZERO);
    h.insert(BUILD, VERSION);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_keeps_a_valid_trace_and_starts_a_span() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("traceparent", HeaderValue::from_str(v).unwrap());
            h
        };
        let parts = |v: HeaderValue| v.to_str().unwrap().split('-').map(str::to_string).collect::<Vec<_>>();
        let given = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
        let a = parts(traceparent(&with(given)));
        let b = parts(traceparent(&with(given)));
        assert_eq!(a[..2], ["00".to_string(), "4bf92f3577b34da6a3ce929d0e0e4736".to_string()]);
        assert_eq!(a[3], "01");
        assert_eq!(a[2].len(), 16);
        assert_ne!(a[2], "00f067aa0ba902b7", "a new span");
        assert_ne!(a[2], b[2]);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-0f067aa0ba902b7-01",
        ] {
            let p = parts(traceparent(&with(bad)));
            assert_eq!(p.len(), 4, "{bad}");
            assert_ne!(p[1], "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}: a fresh trace");
            assert!(p[1].len() == 32 && p[1].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert_eq!(p[3], "00");
        }
        let fresh = parts(traceparent(&HeaderMap::new()));
        assert_eq!((fresh[0].as_str(), fresh[1].len(), fresh[2].len(), fresh[3].as_str()), ("00", 32, 16, "00"));
    }

    /// The CORS headers a query's answer gets are computed once ([`cors_answer_headers`]):
    /// that is right only while the policy adds the same headers whatever the request.
    #[test]
    fn cors_answer_headers_do_not_depend_on_the_request() {
        let layer = cors();
        let once = cors_answer_headers(&layer);
        assert_eq!(once.get("access-control-allow-origin").map(|v| v.as_bytes()), Some(&b"*"[..]));
        assert_eq!(once.get("access-control-expose-headers").map(|v| v.as_bytes()), Some(&b"*"[..]));
        assert!(once.get("vary").is_some());
        let req = |method: Method, path: &str, headers: &[(&str, &str)]| {
            let mut r = axum::http::Request::builder().method(method).uri(path);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.body(Body::empty()).expect("a request")
        };
        for r in [
            req(Method::POST, "/", &[("origin", "https://app.example")]),
            req(Method::POST, "/linearized", &[("origin", "null"), ("cookie", "a=b")]),
            req(Method::POST, "/?x=1", &[("origin", "https://other.example"), ("access-control-request-headers", "x")]),
            req(Method::POST, "/", &[("access-control-request-private-network", "true")]),
            req(Method::GET, "/ping", &[("origin", "https://app.example")]),
        ] {
            assert_eq!(cors_headers_for(&layer, r), once);
        }
    }

    fn with_auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(v).unwrap());
        h
    }

    fn basic(user_and_password: &str) -> HeaderMap {
        use base64::Engine;
        with_auth(&format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_and_password)))
    }

    #[test]
    fn secrets_are_read_whole() {
        assert_eq!(secret_of(&with_auth("Bearer S:child:client")).as_deref(), Some("S:child:client"));
        assert_eq!(secret_of(&basic("S:child:client:")).as_deref(), Some("S:child:client"));
        assert_eq!(secret_of(&basic("S:")).as_deref(), Some("S"));
        assert_eq!(secret_of(&basic("S")).as_deref(), Some("S"));
        // A password is never a secret's tail: refused, not cut to a broader secret.
        assert_eq!(secret_of(&basic("S:child:client")), None);
        assert_eq!(secret_of(&basic("S:pw")), None);
        assert_eq!(secret_of(&with_auth("Basic !!!")), None);
        assert_eq!(secret_of(&HeaderMap::new()), None);
    }
}
