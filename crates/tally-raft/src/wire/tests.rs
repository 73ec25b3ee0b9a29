use std::collections::{BTreeMap, BTreeSet};

use openraft::impls::leader_id_adv::LeaderId;

use super::*;

fn log_id(term: u64, node: u64, index: u64) -> LogId {
    LogId { leader_id: LeaderId { term, node_id: node }, index }
}

fn membership() -> Membership<u64, BasicNode> {
    let nodes: BTreeMap<u64, BasicNode> = [(1, "127.0.0.1:7001"), (2, "127.0.0.1:7002"), (3, "h:3")]
        .map(|(i, a)| (i, BasicNode { addr: a.into() }))
        .into();
    Membership::new(vec![BTreeSet::from([1, 2])], nodes).unwrap()
}

fn entries() -> Vec<Entry> {
    vec![
        Entry { log_id: log_id(1, 1, 1), payload: EntryPayload::Blank },
        Entry { log_id: log_id(1, 1, 2), payload: EntryPayload::Normal(BatchRequest(vec![1, 2, 3])) },
        Entry { log_id: log_id(2, 3, 3), payload: EntryPayload::Membership(membership()) },
    ]
}

#[test]
fn golden_bytes_of_an_entry() {
    let e = Entry { log_id: log_id(2, 1, 7), payload: EntryPayload::Normal(BatchRequest(vec![0xAA, 0xBB])) };
    let want = [
        "01",               // version
        "45",               // kind 'E'
        "0000000000000002", // term
        "0000000000000001", // leader node
        "0000000000000007", // index
        "01",               // payload: a batch
        "0000000000000002", // its length
        "aabb",
    ]
    .concat();
    assert_eq!(hex::encode(encode_entry(&e)), want);
    assert_eq!(decode_entry(&hex::decode(&want).unwrap()).unwrap(), e);
}

#[test]
fn golden_bytes_of_a_forwarded_answer() {
    let ok = Ok(SubmitOk { output: vec![9], index: 5, height: 4, slot: 1 });
    let want = ["01", "46", "00", "0000000000000005", "0000000000000004", "0000000000000001", "0000000000000001", "09"]
        .concat();
    assert_eq!(hex::encode(encode_submit_answer(&ok)), want);
    let back = decode_submit_answer(&hex::decode(&want).unwrap()).unwrap().unwrap();
    assert_eq!((back.output, back.index, back.height, back.slot), (vec![9], 5, 4, 1));
    assert_eq!(
        hex::encode(encode_submit_answer(&Err(SubmitError::NotLeader(Some(3))))),
        "01460401".to_string() + "0000000000000003"
    );
}

#[test]
fn every_record_round_trips() {
    for e in entries() {
        assert_eq!(decode_entry(&encode_entry(&e)).unwrap(), e);
    }
    let vote = Vote { leader_id: LeaderId { term: 9, node_id: 2 }, committed: true };
    assert_eq!(decode_vote(&encode_vote(&vote)).unwrap(), vote);
    for id in [None, Some(log_id(3, 2, 99))] {
        assert_eq!(decode_log_id(&encode_log_id(&id)).unwrap(), id);
    }
    let sm = StoredMembership::new(Some(log_id(2, 3, 3)), membership());
    for last in [None, Some(log_id(4, 1, 10))] {
        assert_eq!(decode_position(&encode_position(&last, &sm)).unwrap(), (last, sm.clone()));
    }
    let empty = StoredMembership::default();
    assert_eq!(decode_position(&encode_position(&None, &empty)).unwrap(), (None, empty));
    let meta = SnapshotMeta { last_log_id: Some(log_id(4, 1, 10)), last_membership: sm };
    assert_eq!(decode_snapshot_meta(&encode_snapshot_meta(&meta)).unwrap(), meta);
    let sent = encode_snapshot_head(&vote, &meta, 1 << 40);
    let len = u64::from_be_bytes(sent[..8].try_into().unwrap()) as usize;
    assert_eq!(len, sent.len() - 8);
    assert_eq!(decode_snapshot_head(&sent[8..]).unwrap(), (vote, meta.clone(), 1 << 40));
    for cut in 0..sent.len() - 8 {
        assert!(decode_snapshot_head(&sent[8..8 + cut]).is_err(), "a head cut at {cut} was read");
    }
    // The head of a snapshot sent whole (kind `H`, earlier builds) is refused.
    let mut old = sent[8..].to_vec();
    old[1] = b'H';
    assert!(matches!(decode_snapshot_head(&old), Err(WireError::WrongKind { .. })));

    let req = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id(1, 1, 0)),
        entries: entries(),
        leader_commit: None,
    };
    let back = decode_append(&encode_append(&req)).unwrap();
    assert_eq!(
        (back.vote, back.prev_log_id, back.entries, back.leader_commit),
        (vote, req.prev_log_id, entries(), None)
    );
    let answers: Vec<Result<AppendEntriesResponse<TypeConfig>, String>> = vec![
        Ok(AppendEntriesResponse::Success),
        Ok(AppendEntriesResponse::PartialSuccess(Some(log_id(1, 1, 2)))),
        Ok(AppendEntriesResponse::PartialSuccess(None)),
        Ok(AppendEntriesResponse::Conflict),
        Ok(AppendEntriesResponse::HigherVote(vote)),
        Err("fatal: stopped".into()),
    ];
    for a in answers {
        assert_eq!(decode_append_answer(&encode_append_answer(&a)).unwrap(), a);
    }
    for a in [Ok(vote), Err("no".to_string())] {
        assert_eq!(decode_snapshot_answer(&encode_snapshot_answer(&a)).unwrap(), a);
    }
    let errs = [
        SubmitError::Unavailable("u".into()),
        SubmitError::Ambiguous("a".into()),
        SubmitError::Overloaded,
        SubmitError::NotLeader(None),
        SubmitError::NotLeader(Some(7)),
        SubmitError::Retry("r".into()),
    ];
    for e in errs {
        let back = decode_submit_answer(&encode_submit_answer(&Err(e.clone()))).unwrap().unwrap_err();
        assert_eq!(format!("{back:?}"), format!("{e:?}"));
    }
}

#[test]
fn truncations_and_trailing_bytes_are_refused() {
    let req = AppendEntriesRequest::<TypeConfig> {
        vote: Vote { leader_id: LeaderId { term: 1, node_id: 1 }, committed: true },
        prev_log_id: None,
        entries: entries(),
        leader_commit: Some(log_id(1, 1, 1)),
    };
    type Decodes = fn(&[u8]) -> bool;
    let records: Vec<(Vec<u8>, Decodes)> = vec![
        (encode_append(&req), |b| decode_append(b).is_ok()),
        (encode_entry(&entries()[2]), |b| decode_entry(b).is_ok()),
        (encode_position(&Some(log_id(1, 1, 1)), &StoredMembership::new(None, membership())), |b| {
            decode_position(b).is_ok()
        }),
        (encode_submit_answer(&Ok(SubmitOk { output: vec![1; 10], index: 1, height: 1, slot: 0 })), |b| {
            decode_submit_answer(b).is_ok()
        }),
    ];
    for (bytes, ok) in records {
        assert!(ok(&bytes));
        for n in 0..bytes.len() {
            assert!(!ok(&bytes[..n]), "cut at {n} of {}", bytes.len());
        }
        assert!(!ok(&[bytes.clone(), vec![0]].concat()), "a trailing byte was accepted");
    }
}

#[test]
fn malformed_records_are_refused_with_their_reason() {
    let e = encode_entry(&entries()[1]);
    let with = |at: usize, v: u8| {
        let mut b = e.clone();
        b[at] = v;
        b
    };
    assert_eq!(decode_entry(&with(0, 2)), Err(WireError::UnknownVersion(2)));
    assert_eq!(decode_entry(&with(1, b'V')), Err(WireError::WrongKind { want: b'E', found: b'V' }));
    assert_eq!(decode_entry(&with(26, 7)), Err(WireError::BadTag(7)));
    assert_eq!(decode_entry(&with(34, 0xFF)), Err(WireError::LengthTooLarge(0xFF)));
    assert_eq!(decode_entry(&[e.clone(), vec![0, 0]].concat()), Err(WireError::TrailingBytes(2)));
    // A vote whose committed flag is neither 0 nor 1.
    let mut v = encode_vote(&Vote { leader_id: LeaderId { term: 1, node_id: 1 }, committed: false });
    *v.last_mut().unwrap() = 2;
    assert_eq!(decode_vote(&v), Err(WireError::BadTag(2)));
    // Node sets must be strictly ascending; voters must be members.
    let mut m = header(KIND_POSITION, 0);
    m.push(0);
    m.push(0);
    put_u64(&mut m, 1);
    put_u64(&mut m, 2);
    put_u64(&mut m, 2);
    put_u64(&mut m, 1);
    put_u64(&mut m, 0);
    assert_eq!(decode_position(&m), Err(WireError::Unordered));
    let mut m = header(KIND_POSITION, 0);
    m.push(0);
    m.push(0);
    put_u64(&mut m, 1);
    put_u64(&mut m, 1);
    put_u64(&mut m, 5);
    put_u64(&mut m, 0);
    assert!(matches!(decode_position(&m), Err(WireError::BadMembership(_))));
    // A forwarded answer of an unknown kind of error, a string that is not UTF-8.
    assert_eq!(decode_submit_answer(&[1, b'F', 9]).unwrap_err(), WireError::BadTag(9));
    let mut s = vec![1, b'F', 1];
    put_bytes(&mut s, &[0xC3, 0x28]);
    assert_eq!(decode_submit_answer(&s).unwrap_err(), WireError::BadUtf8);
    // JSON is version 0: read from the data directory, never from the peer protocol.
    assert_eq!(decode_append(b"{\"vote\":1}").unwrap_err(), WireError::UnknownVersion(b'{'));
}

/// The log store, the position and the snapshot meta of earlier builds were serde JSON:
/// they still decode, to the same values.
#[test]
fn version_0_json_of_earlier_builds_still_decodes() {
    for e in entries() {
        assert_eq!(decode_entry(&serde_json::to_vec(&e).unwrap()).unwrap(), e);
    }
    let vote = Vote { leader_id: LeaderId { term: 3, node_id: 1 }, committed: true };
    assert_eq!(decode_vote(&serde_json::to_vec(&vote).unwrap()).unwrap(), vote);
    let id = Some(log_id(3, 1, 4));
    assert_eq!(decode_log_id(&serde_json::to_vec(&id).unwrap()).unwrap(), id);
    assert_eq!(decode_log_id(b"null").unwrap(), None);
    let pos = crate::state_machine::Position { log_id: id, membership: StoredMembership::new(id, membership()) };
    assert_eq!(decode_position(&serde_json::to_vec(&pos).unwrap()).unwrap(), (pos.log_id, pos.membership.clone()));
    let meta = SnapshotMeta { last_log_id: id, last_membership: pos.membership };
    assert_eq!(decode_snapshot_meta(&serde_json::to_vec(&meta).unwrap()).unwrap(), meta);
    assert!(matches!(decode_entry(b"{\"log_id\":1}"), Err(WireError::Legacy(_))));
}

#[test]
fn random_bytes_never_panic() {
    let req = AppendEntriesRequest::<TypeConfig> {
        vote: Vote { leader_id: LeaderId { term: 1, node_id: 1 }, committed: true },
        prev_log_id: None,
        entries: entries(),
        leader_commit: None,
    };
    let base = encode_append(&req);
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
        let _ = decode_append(&b[..cut]);
        let _ = decode_append(&b);
        let _ = decode_entry(&b[1..]);
        let _ = decode_submit_answer(&b);
    }
}
