"""externalService, dnsService (service alias) and auditLog, driven by gdapi-python 0.5.3.

Backends listen on loopback addresses only (127.0.0.x); every loop is bounded.
"""
import http.server
import json
import os
import tempfile
import threading
import urllib.request
from collections import Counter

import gdapi
import pytest

from conftest import _Handler, free_port, get, wait_until
from test_rancher import api_error, client, pem, plain, raw


class SamePortBackends:
    """HTTP backends on several loopback IPs sharing one port (an external service's
    addresses are all reached on the rule's targetPort)."""

    def __init__(self, hosts):
        self.servers = []
        for attempt in range(20):
            port = free_port()
            try:
                for i, host in enumerate(hosts):
                    s = http.server.ThreadingHTTPServer((host, port), _Handler)
                    s.daemon_threads = True
                    s.name = f"backend-{host}"
                    s.hits = []
                    self.servers.append(s)
                break
            except OSError:
                self.close()
        assert len(self.servers) == len(hosts), "no common free port"
        self.port = port
        for s in self.servers:
            threading.Thread(target=s.serve_forever, daemon=True).start()

    def close(self):
        for s in self.servers:
            try:
                s.shutdown()
            except Exception:
                pass
            s.server_close()
        self.servers = []


@pytest.fixture
def same_port_backends():
    made = []

    def make(hosts):
        b = SamePortBackends(hosts)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def consul_put(corral, path, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    req = urllib.request.Request(corral.url + path, data=data, method="PUT")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def lb_to(c, name, port, service_id, **rule):
    lb = c.create_load_balancer_service(name=name, lbConfig={"portRules": [
        dict(sourcePort=port, serviceId=service_id, protocol="http", **rule)]})
    return lb.activate()


def spread(url, n=60):
    wait_until(lambda: get(url)[0] == 200, timeout=10, what=f"{url} answering")
    return Counter(get(url)[1] for _ in range(n))


# ---------------------------------------------------------------- externalService


def test_external_service_with_two_ips(corral, same_port_backends):
    backends = same_port_backends(["127.0.0.2", "127.0.0.3"])
    c = client(corral)
    _, _, schemas = raw("GET", corral.url + "/v1/schemas")
    by_id = {x["id"]: x for x in schemas["data"]}
    for t in ["externalService", "dnsService", "auditLog", "instanceHealthCheck"]:
        assert t in by_id, t
    assert by_id["auditLog"]["collectionMethods"] == ["GET"]
    assert by_id["auditLog"]["resourceMethods"] == ["GET"]
    assert "setservicelinks" in by_id["dnsService"]["resourceActions"]
    assert by_id["externalService"]["resourceFields"]["healthCheck"]["type"] == \
        "instanceHealthCheck"
    assert callable(c.create_external_service) and callable(c.list_external_service)
    ext = c.create_external_service(
        name="ext", externalIpAddresses=["127.0.0.2", "127.0.0.3"], description="two ips",
        metadata={"team": "db"},
        healthCheck={"port": backends.port, "requestLine": "GET /health HTTP/1.0",
                     "interval": 2000, "healthyThreshold": 2, "unhealthyThreshold": 3,
                     "responseTimeout": 2000})
    assert ext.type == "externalService" and ext.state == "inactive"
    assert ext.externalIpAddresses == ["127.0.0.2", "127.0.0.3"]
    assert ext.healthCheck.requestLine == "GET /health HTTP/1.0"
    assert ext.links.self == corral.url + f"/v1/externalservices/{ext.id}"
    assert "activate" in plain(ext.actions)
    ext = ext.activate()
    assert ext.state == "active"
    assert [e.id for e in c.list_external_service(name="ext")] == [ext.id]
    assert ext.id in [s.id for s in c.list_service()]

    port = free_port()
    lb_to(c, "lb", port, ext.id, targetPort=backends.port)
    seen = spread(f"http://127.0.0.1:{port}/")
    assert set(seen) == {"backend-127.0.0.2", "backend-127.0.0.3"}, seen
    assert abs(seen["backend-127.0.0.2"] - seen["backend-127.0.0.3"]) <= 2, seen

    # Down to one address: the table follows the update.
    c.update(ext, externalIpAddresses=["127.0.0.3"])
    wait_until(lambda: spread(f"http://127.0.0.1:{port}/", 10) == {"backend-127.0.0.3": 10},
               timeout=5, what="only 127.0.0.3")

    e = api_error(c.create_external_service, name="both", hostname="localhost",
                  externalIpAddresses=["127.0.0.2"])
    assert e.status == 422 and e.fieldName == "hostname"
    e = api_error(c.update, ext, hostname="localhost")
    assert e.status == 422
    e = api_error(c.create_external_service, name="bad", externalIpAddresses=["not-an-ip"])
    assert (e.status, e.code) == (422, "InvalidFormat")


def test_external_service_by_hostname(corral_factory, backend_factory):
    corral = corral_factory(args=["--dns-refresh-secs", "1"])
    b = backend_factory("local", host="127.0.0.1")
    c = client(corral)
    ext = c.create_external_service(name="loc", hostname="localhost")
    assert ext.hostname == "localhost" and ext.externalIpAddresses is None
    port = free_port()
    lb_to(c, "lb", port, ext.id, targetPort=b.port)
    seen = spread(f"http://127.0.0.1:{port}/", 20)
    assert seen == {"local": 20}, seen
    # A hostname that does not resolve: no targets (503), nothing else breaks.
    bad = c.create_external_service(name="nx", hostname="no-such-host.invalid")
    port2 = free_port()
    lb_to(c, "lb2", port2, bad.id, targetPort=b.port)
    wait_until(lambda: get(f"http://127.0.0.1:{port2}/")[0] == 503, timeout=5,
               what="503 without addresses")
    assert get(f"http://127.0.0.1:{port}/") == (200, "local")


# ---------------------------------------------------------------- dnsService


def test_alias_over_two_services(corral_factory, backend_factory):
    w1, w2, a1 = backend_factory("web-1"), backend_factory("web-2"), backend_factory("api-1")
    cfg = os.path.join(tempfile.mkdtemp(prefix="corral-cfg-"), "config.json")
    with open(cfg, "w") as f:
        json.dump({"services": [
            {"ID": "web-1", "Service": "web", "Address": "127.0.0.1", "Port": w1.port},
            {"ID": "web-2", "Service": "web", "Address": "127.0.0.1", "Port": w2.port}]}, f)
    corral = corral_factory(args=["--config", cfg])
    # The other service comes from the Consul agent API.
    assert consul_put(corral, "/v1/agent/service/register", {
        "Name": "api", "ID": "api-1", "Address": "127.0.0.1", "Port": a1.port,
        "Weights": {"Passing": 2, "Warning": 1}}) == 200
    c = client(corral)
    web, api = c.create_service(name="web"), c.create_service(name="api")
    alias = c.create_dns_service(name="both")
    assert alias.type == "dnsService"
    alias = alias.setservicelinks(serviceLinks=[{"serviceId": web.id}, {"serviceId": api.id}])
    assert plain(alias.linkedServices) == {"web": web.id, "api": api.id}
    assert sorted(s.id for s in alias.consumedservices()) == sorted([web.id, api.id])

    port = free_port()
    lb_to(c, "lb", port, alias.id)
    seen = spread(f"http://127.0.0.1:{port}/", 80)
    assert set(seen) == {"web-1", "web-2", "api-1"}, seen
    assert 36 <= seen["api-1"] <= 44, seen  # weights 1, 1, 2

    # Maintenance of one instance is honoured through the alias.
    assert consul_put(corral, "/v1/agent/service/maintenance/api-1?enable=True&reason=x") == 200
    seen = spread(f"http://127.0.0.1:{port}/", 20)
    assert set(seen) == {"web-1", "web-2"}, seen

    # removeservicelink narrows the union.
    alias = c.reload(alias).removeservicelink(serviceLink={"serviceId": api.id})
    assert plain(alias.linkedServices) == {"web": web.id}


def test_alias_cycles_are_refused(corral):
    c = client(corral)
    web = c.create_service(name="web")
    a = c.create_dns_service(name="a")
    b = c.create_dns_service(name="b")
    third = c.create_dns_service(name="c")
    a = a.addservicelink(serviceLink={"serviceId": b.id})
    b = b.addservicelink(serviceLink={"serviceId": third.id})
    e = api_error(third.addservicelink, serviceLink={"serviceId": a.id})
    assert (e.status, e.code) == (422, "InvalidReference")
    assert "cycle" in e.message
    e = api_error(a.setservicelinks, serviceLinks=[{"serviceId": a.id}])
    assert e.status == 422
    assert plain(c.reload(third).linkedServices) == {}
    # Not a cycle: a diamond, and links to plain services.
    third.addservicelink(serviceLink={"serviceId": web.id})
    d = c.create_dns_service(name="d")
    d.setservicelinks(serviceLinks=[{"serviceId": a.id}, {"serviceId": b.id}])


# ---------------------------------------------------------------- auditLog


def test_audit_log_records_every_write(corral_factory):
    corral = corral_factory(args=["--access-key", "ak", "--secret-key", "s3cret-key"])
    c = client(corral, access_key="ak", secret_key="s3cret-key")
    assert callable(c.list_audit_log) and callable(c.by_id_audit_log)
    assert not hasattr(c, "create_audit_log")

    key = pem("ec-sec1.key")
    cert = c.create_certificate(name="ec", cert=pem("ec.crt"), key=key)
    web = c.create_service(name="web")
    c.update(web, description="updated")
    lb = c.create_load_balancer_service(name="lb", lbConfig={"certificateIds": [cert.id]})
    lb.activate()
    e = api_error(c.create_load_balancer_service, name="bad",
                  lbConfig={"portRules": [{"sourcePort": 80, "protocol": "gopher"}]})
    assert e.status == 422
    c.delete(web)
    assert consul_put(corral, "/v1/agent/service/register",
                      {"Name": "api", "ID": "api-1", "Port": 1,
                       "Check": {"HTTP": "http://127.0.0.1:1/", "Interval": "10s",
                                 "Header": {"Authorization": ["Bearer tok"]}}}) == 200
    assert consul_put(corral, "/v1/agent/service/maintenance/api-1?enable=True&reason=r") == 200
    assert consul_put(corral, "/v1/agent/service/deregister/api-1") == 200
    assert consul_put(corral, "/v1/agent/service/deregister/nope") == 404

    log = c.list_audit_log()
    events = [(x.eventType, x.responseCode) for x in log]
    assert events == [
        ("api.consulService.deregister", 404),
        ("api.consulService.deregister", 200),
        ("api.consulService.maintenance", 200),
        ("api.consulService.register", 200),
        ("api.service.delete", 200),
        ("api.loadBalancerService.create", 422),
        ("api.loadBalancerService.activate", 200),
        ("api.loadBalancerService.create", 201),
        ("api.service.update", 200),
        ("api.service.create", 201),
        ("api.certificate.create", 201),
    ], events
    ids = [int(x.id[3:]) for x in log]
    assert ids == sorted(ids, reverse=True)  # newest first

    entry = c.list_audit_log(resourceType="certificate").data[0]
    assert entry.resourceId == cert.id and entry.requestMethod == "POST"
    assert entry.requestObject.key == "<redacted>"
    assert entry.requestObject.cert == pem("ec.crt")
    assert entry.authType == "apiKey" and entry.authenticatedAsAccountId == "ak"
    assert entry.clientIp == "127.0.0.1"
    status, _, body = raw("GET", corral.url + "/v1/auditlogs",
                          headers={"Authorization": "Basic YWs6czNjcmV0LWtleQ=="})
    text = json.dumps(body)
    assert status == 200
    assert "PRIVATE KEY" not in text and "s3cret-key" not in text and "Bearer tok" not in text

    reg = c.list_audit_log(eventType="api.consulService.register").data[0]
    assert reg.resourceId == "api-1"
    assert plain(reg.requestObject)["Check"]["Header"]["Authorization"] == "<redacted>"
    maint = c.list_audit_log(eventType="api.consulService.maintenance").data[0]
    assert plain(maint.requestObject) == {"enable": "True", "reason": "r"}
    assert [x.eventType for x in c.list_audit_log(resourceId=lb.id)] == [
        "api.loadBalancerService.activate", "api.loadBalancerService.create"]
    failed = c.list_audit_log(responseCode="422").data[0]
    assert failed.requestObject.lbConfig.portRules[0].protocol == "gopher"
    assert failed.description

    # Read-only: no writes through the API; reads are not audited.
    status, _, err = raw("POST", corral.url + "/v1/auditlogs", {"eventType": "x"},
                         headers={"Authorization": "Basic YWs6czNjcmV0LWtleQ=="})
    assert status == 405
    assert c.by_id_audit_log(entry.id).eventType == "api.certificate.create"
    # An unauthenticated write is audited too, without credentials.
    status, _, _ = raw("POST", corral.url + "/v1/services", {"name": "x"})
    assert status == 401
    last = c.list_audit_log().data[0]
    assert (last.responseCode, last.authType, last.authenticatedAsAccountId) == (401, "none", None)
    # The log survives a restart.
    corral.kill9()
    corral.start()
    c = client(corral, access_key="ak", secret_key="s3cret-key")
    assert len(c.list_audit_log().data) == len(events) + 2


def test_audit_retention_is_bounded(corral_factory):
    corral = corral_factory(args=["--audit-retention", "5"])
    c = client(corral)
    for i in range(8):
        c.create_service(name=f"s{i}")
    log = c.list_audit_log()
    assert [x.requestObject.name for x in log] == ["s7", "s6", "s5", "s4", "s3"]
