"""Start/stop a Tally server for the Python driver suites.

Environment:
  TALLY_BIN          path to the tally binary (default: <repo>/target/release/tally)
  TALLY_KEEP_DATA=1  keep temp data dirs (for debugging)
"""

import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from requests.adapters import HTTPAdapter

from faunadb.client import FaunaClient

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0
REQUEST_TIMEOUT_S = 60.0

# The faunadb 4.5 driver asks the Python package index for its latest version in every
# FaunaClient constructor. These tests talk to 127.0.0.1 only, so that
# check (which has nothing to do with the wire protocol) is switched off.
FaunaClient.check_new_version = lambda self: None


def tally_bin():
    env = os.environ.get("TALLY_BIN")
    if env:
        return os.path.abspath(os.path.join(REPO_ROOT, env))
    return os.path.join(REPO_ROOT, "target", "release", "tally")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class _TimeoutAdapter(HTTPAdapter):
    """requests ignores Session.timeout (which the driver sets); enforce one."""

    def __init__(self, timeout, **kw):
        self._timeout = timeout
        super().__init__(**kw)

    def send(self, request, **kw):
        if kw.get("timeout") is None:
            kw["timeout"] = self._timeout
        return super().send(request, **kw)


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(port, path="/ping", timeout=2.0, ca=None):
    """GET on loopback (https trusting the CA file `ca` if given); returns (status, body) or raises."""
    if ca:
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=ca)))
        url = "https://%s:%d%s" % (HOST, port, path)
    else:
        opener, url = _NO_PROXY, "http://%s:%d%s" % (HOST, port, path)
    try:
        with opener.open(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


class TallyServer(object):
    def __init__(self, data_dir=None, root_key=None, binary=None, extra_args=None, ca=None):
        self.bin = binary or tally_bin()
        self.root_key = root_key or "tally-test-root-" + secrets.token_hex(8)
        self.work_dir = tempfile.mkdtemp(prefix="tally-py-")
        self.owns_data_dir = data_dir is None
        # Extra `tally serve` flags; `ca`: the CA file to trust when they turn on https.
        self.extra_args = list(extra_args or [])
        self.ca = ca
        self.data_dir = data_dir or os.path.join(self.work_dir, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.log_path = os.path.join(self.work_dir, "server.log")
        self.port = None
        self.proc = None
        self._log = None
        self._clients = []

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout=READY_TIMEOUT_S):
        if not os.path.exists(self.bin):
            raise RuntimeError(
                "tally binary not found at %s; run `cargo build --release -p tally` "
                "or set TALLY_BIN" % self.bin)
        self.port = free_port()
        listen = "%s:%d" % (HOST, self.port)
        self._log = open(self.log_path, "ab")
        self._log.write(("\n=== start %s ===\n" % listen).encode())
        self._log.flush()
        env = dict(os.environ, RUST_BACKTRACE="1")
        self.proc = subprocess.Popen(
            [self.bin, "serve", "--data-dir", self.data_dir, "--listen", listen,
             "--root-key", self.root_key] + self.extra_args,
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("tally exited with %s before becoming ready:\n%s"
                                   % (self.proc.returncode, self.log_tail()))
            try:
                status, _ = http_get(self.port, "/ping", timeout=1.0, ca=self.ca)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("tally not ready within %.0f s:\n%s" % (timeout, self.log_tail()))

    def stop(self, remove_data=True):
        self._close_clients()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_GRACE_S)
        self.proc = None
        if self._log:
            self._log.close()
            self._log = None
        if remove_data and not os.environ.get("TALLY_KEEP_DATA"):
            if self.owns_data_dir:
                shutil.rmtree(self.work_dir, ignore_errors=True)

    def kill9(self):
        """SIGKILL the server, no grace (clients are left to see the failure)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(STOP_GRACE_S)
        self.proc = None
        if self._log:
            self._log.close()
            self._log = None

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()
        except OSError:
            return b""

    def log_tail(self, n=4000):
        return self._read_log()[-n:].decode("utf-8", "replace")

    # -- clients ---------------------------------------------------------------

    def client(self, secret=None, timeout=REQUEST_TIMEOUT_S, scheme=None, verify=None, **kw):
        """A driver client; over https (trusting `verify`, default the server's CA) when
        the server serves TLS or scheme="https"."""
        scheme = scheme or ("https" if self.ca else "http")
        c = FaunaClient(secret=self.root_key if secret is None else secret,
                        domain=HOST, port=self.port, scheme=scheme, timeout=timeout, **kw)
        adapter = _TimeoutAdapter(timeout)
        c.session.mount("http://", adapter)
        c.session.mount("https://", adapter)
        # The driver sends prepared requests with Session.send, which takes `verify` from
        # the session (REQUESTS_CA_BUNDLE is only read by Session.request).
        c.session.verify = verify if verify is not None else (self.ca or True)
        self._clients.append(c)
        return c

    def _close_clients(self):
        for c in self._clients:
            try:
                c.session.close()
            except Exception:  # pylint: disable=broad-except
                pass
        self._clients = []
