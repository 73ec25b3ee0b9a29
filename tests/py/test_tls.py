"""The official Python driver over https (HTTP/1.1 + TLS) against `tally serve --tls-cert`,
trusting a test CA made by `tally cluster init-certs`; and what a client that gets the
scheme wrong sees."""

import os
import shutil
import subprocess
import tempfile

import pytest
import requests

from faunadb import query as q
from faunadb.errors import BadRequest

from tally_server import TallyServer, tally_bin


def init_certs(out):
    subprocess.run([tally_bin(), "cluster", "init-certs", "--out", out], check=True,
                   stdout=subprocess.DEVNULL, timeout=60)
    return {name: os.path.join(out, name) for name in ("ca.pem", "server.pem", "server.key")}


@pytest.fixture(scope="module")
def certs():
    d = tempfile.mkdtemp(prefix="tally-py-certs-")
    try:
        yield init_certs(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_server(certs):
    s = TallyServer(extra_args=["--tls-cert", certs["server.pem"], "--tls-key", certs["server.key"]],
                    ca=certs["ca.pem"]).start()
    try:
        yield s
    finally:
        s.stop()


def test_driver_over_https(tls_server):
    c = tls_server.client()
    assert c.session.verify == tls_server.ca
    c.query(q.create_collection({"name": "tls_notes"}))
    ref = c.query(q.create(q.collection("tls_notes"), {"data": {"n": 7}}))["ref"]
    assert c.query(q.select(["data", "n"], q.get(ref))) == 7
    page = c.query(q.paginate(q.documents(q.collection("tls_notes"))))
    assert [r.id() for r in page["data"]] == [ref.id()]


def test_driver_refuses_a_server_it_does_not_trust(tls_server):
    # Without the test CA the certificate cannot be verified: TLS is real, not skipped.
    c = tls_server.client(verify=True)
    with pytest.raises(requests.exceptions.SSLError):
        c.query(q.add(1, 2))


def test_plain_http_to_the_tls_port_is_told_to_use_https(tls_server):
    c = tls_server.client(scheme="http")
    with pytest.raises(BadRequest) as e:
        c.query(q.add(1, 2))
    assert "https" in e.value.errors[0].description
