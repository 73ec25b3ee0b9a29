//! Serving client connections with bounds (HTTP/1.1 and HTTP/2 on one port, over TLS
//! with `--tls-cert`, see `crate::tls`, else in the clear).
//!
//! - at most `connections_max` open connections; past it a new connection is closed at
//!   once (but for a health probe, see `crate::accept`, whose thread accepts them all),
//!   so file descriptors never run out (the default keeps headroom below
//!   `RLIMIT_NOFILE`, whose soft limit is raised to the hard one at start);
//! - a connection with no request in progress and no answer being sent for
//!   `idle_timeout` is closed (keep-alive idleness, a silent socket, and headers that
//!   trickle in: hyper's own header timeout covers the head of a request too);
//! - an answer not fully taken by its client within `answer_send_timeout` closes the
//!   connection: answers are sent in 64 KiB frames, so a client that does not read
//!   (HTTP/1.1) or keeps its flow-control window shut (HTTP/2) is noticed, and what
//!   its answers hold is freed;
//! - request bodies have their own deadline (`body_read_timeout`, applied where the body
//!   is read, in http.rs); HTTP/2 keeps hyper's per-connection limits (concurrent
//!   streams, reset-stream flood protection).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::Request;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::http::App;
use crate::inflight::{InFlight, Reserved};
use crate::tls::ClientTls;

/// Bounds on client connections; see the module doc. All are `tally serve` flags.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    /// 0: derive from the file-descriptor limit ([`default_connections_max`]).
    pub connections_max: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub answer_send_timeout: Duration,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_streams_max: u32,
    /// FQL requests in progress server-wide (`crate::inflight::REQUESTS_DEFAULT_MAX`);
    /// past it a request is answered `503` at once.
    pub requests_max: usize,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            connections_max: 0,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            answer_send_timeout: Duration::from_secs(60),
            h2_streams_max: 200,
            requests_max: crate::inflight::REQUESTS_DEFAULT_MAX,
        }
    }
}

/// File descriptors kept free for everything that is not a client connection: the
/// state store and log files, peer connections, JWKS fetches, the runtime's own.
const FD_HEADROOM: u64 = 256;
/// Largest default connection cap whatever the descriptor limit.
const CONNECTIONS_DEFAULT_MAX: u64 = 50_000;
/// Frame size answers are sent in (see the module doc).
const ANSWER_FRAME_BYTES: usize = 64 * 1024;

/// Connections the kernel may hold completed but not yet accepted (the kernel clamps it
/// to `net.core.somaxconn`, 4,096 on current Linux). Tokio's `TcpListener::bind` asks
/// for 1,024: a burst of connections (2,000 slowloris heads at once, or sockets opened
/// faster than a loaded accept loop takes them) filled that queue, new SYNs were
/// dropped, and `/ping`'s connection waited for the client's 1 s SYN retransmit
/// (worst `/ping` 1.0–2.1 s in the benchmark's connection floods).
const LISTEN_BACKLOG: u32 = 65_535;

/// Bind a client or peer listener with the deep accept queue ([`LISTEN_BACKLOG`]).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As std's and tokio's own bind: a restarted node can take its port at once.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; the soft limit after that.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit write/read only the struct passed in.
    unsafe {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let raised = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
        // rlim_t is u64 here but not on every platform.
        #[allow(clippy::unnecessary_cast)]
        let soft = r.rlim_cur as u64;
        soft
    }
}

/// The connection cap for a descriptor limit: the limit less the headroom.
pub fn default_connections_max(fd_limit: u64) -> usize {
    fd_limit.saturating_sub(FD_HEADROOM).clamp(16, CONNECTIONS_DEFAULT_MAX) as usize
}

/// Serve `app` on `listener` until `shutdown` resolves, then finish the connections'
/// requests (bounded by the idle and answer timeouts) and return. Connections are
/// accepted on a thread of their own (`crate::accept`), which answers health probes
/// itself and hands the rest to the connection threads (`crate::lanes`).
pub async fn serve(
    listener: TcpListener,
    app: App,
    limits: ConnLimits,
    inflight: Arc<InFlight>,
    tls: Option<Arc<ClientTls>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let fd_limit = raise_fd_limit();
    let max = if limits.connections_max > 0 { limits.connections_max } else { default_connections_max(fd_limit) };
    tracing::info!(connections_max = max, fd_limit, "connection limits");
    let permits = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let limits = Arc::new(limits);
    // As many connection threads as the runtime has workers (one per core).
    let lanes = Arc::new(crate::lanes::Lanes::start(tokio::runtime::Handle::current().metrics().num_workers())?);
    let ctx = crate::accept::Ctx {
        app,
        limits: limits.clone(),
        inflight,
        tls,
        permits: permits.clone(),
        stop: stop_rx,
        lanes: lanes.clone(),
    };
    let acceptor = crate::accept::spawn(listener.into_std()?, ctx)?;
    shutdown.await;
    let _ = stop_tx.send(true);
    // The port closes when the accept thread has returned.
    let _ = tokio::task::spawn_blocking(move || acceptor.join()).await;
    // Wait for the connections to finish what they were doing, within bounds.
    let grace = limits.answer_send_timeout.max(limits.idle_timeout).min(Duration::from_secs(30));
    let _ = tokio::time::timeout(grace, permits.acquire_many(max as u32)).await;
    let _ = tokio::task::spawn_blocking(move || lanes.stop()).await;
    Ok(())
}

/// Spawns HTTP/2 streams on a given runtime.
#[derive(Clone)]
struct OnRuntime(tokio::runtime::Handle);

impl<F> hyper::rt::Executor<F> for OnRuntime
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

/// What a connection's watchdog looks at.
struct ConnWatch {
    started: Instant,
    /// Requests whose handler has not answered yet.
    active: AtomicUsize,
    /// Milliseconds since `started` of the last request start or finish.
    last_ms: AtomicU64,
    /// Answers being sent: (id, when the handler answered).
    answers: Mutex<Vec<(u64, Instant)>>,
    next_id: AtomicU64,
}

impl ConnWatch {
    fn touch(&self) {
        self.last_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, limits: &ConnLimits) -> Option<&'static str> {
        let now = Instant::now();
        let answers = self.answers.lock().map(|a| a.iter().map(|(_, t)| *t).min()).unwrap_or(None);
        if answers.is_some_and(|t| now.duration_since(t) > limits.answer_send_timeout) {
            return Some("answer not read in time");
        }
        let idle_since = self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        let idle = self.active.load(Ordering::Relaxed) == 0 && answers.is_none();
        (idle && now.duration_since(idle_since) > limits.idle_timeout).then_some("idle")
    }
}

pub(crate) async fn serve_one<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    app: App,
    limits: &ConnLimits,
    inflight: Arc<InFlight>,
    mut stop: watch::Receiver<bool>,
    h2_streams_on: tokio::runtime::Handle,
) {
    let w = Arc::new(ConnWatch {
        started: Instant::now(),
        active: AtomicUsize::new(0),
        last_ms: AtomicU64::new(0),
        answers: Mutex::new(Vec::new()),
        next_id: AtomicU64::new(0),
    });
    let streams = ConnStreams::default();
    let svc = {
        let w = w.clone();
        hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let (app, w, inflight) = (app.clone(), w.clone(), inflight.clone());
            req.extensions_mut().insert(streams.clone());
            async move {
                w.active.fetch_add(1, Ordering::Relaxed);
                w.touch();
                let resp = app.call(req.map(Body::new)).await;
                let guard = if resp.extensions().get::<LongLived>().is_some() {
                    w.active.fetch_add(1, Ordering::Relaxed);
                    Guard::Long(LongGuard(w.clone()))
                } else {
                    Guard::Answer(AnswerGuard::new(&w, &inflight, resp.body().size_hint().exact().unwrap_or(0)))
                };
                w.active.fetch_sub(1, Ordering::Relaxed);
                w.touch();
                Ok::<_, Infallible>(resp.map(|b| AnswerBody { inner: b, pending: Bytes::new(), _guard: guard }))
            }
        })
    };
    // An HTTP/1.1 connection serves its requests one after another in its own task (on
    // its connection thread, `crate::lanes`); an HTTP/2 connection's requests run as
    // tasks of their own on the server's runtime, so one busy connection (a driver
    // multiplexes an application's requests onto one) still has every core.
    let mut builder = hyper_util::server::conn::auto::Builder::new(OnRuntime(h2_streams_on));
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(limits.h2_streams_max);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let shortest = limits.idle_timeout.min(limits.answer_send_timeout);
    let mut tick = tokio::time::interval((shortest / 4).clamp(Duration::from_millis(20), Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tick.tick() => {
                if let Some(why) = w.expired(limits) {
                    tracing::debug!(why, "closing connection");
                    return; // dropping the connection closes the socket and frees its answers
                }
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Put in a response's extensions by a long-lived answer (`POST /stream`): it is not
/// held to the answer-send deadline (a stream is quiet for as long as nothing changes;
/// it bounds its own unread backlog, crate::stream), and while it is open its
/// connection is not idle.
#[derive(Clone, Copy, Debug)]
pub struct LongLived;

/// The streams open on one connection (crate::stream bounds them), in every request's
/// extensions.
#[derive(Clone, Debug, Default)]
pub struct ConnStreams(pub Arc<AtomicUsize>);

/// A long-lived answer's hold on its connection: counts as a request in progress.
struct LongGuard(Arc<ConnWatch>);

impl Drop for LongGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Held for its effect on drop only.
enum Guard {
    Answer(#[allow(dead_code)] AnswerGuard),
    Long(#[allow(dead_code)] LongGuard),
}

/// Held by an answer's body while it is being sent: registers it with its connection's
/// watchdog and holds its bytes in the server's in-flight budget.
struct AnswerGuard {
    watch: Arc<ConnWatch>,
    id: u64,
    _bytes: Reserved,
}

impl AnswerGuard {
    fn new(w: &Arc<ConnWatch>, inflight: &Arc<InFlight>, bytes: u64) -> AnswerGuard {
        let id = w.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut a) = w.answers.lock() {
            a.push((id, Instant::now()));
        }
        AnswerGuard { watch: w.clone(), id, _bytes: inflight.reserve(bytes) }
    }
}

impl Drop for AnswerGuard {
    fn drop(&mut self) {
        if let Ok(mut a) = self.watch.answers.lock() {
            a.retain(|(id, _)| *id != self.id);
        }
        self.watch.touch();
    }
}

/// An answer's body, sent in frames of at most [`ANSWER_FRAME_BYTES`] so it is held
/// (and watched) until the client has taken nearly all of it.
struct AnswerBody {
    inner: Body,
    pending: Bytes,
    _guard: Guard,
}

impl HttpBody for AnswerBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let me = &mut *self;
        loop {
            if !me.pending.is_empty() {
                let n = me.pending.len().min(ANSWER_FRAME_BYTES);
                return Poll::Ready(Some(Ok(Frame::data(me.pending.split_to(n)))));
            }
            match Pin::new(&mut me.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => me.pending = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let extra = self.pending.len() as u64;
        match inner.exact() {
            Some(n) => SizeHint::with_exact(n + extra),
            None => {
                let mut h = SizeHint::new();
                h.set_lower(inner.lower() + extra);
                h
            }
        }
    }
}
