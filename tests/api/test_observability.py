"""Metrics scraped during traffic and parsed by Prometheus's own parser; health, readiness;
JSON access log lines."""
import json
import os
import signal
import tempfile
import threading
import time
import urllib.request

import consul
import gdapi
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, get, wait_until


def scrape(url):
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def lb_with_two_targets(corral, backend_factory):
    a, b = backend_factory("m-1"), backend_factory("m-2")
    agent = consul.Consul(host="127.0.0.1", port=corral.port)
    agent.agent.service.register("m", service_id="m-1", port=a.port, weights={"passing": 2, "warning": 1})
    agent.agent.service.register("m", service_id="m-2", port=b.port, weights={"passing": 1, "warning": 1})
    api = gdapi.Client(url=corral.url + "/v1")
    svc = api.create_service(name="m")
    port = free_port()
    lb = api.create_load_balancer_service(
        name="metrics-lb", lbConfig={"portRules": [{"sourcePort": port, "serviceId": svc.id, "targetPort": 80}]})
    lb.activate()
    wait_until(lambda: get(f"http://127.0.0.1:{port}/")[0] == 200, what="listener")
    return port, agent


def test_metrics_count_traffic_with_the_right_labels(corral, backend_factory):
    port, agent = lb_with_two_targets(corral, backend_factory)
    listener = f"{port}/http"
    before = scrape(corral.url)

    # Traffic in the background while scraping: the exposition must stay parseable.
    done = threading.Event()
    def scraper():
        while not done.is_set():
            scrape(corral.url)
    t = threading.Thread(target=scraper)
    t.start()
    for _ in range(60):
        assert get(f"http://127.0.0.1:{port}/")[0] == 200
    for _ in range(5):
        assert get(f"http://127.0.0.1:{port}/", headers={"Host": "x"})[0] == 200
    done.set()
    t.join(timeout=10)

    after = scrape(corral.url)
    d = lambda name, **l: value(after, name, **l) - value(before, name, **l)
    assert d("corral_listener_requests_total", listener=listener, code_class="2xx") == 65
    assert d("corral_service_requests_total", service="m", code_class="2xx") == 65
    assert d("corral_target_requests_total", service="m", target="m-1") + \
        d("corral_target_requests_total", service="m", target="m-2") == 65
    assert d("corral_service_request_duration_seconds_count", service="m") == 65
    assert d("corral_listener_bytes_out_total", listener=listener) > 65 * 3
    assert d("corral_listener_connections_total", listener=listener) == 65
    assert value(after, "corral_target_weight", service="m", target="m-1") == 2
    assert value(after, "corral_target_up", service="m", target="m-2") == 1
    assert value(after, "corral_target_state", service="m", target="m-1", state="passing") == 1
    assert value(after, "corral_config_generation") >= 1
    assert value(after, "corral_config_reloads_total", source="api", result="ok") >= 1
    assert value(after, "corral_build_info", version="0.1.0") == 1
    assert value(after, "corral_control_requests_total", api="rancher", method="POST", code_class="2xx") >= 1

    # Maintenance is visible; a deregistered target's series are removed.
    agent.agent.service.maintenance("m-2", True)
    s = scrape(corral.url)
    assert value(s, "corral_target_state", service="m", target="m-2", state="maintenance") == 1
    assert value(s, "corral_target_weight", service="m", target="m-2") == 0
    agent.agent.service.deregister("m-2")
    s = scrape(corral.url)
    assert not any(k[0].startswith("corral_target") and ("target", "m-2") in k[1] for k in s)

    # No unbounded label values: no path, host or client address anywhere.
    assert not any(v in str(k) for k in s for v in ("127.0.0.1:", "/x", "Host"))


def test_a_refused_change_is_counted(corral):
    api = gdapi.Client(url=corral.url + "/v1")
    svc = api.create_service(name="r")
    # The control listener's own port cannot be taken.
    lb = api.create_load_balancer_service(
        name="bad", lbConfig={"portRules": [{"sourcePort": corral.port, "serviceId": svc.id, "targetPort": 80}]})
    try:
        lb.activate()
    except gdapi.ApiError as e:
        assert e.error.status == 422
    s = scrape(corral.url)
    assert value(s, "corral_config_reloads_total", source="api", result="refused") >= 1


def test_health_and_ready(corral):
    assert get(corral.url + "/health") == (200, "ok\n")
    assert get(corral.url + "/ready") == (200, "ready\n")


def test_separate_metrics_listener_and_json_access_log(corral_factory, backend_factory):
    metrics_port = free_port()
    b = backend_factory("j")
    port = free_port()
    cfg = os.path.join(tempfile.mkdtemp(), "corral.json")
    with open(cfg, "w") as f:
        json.dump({"loadBalancers": [{"name": "j", "lbConfig": {"portRules": [{"sourcePort": port, "serviceId": "j"}]}}],
                   "services": [{"ID": "j-1", "Service": "j", "Port": b.port}]}, f)
    corral = corral_factory(args=["--config", cfg, "--metrics-addr", f"127.0.0.1:{metrics_port}",
                                  "--log-format", "json"])
    assert get(f"http://127.0.0.1:{port}/hello?secret=1")[0] == 200
    s = scrape(f"http://127.0.0.1:{metrics_port}")
    assert value(s, "corral_listener_requests_total", listener=f"{port}/http", code_class="2xx") == 1

    def access_line():
        for line in corral.log().splitlines():
            if '"corral::access"' in line:
                return json.loads(line)["fields"]
    wait_until(access_line, what="an access log line")
    entry = access_line()
    assert entry["status"] == 200 and entry["path"] == "/hello" and entry["target"] == "j-1"
    assert entry["host"] == "127.0.0.1" and entry["method"] == "GET"
    assert entry["listener"] == f"{port}/http" and entry["bytes"] == 1 and "duration_ms" in entry


def test_sigterm_turns_ready_off_while_draining(corral_factory):
    # A target that takes 2 s to answer keeps one request in flight through the drain.
    import socket as sk
    slow = sk.socket()
    slow.bind(("127.0.0.1", 0))
    slow.listen(8)

    def answer_slowly():
        conn, _ = slow.accept()
        conn.recv(65536)
        time.sleep(2)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
        conn.close()
    threading.Thread(target=answer_slowly, daemon=True).start()

    port = free_port()
    cfg = os.path.join(tempfile.mkdtemp(), "corral.json")
    with open(cfg, "w") as f:
        json.dump({"loadBalancers": [{"name": "s", "lbConfig": {"portRules": [{"sourcePort": port, "serviceId": "s"}]}}],
                   "services": [{"ID": "s-1", "Service": "s", "Port": slow.getsockname()[1]}]}, f)
    corral = corral_factory(args=["--config", cfg])
    result = {}
    t = threading.Thread(target=lambda: result.update(r=get(f"http://127.0.0.1:{port}/")))
    t.start()
    time.sleep(0.3)
    corral.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: get(corral.url + "/ready")[0] == 503, timeout=2, what="/ready 503 while draining")
    t.join(timeout=10)
    assert result["r"] == (200, "slow")
    corral.proc.wait(timeout=15)
    assert corral.proc.returncode == 0
