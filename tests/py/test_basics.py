"""CRUD, indexes, pagination, values and error classes through the Python driver."""

import datetime

import pytest
from faunadb import query as q
from faunadb.errors import BadRequest, NotFound, PermissionDenied, Unauthorized
from faunadb.objects import FaunaTime, Ref
from faunadb.query import _Expr


def _err(excinfo):
    errs = excinfo.value.errors
    assert len(errs) >= 1
    return errs[0]


# -- CRUD ---------------------------------------------------------------------

def test_crud(db):
    coll = db.query(q.create_collection({"name": "things"}))
    assert coll["name"] == "things"
    assert coll["ref"] == Ref("things", Ref("collections"))

    doc = db.query(q.create(q.collection("things"), {"data": {"a": 1, "o": {"x": 1, "y": 2}}}))
    ref = doc["ref"]
    assert ref.collection() == Ref("things", Ref("collections"))
    assert ref.id().isdigit()
    assert isinstance(doc["ts"], int)

    got = db.query(q.get(ref))
    assert got["ref"] == ref and got["ts"] == doc["ts"]
    assert got["data"] == {"a": 1, "o": {"x": 1, "y": 2}}

    upd = db.query(q.update(ref, {"data": {"b": 2, "o": {"y": None, "z": 3}}}))
    assert upd["ts"] > doc["ts"]
    assert upd["data"] == {"a": 1, "b": 2, "o": {"x": 1, "z": 3}}

    rep = db.query(q.replace(ref, {"data": {"only": True}}))
    assert rep["data"] == {"only": True}

    db.query(q.delete(ref))
    assert db.query(q.exists(ref)) is False
    with pytest.raises(NotFound) as ei:
        db.query(q.get(ref))
    assert _err(ei).code == "instance not found"


def test_create_with_id_and_duplicate(db):
    db.query(q.create_collection({"name": "things"}))
    ref = q.ref(q.collection("things"), "42")
    created = db.query(q.create(ref, {"data": {"v": 1}}))
    assert created["ref"].id() == "42"
    with pytest.raises(BadRequest) as ei:
        db.query(q.create(ref, {"data": {"v": 2}}))
    e = _err(ei)
    assert e.code == "instance already exists"
    assert e.position == ["create"]


# -- indexes and pagination ------------------------------------------------------

def test_index_terms_values_unique(db):
    db.query(q.create_collection({"name": "people"}))
    db.query(q.create_index({
        "name": "people_by_city", "source": q.collection("people"),
        "terms": [{"field": ["data", "city"]}],
        "values": [{"field": ["data", "age"], "reverse": True}, {"field": ["data", "name"]}],
    }))
    db.query(q.create_index({
        "name": "people_by_email", "source": q.collection("people"), "unique": True,
        "terms": [{"field": ["data", "email"]}],
    }))
    people = [("ann", "Oslo", 31), ("bob", "Oslo", 45), ("cid", "Rome", 22), ("dee", "Oslo", 19)]
    db.query(q.foreach(
        lambda p: q.create(q.collection("people"), {"data": {
            "name": q.select(0, p), "city": q.select(1, p), "age": q.select(2, p),
            "email": q.concat([q.select(0, p), "@example.com"])}}),
        [list(p) for p in people]))

    page = db.query(q.paginate(q.match(q.index("people_by_city"), "Oslo")))
    assert page["data"] == [[45, "bob"], [31, "ann"], [19, "dee"]]
    assert db.query(q.paginate(q.match(q.index("people_by_city"), "Paris")))["data"] == []

    with pytest.raises(BadRequest) as ei:
        db.query(q.create(q.collection("people"), {"data": {"email": "ann@example.com"}}))
    assert _err(ei).code == "instance not unique"

    ann = db.query(q.get(q.match(q.index("people_by_email"), "ann@example.com")))
    assert ann["data"]["name"] == "ann"


def test_paginate_cursors(db):
    db.query(q.create_collection({"name": "nums"}))
    db.query(q.create_index({"name": "nums_by_n", "source": q.collection("nums"),
                             "values": [{"field": ["data", "n"]}, {"field": ["ref"]}]}))
    db.query(q.foreach(lambda n: q.create(q.collection("nums"), {"data": {"n": n}}),
                       [(i * 7) % 23 for i in range(23)]))
    s = q.match(q.index("nums_by_n"))

    p1 = db.query(q.paginate(s, size=10))
    assert [x[0] for x in p1["data"]] == list(range(10))
    assert "before" not in p1 and "after" in p1
    p2 = db.query(q.paginate(s, size=10, after=p1["after"]))
    assert [x[0] for x in p2["data"]] == list(range(10, 20))
    p3 = db.query(q.paginate(s, size=10, after=p2["after"]))
    assert [x[0] for x in p3["data"]] == [20, 21, 22]
    assert "after" not in p3
    back = db.query(q.paginate(s, size=10, before=p2["before"]))
    assert [x[0] for x in back["data"]] == list(range(10))

    everything = db.query(q.paginate(q.documents(q.collection("nums")), size=1000))
    assert len(everything["data"]) == 23
    assert db.query(q.count(q.documents(q.collection("nums")))) == 23


def test_time_travel(db):
    db.query(q.create_collection({"name": "tt"}))
    v1 = db.query(q.create(q.collection("tt"), {"data": {"v": 1}}))
    v2 = db.query(q.update(v1["ref"], {"data": {"v": 2}}))
    assert db.query(q.at(v1["ts"], q.get(v1["ref"])))["data"]["v"] == 1
    assert db.query(q.get(v1["ref"], ts=v1["ts"]))["data"]["v"] == 1
    assert db.query(q.get(v1["ref"]))["data"]["v"] == 2
    assert db.query(q.at(v1["ts"] - 1, q.exists(v1["ref"]))) is False


def test_document_events(db):
    db.query(q.create_collection({"name": "ev"}))
    v1 = db.query(q.create(q.collection("ev"), {"data": {"v": 1}}))
    v2 = db.query(q.update(v1["ref"], {"data": {"v": 2}}))
    events = db.query(q.paginate(q.events(v1["ref"])))["data"]
    assert [e["action"] for e in events] == ["create", "update"]
    assert [e["ts"] for e in events] == [v1["ts"], v2["ts"]]


# -- values ---------------------------------------------------------------------

def test_value_round_trip(db):
    db.query(q.create_collection({"name": "vals"}))
    target = db.query(q.create(q.collection("vals"), {"data": {}}))["ref"]
    data = {
        "bytes": bytearray(b"\xfb\xff\xfe\x00\x01\x7f"),
        "date": datetime.date(2024, 2, 29),
        "time": FaunaTime("2024-02-29T12:34:56.123456789Z"),
        "ref": target,
        "long": 2 ** 62,
        "neg_long": -(2 ** 63),
        "double": 2.0,
        "frac": 0.1,
        "nested": {"@foo": {"@bar": [1, {"@baz": "x"}]}, "plain": [1, [2, [3]]]},
        "unicode": "h\u00e9llo \U0001f436 \"q\" \\ \n",
        "flag": False,
    }
    ref = db.query(q.create(q.collection("vals"), {"data": data}))["ref"]
    got = db.query(q.get(ref))["data"]
    assert got["bytes"] == bytearray(b"\xfb\xff\xfe\x00\x01\x7f")
    assert got["date"] == datetime.date(2024, 2, 29)
    assert isinstance(got["time"], FaunaTime)
    assert got["time"].value == "2024-02-29T12:34:56.123456789Z"
    assert got["ref"] == target
    assert got["long"] == 2 ** 62 and isinstance(got["long"], int)
    assert got["neg_long"] == -(2 ** 63)
    assert got["double"] == 2.0 and isinstance(got["double"], float)
    assert got["frac"] == 0.1
    assert got["nested"] == data["nested"]
    assert got["unicode"] == data["unicode"]
    assert got["flag"] is False
    assert db.query(q.is_double(q.select(["data", "double"], q.get(ref)))) is True
    assert db.query(q.is_integer(q.select(["data", "long"], q.get(ref)))) is True
    assert db.query(q.add(2 ** 62, 2 ** 62 - 1)) == 2 ** 63 - 1


# -- errors -----------------------------------------------------------------------

def test_error_classes(server, db, make_db):
    with pytest.raises(BadRequest) as ei:
        db.query(_Expr({"foo": "bar"}))
    assert _err(ei).code == "invalid expression"

    with pytest.raises(BadRequest) as ei:
        db.query(q.add(1, "two"))
    e = _err(ei)
    assert e.code == "invalid argument"
    assert e.position == ["add", 1]

    with pytest.raises(NotFound) as ei:
        db.query(q.select("a", {}))
    assert _err(ei).code == "value not found"
    assert _err(ei).position == ["from"]

    db.query(q.create_collection({"name": "c"}))
    with pytest.raises(NotFound) as ei:
        db.query(q.get(q.ref(q.collection("c"), "123")))
    assert _err(ei).code == "instance not found"

    with pytest.raises(BadRequest) as ei:
        db.query(q.create_collection({"name": 123}))
    e = _err(ei)
    assert e.code == "validation failed"
    assert e.position == ["create_collection"]
    assert [(f.code, f.field) for f in e.failures] == [("invalid type", ["name"])]

    with pytest.raises(BadRequest) as ei:
        db.query(q.abort("stop right there"))
    assert _err(ei).code == "transaction aborted"
    assert _err(ei).description == "stop right there"

    with pytest.raises(Unauthorized) as ei:
        server.client("bad_key").query(q.add(1, 1))
    assert _err(ei).code == "unauthorized"

    client_key_client = make_db("client")
    with pytest.raises(PermissionDenied) as ei:
        client_key_client.query(q.paginate(q.databases()))
    assert _err(ei).code == "permission denied"
    assert _err(ei).position == ["paginate"]

    server_key_client = make_db("server")
    with pytest.raises(PermissionDenied) as ei:
        server_key_client.query(q.create_database({"name": "not_allowed"}))
    assert _err(ei).code == "permission denied"


def test_txn_time_and_ping(server, db):
    assert server.client().ping("node") == "Scope node is OK"
    db.query(q.create_collection({"name": "t"}))
    before = db.get_last_txn_time()
    assert isinstance(before, int)
    doc = db.query(q.create(q.collection("t"), {"data": {}}))
    assert db.get_last_txn_time() == doc["ts"]
    assert doc["ts"] > before


def test_child_key_cannot_see_parent(server, admin, make_db):
    parent = make_db("admin", name="py_parent")
    parent.query(q.create_collection({"name": "private"}))
    parent.query(q.create_database({"name": "py_child"}))
    key = parent.query(q.create_key({"database": q.database("py_child"), "role": "admin"}))
    child = server.client(key["secret"])
    assert child.query(q.exists(q.collection("private"))) is False
    assert child.query(q.paginate(q.collections()))["data"] == []
    assert admin.query(q.exists(
        q.collection("private", q.database("py_parent")))) is True
    assert admin.query(q.exists(q.database("py_child", q.database("py_parent")))) is True
