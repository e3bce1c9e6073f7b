"""Issue 4's acceptance path: both real clients, unmodified, driving one corral.

py-consul registers the instances, gdapi-python creates the load balancer and its certificate;
traffic goes through the listeners the API opened; state survives kill -9.
"""
import socket
import ssl
import urllib.request
from collections import Counter

import consul
import gdapi

from conftest import free_port, get, refused, wait_until
from test_rancher import pem


def shares(port, n, host="x"):
    counts = Counter()
    for _ in range(n):
        status, body = get(f"http://127.0.0.1:{port}/", headers={"Host": host})
        counts[body if status == 200 else status] += 1
    return counts


def test_instances_from_consul_behind_a_rancher_lb(corral, backend_factory):
    a, b = backend_factory("web-1"), backend_factory("web-2")
    agent = consul.Consul(host="127.0.0.1", port=corral.port)
    assert agent.agent.service.register("web", service_id="web-1", address="127.0.0.1", port=a.port,
                                        weights={"passing": 3, "warning": 1})
    assert agent.agent.service.register("web", service_id="web-2", address="127.0.0.1", port=b.port,
                                        weights={"passing": 1, "warning": 1})

    api = gdapi.Client(url=corral.url + "/v1")
    web = api.create_service(name="web")
    port = free_port()
    lb = api.create_load_balancer_service(
        name="lb-1",
        lbConfig={"portRules": [{"sourcePort": port, "protocol": "http", "serviceId": web.id,
                                 "targetPort": 8080, "hostname": "", "path": "/"}]})
    assert lb.state == "inactive" and refused(port)
    lb.activate()
    wait_until(lambda: api.by_id_load_balancer_service(lb.id).state == "active", what="active")

    counts = shares(port, 200)
    assert counts["web-1"] + counts["web-2"] == 200, counts
    assert 135 <= counts["web-1"] <= 165, counts  # 3:1

    # Maintenance: web-2 gets nothing; back out of it: traffic returns.
    assert agent.agent.service.maintenance("web-2", True, "draining for a test")
    assert shares(port, 40) == Counter({"web-1": 40})
    assert agent.agent.service.maintenance("web-2", False)
    assert shares(port, 40)["web-2"] > 0

    # Deregistered: gone from the pool.
    assert agent.agent.service.deregister("web-2")
    assert shares(port, 20) == Counter({"web-1": 20})

    # kill -9 and restart: the same state, the listener serves again.
    corral.kill9()
    assert refused(port)
    corral.start()
    wait_until(lambda: not refused(port), what="listener back after restart")
    assert shares(port, 10) == Counter({"web-1": 10})
    assert "web-2" not in agent.agent.services()
    assert api.by_id_load_balancer_service(lb.id).state == "active"

    # Deactivate: the listener closes (after draining).
    api.by_id_load_balancer_service(lb.id).deactivate()
    wait_until(lambda: refused(port), timeout=5, what="listener closed")


def served_certificate(port, server_name):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
            return tls.getpeercert(binary_form=True), tls.selected_alpn_protocol()


def der(pem_text):
    return ssl.PEM_cert_to_DER_cert(pem_text)


def test_https_with_certificates_uploaded_and_rotated_through_the_api(corral, backend_factory):
    backend = backend_factory("secure")
    agent = consul.Consul(host="127.0.0.1", port=corral.port)
    agent.agent.service.register("secure", service_id="secure-1", address="127.0.0.1", port=backend.port)
    api = gdapi.Client(url=corral.url + "/v1")
    svc = api.create_service(name="secure")
    rsa = api.create_certificate(name="rsa", cert=pem("rsa.crt"), key=pem("rsa2048-pkcs8.key"))
    ec = api.create_certificate(name="ec", cert=pem("ec.crt"), key=pem("ec-sec1.key"))
    port = free_port()
    rules = [{"sourcePort": port, "protocol": "https", "serviceId": svc.id, "targetPort": 443}]
    lb = api.create_load_balancer_service(
        name="tls-lb", lbConfig={"portRules": rules, "defaultCertificateId": rsa.id})
    lb.activate()
    wait_until(lambda: not refused(port), what="https listener")
    cert, _ = served_certificate(port, "anything.test")
    assert cert == der(pem("rsa.crt"))

    # A request over TLS reaches the target.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/", context=ctx, timeout=5) as r:
        assert r.read() == b"secure"

    # Metrics: the served certificate's expiry and the handshakes.
    from test_observability import scrape, value
    m = scrape(corral.url)
    assert value(m, "corral_tls_certificate_not_after_timestamp_seconds", certificate=rsa.id) > 1.7e9
    assert value(m, "corral_tls_handshakes_total", listener=f"{port}/https", result="ok") >= 2

    # Rotation through the API: new handshakes get the new default, no restart.
    api.update(api.by_id_load_balancer_service(lb.id),
               lbConfig={"portRules": rules, "defaultCertificateId": ec.id})
    wait_until(lambda: served_certificate(port, "anything.test")[0] == der(pem("ec.crt")),
               what="rotated certificate")


def test_oversized_bodies_are_413_with_the_api_envelope(corral):
    big = b'{"name": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    req = urllib.request.Request(corral.url + "/v1/services", data=big, method="POST")
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("a 1 MiB+ body was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 413
        assert e.headers["X-API-Schemas"] == corral.url + "/v1/schemas"
        assert b'"type":"error"' in e.read()
    req = urllib.request.Request(corral.url + "/v1/agent/service/register", data=big, method="PUT")
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("a 1 MiB+ body was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 413
