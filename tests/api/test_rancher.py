"""The Rancher v1 API (SPEC-control-api.md §1) driven by unmodified gdapi-python 0.5.3."""
import base64
import json
import os
import socket
import tempfile
import time
import urllib.request
from collections import Counter

import gdapi
import pytest

from conftest import free_port, get, refused, wait_until

CERTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "certs")


def pem(name):
    with open(os.path.join(CERTS, name)) as f:
        return f.read()


def client(corral, **kw):
    return gdapi.Client(url=corral.url + "/v1", **kw)


def plain(o):
    """A gdapi RestObject (and everything inside) as plain dicts/lists, callables dropped."""
    if isinstance(o, list):
        return [plain(x) for x in o]
    if isinstance(o, gdapi.RestObject):
        return {k: plain(v) for k, v in vars(o).items() if not callable(v)}
    return o


def api_error(fn, *args, **kw):
    with pytest.raises(gdapi.ApiError) as e:
        fn(*args, **kw)
    return e.value.error


def raw(method, url, body=None, headers=None):
    """(status, headers, parsed JSON body) of one request, errors included."""
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read() or b"null")


# ---------------------------------------------------------------- envelopes and schemas


def test_root_schemas_and_bindings(corral):
    c = client(corral)
    for name in ["list_load_balancer_service", "create_load_balancer_service",
                 "by_id_load_balancer_service", "update_by_id_load_balancer_service",
                 "list_service", "create_service", "list_certificate", "create_certificate",
                 "list_loadBalancerService"]:
        assert callable(getattr(c, name)), name
    status, headers, root = raw("GET", corral.url + "/v1")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["X-API-Schemas"] == corral.url + "/v1/schemas"
    assert root["links"]["loadbalancerservices"] == corral.url + "/v1/loadbalancerservices"

    status, _, schemas = raw("GET", corral.url + "/v1/schemas")
    by_id = {s["id"]: s for s in schemas["data"]}
    for t in ["service", "loadBalancerService", "certificate", "lbConfig", "portRule",
              "loadBalancerCookieStickinessPolicy", "loadBalancerConfig", "serviceLink",
              "addRemoveServiceLinkInput", "setServiceLinksInput", "serviceUpgrade",
              "inServiceUpgradeStrategy"]:
        assert t in by_id, t
    lb = by_id["loadBalancerService"]
    assert lb["links"]["collection"] == corral.url + "/v1/loadbalancerservices"
    assert lb["collectionMethods"] == ["GET", "POST"]
    for a in ["activate", "deactivate", "addservicelink", "removeservicelink", "setservicelinks",
              "upgrade", "finishupgrade", "rollback", "cancelupgrade", "cancelrollback"]:
        assert a in lb["resourceActions"], a
    for _, act in lb["resourceActions"].items():
        if "input" in act:
            assert act["input"] in by_id
    assert lb["resourceFields"]["name"]["required"] is True
    assert by_id["portRule"]["resourceFields"]["protocol"]["options"] == \
        ["http", "tcp", "https", "tls", "sni", "udp"]
    assert by_id["portRule"]["collectionMethods"] == []
    assert "eq" in lb["collectionFilters"]["name"]["modifiers"]

    status, headers, one = raw("GET", corral.url + "/v1/schemas/loadBalancerService")
    assert status == 200 and one["id"] == "loadBalancerService"
    # Case-insensitive paths, one trailing slash ignored; errors are JSON with the header.
    assert raw("GET", corral.url + "/v1/loadBalancerServices/")[0] == 200
    status, headers, err = raw("GET", corral.url + "/v1/nothing")
    assert status == 404 and err["type"] == "error" and err["code"] == "NotFound"
    assert headers["X-API-Schemas"] == corral.url + "/v1/schemas"
    status, _, err = raw("POST", corral.url + "/v1/services", b"{not json")
    assert (status, err["code"]) == (400, "InvalidBodyContent")


def test_links_follow_host_and_forwarded_proto(corral):
    status, _, root = raw("GET", corral.url + "/v1",
                          headers={"Host": "lb.example:8443", "X-Forwarded-Proto": "https"})
    assert root["links"]["self"] == "https://lb.example:8443/v1"


# ---------------------------------------------------------------- CRUD, filters, actions


def test_crud_filters_and_state_machine(corral):
    c = client(corral)
    web = c.create_service(name="web")
    assert web.id.startswith("1s") and web.type == "service" and web.state == "inactive"
    lb = c.create_load_balancer_service(
        name="lb-1", description="acceptance",
        lbConfig={"portRules": [{"hostname": "web.example.com", "path": "/", "priority": 1,
                                 "protocol": "http", "serviceId": web.id, "sourcePort": free_port(),
                                 "targetPort": 8080}],
                  "stickinessPolicy": {"cookie": "SRVID", "domain": ".example.com",
                                       "indirect": True, "mode": "insert", "name": "web-sticky",
                                       "nocache": True, "postonly": False}})
    assert lb.type == "loadBalancerService" and lb.baseType == "service"
    assert lb.kind == "loadBalancerService" and lb.transitioning == "no"
    assert lb.links.self == corral.url + "/v1/loadbalancerservices/" + lb.id
    assert lb.lbConfig.portRules[0].serviceId == web.id
    assert lb.lbConfig.certificateIds == [] and lb.lbConfig.defaultCertificateId is None
    assert lb.lbConfig.stickinessPolicy.cookie == "SRVID"
    assert lb.linkedServices is not None and plain(lb.linkedServices) == {}
    assert set(plain(lb.actions)) >= {"activate", "addservicelink", "upgrade", "remove"}
    assert "deactivate" not in plain(lb.actions)
    assert lb.created.endswith("Z") and isinstance(lb.createdTS, int)

    # get / list / filters; /v1/services lists LBs too
    assert c.by_id_load_balancer_service(lb.id).name == "lb-1"
    assert c.by_id_load_balancer_service("1s999") is None
    assert c.by_id_service(lb.id).type == "loadBalancerService"
    assert {s.name for s in c.list_service()} == {"web", "lb-1"}
    assert [s.name for s in c.list_service(name="web")] == ["web"]
    assert [s.name for s in c.list_service(name_ne="web")] == ["lb-1"]
    assert [s.name for s in c.list_service(name_prefix="lb")] == ["lb-1"]
    assert [s.name for s in c.list_service(name_like="%b-%")] == ["lb-1"]
    assert [s.name for s in c.list_service(id=web.id)] == ["web"]
    assert [s.name for s in c.list_service(kind="loadBalancerService")] == ["lb-1"]
    assert [s.name for s in c.list_service(uuid=web.uuid)] == ["web"]
    assert len(c.list_service(description_null="").data) == 1
    assert len(c.list_service(description_notnull="").data) == 1
    coll = c.list_load_balancer_service(name="lb-1")
    assert coll.type == "collection" and coll.resourceType == "loadBalancerService"
    assert plain(coll.filters.name) == [{"modifier": "eq", "value": "lb-1"}]

    # activate → active; listed actions follow the state
    lb.activate()
    lb = c.reload(lb)
    assert lb.state == "active"
    assert "deactivate" in plain(lb.actions) and "activate" not in plain(lb.actions)
    assert [s.name for s in c.list_load_balancer_service(state="active")] == ["lb-1"]
    assert [s.name for s in c.list_service(state="inactive")] == ["web"]
    status, _, err = raw("POST", lb.links.self + "?action=activate", {})
    assert (status, err["code"]) == (422, "ActionNotAvailable")
    status, _, err = raw("POST", lb.links.self + "?action=explode", {})
    assert (status, err["code"]) == (422, "InvalidAction")

    # upgrade → upgraded (echoes input) → finishupgrade → active; the `upgrade` field shadows
    # the action, so gdapi binds it as `upgrade_action`
    up = lb.upgrade_action(inServiceStrategy={"batchSize": 1, "intervalMillis": 2000, "startFirst": False,
                                       "launchConfig": {"imageUuid": "docker:corral:2"}})
    assert up.state == "upgraded" and up.upgrade.inServiceStrategy.batchSize == 1
    assert {"finishupgrade", "rollback"} <= set(plain(up.actions))
    assert "upgrade" not in plain(up.actions)
    done = up.finishupgrade()
    assert done.state == "active"
    # upgrade → rollback → active, previous launchConfig restored
    up = done.upgrade_action(inServiceStrategy={"launchConfig": {"imageUuid": "docker:corral:3"}})
    assert up.launchConfig.imageUuid == "docker:corral:3"
    back = up.rollback()
    assert back.state == "active" and back.launchConfig.imageUuid == "docker:corral:2"
    off = back.deactivate()
    assert off.state == "inactive" and off.lbConfig.portRules[0].targetPort == 8080

    # partial update: absent fields unchanged; lbConfig replaced whole
    upd = c.update(off, description="changed")
    assert upd.description == "changed" and upd.name == "lb-1"
    assert len(upd.lbConfig.portRules) == 1
    upd = c.update(upd, lbConfig={"portRules": []})
    assert plain(upd.lbConfig.portRules) == [] and upd.description == "changed"
    upd = c.update_by_id_load_balancer_service(lb.id, name="lb-2")
    assert upd.name == "lb-2"

    # delete → absent from lists and filters; by_id → None
    gone = c.delete(upd)
    assert gone.state == "removed"
    assert c.by_id_load_balancer_service(lb.id) is None
    assert c.list_load_balancer_service(name="lb-2").data == []
    assert [s.name for s in c.list_service()] == ["web"]


def test_service_links_and_consumed_services(corral):
    c = client(corral)
    web = c.create_service(name="web")
    alt = c.create_service(name="alt-web")
    lb = c.create_load_balancer_service(name="lb", lbConfig={})
    lb = lb.addservicelink(serviceLink={"serviceId": web.id})
    assert plain(lb.linkedServices) == {"web": web.id}
    lb = lb.addservicelink(serviceLink={"name": "alt", "serviceId": alt.id})
    assert plain(lb.linkedServices) == {"web": web.id, "alt": alt.id}
    # same uuid (serviceId + name) replaces, does not duplicate
    lb = lb.addservicelink(serviceLink={"name": "alt", "serviceId": alt.id})
    assert len(plain(lb.linkedServices)) == 2
    consumed = lb.consumedservices()
    assert consumed.type == "collection"
    assert sorted(s.name for s in consumed.data) == ["alt-web", "web"]
    lb = lb.removeservicelink(serviceLink={"name": "alt", "serviceId": alt.id})
    assert plain(lb.linkedServices) == {"web": web.id}
    lb = lb.setservicelinks(serviceLinks=[{"serviceId": alt.id, "name": "x"}])
    assert plain(lb.linkedServices) == {"x": alt.id}
    err = api_error(lb.addservicelink, serviceLink={"serviceId": "1s999"})
    assert (err.status, err.code) == (422, "InvalidReference")
    # link actions are available in every state
    lb = lb.activate()
    assert "setservicelinks" in plain(lb.actions)


def test_legacy_v1_shape(corral):
    c = client(corral)
    web = c.create_service(name="web")
    port = free_port()
    lb = c.create_load_balancer_service(
        name="legacy", launchConfig={"ports": [f"{port}:80"]},
        loadBalancerConfig={"haproxyConfig": {"global": "maxconn 100", "defaults": "retries 2"},
                            "lbCookieStickinessPolicy": {"cookie": "LEG", "mode": "rewrite"}})
    assert lb.launchConfig.ports == [f"{port}:80"]
    assert plain(lb.lbConfig.portRules) == []
    lb = lb.addservicelink(serviceLink={"serviceId": web.id,
                                        "ports": [f"web.example.com:{port}/legacy=8080"]})
    assert plain(lb.lbConfig.portRules) == [
        {"sourcePort": port, "protocol": "http", "hostname": "web.example.com",
         "path": "/legacy", "targetPort": 8080, "serviceId": web.id}]
    assert lb.lbConfig.config == "global\nmaxconn 100\ndefaults\nretries 2\n"
    assert lb.lbConfig.stickinessPolicy.cookie == "LEG"
    lb = lb.setservicelinks(serviceLinks=[{"serviceId": web.id, "ports": [f"{port}=8081"]}])
    assert plain(lb.lbConfig.portRules) == [
        {"sourcePort": port, "protocol": "http", "hostname": "", "path": "",
         "targetPort": 8081, "serviceId": web.id}]
    # a link without ports: a default rule per listener
    lb = lb.setservicelinks(serviceLinks=[{"serviceId": web.id}])
    assert plain(lb.lbConfig.portRules) == [
        {"sourcePort": port, "protocol": "http", "hostname": "", "path": "",
         "targetPort": 80, "serviceId": web.id}]
    err = api_error(lb.setservicelinks, serviceLinks=[{"serviceId": web.id, "ports": ["a=b=c"]}])
    assert err.status == 422
    # PUT with lbConfig turns it into a 1.2+ LB: links no longer re-derive the rules
    lb = c.update(lb, lbConfig={"portRules": [{"sourcePort": port, "serviceId": web.id}]})
    lb = lb.addservicelink(serviceLink={"serviceId": web.id, "name": "n", "ports": ["9999"]})
    assert plain(lb.lbConfig.portRules) == [
        {"sourcePort": port, "protocol": "http", "serviceId": web.id}]


# ---------------------------------------------------------------- errors


def test_error_table(corral):
    c = client(corral)
    web = c.create_service(name="web")
    e = api_error(c.create_load_balancer_service, description="no name")
    assert (e.status, e.code, e.fieldName) == (422, "MissingRequired", "name")
    rule = lambda **r: {"portRules": [dict({"sourcePort": 18080, "serviceId": web.id}, **r)]}
    e = api_error(c.create_load_balancer_service, name="x", lbConfig=rule(serviceId="1s999"))
    assert (e.status, e.code) == (422, "InvalidReference")
    e = api_error(c.create_load_balancer_service, name="x", lbConfig=rule(protocol="gopher"))
    assert (e.status, e.code) == (422, "InvalidOption")
    e = api_error(c.create_load_balancer_service, name="x", lbConfig=rule(sourcePort=0))
    assert (e.status, e.code) == (422, "MinLimitExceeded")
    e = api_error(c.create_load_balancer_service, name="x", lbConfig=rule(sourcePort=70000))
    assert (e.status, e.code) == (422, "MaxLimitExceeded")
    e = api_error(c.create_load_balancer_service, name="x", lbConfig=rule(targetPort="many"))
    assert (e.status, e.code) == (422, "InvalidFormat")
    e = api_error(c.create_load_balancer_service, name="x", lbConfig={"certificateIds": ["1c99"]})
    assert (e.status, e.code) == (422, "InvalidReference")
    e = api_error(c.create_service, name="web")
    assert (e.status, e.code) == (422, "NotUnique")
    e = api_error(c.create_certificate, name="c", key=pem("rsa2048-pkcs8.key"))
    assert (e.status, e.code, e.fieldName) == (422, "MissingRequired", "cert")
    # a failed write changed nothing
    assert [s.name for s in c.list_service()] == ["web"]
    # two LBs on one port: the data plane refuses the second activation
    port = free_port()
    a = c.create_load_balancer_service(name="a", lbConfig=rule(sourcePort=port))
    b = c.create_load_balancer_service(name="b", lbConfig=rule(sourcePort=port))
    a.activate()
    e = api_error(b.activate)
    assert e.status == 422
    assert c.reload(b).state == "inactive"


# ---------------------------------------------------------------- certificates


def test_certificates(corral):
    c = client(corral)
    cert = c.create_certificate(name="rsa", cert=pem("rsa.crt"), key=pem("rsa2048-pkcs1.key"))
    assert cert.id.startswith("1c") and cert.type == "certificate"
    assert cert.CN == "rsa.example.com"
    assert "*.rsa.example.com" in cert.subjectAlternativeNames
    with open(os.path.join(CERTS, "rsa.crt.sha1")) as f:
        expected = f.read().strip().lower()
    assert cert.certFingerprint == expected.split("=")[-1]
    assert cert.keySize == 2048
    assert cert.expiresAt.endswith(str(int(cert.expiresAt[-4:])))
    assert int(cert.expiresAt[-4:]) > 2100
    assert not hasattr(cert, "key") or cert.key is None
    old = c.create_certificate(name="old", cert=pem("expired.crt"), key=pem("expired.key"))
    assert old.expiresAt.endswith("2021")

    e = api_error(c.create_certificate, name="bad", cert="-----BEGIN CERTIFICATE-----\nxx\n",
                  key=pem("rsa2048-pkcs8.key"))
    assert (e.status, e.code, e.fieldName) == (422, "InvalidFormat", "cert")
    e = api_error(c.create_certificate, name="bad", cert=pem("rsa.crt"), key=pem("ec-sec1.key"))
    assert (e.status, e.code, e.fieldName) == (422, "InvalidFormat", "key")
    e = api_error(c.create_certificate, name="rsa", cert=pem("ec.crt"), key=pem("ec-sec1.key"))
    assert (e.status, e.code) == (422, "NotUnique")

    lb = c.create_load_balancer_service(name="lb1", lbConfig={"certificateIds": [cert.id]})
    e = api_error(c.delete, cert)
    assert (e.status, e.code) == (405, "InvalidAction")
    assert "lb1" in e.message
    c.delete(lb)
    assert c.delete(cert).state == "removed"
    assert c.by_id_certificate(cert.id) is None
    assert [x.name for x in c.list_certificate()] == ["old"]


# ---------------------------------------------------------------- auth and persistence


def test_auth_required_when_configured(corral_factory):
    corral = corral_factory(args=["--access-key", "ak", "--secret-key", "sk"])
    with pytest.raises(gdapi.ApiError) as e:
        client(corral)  # sends None:None
    assert e.value.error.status == 401 and e.value.error.code == "Unauthorized"
    with pytest.raises(gdapi.ApiError):
        client(corral, access_key="ak", secret_key="wrong")
    status, headers, err = raw("GET", corral.url + "/v1/services")
    assert (status, err["code"]) == (401, "Unauthorized")
    assert headers["Content-Type"] == "application/json"
    c = client(corral, access_key="ak", secret_key="sk")
    assert c.create_service(name="web").name == "web"
    basic = "Basic " + base64.b64encode(b"ak:sk").decode()
    assert raw("GET", corral.url + "/v1/services", headers={"Authorization": basic})[0] == 200


def test_auth_off_ignores_authorization(corral):
    c = client(corral)  # None:None
    assert c.list_service().data == []
    c = client(corral, access_key="whatever", secret_key="x")
    assert c.list_service().data == []


def test_persistence_across_kill9(corral):
    c = client(corral)
    web = c.create_service(name="web")
    cert = c.create_certificate(name="ec", cert=pem("ec.crt"), key=pem("ec-sec1.key"))
    port = free_port()
    lb = c.create_load_balancer_service(
        name="lb", lbConfig={"portRules": [{"sourcePort": port, "serviceId": web.id}]})
    lb.activate()
    corral.kill9()
    corral.start()
    c = client(corral)
    lb2 = c.by_id_load_balancer_service(lb.id)
    assert lb2.state == "active" and lb2.lbConfig.portRules[0].sourcePort == port
    assert c.by_id_certificate(cert.id).CN == "ec.example.com"
    wait_until(lambda: not refused(port), timeout=5, what="listener back after restart")
    # ids are not reused after a restart
    assert c.create_service(name="web2").id not in {web.id, lb.id, cert.id}


# ---------------------------------------------------------------- traffic


def test_traffic_through_an_api_load_balancer(corral_factory, backend_factory):
    b1, b2 = backend_factory("one"), backend_factory("two")
    cfg = os.path.join(tempfile.mkdtemp(prefix="corral-cfg-"), "config.json")
    with open(cfg, "w") as f:
        json.dump({"services": [
            {"ID": "web-1", "Service": "web", "Address": "127.0.0.1", "Port": b1.port,
             "Weights": {"Passing": 3, "Warning": 1}},
            {"ID": "web-2", "Service": "web", "Address": "127.0.0.1", "Port": b2.port,
             "Weights": {"Passing": 1, "Warning": 1}}]}, f)
    corral = corral_factory(args=["--config", cfg])
    c = client(corral)
    web = c.create_service(name="web")
    port = free_port()
    lb = c.create_load_balancer_service(
        name="lb", lbConfig={"portRules": [{"sourcePort": port, "serviceId": web.id}]})
    assert refused(port)
    lb.activate()
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: get(url)[0] == 200, timeout=5, what="listener up")
    seen = Counter(get(url)[1] for _ in range(200))
    assert set(seen) == {"one", "two"}, seen
    assert 130 <= seen["one"] <= 170, seen  # 3:1 → 150:50

    c.reload(lb).deactivate()
    wait_until(lambda: refused(port), timeout=2, what="listener closed after deactivate")
    lb = c.reload(lb).activate()
    wait_until(lambda: get(url)[0] == 200, timeout=5, what="listener up again")
    c.delete(c.reload(lb))
    wait_until(lambda: refused(port), timeout=2, what="listener closed after delete")
