//! Mutual TLS between members (`--peer-cert`, `--peer-key`, `--peer-ca`).
//!
//! Identity: member N's certificate carries the DNS subject alternative name
//! `member-N.tally.invalid` (see [`member_name`]; `.invalid` is reserved by RFC 6761, so
//! the name can never resolve: it names a member, not a host). Every member holds its own
//! key and a certificate signed by the cluster CA; no secret is shared.
//!
//! - Accepting (the peer port, served with its bounds by `crate::peer_port`): the
//!   handshake, within the port's header timeout, requires a client certificate that chains
//!   to the cluster CA and is within its validity period; the member id it names is then
//!   handed to the peer API (in [`PEER_MEMBER_HEADER`], set here and never taken from the
//!   client), which admits only ids in the Raft membership and checks the sender a Raft
//!   message claims (see `crate::peer`). Refusals are logged with the reason, at most
//!   once per [`REFUSAL_LOG_EVERY`] per reason.
//! - Connecting: the server must present a certificate from the same CA that names the
//!   target member id, so a member listening on another's address is refused too.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

/// Set by the peer port from the verified client certificate: the sender's member id.
pub const PEER_MEMBER_HEADER: &str = "x-tally-peer-member";
/// The same refusal reason is logged at most this often (a refused peer retries often).
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// The DNS name that identifies member `id` in its certificate.
pub fn member_name(id: u64) -> String {
    format!("member-{id}.tally.invalid")
}

/// The member id of a [`member_name`], if `name` is one.
pub fn member_id_of_name(name: &str) -> Option<u64> {
    let id = name.strip_prefix("member-")?.strip_suffix(".tally.invalid")?;
    // Canonical decimal only, so one id has one name.
    (!id.starts_with('0') || id == "0").then_some(())?;
    id.parse().ok()
}

/// The member id a certificate names: exactly one distinct [`member_name`] among its
/// DNS names, else None. Only meaningful for a certificate the handshake verified.
pub fn cert_member_id(cert: &CertificateDer<'_>) -> Option<u64> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    let mut ids: Vec<u64> = ee.valid_dns_names().filter_map(member_id_of_name).collect();
    ids.dedup();
    match ids.as_slice() {
        [id] => Some(*id),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PeerTlsError {
    #[error("reading {0}: {1}")]
    Read(PathBuf, String),
    #[error("{0} holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)")]
    Empty(PathBuf),
    #[error("the peer certificate {path} is not for member {id}: it must carry the DNS name {name}")]
    NotThisMember { path: PathBuf, id: u64, name: String },
    #[error("peer TLS configuration: {0}")]
    Config(String),
}

/// The files of `--peer-cert`, `--peer-key` and `--peer-ca`.
#[derive(Clone, Debug)]
pub struct PeerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// One member's TLS configurations for accepting and connecting.
#[derive(Clone)]
pub struct PeerTls {
    pub id: u64,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerTls(member {})", self.id)
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PeerTlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| PeerTlsError::Read(path.to_path_buf(), e.to_string()))?;
    if certs.is_empty() {
        return Err(PeerTlsError::Empty(path.to_path_buf()));
    }
    Ok(certs)
}

fn config_err(e: impl fmt::Display) -> PeerTlsError {
    PeerTlsError::Config(e.to_string())
}

impl PeerTls {
    /// Load member `id`'s files; refuses a certificate that does not name `id`.
    pub fn load(files: &PeerTlsFiles, id: u64) -> Result<PeerTls, PeerTlsError> {
        let certs = read_certs(&files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .map_err(|e| PeerTlsError::Read(files.key.clone(), e.to_string()))?;
        if cert_member_id(&certs[0]) != Some(id) {
            let (path, name) = (files.cert.clone(), member_name(id));
            return Err(PeerTlsError::NotThisMember { path, id, name });
        }
        let mut roots = rustls::RootCertStore::empty();
        for ca in read_certs(&files.ca)? {
            roots.add(ca).map_err(|e| PeerTlsError::Read(files.ca.clone(), e.to_string()))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(config_err)?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(config_err)?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(config_err)?;
        Ok(PeerTls { id, server: Arc::new(server), client: Arc::new(client) })
    }

    /// A connector that speaks TLS to member `target` and accepts only its certificate.
    pub fn connector(&self, target: u64) -> Result<PeerConnector, PeerTlsError> {
        let name = ServerName::try_from(member_name(target)).map_err(config_err)?;
        Ok(PeerConnector {
            http: plain_connector(),
            tls: Some((tokio_rustls::TlsConnector::from(self.client.clone()), name)),
        })
    }
}

fn plain_connector() -> HttpConnector {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(Duration::from_secs(2)));
    conn
}

/// Connects to a peer port, in the clear or over TLS to one member.
#[derive(Clone)]
pub struct PeerConnector {
    http: HttpConnector,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl PeerConnector {
    pub fn plain() -> PeerConnector {
        PeerConnector { http: plain_connector(), tls: None }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for PeerConnector {
    type Response = PeerStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<PeerStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tcp = self.http.call(uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = tcp.await?;
            let Some((conn, name)) = tls else { return Ok(PeerStream::Plain(tcp)) };
            let s = conn.connect(name, tcp.into_inner()).await?;
            Ok(PeerStream::Tls(TokioIo::new(s)))
        })
    }
}

/// A connection to a peer port.
#[allow(clippy::large_enum_variant)] // one per pooled connection; boxing buys nothing
pub enum PeerStream {
    Plain(TokioIo<TcpStream>),
    Tls(TokioIo<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection for PeerStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

macro_rules! both {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            PeerStream::Plain($s) => $e,
            PeerStream::Tls($s) => $e,
        }
    };
}

impl hyper::rt::Read for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        both!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl hyper::rt::Write for PeerStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        both!(self, s => Pin::new(s).poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        both!(self, s => Pin::new(s).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        both!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// Logs each refusal reason at most once per [`REFUSAL_LOG_EVERY`].
#[derive(Default)]
pub struct RefusalLog {
    last: Mutex<BTreeMap<String, Instant>>,
}

/// Distinct reasons remembered at most (a flood of new ones is not remembered, only logged).
const REFUSAL_REASONS_MAX: usize = 1024;

impl RefusalLog {
    pub fn refuse(&self, why: &str) {
        let now = Instant::now();
        let Ok(mut last) = self.last.lock() else { return };
        if last.get(why).is_some_and(|t| now.duration_since(*t) < REFUSAL_LOG_EVERY) {
            return;
        }
        if last.len() >= REFUSAL_REASONS_MAX {
            last.retain(|_, t| now.duration_since(*t) < REFUSAL_LOG_EVERY);
        }
        if last.len() < REFUSAL_REASONS_MAX {
            last.insert(why.to_string(), now);
        }
        tracing::warn!("refused a peer: {why}");
    }
}

/// Why a handshake failed, in an operator's words where rustls gives the reason.
fn handshake_refusal(e: &std::io::Error) -> String {
    use rustls::CertificateError as C;
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else { return e.to_string() };
    let why = match err {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) | rustls::Error::InvalidCertificate(C::BadSignature) => {
            "its certificate is not signed by the cluster CA (--peer-ca)".to_string()
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "its certificate has expired".to_string()
        }
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "its certificate is not valid yet".to_string()
        }
        rustls::Error::NoCertificatesPresented => "it presented no certificate (mutual TLS is required)".to_string(),
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            "it did not speak TLS (this peer port takes mutual TLS only)".to_string()
        }
        other => other.to_string(),
    };
    format!("{why} ({err})")
}

/// The accepting side of mutual TLS on the peer port (`crate::peer_port` serves what it
/// accepts, with the port's bounds).
#[derive(Clone)]
pub struct PeerAcceptor {
    acceptor: tokio_rustls::TlsAcceptor,
    refusals: Arc<RefusalLog>,
}

/// A peer connection after its handshake.
pub type PeerServerStream = tokio_rustls::server::TlsStream<TcpStream>;

impl PeerAcceptor {
    pub fn new(tls: &PeerTls) -> PeerAcceptor {
        PeerAcceptor {
            acceptor: tokio_rustls::TlsAcceptor::from(tls.server.clone()),
            refusals: Arc::new(RefusalLog::default()),
        }
    }

    /// The handshake, within `timeout`, and the member id the client certificate names;
    /// `None` (the refusal logged) when either fails.
    pub async fn accept(&self, tcp: TcpStream, addr: SocketAddr, timeout: Duration) -> Option<(PeerServerStream, u64)> {
        let stream = match tokio::time::timeout(timeout, self.acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.refusals.refuse(&format!("a connection from {}: {}", addr.ip(), handshake_refusal(&e)));
                return None;
            }
            Err(_) => return None,
        };
        let id = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(cert_member_id);
        let Some(id) = id else {
            let why = format!(
                "a connection from {}: its certificate names no member (one DNS name member-N.tally.invalid)",
                addr.ip()
            );
            self.refusals.refuse(&why);
            return None;
        };
        Some((stream, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_round_trip() {
        for id in [0, 1, 42, u64::MAX] {
            assert_eq!(member_id_of_name(&member_name(id)), Some(id));
        }
        for bad in [
            "member-01.tally.invalid",
            "member-.tally.invalid",
            "member-1.tally",
            "x-1.tally.invalid",
            "member-1x.tally.invalid",
        ] {
            assert_eq!(member_id_of_name(bad), None, "{bad}");
        }
    }
}
