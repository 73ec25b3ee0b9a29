//! The shell's FQL v4 client: `POST /` over one keep-alive HTTP/1.1 connection (hyper, as
//! tally-bench uses), the secret as a Bearer token, `X-Last-Seen-Txn` carried from answer
//! to answer so a script reads its own writes, as the drivers do.

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value as Json;
use tokio::net::TcpStream;

/// Largest answer the shell reads (the server's own answer limit).
const ANSWER_BYTES_MAX: usize = 64 << 20;
/// Time to connect before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What one query answered.
pub enum Answer {
    /// The `resource` of a 200 answer.
    Ok(Json),
    /// The `errors` of a refused query, with its HTTP status.
    Err(u16, Json),
    /// A body that could not be read as JSON, as text.
    Raw(u16, String),
}

pub struct Client {
    /// `host:port` to connect to.
    authority: String,
    auth: String,
    /// A query's own deadline, sent as `X-Query-Timeout`; the shell waits 10 s more.
    timeout: Duration,
    last_txn: Option<u64>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// `http://host:port` (path ignored) to `host:port`.
pub fn authority(endpoint: &str) -> anyhow::Result<String> {
    let rest = match endpoint.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => bail!(
            "endpoint {endpoint:?}: only http:// is supported (tally serve speaks plain HTTP; \
             reach a TLS front end through a local tunnel), not {scheme}://"
        ),
        None => endpoint,
    };
    let hostport = rest.split('/').next().unwrap_or_default();
    if hostport.is_empty() {
        bail!("endpoint {endpoint:?}: expected http://HOST:PORT");
    }
    Ok(if hostport.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    })
}

impl Client {
    pub fn new(endpoint: &str, secret: &str, timeout: Duration) -> anyhow::Result<Client> {
        Ok(Client {
            authority: authority(endpoint)?,
            auth: format!("Bearer {secret}"),
            timeout,
            last_txn: None,
            sender: None,
        })
    }

    async fn connect(&mut self) -> anyhow::Result<()> {
        let connecting = TcpStream::connect(&self.authority);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .with_context(|| format!("connecting to {}: timed out", self.authority))?
            .with_context(|| format!("connecting to {} (is `tally serve` running there?)", self.authority))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    /// Drops the connection (after an interrupted query its answer would come next).
    pub fn disconnect(&mut self) {
        self.sender = None;
    }

    /// Sends one query; reconnects once if the server had closed the idle connection.
    pub async fn query(&mut self, expr: &Json) -> anyhow::Result<Answer> {
        let body = Bytes::from(serde_json::to_vec(expr)?);
        for attempt in 0..2 {
            if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
                self.connect().await?;
            }
            let Some(sender) = self.sender.as_mut() else { bail!("not connected") };
            sender.ready().await.ok();
            let mut req = Request::post("/")
                .header("host", &self.authority)
                .header("authorization", &self.auth)
                .header("content-type", "application/json")
                .header("x-faunadb-api-version", "4")
                .header("x-query-timeout", self.timeout.as_millis().to_string());
            if let Some(t) = self.last_txn {
                req = req.header("x-last-seen-txn", t.to_string());
            }
            let req = req.body(Full::new(body.clone()))?;
            let wait = self.timeout + Duration::from_secs(10);
            let resp = match tokio::time::timeout(wait, sender.send_request(req)).await {
                Err(_) => {
                    self.sender = None;
                    bail!("no answer from {} within {} s", self.authority, wait.as_secs())
                }
                Ok(Ok(resp)) => resp,
                Ok(Err(e)) if attempt == 0 && (e.is_closed() || e.is_canceled() || e.is_incomplete_message()) => {
                    self.sender = None;
                    continue;
                }
                Ok(Err(e)) => return Err(e).context(format!("sending the query to {}", self.authority)),
            };
            return self.answer(resp).await;
        }
        bail!("the connection to {} keeps closing", self.authority)
    }

    async fn answer(&mut self, resp: hyper::Response<hyper::body::Incoming>) -> anyhow::Result<Answer> {
        let status = resp.status().as_u16();
        let txn = resp.headers().get("x-txn-time").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        if let Some(t) = txn {
            self.last_txn = Some(self.last_txn.map_or(t, |l: u64| l.max(t)));
        }
        let body = Limited::new(resp.into_body(), ANSWER_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
            .to_bytes();
        // serde_json's default depth limit (128) keeps parsing off the stack's edge; a
        // deeper answer is shown as the server sent it.
        let mut json: Json = match serde_json::from_slice(&body) {
            Ok(j) => j,
            Err(e) => return Ok(Answer::Raw(status, format!("({e}) {}", String::from_utf8_lossy(&body)))),
        };
        if status == 200 {
            return Ok(Answer::Ok(json["resource"].take()));
        }
        Ok(Answer::Err(status, json["errors"].take()))
    }
}
