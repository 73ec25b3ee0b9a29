"""Serverless security through the official Python driver: built-in and user-defined
roles, user-defined functions with roles, call-only keys, tokens and membership,
scoped secrets, history protection, priorities, disabled databases, and secrets that
never leak."""

import time

import pytest
from faunadb import query as q
from faunadb.errors import BadRequest, NotFound, PermissionDenied, Unauthorized


SECRETS = []


def remember(secret):
    SECRETS.append(secret)
    return secret


@pytest.fixture
def tenant(server, admin, request):
    """(admin client, admin secret) of a fresh database with a small schema."""
    name = "sec_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:40]
    admin.query(q.create_database({"name": name}))
    secret = remember(admin.query(q.create_key({"database": q.database(name), "role": "admin"}))["secret"])
    c = server.client(secret)
    c.query(q.create_collection({"name": "accounts"}))
    c.query(q.create_index({"name": "accounts_by_owner", "source": q.collection("accounts"),
                            "terms": [{"field": ["data", "owner"]}]}))
    return c, secret


def key(server, client, role, **extra):
    params = {"role": role}
    params.update(extra)
    return server.client(remember(client.query(q.create_key(params))["secret"]))


def test_builtin_roles(server, tenant):
    adm, _ = tenant
    doc = adm.query(q.create(q.collection("accounts"), {"data": {"owner": "a", "balance": 1}}))
    srv = key(server, adm, "server")
    ro = key(server, adm, "server-readonly")
    cli = key(server, adm, "client")

    assert srv.query(q.get(doc["ref"]))["data"]["balance"] == 1
    srv.query(q.update(doc["ref"], {"data": {"balance": 2}}))
    srv.query(q.create_collection({"name": "more"}))
    with pytest.raises(PermissionDenied):
        srv.query(q.create_database({"name": "nope"}))
    with pytest.raises(PermissionDenied):
        srv.query(q.paginate(q.keys()))
    with pytest.raises(PermissionDenied):
        srv.query(q.create_role({"name": "nope"}))

    assert ro.query(q.get(doc["ref"]))["data"]["balance"] == 2
    assert ro.query(q.paginate(q.match(q.index("accounts_by_owner"), "a")))["data"] == [doc["ref"]]
    for query in [q.update(doc["ref"], {"data": {"balance": 3}}), q.delete(doc["ref"]),
                  q.create(q.collection("accounts"), {}), q.create_collection({"name": "x"}),
                  q.insert(doc["ref"], 1, "create", {"data": {}})]:
        with pytest.raises(PermissionDenied):
            ro.query(query)

    with pytest.raises(PermissionDenied):
        cli.query(q.get(doc["ref"]))
    with pytest.raises(PermissionDenied):
        cli.query(q.paginate(q.match(q.index("accounts_by_owner"), "a")))
    assert cli.query(q.paginate(q.documents(q.collection("accounts"))))["data"] == []
    assert cli.query(q.exists(doc["ref"])) is False


def test_public_schema_for_client_keys(server, tenant):
    adm, _ = tenant
    adm.query(q.create_collection({"name": "board", "permissions": {"read": "public"}}))
    note = adm.query(q.create(q.collection("board"), {"data": {"msg": "hello"}}))
    adm.query(q.create_function({"name": "ping", "body": q.query(q.lambda_("x", "pong")),
                                 "permissions": {"call": "public"}}))
    cli = key(server, adm, "client")
    assert cli.query(q.get(note["ref"]))["data"]["msg"] == "hello"
    assert cli.query(q.call(q.function("ping"), 1)) == "pong"
    with pytest.raises(PermissionDenied):
        cli.query(q.update(note["ref"], {"data": {"msg": "defaced"}}))


def test_custom_role_key_with_predicates(server, tenant):
    adm, _ = tenant
    mine = adm.query(q.create(q.collection("accounts"), {"data": {"owner": "me", "balance": 10}}))
    other = adm.query(q.create(q.collection("accounts"), {"data": {"owner": "you", "balance": 20}}))
    adm.query(q.create_role({
        "name": "teller",
        "privileges": [{
            "resource": q.collection("accounts"),
            "actions": {
                "read": q.query(lambda ref: q.equals("me", q.select(["data", "owner"], q.get(ref)))),
                "write": q.query(lambda old, new: q.gte(q.select(["data", "balance"], new), 0)),
            },
        }, {
            "resource": q.index("accounts_by_owner"),
            "actions": {"read": q.query(lambda terms: q.equals(terms, ["me"]))},
        }],
    }))
    teller = key(server, adm, q.role("teller"))
    assert teller.query(q.get(mine["ref"]))["data"]["balance"] == 10
    with pytest.raises(PermissionDenied):
        teller.query(q.get(other["ref"]))
    teller.query(q.update(other["ref"], {"data": {"balance": 5}}))  # write needs no read
    with pytest.raises(PermissionDenied):
        teller.query(q.update(mine["ref"], {"data": {"balance": -1}}))
    assert teller.query(q.paginate(q.match(q.index("accounts_by_owner"), "me")))["data"] == [mine["ref"]]
    with pytest.raises(PermissionDenied):
        teller.query(q.paginate(q.match(q.index("accounts_by_owner"), "you")))
    page = teller.query(q.paginate(q.documents(q.collection("accounts"))))
    assert page["data"] == [mine["ref"]]
    with pytest.raises(PermissionDenied):
        teller.query(q.create(q.collection("accounts"), {"data": {"owner": "me"}}))


def test_functions_run_with_their_role_and_call_only_keys(server, tenant):
    adm, _ = tenant
    acct = adm.query(q.create(q.collection("accounts"), {"data": {"owner": "z", "balance": 100}}))
    adm.query(q.create_role({
        "name": "bank",
        "privileges": [{"resource": q.collection("accounts"), "actions": {"read": True, "write": True}}],
    }))
    adm.query(q.create_function({
        "name": "withdraw",
        "role": q.role("bank"),
        "body": q.query(lambda ref, amount: q.let(
            {"b": q.select(["data", "balance"], q.get(ref))},
            q.if_(q.lt(q.var("b"), amount), q.abort("insufficient funds"),
                  q.select(["data", "balance"],
                           q.update(ref, {"data": {"balance": q.subtract(q.var("b"), amount)}})))))
    }))
    adm.query(q.create_function({"name": "other", "body": q.query(q.lambda_("x", 1))}))
    adm.query(q.create_role({
        "name": "atm",
        "privileges": [{"resource": q.function("withdraw"),
                        "actions": {"call": q.query(lambda ref, amount: q.lte(amount, 50))}}],
    }))
    atm = key(server, adm, q.role("atm"))
    assert atm.query(q.call(q.function("withdraw"), acct["ref"], 30)) == 70
    with pytest.raises(PermissionDenied):
        atm.query(q.call(q.function("withdraw"), acct["ref"], 60))  # call predicate sees the arguments
    with pytest.raises(BadRequest) as e:
        atm.query(q.call(q.function("withdraw"), acct["ref"], 50))
        atm.query(q.call(q.function("withdraw"), acct["ref"], 50))
    assert e.value.errors[0].code == "call error"
    for query in [q.get(acct["ref"]), q.update(acct["ref"], {"data": {"balance": 1e6}}),
                  q.call(q.function("other"), 1), q.paginate(q.functions()),
                  q.create_function({"name": "evil", "role": "admin", "body": q.query(q.lambda_("x", 1))})]:
        with pytest.raises(PermissionDenied):
            atm.query(query)
    assert atm.query(q.exists(acct["ref"])) is False


def test_udf_roles_cannot_write_history(server, tenant):
    adm, _ = tenant
    acct = adm.query(q.create(q.collection("accounts"), {"data": {"owner": "h", "balance": 1}}))
    adm.query(q.create_role({
        "name": "current",
        "privileges": [{"resource": q.collection("accounts"),
                        "actions": {"read": True, "write": True, "create": True, "delete": True}}],
    }))
    adm.query(q.create_function({
        "name": "rewrite_history",
        "role": q.role("current"),
        "body": q.query(q.lambda_("ts", q.insert(acct["ref"], q.var("ts"), "update",
                                                 {"data": {"balance": 1000000}}))),
    }))
    with pytest.raises(BadRequest) as e:
        adm.query(q.call(q.function("rewrite_history"), acct["ts"]))
    err = e.value.errors[0]
    assert err.code == "call error"
    assert adm.query(q.at(acct["ts"], q.select(["data", "balance"], q.get(acct["ref"])))) == 1


def test_server_key_cannot_escalate_through_functions(server, tenant):
    adm, _ = tenant
    srv = key(server, adm, "server")
    with pytest.raises(PermissionDenied):
        srv.query(q.create_function({"name": "boom", "role": "admin",
                                     "body": q.query(q.lambda_("x", q.create_key({"role": "admin"})))}))
    srv.query(q.create_function({"name": "fine", "role": "server-readonly",
                                 "body": q.query(q.lambda_("x", 1))}))
    with pytest.raises(PermissionDenied):
        srv.query(q.update(q.function("fine"), {"role": "admin"}))


def test_tokens_membership_and_logout(server, tenant):
    adm, _ = tenant
    adm.query(q.create_collection({"name": "members"}))
    vip = adm.query(q.create(q.collection("members"),
                             {"data": {"vip": True}, "credentials": {"password": "s3cret-vip"}}))
    plain = adm.query(q.create(q.collection("members"),
                               {"data": {"vip": False}, "credentials": {"password": "s3cret-plain"}}))
    acct = adm.query(q.create(q.collection("accounts"), {"data": {"owner": "vip-only"}}))
    adm.query(q.create_role({
        "name": "vips",
        "membership": [{"resource": q.collection("members"),
                        "predicate": q.query(lambda ref: q.select(["data", "vip"], q.get(ref)))}],
        "privileges": [{"resource": q.collection("accounts"), "actions": {"read": True}}],
    }))
    assert adm.query(q.identify(vip["ref"], "s3cret-vip")) is True
    assert adm.query(q.identify(vip["ref"], "wrong")) is False
    with pytest.raises(BadRequest):
        adm.query(q.login(vip["ref"], {"password": "wrong"}))
    t_vip = adm.query(q.login(vip["ref"], {"password": "s3cret-vip"}))
    t_plain = adm.query(q.login(plain["ref"], {"password": "s3cret-plain"}))
    vip_c = server.client(remember(t_vip["secret"]))
    plain_c = server.client(remember(t_plain["secret"]))
    assert vip_c.query(q.get(acct["ref"]))["data"]["owner"] == "vip-only"
    with pytest.raises(PermissionDenied):
        plain_c.query(q.get(acct["ref"]))
    assert vip_c.query(q.current_identity()) == vip["ref"]
    assert vip_c.query(q.has_current_token()) is True
    assert vip_c.query(q.current_token()) == t_vip["ref"]
    # Tokens render without their secret.
    tok = adm.query(q.get(t_vip["ref"]))
    assert "secret" not in tok and tok["hashed_secret"] != t_vip["secret"]
    assert vip_c.query(q.logout(False)) is True
    with pytest.raises(Unauthorized):
        vip_c.query(q.now())
    # Deleting the identity revokes its tokens.
    adm.query(q.delete(plain["ref"]))
    with pytest.raises(Unauthorized):
        plain_c.query(q.now())


def test_scoped_secrets(server, admin, tenant):
    adm, secret = tenant
    adm.query(q.create_collection({"name": "people"}))
    p = adm.query(q.create(q.collection("people"), {"data": {"n": 1}}))
    adm.query(q.create_role({
        "name": "peek",
        "privileges": [{"resource": q.collection("people"), "actions": {"read": True}}],
    }))
    adm.query(q.create_database({"name": "inner"}))
    as_role = server.client(secret + ":@role/peek")
    assert as_role.query(q.get(p["ref"]))["data"]["n"] == 1
    with pytest.raises(PermissionDenied):
        as_role.query(q.create_collection({"name": "x"}))
    as_doc = server.client("%s:@doc/people/%s" % (secret, p["ref"].id()))
    assert as_doc.query(q.current_identity()) == p["ref"]
    inner = server.client(secret + ":inner:server")
    inner.query(q.create_collection({"name": "inside"}))
    assert adm.query(q.exists(q.collection("inside", q.database("inner")))) is True
    with pytest.raises(Unauthorized):
        server.client(secret + ":missing:admin").query(q.now())
    srv_secret = remember(adm.query(q.create_key({"role": "server"}))["secret"])
    with pytest.raises(Unauthorized):
        server.client(srv_secret + ":inner:admin").query(q.now())


def test_disabled_databases_and_priorities(server, admin):
    admin.query(q.create_database({"name": "dormant", "priority": 7}))
    s = remember(admin.query(q.create_key({"database": q.database("dormant"), "role": "server"}))["secret"])
    c = server.client(s)
    assert c.query(q.add(1, 1)) == 2
    with pytest.raises(BadRequest):
        admin.query(q.create_database({"name": "too_high", "priority": 501}))
    with pytest.raises(BadRequest):
        admin.query(q.create_key({"role": "server", "priority": 0}))
    admin.query(q.update(q.database("dormant"), {"disabled": True}))
    with pytest.raises(Unauthorized):
        c.query(q.add(1, 1))
    admin.query(q.update(q.database("dormant"), {"disabled": False}))
    assert c.query(q.add(1, 1)) == 2
    assert admin.query(q.select("priority", q.get(q.database("dormant")))) == 7


def test_keys_show_only_hashed_secret_and_secrets_never_leak(server, admin, tenant):
    adm, _ = tenant
    k = adm.query(q.create_key({"role": "server", "data": {"name": "probe"}}))
    remember(k["secret"])
    got = adm.query(q.get(k["ref"]))
    assert "secret" not in got
    assert len(got["hashed_secret"]) == 64 and k["secret"] not in str(got)
    assert adm.query(q.key_from_secret(k["secret"]))["ref"] == k["ref"]
    bogus = "fn" + "A" * 64
    with pytest.raises(Unauthorized) as e:
        server.client(bogus).query(q.now())
    assert bogus not in str(e.value.errors)
    with pytest.raises(NotFound) as e:
        adm.query(q.key_from_secret(bogus))
    assert bogus not in str(e.value.errors)
    time.sleep(0.1)
    log = server.log_tail(10_000_000)
    for s in SECRETS:
        assert s not in log
    # Passwords are stored only as Argon2 hashes.
    adm.query(q.create_collection({"name": "logins"}))
    u = adm.query(q.create(q.collection("logins"), {"credentials": {"password": "hunter2-long"}}))
    creds = adm.query(q.map_(lambda r: q.get(r), q.paginate(q.credentials())))["data"]
    mine = [c for c in creds if c["instance"] == u["ref"]]
    assert mine and mine[0]["hashed_password"].startswith("$argon2id$")
    assert "hunter2-long" not in str(creds)


def test_key_for_a_child_database_takes_the_childs_roles(server, tenant):
    adm, _ = tenant
    adm.query(q.create_database({"name": "kid"}))
    kid = server.client(remember(adm.query(q.create_key({"database": q.database("kid"), "role": "admin"}))["secret"]))
    kid.query(q.create_collection({"name": "toys"}))
    toy = kid.query(q.create(q.collection("toys"), {"data": {"name": "ball"}}))
    kid.query(q.create_role({"name": "looker",
                             "privileges": [{"resource": q.collection("toys"), "actions": {"read": True}}]}))
    with pytest.raises(BadRequest):
        adm.query(q.create_key({"role": q.role("looker")}))  # no such role in the parent
    k = adm.query(q.create_key({"database": q.database("kid"), "role": q.role("looker")}))
    looker = server.client(remember(k["secret"]))
    assert looker.query(q.get(toy["ref"]))["data"]["name"] == "ball"
    with pytest.raises(PermissionDenied):
        looker.query(q.update(toy["ref"], {"data": {"name": "mine"}}))
