"""The status page (`/` and `/status`): JSON shape, JS-off rendering, auth, no secrets."""
import base64
import json
import os

import gdapi
import consul

from conftest import get, free_port, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pem(name):
    with open(os.path.join(ROOT, "tests", "data", "certs", name)) as f:
        return f.read()


def setup_lb(corral, backend_factory, **auth):
    b = backend_factory("one")
    c = consul.Consul(host="127.0.0.1", port=corral.port)
    assert c.agent.service.register("web", service_id="web-1", address="127.0.0.1",
                                    port=b.port, weights={"Passing": 4, "Warning": 1})
    api = gdapi.Client(url=corral.url + "/v1", **auth)
    web = api.create_service(name="web")
    port = free_port()
    lb = api.create_load_balancer_service(name="front-1", lbConfig={"portRules": [
        {"sourcePort": port, "serviceId": web.id, "hostname": "a.example.com", "path": "/x",
         "priority": 2}]})
    lb.activate()
    return c, port


def test_status_json_and_static_page(corral, backend_factory):
    c, port = setup_lb(corral, backend_factory)
    wait_until(lambda: get(f"http://127.0.0.1:{port}/x", {"Host": "a.example.com"})[0] == 200)
    status, body = get(corral.url + "/status")
    assert status == 200
    s = json.loads(body)
    lb = next(l for l in s["loadBalancers"] if l["name"] == "front-1")
    assert lb["state"] == "active"
    assert lb["listeners"][0]["port"] == port
    assert lb["listeners"][0]["rules"] == [
        {"host": "a.example.com", "path": "/x", "priority": 2, "service": "web"}]
    [svc] = s["services"]
    [t] = svc["targets"]
    assert (t["id"], t["state"], t["weight"], t["configuredWeight"]) == ("web-1", "passing", 4, 4)
    assert s["generation"] >= 1 and s["lastReload"]["generation"] == s["generation"]

    status, html = get(corral.url + "/")
    assert status == 200
    assert 'data-target="web-1"' in html and "generation" in html

    c.agent.service.maintenance("web-1", "true")
    s = json.loads(get(corral.url + "/status")[1])
    assert s["services"][0]["targets"][0]["state"] == "maintenance"
    assert s["services"][0]["targets"][0]["weight"] == 0


def test_status_lists_certificates_without_keys(corral):
    api = gdapi.Client(url=corral.url + "/v1")
    key = pem("rsa2048-pkcs1.key")
    api.create_certificate(name="site", cert=pem("rsa.crt"), key=key)
    s = json.loads(get(corral.url + "/status")[1])
    [cert] = s["certificates"]
    assert cert["name"] == "site" and cert["daysToExpiry"] is not None
    for path in ("/status", "/"):
        body = get(corral.url + path)[1]
        assert "PRIVATE KEY" not in body
        assert key.strip().splitlines()[1] not in body


def test_status_requires_the_api_keys_when_configured(corral_factory):
    access, secret = "status-ak-7f3e", "status-sk-91c2"
    corral = corral_factory(args=["--access-key", access, "--secret-key", secret])
    basic = "Basic " + base64.b64encode(f"{access}:{secret}".encode()).decode()
    wrong = "Basic " + base64.b64encode(f"{access}:nope".encode()).decode()
    for path in ("/", "/status"):
        assert get(corral.url + path)[0] == 401
        assert get(corral.url + path, {"Authorization": wrong})[0] == 401
        status, body = get(corral.url + path, {"Authorization": basic})
        assert status == 200
        assert access not in body and secret not in body
    assert get(corral.url + "/health")[0] == 200
