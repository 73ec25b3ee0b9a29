use serde_json::json;

use super::*;

fn sample() -> TxnInput {
    TxnInput {
        q: json!({"create": {"collection": "c"}, "params": {"object": {"data": {"object": {"n": 1, "x": -2.5, "ok": true}}}}}),
        db: 7,
        role: "server".into(),
        entropy: [0xAB; 32],
        steps_max: 1_200_000,
        identity: None,
        token: None,
        jwt: None,
    }
}

#[test]
fn golden_bytes_of_a_small_input() {
    let input = TxnInput {
        q: json!({"add": [1, null]}),
        db: 1,
        role: "admin".into(),
        entropy: [0x11; 32],
        steps_max: 2,
        identity: None,
        token: None,
        jwt: None,
    };
    let bytes = encode_input(&input).unwrap();
    let expected = [
        "01",               // version
        "49",               // kind 'I'
        "0000000000000001", // db
        "05",
        "61646d696e",       // role "admin"
        &"11".repeat(32),   // entropy
        "0000000000000002", // steps_max
        "00",               // flags
        "00",               // footprint: empty
        "08",
        "01",
        "03",
        "616464", // query: object of 1 key "add"
        "07",
        "02", // array of 2
        "03",
        "0000000000000001", // 1
        "00",               // null
    ]
    .concat();
    assert_eq!(hex::encode(&bytes), expected);
    assert_eq!(decode_input(&bytes).unwrap(), input);
}

#[test]
fn round_trips_with_every_optional_field() {
    let mut input = sample();
    input.role = "@member".into();
    input.identity = Some(
        json!({"@ref": {"id": "10", "collection": {"@ref": {"id": "users", "collection": {"@ref": {"id": "collections"}}}}}}),
    );
    input.token = Some(json!({"@ref": {"id": "99", "collection": {"@ref": {"id": "tokens"}}}}));
    input.jwt = Some(JwtInput {
        provider: "idp".into(),
        issuer: "https://i".into(),
        claims: json!({"sub": "a", "n": 18446744073709551615u64}),
    });
    let bytes = encode_input(&input).unwrap();
    assert_eq!(decode_input(&bytes).unwrap(), input);
    for role in ["admin", "server", "server-readonly", "client", "@member", "@jwt", "@role/a", "@role/a/b"] {
        let i = TxnInput { role: role.into(), ..sample() };
        assert_eq!(decode_input(&encode_input(&i).unwrap()).unwrap(), i, "{role}");
    }
}

#[test]
fn object_key_order_is_kept() {
    // A call's arguments are an object; the query's order is what the log records.
    let i = TxnInput { q: serde_json::from_str(r#"{"z": 1, "a": 2, "m": 3}"#).unwrap(), ..sample() };
    let back = decode_input(&encode_input(&i).unwrap()).unwrap();
    let keys: Vec<_> = back.q.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["z", "a", "m"]);
}

#[test]
fn version_0_records_of_earlier_builds_still_decode() {
    let v0 = format!(
        r#"{{"q":{{"create_collection":{{"object":{{"name":"c"}}}}}},"db":0,"role":"admin","entropy":"{}","steps_max":60000}}"#,
        "ab".repeat(32)
    );
    let i = decode_input(v0.as_bytes()).unwrap();
    assert_eq!(i.role, "admin");
    assert_eq!(i.entropy, [0xAB; 32]);
    assert_eq!(i.q, json!({"create_collection": {"object": {"name": "c"}}}));
    // Version 0 is held to the same rules: a bad role or entropy is refused, not defaulted.
    let bad_role = v0.replace(r#""role":"admin""#, r#""role":"root""#);
    assert_eq!(decode_input(bad_role.as_bytes()), Err(RecordError::BadRole("root".into())));
    let bad_entropy = v0.replace(&"ab".repeat(32), "00");
    assert!(matches!(decode_input(bad_entropy.as_bytes()), Err(RecordError::Legacy(_))));
    let unknown_field = v0.replace(r#""db":0"#, r#""db":0,"extra":1"#);
    assert!(matches!(decode_input(unknown_field.as_bytes()), Err(RecordError::Legacy(_))));
}

#[test]
fn every_truncation_is_refused() {
    let mut input = sample();
    input.jwt = Some(JwtInput { provider: "p".into(), issuer: "i".into(), claims: json!({"a": [1, "b"]}) });
    let bytes = encode_input(&input).unwrap();
    for n in 0..bytes.len() {
        assert!(decode_input(&bytes[..n]).is_err(), "a record cut at {n} of {} bytes decoded", bytes.len());
    }
}

/// The header of `sample()` up to (not including) the footprint, to build malformed records.
fn header(flags: u8) -> Vec<u8> {
    let mut b = vec![1, b'I'];
    b.extend_from_slice(&7u64.to_be_bytes());
    b.push(6);
    b.extend_from_slice(b"server");
    b.extend_from_slice(&[0xAB; 32]);
    b.extend_from_slice(&5u64.to_be_bytes());
    b.push(flags);
    b
}

fn with_query(flags: u8, footprint: &[u8], query: &[u8]) -> Vec<u8> {
    let mut b = header(flags);
    b.extend_from_slice(footprint);
    b.extend_from_slice(query);
    b
}

#[test]
fn malformed_records_are_refused_with_their_reason() {
    use RecordError::*;
    let ok = with_query(0, &[0], &[0x00]);
    assert_eq!(decode_input(&ok).unwrap().q, Json::Null);
    let cases: Vec<(Vec<u8>, RecordError)> = vec![
        (vec![], Truncated),
        (vec![2, b'I'], UnknownVersion(2)),
        (vec![0xFF], UnknownVersion(0xFF)),
        (
            {
                let mut b = ok.clone();
                b[1] = b'O';
                b
            },
            WrongKind(b'O'),
        ),
        (
            {
                let mut b = ok.clone();
                b.push(0);
                b
            },
            TrailingBytes(1),
        ),
        (with_query(0x08, &[0], &[0x00]), UnknownFlags(0x08)),
        (with_query(0, &[1, 0xAA], &[0x00]), FootprintNotEmpty),
        (with_query(0, &[0], &[0x09]), BadTag(0x09)),
        (with_query(0, &[0], &[0x06, 0x80, 0x00]), BadVarint),
        (with_query(0, &[0], &[0x06, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]), BadVarint),
        (with_query(0, &[0], &[0x07, 0xE8, 0x07]), LengthTooLarge(1000)),
        (with_query(0, &[0], &[0x06, 0x02, 0xC3, 0x28]), BadUtf8),
        (with_query(0, &[0], &[0x08, 0x02, 0x01, b'a', 0x00, 0x01, b'a', 0x00]), DuplicateKey("a".into())),
        (with_query(0, &[0], &[0x04, 0, 0, 0, 0, 0, 0, 0, 5]), BadInteger),
        (with_query(0, &[0], &[0x05, 0x7F, 0xF8, 0, 0, 0, 0, 0, 0]), NonFiniteFloat),
    ];
    for (bytes, want) in cases {
        assert_eq!(decode_input(&bytes), Err(want.clone()), "{}", hex::encode(&bytes));
    }
    // A bad role.
    let mut b = vec![1, b'I'];
    b.extend_from_slice(&7u64.to_be_bytes());
    b.push(4);
    b.extend_from_slice(b"root");
    assert_eq!(decode_input(&b), Err(BadRole("root".into())));
    // A role in a form the encoder never writes (duplicate names are normalised).
    let i = TxnInput { role: "@role/b/a".into(), ..sample() };
    assert!(matches!(decode_input(&encode_input(&i).unwrap()), Err(BadRole(_))));
}

#[test]
fn nesting_is_bounded_on_both_sides() {
    let mut deep = Json::Null;
    for _ in 0..TREE_DEPTH_MAX {
        deep = Json::Array(vec![deep]);
    }
    let i = TxnInput { q: deep, ..sample() };
    assert_eq!(encode_input(&i), Err(RecordError::TooDeep));
    let mut q = [0x07, 0x01].repeat(TREE_DEPTH_MAX);
    q.push(0x00);
    assert_eq!(decode_input(&with_query(0, &[0], &q)), Err(RecordError::TooDeep));
    let mut q = [0x07, 0x01].repeat(TREE_DEPTH_MAX - 1);
    q.push(0x00);
    assert!(decode_input(&with_query(0, &[0], &q)).is_ok());
}

#[test]
fn random_bytes_never_panic() {
    // A small deterministic generator: flip bytes of valid records and feed random tails.
    let base = encode_input(&TxnInput {
        jwt: Some(JwtInput { provider: "p".into(), issuer: "i".into(), claims: json!([1, 2.5, "s", {"k": null}]) }),
        ..sample()
    })
    .unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..20_000 {
        let mut b = base.clone();
        for _ in 0..(next() % 4 + 1) {
            let at = (next() as usize) % b.len();
            b[at] = next() as u8;
        }
        let cut = (next() as usize) % (b.len() + 1);
        let _ = decode_input(&b[..cut]);
        let _ = decode_input(&b);
    }
}
