"""Health checks run for real: instances registered with py-consul 1.8.0 (unmodified) with HTTP,
TCP and TTL checks; a file-config LB sends traffic; the traffic shares follow the checks.

Every wait is bounded; everything listens on 127.0.0.1.
"""
import http.server
import json
import os
import tempfile
import threading
import time
import urllib.request
from collections import Counter

import consul

from conftest import free_port, get, wait_until


class HealthBackend:
    """Answers its name on `/`; `/health` answers whatever status it is told to."""

    def __init__(self, name):
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                if self.path.startswith("/health"):
                    backend.probes += 1
                    code, body = backend.health, b"health\n"
                else:
                    code, body = 200, backend.name.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.name = name
        self.health = 200
        self.probes = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def lb_config(lb_port):
    """A file config: one LB on `lb_port` for service `web`, whose instances come from the API."""
    d = tempfile.mkdtemp(prefix="corral-health-")
    path = os.path.join(d, "lb.json")
    with open(path, "w") as f:
        json.dump({"loadBalancers": [{"name": "lb", "lbConfig": {
            "portRules": [{"sourcePort": lb_port, "serviceId": "web"}]}}]}, f)
    return path


def shares(lb_port, n=60):
    c = Counter()
    for _ in range(n):
        status, body = get(f"http://127.0.0.1:{lb_port}/", timeout=5)
        c[body if status == 200 else status] += 1
    return c


def check_status(c, check_id):
    return c.agent.checks()[check_id]["Status"]


def setup(corral_factory, names):
    lb_port = free_port()
    corral = corral_factory(args=["--config", lb_config(lb_port)])
    c = consul.Consul(host="127.0.0.1", port=corral.port)
    backends = {n: HealthBackend(n) for n in names}
    return corral, c, backends, lb_port


def test_http_check_flips_traffic_between_passing_warning_and_critical(corral_factory):
    corral, c, bs, lb_port = setup(corral_factory, ["a", "b"])
    try:
        for name, b in bs.items():
            assert c.agent.service.register(
                "web", service_id=f"web-{name}", address="127.0.0.1", port=b.port,
                weights={"Passing": 3, "Warning": 1},
                check=consul.Check.http(f"http://127.0.0.1:{b.port}/health", interval="1s",
                                        timeout="1s",
                                        header={"X-Probe": ["corral"]})) is True
        # Checks start critical (Consul's default) and pass after the first probe.
        wait_until(lambda: all(check_status(c, f"service:web-{n}") == "passing" for n in bs),
                   timeout=5, what="both checks passing")
        s = shares(lb_port)
        assert s["a"] == 30 and s["b"] == 30, s

        # 429: warning → Warning weight (1 against 3).
        bs["a"].health = 429
        wait_until(lambda: check_status(c, "service:web-a") == "warning", timeout=4,
                   what="a warning")
        s = shares(lb_port, 80)
        assert s["a"] == 20 and s["b"] == 60, s

        # 500: critical → no traffic at all.
        bs["a"].health = 500
        wait_until(lambda: check_status(c, "service:web-a") == "critical", timeout=4,
                   what="a critical")
        assert shares(lb_port) == Counter({"b": 60})
        checks = c.agent.checks()
        assert "500" in checks["service:web-a"]["Output"], checks["service:web-a"]

        # Healthy again: traffic comes back within a few intervals.
        bs["a"].health = 200
        wait_until(lambda: shares(lb_port, 10)["a"] == 5, timeout=5, what="a back")
        status, body = get(f"http://127.0.0.1:{corral.port}/metrics")
        if status == 200:
            assert "corral_target_health_check_failures_total" in body
    finally:
        for b in bs.values():
            b.close()


def test_tcp_check_and_a_dead_backend(corral_factory):
    corral, c, bs, lb_port = setup(corral_factory, ["a", "b"])
    try:
        for name, b in bs.items():
            assert c.agent.service.register(
                "web", service_id=f"web-{name}", address="127.0.0.1", port=b.port,
                check=consul.Check.tcp("127.0.0.1", b.port, interval="1s", timeout="500ms"))
        wait_until(lambda: all(check_status(c, f"service:web-{n}") == "passing" for n in bs),
                   timeout=5, what="tcp checks passing")
        assert shares(lb_port, 20) == Counter({"a": 10, "b": 10})
        bs["b"].close()
        wait_until(lambda: check_status(c, "service:web-b") == "critical", timeout=4,
                   what="b critical")
        assert shares(lb_port, 20) == Counter({"a": 20})
    finally:
        bs["a"].close()


def test_ttl_expiry_takes_the_instance_out_and_a_refresh_brings_it_back(corral_factory):
    corral, c, bs, lb_port = setup(corral_factory, ["a", "b"])
    try:
        c.agent.service.register("web", service_id="web-a", address="127.0.0.1",
                                 port=bs["a"].port)
        c.agent.service.register("web", service_id="web-b", address="127.0.0.1",
                                 port=bs["b"].port, check=consul.Check.ttl("2s"))
        # Born critical: only a gets traffic until the TTL check is passed.
        assert shares(lb_port, 10) == Counter({"a": 10})
        assert c.agent.check.ttl_pass("service:web-b") is True
        assert shares(lb_port, 10) == Counter({"a": 5, "b": 5})
        # Refreshed in time, it stays passing.
        for _ in range(3):
            time.sleep(1)
            assert c.agent.check.ttl_pass("service:web-b", notes="alive") is True
        assert check_status(c, "service:web-b") == "passing"
        # Not refreshed: critical after the TTL, and no traffic.
        t0 = time.monotonic()
        wait_until(lambda: check_status(c, "service:web-b") == "critical", timeout=5,
                   what="TTL expiry")
        assert time.monotonic() - t0 >= 1.0
        assert "TTL expired" in c.agent.checks()["service:web-b"]["Output"]
        assert shares(lb_port, 10) == Counter({"a": 10})
        # A warn is a refresh too: Warning weight (default 1).
        assert c.agent.check.ttl_warn("service:web-b") is True
        assert shares(lb_port, 10) == Counter({"a": 5, "b": 5})
    finally:
        for b in bs.values():
            b.close()


def test_maintenance_drains_and_returns(corral_factory):
    corral, c, bs, lb_port = setup(corral_factory, ["a", "b"])
    try:
        for name, b in bs.items():
            c.agent.service.register(
                "web", service_id=f"web-{name}", address="127.0.0.1", port=b.port,
                check=consul.Check.http(f"http://127.0.0.1:{b.port}/health", interval="1s"))
        wait_until(lambda: all(check_status(c, f"service:web-{n}") == "passing" for n in bs),
                   timeout=5, what="checks passing")
        assert c.agent.service.maintenance("web-a", True, "upgrade") is True
        assert shares(lb_port, 20) == Counter({"b": 20})
        # Probes keep running in maintenance and the check stays passing.
        time.sleep(1.2)
        assert check_status(c, "service:web-a") == "passing"
        assert shares(lb_port, 10) == Counter({"b": 10})
        assert c.agent.service.maintenance("web-a", False) is True
        assert shares(lb_port, 20) == Counter({"a": 10, "b": 10})
    finally:
        for b in bs.values():
            b.close()


def test_deregister_critical_service_after(corral_factory):
    corral, c, bs, lb_port = setup(corral_factory, ["a"])
    try:
        check = consul.Check.ttl("1s")
        check["DeregisterCriticalServiceAfter"] = "1s"
        c.agent.service.register("web", service_id="web-a", address="127.0.0.1",
                                 port=bs["a"].port, check=check)
        assert "web-a" in c.agent.services()
        wait_until(lambda: "web-a" not in c.agent.services(), timeout=6,
                   what="deregistration of a critical service")
        assert c.agent.checks() == {}
        status, _ = get(f"http://127.0.0.1:{lb_port}/")
        assert status == 503
    finally:
        bs["a"].close()


def test_probe_removed_with_its_check(corral_factory):
    corral, c, bs, lb_port = setup(corral_factory, ["a"])
    try:
        b = bs["a"]
        c.agent.service.register(
            "web", service_id="web-a", address="127.0.0.1", port=b.port,
            check=consul.Check.http(f"http://127.0.0.1:{b.port}/health", interval="200ms"))
        wait_until(lambda: b.probes >= 2, timeout=5, what="probes")
        assert c.agent.service.deregister("web-a") is True
        time.sleep(0.5)
        seen = b.probes
        time.sleep(1.0)
        assert b.probes == seen, "no probe after deregistration"
    finally:
        bs["a"].close()
