"""The follower's stream mode (docs/replication.md, "Following a peer"):
a change reaches the follower over one open stream=1 answer; a
cursor_expired line mid-stream makes it resynchronise and stream again
from the snapshot's cursor; a silent stream is reopened; a 200 that is
not NDJSON is a protocol error; replication.mode = "poll" still
converges."""
import json
import re
import socket
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import requests

from conftest import Replicator, free_port, rows, wait_until
from test_config import patch, run
from test_replication import grant

HLC = (int(time.time() * 1000) << 16)


def fk_user(seq, uid, subject):
    return {"seq": seq, "kind": "user",
            "row": {"user_id": uid, "subject": subject, "hlc": HLC + seq, "origin": "fk",
                    "origin_seq": seq, "deleted": False}}


def snapshot(cursor):
    return {"region": "fk", "cursor": str(cursor), "watermarks": {},
            "users": [], "memberships": [], "policies": []}


class StreamPeer:
    """A fake authz-server whose feed streams. `script(path, peer)` returns
    (content type, lines, then): lines are sent one per chunk (a str with
    its newline, bytes as they are, a little apart), then
    `then` is "end" (end the stream), "keepalive" (empty lines every
    0.1 s until closed), "silent" (nothing more, connection held) or
    "cut" (the connection closed, the stream unfinished)."""

    def __init__(self, script):
        self.requests = []
        self.closing = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                fake.requests.append(self.path)
                self.close_connection = True
                if self.path.startswith("/v1/policy/snapshot"):
                    body = json.dumps(fake.snapshot_doc or snapshot(fake.snapshot_cursor)).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                ctype, lines, then = script(self.path, fake)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for line in lines:
                        if isinstance(line, bytes):
                            self.chunk(line)
                            time.sleep(0.05)
                        else:
                            self.chunk(line.encode() + b"\n")
                    if then == "cut":  # mid-chunk, no end of the stream
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    while then != "end" and not fake.closing.is_set():
                        fake.closing.wait(0.1)
                        if then == "keepalive":
                            self.chunk(b"\n")
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def chunk(self, data):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

        self.snapshot_cursor = 0
        self.snapshot_doc = None  # a whole snapshot answer instead of an empty one
        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}"

    def streams(self):
        return [p for p in self.requests if "stream=1" in p]

    def close(self):
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fresh_db(cluster):
    db = f"rp_st_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", "-X", "-q", cluster["PG_URL_US"], "-c", f'CREATE DATABASE "{db}"'],
                   check=True, capture_output=True)
    url = cluster["PG_URL_US"].rsplit("/", 1)[0] + "/" + db
    sql = lambda q: subprocess.run(["psql", "-X", "-tA", url, "-c", q], check=True,  # noqa: E731
                                   capture_output=True, text=True).stdout.strip()
    return SimpleNamespace(url=url, sql=sql)


@pytest.fixture
def follow_fake(workdir, fresh_db):
    """start(script, extra, ready, snapshot_doc): a replicator of region us
    on a fresh store following one StreamPeer fk (whose snapshot is
    snapshot_doc when given, else empty)."""
    made = []

    def start(script, extra=None, ready=True, snapshot_doc=None):
        fake = StreamPeer(script)
        fake.snapshot_doc = snapshot_doc
        cfg = {"replication": {"backoff_max_ms": 200}}
        for section, values in (extra or {}).items():
            cfg.setdefault(section, {}).update(values)
        rep = Replicator(workdir, "us", fresh_db.url, {"fk": fake.url}, regions="us,fk",
                         extra=cfg)
        made.append((rep, fake))
        rep.start(ready=ready)
        rep.sql = fresh_db.sql
        return rep, fake
    yield start
    for rep, fake in made:
        rep.stop()
        fake.close()


def feed_streams(authz):
    text = requests.get(authz.url + "/metrics", timeout=10).text
    return sum(float(m.group(1)) for m in
               re.finditer(r"^authz_feed_streams(?:\{[^}]*\})?\s+(\S+)$", text, re.M))


def log_tail(region, lines=40):
    """The end of a region's replicator and authz-server logs, for a
    failure's message."""
    out = []
    for name, path in (("replicator", region.replicator.log), ("authz", region.authz.log)):
        try:
            with open(path, errors="replace") as f:
                out.append(f"--- {name} log of {region.name}:\n" + "".join(f.readlines()[-lines:]))
        except OSError as e:
            out.append(f"--- {name} log of {region.name}: {e}")
    return "\n".join(out)


def test_change_reaches_follower_over_stream(regions):
    us, eu = regions["us"], regions["eu"]
    wait_until(lambda: us.replicator.status()["peers"]["eu"]["stream_open"], 30,
               "us holding a stream open to eu")
    st = us.replicator.status()["peers"]["eu"]
    assert st["mode"] == "stream" and st["state"] == "following", st
    # eu's feed serves the streams of us's and ap's followers.
    wait_until(lambda: feed_streams(eu.authz) >= 2, 30, "eu serving two streams")
    reconnects = us.replicator.metric("rp_reconnects_total", peer="eu")
    errors = us.replicator.metric("rp_peer_errors_total", peer="eu")
    applied = us.replicator.metric("rp_rows_applied_total", peer="eu")
    for i in range(3):
        s = f"stream-{i}-{uuid.uuid4().hex[:8]}"
        grant(eu, s, "doc/stream")
        wait_until(lambda: us.authz.check(s, "doc:read", "doc/stream")["allowed"], 30,
                   "a write in eu allowed in us")
    assert us.replicator.metric("rp_rows_applied_total", peer="eu") > applied
    # Same stream all along: no new connection, no failure.
    assert us.replicator.metric("rp_reconnects_total", peer="eu") == reconnects, log_tail(us)
    assert us.replicator.metric("rp_peer_errors_total", peer="eu") == errors, log_tail(us)
    assert us.replicator.status()["peers"]["eu"]["stream_open"]


def test_cursor_expired_mid_stream_resyncs(follow_fake):
    uid, later = str(uuid.uuid4()), str(uuid.uuid4())
    expired = json.dumps({"error": {"code": "cursor_expired", "message": "reload"}})

    def script(path, fake):
        if "after=0&" in path:
            msg = {"changes": [fk_user(1, uid, "fk-one")], "cursor": "1", "more": False,
                   "watermarks": {}}
            fake.snapshot_cursor = 7  # what the resync will find
            return "application/x-ndjson", [json.dumps(msg), expired], "end"
        if "after=7&" in path:
            msg = {"changes": [fk_user(8, later, "fk-later")], "cursor": "8", "more": False,
                   "watermarks": {}}
            return "application/x-ndjson", [json.dumps(msg)], "keepalive"
        return "application/x-ndjson", [], "keepalive"

    rep, fake = follow_fake(script)
    wait_until(lambda: rep.sql(f"SELECT count(*) FROM authz.users WHERE user_id = '{later}'")
               == "1", 30, "the change streamed after the resync")
    assert rep.sql(f"SELECT subject FROM authz.users WHERE user_id = '{uid}'") == "fk-one"
    snaps = [p for p in fake.requests if p.startswith("/v1/policy/snapshot")]
    assert len(snaps) == 2, fake.requests  # the bootstrap, then the resync
    streams = fake.streams()
    assert "after=0&" in streams[0] and "after=7&" in streams[1], fake.requests
    assert rep.metric("rp_peer_errors_total", peer="fk", kind="cursor_expired") == 1
    assert rep.metric("rp_resyncs_total", peer="fk") == 2
    wait_until(lambda: rep.sql("SELECT cursor FROM authz.replication_cursors"
                               " WHERE peer = 'fk'") == "8", 30, "cursor 8 stored")
    st = rep.status()["peers"]["fk"]
    assert st["stream_open"] and st["mode"] == "stream", st


def test_silent_stream_is_reopened(follow_fake):
    empty = json.dumps({"changes": [], "cursor": "0", "more": False, "watermarks": {}})
    rep, fake = follow_fake(lambda path, _: ("application/x-ndjson", [empty], "silent"),
                            extra={"replication": {"stream_timeout_ms": 500}})
    wait_until(lambda: len(fake.streams()) >= 3, 30, "the silent stream reopened")
    assert rep.metric("rp_peer_errors_total", peer="fk", kind="connect") >= 2


def test_keepalives_hold_a_stream(follow_fake):
    empty = json.dumps({"changes": [], "cursor": "0", "more": False, "watermarks": {}})
    rep, fake = follow_fake(lambda path, _: ("application/x-ndjson", [empty], "keepalive"),
                            extra={"replication": {"stream_timeout_ms": 500}})
    wait_until(lambda: rep.status()["peers"]["fk"]["stream_open"], 30, "the stream open")
    # Keep-alives every 0.1 s restart the 0.5 s timer: the stream stays.
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        assert len(fake.streams()) == 1, fake.requests
        time.sleep(0.1)
    assert rep.metric("rp_peer_errors_total", peer="fk") == 0


def test_stream_cut_mid_line_applies_the_whole_lines_only(follow_fake):
    whole, cut = str(uuid.uuid4()), str(uuid.uuid4())
    first = json.dumps({"changes": [fk_user(1, whole, "fk-whole")], "cursor": "1",
                        "more": False, "watermarks": {}})
    second = json.dumps({"changes": [fk_user(2, cut, "fk-cut")], "cursor": "2",
                         "more": False, "watermarks": {}})

    def script(path, _):
        if "after=0&" in path:
            return "application/x-ndjson", [first, second[:25].encode()], "cut"
        return "application/x-ndjson", [], "keepalive"
    rep, fake = follow_fake(script)
    wait_until(lambda: any("after=1&" in p for p in fake.streams()), 30,
               "a new stream from the stored cursor 1")
    assert rep.sql(f"SELECT subject FROM authz.users WHERE user_id = '{whole}'") == "fk-whole"
    assert rep.sql(f"SELECT count(*) FROM authz.users WHERE user_id = '{cut}'") == "0"
    assert rep.metric("rp_peer_errors_total", peer="fk", kind="connect") == 1
    wait_until(lambda: rep.status()["peers"]["fk"]["stream_open"], 30, "the new stream open")


def test_partial_lines_are_joined(follow_fake):
    uid = str(uuid.uuid4())
    msg = json.dumps({"changes": [fk_user(1, uid, "fk-split")], "cursor": "1",
                      "more": False, "watermarks": {}})

    def script(path, _):
        if "after=0&" in path:
            # One line in three chunks: the line buffer joins them.
            return "application/x-ndjson", [msg[:10].encode(), msg[10:30].encode(),
                                            msg[30:]], "keepalive"
        return "application/x-ndjson", [], "keepalive"
    rep, fake = follow_fake(script)
    wait_until(lambda: rep.sql(f"SELECT subject FROM authz.users WHERE user_id = '{uid}'")
               == "fk-split", 30, "the split line applied")
    assert rep.metric("rp_peer_errors_total", peer="fk") == 0
    assert len(fake.streams()) == 1 and rep.status()["peers"]["fk"]["stream_open"]


def test_non_ndjson_answer_is_a_protocol_error(follow_fake):
    empty = json.dumps({"changes": [], "cursor": "0", "more": False})
    rep, fake = follow_fake(lambda path, _: ("application/json", [empty], "end"), ready=False)
    wait_until(lambda: rep.metric("rp_peer_errors_total", peer="fk", kind="protocol") >= 1, 30,
               "the protocol error counted")
    st = rep.status()["peers"]["fk"]
    assert "Content-Type application/json" in st["last_error"], st
    assert not st["stream_open"]
    assert rep.sql("SELECT cursor FROM authz.replication_cursors WHERE peer = 'fk'") == "0"


def test_poll_mode_converges(regions, workdir, fresh_db):
    eu, ap = regions["eu"], regions["ap"]
    grant(eu, f"poll-eu-{uuid.uuid4().hex[:8]}", "doc/poll")
    rep = Replicator(workdir, "us", fresh_db.url, {"eu": eu.authz.url, "ap": ap.authz.url},
                     extra={"replication": {"mode": "poll"}}).start()
    try:
        local = SimpleNamespace(sql=fresh_db.sql)
        for origin, region in (("eu", eu), ("ap", ap)):
            wait_until(lambda: rows(local, origin) == rows(region, origin), 60,
                       f"{origin}'s rows reaching the poll-mode follower")
        s = f"poll-later-{uuid.uuid4().hex[:8]}"
        uid, _ = grant(ap, s, "doc/poll")
        wait_until(lambda: fresh_db.sql(f"SELECT count(*) FROM authz.users"
                                        f" WHERE user_id = '{uid}'") == "1", 30,
                   "a later write in ap reaching the poll-mode follower")
        for peer in ("eu", "ap"):
            st = rep.status()["peers"][peer]
            assert st["mode"] == "poll" and not st["stream_open"], st
    finally:
        rep.stop()


def test_bad_mode_is_refused(tmp_path):
    p = run(tmp_path, patch("replication", "mode", "push"))
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert 'replication.mode must be "stream" or "poll"' in p.stderr, p.stderr
    p = run(tmp_path, patch("replication", "stream_timeout_ms", 5))
    assert p.returncode == 2 and "stream_timeout_ms = 5 is out of range" in p.stderr, p.stderr
