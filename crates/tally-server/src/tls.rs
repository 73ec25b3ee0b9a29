//! TLS on the client port (`tally serve --tls-cert FILE --tls-key FILE`).
//!
//! - rustls on ring; HTTP/1.1 and HTTP/2 on one port, chosen by ALPN (`h2`, `http/1.1`;
//!   hyper also recognises the HTTP/2 preface of a client that sent no ALPN);
//! - the certificate is reloaded without a restart on SIGHUP and when either file
//!   changes (checked every [`RELOAD_POLL_DEFAULT`]): new handshakes get the new certificate,
//!   connections already open keep the session they have. A reload that fails (a file
//!   half written, a key that does not match) keeps the previous certificate and says why;
//! - a plain-HTTP request reaching the TLS port, over HTTP/1.1 or cleartext HTTP/2 (the
//!   npm driver with `scheme: 'http'`), gets a `400 bad request` FQL error saying to use
//!   https (rather than a dropped connection or a bare protocol error), and a TLS
//!   handshake reaching a plain-HTTP port is logged as such and closed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;

/// How often the certificate files are checked for changes, by default.
pub const RELOAD_POLL_DEFAULT: Duration = Duration::from_secs(1);
/// How long a plain-HTTP client on the TLS port is served its `400` before the
/// connection is closed (the connection cap bounds how many such clients there are).
const PLAIN_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Concurrent HTTP/2 streams of a cleartext client on the TLS port.
const PLAIN_H2_STREAMS_MAX: u32 = 8;
/// First byte of a TLS record carrying a handshake (a ClientHello).
pub(crate) const TLS_HANDSHAKE_RECORD: u8 = 0x16;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the certificate {0}: {1}")]
    Cert(PathBuf, String),
    #[error("reading the private key {0}: {1}")]
    Key(PathBuf, String),
    #[error("{0} holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)")]
    NoCert(PathBuf),
    #[error("the private key {key} does not belong to the certificate {cert}: {why}")]
    Mismatch { cert: PathBuf, key: PathBuf, why: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The certificate and key files of the client port.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How often to check the files for changes (None: only on SIGHUP).
    pub reload_poll: Option<Duration>,
}

/// Read a PEM certificate chain (leaf first).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert(path.to_path_buf(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(path.to_path_buf()));
    }
    Ok(certs)
}

/// Read a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key(path.to_path_buf(), e.to_string()))
}

fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| TlsError::Key(files.key.clone(), e.to_string()))?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match().map_err(|e| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        why: e.to_string(),
    })?;
    Ok(Arc::new(ck))
}

/// What identifies a version of the files: a change in either means "reload".
type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(files: &TlsFiles) -> Stamp {
    [&files.cert, &files.key]
        .iter()
        .map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
        .collect()
}

/// Hands every handshake the current certificate.
#[derive(Debug)]
struct Current {
    files: TlsFiles,
    key: RwLock<Arc<CertifiedKey>>,
    stamp: Mutex<Stamp>,
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.key.read().ok().map(|k| k.clone())
    }
}

/// The client port's TLS: an acceptor whose certificate can be swapped while serving.
pub struct ClientTls {
    acceptor: tokio_rustls::TlsAcceptor,
    current: Arc<Current>,
}

impl ClientTls {
    /// Load the files (refusing to start on any problem) and build the acceptor.
    pub fn new(files: &TlsFiles) -> Result<Arc<ClientTls>, TlsError> {
        let current =
            Arc::new(Current { key: RwLock::new(load(files)?), stamp: Mutex::new(stamp(files)), files: files.clone() });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(ClientTls { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)), current }))
    }

    /// Load the files again; on failure the previous certificate stays.
    pub fn reload(&self, why: &str) {
        *self.current.stamp.lock().unwrap_or_else(|p| p.into_inner()) = stamp(&self.current.files);
        match load(&self.current.files) {
            Ok(k) => {
                *self.current.key.write().unwrap_or_else(|p| p.into_inner()) = k;
                tracing::warn!(why, cert = %self.current.files.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => tracing::error!(why, error = %e, "TLS certificate not reloaded; keeping the previous one"),
        }
    }

    fn changed(&self) -> bool {
        let now = stamp(&self.current.files);
        *self.current.stamp.lock().unwrap_or_else(|p| p.into_inner()) != now
    }

    /// Reload on SIGHUP and whenever the files change, for the life of the process.
    pub fn spawn_reloader(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let poll = me.current.files.reload_poll;
            let mut tick = tokio::time::interval(poll.unwrap_or(RELOAD_POLL_DEFAULT));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let hup_recv = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hup_recv = std::future::pending::<Option<()>>();
                tokio::select! {
                    _ = hup_recv => me.reload("SIGHUP"),
                    _ = tick.tick(), if poll.is_some() => if me.changed() { me.reload("the certificate files changed") },
                }
            }
        });
    }

    /// Complete the handshake within `timeout`; None (connection closed) on a failed
    /// handshake or a plain-HTTP client, which is told to use https first.
    pub async fn accept(
        &self,
        stream: TcpStream,
        timeout: Duration,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let peer = stream.peer_addr().ok();
        let first = tokio::time::timeout(timeout, first_byte(&stream)).await.ok()??;
        if first != TLS_HANDSHAKE_RECORD {
            refuse_plain(stream).await;
            return None;
        }
        match tokio::time::timeout(timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                tracing::debug!(?peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => None,
        }
    }
}

async fn first_byte(stream: &TcpStream) -> Option<u8> {
    let mut b = [0u8; 1];
    match stream.peek(&mut b).await {
        Ok(1) => Some(b[0]),
        _ => None,
    }
}

/// Answer plain HTTP on the TLS port with what to change, in the protocol the client
/// spoke: HTTP/1.1, or cleartext HTTP/2 with prior knowledge (h2c), which is how the npm
/// driver reaches an `http://` endpoint. Every request on the connection gets the same
/// `400 bad request` FQL error, which the drivers raise with its description; the
/// connection is closed after one HTTP/1.1 answer, or after [`PLAIN_ANSWER_TIMEOUT`].
async fn refuse_plain(stream: TcpStream) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let svc = hyper::service::service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
        let mut resp =
            hyper::Response::new(http_body_util::Full::new(axum::body::Bytes::from_static(USE_HTTPS_BODY.as_bytes())));
        *resp.status_mut() = hyper::StatusCode::BAD_REQUEST;
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json;charset=utf-8"),
        );
        Ok::<_, std::convert::Infallible>(resp)
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(PLAIN_ANSWER_TIMEOUT).keep_alive(false);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(PLAIN_H2_STREAMS_MAX);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    let _ = tokio::time::timeout(PLAIN_ANSWER_TIMEOUT, conn).await;
}

/// The answer to plain HTTP on the TLS port (an FQL error, so drivers show its text).
const USE_HTTPS_BODY: &str = r#"{"errors":[{"code":"bad request","description":"This port serves HTTPS (TLS) only; connect with https:// (the drivers' scheme: 'https')."}]}"#;

/// On a plain-HTTP port, a client that opened with a TLS handshake: no HTTP answer can
/// reach it, so that is logged instead (the accept thread then closes the connection).
pub(crate) fn warn_tls_on_plain_port(stream: &TcpStream) {
    let peer = stream.peer_addr().ok();
    tracing::warn!(
        ?peer,
        "a client tried TLS (https) on this plain-HTTP port; start with --tls-cert/--tls-key to serve https"
    );
}

/// Plain HTTP beyond loopback sends secrets in the clear: say so at start.
pub fn warn_if_plain_public(listen: SocketAddr, tls: bool) {
    if !tls && !listen.ip().is_loopback() {
        let msg = format!(
            "serving plain HTTP on {listen}, beyond loopback: keys and data cross the network unencrypted. \
             Use --tls-cert/--tls-key to serve https."
        );
        tracing::warn!("{msg}");
        eprintln!("tally: warning: {msg}");
    }
}

/// The client port's TLS for `serve` (None: plain HTTP, with the warning above when the
/// address is beyond loopback); its reloader runs from here on.
pub fn client_port(files: Option<&TlsFiles>, listen: SocketAddr) -> Result<Option<Arc<ClientTls>>, TlsError> {
    warn_if_plain_public(listen, files.is_some());
    let Some(files) = files else { return Ok(None) };
    let tls = ClientTls::new(files)?;
    tls.spawn_reloader();
    Ok(Some(tls))
}
