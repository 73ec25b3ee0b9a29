//! JWT parsing, time checks, signature verification and the JWKS cache. Tokens are
//! signed with two RSA-2048 keys made for these tests only (`testdata/`).

use std::sync::atomic::AtomicUsize;

use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::RsaKeyPair;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn key_pair(which: char) -> RsaKeyPair {
    let b64 = match which {
        'a' => include_str!("../../testdata/jwt_test_key_a.der.b64"),
        _ => include_str!("../../testdata/jwt_test_key_b.der.b64"),
    };
    RsaKeyPair::from_der(&STANDARD.decode(b64.trim()).unwrap()).unwrap()
}

/// The public half of a test key as a JWK (as an identity provider publishes it).
fn jwk_json(kp: &RsaKeyPair, kid: &str) -> serde_json::Value {
    let c: ring::rsa::PublicKeyComponents<Vec<u8>> = kp.public().into();
    json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
           "n": URL_SAFE_NO_PAD.encode(&c.n), "e": URL_SAFE_NO_PAD.encode(&c.e)})
}

fn jwk(kp: &RsaKeyPair, kid: &str) -> Jwk {
    let body = json!({"keys": [jwk_json(kp, kid)]}).to_string();
    parse_jwks(body.as_bytes()).unwrap().remove(0)
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn sign_with(kp: &RsaKeyPair, header: serde_json::Value, claims: serde_json::Value) -> String {
    let alg = match header["alg"].as_str() {
        Some("RS384") => &ring::signature::RSA_PKCS1_SHA384,
        Some("RS512") => &ring::signature::RSA_PKCS1_SHA512,
        _ => &ring::signature::RSA_PKCS1_SHA256,
    };
    let signed = format!("{}.{}", b64(&header), b64(&claims));
    let mut sig = vec![0; kp.public().modulus_len()];
    kp.sign(alg, &SystemRandom::new(), signed.as_bytes(), &mut sig).unwrap();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn sign(kp: &RsaKeyPair, kid: &str, claims: serde_json::Value) -> String {
    sign_with(kp, json!({"alg": "RS256", "typ": "JWT", "kid": kid}), claims)
}

fn claims() -> serde_json::Value {
    json!({"iss": "https://idp/", "sub": "u1", "aud": "https://db.fauna.com/db/yyyyyyyyyyyyy"})
}

#[test]
fn a_good_token_verifies_with_each_rsa_algorithm() {
    let a = key_pair('a');
    for alg in ["RS256", "RS384", "RS512"] {
        let token = sign_with(&a, json!({"alg": alg, "kid": "k1"}), claims());
        assert!(looks_like_jwt(&token));
        let jwt = parse(&token).unwrap();
        assert_eq!((jwt.alg.name(), jwt.kid.as_deref()), (alg, Some("k1")));
        assert_eq!(jwt.claims["sub"], "u1");
        let mut key = jwk(&a, "k1");
        key.alg = None;
        assert_eq!(verify_signature(&jwt, &key), Ok(()), "{alg}");
    }
}

#[test]
fn bad_signatures_are_refused() {
    let (a, b) = (key_pair('a'), key_pair('b'));
    let token = sign(&a, "k1", claims());
    // Signed by another key.
    assert_eq!(verify_signature(&parse(&token).unwrap(), &jwk(&b, "k1")), Err(JwtError::BadSignature));
    // One signature byte flipped.
    let (signed, sig) = token.rsplit_once('.').unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
    raw[10] ^= 1;
    let flipped = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(raw));
    assert_eq!(verify_signature(&parse(&flipped).unwrap(), &jwk(&a, "k1")), Err(JwtError::BadSignature));
    // Claims swapped under a valid signature (a privilege escalation attempt).
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[1] = b64(&json!({"iss": "https://idp/", "sub": "u1", "admin": true}));
    let tampered = parts.join(".");
    assert_eq!(verify_signature(&parse(&tampered).unwrap(), &jwk(&a, "k1")), Err(JwtError::BadSignature));
    // The JWK is for RS256 only; a token claiming RS512 is refused even with its key.
    let rs512 = sign_with(&a, json!({"alg": "RS512", "kid": "k1"}), claims());
    assert_eq!(verify_signature(&parse(&rs512).unwrap(), &jwk(&a, "k1")), Err(JwtError::BadSignature));
}

#[test]
fn keys_are_chosen_by_kid() {
    let (a, b) = (key_pair('a'), key_pair('b'));
    let body = json!({"keys": [
        jwk_json(&a, "ka"),
        jwk_json(&b, "kb"),
        {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
    ]});
    let keys = parse_jwks(body.to_string().as_bytes()).unwrap();
    assert_eq!(keys.iter().map(|k| k.kid.as_deref().unwrap()).collect::<Vec<_>>(), ["ka", "kb"]);
    assert_eq!(find_key(&keys, Some("kb")).unwrap().kid.as_deref(), Some("kb"));
    assert_eq!(find_key(&keys, Some("nope")), None, "wrong kid");
    assert_eq!(find_key(&keys, None), None, "no kid and several keys");
    assert_eq!(find_key(&keys[..1], None).unwrap().kid.as_deref(), Some("ka"));
    // Signed by b but naming a's kid: the key found does not verify it.
    let token = sign(&b, "ka", claims());
    let jwt = parse(&token).unwrap();
    assert_eq!(verify_signature(&jwt, find_key(&keys, jwt.kid.as_deref()).unwrap()), Err(JwtError::BadSignature));
    // Leading zeros in the modulus (as some encoders write it) are ignored.
    let mut padded = jwk_json(&a, "ka");
    let mut n = URL_SAFE_NO_PAD.decode(padded["n"].as_str().unwrap()).unwrap();
    n.insert(0, 0);
    padded["n"] = json!(URL_SAFE_NO_PAD.encode(n));
    let keys = parse_jwks(json!({"keys": [padded]}).to_string().as_bytes()).unwrap();
    assert_eq!(verify_signature(&parse(&sign(&a, "ka", claims())).unwrap(), &keys[0]), Ok(()));
    assert!(parse_jwks(b"[]").is_err());
    assert!(parse_jwks(b"not json").is_err());
}

#[test]
fn expiry_and_not_before_use_this_nodes_clock() {
    let now = 1_700_000_000;
    assert_eq!(check_times(&json!({"exp": now + 60}), now), Ok(()));
    assert_eq!(check_times(&json!({"exp": now - 1}), now), Err(JwtError::Expired));
    assert_eq!(check_times(&json!({"exp": now}), now), Err(JwtError::Expired), "expired at exp");
    assert_eq!(check_times(&json!({"nbf": now + 30}), now), Err(JwtError::NotYetValid));
    assert_eq!(check_times(&json!({"nbf": now, "exp": now + 1}), now), Ok(()), "valid from nbf");
    assert_eq!(check_times(&json!({"exp": "tomorrow"}), now), Err(JwtError::Malformed));
    assert_eq!(check_times(&json!({}), now), Ok(()), "both are optional, as in v4");
    assert_eq!(check_times(&json!({"exp": (now as f64) + 0.5}), now), Ok(()));
}

#[test]
fn unsigned_and_hmac_tokens_are_refused() {
    let unsigned = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims()));
    assert_eq!(parse(&unsigned).err(), Some(JwtError::Algorithm));
    let fake_sig = format!("{}.{}.AAAA", b64(&json!({"alg": "none"})), b64(&claims()));
    assert_eq!(parse(&fake_sig).err(), Some(JwtError::Algorithm));
    for alg in ["HS256", "HS512", "ES256", "PS256", "rs256", ""] {
        let t = format!("{}.{}.AAAA", b64(&json!({"alg": alg})), b64(&claims()));
        assert_eq!(parse(&t).err(), Some(JwtError::Algorithm), "{alg}");
    }
    let no_alg = format!("{}.{}.AAAA", b64(&json!({"typ": "JWT"})), b64(&claims()));
    assert_eq!(parse(&no_alg).err(), Some(JwtError::Algorithm));
}

#[test]
fn malformed_tokens_are_refused() {
    let h = b64(&json!({"alg": "RS256"}));
    let c = b64(&claims());
    for bad in [
        format!("{h}.{c}"),
        format!("{h}.{c}.AAAA.AAAA"),
        format!("{h}.{c}.AA!A"),
        format!("{h}.{}.AAAA", b64(&json!([1, 2]))),
        format!("{h}.bm90IGpzb24.AAAA"),
        format!("{}.{c}.AAAA", b64(&json!({"alg": "RS256", "crit": ["exp"]}))),
        format!("{}.{c}.AAAA", b64(&json!({"alg": "RS256", "kid": 7}))),
        format!("{h}.{}.AAAA", URL_SAFE_NO_PAD.encode(format!("{{\"a\":{}1{}}}", "[".repeat(40), "]".repeat(40)))),
        format!("{h}.{}.AAAA", "A".repeat(JWT_BYTES_MAX)),
    ] {
        assert_eq!(parse(&bad).err(), Some(JwtError::Malformed), "{bad:.80}");
    }
}

#[test]
fn tally_secrets_never_look_like_jwts() {
    assert!(!looks_like_jwt("fnAEe3Sy1TACAAC2cPkyMd7xYgTh1K6BBYHjwwbE"));
    assert!(!looks_like_jwt("fnAEe3Sy1TACAAC2cPkyMd7xYgTh1K6BBYHjwwbE:db/child:admin"));
    assert!(!looks_like_jwt("tally-root-0123456789abcdef"));
    assert!(!looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.e30"));
    assert!(looks_like_jwt(&sign(&key_pair('a'), "k", claims())));
}

#[test]
fn refusals_say_unauthorized_without_detail_about_the_database() {
    for e in [JwtError::NoProvider, JwtError::UnknownKey, JwtError::BadSignature, JwtError::Jwks("x".into())] {
        let f = e.to_fql();
        assert_eq!(f.code, "unauthorized");
        assert_eq!(f.description, "Unauthorized: no access provider accepts this JWT.");
    }
    assert_eq!(JwtError::Expired.to_fql().description, "Unauthorized: the JWT has expired.");
}

/// A loopback HTTP server answering every request with `status` and `body`, counting them.
async fn jwks_server(status: u16, body: String) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
            });
        }
    });
    (format!("http://127.0.0.1:{}/jwks.json", addr.port()), hits)
}

#[tokio::test]
async fn jwks_are_fetched_once_and_refetched_for_unknown_kids_at_most_every_interval() {
    let a = key_pair('a');
    let (uri, hits) = jwks_server(200, json!({"keys": [jwk_json(&a, "ka")]}).to_string()).await;
    let cache = JwksCache::new(true).unwrap();
    let key = cache.key(&uri, Some("ka")).await.unwrap();
    assert_eq!(verify_signature(&parse(&sign(&a, "ka", claims())).unwrap(), &key), Ok(()));
    for _ in 0..5 {
        cache.key(&uri, Some("ka")).await.unwrap();
    }
    assert_eq!((cache.fetches(), hits.load(Ordering::SeqCst)), (1, 1), "cached");
    // An unknown kid right after a fetch does not fetch again (a forged-token flood).
    assert_eq!(cache.key(&uri, Some("rotated")).await, Err(JwtError::UnknownKey));
    assert_eq!(cache.fetches(), 1);
    // After the interval it does, once.
    tokio::time::sleep(JWKS_REFETCH_MIN + Duration::from_millis(100)).await;
    assert_eq!(cache.key(&uri, Some("rotated")).await, Err(JwtError::UnknownKey));
    assert_eq!(cache.key(&uri, Some("rotated")).await, Err(JwtError::UnknownKey));
    assert_eq!((cache.fetches(), hits.load(Ordering::SeqCst)), (2, 2));
    // The known key is still served from the cache.
    assert!(cache.key(&uri, Some("ka")).await.is_ok());
    assert_eq!(cache.fetches(), 2);
}

#[tokio::test]
async fn failed_fetches_are_unauthorized_and_bounded() {
    let cache = JwksCache::new(true).unwrap();
    let (uri, _) = jwks_server(404, "{}".into()).await;
    assert!(matches!(cache.key(&uri, Some("k")).await, Err(JwtError::Jwks(_))));
    let (uri, _) =
        jwks_server(200, format!("{{\"keys\": [], \"pad\": \"{}\"}}", "x".repeat(JWKS_BODY_BYTES_MAX))).await;
    assert!(matches!(cache.key(&uri, Some("k")).await, Err(JwtError::Jwks(_))), "body too large");
    let (uri, _) = jwks_server(200, "<html>".into()).await;
    assert!(matches!(cache.key(&uri, Some("k")).await, Err(JwtError::Jwks(_))));
    // Plain http is refused off loopback, before any connection is made.
    let before = cache.fetches();
    assert!(matches!(cache.key("http://idp.example.com/jwks", Some("k")).await, Err(JwtError::Jwks(_))));
    assert_eq!(cache.fetches(), before);
    // A port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let uri = format!("http://127.0.0.1:{port}/jwks");
    assert!(matches!(cache.key(&uri, Some("k")).await, Err(JwtError::Jwks(_))));
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and never answer.
    let hold = tokio::spawn(async move {
        let mut socks = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            socks.push(s);
        }
    });
    let cache = JwksCache::new(true).unwrap();
    let started = Instant::now();
    let r = cache.key(&format!("http://127.0.0.1:{port}/jwks"), Some("k")).await;
    assert!(matches!(r, Err(JwtError::Jwks(_))), "{r:?}");
    let took = started.elapsed();
    assert!(took >= JWKS_FETCH_TIMEOUT && took < JWKS_FETCH_TIMEOUT + Duration::from_secs(2), "{took:?}");
    hold.abort();
}

#[tokio::test]
async fn without_the_operator_flag_nothing_private_is_fetched() {
    let a = key_pair('a');
    let (uri, hits) = jwks_server(200, json!({"keys": [jwk_json(&a, "ka")]}).to_string()).await;
    let cache = JwksCache::new(false).unwrap();
    // Plain http, on loopback: refused before any connection.
    assert!(matches!(cache.key(&uri, Some("ka")).await, Err(JwtError::Jwks(_))));
    // https to a loopback address or a name that resolves to one: refused after
    // resolving, before connecting.
    let port = uri.trim_start_matches("http://127.0.0.1:").split('/').next().unwrap().to_string();
    for host in ["127.0.0.1", "localhost", "[::1]"] {
        let r = cache.key(&format!("https://{host}:{port}/jwks.json"), Some("ka")).await;
        // (Why is logged: "not a public address"; see `addr`'s tests.)
        assert!(matches!(&r, Err(JwtError::Jwks(_))), "{host}: {r:?}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the loopback server was never reached");
    // With the flag, the same server is used.
    let allowed = JwksCache::new(true).unwrap();
    assert!(allowed.key(&uri, Some("ka")).await.is_ok());
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
