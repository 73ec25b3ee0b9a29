"""Durability: acknowledged writes survive `kill -9` and a restart on the same data dir."""

import shutil
import threading
import time

from faunadb import query as q

from tally_server import TallyServer

WRITERS = 4
KILL_AFTER_EXTRA_ACKS = 40
EXTRA_ACK_WAIT_S = 30.0


def _doc(seq, phase):
    return {"seq": seq, "phase": phase, "payload": "write-%d-%s" % (seq, "x" * (seq % 50))}


def _check_all(client, acked):
    """Every acknowledged write is present with exactly its data."""
    ids = sorted(acked)
    for start in range(0, len(ids), 200):
        chunk = ids[start:start + 200]
        got = client.query(q.map_(
            lambda r: q.if_(q.exists(r), q.select(["data"], q.get(r)), None),
            [q.ref(q.collection("ledger"), i) for i in chunk]))
        for i, data in zip(chunk, got):
            assert data == acked[i], "acknowledged write %s lost or changed: %r" % (i, data)


def _write_burst_and_kill(srv, acked, phase, base):
    """Start WRITERS threads of sequential creates; SIGKILL the server mid-stream."""
    lock = threading.Lock()
    stop = threading.Event()
    counts = {"extra": 0, "errors": 0}

    def writer(tid):
        client = srv.client(timeout=15)
        n = 0
        while not stop.is_set() and n < 10000:
            seq = base + tid * 10000 + n
            doc_id = str(seq)
            data = _doc(seq, phase)
            try:
                client.query(q.create(q.ref(q.collection("ledger"), doc_id), {"data": data}))
            except Exception:  # pylint: disable=broad-except
                with lock:
                    counts["errors"] += 1
                return  # the server is gone (or refused): stop this writer
            with lock:
                acked[doc_id] = data
                counts["extra"] += 1
            n += 1

    threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(WRITERS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + EXTRA_ACK_WAIT_S
    while time.monotonic() < deadline:
        with lock:
            if counts["extra"] >= KILL_AFTER_EXTRA_ACKS:
                break
            if counts["errors"] == WRITERS:
                break
        time.sleep(0.005)
    srv.kill9()  # writes are still streaming in
    stop.set()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "writer thread did not stop after the kill"
    return counts


def test_kill9_keeps_acknowledged_writes():
    first = TallyServer().start()
    data_dir, root_key = first.data_dir, first.root_key
    servers = [first]
    try:
        c = first.client()
        c.query(q.create_collection({"name": "ledger"}))
        c.query(q.create_index({"name": "ledger_by_seq", "source": q.collection("ledger"),
                                "terms": [{"field": ["data", "seq"]}]}))
        acked = {}
        for i in range(50):
            data = _doc(i, "initial")
            res = c.query(q.create(q.ref(q.collection("ledger"), str(i)), {"data": data}))
            assert res["ref"].id() == str(i)
            acked[str(i)] = data
        # An acknowledged update must survive too.
        c.query(q.update(q.ref(q.collection("ledger"), "7"), {"data": {"phase": "updated"}}))
        acked["7"] = dict(acked["7"], phase="updated")

        counts = _write_burst_and_kill(first, acked, "burst1", 100000)
        print("burst 1: %(extra)d writes acknowledged before kill -9, %(errors)d writers cut off"
              % counts)
        assert counts["extra"] >= 1, "no writes were acknowledged during the burst"
        assert not first.alive

        second = TallyServer(data_dir=data_dir, root_key=root_key).start()
        servers.append(second)
        c2 = second.client()
        _check_all(c2, acked)
        # The index came back consistent with the documents.
        hit = c2.query(q.paginate(q.match(q.index("ledger_by_seq"), 7)))["data"]
        assert [r.id() for r in hit] == ["7"]
        assert hit[0].collection().id() == "ledger"
        total = c2.query(q.count(q.documents(q.collection("ledger"))))
        assert total >= len(acked)
        # It takes new writes, with later timestamps.
        new = c2.query(q.create(q.ref(q.collection("ledger"), "999999"),
                                {"data": _doc(999999, "after-restart")}))
        old_ts = c2.query(q.select("ts", q.get(q.ref(q.collection("ledger"), "49"))))
        assert new["ts"] > old_ts
        acked["999999"] = _doc(999999, "after-restart")

        # A second crash right after an acknowledged write, then another restart.
        counts2 = _write_burst_and_kill(second, acked, "burst2", 200000)
        print("burst 2: %(extra)d writes acknowledged before kill -9, %(errors)d writers cut off"
              % counts2)
        assert counts2["extra"] >= 1
        third = TallyServer(data_dir=data_dir, root_key=root_key).start()
        servers.append(third)
        c3 = third.client()
        _check_all(c3, acked)
        assert c3.query(q.add(1, 1)) == 2
    finally:
        for s in reversed(servers):
            if s.alive:
                s.stop(remove_data=False)
        for s in servers:
            shutil.rmtree(s.work_dir, ignore_errors=True)
