"""Fixtures for driving a real corral process with the real clients (gdapi-python, py-consul).

Every test gets its own corral (fresh data dir, ephemeral control port); backends are tiny
HTTP servers on 127.0.0.1 that answer with their own name, so a test can see who served.
"""
import http.server
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORRAL_BIN = os.environ.get("CORRAL_BIN", os.path.join(ROOT, "target", "debug", "corral"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


class Corral:
    """One corral process; restartable on the same data directory."""

    def __init__(self, data_dir, args=(), env=None):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = list(args)
        self.env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), **(env or {}))
        self.proc = None
        self.log_path = os.path.join(data_dir, "corral.log")

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [CORRAL_BIN, "--control-addr", f"127.0.0.1:{self.port}", "--listen-ip", "127.0.0.1",
             "--data-dir", os.path.join(self.data_dir, "state"), *self.args],
            stdout=log, stderr=log, env=self.env)
        wait_until(self._ready, timeout=15, what="corral /ready")
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"corral exited with {self.proc.returncode}:\n{self.log()}")
        with urllib.request.urlopen(self.url + "/ready", timeout=1) as r:
            return r.status == 200

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-4000:]


@pytest.fixture
def corral_factory():
    made = []

    def make(args=(), env=None):
        d = tempfile.mkdtemp(prefix="corral-test-")
        c = Corral(d, args, env)
        made.append(c)
        return c.start()

    yield make
    for c in made:
        c.stop()


@pytest.fixture
def corral(corral_factory):
    return corral_factory()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.hits.append((self.command, self.path, dict(self.headers)))
        body = self.server.name.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args):
        pass


class Backend:
    def __init__(self, name, host="127.0.0.1"):
        self.server = http.server.ThreadingHTTPServer((host, 0), _Handler)
        self.server.daemon_threads = True
        self.server.name = name
        self.server.hits = []
        self.name = name
        self.host = host
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def hits(self):
        return self.server.hits

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backend_factory():
    made = []

    def make(name, host="127.0.0.1"):
        b = Backend(name, host)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def refused(port):
    """Whether nothing listens on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def get(url, headers=None, timeout=5):
    """GET returning (status, body-text); HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
