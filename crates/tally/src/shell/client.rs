//! The shell's FQL v4 client: `POST /` over one keep-alive HTTP/1.1 connection, plain or
//! TLS (hyper and rustls through tally-bench's [`Endpoint`]), the secret as a Bearer token, `X-Last-Seen-Txn` carried from answer
//! to answer so a script reads its own writes, as the drivers do.

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use std::path::Path;

use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use serde_json::Value as Json;
use tally_bench::client::Endpoint;

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
    /// Where the server is (http or https, resolved once).
    endpoint: Endpoint,
    /// `host:port`, for messages.
    authority: String,
    auth: String,
    /// A query's own deadline, sent as `X-Query-Timeout`; the shell waits 10 s more.
    timeout: Duration,
    last_txn: Option<u64>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    /// `endpoint`: `http://HOST:PORT` or `https://HOST:PORT` (see [`Endpoint::remote`]);
    /// `ca`: the CA (PEM) to trust for https instead of the public web PKI.
    pub fn new(endpoint: &str, ca: Option<&Path>, secret: &str, timeout: Duration) -> anyhow::Result<Client> {
        let endpoint = Endpoint::remote(endpoint, ca)?;
        Ok(Client {
            authority: endpoint.host_header(),
            endpoint,
            auth: format!("Bearer {secret}"),
            timeout,
            last_txn: None,
            sender: None,
        })
    }

    async fn connect(&mut self) -> anyhow::Result<()> {
        let connecting = self.endpoint.open();
        let sender = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .with_context(|| format!("connecting to {}: timed out", self.authority))?
            .map_err(|e| {
                // The hint fits a refused connection, not a certificate the shell refused.
                if format!("{e:#}").contains("TLS handshake") {
                    e
                } else {
                    e.context(format!("connecting to {} (is `tally serve` running there?)", self.authority))
                }
            })?;
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
