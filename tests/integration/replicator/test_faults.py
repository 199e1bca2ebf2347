"""A bad peer (issue 10 item 6): a fake authz-server, a small HTTP server
in the test, answers garbage JSON, bad rows, 500s, or hangs. The other
peer keeps flowing, bad rows end in authz.replication_dead_letters with
their raw JSON, and the good rows of the same batch apply."""
import json
import os
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import Replicator, free_port, wait_until
from test_replication import grant

GOOD_USER = str(uuid.uuid4())
FK_HLC = (int(time.time() * 1000) << 16)

FK_POLICY = {"assignment_id": str(uuid.uuid4()), "principal_type": "user",
             "principal_id": GOOD_USER, "role_id": str(uuid.uuid4()), "region": "*",
             "resource": "doc/fk", "permissions": ["doc:read"], "hlc": FK_HLC, "origin": "fk",
             "origin_seq": 7, "deleted": False}

BAD_BATCH = {
    "changes": [
        {"seq": 1, "kind": "user", "row": {"user_id": str(uuid.uuid4()), "subject": 5,
                                          "hlc": FK_HLC, "origin": "fk", "origin_seq": 1,
                                          "deleted": False}},
        {"seq": 2, "kind": "gizmo", "row": {"hlc": FK_HLC, "origin": "fk"}},
        {"seq": 3, "kind": "membership", "row": {"team_id": str(uuid.uuid4())}},
        {"seq": 4, "kind": "user", "row": {"user_id": "marker-not-a-uuid", "subject": "x",
                                          "hlc": FK_HLC, "origin": "fk", "origin_seq": 4,
                                          "deleted": False}},
        {"seq": 5, "kind": "user", "row": {"user_id": GOOD_USER, "subject": "fk-good",
                                          "hlc": FK_HLC, "origin": "fk", "origin_seq": 5,
                                          "deleted": False}},
        # Rows the gateway filters would refuse (a region's every filter
        # would then refuse its snapshot): recorded, never stored.
        {"seq": 6, "kind": "user", "row": {"user_id": str(uuid.uuid4()), "subject": "has space",
                                          "hlc": FK_HLC, "origin": "fk", "origin_seq": 6,
                                          "deleted": False}},
        {"seq": 7, "kind": "policy", "row": dict(FK_POLICY, resource="doc/a/b")},
        {"seq": 8, "kind": "policy", "row": dict(FK_POLICY, permissions=["doc:read", "read"])},
        {"seq": 9, "kind": "policy", "row": dict(FK_POLICY, region="EU")},
        {"seq": 10, "kind": "user", "row": {"user_id": str(uuid.uuid4()), "subject": "fk-o",
                                           "hlc": FK_HLC, "origin": "Fk!", "origin_seq": 10,
                                           "deleted": False}},
        "junk",
    ],
    "cursor": "11", "more": False,
    "watermarks": {"fk": {"applied": FK_HLC, "known": FK_HLC}},
}


class FakePeer:
    """mode: rows (a snapshot, then BAD_BATCH, then empty answers),
    garbage, 500 or hang. A feed request with stream=1 is answered as the
    authz-server does: chunked NDJSON, one answer per line, then empty
    keep-alive lines until the mode changes, which ends the stream."""

    def __init__(self):
        self.mode = "rows"
        self.requests = []
        self.auth = []
        self.release = threading.Event()
        self.closing = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # chunked streams need it

            def log_message(self, *a):
                pass

            def do_GET(self):
                fake.requests.append(self.path)
                fake.auth.append(self.headers.get("Authorization"))
                mode = fake.mode
                stream = "stream=1" in self.path
                if mode == "hang":
                    fake.release.wait(120)
                    self.close_connection = True  # ends without an answer
                    return
                if mode == "500":
                    return self.reply(500, b'{"error":{"code":"internal","message":"x"}}')
                if mode == "garbage":
                    if stream:
                        return self.stream([b'{"changes": [ this is not json'], mode)
                    return self.reply(200, b'{"changes": [ this is not json')
                if self.path.startswith("/v1/policy/snapshot"):
                    return self.reply(200, json.dumps({
                        "region": "fk", "cursor": "0", "watermarks": {},
                        "users": [], "memberships": [], "policies": []}).encode())
                empty = json.dumps({"changes": [], "cursor": "11", "more": False}).encode()
                first = json.dumps(BAD_BATCH).encode() if "after=0&" in self.path else empty
                if stream:
                    return self.stream([first], mode)
                if first is empty:
                    time.sleep(0.2)
                return self.reply(200, first)

            def stream(self, lines, mode):
                """NDJSON lines, then keep-alives while fake.mode stays."""
                self.close_connection = True
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-ndjson")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for line in lines:
                        self.chunk(line + b"\n")
                    while fake.mode == mode and not fake.closing.is_set():
                        fake.closing.wait(0.2)
                        self.chunk(b"\n")
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the follower closed the stream

            def chunk(self, data):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def reply(self, code, body):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the replicator went away (stopped, or timed out)

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self):
        self.closing.set()
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def target(regions, cluster, workdir):
    """A fresh store for region us, filled by a replicator following eu
    (real) and fk (the fake)."""
    db = f"rp_fk_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", "-X", "-q", cluster["PG_URL_US"], "-c", f'CREATE DATABASE "{db}"'],
                   check=True, capture_output=True)
    pg_url = cluster["PG_URL_US"].rsplit("/", 1)[0] + "/" + db
    fake = FakePeer()
    token = os.path.join(workdir, "fk.token")
    with open(token, "w") as f:
        f.write("tok-1\n")
    rep = Replicator(workdir, "us", pg_url, {"eu": regions["eu"].authz.url, "fk": fake.url},
                     regions="us,eu,ap,fk",
                     extra={"replication": {"wait_ms": 1000, "backoff_max_ms": 500},
                            "auth": {"token_file": token}}).start()
    rep.fake = fake
    rep.token = token
    rep.sql = lambda q: subprocess.run(["psql", "-X", "-tA", pg_url, "-c", q], check=True,
                                       capture_output=True, text=True).stdout.strip()
    yield rep
    rep.stop()
    fake.close()


def reaches_target(regions, target, tag):
    s = f"{tag}-{uuid.uuid4().hex[:8]}"
    uid, _ = grant(regions["eu"], s, "doc/fault")
    wait_until(lambda: target.sql(f"SELECT count(*) FROM authz.users WHERE user_id = '{uid}'")
               == "1", 30, f"a write in eu reaching us while the fake peer is {tag}")


def test_bad_rows_are_dead_letters_and_good_rows_apply(regions, target):
    wait_until(lambda: target.sql("SELECT count(*) FROM authz.replication_dead_letters") == "10",
               30, "the bad rows recorded")
    got = target.sql("SELECT feed_seq, reason, raw FROM authz.replication_dead_letters"
                     " WHERE peer = 'fk' ORDER BY id").splitlines()
    by_seq = {line.split("|")[0]: line for line in got}
    assert "subject is not a string" in by_seq["1"]
    assert "unknown kind" in by_seq["2"] and '"gizmo"' in by_seq["2"]
    assert "hlc is not" in by_seq["3"]
    assert "22P02" in by_seq["4"] and "marker-not-a-uuid" in by_seq["4"]
    assert "change is not an object" in by_seq[""] and '"junk"' in by_seq[""]
    assert "subject is not a valid subject" in by_seq["6"]
    assert "resource is not a resource pattern" in by_seq["7"] and "doc/a/b" in by_seq["7"]
    assert "invalid permission" in by_seq["8"]
    assert "region is not a region name" in by_seq["9"]
    assert "origin is not a region name" in by_seq["10"]
    assert target.sql(f"SELECT count(*) FROM authz.policies"
                      f" WHERE assignment_id = '{FK_POLICY['assignment_id']}'") == "0"
    assert target.sql(f"SELECT subject, origin FROM authz.users WHERE user_id = '{GOOD_USER}'") \
        == "fk-good|fk"
    assert target.sql("SELECT cursor FROM authz.replication_cursors WHERE peer = 'fk'") == "11"
    assert target.sql("SELECT applied_hlc, source FROM authz.watermarks WHERE origin = 'fk'") \
        == f"{FK_HLC}|fk"
    assert target.metric("rp_dead_letters_total", peer="fk") == 10
    assert target.metric("rp_rows_applied_total", peer="fk", kind="user") == 1
    reaches_target(regions, target, "sending-rows")
    assert set(target.fake.auth) == {"Bearer tok-1"}


@pytest.mark.parametrize("mode,kind", [("garbage", "protocol"), ("500", "http_5xx"),
                                       ("hang", None)])
def test_other_peer_keeps_flowing(regions, target, mode, kind):
    fake = target.fake
    errors = target.metric("rp_peer_errors_total", peer="fk")
    seen = len(fake.requests)
    fake.mode = mode
    wait_until(lambda: len(fake.requests) > seen, 30, f"the follower asking the {mode} peer")
    reaches_target(regions, target, mode)
    if kind is not None:
        wait_until(lambda: target.metric("rp_peer_errors_total", peer="fk", kind=kind) > 0, 30,
                   f"{kind} errors counted")
        assert target.metric("rp_peer_errors_total", peer="fk") > errors
        st = target.status()["peers"]["fk"]
        assert st["last_error"] and st["state"] in ("backoff", "following")
    assert target.status()["peers"]["eu"]["state"] == "following"
    # Nothing from the bad peer was applied or recorded meanwhile.
    assert target.sql("SELECT count(*) FROM authz.replication_dead_letters") == "10"
    fake.release.set()
    fake.mode = "rows"
    fake.release.clear()


def test_token_file_read_again_on_reconnect(target):
    fake = target.fake
    fake.mode = "hang"
    seen = len(fake.requests)
    wait_until(lambda: len(fake.requests) > seen, 30, "a request to the hanging peer")
    with open(target.token, "w") as f:
        f.write("tok-2\n")
    reconnects = target.metric("rp_reconnects_total", peer="fk")
    fake.mode = "rows"
    fake.release.set()  # the hanging request ends without an answer
    wait_until(lambda: "Bearer tok-2" in fake.auth, 30, "the new token in use")
    assert target.metric("rp_reconnects_total", peer="fk") > reconnects
    fake.release.clear()
