"""The change feed: a follower sees every change once and in order, the
long poll waits without blocking the server, expired cursors get 410, and
waiters are answered by one read per wake-up (fan-out), watermark changes
waking only those that asked for them; streams (stream=1) carry the same
messages on one chunked answer, coalesce for a slow reader, and are freed
when their client goes."""
import http.client
import json
import os
import re
import select
import socket
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
    return int(server.sql("SELECT authz.feed_last_seq()"))


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


# ---- streams (stream=1): one chunked answer, one line per message --------------

class Stream:
    """One stream=1 answer on a raw socket, read a line at a time. rcvbuf
    shrinks the socket's receive buffer (set before connecting, so the
    window stays small): a reader that stops reading then stalls the
    server's writes after a few kilobytes."""

    def __init__(self, server, rcvbuf=None, method="GET", **params):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(60)
        self.sock.connect(("127.0.0.1", server.port))
        query = urlencode({"stream": 1, **params})
        self.sock.sendall(f"{method} /v1/policy/changes?{query} HTTP/1.1\r\n"
                          "Host: test\r\n\r\n".encode())
        self.f = self.sock.makefile("rb")
        self.status = int(self.f.readline().split()[1])
        self.headers = {}
        while True:
            h = self.f.readline()
            if h in (b"\r\n", b""):
                break
            k, v = h.decode().split(":", 1)
            self.headers[k.strip().lower()] = v.strip()
        self.buf = b""
        self.ended = False      # the terminating chunk came
        self.cut = False        # the connection closed without it

    def line(self, timeout=30):
        """The next line (b"" is a keep-alive); None once the answer ends."""
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            if self.ended or self.cut:
                assert self.buf == b"", f"partial line at the end: {self.buf[:200]!r}"
                return None
            size = self.f.readline()
            if size == b"":
                self.cut = True
                continue
            assert size.endswith(b"\r\n"), f"bad chunk header {size!r}"
            data = self.f.read(int(size, 16) + 2)
            assert data.endswith(b"\r\n"), "chunk cut short"
            if int(size, 16) == 0:
                self.ended = True
            self.buf += data[:-2]
        text, self.buf = self.buf.split(b"\n", 1)
        return text

    def message(self, timeout=30):
        """The next message, keep-alives skipped."""
        while True:
            text = self.line(timeout)
            assert text is not None, "the stream ended"
            if text:
                return json.loads(text)

    def body(self):
        """The JSON body of a non-stream answer (400, 410 ...)."""
        return json.loads(self.f.read(int(self.headers["content-length"])))

    def close(self):
        self.f.close()
        self.sock.close()


def streams(server):
    return metric(server, "authz_feed_streams")


def close_streams(server, *opened):
    """Closes the clients and waits until the server has freed their
    streams: it notices at a write, so commit one row per look."""
    for s in opened:
        s.close()

    def freed():
        add_users(server, 1)
        return streams(server) == 0
    wait_until(freed, 30, "the server to free the closed streams")


def add_big_rows(server, n, size):
    """Commits n users whose subjects are `size` bytes, one transaction (and
    one notification) each."""
    script = "".join("INSERT INTO authz.users (user_id, subject, hlc, origin, origin_seq)"
                     f" VALUES (gen_random_uuid(), 'big{i}-' || repeat('x', {size}), 1, 'zz',"
                     f" {i});\n" for i in range(n))
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", server.pg_url], input=script,
                   text=True, check=True, capture_output=True)


def test_stream_sends_each_change_once_in_order(quiet):
    cur = head(quiet)
    s = Stream(quiet, after=cur)
    assert s.status == 200
    assert s.headers["content-type"] == "application/x-ndjson"
    assert s.headers["transfer-encoding"] == "chunked"
    first = s.message()
    # The current state at once, nothing after the cursor yet.
    assert first == {"changes": [], "cursor": str(cur), "more": False,
                     "watermarks": first["watermarks"]}
    wait_until(lambda: streams(quiet) == 1, 30, "the stream to be counted")
    for i in range(1, 4):
        add_users(quiet, 1)
        m = s.message()
        assert [c["seq"] for c in m["changes"]] == [cur + i], m
        assert m["changes"][0]["row"]["subject"] == "fan1"
        assert m["cursor"] == str(cur + i) and m["more"] is False and "watermarks" in m
    # A burst: every row once and in order, each cursor the last row sent.
    for _ in range(15):
        add_users(quiet, 2)
    got = []
    while len(got) < 30:
        m = s.message()
        assert m["changes"] and m["cursor"] == str(m["changes"][-1]["seq"]), m
        got += [c["seq"] for c in m["changes"]]
    assert got == list(range(cur + 4, cur + 34)), "gap, duplicate or disorder"

    # Streams on one cursor share the wake-up read and its serialised line.
    at = head(quiet)
    more = [Stream(quiet, after=at) for _ in range(40)]
    for o in more:
        assert o.message()["cursor"] == str(at)
    wait_until(lambda: streams(quiet) == 41, 30, "41 streams")
    wakeups = metric(quiet, "authz_feed_reads_total", **{"for": "wakeup"})
    catchups = metric(quiet, "authz_feed_reads_total", **{"for": "stream"})
    add_users(quiet, 1)
    lines = {o.line() for o in more + [s]}
    assert len(lines) == 1, lines
    assert [c["seq"] for c in json.loads(lines.pop())["changes"]] == [at + 1]
    assert metric(quiet, "authz_feed_reads_total", **{"for": "wakeup"}) - wakeups <= 2
    assert metric(quiet, "authz_feed_reads_total", **{"for": "stream"}) == catchups
    close_streams(quiet, s, *more)


def test_stream_follower_matches_snapshot(identity, admin, authz):
    snap = authz.snapshot()
    state = load(snap)
    cursor = int(snap["cursor"])
    # watermarks=1: the relay's heartbeats bring a message at least every
    # 200 ms, so the follower sees the end target once it is set.
    s = Stream(authz, after=cursor, limit=50, watermarks=1)
    assert s.status == 200
    seen, errors = [], []
    target = {}

    def follow():
        nonlocal cursor
        try:
            while True:
                m = s.message(timeout=60)
                for c in m["changes"]:
                    seen.append(c["seq"])
                    k = key(c["kind"], c["row"])
                    if c["row"]["deleted"]:
                        state.pop(k, None)
                    else:
                        state[k] = c["row"]
                cursor = int(m["cursor"])
                if "end" in target and cursor >= target["end"] and not m["more"]:
                    return
        except Exception as e:
            errors.append(e)

    t = threading.Thread(target=follow)
    t.start()
    last = None
    users, teams = [], []
    for i in range(60):
        u = admin.post("/v1/users", {"subject": f"sfeed{i}", "email": "f@x.io", "name": "f"})
        users.append(u.json()["id"])
        if i % 3 == 0:
            teams.append(admin.post("/v1/teams", {"name": f"sfeed-team-{i}"}).json()["id"])
        r = admin.put(f"/v1/teams/{teams[-1]}/members/{users[-1]}")
        last = r.headers["Authz-Revision"]
        if i % 5 == 4:
            last = admin.delete(f"/v1/users/{users[i - 2]}").headers["Authz-Revision"]
    authz.wait_applied(last)
    target["end"] = int(authz.status()["feed"]["cursor"])
    t.join(60)
    assert not t.is_alive() and not errors, errors
    first = int(snap["cursor"]) + 1
    assert seen == list(range(first, first + len(seen))), "gap, duplicate or disorder"
    assert len(seen) >= 60 + 60 + 12
    assert state == load(authz.snapshot())
    s.close()


def test_stream_watermarks(quiet):
    cur = head(quiet)
    wm = Stream(quiet, after=cur, watermarks=1)
    plain = Stream(quiet, after=cur)
    wm.message()
    plain.message()
    wait_until(lambda: streams(quiet) == 2, 30, "2 streams")
    for applied, known in ((11, 13), (12, 14)):
        quiet.sql("INSERT INTO authz.watermarks (origin, applied_hlc, known_hlc)"
                  f" VALUES ('zz', {applied}, {known}) ON CONFLICT (origin) DO UPDATE"
                  f" SET applied_hlc = {applied}, known_hlc = {known};"
                  " SELECT pg_notify('authz_watermarks', '')")
        m = wm.message()
        assert m == {"changes": [], "cursor": str(cur), "more": False,
                     "watermarks": {**m["watermarks"],
                                    "zz": {"applied": applied, "known": known}}}, m
    # The same watermarks again: no message. The next one either stream
    # gets is the row committed after it (so watermark-only wake-ups never
    # reached the stream without watermarks=1 either).
    quiet.sql("SELECT pg_notify('authz_watermarks', '')")
    add_users(quiet, 1)
    for s in (wm, plain):
        m = s.message()
        assert [c["seq"] for c in m["changes"]] == [cur + 1], m
        assert m["watermarks"]["zz"] == {"applied": 12, "known": 14}
    close_streams(quiet, wm, plain)


def raise_watermark(server, origin, applied, known, also=""):
    """Raises origin's watermarks the way the consumer and the replicator
    do: an upsert whose row trigger (sql/authz/006) sends the notification
    with its values; `also` runs in the same transaction first."""
    server.sql(f"{also} INSERT INTO authz.watermarks (origin, applied_hlc, known_hlc)"
               f" VALUES ('{origin}', {applied}, {known}) ON CONFLICT (origin) DO UPDATE"
               f" SET applied_hlc = {applied}, known_hlc = {known}")


def test_watermarks_from_memory(quiet):
    """Heartbeat-like raises reach waiters and streams with no feed read;
    a notification that could claim more than the worker has read, or has
    no usable payload, takes a read; a row and a raise committed together
    arrive together."""
    cur = head(quiet)
    st = Stream(quiet, after=cur, watermarks=1)
    st.message()
    poll = Poll(quiet, after=cur, wait=30000, watermarks=1)
    wait_until(lambda: streams(quiet) == 1, 30, "1 stream")
    waiters(quiet, 1)
    reads = metric(quiet, "authz_feed_reads_total", **{"for": "wakeup"})
    raise_watermark(quiet, "zm", 21, 23)
    status, _, body = poll.result()
    assert status == 200, body
    assert body["changes"] == [] and body["cursor"] == str(cur)
    assert body["watermarks"]["zm"] == {"applied": 21, "known": 23}, body
    assert st.message()["watermarks"]["zm"] == {"applied": 21, "known": 23}
    for applied, known in ((22, 24), (25, 26)):
        raise_watermark(quiet, "zm", applied, known)
        m = st.message()
        assert m["changes"] == [] and m["cursor"] == str(cur), m
        assert m["watermarks"]["zm"] == {"applied": applied, "known": known}, m
    assert metric(quiet, "authz_feed_reads_total", **{"for": "wakeup"}) == reads, \
        "a watermark raise made a worker read the feed"

    # A seq beyond the worker's last read: the values are not trusted but
    # read (and the store still says 25/26, so nothing new is sent).
    forged = json.dumps({"seq": head(quiet) + 100, "origin": "zm", "applied": 90, "known": 91})
    quiet.sql(f"SELECT pg_notify('authz_watermarks', '{forged}')")
    wait_until(lambda: metric(quiet, "authz_feed_reads_total", **{"for": "wakeup"}) == reads + 1,
               30, "a read for the notification beyond the head")
    for bad in ("garbage", '{"seq": 1}', ""):
        quiet.sql(f"SELECT pg_notify('authz_watermarks', '{bad}')")
    wait_until(lambda: metric(quiet, "authz_feed_reads_total", **{"for": "wakeup"}) >= reads + 2,
               30, "a read for the payloads that do not parse")

    # A row and a raise in one transaction: one message with both.
    raise_watermark(quiet, "zm", 40, 41, also="INSERT INTO authz.users (user_id, subject, hlc,"
                    " origin, origin_seq) VALUES (gen_random_uuid(), 'wm-row', 1, 'zz', 1);")
    m = st.message()
    assert [c["row"]["subject"] for c in m["changes"]] == ["wm-row"], m
    assert m["watermarks"]["zm"] == {"applied": 40, "known": 41}, m
    # And from memory again from that read on.
    reads = metric(quiet, "authz_feed_reads_total", **{"for": "wakeup"})
    raise_watermark(quiet, "zm", 42, 43)
    assert st.message()["watermarks"]["zm"] == {"applied": 42, "known": 43}
    assert metric(quiet, "authz_feed_reads_total", **{"for": "wakeup"}) == reads
    close_streams(quiet, st)


def test_heartbeat_answers_are_paced(quiet):
    """A raise due to 400 long polls reaches every one of them, and not back
    to back: each worker answers a few a millisecond (az__feed_pace), so
    that its core stays free for checks, and the last answer comes well
    after the first. Load on the machine only makes the spread longer."""
    cur = head(quiet)
    polls = [Poll(quiet, after=cur, wait=30000, watermarks=1) for _ in range(400)]
    waiters(quiet, 400)
    raise_watermark(quiet, "zp", 7, 8)
    pending = {p.conn.sock: p for p in polls}
    seen = []
    deadline = time.monotonic() + 30
    while pending and time.monotonic() < deadline:
        ready, _, _ = select.select(list(pending), [], [], 1)
        t = time.monotonic()
        for sock in ready:
            seen.append(t)
            del pending[sock]
    assert not pending, f"{len(pending)} of 400 waiters never answered"
    for p in polls:
        status, _, body = p.result()
        assert status == 200 and body["changes"] == [], body
        assert body["watermarks"]["zp"] == {"applied": 7, "known": 8}, body
    # 400 waiters on two workers, one of them holding at least 200: paced
    # at 8 a millisecond that worker alone takes some 25 ms.
    assert max(seen) - min(seen) >= 0.015, (min(seen), max(seen))
    waiters(quiet, 0)


def test_stream_limit_cuts_messages(quiet):
    cur = head(quiet)
    s = Stream(quiet, after=cur, limit=1)
    assert s.message()["cursor"] == str(cur)
    add_users(quiet, 5)
    for i in range(5):
        m = s.message()
        assert [c["seq"] for c in m["changes"]] == [cur + 1 + i], m
        assert m["cursor"] == str(cur + 1 + i)
        assert m["more"] is (i < 4)
        # Watermarks only with a message the limit did not cut.
        assert ("watermarks" in m) is (i == 4)
    close_streams(quiet, s)


def test_stream_slow_reader_gets_everything_coalesced(quiet):
    cur = head(quiet)
    s = Stream(quiet, rcvbuf=4096, after=cur, limit=100)
    s.message()
    wait_until(lambda: streams(quiet) == 1, 30, "the stream to be counted")
    # The reader stops while 1,000 transactions commit, 4 KB rows each: the
    # socket buffers fill after a few, and the server must neither queue a
    # message per commit nor drop any.
    add_big_rows(quiet, 1000, 4000)
    msgs, seqs = 0, []
    while len(seqs) < 1000:
        m = s.message()
        msgs += 1
        assert m["cursor"] == str(m["changes"][-1]["seq"]) and len(m["changes"]) <= 100
        for c in m["changes"]:
            assert c["row"]["subject"] == f"big{len(seqs)}-" + "x" * 4000
            seqs.append(c["seq"])
    assert seqs == list(range(cur + 1, cur + 1001)), "gap, duplicate or disorder"
    assert m["more"] is False and "watermarks" in m
    assert msgs < 500, f"{msgs} messages for 1,000 commits: nothing was coalesced"
    close_streams(quiet, s)


def test_stream_client_gone_is_freed(quiet):
    opened = [Stream(quiet, after=head(quiet), watermarks=w) for w in (0, 1, 0)]
    for s in opened:
        s.message()
    # One more that stops reading with a message still being written.
    stalled = Stream(quiet, rcvbuf=4096, after=head(quiet))
    stalled.message()
    wait_until(lambda: streams(quiet) == 4, 30, "4 streams")
    add_big_rows(quiet, 50, 20000)
    close_streams(quiet, *opened, stalled)


def test_stream_bad_parameters(quiet):
    cur = head(quiet)
    for q in (f"after={cur}&stream=2", f"after={cur}&stream=yes", f"after={cur}&stream=1&wait=0",
              f"after={cur}&stream=1&wait=1000", f"after={cur}&stream=1&limit=0",
              f"after={cur}&stream=1&limit=10001", f"after={cur}&stream=1&watermarks=2",
              "stream=1", "after=x&stream=1"):
        r = quiet.get("/v1/policy/changes?" + q)
        assert r.status_code == 400, (q, r.text)
        assert r.json()["error"]["code"] == "invalid_request", (q, r.text)
    # A cursor outside the feed gets the long poll's 410, before any stream.
    for after in (cur + 1000, 999999999):
        s = Stream(quiet, after=after)
        assert s.status == 410 and s.body()["error"]["code"] == "cursor_expired"
        s.close()
    # HEAD: the head of a stream and an empty body, not a stream left open.
    r = requests.head(f"{quiet.url}/v1/policy/changes?after={cur}&stream=1", timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/x-ndjson"
    assert streams(quiet) == 0


def add_mixed(server, n):
    """Commits n users in one transaction, of origins yy and zz in turn
    (yy first): rows of two origins interleaved in one commit."""
    server.sql("INSERT INTO authz.users (user_id, subject, hlc, origin, origin_seq)"
               " SELECT gen_random_uuid(), 'mix' || g, 1,"
               "        CASE WHEN g % 2 = 1 THEN 'yy' ELSE 'zz' END, g"
               f" FROM generate_series(1, {n}) g")


def origins_of(body):
    return [c["row"]["origin"] for c in body["changes"]]


def test_exclude_origin(quiet):
    """A replicator's own rows are left out of its answers (it would only
    skip them); the cursor still moves past them, and followers that
    exclude another origin or none, on the same cursor, each get theirs."""
    cur = head(quiet)
    add_mixed(quiet, 6)
    r = quiet.get(f"/v1/policy/changes?after={cur}&exclude_origin=zz&watermarks=1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert origins_of(body) == ["yy"] * 3, body
    assert [c["seq"] for c in body["changes"]] == [cur + 1, cur + 3, cur + 5]
    assert body["cursor"] == str(cur + 6) and body["more"] is False and "watermarks" in body
    # The limit counts the feed's rows, not the ones sent: the cursor is
    # the last row covered, even when that row was left out.
    body = quiet.get(f"/v1/policy/changes?after={cur}&limit=2&exclude_origin=zz").json()
    assert [c["seq"] for c in body["changes"]] == [cur + 1]
    assert body["cursor"] == str(cur + 2) and body["more"] is True
    body = quiet.get(f"/v1/policy/changes?after={cur + 5}&limit=1&exclude_origin=zz").json()
    assert body == {"changes": [], "cursor": str(cur + 6), "more": False,
                    "watermarks": body["watermarks"]}

    # Waiters on one cursor woken by one read, each answered for its own
    # exclusion (the sorted list puts them side by side: a body shared
    # across exclusions would be wrong for some).
    at = head(quiet)
    polls = [(x, Poll(quiet, after=at, wait=30000, **({"exclude_origin": x} if x else {})))
             for x in ("zz", "", "yy", "zz", "", "yy")]
    waiters(quiet, len(polls))
    add_mixed(quiet, 4)
    want = {"zz": ["yy", "yy"], "yy": ["zz", "zz"], "": ["yy", "zz", "yy", "zz"]}
    for x, p in polls:
        status, _, body = p.result()
        assert status == 200 and origins_of(body) == want[x], (x, body)
        assert body["cursor"] == str(at + 4), (x, body)

    # A stream: a commit of only excluded rows still moves its cursor (an
    # empty line), mixed commits carry the others.
    at = head(quiet)
    s = Stream(quiet, after=at, exclude_origin="zz")
    plain = Stream(quiet, after=at)
    assert s.message()["cursor"] == str(at) and plain.message()["cursor"] == str(at)
    wait_until(lambda: streams(quiet) == 2, 30, "the two streams")
    add_users(quiet, 2)                 # origin zz only
    m = s.message()
    assert m["changes"] == [] and m["cursor"] == str(at + 2), m
    assert origins_of(plain.message()) == ["zz", "zz"]
    add_mixed(quiet, 2)
    m = s.message()
    assert origins_of(m) == ["yy"] and m["cursor"] == str(at + 4), m
    assert origins_of(plain.message()) == ["yy", "zz"]
    close_streams(quiet, s, plain)

    # Not a region name: refused, for polls and streams alike.
    for q in ("exclude_origin=", "exclude_origin=ZZ", "exclude_origin=zz%20",
              "exclude_origin=" + "a" * 33, "exclude_origin=1zz&stream=1",
              "exclude_origin=zz%2Cyy&stream=1"):
        r = quiet.get(f"/v1/policy/changes?after={cur}&{q}")
        assert r.status_code == 400, (q, r.text)
        assert r.json()["error"]["code"] == "invalid_request", (q, r.text)


def test_stream_keepalive(cluster, workdir):
    topic = f"feed-keepalive.{uuid.uuid4().hex[:8]}"
    subprocess.run([os.path.join(BIN, "authz-kafka-admin"), "create-topics", "--bootstrap",
                    cluster["KAFKA_BOOTSTRAP"], topic], check=True, capture_output=True)
    srv = Authz(cluster, workdir, topic, "keepalive",
                extra={"feed": {"stream_keepalive_ms": 1000}}).start()
    try:
        s = Stream(srv, after=head(srv))
        s.message()
        t0 = time.monotonic()
        # Nothing commits: the next line is a keep-alive, one interval on.
        assert s.line(timeout=20) == b""
        assert 0.8 < time.monotonic() - t0 < 10
        close_streams(srv, s)
        srv.stop()
    finally:
        srv.kill()


def test_stream_cursor_pruned_and_shutdown(cluster, workdir):
    topic = f"feed-prune.{uuid.uuid4().hex[:8]}"
    subprocess.run([os.path.join(BIN, "authz-kafka-admin"), "create-topics", "--bootstrap",
                    cluster["KAFKA_BOOTSTRAP"], topic], check=True, capture_output=True)
    srv = Authz(cluster, workdir, topic, "sprune",
                extra={"feed": {"retain": 10, "prune_interval_ms": 100}}).start()
    try:
        cur = head(srv)
        s = Stream(srv, rcvbuf=4096, after=cur, limit=1)
        s.message()
        # The reader stalls behind 64 KB messages while the rows after its
        # cursor commit and are pruned.
        add_big_rows(srv, 120, 64000)
        wait_until(lambda: int(srv.sql("SELECT pruned_through FROM authz.feed_state"))
                   >= cur + 100, 30, "the feed to be pruned")
        pruned = int(srv.sql("SELECT pruned_through FROM authz.feed_state"))
        got = []
        while True:
            text = s.line()
            assert text is not None, "the stream ended without an error line"
            m = json.loads(text)
            if "error" in m:
                break
            got += [c["seq"] for c in m["changes"]]
        assert m["error"]["code"] == "cursor_expired", m
        assert got == list(range(cur + 1, cur + 1 + len(got))) and cur + len(got) < pruned
        assert s.line() is None and s.ended, "no clean end after the error line"
        s.close()
        # Shutdown with a stream open: a clean exit (and, in the sanitizer
        # build, no leak); the client sees whole lines, then the close.
        live = Stream(srv, after=head(srv), watermarks=1)
        live.message()
        wait_until(lambda: streams(srv) == 1, 30, "the stream to be counted")
        srv.stop()
        while live.line(timeout=30) is not None:
            pass
        live.close()
    finally:
        srv.stop()


def feed_seqs(server, after):
    out = server.sql(f"SELECT seq FROM authz.changes WHERE seq > {after} ORDER BY seq")
    return [int(x) for x in out.split()]


def test_seqs_count_on_from_the_head(quiet):
    """Seqs are the head's successors (sql/authz/007_feed_head.sql): one
    transaction's rows are consecutive, a feed pruned down to nothing goes
    on above what it pruned, and the rows of a rolled-back subtransaction
    give their seqs back."""
    cur = head(quiet)
    add_users(quiet, 5)
    assert feed_seqs(quiet, cur) == list(range(cur + 1, cur + 6))
    assert head(quiet) == cur + 5
    # Every row removed, the way an operator would (under the feed's lock).
    quiet.sql("BEGIN; SELECT pg_advisory_xact_lock(hashtext('authz.changes'));"
              " UPDATE authz.feed_state SET pruned_through = authz.feed_last_seq();"
              " DELETE FROM authz.changes; COMMIT;")
    assert quiet.sql("SELECT count(*) FROM authz.changes") == "0"
    assert head(quiet) == cur + 5
    add_users(quiet, 2)
    assert feed_seqs(quiet, 0) == [cur + 6, cur + 7]
    r = quiet.get("/v1/policy/changes", params={"after": cur + 5})
    assert r.status_code == 200, r.text
    assert [c["seq"] for c in r.json()["changes"]] == [cur + 6, cur + 7]
    # The deferred triggers forced to run inside a savepoint that is then
    # rolled back: they run again at COMMIT and the seqs have no gap.
    quiet.sql("BEGIN;"
              " INSERT INTO authz.users (user_id, subject, hlc, origin, origin_seq)"
              "   VALUES (gen_random_uuid(), 'sub1', 1, 'zz', 1);"
              " SAVEPOINT a;"
              " INSERT INTO authz.users (user_id, subject, hlc, origin, origin_seq)"
              "   VALUES (gen_random_uuid(), 'sub2', 1, 'zz', 2);"
              " SET CONSTRAINTS ALL IMMEDIATE;"
              " ROLLBACK TO a;"
              " INSERT INTO authz.users (user_id, subject, hlc, origin, origin_seq)"
              "   VALUES (gen_random_uuid(), 'sub3', 1, 'zz', 3);"
              " COMMIT;")
    assert feed_seqs(quiet, cur + 7) == [cur + 8, cur + 9]
    subjects = quiet.sql(f"SELECT row->>'subject' FROM authz.changes WHERE seq > {cur + 7}"
                         " ORDER BY seq").split()
    assert subjects == ["sub1", "sub3"]
