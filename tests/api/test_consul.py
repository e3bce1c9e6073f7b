"""The Consul agent API, driven by py-consul 1.8.0 unmodified (SPEC-control-api.md §2).

Where py-consul has no wrapper (agent health, hash blocking, raw bodies) the tests use its own
transport, `Consul.http`, so the same session, encoding and token header are used.
"""
import json
import os
import tempfile
import threading
import time
from collections import Counter

import consul
import pytest
from consul.exceptions import ACLPermissionDenied, BadRequest, ConsulException

from conftest import free_port, get, wait_until


def raw(response):
    """A py-consul callback returning the whole response (code, headers, body)."""
    return response


def client(corral, token=None):
    return consul.Consul(host="127.0.0.1", port=corral.port, token=token)


def put(c, path, body=None, params=None, headers=None):
    data = "" if body is None else (body if isinstance(body, str) else json.dumps(body))
    return c.http.put(raw, path, params=params, data=data, headers=headers)


def fetch(c, path, params=None, headers=None):
    return c.http.get(raw, path, params=params, headers=headers)


def register_three(c):
    assert c.agent.service.register(
        "web", service_id="web-1", address="127.0.0.1", port=18081, tags=["v1", "canary"],
        meta={"zone": "a", "run": "x"}, weights={"Passing": 10, "Warning": 1},
        tagged_addresses={"lan": {"Address": "127.0.0.2", "Port": 18082}}) is True
    assert c.agent.service.register(
        "web", service_id="web-2", address="127.0.0.1", port=18082, tags=["v2"],
        meta={"zone": "b", "run": "x"}, weights={"Passing": 5, "Warning": 1}) is True
    assert c.agent.service.register(
        "api", service_id="api-1", address="127.0.0.1", port=18083, tags=["v1"],
        meta={"zone": "b"}) is True


# ---- §2.1 / §2.3 / §2.4: register, list, definition -------------------------------------

def test_register_list_and_definition(corral):
    c = client(corral)
    assert c.agent.services() == {}
    register_three(c)
    services = c.agent.services()
    assert set(services) == {"web-1", "web-2", "api-1"}
    assert services["web-1"] == {
        "ID": "web-1", "Service": "web", "Tags": ["v1", "canary"], "Meta": {"zone": "a", "run": "x"},
        "Port": 18081, "Address": "127.0.0.1",
        "TaggedAddresses": {"lan": {"Address": "127.0.0.2", "Port": 18082}},
        "Weights": {"Passing": 10, "Warning": 1}, "EnableTagOverride": False, "Datacenter": "dc1"}
    api = services["api-1"]
    assert api["Weights"] == {"Passing": 1, "Warning": 1}
    assert "TaggedAddresses" not in api and "Kind" not in api

    d = c.agent.service_definition("web-2")
    assert d["ID"] == "web-2" and d["Port"] == 18082 and d["ContentHash"]
    assert c.agent.service_definition("nope") is None


def test_register_defaults_and_kind(corral):
    c = client(corral)
    assert c.agent.service.register("bare") is True
    d = c.agent.service_definition("bare")
    assert d["ID"] == "bare" and d["Address"] == "" and d["Port"] == 0
    assert d["Tags"] == [] and d["Meta"] == {}
    assert d["Weights"] == {"Passing": 1, "Warning": 1}
    assert c.agent.service.register("gw", kind="mesh-gateway", port=8443) is True
    assert c.agent.service_definition("gw")["Kind"] == "mesh-gateway"


@pytest.mark.parametrize("body,message", [
    ({"ID": "x"}, "Missing service name"),
    ({"Name": "a", "Address": "0.0.0.0"}, "Invalid service address"),
    ({"Name": "a", "Address": "::"}, "Invalid service address"),
    ({"Name": "a", "Weights": {"Warning": 1}}, "Invalid Weights: Passing must be greater than 0"),
    ({"Name": "a", "Weights": {"Passing": 1, "Warning": -1}},
     "Invalid Weights: Warning must be greater or equal than 0"),
    ({"Name": "a", "Weights": {"Passing": 70000, "Warning": 1}},
     "Invalid Weights: Passing or Warning must be lower or equal than 65535"),
    ({"Name": "a", "TaggedAddresses": {"lan": "127.0.0.2"}}, "Request decode failed: "),
    ({"Name": "a", "Check": {"Name": "no kind"}}, "Invalid check: TTL must be > 0 for TTL checks"),
    ({"Name": "a", "Check": {"TTL": "10s", "Status": "fine"}},
     "Status for checks must 'passing', 'warning', 'critical'"),
    ("{not json", "Request decode failed: "),
])
def test_register_validation(corral, body, message):
    c = client(corral)
    r = put(c, "/v1/agent/service/register", body)
    assert r.code == 400, r
    assert r.body.startswith(message), r.body
    assert c.agent.services() == {}
    # py-consul turns the same 400 into BadRequest.
    if isinstance(body, dict) and "Name" not in body:
        with pytest.raises(BadRequest):
            c.agent.service.register("")


def test_register_keys_any_case(corral):
    c = client(corral)
    spellings = {
        "lower": {"name": "web", "id": "lower", "address": "127.0.0.1", "port": 81, "tags": ["t"],
                  "meta": {"Zone": "a"}, "weights": {"passing": 3, "warning": 2},
                  "enabletagoverride": True,
                  "tagged_addresses": {"lan": {"address": "127.0.0.2", "port": 82}}},
        "pascal": {"Name": "web", "ID": "pascal", "Address": "127.0.0.1", "Port": 81, "Tags": ["t"],
                   "Meta": {"Zone": "a"}, "Weights": {"Passing": 3, "Warning": 2},
                   "EnableTagOverride": True,
                   "TaggedAddresses": {"lan": {"Address": "127.0.0.2", "Port": 82}}},
        "snake": {"NAME": "web", "Id": "snake", "ADDRESS": "127.0.0.1", "port": 81, "TAGS": ["t"],
                  "meta": {"Zone": "a"}, "WEIGHTS": {"PASSING": 3, "warning": 2},
                  "enable_tag_override": True,
                  "tagged_addresses": {"lan": {"ADDRESS": "127.0.0.2", "port": 82}}},
    }
    for sid, body in spellings.items():
        r = put(c, "/v1/agent/service/register", body)
        assert (r.code, r.body) == (200, ""), (sid, r)
    defs = {sid: c.agent.service_definition(sid) for sid in spellings}
    for sid, d in defs.items():
        d.pop("ID"), d.pop("ContentHash")
        assert d == {"Service": "web", "Tags": ["t"], "Meta": {"Zone": "a"}, "Port": 81,
                     "Address": "127.0.0.1",
                     "TaggedAddresses": {"lan": {"Address": "127.0.0.2", "Port": 82}},
                     "Weights": {"Passing": 3, "Warning": 2}, "EnableTagOverride": True,
                     "Datacenter": "dc1"}, sid
    # Mixed-case check keys; the TTL check is born with its explicit status.
    r = put(c, "/v1/agent/service/register",
            {"Name": "web", "ID": "mixed",
             "checks": [{"ttl": "10s", "Name": "ttl check", "CheckID": "mixed-ttl", "Status": "warning"},
                        {"HTTP": "http://127.0.0.1:1/h", "interval": "10s", "timeout": "1s",
                         "tls_skip_verify": True, "DeregisterCriticalServiceAfter": "1m30s",
                         "header": {"X-A": ["b"]}, "Method": "HEAD"}]})
    assert (r.code, r.body) == (200, ""), r
    checks = c.agent.checks()
    ttl = checks["mixed-ttl"]
    assert ttl["Status"] == "warning" and ttl["Name"] == "ttl check" and ttl["Type"] == "ttl"
    assert ttl["ServiceID"] == "mixed" and ttl["ServiceName"] == "web"
    http_check = checks["service:mixed:2"]
    assert http_check["Name"] == "Service 'web' check" and http_check["Status"] == "critical"
    assert http_check["Type"] == "http"
    assert http_check["Definition"]["Interval"] == "10s"
    assert http_check["Definition"]["DeregisterCriticalServiceAfter"] == "1m30s"
    assert http_check["Definition"]["TLSSkipVerify"] is True
    r = fetch(c, "/v1/agent/health/service/id/mixed", params=[("format", "text")])
    assert (r.code, r.body) == (503, "critical")


def test_ttl_check_born_warning_via_py_consul(corral):
    c = client(corral)
    check = {"ttl": "10s", "Name": "ttl", "CheckID": "web-ttl", "Status": "warning"}
    assert c.agent.service.register("web", service_id="web-1", port=80, check=check) is True
    r = fetch(c, "/v1/agent/health/service/id/web-1")
    assert r.code == 429
    body = json.loads(r.body)
    assert body["AggregatedStatus"] == "warning"
    assert [ch["CheckID"] for ch in body["Checks"]] == ["web-ttl"]
    assert body["Checks"][0]["Status"] == "warning"
    # Checks built by py-consul's own helpers.
    assert c.agent.service.register(
        "web", service_id="web-2", port=81,
        check=consul.Check.http("http://127.0.0.1:1/", "10s", timeout="1s", deregister="1m"),
        extra_checks=[consul.Check.tcp("127.0.0.1", 1, "5s"), consul.Check.ttl("30s")]) is True
    types = sorted(ch["Type"] for ch in c.agent.checks().values() if ch["ServiceID"] == "web-2")
    assert types == ["http", "tcp", "ttl"]


def test_replace_existing_checks(corral):
    c = client(corral)
    two = [{"CheckID": "a", "TTL": "10s", "Status": "passing"}, {"CheckID": "b", "TTL": "10s"}]
    assert c.agent.service.register("web", service_id="w", check=two[0], extra_checks=[two[1]])
    assert {"a", "b"} <= set(c.agent.checks())
    # Without the flag the absent check stays.
    assert c.agent.service.register("web", service_id="w", port=81, check={"CheckID": "a", "TTL": "10s"})
    assert {"a", "b"} <= set(c.agent.checks())
    assert c.agent.service_definition("w")["Port"] == 81
    assert c.agent.checks()["a"]["Status"] == "passing"
    # With it, the service's checks absent from the request go.
    assert c.agent.service.register("web", service_id="w", check={"CheckID": "a", "TTL": "10s"},
                                    replace_existing_checks=True)
    assert set(c.agent.checks()) == {"a"}
    r = put(c, "/v1/agent/service/register", {"Name": "web", "ID": "w"},
            params=[("replace-existing-checks", "")])
    assert r.code == 200
    assert c.agent.checks() == {}


# ---- §2.4 filters -----------------------------------------------------------------------

@pytest.mark.parametrize("expr,want", [
    ('Service == "web"', {"web-1", "web-2"}),
    ('"canary" in Tags', {"web-1"}),
    ('Meta.zone == "b"', {"web-2", "api-1"}),
    ("Weights.Passing == 5", {"web-2"}),
    ('"v1" not in Tags and Meta.run == "x"', {"web-2"}),
    ('"v1" not in Tags and Meta.run == "x" or Port == 18083', {"web-2", "api-1"}),
    ('not (Service == "web")', {"api-1"}),
    ("TaggedAddresses.lan.Port == 18082", {"web-1"}),
    ("Service matches `^we`", {"web-1", "web-2"}),
])
def test_services_filter(corral, expr, want):
    c = client(corral)
    register_three(c)
    assert set(c.agent.services(filter_expr=expr)) == want


def test_services_filter_malformed(corral):
    c = client(corral)
    register_three(c)
    with pytest.raises((BadRequest, ConsulException)):
        c.agent.services(filter_expr='Service ==')
    r = fetch(c, "/v1/agent/services", params=[("filter", "((")])
    assert r.code == 400


# ---- §2.5 hash blocking -----------------------------------------------------------------

def test_content_hash_and_blocking(corral):
    c = client(corral)
    assert c.agent.service.register("web", service_id="web-1", port=80)
    r = fetch(c, "/v1/agent/service/web-1")
    assert r.code == 200
    h = json.loads(r.body)["ContentHash"]
    assert r.headers["X-Consul-ContentHash"] == h
    # Stable while nothing changes.
    assert c.agent.service_definition("web-1")["ContentHash"] == h

    # A stale hash answers at once.
    t0 = time.monotonic()
    r = fetch(c, "/v1/agent/service/web-1", params=[("hash", "0123456789abcdef"), ("wait", "10s")])
    assert r.code == 200 and time.monotonic() - t0 < 0.5

    # The current hash is held for the wait, then answered unchanged.
    t0 = time.monotonic()
    r = fetch(c, "/v1/agent/service/web-1", params=[("hash", h), ("wait", "1s")])
    held = time.monotonic() - t0
    assert r.code == 200 and held >= 0.8, held
    assert json.loads(r.body)["ContentHash"] == h

    # A change made meanwhile wakes the query with the new definition.
    other = client(corral)

    def change():
        time.sleep(0.5)
        other.agent.service.register("web", service_id="web-1", port=81)

    thread = threading.Thread(target=change)
    t0 = time.monotonic()
    thread.start()
    r = fetch(c, "/v1/agent/service/web-1", params=[("hash", h), ("wait", "20s")])
    woke = time.monotonic() - t0
    thread.join()
    assert r.code == 200 and woke < 8, woke
    body = json.loads(r.body)
    assert body["Port"] == 81 and body["ContentHash"] != h
    assert r.headers["X-Consul-ContentHash"] == body["ContentHash"]

    # Blocking does not hold up other requests.
    def block():
        fetch(client(corral), "/v1/agent/service/web-1",
              params=[("hash", body["ContentHash"]), ("wait", "3s")])

    blocker = threading.Thread(target=block)
    blocker.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    assert c.agent.services()["web-1"]["Port"] == 81
    assert time.monotonic() - t0 < 1
    blocker.join()

    assert fetch(c, "/v1/agent/service/nope").code == 404
    assert fetch(c, "/v1/agent/service/nope").body == "unknown service ID: nope"
    assert fetch(c, "/v1/agent/service/web-1", params=[("wait", "soon"), ("hash", h)]).code == 400


# ---- §2.6 / §2.7 deregister and maintenance ------------------------------------------------

def test_deregister(corral):
    c = client(corral)
    assert c.agent.service.register("web", service_id="web-1", check={"TTL": "10s"})
    assert c.agent.service.deregister("web-1") is True
    assert c.agent.services() == {} and c.agent.checks() == {}
    assert c.agent.service.deregister("web-1") is False
    assert put(c, "/v1/agent/service/deregister/web-1").code == 404


def test_maintenance(corral):
    c = client(corral)
    assert c.agent.service.register("web", service_id="web-1")
    r = put(c, "/v1/agent/service/maintenance/web-1")
    assert (r.code, r.body) == (400, "Missing value for enable")
    r = put(c, "/v1/agent/service/maintenance/web-1", params=[("enable", "yes")])
    assert (r.code, r.body) == (400, 'Invalid value for enable: "yes"')
    assert c.agent.service.maintenance("nope", True) is False
    assert put(c, "/v1/agent/service/maintenance/nope", params=[("enable", "true")]).code == 404

    assert c.agent.service.maintenance("web-1", True, reason="acceptance drain") is True
    check = c.agent.checks()["_service_maintenance:web-1"]
    assert check["Name"] == "Service Maintenance Mode" and check["Status"] == "critical"
    assert check["Notes"] == "acceptance drain"
    assert check["ServiceID"] == "web-1" and check["ServiceName"] == "web"
    # Maintenance does not hide the service.
    assert "web-1" in c.agent.services()
    for word in ["1", "t", "T", "TRUE", "true", "True"]:
        assert put(c, "/v1/agent/service/maintenance/web-1", params=[("enable", word)]).code == 200
    assert len(c.agent.checks()) == 1
    assert c.agent.checks()["_service_maintenance:web-1"]["Notes"] == "acceptance drain"
    assert c.agent.service.maintenance("web-1", False) is True
    assert c.agent.checks() == {}
    assert c.agent.service.maintenance("web-1", True) is True
    assert c.agent.checks()["_service_maintenance:web-1"]["Notes"].startswith(
        "Maintenance mode is enabled for this service, but no reason was provided.")
    for word in ["0", "f", "F", "FALSE", "false", "False"]:
        assert put(c, "/v1/agent/service/maintenance/web-1", params=[("enable", word)]).code == 200
    assert c.agent.checks() == {}


# ---- §2.8 health ------------------------------------------------------------------------

def test_health_by_id_and_name(corral):
    c = client(corral)
    assert c.agent.service.register("web", service_id="web-1", port=81)
    assert c.agent.service.register("web", service_id="web-2", port=82,
                                    check={"TTL": "30s", "Status": "passing"})
    assert c.agent.service.register("web", service_id="web-3", port=83,
                                    check={"TTL": "30s", "Status": "warning"})

    r = fetch(c, "/v1/agent/health/service/id/web-1")
    body = json.loads(r.body)
    assert r.code == 200 and body["AggregatedStatus"] == "passing" and body["Checks"] == []
    assert body["Service"]["ID"] == "web-1" and body["Service"]["Port"] == 81
    r = fetch(c, "/v1/agent/health/service/id/web-3", headers={"Accept": "text/plain"})
    assert (r.code, r.body) == (429, "warning")
    assert r.headers["Content-Type"].startswith("text/plain")

    r = fetch(c, "/v1/agent/health/service/name/web", params=[("format", "text")])
    assert (r.code, r.body) == (429, "warning")
    r = fetch(c, "/v1/agent/health/service/name/web")
    body = json.loads(r.body)
    assert r.code == 429 and [x["Service"]["ID"] for x in body] == ["web-1", "web-2", "web-3"]
    assert [x["AggregatedStatus"] for x in body] == ["passing", "passing", "warning"]
    check = body[1]["Checks"][0]
    for key in ["Node", "CheckID", "Name", "Status", "Notes", "Output", "ServiceID",
                "ServiceName", "ServiceTags", "Type"]:
        assert key in check, key

    assert c.agent.service.maintenance("web-2", True, reason="drain") is True
    r = fetch(c, "/v1/agent/health/service/name/web", params=[("format", "text")])
    assert (r.code, r.body) == (503, "maintenance")
    r = fetch(c, "/v1/agent/health/service/id/web-2", params=[("format", "text")])
    assert (r.code, r.body) == (503, "maintenance")
    r = fetch(c, "/v1/agent/health/service/id/web-2")
    assert r.code == 503 and json.loads(r.body)["AggregatedStatus"] == "maintenance"

    # Unknown and empty.
    r = fetch(c, "/v1/agent/health/service/id/nope")
    assert r.code == 404
    assert json.loads(r.body) == {"AggregatedStatus": "critical", "Service": None, "Checks": None}
    r = fetch(c, "/v1/agent/health/service/id/nope", params=[("format", "text")])
    assert (r.code, r.body) == (404, "ServiceId nope not found")
    r = fetch(c, "/v1/agent/health/service/name/nope")
    assert (r.code, json.loads(r.body)) == (404, [])
    r = fetch(c, "/v1/agent/health/service/name/nope", headers={"Accept": "text/plain"})
    assert (r.code, r.body) == (404, "ServiceName nope Not Found")
    assert fetch(c, "/v1/agent/health/service/id/").code == 400
    assert fetch(c, "/v1/agent/health/service/name/").code == 400


def test_ttl_check_updates(corral):
    c = client(corral)
    assert c.agent.service.register("web", service_id="web-1", check={"CheckID": "t", "TTL": "30s"})
    status = lambda: fetch(c, "/v1/agent/health/service/id/web-1", params=[("format", "text")]).body
    assert status() == "critical"
    assert c.agent.check.ttl_pass("t", notes="all good") is True
    assert status() == "passing"
    assert c.agent.checks()["t"]["Output"] == "all good"
    assert c.agent.check.ttl_warn("t") is True
    assert status() == "warning"
    assert c.agent.check.ttl_fail("t", notes="down") is True
    assert status() == "critical"
    r = put(c, "/v1/agent/check/update/t", {"Status": "passing", "Output": "back"})
    assert (r.code, r.body) == (200, "")
    assert c.agent.checks()["t"]["Output"] == "back" and status() == "passing"
    r = put(c, "/v1/agent/check/update/t", {"Status": "great"})
    assert r.code == 400
    assert c.agent.check.ttl_pass("nope") is False
    assert put(c, "/v1/agent/check/pass/nope").code == 404


def test_unknown_paths_and_methods(corral):
    c = client(corral)
    r = fetch(c, "/v1/agent/members")
    assert r.code == 404
    r = fetch(c, "/v1/agent/service/register")
    assert r.code in (404, 405)
    r = c.http.get(raw, "/v1/agent/services")
    assert r.code == 200 and r.headers["Content-Type"].startswith("application/json")


# ---- §2.2 ACL -----------------------------------------------------------------------------

def test_acl(corral_factory):
    corral = corral_factory(args=["--consul-token", "s3cr3t"])
    anon = client(corral)
    ok = client(corral, token="s3cr3t")
    wrong = client(corral, token="guess")
    for c in (anon, wrong):
        with pytest.raises(ACLPermissionDenied):
            c.agent.service.register("web", service_id="web-1")
    assert ok.agent.service.register("web", service_id="web-1", check={"CheckID": "t", "TTL": "9s"})
    r = put(anon, "/v1/agent/service/register", {"Name": "x"})
    assert (r.code, r.body) == (403, "Permission denied")
    for c in (anon, wrong):
        with pytest.raises(ACLPermissionDenied):
            c.agent.service.maintenance("web-1", True)
        with pytest.raises(ACLPermissionDenied):
            c.agent.check.ttl_pass("t")
        with pytest.raises(ACLPermissionDenied):
            c.agent.service.deregister("web-1")
    # Reads stay anonymous.
    assert set(anon.agent.services()) == {"web-1"}
    assert anon.agent.service_definition("web-1")["ID"] == "web-1"
    assert fetch(anon, "/v1/agent/health/service/id/web-1").code == 503
    assert "t" in anon.agent.checks()
    # Other ways to pass the token.
    r = put(anon, "/v1/agent/service/maintenance/web-1", params=[("enable", "true")],
            headers={"Authorization": "Bearer s3cr3t"})
    assert r.code == 200
    r = put(anon, "/v1/agent/service/maintenance/web-1",
            params=[("enable", "false"), ("token", "s3cr3t")])
    assert r.code == 200
    assert ok.agent.check.ttl_pass("t") is True
    assert ok.agent.service.deregister("web-1") is True
    assert "s3cr3t" not in corral.log()


# ---- persistence --------------------------------------------------------------------------

def test_state_survives_kill9(corral):
    c = client(corral)
    register_three(c)
    assert c.agent.service.register("web", service_id="web-3", check={"CheckID": "t", "TTL": "30s"})
    assert c.agent.check.ttl_warn("t", notes="slow") is True
    assert c.agent.service.maintenance("web-2", True, reason="drain") is True
    before_services, before_checks = c.agent.services(), c.agent.checks()
    h = c.agent.service_definition("web-1")["ContentHash"]
    corral.kill9()
    corral.start()
    c = client(corral)
    assert c.agent.services() == before_services
    assert c.agent.checks() == before_checks
    assert c.agent.service_definition("web-1")["ContentHash"] == h
    r = fetch(c, "/v1/agent/health/service/id/web-3", params=[("format", "text")])
    assert (r.code, r.body) == (429, "warning")


# ---- traffic ------------------------------------------------------------------------------

def served_by(port, n):
    hits = Counter()
    for _ in range(n):
        status, body = get(f"http://127.0.0.1:{port}/", timeout=5)
        hits[body if status == 200 else f"status {status}"] += 1
    return hits


def test_traffic_follows_the_agent(corral_factory, backend_factory):
    port = free_port()
    fd, path = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump({"loadBalancers": [{"name": "lb", "lbConfig": {
            "portRules": [{"sourcePort": port, "serviceId": "web"}]}}]}, f)
    corral = corral_factory(args=["--config", path])
    b1, b2 = backend_factory("b1"), backend_factory("b2")
    c = client(corral)
    assert c.agent.service.register("web", service_id="web-1", address="127.0.0.1", port=b1.port,
                                    weights={"Passing": 3, "Warning": 1})
    assert c.agent.service.register("web", service_id="web-2", address="127.0.0.1", port=b2.port,
                                    weights={"Passing": 1, "Warning": 1})
    hits = served_by(port, 200)
    assert set(hits) == {"b1", "b2"}, hits
    assert 135 <= hits["b1"] <= 165 and 35 <= hits["b2"] <= 65, hits

    assert c.agent.service.maintenance("web-2", True) is True
    assert served_by(port, 40) == Counter({"b1": 40})
    assert c.agent.service.maintenance("web-2", False) is True
    assert set(served_by(port, 40)) == {"b1", "b2"}

    # A TTL check: fail takes the instance out, pass brings it back.
    assert c.agent.service.register("web", service_id="web-2", address="127.0.0.1", port=b2.port,
                                    weights={"Passing": 1, "Warning": 1},
                                    check={"CheckID": "web-2-ttl", "TTL": "60s", "Status": "passing"})
    assert set(served_by(port, 40)) == {"b1", "b2"}
    assert c.agent.check.ttl_fail("web-2-ttl") is True
    assert served_by(port, 40) == Counter({"b1": 40})
    assert c.agent.check.ttl_pass("web-2-ttl") is True
    assert set(served_by(port, 40)) == {"b1", "b2"}

    assert c.agent.service.deregister("web-1") is True
    assert served_by(port, 20) == Counter({"b2": 20})
    assert c.agent.service.register("web", service_id="web-1", address="127.0.0.1", port=b1.port,
                                    weights={"Passing": 3, "Warning": 1})

    corral.kill9()
    corral.start()
    hits = served_by(port, 200)
    assert 135 <= hits["b1"] <= 165 and 35 <= hits["b2"] <= 65, hits
    os.unlink(path)
