//! A minimal FQL v4 HTTP client: one keep-alive HTTP/1.1 connection per simulated
//! client, `POST /` with the JSON AST and `Authorization: Bearer <secret>`, as the
//! Python driver and browsers do. Only loopback addresses are accepted.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// Parse `http://127.0.0.1:8443` (or `127.0.0.1:8443`) into a loopback address.
pub fn parse_endpoint(s: &str) -> anyhow::Result<SocketAddr> {
    let hostport = s.trim_start_matches("http://").trim_end_matches('/');
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
    addr: SocketAddr,
    auth: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr, secret: &str) -> anyhow::Result<Conn> {
        let mut c = Conn { addr, auth: format!("Bearer {secret}"), sender: None };
        c.reconnect().await?;
        Ok(c)
    }

    async fn reconnect(&mut self) -> anyhow::Result<()> {
        let stream = TcpStream::connect(self.addr).await.with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let io = TokioIo::new(stream);
        let (sender, conn) = http1::handshake(io).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
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
                .header("host", self.addr.to_string())
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
        bail!("the connection to {} keeps closing", self.addr)
    }

    /// `GET path` with this connection's secret (a fresh connection: large answers).
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Reply> {
        self.reconnect().await?;
        let Some(sender) = self.sender.as_mut() else { bail!("not connected") };
        let req = Request::get(path)
            .header("host", self.addr.to_string())
            .header("authorization", &self.auth)
            .body(Full::new(Bytes::new()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply { status, body })
    }

    pub async fn query_json(&mut self, q: &Value) -> anyhow::Result<Reply> {
        self.query(Bytes::from(serde_json::to_vec(q)?)).await
    }
}

/// `GET /ping` until the server answers or `tries` run out (100 ms apart).
pub async fn wait_ready(addr: SocketAddr, tries: u32) -> anyhow::Result<()> {
    for _ in 0..tries {
        if let Ok(stream) = TcpStream::connect(addr).await {
            if let Ok((mut sender, conn)) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                let req = Request::get("/ping?scope=node").header("host", addr.to_string()).body(Full::default())?;
                if let Ok(r) = sender.send_request(req).await {
                    if r.status().is_success() {
                        return Ok(());
                    }
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    bail!("no server answered /ping on {addr}")
}
