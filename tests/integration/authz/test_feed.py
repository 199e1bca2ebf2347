"""The change feed: a follower sees every change once and in order, the
long poll waits without blocking the server, expired cursors get 410."""
import json
import threading
import time

import requests

from conftest import Authz, wait_until


def key(kind, row):
    if kind == "user":
        return ("user", row["user_id"])
    if kind == "membership":
        return ("membership", row["team_id"], row["user_id"])
    return ("policy", row["assignment_id"])


def load(snap):
    state = {}
    for kind, table in (("user", "users"), ("membership", "memberships"),
                        ("policy", "policies")):
        for row in snap[table]:
            state[key(kind, row)] = row
    return state


def test_follower_sees_every_change_once_in_order(identity, admin, authz):
    snap = authz.snapshot()
    state = load(snap)
    cursor = int(snap["cursor"])
    seen = []
    stop = threading.Event()
    errors = []
    s = requests.Session()

    def follow():
        nonlocal cursor
        try:
            while True:
                r = s.get(f"{authz.url}/v1/policy/changes",
                          params={"after": cursor, "wait": 500, "limit": 50}, timeout=30)
                assert r.status_code == 200, r.text
                body = r.json()
                for c in body["changes"]:
                    seen.append(c["seq"])
                    k = key(c["kind"], c["row"])
                    if c["row"]["deleted"]:
                        state.pop(k, None)
                    else:
                        state[k] = c["row"]
                cursor = int(body["cursor"])
                if stop.is_set() and not body["changes"] and not body["more"]:
                    return
        except Exception as e:
            errors.append(e)

    t = threading.Thread(target=follow)
    t.start()
    last = None
    users, teams = [], []
    for i in range(60):
        u = admin.post("/v1/users", {"subject": f"feed{i}", "email": "f@x.io", "name": "f"})
        users.append(u.json()["id"])
        if i % 3 == 0:
            teams.append(admin.post("/v1/teams", {"name": f"feed-team-{i}"}).json()["id"])
        r = admin.put(f"/v1/teams/{teams[-1]}/members/{users[-1]}")
        last = r.headers["Authz-Revision"]
        if i % 5 == 4:
            last = admin.delete(f"/v1/users/{users[i - 2]}").headers["Authz-Revision"]
    authz.wait_applied(last)
    stop.set()
    t.join(60)
    assert not t.is_alive() and not errors, errors
    first = int(snap["cursor"]) + 1
    assert seen == list(range(first, first + len(seen))), "gap, duplicate or disorder"
    assert len(seen) >= 60 + 60 + 12
    assert state == load(authz.snapshot())


def test_long_poll_waits_without_blocking(authz):
    cursor = authz.snapshot()["cursor"]
    out = {}

    def poll():
        t0 = time.monotonic()
        out["r"] = requests.get(f"{authz.url}/v1/policy/changes",
                                params={"after": cursor, "wait": 1500}, timeout=30)
        out["t"] = time.monotonic() - t0

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.2)   # let the poll start waiting (not a wait for a result)
    for _ in range(5):
        t0 = time.monotonic()
        authz.check("nobody", "doc:read", "doc/1")
        assert time.monotonic() - t0 < 1.0
    t.join(30)
    assert out["r"].status_code == 200, out["r"].text
    body = out["r"].json()
    assert body["changes"] == [] and body["cursor"] == cursor
    assert out["t"] >= 1.2


def test_bad_and_expired_cursors(cluster, workdir, identity, admin):
    small = Authz(cluster, workdir, identity.topic, "small",
                  extra={"feed": {"retain": 10, "prune_interval_ms": 100}}).start()
    try:
        for path in ("?after=x", "?after=-1", "?after=1&wait=99999999", "?after=1&limit=0",
                     "", "?after=0&watermarks=2"):
            r = small.get("/v1/policy/changes" + path)
            assert r.status_code == 400, (path, r.text)
            assert r.json()["error"]["code"] == "invalid_request"
        r = small.get("/v1/policy/changes?after=999999999")
        assert r.status_code == 410
        last = None
        for i in range(15):
            last = admin.post("/v1/users", {"subject": f"prune{i}", "email": "p@x.io",
                                            "name": "p"}).headers["Authz-Revision"]
        small.wait_applied(last)

        def gone():
            return small.get("/v1/policy/changes?after=0").status_code == 410
        wait_until(gone, 30, "the feed to be pruned")
        r = small.get("/v1/policy/changes?after=0")
        assert r.json()["error"]["code"] == "cursor_expired"
        cur = int(small.snapshot()["cursor"])
        assert small.get(f"/v1/policy/changes?after={cur}").status_code == 200
    finally:
        small.stop()
