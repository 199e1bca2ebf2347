"""Check freshness: a silent origin makes denies transient, a revision no
origin could have issued is a final deny, two Authz-Revision headers are
refused. Real identity (its relay sends the heartbeats) and authz-server."""
import http.client
import json
import os
import re
import subprocess
import time

import requests

from conftest import Authz, Client, wait_until
import conftest

Identity = conftest._id.Identity


def rev_at(ms):
    return "v1.us.%016x" % (ms << 16)


def silence_metric(az, origin):
    text = az.get("/metrics").text
    m = re.search(r'^authz_origin_silence_seconds\{origin="%s"\} (\S+)$' % origin, text, re.M)
    return float(m.group(1)) if m else None


def test_silent_origin_makes_denies_transient(cluster, workdir, keys):
    idn = Identity(cluster, workdir, keys, "fresh")
    idn.create_storage()
    idn.start()
    az = Authz(cluster, workdir, idn.topic, "fresh",
               extra={"check": {"heartbeat_ms": 200, "silence_heartbeats": 5}})
    az.start()
    try:
        admin = Client(idn.url, keys.token())
        r = admin.post("/v1/users", {"subject": "frank", "email": "f@x.io", "name": "F"})
        assert r.status_code == 201, r.text
        az.wait_applied(r.headers["Authz-Revision"])
        wait_until(lambda: az.check("frank", "doc:read", "doc/1")["decision"] == "deny", 30,
                   "a final deny while heartbeats flow")
        st = az.status()["origins"]["us"]
        assert st["silent"] is False and 0 <= st["silence_ms"] <= 1000, st
        # Configured regions never heard from are shown, not counted (yet).
        assert az.status()["origins"]["eu"]["silence_ms"] is None
        assert az.status()["origins"]["eu"]["silent"] is False

        # The relay stops: nothing more is heard from "us".
        idn.stop()
        wait_until(lambda: az.check("frank", "doc:read", "doc/1")["decision"] ==
                   "deny-transient", 30, "a transient deny once us is silent")
        got = az.check("frank", "doc:read", "doc/1")
        assert not got["allowed"]
        assert "origin us" in got["reason"] and "not heard" in got["reason"], got
        st = az.status()["origins"]["us"]
        assert st["silent"] is True and st["silence_ms"] > 1000, st
        wait_until(lambda: (silence_metric(az, "us") or 0) > 1.0, 30,
                   "authz_origin_silence_seconds{origin=us} above the threshold")

        # Heartbeats resume: the deny is final again.
        idn.start()
        wait_until(lambda: az.check("frank", "doc:read", "doc/1")["decision"] == "deny", 60,
                   "a final deny once heartbeats resume")
        assert az.status()["origins"]["us"]["silent"] is False
        wait_until(lambda: silence_metric(az, "us") < 1.0, 30, "the silence gauge falls")
    finally:
        az.stop()
        idn.stop()


def test_own_origin_never_heard_is_silent(cluster, workdir):
    # A topic nobody writes to: this region has never heard from "us".
    topic = "identity-test.quiet" + os.urandom(4).hex()
    subprocess.run([os.path.join(conftest.BIN, "authz-kafka-admin"), "create-topics",
                    "--bootstrap", cluster["KAFKA_BOOTSTRAP"], topic], check=True,
                   capture_output=True)
    az = Authz(cluster, workdir, topic, "quiet")
    # Started by hand: whether /readyz waits for a first heartbeat is not
    # what this test is about.
    logf = open(az.log, "a")
    az.proc = subprocess.Popen([os.path.join(conftest.BIN, "authz-server"), "--config", az.conf],
                               stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
    logf.close()
    try:
        def serving():
            assert az.proc.poll() is None, open(az.log).read()[-3000:]
            try:
                return az.s.get(az.url + "/v1/status", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        wait_until(serving, 60, "authz-server serving")
        got = az.check("nobody", "doc:read", "doc/1")
        assert got["decision"] == "deny-transient", got
        assert "never heard from origin us" in got["reason"], got
        st = az.status()["origins"]["us"]
        assert st["silent"] is True and st["silence_ms"] is None, st
        # No time since hearing to show: the series is absent, not 0.
        assert "authz_origin_silence_seconds" in az.get("/metrics").text
        assert silence_metric(az, "us") is None
    finally:
        az.stop()


def test_revision_bound(admin, authz):
    u = admin.post("/v1/users", {"subject": "rita", "email": "r@x.io", "name": "R"})
    assert u.status_code == 201
    authz.wait_applied(u.headers["Authz-Revision"])
    wait_until(lambda: authz.check("rita", "doc:read", "doc/1")["decision"] == "deny", 30,
               "a final deny")
    # Nothing the origin issued, nor anything within the clock tolerance.
    for rev in ("v1.us.7fffffffffffffff", rev_at(int(time.time() * 1000) + 60000)):
        got = authz.check("rita", "doc:read", "doc/1", revision=rev)
        assert got["decision"] == "deny" and not got["allowed"], got
        assert "ahead of anything origin us has issued" in got["reason"], got
    # A newer write whose heartbeat has not arrived yet: transient.
    got = authz.check("rita", "doc:read", "doc/1",
                      revision=rev_at(int(time.time() * 1000) + 500))
    assert got["decision"] == "deny-transient", got
    assert "not applied" in got["reason"], got


def test_two_revision_headers_refused(admin, authz):
    u = admin.post("/v1/users", {"subject": "tom", "email": "t@x.io", "name": "T"})
    rev = u.headers["Authz-Revision"]
    authz.wait_applied(rev)
    body = json.dumps({"subject": "tom", "action": "doc:read", "resource": "doc/1"})
    for second in (rev, "v1.us.0000000000000001"):
        c = http.client.HTTPConnection("127.0.0.1", authz.port, timeout=30)
        c.putrequest("POST", "/v1/check")
        c.putheader("Content-Type", "application/json")
        c.putheader("Content-Length", str(len(body)))
        c.putheader("Authz-Revision", rev)
        c.putheader("authz-revision", second)
        c.endheaders(body.encode())
        r = c.getresponse()
        out = json.loads(r.read())
        c.close()
        assert r.status == 400, out
        assert out["error"]["code"] == "invalid_revision", out
    # One header is still fine.
    assert authz.check("tom", "doc:read", "doc/1", revision=rev)["decision"] == "deny"
