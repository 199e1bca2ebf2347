"""authz-server HTTP API: check decisions and validation, status, health."""
import time

import requests


def post(authz, body, headers=None, raw=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return requests.post(f"{authz.url}/v1/check", data=raw if raw is not None else
                         __import__("json").dumps(body), headers=h, timeout=30)


def test_check_decisions(admin, authz):
    u = admin.post("/v1/users", {"subject": "carol", "email": "c@x.io", "name": "C"}).json()
    role = admin.post("/v1/roles", {"name": "api-readers", "permissions": ["doc:read"]}).json()
    r = admin.post("/v1/role-assignments", {"principal": {"type": "user", "id": u["id"]},
                                            "role_id": role["id"], "region": "eu",
                                            "resource": "doc/7"})
    rev = r.headers["Authz-Revision"]
    authz.wait_applied(rev)
    got = authz.check("carol", "doc:read", "doc/7", "eu", revision=rev)
    assert got["allowed"] and got["decision"] == "allow"
    assert authz.check("carol", "doc:read", "doc/7")["decision"] == "deny"        # region us
    assert authz.check("carol", "doc:write", "doc/7", "eu")["decision"] == "deny"
    assert authz.check("carol", "doc:read", "doc/8", "eu")["decision"] == "deny"
    # A revision this region has not applied makes a deny transient (a
    # newer write, 600 ms ahead: within the 1 s clock tolerance).
    future = "v1.us.%016x" % ((int(time.time() * 1000) + 600) << 16)
    got = authz.check("carol", "doc:write", "doc/7", "eu", revision=future)
    assert got["decision"] == "deny-transient" and not got["allowed"]
    assert authz.check("carol", "doc:read", "doc/7", "eu", revision=future)["allowed"]


def test_check_validation(authz):
    cases = [
        ({"action": "doc:read", "resource": "doc/1"}, "subject"),
        ({"subject": "a", "action": "doc", "resource": "doc/1"}, "action"),
        ({"subject": "a", "action": "doc:*", "resource": "doc/1"}, "action"),
        ({"subject": "a", "action": "doc:read", "resource": "doc"}, "resource"),
        ({"subject": "a", "action": "doc:read", "resource": "doc/*"}, "resource"),
        ({"subject": "a", "action": "doc:read", "resource": "doc/1", "region": "mars"}, "region"),
        ({"subject": "a", "action": "doc:read", "resource": "doc/1", "extra": 1}, "extra"),
        ({"subject": 5, "action": "doc:read", "resource": "doc/1"}, "subject"),
    ]
    for body, field in cases:
        r = post(authz, body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["code"] == "invalid_request"
        assert field in r.json()["error"]["message"], (body, r.text)
    assert post(authz, None, raw="{nope").status_code == 400
    assert post(authz, None, raw="[]").status_code == 400
    r = post(authz, None, raw='{"subject":"a"}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    for bad in ("v2.us.0000000000000001", "garbage", "v1.mars.0000000000000001"):
        r = post(authz, {"subject": "a", "action": "doc:read", "resource": "doc/1"},
                 headers={"Authz-Revision": bad})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_revision", bad


def test_status_health_metrics(authz):
    st = authz.status()
    assert st["region"] == "us"
    assert st["consumer"]["state"] == "running" and st["consumer"]["error"] is None
    assert st["consumer"]["next_offset"] >= 0
    us = st["origins"]["us"]
    assert us["applied_hlc"] > 0 and us["known_hlc"] >= us["applied_hlc"]
    assert us["lag_ms"] >= 0 and us["staleness_ms"] >= 0
    assert requests.get(f"{authz.url}/readyz", timeout=5).status_code == 200
    m = requests.get(f"{authz.url}/metrics", timeout=5).text
    for name in ("authz_checks_total", "authz_events_applied_total", "authz_lag_seconds",
                 "authz_consumer_stopped 0", "authz_apply_batch_seconds_bucket"):
        assert name in m, name
    r = requests.head(f"{authz.url}/v1/policy/snapshot", timeout=5)
    assert r.status_code == 200
