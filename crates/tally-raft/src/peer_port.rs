//! The peer port's listener, with bounds like the client port's (tally-server conn.rs),
//! the same in the clear and under mutual TLS (`crate::tls`).
//!
//! - at most [`PeerPortLimits::connections_max`] open connections (a follower's Raft
//!   client opens one per concurrent request to a peer, so this is generous); past it a
//!   new connection is closed at once;
//! - under mutual TLS, the handshake must end within `header_read_timeout`, and a
//!   connection whose certificate names no member is closed before any request;
//! - a request head must arrive within `header_read_timeout`;
//! - a connection with no request in progress for `idle_timeout` is closed;
//! - a request is admitted (cluster token, isolation: [`crate::peer::admit`]) from its
//!   head, *before* its body is read, so only a member can make this node hold a body
//!   (up to [`crate::peer::PEER_BODY_BYTES_MAX`]; a snapshot is streamed to a file);
//! - a body that sends nothing for `body_stall_timeout` is dropped (a stalled upload).
//!
//! Serves HTTP/1.1, which is what the members' Raft client speaks (`crate::network`).
//! The limits are `tally serve`'s `--peer-connections-max`, `--peer-header-read-timeout-ms`,
//! `--peer-idle-timeout-ms` and `--peer-body-stall-timeout-ms`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::node::RaftNode;

/// Bounds of the peer port; see the module doc.
#[derive(Clone, Debug)]
pub struct PeerPortLimits {
    pub connections_max: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_stall_timeout: Duration,
}

impl Default for PeerPortLimits {
    fn default() -> PeerPortLimits {
        PeerPortLimits {
            connections_max: 4_096,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            body_stall_timeout: Duration::from_secs(30),
        }
    }
}

/// Serve the peer routes on `listener` with `limits` until the task is dropped: mutual
/// TLS only when the node has peer TLS (`RaftConfig::peer_tls`), else in the clear.
pub async fn serve(listener: TcpListener, router: Router, node: Arc<RaftNode>, limits: PeerPortLimits) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.connections_max.max(1)));
    let limits = Arc::new(limits);
    let tls = node.cfg.peer_tls.as_ref().map(|t| crate::tls::PeerAcceptor::new(t));
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                tracing::warn!(error = %e, "peer accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!("peer connection over the cap; closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (router, node, limits, tls) = (router.clone(), node.clone(), limits.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_one(TokioIo::new(stream), None, router, node, &limits).await,
                Some(tls) => {
                    if let Some((stream, member)) = tls.accept(stream, addr, limits.header_read_timeout).await {
                        serve_one(TokioIo::new(stream), Some(member), router, node, &limits).await;
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Requests in progress on one connection, and when the last one started or ended.
struct Activity {
    started: Instant,
    active: AtomicUsize,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(last.elapsed())
    }
}

/// Counts a request as active until its response is built.
struct ActiveGuard(Arc<Activity>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Serve one connection. `member`: the member id its verified certificate names (mutual
/// TLS); it replaces whatever [`crate::tls::PEER_MEMBER_HEADER`] a request carries, and
/// in the clear that header is removed (only the TLS port may set it).
async fn serve_one<I>(io: I, member: Option<u64>, router: Router, node: Arc<RaftNode>, limits: &PeerPortLimits)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let activity =
        Arc::new(Activity { started: Instant::now(), active: AtomicUsize::new(0), last_ms: AtomicU64::new(0) });
    let stall = limits.body_stall_timeout;
    let svc = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let (router, node, activity) = (router.clone(), node.clone(), activity.clone());
            async move {
                activity.active.fetch_add(1, Ordering::Relaxed);
                activity.touch();
                match member {
                    Some(id) => {
                        let v = hyper::header::HeaderValue::from(id);
                        req.headers_mut().insert(crate::tls::PEER_MEMBER_HEADER, v);
                    }
                    None => {
                        req.headers_mut().remove(crate::tls::PEER_MEMBER_HEADER);
                    }
                }
                let _active = ActiveGuard(activity);
                if let Err(refused) = crate::peer::admit(&node, req.headers()) {
                    return Ok::<_, Infallible>(refused);
                }
                let req = req.map(|b| Body::new(StallGuard::new(b, stall)));
                Ok(router.oneshot(req).await.unwrap_or_else(|e: Infallible| match e {}))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut tick =
        tokio::time::interval((limits.idle_timeout / 4).clamp(Duration::from_millis(20), Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tick.tick() => {
                if activity.idle_for().is_some_and(|d| d > limits.idle_timeout) {
                    return; // dropping the connection closes the socket
                }
            }
        }
    }
}

/// A request body that fails when no frame arrives for its stall timeout.
struct StallGuard {
    inner: Incoming,
    stall: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl StallGuard {
    fn new(inner: Incoming, stall: Duration) -> StallGuard {
        StallGuard { inner, stall, timer: Box::pin(tokio::time::sleep(stall)) }
    }
}

impl HttpBody for StallGuard {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let me = &mut *self;
        match Pin::new(&mut me.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                let deadline = tokio::time::Instant::now() + me.stall;
                me.timer.as_mut().reset(deadline);
                Poll::Ready(r.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match me.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err("the peer request body stalled".into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
