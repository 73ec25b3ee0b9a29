//! The client port's accept thread: takes every connection off the listening socket,
//! answers health probes (`GET /ping`, `GET /health`) itself, and hands every other
//! connection to a connection thread (`crate::lanes`; HTTP/2 with prior knowledge to the
//! server's runtime) once it has sent its first bytes.
//!
//! Why a thread of its own: on the runtime's threads (one per core) the accept loop and a
//! probe's connection queued behind everything else the runtime had to do. Under 80,000
//! concurrent HTTP/2 writes a fresh `/ping` connection waited 2–4 s to be accepted, read
//! and answered; under a flood of 25,000 sockets the accept loop fell behind the client,
//! the kernel's accept queue filled, and the probe's SYN waited for its 1 s retransmit
//! (docs/benchmarks.md, "Health probes off the runtime"). This thread does little per
//! connection (accept, wait for its first bytes, look at them), so it keeps up with
//! floods, and a load balancer's probe is answered here without waiting for the runtime.
//!
//! - A connection counts against `connections_max` from its accept. One over the cap is
//!   only ever a health probe or closed: if its first bytes are already there when it is
//!   accepted and are not a probe, it is closed at once; otherwise it is held (at most
//!   [`OVER_CAP_PROBES_MAX`] such at once, [`OVER_CAP_SNIFF`] each for its first bytes,
//!   [`OVER_CAP_SERVE`] for a probe's answer) and a newcomer past that bound takes the
//!   place of the oldest one not yet known to be a probe (else of the oldest; each looked
//!   at again, without waiting, before it is pushed out). So a flood
//!   of silent sockets over the cap cannot keep a probe out: a probe sends its request as
//!   soon as it connects and is answered within a millisecond or so, while a silent
//!   socket is pushed out by the ones after it. (Before, each over-cap socket kept its
//!   place for the whole 250 ms and a newcomer that found the places full was closed: a
//!   flood of 19,000 sockets made 11 of 135 probes fail, docs/benchmarks.md.)
//! - A connection that sends nothing within `header_read_timeout` is closed here: idle
//!   floods never reach the runtime.
//! - A probe is one HTTP/1.1 request on a fresh connection (as load balancers send them),
//!   answered by the same router, without keep-alive: nothing else ever runs here. A probe
//!   over TLS (`--tls-cert`) cannot be recognised before the handshake, so it is served
//!   by the runtime like any request.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::conn::ConnLimits;
use crate::inflight::InFlight;
use crate::tls::ClientTls;

/// Over-cap connections held at once, looked at for a health probe or a probe being
/// answered (see the module doc); within the descriptors kept free below the cap.
pub const OVER_CAP_PROBES_MAX: usize = 64;
/// How long an over-cap connection may take to show it is a health probe.
pub const OVER_CAP_SNIFF: Duration = Duration::from_millis(250);
/// How long an over-cap probe may take to send the rest of its request and take its answer.
pub const OVER_CAP_SERVE: Duration = Duration::from_secs(1);
/// The request lines answered on this thread (HTTP/1.x, path then a space or a query).
const PROBE_LINES: [&[u8]; 4] = [b"GET /ping ", b"GET /ping?", b"GET /health ", b"GET /health?"];
/// How an HTTP/2 connection with prior knowledge starts (its preface's first bytes).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2";
/// Bytes looked at: the longest probe line (and the start of HTTP/2's preface).
const SNIFF_BYTES: usize = 12;
/// Between two looks at a connection whose first bytes are only part of a probe line.
const SNIFF_RETRY: Duration = Duration::from_millis(2);

/// What the accept thread needs to serve or hand off a connection.
pub struct Ctx {
    pub app: crate::http::App,
    pub limits: Arc<ConnLimits>,
    pub inflight: Arc<InFlight>,
    pub tls: Option<Arc<ClientTls>>,
    /// One per open connection (`connections_max`).
    pub permits: Arc<Semaphore>,
    /// Set when the server stops; connections finish what they were doing.
    pub stop: watch::Receiver<bool>,
    /// The threads connections other than probes are served on (`crate::lanes`).
    pub lanes: Arc<crate::lanes::Lanes>,
}

/// Start the accept thread on `listener`; it returns once `ctx.stop` is set (dropping
/// the listener, which closes the port, and any connection it still holds).
pub fn spawn(listener: std::net::TcpListener, ctx: Ctx) -> std::io::Result<std::thread::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("tally-accept".into()).spawn(move || {
        raise_priority();
        rt.block_on(async move {
            match TcpListener::from_std(listener) {
                Ok(l) => accept_loop(l, Arc::new(ctx)).await,
                Err(e) => tracing::error!(error = %e, "the client port cannot be served"),
            }
        })
    })
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>) {
    let over_cap = Arc::new(OverCap::default());
    let mut stop = ctx.stop.clone();
    loop {
        let stream = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        match ctx.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    let deadline = Instant::now() + ctx.limits.header_read_timeout;
                    route(stream, deadline, permit, &ctx).await;
                });
            }
            // Over the cap, and the probe check is plain HTTP only: close at once (the
            // client sees a reset and may retry).
            Err(_) if ctx.tls.is_some() => drop(stream),
            Err(_) => {
                let fd = stream.as_raw_fd();
                let mut head = [0u8; SNIFF_BYTES];
                let n = peek_fd(fd, &mut head);
                let probe = match probe_line(&head[..n]) {
                    _ if n == 0 => false,
                    Some(true) => true,
                    None => false,
                    Some(false) => continue, // not a probe: closed here (dropped)
                };
                let id = over_cap.next_id();
                let pool = over_cap.clone();
                let task = tokio::spawn(async move {
                    let probe = probe || sniff(&stream, Instant::now() + OVER_CAP_SNIFF, true).await == First::Probe;
                    if probe && pool.mark_probe(id) {
                        let _ = tokio::time::timeout(OVER_CAP_SERVE, serve_probe(stream, &ctx)).await;
                    }
                    pool.remove(id);
                });
                // This thread's runtime runs one task at a time and the task above cannot
                // start before this loop next waits: it is held before it can remove itself.
                over_cap.hold(id, task.abort_handle(), probe, fd);
            }
        }
    }
}

/// The over-cap connections being held (see the module doc): oldest first.
#[derive(Default)]
struct OverCap {
    next: std::sync::atomic::AtomicU64,
    held: Mutex<VecDeque<Held>>,
}

struct Held {
    id: u64,
    task: AbortHandle,
    /// Its first bytes are a probe's.
    probe: bool,
    /// Its socket: open while it is held (the task removes it, with no wait between, when
    /// it drops its stream; one pushed out is removed before its task is stopped).
    fd: RawFd,
}

impl OverCap {
    fn next_id(&self) -> u64 {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Hold a new connection; past [`OVER_CAP_PROBES_MAX`] close the oldest one not known
    /// to be a probe, or the oldest if all are. A held one whose task has not looked yet is
    /// looked at here: a probe whose request came in after its accept (its task not yet
    /// woken, as when this loop takes a burst of connections at once) is kept.
    fn hold(&self, id: u64, task: AbortHandle, probe: bool, fd: RawFd) {
        let Ok(mut held) = self.held.lock() else { return task.abort() };
        if held.len() >= OVER_CAP_PROBES_MAX {
            let mut out = 0;
            for (i, h) in held.iter_mut().enumerate() {
                if !h.probe {
                    let mut head = [0u8; SNIFF_BYTES];
                    let n = peek_fd(h.fd, &mut head);
                    if n == 0 || probe_line(&head[..n]) == Some(false) {
                        out = i;
                        break;
                    }
                    h.probe = true;
                }
            }
            if let Some(out) = held.remove(out) {
                // Dropping the task drops (closes) its connection.
                out.task.abort();
            }
        }
        held.push_back(Held { id, task, probe, fd });
    }

    /// Mark `id` a probe; false if it was pushed out meanwhile.
    fn mark_probe(&self, id: u64) -> bool {
        let Ok(mut held) = self.held.lock() else { return false };
        match held.iter_mut().find(|h| h.id == id) {
            Some(h) => {
                h.probe = true;
                true
            }
            None => false,
        }
    }

    fn remove(&self, id: u64) {
        if let Ok(mut held) = self.held.lock() {
            held.retain(|h| h.id != id);
        }
    }
}

/// The bytes already received on socket `fd`, without waiting (0 if none).
fn peek_fd(fd: RawFd, buf: &mut [u8]) -> usize {
    // SAFETY: recv writes at most buf.len() bytes into buf, which outlives the call; `fd`
    // is a socket we hold open (see `Held::fd`; on any other descriptor recv only fails).
    // MSG_PEEK leaves the bytes for the reader, MSG_DONTWAIT returns at once.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    usize::try_from(n).unwrap_or(0)
}

/// Niceness this thread asks for (0 is normal, -20 the highest priority): when the OS
/// allows it (root, `CAP_SYS_NICE`, or an `RLIMIT_NICE` that permits it), the accept
/// thread is woken ahead of the server's busy threads (async workers, executor, store
/// flusher) instead of queueing behind them for a core. A packet capture of the issue's
/// attacks put the server's whole share of a slow probe in that wait (request to answer
/// up to 31 ms, and 115–154 ms with a CPU hog beside it, while this thread's longest run
/// was 2 ms). Without the privilege it stays at 0, as before. Its work per connection is
/// bounded and small (accept, a peek, a probe's answer), so it cannot starve the rest.
const ACCEPT_NICE: i32 = -5;

#[cfg(target_os = "linux")]
fn raise_priority() {
    // SAFETY: setpriority and gettid take plain integers and touch no memory of ours; on
    // Linux PRIO_PROCESS with a thread id sets that thread's niceness only.
    let ok = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, ACCEPT_NICE) == 0 };
    tracing::debug!(nice = if ok { ACCEPT_NICE } else { 0 }, "accept thread priority");
}

#[cfg(not(target_os = "linux"))]
fn raise_priority() {}

/// What a connection's first bytes say.
#[derive(Debug, PartialEq)]
enum First {
    Probe,
    Other,
    /// HTTP/2 with prior knowledge (its connection preface).
    H2,
    /// A TLS handshake.
    Tls,
    /// Nothing before the deadline, or the client closed.
    Silent,
}

/// Serve a probe here, hand anything else to the runtime (`permit`: its slot under the
/// connection cap).
async fn route(stream: TcpStream, deadline: Instant, permit: OwnedSemaphorePermit, ctx: &Ctx) {
    match sniff(&stream, deadline, ctx.tls.is_none()).await {
        First::Silent => {}
        First::Probe => serve_probe(stream, ctx).await,
        First::Tls if ctx.tls.is_none() => crate::tls::warn_tls_on_plain_port(&stream),
        First::H2 => hand_off(stream, permit, ctx, true),
        _ => hand_off(stream, permit, ctx, false),
    }
}

/// Wait for a connection's first bytes; on a plain port, read enough of them to tell a
/// probe (`look`).
async fn sniff(stream: &TcpStream, deadline: Instant, look: bool) -> First {
    let mut buf = [0u8; SNIFF_BYTES];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return First::Silent,
        };
        if buf[0] == crate::tls::TLS_HANDSHAKE_RECORD {
            return First::Tls;
        }
        if !look {
            return First::Other;
        }
        match probe_line(&buf[..n]) {
            Some(true) => return First::Probe,
            Some(false) if buf[..n].starts_with(H2_PREFACE) => return First::H2,
            Some(false) => return First::Other,
            // Part of a probe line so far: peek returns at once while the bytes are
            // there, so look again a little later.
            None => {
                if Instant::now() + SNIFF_RETRY >= deadline {
                    return First::Other;
                }
                tokio::time::sleep(SNIFF_RETRY).await;
            }
        }
    }
}

/// Whether `head` starts with a probe's request line: None while it is only a prefix of one.
fn probe_line(head: &[u8]) -> Option<bool> {
    if PROBE_LINES.iter().any(|l| head.starts_with(l)) {
        Some(true)
    } else if PROBE_LINES.iter().any(|l| l.starts_with(head)) {
        None
    } else {
        Some(false)
    }
}

/// One HTTP/1.1 request, answered by the router on this thread, then the connection closes.
async fn serve_probe(stream: TcpStream, ctx: &Ctx) {
    let app = ctx.app.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(app.call(req.map(Body::new)).await) }
    });
    let timeout = ctx.limits.header_read_timeout;
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), svc);
    // The answer is small: a client that does not take it within the head's bound is gone.
    let _ = tokio::time::timeout(timeout, conn).await;
}

/// Move the connection off this thread's reactor and serve it: on the connection thread
/// with the fewest, or (`h2`: HTTP/2 known from its first bytes) on the server's runtime
/// with its requests (see `crate::lanes`). `permit` is held until it closes.
fn hand_off(stream: TcpStream, permit: OwnedSemaphorePermit, ctx: &Ctx, h2: bool) {
    let Ok(stream) = stream.into_std() else { return };
    let (app, limits, inflight, stop, tls) =
        (ctx.app.clone(), ctx.limits.clone(), ctx.inflight.clone(), ctx.stop.clone(), ctx.tls.clone());
    let server = ctx.lanes.server().clone();
    let (runtime, placed) = if h2 {
        (server.clone(), None)
    } else {
        let (lane, placed) = ctx.lanes.place();
        (lane.clone(), Some(placed))
    };
    runtime.spawn(async move {
        let _placed = placed;
        let Ok(stream) = TcpStream::from_std(stream) else { return };
        match tls {
            Some(tls) => {
                if let Some(s) = tls.accept(stream, limits.header_read_timeout).await {
                    crate::conn::serve_one(s, app, &limits, inflight, stop, server).await;
                }
            }
            None => crate::conn::serve_one(stream, app, &limits, inflight, stop, server).await,
        }
        drop(permit);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_lines_are_told_from_their_first_bytes() {
        assert_eq!(probe_line(b"GET /ping HTTP/1.1\r\n"), Some(true));
        assert_eq!(probe_line(b"GET /ping?scope=node HTTP/1.1"), Some(true));
        assert_eq!(probe_line(b"GET /health HTTP/1.1"), Some(true));
        assert_eq!(probe_line(b"GET /pi"), None);
        assert_eq!(probe_line(b"G"), None);
        assert_eq!(probe_line(b"GET /pingx HTTP/1.1"), Some(false));
        assert_eq!(probe_line(b"POST / HTTP/1.1\r\n"), Some(false));
        assert_eq!(probe_line(b"PRI * HTTP/2.0\r\n"), Some(false));
        assert_eq!(probe_line(b"GET /ledger/head"), Some(false));
    }

    #[tokio::test]
    async fn first_bytes_tell_http2_with_prior_knowledge_from_http1() {
        use tokio::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for (first, want) in [
            (&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], First::H2),
            (b"POST / HTTP/1.1\r\nHost: x\r\n\r\n", First::Other),
            (b"GET /ping HTTP/1.1\r\n\r\n", First::Probe),
        ] {
            let mut client = TcpStream::connect(addr).await.unwrap();
            client.write_all(first).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            assert_eq!(sniff(&server, deadline, true).await, want, "{:?}", String::from_utf8_lossy(first));
        }
    }

    #[tokio::test]
    async fn over_cap_newcomers_push_out_the_oldest_not_known_to_be_a_probe() {
        use std::io::Write;
        let pool = OverCap::default();
        let tasks: Vec<_> =
            (0..OVER_CAP_PROBES_MAX as u64 + 3).map(|_| tokio::spawn(std::future::pending::<()>())).collect();
        // Connection 2 sent a probe's request line after its accept, unseen by its task.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.write_all(b"GET /ping HTTP/1.1\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        // No socket (-1): peeks nothing, as a silent one.
        let silent = -1;
        // The first two are probes (one seen at accept, one marked once its bytes came).
        pool.hold(0, tasks[0].abort_handle(), true, silent);
        pool.hold(1, tasks[1].abort_handle(), false, silent);
        assert!(pool.mark_probe(1));
        pool.hold(2, tasks[2].abort_handle(), false, server.as_raw_fd());
        for id in 3..OVER_CAP_PROBES_MAX as u64 {
            pool.hold(id, tasks[id as usize].abort_handle(), false, silent);
        }
        let n = OVER_CAP_PROBES_MAX as u64;
        pool.hold(n, tasks[n as usize].abort_handle(), false, silent);
        pool.hold(n + 1, tasks[n as usize + 1].abort_handle(), false, silent);
        tokio::task::yield_now().await;
        // The two oldest silent ones went; the probes, and the one with a probe's bytes, stay.
        assert!(tasks[3].is_finished() && tasks[4].is_finished());
        assert!(!tasks[0].is_finished() && !tasks[1].is_finished() && !tasks[2].is_finished());
        assert!(!tasks[5].is_finished());
        assert!(!pool.mark_probe(3), "a connection pushed out is not served");
        // When every one held is a probe, the oldest goes.
        let held: Vec<u64> = pool.held.lock().unwrap().iter().map(|h| h.id).collect();
        for id in &held {
            assert!(pool.mark_probe(*id));
        }
        pool.hold(n + 2, tasks[n as usize + 2].abort_handle(), false, silent);
        tokio::task::yield_now().await;
        assert!(tasks[0].is_finished());
        assert!(!tasks[1].is_finished());
        pool.remove(1);
        assert_eq!(pool.held.lock().unwrap().len(), OVER_CAP_PROBES_MAX - 1);
        drop(server);
    }
}
