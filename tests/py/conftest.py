import os
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from faunadb import query as q  # noqa: E402

from tally_server import TallyServer  # noqa: E402


@pytest.fixture(scope="session")
def server():
    """One Tally server (fresh temp data dir) for the whole session."""
    s = TallyServer().start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def admin(server):
    """Root-key client: admin of the root database."""
    return server.client()


@pytest.fixture
def make_db(server, admin, request):
    """Factory: make_db(role="server") -> client holding a key for a fresh child database."""
    counter = [0]

    def make(role="server", name=None):
        counter[0] += 1
        if name is None:
            base = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
            name = "%s_%d" % (base, counter[0])
        admin.query(q.create_database({"name": name}))
        key = admin.query(q.create_key({"database": q.database(name), "role": role}))
        return server.client(key["secret"])

    return make


@pytest.fixture
def db(make_db):
    """Server-role client for a fresh child database."""
    return make_db("server")
