"""Streams through the Python driver (httpx over h2c to POST /stream): a document
stream sees create/update/delete in order with diff/prev, a set stream sees add and
remove, and a stream of a bad expression gets an error event."""

import threading

from faunadb import query as q


def _run(client, expr, options, until, writes, timeout=20):
    """Start a stream on its own thread, do `writes()` once it started, and return the
    events it saw when `until(events)` holds (the stream is closed then)."""
    events = []
    started = threading.Event()
    done = threading.Event()
    box = {}

    def on(kind):
        def handler(ev):
            events.append((kind, ev))
            if kind == "start":
                started.set()
            if kind == "error" or until(events):
                done.set()
                started.set()  # no more waiting for a start
                box["sub"].close()
        return handler

    sub = client.stream(expr, options, on("start"), on("error"), on("version"), on("history_rewrite"), on("set"))
    box["sub"] = sub
    t = threading.Thread(target=sub.start, daemon=True)
    t.start()
    assert started.wait(timeout), "stream did not start: %r" % events
    if not done.is_set():
        writes()
    assert done.wait(timeout), "stream did not end: %r" % events
    return events


def test_document_stream(admin):
    admin.query(q.create_collection({"name": "py_stream_docs"}))
    ref = q.ref(q.collection("py_stream_docs"), "7")

    def writes():
        admin.query(q.create(ref, {"data": {"n": 1}}))
        admin.query(q.update(ref, {"data": {"n": 2}}))
        admin.query(q.delete(ref))

    events = _run(
        admin, ref, {"fields": ["action", "document", "diff", "prev"]},
        lambda evs: len([e for e in evs if e[0] == "version"]) >= 3, writes)
    assert events[0][0] == "start", events
    versions = [e[1].event for e in events if e[0] == "version"]
    assert [v["action"] for v in versions] == ["create", "update", "delete"]
    assert versions[1]["document"]["data"] == {"n": 2}
    assert versions[1]["diff"]["data"] == {"n": 2}
    assert versions[1]["prev"]["data"] == {"n": 1}
    txns = [e[1].txn for e in events if e[0] == "version"]
    assert txns == sorted(txns) and len(set(txns)) == 3


def test_set_stream(admin):
    admin.query(q.create_collection({"name": "py_stream_set"}))

    def writes():
        doc = admin.query(q.create(q.collection("py_stream_set"), {"data": {}}))
        admin.query(q.delete(doc["ref"]))

    events = _run(
        admin, q.documents(q.collection("py_stream_set")), None,
        lambda evs: len([e for e in evs if e[0] == "set"]) >= 2, writes)
    sets = [e[1].event for e in events if e[0] == "set"]
    assert [s["action"] for s in sets] == ["add", "remove"]


def test_unstreamable_expression_is_an_error(admin):
    events = _run(admin, q.add(1, 2), None, lambda evs: False, lambda: None)
    kinds = [e[0] for e in events]
    assert kinds == ["error"], events


def test_history_rewrite_and_permission_loss(admin, server):
    """Insert into a document's history makes a `history_rewrite` event; a key whose
    role loses read access ends its stream with a `permission denied` error event."""
    admin.query(q.create_collection({"name": "py_stream_hist"}))
    admin.query(q.create_role({
        "name": "py_hist_reader",
        "privileges": [{"resource": q.collection("py_stream_hist"), "actions": {"read": True}}],
    }))
    ref = q.ref(q.collection("py_stream_hist"), "1")
    created = admin.query(q.create(ref, {"data": {"v": 1}}))
    past = created["ts"] - 1000
    key = admin.query(q.create_key({"role": q.role("py_hist_reader")}))
    client = server.client(key["secret"])

    def writes():
        admin.query(q.insert(ref, past, "create", {"data": {"v": 0}}))
        admin.query(q.update(ref, {"data": {"v": 2}}))
        admin.query(q.update(q.role("py_hist_reader"), {"privileges": []}))
        admin.query(q.update(ref, {"data": {"v": 3}}))

    events = _run(client, ref, None, lambda evs: False, writes)
    kinds = [e[0] for e in events]
    assert kinds == ["start", "history_rewrite", "version", "error"], events
    rewrite = events[1][1].event
    assert rewrite["action"] == "create"
    assert rewrite["document"]["ts"] == past
    assert rewrite["document"]["data"] == {"v": 0}
    assert events[2][1].event["document"]["data"] == {"v": 2}
    assert events[3][1].error["code"] == "permission denied"


def test_history_edits_on_set_streams(admin):
    """v4 makes a `set` event of every index write, whatever its valid ts: an Insert of
    a new document at a past ts is an `add` whose document.ts is that ts (txn: the edit's
    commit); its Remove takes that row away, shown (as v4 does) with the row's action."""
    admin.query(q.create_collection({"name": "py_stream_sethist"}))
    admin.query(q.create_index({
        "name": "py_sethist_by_color", "source": q.collection("py_stream_sethist"),
        "terms": [{"field": ["data", "color"]}]}))
    anchor = admin.query(q.create(q.collection("py_stream_sethist"), {"data": {"color": "none"}}))
    past = anchor["ts"] - 1000
    ref = q.ref(q.collection("py_stream_sethist"), "42")
    commits = []

    def writes():
        commits.append(admin.query(q.let({"r": q.insert(ref, past, "create", {"data": {"color": "blue"}})},
                                         q.to_micros(q.now()))))
        commits.append(admin.query(q.let({"r": q.remove(ref, past, "create")}, q.to_micros(q.now()))))

    for expr in (q.documents(q.collection("py_stream_sethist")), q.match(q.index("py_sethist_by_color"), "blue")):
        del commits[:]
        events = _run(admin, expr, {"fields": ["action", "document"]},
                      lambda evs: len([e for e in evs if e[0] == "set"]) >= 2, writes)
        sets = [e[1] for e in events if e[0] == "set"]
        assert [s.event["action"] for s in sets] == ["add", "add"], events
        assert [s.event["document"]["ts"] for s in sets] == [past, past]
        assert [s.event["document"]["ref"].id() for s in sets] == ["42", "42"]
        assert [s.txn for s in sets] == commits
    assert admin.query(q.paginate(q.events(q.match(q.index("py_sethist_by_color"), "blue"))))["data"] == []


def test_change_feed_pages_one_transaction(admin):
    """120 events at one ts, paged with size 7 forwards (`after`) and backwards
    (`before`): every event exactly once, in the order of one big page."""
    admin.query(q.create_collection({"name": "py_feed_bulk"}))
    ids = [str(2000 + i) for i in range(120)]
    admin.query(q.foreach(q.lambda_("id", q.create(q.ref(q.collection("py_feed_bulk"), q.var("id")), {"data": {}})),
                          ids))
    feed = q.events(q.documents(q.collection("py_feed_bulk")))

    def key(e):
        return (e["ts"], e["action"], e["document"].id())

    whole = [key(e) for e in admin.query(q.paginate(feed, size=1000))["data"]]
    assert len(whole) == 120 and len(set(whole)) == 120
    fwd, after = [], None
    while True:
        page = admin.query(q.paginate(feed, size=7, after=after) if after else q.paginate(feed, size=7))
        assert len(page["data"]) <= 7
        fwd += [key(e) for e in page["data"]]
        after = page.get("after")
        if not after:
            break
    # The driver leaves out a null `before`; a bare ts after every event starts at the end.
    back, before = [], whole[-1][0] + 1
    while True:
        page = admin.query(q.paginate(feed, size=7, before=before))
        back = [key(e) for e in page["data"]] + back
        before = page.get("before")
        if not before:
            break
    assert fwd == whole
    assert back == whole
