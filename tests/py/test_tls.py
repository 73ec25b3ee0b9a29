"""The official Python driver over https against `tally serve --tls-cert`, trusting a test
CA made by `tally cluster init-certs`: queries (requests, HTTP/1.1 + TLS) and streams
(httpx, HTTP/2 only, chosen by ALPN on the same port); and what a client that gets the
scheme wrong sees."""

import os
import shutil
import subprocess
import tempfile
import threading

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


def test_stream_over_https(tls_server, monkeypatch):
    # The driver's stream client is `httpx.Client(http2=True, http1=False)` with default
    # verification, which trusts SSL_CERT_FILE: the test CA goes there. HTTP/2 is the only
    # protocol it offers, so the stream proves the server negotiated h2 by ALPN.
    monkeypatch.setenv("SSL_CERT_FILE", tls_server.ca)
    c = tls_server.client()
    c.query(q.create_collection({"name": "tls_stream"}))
    ref = q.ref(q.collection("tls_stream"), "1")
    c.query(q.create(ref, {"data": {"n": 0}}))
    events, started, done = [], threading.Event(), threading.Event()
    box = {}

    def on(kind):
        def handler(ev):
            events.append((kind, ev))
            if kind == "start":
                started.set()
            if kind == "error" or len([e for e in events if e[0] == "version"]) >= 2:
                started.set()
                done.set()
                box["sub"].close()
        return handler

    sub = c.stream(ref, None, on("start"), on("error"), on("version"))
    box["sub"] = sub
    threading.Thread(target=sub.start, daemon=True).start()
    assert started.wait(20), events
    c.query(q.update(ref, {"data": {"n": 1}}))
    c.query(q.update(ref, {"data": {"n": 2}}))
    assert done.wait(20), events
    assert [e[0] for e in events] == ["start", "version", "version"], events
    assert [e[1].event["document"]["data"]["n"] for e in events[1:]] == [1, 2]


def test_stream_refuses_a_server_it_does_not_trust(tls_server, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    c = tls_server.client()
    events, done = [], threading.Event()

    def on(kind):
        def handler(ev):
            events.append((kind, ev))
            done.set()
        return handler

    sub = c.stream(q.ref(q.collection("tls_notes"), "1"), None, on("start"), on("error"))
    t = threading.Thread(target=lambda: _run_capturing(sub, events, done), daemon=True)
    t.start()
    assert done.wait(20), events
    assert events and events[0][0] == "error", events
    assert "CERTIFICATE_VERIFY_FAILED" in repr(events[0][1]) or "certificate" in repr(events[0][1]).lower(), events


def _run_capturing(sub, events, done):
    try:
        sub.start()
    except Exception as e:  # pylint: disable=broad-except
        events.append(("error", e))
        done.set()
