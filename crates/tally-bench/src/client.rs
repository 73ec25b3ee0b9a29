//! A minimal FQL v4 HTTP client: one keep-alive HTTP/1.1 connection per simulated
//! client, `POST /` with the JSON AST and `Authorization: Bearer <secret>`, as the
//! Python driver and browsers do, over TLS when the server serves https. Only loopback
//! addresses are accepted.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// Where the benchmark sends its queries: a loopback address, over TLS trusting a CA
/// when `tls` is set. Copy, so every simulated client takes its own; the TLS settings are
/// made once per run and live as long as the process.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub tls: Option<&'static Arc<rustls::ClientConfig>>,
    /// The host name the endpoint was given by (the `Host` header and the name its TLS
    /// certificate must carry); `None`: the address itself.
    pub name: Option<&'static str>,
}

impl Endpoint {
    pub fn plain(addr: SocketAddr) -> Endpoint {
        Endpoint { addr, tls: None, name: None }
    }

    /// https to `addr`, trusting the CA certificates (PEM) in `ca`; HTTP/1.1 by ALPN.
    pub fn https(addr: SocketAddr, ca: &Path) -> anyhow::Result<Endpoint> {
        Ok(Endpoint { addr, tls: Some(tls_config(Some(ca))?), name: None })
    }

    /// Any server, as the operator tools (`tally shell`, `backup`, `export`, `import`,
    /// `demo`) reach it: `http://HOST[:PORT]` or `https://HOST[:PORT]` (ports 80 and 443
    /// by default; a bare `HOST:PORT` is http), the host a name or an address. Over https
    /// the server's certificate must chain to `ca` (PEM) when given, else to the public
    /// web PKI roots, and carry the host's name. Resolved once, here.
    pub fn remote(url: &str, ca: Option<&Path>) -> anyhow::Result<Endpoint> {
        let (tls, rest) = match url.split_once("://") {
            Some(("http", rest)) => (false, rest),
            Some(("https", rest)) => (true, rest),
            Some((scheme, _)) => bail!("endpoint {url:?}: expected http:// or https://, not {scheme}://"),
            None => (false, url),
        };
        let hostport = rest.split('/').next().unwrap_or_default();
        if hostport.is_empty() {
            bail!("endpoint {url:?}: expected http://HOST:PORT or https://HOST:PORT");
        }
        let (host, port) = match hostport.rsplit_once(':') {
            // `[::1]:8443`, `host:8443`; a bare IPv6 address has more than one colon.
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                let port = p.parse::<u16>().with_context(|| format!("endpoint {url:?}: port {p:?} is not a number"))?;
                (h, port)
            }
            _ => (hostport, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if ca.is_some() && !tls {
            bail!("endpoint {url:?}: --ca is for https:// endpoints");
        }
        use std::net::ToSocketAddrs;
        let addr = (host, port)
            .to_socket_addrs()
            .with_context(|| format!("endpoint {url:?}: cannot resolve {host:?}"))?
            .next()
            .with_context(|| format!("endpoint {url:?}: {host:?} has no address"))?;
        let name = match host.parse::<std::net::IpAddr>() {
            Ok(_) => None,
            Err(_) => Some(&*Box::leak(host.to_string().into_boxed_str())),
        };
        let tls = if tls { Some(tls_config(ca)?) } else { None };
        Ok(Endpoint { addr, tls, name })
    }

    /// What the `Host` header says.
    pub fn host_header(&self) -> String {
        match self.name {
            Some(n) => format!("{n}:{}", self.addr.port()),
            None => self.addr.to_string(),
        }
    }

    /// A new HTTP/1.1 connection (TLS handshake included).
    pub async fn open(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(self.addr).await.with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let Some(tls) = self.tls else { return handshake(TokioIo::new(stream)).await };
        let name = match self.name {
            Some(n) => rustls::pki_types::ServerName::try_from(n.to_string())
                .with_context(|| format!("{n:?} is not a valid TLS server name"))?,
            None => rustls::pki_types::ServerName::IpAddress(self.addr.ip().into()),
        };
        let s = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, stream)
            .await
            .with_context(|| format!("TLS handshake with {}", self.host_header()))?;
        handshake(TokioIo::new(s)).await
    }
}

/// A TLS client setting (HTTP/1.1 by ALPN) trusting the CA certificates (PEM) in `ca`, or
/// the public web PKI roots; made once per process and kept for its life.
fn tls_config(ca: Option<&Path>) -> anyhow::Result<&'static Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    let roots = match ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls::pki_types::CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("reading {}", ca.display()))?
            {
                roots.add(c.with_context(|| format!("reading {}", ca.display()))?)?;
            }
            if roots.is_empty() {
                bail!("{}: no certificate in it", ca.display());
            }
            roots
        }
        None => rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Box::leak(Box::new(Arc::new(cfg))))
}

async fn handshake<T>(io: T) -> anyhow::Result<SendRequest<Full<Bytes>>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Parse `http://127.0.0.1:8443` or `https://…` (or `127.0.0.1:8443`) into a loopback address.
pub fn parse_endpoint(s: &str) -> anyhow::Result<SocketAddr> {
    let hostport = s.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/');
    let addr: SocketAddr = hostport
        .replace("localhost", "127.0.0.1")
        .parse()
        .with_context(|| format!("endpoint {s:?}: expected http://127.0.0.1:PORT"))?;
    if !addr.ip().is_loopback() {
        bail!("endpoint {s:?}: the benchmark only drives servers on loopback addresses");
    }
    Ok(addr)
}

/// What one query answered.
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).context("response is not JSON")
    }

    /// The `resource` of a 200 answer, or an error naming the FQL error.
    pub fn resource(&self) -> anyhow::Result<Value> {
        let mut j = self.json()?;
        if self.status == 200 {
            return Ok(j["resource"].take());
        }
        bail!("query failed with HTTP {}: {}", self.status, j["errors"])
    }

    /// The FQL error code of a failed answer (`transaction aborted`, ...).
    pub fn error_code(&self) -> Option<String> {
        let j = self.json().ok()?;
        j["errors"][0]["code"].as_str().map(str::to_string)
    }
}

pub struct Conn {
    ep: Endpoint,
    auth: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub async fn connect(ep: Endpoint, secret: &str) -> anyhow::Result<Conn> {
        let mut c = Conn { ep, auth: format!("Bearer {secret}"), sender: None };
        c.reconnect().await?;
        Ok(c)
    }

    async fn reconnect(&mut self) -> anyhow::Result<()> {
        self.sender = Some(self.ep.open().await?);
        Ok(())
    }

    /// Send one query body; reconnects once if the server closed the idle connection.
    pub async fn query(&mut self, body: Bytes) -> anyhow::Result<Reply> {
        for attempt in 0..2 {
            if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
                self.reconnect().await?;
            }
            let Some(sender) = self.sender.as_mut() else { bail!("not connected") };
            sender.ready().await.ok();
            let req = Request::post("/")
                .header("host", self.ep.host_header())
                .header("authorization", &self.auth)
                .header("content-type", "application/json")
                .header("x-faunadb-api-version", "4")
                .body(Full::new(body.clone()))?;
            match sender.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.into_body().collect().await?.to_bytes();
                    return Ok(Reply { status, body });
                }
                Err(e) if attempt == 0 && (e.is_closed() || e.is_canceled()) => self.sender = None,
                Err(e) => return Err(e.into()),
            }
        }
        bail!("the connection to {} keeps closing", self.ep.host_header())
    }

    /// `GET path` with this connection's secret (a fresh connection: large answers).
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Reply> {
        self.reconnect().await?;
        let Some(sender) = self.sender.as_mut() else { bail!("not connected") };
        let req = Request::get(path)
            .header("host", self.ep.host_header())
            .header("authorization", &self.auth)
            .body(Full::new(Bytes::new()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply { status, body })
    }

    /// `GET path`, writing a 200 answer's body to `out` as it arrives (a large body is
    /// never held whole); any other answer is returned whole, with nothing written.
    /// Returns the reply (with the body of a refusal) and the bytes written.
    pub async fn get_to(&mut self, path: &str, out: &mut dyn std::io::Write) -> anyhow::Result<(Reply, u64)> {
        self.reconnect().await?;
        let Some(sender) = self.sender.as_mut() else { bail!("not connected") };
        let req = Request::get(path)
            .header("host", self.ep.host_header())
            .header("authorization", &self.auth)
            .body(Full::new(Bytes::new()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if status != 200 {
            let body = body.collect().await?.to_bytes();
            return Ok((Reply { status, body }, 0));
        }
        let mut written = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                out.write_all(&data)?;
                written += data.len() as u64;
            }
        }
        Ok((Reply { status, body: Bytes::new() }, written))
    }

    pub async fn query_json(&mut self, q: &Value) -> anyhow::Result<Reply> {
        self.query(Bytes::from(serde_json::to_vec(q)?)).await
    }
}

/// `GET /ping` until the server answers or `tries` run out (100 ms apart).
pub async fn wait_ready(ep: Endpoint, tries: u32) -> anyhow::Result<()> {
    for _ in 0..tries {
        if let Ok(mut sender) = ep.open().await {
            let req = Request::get("/ping?scope=node").header("host", ep.host_header()).body(Full::default())?;
            if let Ok(r) = sender.send_request(req).await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    bail!("no server answered /ping on {}", ep.addr)
}
