use super::*;

fn sample() -> TxnOutput {
    TxnOutput {
        status: 201,
        body: br#"{"resource":{"secret":"fnS0"}}"#.to_vec(),
        ts: 1_700_000_000_000_001,
        steps: 12,
        bytes_read: 4096,
        bytes_written: 100,
        secrets: vec!["fnS0".into(), "é".into()],
    }
}

#[test]
fn golden_bytes_of_a_small_output() {
    let out = TxnOutput { secrets: Vec::new(), ..TxnOutput::json(200, &serde_json::json!({"resource": 3}), 5) };
    let bytes = encode_output(&out);
    let expected = [
        "01",               // version
        "4f",               // kind 'O'
        "00c8",             // status 200
        "0000000000000005", // ts
        "0000000000000000", // steps
        "0000000000000000", // bytes_read
        "0000000000000000", // bytes_written
        "00",               // no secrets
        "0e",               // body: 14 bytes
        "7b227265736f75726365223a337d",
    ]
    .concat();
    assert_eq!(hex::encode(&bytes), expected);
    assert_eq!(decode_output(&bytes).unwrap(), out);
    assert_eq!(out.body, br#"{"resource":3}"#);
}

#[test]
fn round_trips() {
    let out = sample();
    assert_eq!(decode_output(&encode_output(&out)).unwrap(), out);
    let big = TxnOutput { body: format!("{{\"resource\":\"{}\"}}", "x".repeat(300)).into_bytes(), ..sample() };
    assert_eq!(decode_output(&encode_output(&big)).unwrap(), big);
}

#[test]
fn every_truncation_is_refused() {
    let bytes = encode_output(&sample());
    for n in 0..bytes.len() {
        assert!(decode_output(&bytes[..n]).is_err(), "an output cut at {n} of {} bytes decoded", bytes.len());
    }
}

/// An output record with the given status, secrets section and body section.
fn raw(status: u16, secrets: &[u8], body: &[u8]) -> Vec<u8> {
    let mut b = vec![1, b'O'];
    b.extend_from_slice(&status.to_be_bytes());
    b.extend_from_slice(&[0; 32]);
    b.extend_from_slice(secrets);
    b.extend_from_slice(body);
    b
}

#[test]
fn malformed_outputs_are_refused_with_their_reason() {
    use RecordError::*;
    let ok = raw(200, &[0], b"\x02{}");
    assert_eq!(decode_output(&ok).unwrap().body, b"{}");
    let input = crate::record::encode_input(&crate::record::TxnInput {
        q: serde_json::Value::Null,
        db: 0,
        role: "admin".into(),
        entropy: [0; 32],
        steps_max: 1,
        identity: None,
        token: None,
        jwt: None,
    })
    .unwrap();
    let cases: Vec<(Vec<u8>, RecordError)> = vec![
        (vec![], Truncated),
        (vec![0], UnknownVersion(0)),
        (b"{\"status\":200}".to_vec(), UnknownVersion(b'{')),
        // An input of version 1 is of the output's version but not its kind; inputs this
        // build writes are of another version.
        ([&[1u8][..], &input[1..]].concat(), WrongKind(b'I')),
        (input, UnknownVersion(crate::record::INPUT_VERSION)),
        (raw(0, &[0], b"\x02{}"), BadStatus(0)),
        (raw(600, &[0], b"\x02{}"), BadStatus(600)),
        ([ok.clone(), vec![0]].concat(), TrailingBytes(1)),
        (raw(200, &[0], b"\x02[]"), BadBody),
        (raw(200, &[0], b"\x00"), BadBody),
        (raw(200, &[0], b"\x03{\xff}"), BadUtf8),
        (raw(200, &[1, 2, 0xC3, 0x28], b"\x02{}"), BadUtf8),
        (raw(200, &[0x80, 0x00], b"\x02{}"), BadVarint),
        (raw(200, &[0xE8, 0x07], b"\x02{}"), LengthTooLarge(1000)),
        (raw(200, &[0], b"\x09{}"), LengthTooLarge(9)),
    ];
    for (bytes, want) in cases {
        assert_eq!(decode_output(&bytes), Err(want.clone()), "{}", hex::encode(&bytes));
    }
}

#[test]
fn random_bytes_never_panic() {
    let base = encode_output(&sample());
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
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
        let _ = decode_output(&b[..cut]);
        let _ = decode_output(&b);
    }
}
