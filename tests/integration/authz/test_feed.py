"""The change feed: a follower sees every change once and in order, the
long poll waits without blocking the server, expired cursors get 410, and
waiters are answered by one read per wake-up (fan-out), watermark changes
waking only those that asked for them."""
import http.client
import json
import os
import re
import select
import subprocess
import threading
import time
import uuid
from urllib.parse import urlencode

import pytest
import requests

from conftest import BIN, Authz, wait_until


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
    wait_until(lambda: metric(authz, "authz_feed_waiters") >= 1, 10, "the poll to wait")
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


# ---- fan-out: one read per wake-up, shared by every waiter -------------------
#
# These run against a server of their own whose topic has no producer, so no
# heartbeat moves its watermarks: every wake-up is one the test caused, and
# the feed metrics count exactly what it did.

@pytest.fixture(scope="module")
def quiet(cluster, workdir):
    topic = f"feed-quiet.{uuid.uuid4().hex[:8]}"
    subprocess.run([os.path.join(BIN, "authz-kafka-admin"), "create-topics", "--bootstrap",
                    cluster["KAFKA_BOOTSTRAP"], topic], check=True, capture_output=True)
    svc = Authz(cluster, workdir, topic, "quiet").start()
    yield svc
    svc.stop()


def metric(server, name, **labels):
    """Sum of the series of `name` whose labels include `labels` (0 while
    the family has none yet)."""
    total, found = 0.0, False
    for line in server.get("/metrics").text.splitlines():
        if line == f"# TYPE {name} counter" or line == f"# TYPE {name} gauge":
            found = True
        m = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    assert found, f"no metric {name}{labels}"
    return total


class Poll:
    """One long poll on a connection of its own: sent now, read later."""

    def __init__(self, server, **params):
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        self.conn.request("GET", "/v1/policy/changes?" + urlencode(params))
        self.t0 = time.monotonic()

    def answered(self):
        """True once the answer (or a close) is readable, without reading it."""
        return bool(select.select([self.conn.sock], [], [], 0)[0])

    def result(self):
        r = self.conn.getresponse()
        raw = r.read()
        self.elapsed = time.monotonic() - self.t0
        self.conn.close()
        return r.status, raw, json.loads(raw)


def waiters(server, n):
    wait_until(lambda: metric(server, "authz_feed_waiters") == n, 30, f"{n} waiting polls")


def add_users(server, n):
    """Commits n users in one transaction: n feed rows, one notification."""
    server.sql("INSERT INTO authz.users (user_id, subject, hlc, origin, origin_seq)"
               f" SELECT gen_random_uuid(), 'fan' || g, 1, 'zz', g FROM generate_series(1, {n}) g")


def head(server):
    return int(server.sql("SELECT last_seq FROM authz.feed_state"))


def test_many_waiters_share_one_read(quiet):
    cur = head(quiet)
    polls = [Poll(quiet, after=cur, wait=30000) for _ in range(200)]
    waiters(quiet, 200)
    reads = metric(quiet, "authz_feed_reads_total", **{"for": "wakeup"})
    add_users(quiet, 1)
    answers = [p.result() for p in polls]
    assert all(status == 200 for status, _, _ in answers), answers[0]
    assert len({raw for _, raw, _ in answers}) == 1, "waiters on one cursor got different bodies"
    body = answers[0][2]
    assert [c["seq"] for c in body["changes"]] == [cur + 1]
    assert body["changes"][0]["row"]["subject"] == "fan1"
    assert body["cursor"] == str(cur + 1) and body["more"] is False and "watermarks" in body
    # One read per worker (two workers) for 200 waiters, not one per waiter.
    assert metric(quiet, "authz_feed_reads_total", **{"for": "wakeup"}) - reads <= 2
    waiters(quiet, 0)


def test_waiters_on_different_cursors_get_their_own_rows(quiet):
    # While the LISTEN connections are down, commits wake nobody, so waiters
    # pile up on different cursors; the reconnect wakes them all at once.
    c0 = head(quiet)
    first = Poll(quiet, after=c0, wait=30000)
    waiters(quiet, 1)
    quiet.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
              " WHERE application_name = 'authz-feed'")
    add_users(quiet, 2)
    second = Poll(quiet, after=c0 + 2, wait=30000)
    add_users(quiet, 1)
    s1, _, b1 = first.result()
    s2, _, b2 = second.result()
    assert s1 == 200 and s2 == 200, (b1, b2)
    assert [c["seq"] for c in b1["changes"]] in ([c0 + 1, c0 + 2], [c0 + 1, c0 + 2, c0 + 3])
    assert b1["cursor"] == str(b1["changes"][-1]["seq"]) and b1["more"] is False
    assert [c["seq"] for c in b2["changes"]] == [c0 + 3]
    assert b2["cursor"] == str(c0 + 3) and b2["more"] is False

    def listening_again():
        p = Poll(quiet, after=head(quiet), wait=30000)
        waiters(quiet, 1)
        add_users(quiet, 1)
        return p.result()[0] == 200 and p.elapsed < 5
    wait_until(listening_again, 30, "the LISTEN connections to come back")


def test_watermark_change_wakes_only_watermark_waiters(quiet):
    cur = head(quiet)
    plain = Poll(quiet, after=cur, wait=4000)
    wm = Poll(quiet, after=cur, wait=30000, watermarks=1)
    waiters(quiet, 2)
    reads = metric(quiet, "authz_feed_reads_total", **{"for": "wakeup"})
    quiet.sql("INSERT INTO authz.watermarks (origin, applied_hlc, known_hlc) VALUES ('zz', 5, 7)"
              " ON CONFLICT (origin) DO UPDATE SET applied_hlc = 5, known_hlc = 7;"
              " SELECT pg_notify('authz_watermarks', '')")
    status, _, body = wm.result()
    assert status == 200, body
    assert body == {"changes": [], "cursor": str(cur), "more": False,
                    "watermarks": {**body["watermarks"], "zz": {"applied": 5, "known": 7}}}
    assert not plain.answered(), "a waiter without watermarks=1 was woken by watermarks"
    # Only the worker holding the watermark waiter read the feed, once.
    assert metric(quiet, "authz_feed_reads_total", **{"for": "wakeup"}) - reads == 1
    status, _, body = plain.result()
    assert status == 200 and plain.elapsed >= 3.5, (status, plain.elapsed)
    assert body["changes"] == [] and body["cursor"] == str(cur) and body["more"] is False
    assert body["watermarks"]["zz"] == {"applied": 5, "known": 7}


def test_waiters_keep_limit_and_gone_semantics(quiet):
    cur = head(quiet)
    polls = {n: Poll(quiet, after=cur, wait=30000, limit=n) for n in (1, 3, 1000)}
    waiters(quiet, 3)
    reads = metric(quiet, "authz_feed_reads_total", **{"for": "wakeup"})
    add_users(quiet, 5)
    got = {n: p.result() for n, p in polls.items()}
    for n, more in ((1, True), (3, True), (1000, False)):
        status, _, body = got[n]
        assert status == 200, body
        k = min(n, 5)
        assert [c["seq"] for c in body["changes"]] == list(range(cur + 1, cur + 1 + k))
        assert body["cursor"] == str(cur + k) and body["more"] is more
        # Watermarks only with an answer the limit did not cut.
        assert ("watermarks" in body) is (not more)
    assert metric(quiet, "authz_feed_reads_total", **{"for": "wakeup"}) - reads <= 2
    for after in (head(quiet) + 1000, 999999999):
        p = Poll(quiet, after=after, wait=5000)
        status, _, body = p.result()
        assert status == 410 and body["error"]["code"] == "cursor_expired", body
        assert p.elapsed < 3
