"""The gateway filter end to end (issue 11): three regions of
tools/local-cluster (real PostgreSQL, Kafka, identity, authz-server,
replicators behind netem proxies with 40 ms one way between regions), each
with authz-filterd and a real nginx that protects an echo upstream with
auth_request. Every request here goes through a region's nginx.

- a grant made in us and used through eu's gateway 0-100 ms later, with
  no revision, is allowed every time (the filter waits for eu to apply
  every origin up to the request's arrival; none is a final 403);
- grant -> 200, revoke -> 403 final, no token -> 401;
- with the links to eu delayed, a request carrying the grant's revision
  is held and then allowed; delayed past the retry budget it is a 403
  transient with Retry-After;
- eu's authz-server killed: decisions go on from memory and the
  staleness shows in the filter's metrics;
- an origin cut off for longer than max_staleness: decisions that depend
  on it are 503, decisions granted by the other origins still answer.
"""
import json
import os
import random
import subprocess
import time

import requests

import conftest as rc
from conftest import BIN, DELAY_MS, REPO, STALENESS_MS, fresh, metric, token

SEED = int(os.environ.get("AUTHZ_TEST_SEED", str(int(time.time()))))
wait_until = rc.wait_until


def test_grant_then_revoke_through_nginx(lc):
    eu = lc.regions["eu"]
    s = fresh("gw-local")
    tok = token(s, lc.env)
    r = eu.get("/runtime-groups/rg1")
    assert r.status_code == 401, r.text
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), r.headers
    aid, _ = eu.assign(eu.user(s), "runtime_groups/rg1")
    r = eu.get("/runtime-groups/rg1", tok)
    assert r.status_code == 200, (r.status_code, r.headers, r.text)
    assert s in r.text  # the echo upstream saw X-Authz-Subject
    # Another resource: no grant, a final deny (after the arrival wait).
    r = eu.get("/runtime-groups/rg2", tok)
    assert r.status_code == 403 and r.headers.get("Authz-Decision") == "final", \
        (r.status_code, r.headers)
    eu.revoke(aid)
    # Allows never wait: the revoke shows once it reached the filter.
    wait_until(lambda: eu.get("/runtime-groups/rg1", tok).status_code == 403, 30,
               "the revoke reaching the filter")
    r = eu.get("/runtime-groups/rg1", tok)
    assert r.status_code == 403, (r.status_code, r.headers)
    assert r.headers.get("Authz-Decision") == "final", r.headers
    assert r.headers.get("Authz-Reason") == "no_grant", r.headers
    # An unmapped route and a path-confusion spelling of a mapped one.
    assert eu.get("/no/such/route", tok).status_code == 403
    r = eu.get("/runtime-groups/%2e%2e/rg1", tok)
    assert r.status_code in (400, 403), (r.status_code, r.text)


def test_cross_region_grant_without_revision_is_never_a_final_deny(lc):
    """200 grants in us, each used through eu's gateway 0-100 ms after the
    grant's answer, with no revision: all 200 must be allowed."""
    us, eu = lc.regions["us"], lc.regions["eu"]
    rnd = random.Random(SEED)
    print(f"\nseed {SEED}")
    subjects = [fresh("gw-x") for _ in range(200)]
    tokens = {s: token(s, lc.env) for s in subjects}
    users = {s: us.user(s) for s in subjects}
    codes, waits = {}, []
    for i, s in enumerate(subjects):
        rg = f"rgx{i}"
        us.assign(users[s], f"runtime_groups/{rg}")
        granted = time.monotonic()
        pause = rnd.uniform(0, 0.1)
        time.sleep(pause)  # the scenario's own delay, not a wait for a condition
        r = eu.get(f"/runtime-groups/{rg}", tokens[s])
        waits.append(time.monotonic() - granted)
        codes.setdefault(r.status_code, []).append((s, r.headers.get("Authz-Decision"),
                                                    r.headers.get("Authz-Reason")))
    waits.sort()
    print(f"grant -> answer through eu: p50 {waits[100] * 1000:.0f} ms,"
          f" p99 {waits[197] * 1000:.0f} ms, max {waits[-1] * 1000:.0f} ms")
    assert set(codes) == {200}, {k: v[:5] for k, v in codes.items()}


def test_revision_waits_for_a_delayed_link_then_allows(lc):
    us, eu = lc.regions["us"], lc.regions["eu"]
    s = fresh("gw-rev")
    tok = token(s, lc.env)
    uid = us.user(s)
    lc.delay_all(600)
    try:
        _, rev = us.assign(uid, "runtime_groups/rgrev")
        t0 = time.monotonic()
        r = eu.get("/runtime-groups/rgrev", tok, revision=rev)
        took = time.monotonic() - t0
        assert r.status_code == 200, (r.status_code, r.headers, r.text)
        # It could only be allowed once the grant crossed the delayed link.
        assert took >= 0.3, took
        print(f"\nheld {took * 1000:.0f} ms before the allow (600 ms one way)")
    finally:
        lc.delay_all(DELAY_MS)


def test_past_the_retry_budget_is_a_transient_403(lc):
    us, eu = lc.regions["us"], lc.regions["eu"]
    s = fresh("gw-late")
    tok = token(s, lc.env)
    uid = us.user(s)
    lc.delay_all(3500)
    try:
        _, rev = us.assign(uid, "runtime_groups/rglate")
        r = eu.get("/runtime-groups/rglate", tok, revision=rev)
        assert r.status_code == 403, (r.status_code, r.headers)
        assert r.headers.get("Authz-Decision") == "transient", r.headers
        assert int(r.headers["Retry-After"]) >= 1, r.headers
    finally:
        lc.delay_all(DELAY_MS)
    # The client's retry, once the grant is in, is allowed.
    wait_until(lambda: eu.get("/runtime-groups/rglate", tok, revision=rev).status_code == 200,
               60, "the retried request allowed")


def test_authz_server_killed_decisions_continue_from_memory(lc):
    eu = lc.regions["eu"]
    s = fresh("gw-mem")
    tok = token(s, lc.env)
    eu.assign(eu.user(s), "runtime_groups/rgmem")
    wait_until(lambda: eu.get("/runtime-groups/rgmem", tok).status_code == 200, 30,
               "the grant allowed")
    pid = lc.pid("authz-eu")
    os.kill(pid, 9)
    try:
        wait_until(lambda: metric(eu.metrics(), "filter_feed_connected") == 0, 30,
                   "the filter noticing its authz-server is gone")
        r = eu.get("/runtime-groups/rgmem", tok)
        assert r.status_code == 200, (r.status_code, r.headers, r.text)
        wait_until(lambda: metric(eu.metrics(), "filter_origin_staleness_seconds",
                                  origin="eu") > 1.5, 30, "the staleness growing")
        assert eu.get("/runtime-groups/rgmem", tok).status_code == 200
        if eu.kind == "module":
            # The module in nginx's worker follows the feed on its own.
            wait_until(lambda: eu.status()["feed_connected"] is False, 30,
                       "the module noticing its authz-server is gone")
            assert eu.status()["loaded"] is True
            wait_until(lambda: eu.status()["origins"]["eu"]["staleness_ms"] > 1500, 30,
                       "the module's staleness growing")
    finally:
        lc.lc("up")  # starts the processes that died
    wait_until(lambda: metric(eu.metrics(), "filter_feed_connected") == 1, 60,
               "the filter following its authz-server again")
    wait_until(lambda: metric(eu.metrics(), "filter_origin_staleness_seconds",
                              origin="eu") < 1.5, 60, "the staleness back to normal")
    if eu.kind == "module":
        wait_until(lambda: eu.status()["feed_connected"] and
                   eu.status()["origins"]["eu"]["staleness_ms"] < 1500, 60,
                   "the module following its authz-server again")


def test_stale_origin_fails_closed_for_what_depends_on_it(lc):
    us, eu, ap = lc.regions["us"], lc.regions["eu"], lc.regions["ap"]
    s_ap, s_us = fresh("gw-ap"), fresh("gw-us")
    t_ap, t_us = token(s_ap, lc.env), token(s_us, lc.env)
    ap.assign(ap.user(s_ap), "runtime_groups/rgap")
    us.assign(us.user(s_us), "runtime_groups/rgus")
    wait_until(lambda: eu.get("/runtime-groups/rgap", t_ap).status_code == 200 and
               eu.get("/runtime-groups/rgus", t_us).status_code == 200, 60,
               "both grants allowed in eu")
    lc.lc("link", "cut", "ap", "eu")
    lc.lc("link", "cut", "ap", "us")
    try:
        wait_until(lambda: eu.get("/runtime-groups/rgap", t_ap).status_code == 503,
                   STALENESS_MS / 1000 + 30, "ap's data past max_staleness in eu")
        r = eu.get("/runtime-groups/rgap", t_ap)
        assert r.headers.get("Authz-Reason") == "stale_policy", r.headers
        # Granted by us, current: unaffected.
        r = eu.get("/runtime-groups/rgus", t_us)
        assert r.status_code == 200, (r.status_code, r.headers)
        # A deny depends on every origin, ap included: it cannot be final.
        r = eu.get("/runtime-groups/nothing-here", t_us)
        assert r.status_code == 503, (r.status_code, r.headers)
    finally:
        lc.lc("link", "heal", "ap", "eu")
        lc.lc("link", "heal", "ap", "us")
    wait_until(lambda: eu.get("/runtime-groups/rgap", t_ap).status_code == 200, 60,
               "ap's grant allowed again once healed")


def test_filterd_contracts_directly(lc):
    """authz-filterd without nginx: the nginx auth_request contract and the
    Envoy ext_authz one (original path behind the prefix, judged as sent)."""
    eu = lc.regions["eu"]
    s = fresh("gw-direct")
    tok = token(s, lc.env)
    eu.assign(eu.user(s), "runtime_groups/rgd")
    auth = {"Authorization": f"Bearer {tok}"}
    wait_until(lambda: requests.get(eu.filter_url + "/ext-authz/runtime-groups/rgd",
                                    headers=auth, timeout=10).status_code == 200, 30,
               "the grant allowed through ext_authz")
    r = requests.get(eu.filter_url + "/auth", timeout=10, headers=dict(
        auth, **{"X-Original-Method": "GET", "X-Original-URI": "/runtime-groups/rgd?x=1"}))
    assert r.status_code == 200 and r.headers["X-Authz-Subject"] == s, (r.status_code, r.text)
    assert r.headers["Authz-Decision"] == "allow"
    r = requests.get(eu.filter_url + "/auth", headers=auth, timeout=10)
    assert r.status_code == 400, r.text  # the original method and URI are required
    for odd in ("/ext-authz/runtime-groups/%2e%2e/rgd", "/ext-authz//runtime-groups/%2F",
                "/ext-authz/runtime-groups/rgd%5Cx", "/ext-authz/runtime-groups/*"):
        r = requests.get(eu.filter_url + odd, headers=auth, timeout=10)
        assert r.status_code in (400, 403), (odd, r.status_code, r.text)
        assert r.headers.get("Authz-Decision") != "allow", (odd, r.headers)
    r = requests.post(eu.filter_url + "/ext-authz/runtime-groups/rgd", headers=auth, timeout=10)
    assert r.status_code == 403, r.text  # POST maps to another action, not granted
    m = eu.metrics()
    assert metric(m, "filter_decisions_total", outcome="allow", reason="allowed") >= 2, m
    # The index gauges follow once a second (filterd's tick).
    m = wait_until(lambda: (lambda t: t if metric(t, "filter_policy_loaded") == 1 and
                            (metric(t, "filter_index_assignments") or 0) >= 1 else None)(
                                eu.metrics()), 10, "the index gauges")
    # log.access "errors" (the default): decisions are counted, but only a
    # 5xx answer gets an access line at info.
    assert metric(m, "http_requests_total", service="filter", route="/auth", method="GET",
                  code="200") >= 1, m
    with open(os.path.join(lc.run, "logs", "filter-eu.log"), errors="replace") as f:
        lines = [json.loads(x) for x in f if x.startswith("{")]
    loud = [x for x in lines if x.get("msg") == "request" and x.get("level") == "info" and
            x.get("route") in ("/auth", "/ext-authz") and x.get("status", 0) < 500]
    assert not loud, loud[:3]


def test_filterd_log_access_setting(lc, tmp_path):
    """log.access takes "all" or "errors"; anything else stops the start
    with a message that names the key."""
    conf = tmp_path / "filter.json"
    conf.write_text(json.dumps({
        "service": {"region": "eu", "regions": "us,eu,ap"},
        "policy": {"url": "http://127.0.0.1:1"},
        "routes": {"file": os.path.join(REPO, "gateway-filter", "routes", "demo.json")},
        "jwt": {"keys_file": os.path.join(REPO, ".dev", "keys", "keys.json"),
                "issuer": "authz-dev", "audience": "authz-gateway"},
        "log": {"access": "some"}}))
    r = subprocess.run([os.path.join(BIN, "authz-filterd"), "--config", str(conf)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert 'log.access must be "all" or "errors"' in r.stderr, r.stderr
