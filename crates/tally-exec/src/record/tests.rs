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

fn small_input() -> TxnInput {
    TxnInput {
        q: json!({"add": [1, null]}),
        db: 1,
        role: "admin".into(),
        entropy: [0x11; 32],
        steps_max: 2,
        identity: None,
        token: None,
        jwt: None,
    }
}

/// The fields before the query, version byte aside, of [`small_input`].
fn small_head() -> String {
    [
        "49",               // kind 'I'
        "0000000000000001", // db
        "05",
        "61646d696e",       // role "admin"
        &"11".repeat(32),   // entropy
        "0000000000000002", // steps_max
        "00",               // flags
        "00",               // footprint: empty
    ]
    .concat()
}

#[test]
fn golden_bytes_of_a_small_input() {
    let input = small_input();
    let bytes = encode_input(&input).unwrap();
    let expected = [
        "02", // version
        &small_head(),
        "08",
        "01", // query: object of 1 key
        "47", // name: well-known number 35 ("add"), 2 * 35 + 1
        "07",
        "02", // array of 2
        "03",
        "02", // 1, zigzag varint
        "00", // null
    ]
    .concat();
    assert_eq!(hex::encode(&bytes), expected);
    assert_eq!(decode_input(&bytes).unwrap(), input);
    // Names written out, small and negative integers.
    let i = TxnInput { q: json!({"amount": [-1, 63, -64, 64, "x"]}), ..small_input() };
    let bytes = encode_input(&i).unwrap();
    let query = [
        "08",
        "01",
        "0c",
        "616d6f756e74", // key "amount" written out: h = 2 * 6
        "07",
        "05",
        "03",
        "01",
        "03",
        "7e",
        "03",
        "7f",
        "03",
        "8001",
        "06",
        "02",
        "78",
    ]
    .concat();
    assert_eq!(hex::encode(&bytes), ["02", &small_head(), &query].concat());
    assert_eq!(decode_input(&bytes).unwrap(), i);
}

/// Records of version 1, which earlier builds logged, still decode to the same input.
#[test]
fn golden_bytes_of_version_1_still_decode() {
    let v1 = [
        "01",
        &small_head(),
        "08",
        "01",
        "03",
        "616464", // object of 1 key "add" as a str
        "07",
        "02",
        "03",
        "0000000000000001", // 1, 8 bytes
        "00",
    ]
    .concat();
    let bytes = hex::decode(v1).unwrap();
    assert_eq!(decode_input(&bytes).unwrap(), small_input());
    let (input, expr) = decode_input_expr(&bytes).expect("the fast path reads version 1");
    assert_eq!(input, TxnInput { q: Json::Null, ..small_input() });
    assert_eq!(format!("{expr:?}"), format!("{:?}", tally_fql::expr::parse(&small_input().q).unwrap()));
    // In version 1 a well-known name's bytes are just a string.
    let mut b = hex::decode(["01", &small_head(), "0604", "40726566"].concat()).unwrap();
    assert_eq!(decode_input(&b).unwrap().q, json!("@ref"));
    b[0] = 2;
    assert!(decode_input(&b).is_err());
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
    let mut b = vec![INPUT_VERSION, b'I'];
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
        (vec![3, b'I'], UnknownVersion(3)),
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
        (with_query(0, &[0], &[0x03, 0x80, 0x00]), BadVarint),
        (with_query(0, &[0], &[0x07, 0xE8, 0x07]), LengthTooLarge(1000)),
        (with_query(0, &[0], &[0x06, 0xD0, 0x0F]), LengthTooLarge(1000)),
        (with_query(0, &[0], &[0x06, 0x04, 0xC3, 0x28]), BadUtf8),
        (with_query(0, &[0], &[0x08, 0x02, 0x02, b'a', 0x00, 0x02, b'a', 0x00]), DuplicateKey("a".into())),
        (with_query(0, &[0], &[0x08, 0x02, 0x03, 0x00, 0x03, 0x00]), DuplicateKey("id".into())),
        (with_query(0, &[0], &[0x06, 0xFF, 0x7F]), UnknownName(8191)),
        (with_query(0, &[0], &[0x08, 0x01, 0xD7, 0x02, 0x00]), UnknownName(171)),
        (with_query(0, &[0], &[0x06, 0x08, b'@', b'r', b'e', b'f']), NameWrittenOut("@ref".into())),
        (with_query(0, &[0], &[0x08, 0x01, 0x04, b'i', b'd', 0x00]), NameWrittenOut("id".into())),
        (with_query(0, &[0], &[0x04, 0, 0, 0, 0, 0, 0, 0, 5]), BadInteger),
        (with_query(0, &[0], &[0x05, 0x7F, 0xF8, 0, 0, 0, 0, 0, 0]), NonFiniteFloat),
    ];
    for (bytes, want) in cases {
        assert_eq!(decode_input(&bytes), Err(want.clone()), "{}", hex::encode(&bytes));
    }
    // A bad role.
    let mut b = vec![INPUT_VERSION, b'I'];
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
    // The encoder and the decoder recurse once a level; a debug build's frames need more
    // than a test thread's stack (the executor's thread has 64 MiB).
    std::thread::Builder::new().stack_size(64 << 20).spawn(nesting).unwrap().join().unwrap();
}

fn nesting() {
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

/// The size of `v`'s `tree` in version 1 (8-byte integers, every string written out).
fn v1_tree_len(v: &Json) -> usize {
    fn varint_len(mut n: usize) -> usize {
        let mut len = 1;
        while n >= 0x80 {
            n >>= 7;
            len += 1;
        }
        len
    }
    match v {
        Json::Null | Json::Bool(_) => 1,
        Json::Number(_) => 9,
        Json::String(s) => 1 + varint_len(s.len()) + s.len(),
        Json::Array(a) => 1 + varint_len(a.len()) + a.iter().map(v1_tree_len).sum::<usize>(),
        Json::Object(m) => {
            1 + varint_len(m.len())
                + m.iter().map(|(k, v)| varint_len(k.len()) + k.len() + v1_tree_len(v)).sum::<usize>()
        }
    }
}

/// The bench's transfer (`tally-bench`'s `fql::transfer`) in version 2: the figures of
/// docs/record.md, "Version 2", pinned.
#[test]
fn a_transfer_takes_under_half_the_bytes_of_version_1() {
    let acct = |id: &str| json!({"@ref": {"id": id, "collection": {"@ref": {"id": "accounts", "collection": {"@ref": {"id": "collections"}}}}}});
    let bal = |v: &str| json!({"select": ["data", "balance"], "from": {"var": v}});
    let (from, to, n) = (acct("12345"), acct("67890"), json!(17));
    let q = json!({
        "let": [{"a": {"get": from}}, {"b": {"get": to}}],
        "in": {"if": {"lt": [bal("a"), n]}, "then": {"abort": "insufficient funds"}, "else": {"do": [
            {"update": from, "params": {"object": {"data": {"object": {"balance": {"subtract": [bal("a"), n]}}}}}},
            {"update": to, "params": {"object": {"data": {"object": {"balance": {"add": [bal("b"), n]}}}}}},
            {"create": {"collection": "transfers"}, "params": {"object": {"data": {"object": {"from": from, "to": to, "amount": n}}}}},
            "ok"
        ]}}
    });
    let input = TxnInput { q: q.clone(), role: "admin".into(), ..sample() };
    let record = encode_input(&input).unwrap();
    let head = encode_input(&TxnInput { q: Json::Null, ..input.clone() }).unwrap().len() - 1;
    let (v1, v2) = (v1_tree_len(&q), record.len() - head);
    assert_eq!((v1, v2, head + v1, record.len()), (981, 469, 1039, 527));
    assert_eq!(decode_input(&record).unwrap(), input);
}
