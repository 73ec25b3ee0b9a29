"""The Animal Exchange app's setup and purchase transaction, in the Python driver."""

import pytest
from faunadb import query as q
from faunadb.objects import Ref

PLAYERS = [
    {"name": "Alice", "credits": 1000},
    {"name": "Bob", "credits": 1000},
    {"name": "Carol", "credits": 50},
]


def setup_session(server, admin, db_name):
    admin.query(q.create_database({"name": db_name}))
    key = admin.query(q.create_key({"database": q.database(db_name), "role": "server"}))
    client = server.client(key["secret"])
    client.query(q.do(
        q.create_class({"name": "players"}),
        q.create_class({"name": "purchases"}),
        q.create_class({"name": "items"}),
    ))
    client.query(q.do(
        q.create_index({"name": "players", "source": q.class_expr("players")}),
        q.create_index({"name": "items_for_sale", "source": q.class_expr("items"),
                        "terms": [{"field": ["data", "for_sale"]}]}),
        q.create_index({"name": "purchases", "source": q.class_expr("purchases")}),
        q.create_index({"name": "items_by_owner", "source": q.class_expr("items"),
                        "terms": [{"field": ["data", "owner"]}]}),
    ))
    players = client.query(
        q.map_(lambda p: q.create(q.class_expr("players"), {"data": p}), PLAYERS))
    alice, bob, carol = [p["ref"] for p in players]
    items = [
        {"label": "Dog", "for_sale": True, "owner": alice, "price": 200},
        {"label": "Cat", "for_sale": False, "owner": alice, "price": 75},
        {"label": "Cow", "for_sale": True, "owner": bob, "price": 500},
        {"label": "Chicken", "for_sale": True, "owner": carol, "price": 20},
    ]
    client.query(q.foreach(lambda a: q.create(q.class_expr("items"), {"data": a}), items))
    assert client.query(True) is True
    return client, players


def purchase(client, player_ref, item_ref):
    return client.query(q.let(
        {"buyer": q.get(player_ref), "item": q.get(item_ref)},
        q.let(
            {
                "buyerBalance": q.select(["data", "credits"], q.var("buyer")),
                "itemPrice": q.select(["data", "price"], q.var("item")),
                "isForSale": q.select(["data", "for_sale"], q.var("item")),
                "seller": q.get(q.select(["data", "owner"], q.var("item"))),
            },
            q.if_(
                q.not_(q.var("isForSale")),
                "Purchase failed: item not for sale",
                q.if_(
                    q.equals(q.select("ref", q.var("buyer")), q.select("ref", q.var("seller"))),
                    q.do(
                        q.update(q.select("ref", q.var("item")), {"data": {"for_sale": False}}),
                        "Item removed from sale"),
                    q.if_(
                        q.lt(q.var("buyerBalance"), q.var("itemPrice")),
                        "Purchase failed: insufficient funds",
                        q.do(
                            q.create(q.class_expr("purchases"), {"data": {
                                "item": q.select("ref", q.var("item")),
                                "price": q.var("itemPrice"),
                                "buyer": q.select("ref", q.var("buyer")),
                                "seller": q.select("ref", q.var("seller")),
                            }}),
                            q.update(q.select("ref", q.var("buyer")), {"data": {
                                "credits": q.subtract(q.var("buyerBalance"), q.var("itemPrice"))}}),
                            q.update(q.select("ref", q.var("seller")), {"data": {
                                "credits": q.add(q.select(["data", "credits"], q.var("seller")),
                                                 q.var("itemPrice"))}}),
                            q.update(q.select("ref", q.var("item")), {"data": {
                                "owner": q.select("ref", q.var("buyer")), "for_sale": False}}),
                            "Purchase success!"),
                    ),
                ),
            ),
        ),
    ))


def list_purchases(client):
    return client.query(q.map_(
        lambda row: q.let(
            {"row": q.get(row)},
            q.let(
                {
                    "buyer": q.get(q.select(["data", "buyer"], q.var("row"))),
                    "seller": q.get(q.select(["data", "seller"], q.var("row"))),
                    "price": q.select(["data", "price"], q.var("row")),
                    "item": q.get(q.select(["data", "item"], q.var("row"))),
                },
                {
                    "buyer": q.select(["data", "name"], q.var("buyer")),
                    "seller": q.select(["data", "name"], q.var("seller")),
                    "price": q.var("price"),
                    "label": q.select(["data", "label"], q.var("item")),
                    "key": q.select(["ref"], q.var("row")),
                },
            ),
        ),
        q.paginate(q.match(q.index("purchases"))),
    ))


def list_players(client):
    page = client.query(q.map_(lambda row: q.get(row), q.paginate(q.match(q.index("players")))))
    return {p["data"]["name"]: p for p in page["data"]}


def query_player_items(client, refs):
    return client.query(q.map_(
        lambda ref: q.select("data", q.map_(lambda row: q.get(row),
                                            q.paginate(q.match(q.index("items_by_owner"), ref)))),
        refs))


def query_items_for_sale(client):
    return client.query(q.map_(
        lambda row: q.let(
            {"doc": q.get(row)},
            {
                "ref": q.select(["ref"], q.var("doc")),
                "data": {
                    "label": q.select(["data", "label"], q.var("doc")),
                    "price": q.select(["data", "price"], q.var("doc")),
                    "owner": q.select(["data", "owner"], q.var("doc")),
                    "owner_name": q.select(["data", "name"],
                                           q.get(q.select(["data", "owner"], q.var("doc")))),
                },
            }),
        q.paginate(q.match(q.index("items_for_sale"), True))))


@pytest.fixture(scope="module")
def exchange(server, admin):
    client, players = setup_session(server, admin, "py_animal_exchange")
    refs = [p["ref"] for p in players]
    items = {}
    for lst in query_player_items(client, refs):
        for it in lst:
            items[it["data"]["label"]] = it
    return client, refs, items


def test_setup_session(exchange):
    client, refs, items = exchange
    assert len(refs) == 3
    for r in refs:
        assert isinstance(r, Ref)
        assert r.collection() == Ref("players", Ref("collections"))
    players = list_players(client)
    assert {n: p["data"]["credits"] for n, p in players.items()} == \
        {"Alice": 1000, "Bob": 1000, "Carol": 50}
    assert sorted(items) == ["Cat", "Chicken", "Cow", "Dog"]
    for_sale = query_items_for_sale(client)["data"]
    assert sorted((i["data"]["label"], i["data"]["owner_name"]) for i in for_sale) == \
        [("Chicken", "Carol"), ("Cow", "Bob"), ("Dog", "Alice")]
    for name in ("players", "purchases", "items"):
        assert client.query(q.exists(q.class_expr(name))) is True


def test_purchase_branches_and_success(exchange):
    client, refs, items = exchange
    alice, bob, carol = refs

    assert purchase(client, bob, items["Cat"]["ref"]) == "Purchase failed: item not for sale"
    assert purchase(client, carol, items["Cow"]["ref"]) == "Purchase failed: insufficient funds"
    assert purchase(client, carol, items["Chicken"]["ref"]) == "Item removed from sale"
    assert client.query(q.select(["data", "for_sale"], q.get(items["Chicken"]["ref"]))) is False
    assert list_purchases(client)["data"] == []

    assert purchase(client, bob, items["Dog"]["ref"]) == "Purchase success!"
    players = list_players(client)
    assert players["Bob"]["data"]["credits"] == 800
    assert players["Alice"]["data"]["credits"] == 1200
    assert players["Carol"]["data"]["credits"] == 50
    dog = client.query(q.get(items["Dog"]["ref"]))
    assert dog["data"]["owner"] == bob
    assert dog["data"]["for_sale"] is False

    purchases = list_purchases(client)["data"]
    assert len(purchases) == 1
    p = purchases[0]
    assert (p["buyer"], p["seller"], p["price"], p["label"]) == ("Bob", "Alice", 200, "Dog")
    assert p["key"].collection() == Ref("purchases", Ref("collections"))

    owned = query_player_items(client, [alice, bob])
    assert sorted(i["data"]["label"] for i in owned[0]) == ["Cat"]
    assert sorted(i["data"]["label"] for i in owned[1]) == ["Cow", "Dog"]
    assert purchase(client, carol, items["Dog"]["ref"]) == "Purchase failed: item not for sale"

    # Relist (runMakeForSaleQuery) and sell on.
    upd = client.query(q.update(items["Dog"]["ref"], {"data": {"price": 40, "for_sale": True}}))
    assert upd["data"]["label"] == "Dog" and upd["data"]["for_sale"] is True
    assert purchase(client, carol, items["Dog"]["ref"]) == "Purchase success!"
    players = list_players(client)
    assert players["Carol"]["data"]["credits"] == 10
    assert players["Bob"]["data"]["credits"] == 840
    assert sum(p["data"]["credits"] for p in players.values()) == 2050
    assert len(list_purchases(client)["data"]) == 2
