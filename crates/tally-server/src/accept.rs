//! The client port's accept thread: takes every connection off the listening socket,
//! answers health probes (`GET /ping`, `GET /health`) itself, and hands every other
//! connection to the server's runtime once it has sent its first bytes.
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
//! - A connection counts against `connections_max` from its accept; one over the cap is
//!   closed at once, unless fewer than [`OVER_CAP_PROBES_MAX`] such are being looked at:
//!   then it is closed as soon as its first bytes are not a health probe, or after
//!   [`OVER_CAP_SNIFF`] without any (so a probe is answered even while a flood holds
//!   every slot).
//! - A connection that sends nothing within `header_read_timeout` is closed here: idle
//!   floods never reach the runtime.
//! - A probe is one HTTP/1.1 request on a fresh connection (as load balancers send them),
//!   answered by the same router, without keep-alive: nothing else ever runs here. A probe
//!   over TLS (`--tls-cert`) cannot be recognised before the handshake, so it is served
//!   by the runtime like any request.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::conn::ConnLimits;
use crate::inflight::InFlight;
use crate::tls::ClientTls;

/// Over-cap connections looked at for a health probe at once (see the module doc).
pub const OVER_CAP_PROBES_MAX: usize = 64;
/// How long an over-cap connection may take to show it is a health probe.
pub const OVER_CAP_SNIFF: Duration = Duration::from_millis(250);
/// The request lines answered on this thread (HTTP/1.x, path then a space or a query).
const PROBE_LINES: [&[u8]; 4] = [b"GET /ping ", b"GET /ping?", b"GET /health ", b"GET /health?"];
/// Bytes looked at: the longest probe line.
const SNIFF_BYTES: usize = 12;
/// Between two looks at a connection whose first bytes are only part of a probe line.
const SNIFF_RETRY: Duration = Duration::from_millis(2);

/// What the accept thread needs to serve or hand off a connection.
pub struct Ctx {
    pub app: Router,
    pub limits: Arc<ConnLimits>,
    pub inflight: Arc<InFlight>,
    pub tls: Option<Arc<ClientTls>>,
    /// One per open connection (`connections_max`).
    pub permits: Arc<Semaphore>,
    /// Set when the server stops; connections finish what they were doing.
    pub stop: watch::Receiver<bool>,
    /// The server's runtime, where connections other than probes are served.
    pub runtime: Handle,
}

/// Start the accept thread on `listener`; it returns once `ctx.stop` is set (dropping
/// the listener, which closes the port, and any connection it still holds).
pub fn spawn(listener: std::net::TcpListener, ctx: Ctx) -> std::io::Result<std::thread::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("tally-accept".into()).spawn(move || {
        rt.block_on(async move {
            match TcpListener::from_std(listener) {
                Ok(l) => accept_loop(l, Arc::new(ctx)).await,
                Err(e) => tracing::error!(error = %e, "the client port cannot be served"),
            }
        })
    })
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>) {
    let over_cap = Arc::new(Semaphore::new(OVER_CAP_PROBES_MAX));
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
                    route(stream, deadline, Some(permit), &ctx).await;
                });
            }
            // Over the cap, and the probe check is plain HTTP only: close at once (the
            // client sees a reset and may retry).
            Err(_) if ctx.tls.is_some() => drop(stream),
            Err(_) => match over_cap.clone().try_acquire_owned() {
                Ok(looking) => {
                    tokio::spawn(async move {
                        route(stream, Instant::now() + OVER_CAP_SNIFF, None, &ctx).await;
                        drop(looking);
                    });
                }
                Err(_) => drop(stream),
            },
        }
    }
}

/// What a connection's first bytes say.
#[derive(Debug, PartialEq)]
enum First {
    Probe,
    Other,
    /// A TLS handshake.
    Tls,
    /// Nothing before the deadline, or the client closed.
    Silent,
}

/// Serve a probe here, hand anything else to the runtime (`permit`: its slot under the
/// connection cap; None over the cap, where only a probe is served).
async fn route(stream: TcpStream, deadline: Instant, permit: Option<OwnedSemaphorePermit>, ctx: &Ctx) {
    let first = sniff(&stream, deadline, ctx.tls.is_none()).await;
    match (first, permit) {
        (First::Silent, _) => {}
        (First::Probe, _) => serve_probe(stream, ctx).await,
        (First::Tls, Some(_)) if ctx.tls.is_none() => crate::tls::warn_tls_on_plain_port(&stream),
        (_, Some(permit)) => hand_off(stream, permit, ctx),
        (_, None) => {}
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
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| app.clone().oneshot(req.map(Body::new)));
    let timeout = ctx.limits.header_read_timeout;
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), svc);
    // The answer is small: a client that does not take it within the head's bound is gone.
    let _ = tokio::time::timeout(timeout, conn).await;
}

/// Move the connection to the server's runtime (off this thread's reactor) and serve it
/// there; `permit` is held until it closes.
fn hand_off(stream: TcpStream, permit: OwnedSemaphorePermit, ctx: &Ctx) {
    let Ok(stream) = stream.into_std() else { return };
    let (app, limits, inflight, stop, tls) =
        (ctx.app.clone(), ctx.limits.clone(), ctx.inflight.clone(), ctx.stop.clone(), ctx.tls.clone());
    ctx.runtime.spawn(async move {
        let Ok(stream) = TcpStream::from_std(stream) else { return };
        match tls {
            Some(tls) => {
                if let Some(s) = tls.accept(stream, limits.header_read_timeout).await {
                    crate::conn::serve_one(s, app, &limits, inflight, stop).await;
                }
            }
            None => crate::conn::serve_one(stream, app, &limits, inflight, stop).await,
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
}
