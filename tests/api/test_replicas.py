"""Several corral replicas sharing one control state in etcd (issue 10).

A 3-member etcd cluster runs on loopback ports with its own data directories; three corral
replicas follow it. LB source ports are shared configuration, so each replica binds its
listeners on its own loopback address (`--listen-ip` 127.0.0.1 / .2 / .3) and its control
listener on its own port. Skipped when no `etcd` binary is installed (scripts/test.sh installs
Debian's etcd-server).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter

import consul
import gdapi
import pytest
from consul.exceptions import ConsulException

from conftest import free_port, get, wait_until

ETCD = shutil.which("etcd")
pytestmark = [
    pytest.mark.skipif(
        ETCD is None, reason="etcd is not installed (scripts/test.sh installs etcd-server)"),
    pytest.mark.skipif(
        os.environ.get("CORRAL_FEATURES", "") != "etcd",
        reason="corral built without the etcd feature (scripts/test.sh builds it with protoc)"),
]


class EtcdCluster:
    """Three etcd members on 127.0.0.1; stop() and start() keep their data directories."""

    def __init__(self, size=3):
        self.dir = tempfile.mkdtemp(prefix="corral-etcd-")
        self.members = [(f"m{i}", free_port(), free_port()) for i in range(size)]
        self.initial = ",".join(f"{n}=http://127.0.0.1:{peer}" for n, _, peer in self.members)
        self.endpoints = [f"http://127.0.0.1:{client}" for _, client, _ in self.members]
        self.procs = [None] * size

    def start(self):
        for i in range(len(self.members)):
            self.start_member(i, wait=False)
        for endpoint in self.endpoints:
            wait_until(lambda e=endpoint: self._healthy(e), timeout=30, what=f"etcd {endpoint}")
        return self

    def start_member(self, i, wait=True):
        name, client, peer = self.members[i]
        log = open(os.path.join(self.dir, f"{name}.log"), "ab")
        self.procs[i] = subprocess.Popen(
            [ETCD, "--name", name, "--data-dir", os.path.join(self.dir, name),
             "--listen-client-urls", f"http://127.0.0.1:{client}",
             "--advertise-client-urls", f"http://127.0.0.1:{client}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", self.initial, "--initial-cluster-state", "new",
             "--initial-cluster-token", os.path.basename(self.dir)],
            stdout=log, stderr=log)
        if wait:
            wait_until(lambda: self._healthy(self.endpoints[i]), timeout=30,
                       what=f"etcd {self.endpoints[i]}")

    def stop_member(self, i):
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)

    @staticmethod
    def _healthy(endpoint):
        with urllib.request.urlopen(endpoint + "/health", timeout=1) as r:
            return json.loads(r.read()).get("health") == "true"

    def stop(self):
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for i in range(len(self.procs)):
            self.stop_member(i)

    def log(self):
        out = ""
        for name, _, _ in self.members:
            with open(os.path.join(self.dir, f"{name}.log"), "rb") as f:
                out += f"--- {name}\n" + f.read().decode(errors="replace")[-1500:]
        return out


@pytest.fixture(scope="module")
def etcd():
    cluster = EtcdCluster()
    try:
        cluster.start()
    except AssertionError:
        cluster.stop()
        pytest.fail("etcd cluster did not start:\n" + cluster.log())
    yield cluster
    cluster.stop()
    shutil.rmtree(cluster.dir, ignore_errors=True)


@pytest.fixture
def replicas(etcd, corral_factory):
    """Replicas A, B, C on 127.0.0.1/.2/.3, sharing a fresh key prefix."""
    prefix = f"/t-{uuid.uuid4().hex[:12]}/"
    store = "etcd:" + ",".join(etcd.endpoints)
    return [corral_factory(args=["--listen-ip", f"127.0.0.{i}", "--store", store,
                                 "--store-prefix", prefix])
            for i in (1, 2, 3)]


def rancher(corral):
    return gdapi.Client(url=corral.url + "/v1")


def agent(corral):
    return consul.Consul(host="127.0.0.1", port=corral.port)


def served(ip, port, path="/"):
    status, body = get(f"http://{ip}:{port}{path}", timeout=2)
    return body if status == 200 else None


def served_by(ip, port, n):
    return Counter(served(ip, port) for _ in range(n))


def metric(corral, name):
    with urllib.request.urlopen(corral.url + "/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return None


def make_lb(a, port):
    """A Rancher LB on `port` for service "web", created and activated through replica A."""
    c = rancher(a)
    web = c.create_service(name="web")
    lb = c.create_load_balancer_service(
        name="lb", lbConfig={"portRules": [{"sourcePort": port, "serviceId": web.id}]})
    lb.activate()
    return c


def test_a_write_on_one_replica_is_served_by_all(replicas, backend_factory):
    a, b, c = replicas
    b1, b2 = backend_factory("one"), backend_factory("two")
    port = free_port()
    make_lb(a, port)
    ca = agent(a)
    assert ca.agent.service.register("web", service_id="web-1", address="127.0.0.1",
                                     port=b1.port)
    for ip in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
        wait_until(lambda ip=ip: served(ip, port) == "one", timeout=3, what=f"{ip} serves")

    # A→B/C propagation: register on A, time until B and C route to the new instance.
    t0 = time.monotonic()
    assert ca.agent.service.register("web", service_id="web-2", address="127.0.0.1",
                                     port=b2.port)
    acked = time.monotonic() - t0
    seen = {}
    deadline = time.monotonic() + 3
    while len(seen) < 2 and time.monotonic() < deadline:
        for name, ip in (("B", "127.0.0.2"), ("C", "127.0.0.3")):
            if name not in seen and "web-2" in agent(b if name == "B" else c).agent.services():
                seen[name] = time.monotonic() - t0
        time.sleep(0.005)
    print(f"\npropagation A→B {seen.get('B', -1) * 1000:.0f} ms, A→C "
          f"{seen.get('C', -1) * 1000:.0f} ms (write acknowledged in {acked * 1000:.0f} ms)")
    assert set(seen) == {"B", "C"} and max(seen.values()) < 1.0, seen
    for ip in ("127.0.0.2", "127.0.0.3"):
        assert set(served_by(ip, port, 40)) == {"one", "two"}

    # Maintenance set through B takes web-1 out on every replica.
    assert agent(b).agent.service.maintenance("web-1", True) is True
    for ip in ("127.0.0.1", "127.0.0.3"):
        wait_until(lambda ip=ip: served_by(ip, port, 10) == Counter({"two": 10}), timeout=1,
                   what=f"maintenance seen on {ip}")

    # A hash-blocking query on C wakes on a change made through A.
    cc = agent(c)
    _, definition = cc.http.get(lambda r: (r.code, json.loads(r.body)), "/v1/agent/service/web-2")
    result = {}

    def block():
        t = time.monotonic()
        code, body = cc.http.get(lambda r: (r.code, json.loads(r.body)), "/v1/agent/service/web-2",
                                 params=[("hash", definition["ContentHash"]), ("wait", "10s")])
        result.update(code=code, body=body, took=time.monotonic() - t)

    waiter = threading.Thread(target=block)
    waiter.start()
    time.sleep(0.3)
    assert ca.agent.service.register("web", service_id="web-2", address="127.0.0.1",
                                     port=b2.port, tags=["moved"])
    waiter.join(timeout=5)
    assert result.get("code") == 200 and result["body"]["Tags"] == ["moved"], result
    assert result["took"] < 1.5, result

    # Metrics: backend and a sync revision on every replica.
    for r in replicas:
        assert metric(r, 'corral_store_info{backend="etcd"}') == 1
        assert metric(r, "corral_store_sync_revision") > 0
        assert metric(r, "corral_store_seconds_since_last_sync") < 5


def test_concurrent_writes_on_two_replicas_lose_nothing(replicas):
    a, b, c = replicas
    ra, rb = rancher(a), rancher(b)
    services = [ra.create_service(name=f"s{i}") for i in range(10)]
    lb = ra.create_load_balancer_service(name="lb", lbConfig={})
    errors, took = [], []

    def timed(fn, *args, **kw):
        t = time.monotonic()
        out = fn(*args, **kw)
        took.append(time.monotonic() - t)
        return out

    def links(client, chosen):
        try:
            for s in chosen:
                timed(client.by_id_load_balancer_service(lb.id).addservicelink,
                    serviceLink={"name": s.name, "serviceId": s.id})
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def registrations(corral, tag):
        try:
            for i in range(15):
                assert timed(agent(corral).agent.service.register,
                    "conc", service_id=f"conc-{tag}-{i}", address="127.0.0.1", port=1000 + i)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def creations(client, tag, out):
        try:
            for i in range(10):
                out.append(timed(client.create_service, name=f"new-{tag}-{i}").id)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ids_a, ids_b = [], []
    threads = [
        threading.Thread(target=links, args=(ra, services[:5])),
        threading.Thread(target=links, args=(rb, services[5:])),
        threading.Thread(target=registrations, args=(a, "a")),
        threading.Thread(target=registrations, args=(b, "b")),
        threading.Thread(target=creations, args=(ra, "a", ids_a)),
        threading.Thread(target=creations, args=(rb, "b", ids_b)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors

    # Every acknowledged write is there, read through the third replica.
    expected_links = {s.name: s.id for s in services}
    wait_until(lambda: vars(rancher(c).by_id_load_balancer_service(lb.id).linkedServices)
               == expected_links, timeout=2, what="all 10 links on one LB")
    expected_ids = {f"conc-{t}-{i}" for t in "ab" for i in range(15)}
    wait_until(lambda: expected_ids <= set(agent(c).agent.services()), timeout=2,
               what="all 30 registrations")
    assert len(set(ids_a) | set(ids_b)) == 20, (ids_a, ids_b)
    names = {s.name for s in rancher(c).list_service(limit=1000)}
    assert {f"new-{t}-{i}" for t in "ab" for i in range(10)} <= names
    conflicts = metric(a, "corral_store_write_conflicts_total") + metric(
        b, "corral_store_write_conflicts_total")
    took.sort()
    print(f"\nconcurrent writes: {len(took)} acknowledged, {conflicts:.0f} raced and were "
          f"recomputed; latency median {took[len(took) // 2] * 1000:.0f} ms, "
          f"max {took[-1] * 1000:.0f} ms")


def test_one_etcd_member_down_changes_nothing(etcd, replicas, backend_factory):
    a, b, c = replicas
    b1, b2 = backend_factory("one"), backend_factory("two")
    port = free_port()
    make_lb(a, port)
    assert agent(a).agent.service.register("web", service_id="web-1", address="127.0.0.1",
                                           port=b1.port)
    for ip in ("127.0.0.2", "127.0.0.3"):
        wait_until(lambda ip=ip: served(ip, port) == "one", timeout=3, what=f"{ip} serves")
    etcd.stop_member(0)
    try:
        t0 = time.monotonic()
        assert agent(b).agent.service.register("web", service_id="web-2",
                                               address="127.0.0.1", port=b2.port)
        for r, ip in zip(replicas, ("127.0.0.1", "127.0.0.2", "127.0.0.3")):
            wait_until(lambda ip=ip: set(served_by(ip, port, 10)) == {"one", "two"},
                       timeout=10, what=f"{ip} serves web-2 with one etcd member down")
        print(f"\none etcd member down: write on B served everywhere after "
              f"{(time.monotonic() - t0) * 1000:.0f} ms")
    finally:
        etcd.start_member(0)


def test_etcd_down_replicas_keep_serving_and_refuse_writes(etcd, replicas, backend_factory):
    a, b, c = replicas
    b1, b3 = backend_factory("one"), backend_factory("three")
    port = free_port()
    rc = make_lb(a, port)
    assert agent(a).agent.service.register("web", service_id="web-1", address="127.0.0.1",
                                           port=b1.port)
    for ip in ("127.0.0.2", "127.0.0.3"):
        wait_until(lambda ip=ip: served(ip, port) == "one", timeout=3, what=f"{ip} serves")

    etcd.stop()
    try:
        # B and C keep serving for 10 s, with zero failed requests, while writes are refused
        # (a refused write is never served, not even for a moment).
        outcome = {}

        def traffic():
            failures, total = 0, 0
            end = time.monotonic() + 10
            while time.monotonic() < end:
                for ip in ("127.0.0.2", "127.0.0.3"):
                    total += 1
                    if served(ip, port) != "one":
                        failures += 1
                time.sleep(0.01)
            outcome.update(failures=failures, total=total)

        runner = threading.Thread(target=traffic)
        runner.start()
        # Writes answer 503 with an error object (Rancher) / a message (Consul).
        t = time.monotonic()
        with pytest.raises(gdapi.ApiError) as err:
            rc.create_service(name="during-outage")
        assert err.value.error.status == 503 and err.value.error.code == "ServiceUnavailable"
        assert "etcd" in err.value.error.message
        for replica in (b, c):
            with pytest.raises(ConsulException):
                agent(replica).agent.service.register(
                    "web", service_id="web-x", address="127.0.0.1", port=b3.port)
        refused_in = time.monotonic() - t
        runner.join(timeout=30)
        print(f"\netcd down: {outcome['total']} requests through B and C, "
              f"{outcome['failures']} failed; 3 writes refused in {refused_in * 1000:.0f} ms")
        assert outcome["failures"] == 0 and outcome["total"] > 100, outcome
        assert refused_in < 10
        assert metric(b, "corral_store_watch_reconnects_total") >= 1
        assert metric(b, "corral_store_seconds_since_last_sync") >= 5
    finally:
        etcd.start()

    # etcd back: a new write (through C, retried while the watch and leader come back) reaches
    # every replica.
    def register_web3():
        try:
            return agent(c).agent.service.register("web", service_id="web-3",
                                                   address="127.0.0.1", port=b3.port)
        except ConsulException:
            return False

    t0 = time.monotonic()
    wait_until(register_web3, timeout=15, interval=0.2, what="a write after etcd restart")
    print(f"etcd back: first write acknowledged after {(time.monotonic() - t0) * 1000:.0f} ms")
    for r, ip in zip(replicas, ("127.0.0.1", "127.0.0.2", "127.0.0.3")):
        wait_until(lambda ip=ip: set(served_by(ip, port, 20)) == {"one", "three"}, timeout=10,
                   what=f"{ip} serves the post-outage write")
        assert "web-3" in agent(r).agent.services()
