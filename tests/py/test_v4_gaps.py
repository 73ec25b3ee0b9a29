"""The last FQL v4 gaps through the Python driver: path refs, self refs, Identity(),
HasIdentity(), CurrentToken() for keys, Query values in v4's shape."""

import pytest
from faunadb import query as q
from faunadb.errors import BadRequest, Unauthorized
from faunadb.objects import Query, Ref


def test_path_refs_and_identity(server, make_db):
    adm = make_db("admin")
    adm.query(q.create_collection({"name": "users"}))
    adm.query(q.create(q.ref(q.collection("users"), "7"), {"credentials": {"password": "pw"}, "data": {"n": 7}}))
    got = adm.query(q.get(q.ref("collections/users/7")))
    assert got["data"] == {"n": 7}
    assert got["ref"] == Ref("7", Ref("users", Ref("collections")))

    tok = adm.query(q.login(q.ref("classes/users/7"), {"password": "pw"}))
    tc = server.client(tok["secret"])
    assert tc.query(q.identity()) == got["ref"]
    assert tc.query(q.has_identity()) is True
    assert tc.query(q.ref("collections/users/self")) == got["ref"]
    assert tc.query(q.ref("tokens/self")) == tok["ref"]
    assert adm.query(q.has_identity()) is False
    with pytest.raises(BadRequest) as e:
        adm.query(q.ref("tokens/self"))
    assert e.value.errors[0].code == "invalid expression"


def test_current_token_for_keys(server, make_db):
    adm = make_db("admin")
    # A key made in the parent for this database: no token metadata (as v4).
    with pytest.raises(Unauthorized) as e:
        adm.query(q.current_token())
    assert adm.query(q.has_current_token()) is False
    # A key that lives in the database it opens.
    key = adm.query(q.create_key({"role": "server"}))
    kc = server.client(key["secret"])
    assert kc.query(q.current_token()) == key["ref"]
    assert kc.query(q.has_current_token()) is True


def test_query_values_round_trip(make_db):
    adm = make_db("admin")
    body = q.query(q.lambda_("x", q.let({"b": 1, "a": q.add(q.var("b"), 1)}, q.add(q.var("x"), q.var("a")))))
    adm.query(q.create_function({"name": "f", "body": body}))
    fetched = adm.query(q.select(["body"], q.get(q.function("f"))))
    assert isinstance(fetched, Query)
    assert fetched.value["api_version"] == "4"
    assert list(fetched.value["expr"]["let"].keys()) == ["b", "a"]
    adm.query(q.create_function({"name": "g", "body": fetched}))
    assert adm.query(q.call(q.function("g"), 5)) == 7
