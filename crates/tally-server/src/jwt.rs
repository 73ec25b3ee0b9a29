//! JWT logins through access providers (FQL v4), on the receiving node.
//!
//! A request whose secret is a JWT (`header.payload.signature`, base64url) is verified
//! here, before evaluation: parse the token; refuse every algorithm but RS256/384/512
//! (`none` and the HMAC ones included); check `exp`/`nbf` on this node's clock; find the
//! database its `aud` names and, in it, the access provider whose `issuer` is its `iss`;
//! fetch that provider's keys (JWKS, cached per URI) and verify the signature with the
//! key its `kid` names. Any failure is `unauthorized`.
//!
//! What this learned travels on as a [`tally_fql::jwt::JwtLogin`], in the logged input of
//! a write, so the executor never sees a clock, the network or the token's signature.
//!
//! JWKS fetching is bounded: [`JWKS_FETCH_TIMEOUT`], [`JWKS_BODY_BYTES_MAX`], no
//! redirects, https only (rustls, Mozilla's roots), and only to public addresses
//! ([`addr`]: every address the host resolves to is checked and the connection goes to
//! a checked one) unless the operator allows private ones (`--jwks-allow-private`, which
//! also allows plain http, for tests and identity providers on the same network). Keys are kept
//! [`JWKS_TTL`]; an unknown `kid` refetches, at most once per [`JWKS_REFETCH_MIN`] per
//! URI, so a flood of forged tokens cannot turn into a flood of fetches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use http_body_util::BodyExt;
use hyper::body::Bytes;
use tally_fql::error::code;
use tally_fql::jwt::JwksUri;
use tally_fql::FqlError;
use tokio::io::{AsyncRead, AsyncWrite};

/// Longest JWT accepted (identity providers' tokens are a few KiB at most).
pub const JWT_BYTES_MAX: usize = 16 * 1024;
/// Deepest JSON nesting accepted in a JWT's header or claims, or in a JWKS.
pub const JWT_JSON_DEPTH_MAX: usize = tally_fql::jwt::CLAIMS_DEPTH_MAX;
/// How long fetched keys are used before they are fetched again.
pub const JWKS_TTL: Duration = Duration::from_secs(3600);
/// How long keys stay usable past their TTL while refetching them fails (the identity
/// provider is down); a successful fetch replaces them at once.
pub const JWKS_STALE_MAX: Duration = Duration::from_secs(24 * 3600);
/// Fewest time between two fetches of one URI (unknown `kid`s, failures).
pub const JWKS_REFETCH_MIN: Duration = Duration::from_secs(2);
/// Longest a fetch may take: connect, TLS, request and body.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS body accepted.
pub const JWKS_BODY_BYTES_MAX: usize = 256 * 1024;
/// Most keys read from one JWKS.
pub const JWKS_KEYS_MAX: usize = 64;
/// Most JWKS URIs cached; beyond it the least recently used is dropped.
pub const JWKS_URIS_MAX: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("the JWT is malformed")]
    Malformed,
    #[error("the JWT's algorithm is not supported (use RS256, RS384 or RS512)")]
    Algorithm,
    #[error("the JWT has expired")]
    Expired,
    #[error("the JWT is not valid yet (nbf)")]
    NotYetValid,
    #[error("no access provider has the JWT's issuer in the database its audience names")]
    NoProvider,
    #[error("no key of the access provider has the JWT's kid")]
    UnknownKey,
    #[error("the JWT's signature does not verify")]
    BadSignature,
    #[error("the access provider's keys could not be fetched: {0}")]
    Jwks(String),
}

impl JwtError {
    /// What the client gets: `unauthorized`. Problems visible in the token itself are
    /// named; the others are not, because they would tell anyone holding a token which
    /// issuers and keys a database trusts.
    pub fn to_fql(&self) -> FqlError {
        let why = match self {
            JwtError::Malformed | JwtError::Algorithm | JwtError::Expired | JwtError::NotYetValid => self.to_string(),
            _ => "no access provider accepts this JWT".to_string(),
        };
        FqlError::new(code::UNAUTHORIZED, format!("Unauthorized: {why}."))
    }
}

/// Does this secret look like a JWT? Tally's own secrets never do: they hold no `.`.
pub fn looks_like_jwt(secret: &str) -> bool {
    secret.starts_with("ey")
        && secret.bytes().filter(|b| *b == b'.').count() == 2
        && secret.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The signature algorithms accepted (v4's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Rs384,
    Rs512,
}

impl Alg {
    fn parse(s: &str) -> Option<Alg> {
        Some(match s {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
        }
    }

    /// PKCS#1 v1.5 with the matching hash; ring refuses moduli under 2048 bits.
    fn params(self) -> &'static ring::signature::RsaParameters {
        match self {
            Alg::Rs256 => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            Alg::Rs384 => &ring::signature::RSA_PKCS1_2048_8192_SHA384,
            Alg::Rs512 => &ring::signature::RSA_PKCS1_2048_8192_SHA512,
        }
    }
}

/// A parsed, not yet verified, JWT.
#[derive(Clone, Debug)]
pub struct Jwt {
    pub alg: Alg,
    pub kid: Option<String>,
    /// The payload: a JSON object.
    pub claims: serde_json::Value,
    /// `header.payload` exactly as sent: what the signature covers.
    signed: String,
    signature: Vec<u8>,
}

fn json_object(b64: &str) -> Result<serde_json::Value, JwtError> {
    let raw = URL_SAFE_NO_PAD.decode(b64).map_err(|_| JwtError::Malformed)?;
    // The workspace's serde_json recurses without a depth limit: measure first.
    if tally_value::json_depth(&raw, JWT_JSON_DEPTH_MAX) > JWT_JSON_DEPTH_MAX {
        return Err(JwtError::Malformed);
    }
    match serde_json::from_slice(&raw) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        _ => Err(JwtError::Malformed),
    }
}

/// Parse a compact JWS (RFC 7515): three base64url parts, unpadded.
pub fn parse(token: &str) -> Result<Jwt, JwtError> {
    if token.len() > JWT_BYTES_MAX {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed);
    };
    let header = json_object(h)?;
    let alg = header.get("alg").and_then(|a| a.as_str()).and_then(Alg::parse).ok_or(JwtError::Algorithm)?;
    // Extensions marked critical must be understood; Tally understands none.
    if header.get("crit").is_some() {
        return Err(JwtError::Malformed);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(serde_json::Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(JwtError::Malformed),
    };
    let claims = json_object(p)?;
    let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
    if signature.is_empty() {
        return Err(JwtError::Malformed);
    }
    Ok(Jwt { alg, kid, claims, signed: token[..h.len() + 1 + p.len()].to_string(), signature })
}

/// Check `exp` and `nbf` (NumericDate seconds, RFC 7519) against `now_s`: expired at
/// `exp`, valid from `nbf`. Both are optional, as in v4.
pub fn check_times(claims: &serde_json::Value, now_s: i64) -> Result<(), JwtError> {
    let date = |k: &str| match claims.get(k) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or(JwtError::Malformed),
    };
    let now = now_s as f64;
    if date("exp")?.is_some_and(|exp| now >= exp) {
        return Err(JwtError::Expired);
    }
    if date("nbf")?.is_some_and(|nbf| now < nbf) {
        return Err(JwtError::NotYetValid);
    }
    Ok(())
}

/// One RSA public key of a JWKS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The algorithm the key is for, when the JWKS says.
    pub alg: Option<String>,
    /// Modulus and exponent, big-endian without leading zeros.
    n: Vec<u8>,
    e: Vec<u8>,
}

/// JWKS members are base64url; some providers pad them.
const B64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The RSA signing keys of a JWKS document (RFC 7517); other keys are skipped.
pub fn parse_jwks(body: &[u8]) -> Result<Vec<Jwk>, JwtError> {
    let bad = |why: &str| JwtError::Jwks(why.to_string());
    if tally_value::json_depth(body, JWT_JSON_DEPTH_MAX) > JWT_JSON_DEPTH_MAX {
        return Err(bad("the JWKS nests too deeply"));
    }
    let doc: serde_json::Value = serde_json::from_slice(body).map_err(|_| bad("the JWKS is not JSON"))?;
    let keys = doc.get("keys").and_then(|k| k.as_array()).ok_or_else(|| bad("the JWKS has no `keys` array"))?;
    let mut out = Vec::new();
    for k in keys.iter().take(JWKS_KEYS_MAX) {
        let s = |f: &str| k.get(f).and_then(|v| v.as_str());
        if s("kty") != Some("RSA") || s("use").is_some_and(|u| u != "sig") {
            continue;
        }
        let int = |f: &str| -> Option<Vec<u8>> {
            let mut b = B64_LENIENT.decode(s(f)?).ok()?;
            let zeros = b.iter().take_while(|x| **x == 0).count();
            b.drain(..zeros);
            (!b.is_empty()).then_some(b)
        };
        let (Some(n), Some(e)) = (int("n"), int("e")) else { continue };
        out.push(Jwk { kid: s("kid").map(str::to_string), alg: s("alg").map(str::to_string), n, e });
    }
    Ok(out)
}

/// The key a token names: by `kid`, or the only key when the token names none.
pub fn find_key<'a>(keys: &'a [Jwk], kid: Option<&str>) -> Option<&'a Jwk> {
    match kid {
        Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
        None if keys.len() == 1 => keys.first(),
        None => None,
    }
}

/// Verify the token's signature with `key`.
pub fn verify_signature(jwt: &Jwt, key: &Jwk) -> Result<(), JwtError> {
    if key.alg.as_deref().is_some_and(|a| a != jwt.alg.name()) {
        return Err(JwtError::BadSignature);
    }
    let public = ring::signature::RsaPublicKeyComponents { n: &key.n, e: &key.e };
    public.verify(jwt.alg.params(), jwt.signed.as_bytes(), &jwt.signature).map_err(|_| JwtError::BadSignature)
}

/// Seconds since the Unix epoch on this node's clock.
pub fn unix_now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// What one URI's cache entry holds.
#[derive(Default)]
struct Keys {
    keys: Arc<Vec<Jwk>>,
    fetched: Option<Instant>,
    attempted: Option<Instant>,
    /// The last fetch failed (the keys, if any, are from an earlier one).
    failed: bool,
}

struct Slot {
    keys: Arc<tokio::sync::Mutex<Keys>>,
    used: Instant,
}

/// Access providers' keys, per JWKS URI. One fetch per URI at a time: concurrent
/// requests wait for it and use its result.
pub struct JwksCache {
    slots: Mutex<HashMap<String, Slot>>,
    tls: Arc<rustls::ClientConfig>,
    /// The operator's `--jwks-allow-private`: fetch from loopback, private and
    /// link-local addresses too, and over plain http.
    allow_private: bool,
    /// Fetches started (tests and metrics).
    fetches: AtomicU64,
}

impl JwksCache {
    pub fn new(allow_private: bool) -> anyhow::Result<JwksCache> {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(JwksCache {
            slots: Mutex::new(HashMap::new()),
            tls: Arc::new(tls),
            allow_private,
            fetches: AtomicU64::new(0),
        })
    }

    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn slot(&self, uri: &str) -> Arc<tokio::sync::Mutex<Keys>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if !slots.contains_key(uri) && slots.len() >= JWKS_URIS_MAX {
            if let Some(oldest) = slots.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| k.clone()) {
                slots.remove(&oldest);
            }
        }
        let slot = slots.entry(uri.to_string()).or_insert_with(|| Slot { keys: Default::default(), used: now });
        slot.used = now;
        slot.keys.clone()
    }

    /// The key `kid` of the JWKS at `uri`, fetching it when missing, older than
    /// [`JWKS_TTL`], or when `kid` is unknown (at most once per [`JWKS_REFETCH_MIN`]).
    pub async fn key(&self, uri: &str, kid: Option<&str>) -> Result<Jwk, JwtError> {
        let parsed = JwksUri::parse(uri).map_err(|why| JwtError::Jwks(why.to_string()))?;
        if !parsed.tls && !self.allow_private {
            return Err(JwtError::Jwks("http JWKS URIs are fetched only with --jwks-allow-private".into()));
        }
        let slot = self.slot(uri);
        let mut k = slot.lock().await;
        let now = Instant::now();
        let age_ok = |k: &Keys, max: Duration| k.fetched.is_some_and(|t| now.saturating_duration_since(t) < max);
        if age_ok(&k, JWKS_TTL) {
            if let Some(key) = find_key(&k.keys, kid) {
                return Ok(key.clone());
            }
        }
        let recent = k.attempted.is_some_and(|t| now.saturating_duration_since(t) < JWKS_REFETCH_MIN);
        if !recent {
            k.attempted = Some(now);
            self.fetches.fetch_add(1, Ordering::Relaxed);
            match fetch(&parsed, &self.tls, self.allow_private).await {
                Ok(keys) => {
                    k.keys = Arc::new(keys);
                    k.fetched = Some(Instant::now());
                    k.failed = false;
                }
                Err(e) => {
                    tracing::warn!(jwks_uri = uri, error = %e, "fetching an access provider's keys failed");
                    k.failed = true;
                }
            }
        }
        let usable = age_ok(&k, JWKS_TTL) || (k.failed && age_ok(&k, JWKS_STALE_MAX));
        if !usable {
            return Err(JwtError::Jwks("no keys could be fetched".into()));
        }
        find_key(&k.keys, kid).cloned().ok_or(JwtError::UnknownKey)
    }
}

async fn fetch(uri: &JwksUri, tls: &Arc<rustls::ClientConfig>, allow_private: bool) -> Result<Vec<Jwk>, JwtError> {
    let body = tokio::time::timeout(JWKS_FETCH_TIMEOUT, fetch_body(uri, tls, allow_private))
        .await
        .map_err(|_| JwtError::Jwks(format!("no answer within {} s", JWKS_FETCH_TIMEOUT.as_secs())))??;
    parse_jwks(&body)
}

async fn fetch_body(uri: &JwksUri, tls: &Arc<rustls::ClientConfig>, allow_private: bool) -> Result<Bytes, JwtError> {
    let err = |what: &str, e: &dyn std::fmt::Display| JwtError::Jwks(format!("{what}: {e}"));
    // Resolved once, every address vetted, and the connection made to a vetted address
    // (not the name again), so a changing DNS answer cannot redirect it.
    let addrs = addr::resolve_checked(&uri.host, uri.port, allow_private).await.map_err(JwtError::Jwks)?;
    let tcp = addr::connect_any(&addrs).await.map_err(|e| err("connect", &e))?;
    if !uri.tls {
        return get(tcp, uri).await;
    }
    let name = rustls::pki_types::ServerName::try_from(uri.host.clone()).map_err(|e| err("host name", &e))?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp).await.map_err(|e| err("TLS", &e))?;
    get(stream, uri).await
}

/// One HTTP/1.1 GET on a fresh connection; the answer must be 200 (no redirects).
async fn get<S>(io: S, uri: &JwksUri) -> Result<Bytes, JwtError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let err = |what: &str, e: &dyn std::fmt::Display| JwtError::Jwks(format!("{what}: {e}"));
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await.map_err(|e| err("HTTP", &e))?;
    let driver = tokio::spawn(conn);
    let host = if uri.host.contains(':') { format!("[{}]", uri.host) } else { uri.host.clone() };
    let default_port = if uri.tls { 443 } else { 80 };
    let host = if uri.port == default_port { host } else { format!("{host}:{}", uri.port) };
    let req = hyper::Request::get(uri.path.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::USER_AGENT, concat!("tally/", env!("CARGO_PKG_VERSION")))
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| err("request", &e))?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| err("HTTP", &e))?;
        if resp.status() != hyper::StatusCode::OK {
            return Err(JwtError::Jwks(format!("HTTP status {}", resp.status().as_u16())));
        }
        let body = http_body_util::Limited::new(resp.into_body(), JWKS_BODY_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| err("body (at most 256 KiB)", &e))?;
        Ok(body.to_bytes())
    }
    .await;
    driver.abort();
    result
}

pub mod addr;

#[cfg(test)]
mod tests;
