"""The authz-server side of replication (issue 10): the snapshot with
tombstones, peer authentication of the change feed and the snapshot with
a scoped service JWT (and its SIGHUP key rotation), the `source` of each
origin's watermarks in /v1/status, check.expect_regions, and the
collection of the tombstones every region has applied.

Real servers: one authz-server without auth.keys_file (the feed and the
snapshot open, as in the other suites) and ones with it.
"""
import base64
import json
import os
import re
import signal
import subprocess
import time
import uuid

import pytest
import requests

from conftest import Authz, BIN, wait_until, _id

ISSUER = _id.ISSUER
PEER_AUD = "authz-peers"
SCOPE = "authz:replicate"


def hlc(ms):
    return ms << 16


def now_ms():
    return int(time.time() * 1000)


def token(keys, scope=SCOPE, aud=PEER_AUD, ttl=600, iss=ISSUER, key=None, kid=None,
          alg="ES256", sub="replicator-eu"):
    cmd = [os.path.join(BIN, "authz-dev-token"), "--sub", sub, "--ttl", str(ttl), "--key",
           key or keys.private, "--kid", kid or keys.kid, "--iss", iss, "--aud", aud,
           "--alg", alg]
    if scope is not None:
        cmd += ["--scope", scope]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def b64(obj):
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def get(svc, path, tok=None, headers=None):
    h = dict(headers or {})
    if tok is not None:
        h["Authorization"] = f"Bearer {tok}"
    return requests.get(svc.url + path, headers=h, timeout=30)


def metric(svc, name, labels):
    text = requests.get(svc.url + "/metrics", timeout=10).text
    m = re.search(r"^" + re.escape(name + labels) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.fixture(scope="module")
def plain(cluster, workdir, identity):
    svc = Authz(cluster, workdir, identity.topic, "plain").start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def peer_keys(workdir):
    folder = os.path.join(workdir, "peer-keys")
    os.makedirs(folder, exist_ok=True)
    return _id.Keys(folder, kid="peer-1")


@pytest.fixture(scope="module")
def secured(cluster, workdir, identity, peer_keys):
    svc = Authz(cluster, workdir, identity.topic, "secured", extra={
        "auth": {"keys_file": peer_keys.keyset, "issuer": ISSUER, "audience": PEER_AUD}}).start()
    yield svc
    svc.stop()


# ---- snapshot tombstones ------------------------------------------------------

def insert_policy(svc, origin, h, deleted, aid=None):
    aid = aid or str(uuid.uuid4())
    svc.sql("INSERT INTO authz.policies (assignment_id, principal_type, principal_id, role_id,"
            " region, resource, permissions, hlc, origin, origin_seq, deleted) VALUES"
            f" ('{aid}', 'user', '{uuid.uuid4()}', '{uuid.uuid4()}', '*', 'doc/1',"
            f" ARRAY['doc:read'], {h}, '{origin}', 1, {'true' if deleted else 'false'})")
    return aid


def test_snapshot_tombstones(plain):
    dead = insert_policy(plain, "eu", hlc(now_ms() - 5000), True)
    live = insert_policy(plain, "eu", hlc(now_ms() - 5000), False)
    for q in ("", "?tombstones=0"):
        ids = {p["assignment_id"] for p in plain.get("/v1/policy/snapshot" + q).json()["policies"]}
        assert live in ids and dead not in ids, q
    r = plain.get("/v1/policy/snapshot?tombstones=1")
    assert r.status_code == 200, r.text
    snap = r.json()
    rows = {p["assignment_id"]: p for p in snap["policies"]}
    assert rows[dead]["deleted"] is True and rows[dead]["origin"] == "eu"
    assert rows[live]["deleted"] is False
    assert set(snap) == {"region", "cursor", "watermarks", "users", "memberships", "policies"}
    for bad in ("2", "true", "", "01"):
        r = plain.get("/v1/policy/snapshot?tombstones=" + bad)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"]["code"] == "invalid_request"
        assert "tombstones" in r.json()["error"]["message"]


# ---- peer authentication ------------------------------------------------------

PROTECTED = ("/v1/policy/changes?after=0", "/v1/policy/snapshot?tombstones=1")


def assert_401(r):
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "unauthenticated"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_peer_auth_refuses_bad_tokens(secured, peer_keys, workdir):
    other_folder = os.path.join(workdir, "other-keys")
    os.makedirs(other_folder, exist_ok=True)
    # Same kid, another key: only the signature tells them apart.
    other = _id.Keys(other_folder, kid="peer-1")
    good = token(peer_keys)
    hdr = b64({"alg": "none", "typ": "JWT"})
    body = b64({"sub": "replicator-eu", "iss": ISSUER, "aud": PEER_AUD, "scope": SCOPE,
                "iat": int(time.time()), "exp": int(time.time()) + 600})
    bad_tokens = {
        "expired": token(peer_keys, ttl=-120),
        "lifetime over the cap": token(peer_keys, ttl=3 * 86400),
        "wrong audience": token(peer_keys, aud="authz-admin"),
        "wrong issuer": token(peer_keys, iss="someone-else"),
        "alg none, no signature": f"{hdr}.{body}.",
        "alg none, a signature": f"{hdr}.{body}.{good.split('.')[2]}",
        "another key": token(other, key=other.private),
        "HS256 with the public key": token(peer_keys, alg="HS256",
                                           key=peer_keys.private.replace(".key", ".pub")),
        "tampered claims": ".".join([good.split(".")[0], body, good.split(".")[2]]),
        "garbage": "not-a-jwt",
    }
    for path in PROTECTED:
        assert_401(get(secured, path))
        assert_401(get(secured, path, headers={"Authorization": "Basic dXNlcjpwYXNz"}))
        assert_401(get(secured, path, headers={"Authorization": "Bearer "}))
        for why, t in bad_tokens.items():
            r = get(secured, path, t)
            assert r.status_code == 401, (path, why, r.text)
            assert_401(r)
    # Authentication comes before the parameter checks: an anonymous
    # caller learns nothing from them.
    assert_401(get(secured, "/v1/policy/changes?after=bogus"))
    assert_401(get(secured, "/v1/policy/snapshot?tombstones=7"))


def test_peer_auth_requires_the_scope(secured, peer_keys):
    for scope in (None, "authz:read", "authz:replicate:all", "xauthz:replicate"):
        t = token(peer_keys, scope=scope)
        for path in PROTECTED:
            r = get(secured, path, t)
            assert r.status_code == 403, (scope, path, r.text)
            assert r.json()["error"]["code"] == "forbidden"
    for scope in (SCOPE, f"openid {SCOPE} profile"):
        t = token(peer_keys, scope=scope)
        r = get(secured, "/v1/policy/changes?after=0&limit=5", t)
        assert r.status_code == 200, r.text
        assert "cursor" in r.json()
        r = get(secured, "/v1/policy/snapshot?tombstones=1", t)
        assert r.status_code == 200, r.text
        assert r.json()["region"] == "us"
    # With a good token the parameter checks apply as usual.
    r = get(secured, "/v1/policy/snapshot?tombstones=7", token(peer_keys))
    assert r.status_code == 400, r.text


def test_check_status_and_builtins_stay_open(secured):
    r = requests.post(secured.url + "/v1/check", json={
        "subject": "nobody", "action": "doc:read", "resource": "doc/1"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["allowed"] is False
    assert get(secured, "/v1/status").status_code == 200
    for path in ("/healthz", "/readyz", "/metrics"):
        assert get(secured, path).status_code == 200, path


def test_sighup_rotates_the_keys(cluster, workdir, identity):
    folder = os.path.join(workdir, "rotating-keys")
    os.makedirs(folder, exist_ok=True)
    old = _id.Keys(folder, kid="rot-1")
    svc = Authz(cluster, workdir, identity.topic, "rotating", extra={
        "auth": {"keys_file": old.keyset, "issuer": ISSUER, "audience": PEER_AUD}}).start()
    try:
        old_tok = token(old)
        path = "/v1/policy/changes?after=0&limit=1"
        assert get(svc, path, old_tok).status_code == 200
        # A broken key-set file keeps the keys in use.
        with open(old.keyset, "w") as f:
            f.write("[{\"kid\": ")
        svc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "keeping the old keys" in open(svc.log).read(), 30,
                   "the failed reload logged")
        assert get(svc, path, old_tok).status_code == 200
        # A new key set (written over the same file) replaces the old one.
        new = _id.Keys(folder, kid="rot-2")
        new_tok = token(new)
        assert get(svc, path, new_tok).status_code == 401
        svc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: get(svc, path, new_tok).status_code == 200, 30, "the new key accepted")
        assert_401(get(svc, path, old_tok))
        assert get(svc, "/v1/policy/snapshot", new_tok).status_code == 200
    finally:
        svc.stop()


# ---- status source and check.expect_regions ---------------------------------------

def test_status_source(plain):
    before = plain.status()["origins"]
    assert before["us"]["source"] is None
    h = hlc(now_ms() - 1000)
    plain.sql("INSERT INTO authz.watermarks (origin, applied_hlc, known_hlc, source)"
              f" VALUES ('eu', {h}, {h}, 'ap')")
    o = plain.status()["origins"]
    assert o["eu"]["source"] == "ap"
    assert o["eu"]["applied_hlc"] == h
    assert o["us"]["source"] is None
    # Never heard from: listed, without a source.
    assert o["ap"]["source"] is None and o["ap"]["applied_hlc"] == 0


def test_expect_regions(cluster, workdir, identity, secured):
    svc = Authz(cluster, workdir, identity.topic, "expect",
                extra={"check": {"expect_regions": True}}).start()
    try:
        q = ("nobody-" + uuid.uuid4().hex, "doc:read", "doc/1")
        # This region's own origin first (its consumer's first heartbeat).
        wait_until(lambda: svc.status()["origins"]["us"]["silence_ms"] is not None, 30,
                   "us heard from")
        wait_until(lambda: secured.status()["origins"]["us"]["silence_ms"] is not None, 30,
                   "us heard from")
        got = svc.check(*q)
        assert got["decision"] == "deny-transient", got
        assert "never heard from origin eu" in got["reason"], got
        # The same store without the setting: other regions not counted.
        base = secured.check(*q)
        assert base["decision"] == "deny", base
        st = svc.status()["origins"]
        assert st["eu"]["counted"] is True and st["eu"]["silent"] is True
        assert secured.status()["origins"]["eu"]["counted"] is False
        h = hlc(now_ms())
        svc.sql("INSERT INTO authz.watermarks (origin, applied_hlc, known_hlc, source)"
                f" VALUES ('eu', {h}, {h}, 'eu')")
        got = svc.check(*q)
        assert got["decision"] == "deny-transient", got
        assert "never heard from origin ap" in got["reason"], got
    finally:
        svc.stop()


# ---- tombstone collection ---------------------------------------------------------

def test_tombstone_collection(cluster, workdir, identity):
    svc = Authz(cluster, workdir, identity.topic, "collect",
                extra={"feed": {"prune_interval_ms": 100}}).start()
    try:
        t = now_ms()
        h1, h2, h3 = hlc(t - 60000), hlc(t - 30000), hlc(t - 10000)
        a = str(uuid.uuid4())       # eu tombstone at h1
        b = str(uuid.uuid4())       # eu tombstone at h2
        g = str(uuid.uuid4())       # eu tombstone at h3
        c = str(uuid.uuid4())       # eu live row at h1: never collected
        d = str(uuid.uuid4())       # ap tombstone at h1
        user, team = str(uuid.uuid4()), str(uuid.uuid4())
        rows = []
        for aid, origin, h, deleted in ((a, "eu", h1, True), (b, "eu", h2, True),
                                        (g, "eu", h3, True), (c, "eu", h1, False),
                                        (d, "ap", h1, True)):
            rows.append(f"('{aid}', 'user', '{uuid.uuid4()}', '{uuid.uuid4()}', '*', 'doc/1',"
                        f" ARRAY['doc:read'], {h}, '{origin}', 1, {str(deleted).lower()})")
        # One transaction: the tick never sees the rows without the
        # watermarks. This region has applied eu and ap up to h2; peer eu
        # reports eu up to h2, peer ap only up to h1; nobody reports ap's
        # own watermark of ap.
        svc.sql(
            "BEGIN;"
            "INSERT INTO authz.policies (assignment_id, principal_type, principal_id, role_id,"
            " region, resource, permissions, hlc, origin, origin_seq, deleted) VALUES "
            + ", ".join(rows) + ";"
            f"INSERT INTO authz.users (user_id, subject, hlc, origin, origin_seq, deleted)"
            f" VALUES ('{user}', 'gone-{user}', {h1}, 'eu', 1, true);"
            f"INSERT INTO authz.memberships (team_id, user_id, hlc, origin, origin_seq, deleted)"
            f" VALUES ('{team}', '{user}', {h1}, 'eu', 1, true);"
            f"INSERT INTO authz.watermarks (origin, applied_hlc, known_hlc) VALUES"
            f" ('eu', {h2 + 1}, {h2 + 1}), ('ap', {h2 + 1}, {h2 + 1});"
            f"INSERT INTO authz.peer_watermarks (peer, origin, applied_hlc, known_hlc) VALUES"
            f" ('eu', 'eu', {h2 + 1}, {h2 + 1}), ('ap', 'eu', {h1 + 1}, {h1 + 1}),"
            f" ('eu', 'ap', {h3 + 1}, {h3 + 1});"
            "COMMIT;")

        def present(table, where):
            return svc.sql(f"SELECT count(*) FROM authz.{table} WHERE {where}") == "1"

        def pol(aid):
            return present("policies", f"assignment_id = '{aid}'")

        wait_until(lambda: not pol(a), 30, "the tombstone every region has applied collected")
        assert not present("users", f"user_id = '{user}'")
        assert not present("memberships", f"team_id = '{team}'")
        # Same run: kept while peer ap's applied[eu] is below h2, kept
        # forever without a report from every peer (ap of ap), and a live
        # row is never touched.
        assert pol(b) and pol(g) and pol(c) and pol(d)
        assert metric(svc, "authz_tombstones_collected_total", '{origin="eu"}') == 3

        # Every peer past h3, but this region itself only past h2: b goes,
        # g stays until this region has applied it too.
        svc.sql(f"UPDATE authz.peer_watermarks SET applied_hlc = {h3 + 1} WHERE origin = 'eu'")
        wait_until(lambda: not pol(b), 30, "the h2 tombstone collected")
        assert pol(g) and pol(c) and pol(d)
        svc.sql(f"UPDATE authz.watermarks SET applied_hlc = {h3 + 1} WHERE origin = 'eu'")
        wait_until(lambda: not pol(g), 30, "the h3 tombstone collected")
        assert pol(d)
        svc.sql("INSERT INTO authz.peer_watermarks (peer, origin, applied_hlc, known_hlc)"
                f" VALUES ('ap', 'ap', {h3 + 1}, {h3 + 1})")
        wait_until(lambda: not pol(d), 30, "the ap tombstone collected")
        assert pol(c)
        assert metric(svc, "authz_tombstones_collected_total", '{origin="eu"}') == 5
        assert metric(svc, "authz_tombstones_collected_total", '{origin="ap"}') == 1
        # The snapshot with tombstones no longer has them.
        snap = svc.get("/v1/policy/snapshot?tombstones=1").json()
        ids = {p["assignment_id"] for p in snap["policies"]}
        assert c in ids and not ids & {a, b, g, d}
    finally:
        svc.stop()


def test_collection_can_be_turned_off(cluster, workdir, identity):
    svc = Authz(cluster, workdir, identity.topic, "nocollect", extra={
        "feed": {"prune_interval_ms": 100, "retain": 10, "collect_tombstones": False}}).start()
    try:
        h = hlc(now_ms() - 60000)
        svc.sql(f"INSERT INTO authz.watermarks (origin, applied_hlc, known_hlc) VALUES"
                f" ('eu', {h + 1}, {h + 1});"
                f"INSERT INTO authz.peer_watermarks (peer, origin, applied_hlc, known_hlc) VALUES"
                f" ('eu', 'eu', {h + 1}, {h + 1}), ('ap', 'eu', {h + 1}, {h + 1})")
        aid = insert_policy(svc, "eu", h, True)

        def pruned():
            return int(svc.status()["feed"]["pruned_through"])

        # The feed prune runs on the same timer, just before the
        # collection: once it has run twice after the tombstone was
        # written, a collection run has come and gone between them.
        for _ in range(2):
            before = pruned()
            for _ in range(12):
                insert_policy(svc, "eu", hlc(now_ms()), False)
            wait_until(lambda: pruned() > before, 30, "a feed prune")
        assert svc.sql(f"SELECT count(*) FROM authz.policies WHERE assignment_id = '{aid}'") == "1"
        assert metric(svc, "authz_tombstones_collected_total", '{origin="eu"}') == 0
    finally:
        svc.stop()


def test_bad_auth_configuration_is_refused(cluster, workdir, identity, peer_keys):
    """A half or broken auth configuration never starts a server whose feed
    its owner believes closed: exit 2 with the reason."""
    cases = {
        "missing key set": ({"keys_file": os.path.join(workdir, "nope.json"),
                             "issuer": ISSUER, "audience": PEER_AUD}, "nope.json"),
        "no issuer": ({"keys_file": peer_keys.keyset, "audience": PEER_AUD}, "auth.issuer"),
        "issuer without keys": ({"issuer": ISSUER, "audience": PEER_AUD}, "auth.keys_file"),
        "two scopes": ({"keys_file": peer_keys.keyset, "issuer": ISSUER, "audience": PEER_AUD,
                        "required_scope": "a b"}, "required_scope"),
    }
    for name, (auth, says) in cases.items():
        svc = Authz(cluster, workdir, identity.topic, "badauth", extra={"auth": auth})
        r = subprocess.run([os.path.join(BIN, "authz-server"), "--config", svc.conf],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (name, r.returncode, r.stderr[-2000:])
        assert says in r.stderr, (name, r.stderr[-2000:])
