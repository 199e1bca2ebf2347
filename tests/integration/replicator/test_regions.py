"""Cross-region fault suite of issue 10: three regions (us, eu, ap) brought
up by tools/local-cluster, each with its PostgreSQL, identity, authz-server
and authz-replicator, the replicators reaching their peers through one
authz-netem-proxy per ordered pair, so links can be cut at run time.

- concurrent admin writes in every region converge: every region applies
  every origin's last revision, `verify` agrees, and 3,000 sampled checks
  answer alike everywhere and match the oracle of tests/integration/authz;
- conflicting rows of one key from two origins (made by SQL in two stores,
  through the feed triggers) settle on the larger (hlc, origin) everywhere;
- a region cut off while writes go on catches up once healed; with only
  the link us-eu cut (both ways, then one way), us's changes still reach
  eu through ap, paying one delayed hop more (figures printed);
- a revoked grant stays revoked after a region's cursor expired and it
  resynchronised from snapshots.

Identity data is per region (a user made in us exists in us's identity
only); what replicates is the authz store. Subjects repeat across regions
(each region's random run names its users s1, s2, ...), so one subject's
grants come from several origins and a check in one region depends on the
others' rows.
"""
import importlib.util
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest
import requests

import conftest as rc

REGIONS = ("us", "eu", "ap")
BIN = rc.BIN
REPO = rc.REPO
CLUSTER = os.path.join(REPO, "tools", "local-cluster")
OPS = int(os.environ.get("AUTHZ_REGIONS_OPS", "1000"))
SEED = int(os.environ.get("AUTHZ_TEST_SEED", str(int(time.time()))))
CHECKS = 3000
wait_until = rc.wait_until


def _load_model():
    """tests/integration/authz/test_model.py (Model: the oracle; run_ops:
    random identity operations). It imports `conftest` meaning the authz
    suite's, so that one stands in while it loads."""
    path = os.path.join(os.path.dirname(__file__), "..", "authz", "test_model.py")
    spec = importlib.util.spec_from_file_location("authz_test_model_regions", path)
    mod = importlib.util.module_from_spec(spec)
    saved = sys.modules.get("conftest")
    sys.modules["conftest"] = rc._az
    try:
        spec.loader.exec_module(mod)
    finally:
        if saved is None:
            del sys.modules["conftest"]
        else:
            sys.modules["conftest"] = saved
    return mod


_tm = _load_model()


def ok(r, *codes):
    assert r.status_code in codes, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r


def hlc_of(revision):
    m = re.fullmatch(r"v1\.([a-z][a-z0-9]*)\.([0-9a-f]{16})", revision)
    assert m, revision
    return m.group(1), int(m.group(2), 16)


class Region:
    def __init__(self, name, env, token):
        up = name.upper()
        self.name = name
        self.identity_url = env[f"IDENTITY_URL_{up}"]
        self.authz_url = env[f"AUTHZ_URL_{up}"]
        self.replicator_url = env[f"REPLICATOR_URL_{up}"]
        self.pg_url = env[f"PG_URL_{up}"]
        self.token = token
        self.s = requests.Session()

    def admin(self):
        """A fresh client (a requests session per thread)."""
        return rc.Client(self.identity_url, self.token)

    def sql(self, query):
        return subprocess.run(["psql", "-X", "-tA", "-v", "ON_ERROR_STOP=1", self.pg_url,
                               "-c", query], check=True, capture_output=True,
                              text=True).stdout.strip()

    def check(self, subject, action, resource, region):
        r = self.s.post(self.authz_url + "/v1/check", json={
            "subject": subject, "action": action, "resource": resource, "region": region},
            timeout=30)
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["decision"] in ("allow", "deny", "deny-transient"), got
        return got["allowed"]

    def applied(self, origin):
        r = self.s.get(self.authz_url + "/v1/status", timeout=30)
        assert r.status_code == 200, r.text
        o = r.json()["origins"].get(origin)
        return 0 if o is None else o["applied_hlc"]

    def live_rows(self):
        return sorted(self.sql(
            "SELECT 'user|' || to_jsonb(t)::text FROM authz.users t WHERE NOT deleted"
            " UNION ALL SELECT 'membership|' || to_jsonb(t)::text FROM authz.memberships t"
            "  WHERE NOT deleted"
            " UNION ALL SELECT 'policy|' || to_jsonb(t)::text FROM authz.policies t"
            "  WHERE NOT deleted").splitlines())


class Cluster:
    def __init__(self, run, env):
        self.run = run
        self.env = env
        out = self._lc("env").stdout
        vals = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        vals = {k: v.strip("'\"") for k, v in vals.items()}
        for r in REGIONS:
            assert f"REPLICATOR_URL_{r.upper()}" in vals, \
                f"local-cluster runs no replicator (is authz-replicator built?): {out}"
        token = subprocess.run([os.path.join(REPO, "tools", "dev-token"), "--sub", "admin",
                                "--admin", "--ttl", "7200"], check=True, env=env,
                               capture_output=True, text=True).stdout.strip()
        self.regions = {r: Region(r, vals, token) for r in REGIONS}

    def _lc(self, *args, check=True):
        return subprocess.run([CLUSTER, *args, "--run-dir", self.run], env=self.env,
                              capture_output=True, text=True, check=check)

    def link(self, *args):
        out = self._lc("link", *args).stdout
        return out

    def verify(self):
        return self._lc("verify", check=False)

    def wait_applied(self, revisions, timeout=120, regions=REGIONS):
        """Waits until every region (of `regions`) has applied every
        revision, by its authz-server's /v1/status watermarks."""
        for name in regions:
            r = self.regions[name]
            for rev in revisions:
                origin, hlc = hlc_of(rev)
                wait_until(lambda: r.applied(origin) >= hlc, timeout,
                           f"{name} applying {rev}")


@pytest.fixture(scope="module")
def lc():
    run = tempfile.mkdtemp(prefix="authz-it-regions.")
    env = dict(os.environ, AUTHZ_BIN_DIR=BIN)
    env.pop("AUTHZ_RUN_DIR", None)
    env.pop("AUTHZ_BASE_PORT", None)
    down = [CLUSTER, "down", "--run-dir", run, "--purge"]
    try:
        subprocess.run([CLUSTER, "up", "--regions", ",".join(REGIONS), "--run-dir", run,
                        "--base-port", "auto"], check=True, env=env, stdout=subprocess.DEVNULL)
        c = Cluster(run, env)
    except BaseException:
        # A half-started cluster is still ours to stop.
        subprocess.run(down, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", run])
        raise
    yield c
    if os.environ.get("AUTHZ_KEEP_RUN"):
        # Debugging: the cluster stays up (tools/local-cluster down --purge).
        print(f"\nrun folder kept: {run}")
        return
    subprocess.run(down, env=env, stdout=subprocess.DEVNULL)
    # With a sanitizer build a report lands in a log (down stops the
    # processes, so leak reports are written by now).
    reports = []
    logs = os.path.join(run, "logs")
    for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
        with open(os.path.join(logs, name), errors="replace") as f:
            text = f.read()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in text:
                i = text.index(marker)
                reports.append(f"{name}: {text[max(0, i - 200):i + 1500]}")
    subprocess.run(["rm", "-rf", run])
    assert not reports, "\n".join(reports)


def grant(region, subject, resource, perm="doc:read"):
    """A user `subject` with a role granting `perm` on `resource` in every
    region, through `region`'s identity. Returns (assignment id, revision)."""
    adm = region.admin()
    u = ok(adm.post("/v1/users", {"subject": subject, "email": f"{subject}@x.io",
                                  "name": subject}), 201).json()
    role = ok(adm.post("/v1/roles", {"name": f"r-{uuid.uuid4().hex[:10]}",
                                     "permissions": [perm]}), 201).json()
    r = ok(adm.post("/v1/role-assignments", {"principal": {"type": "user", "id": u["id"]},
                                             "role_id": role["id"], "region": "*",
                                             "resource": resource}), 201)
    return r.json()["id"], r.headers["Authz-Revision"]


def revoke(region, aid):
    return ok(region.admin().delete(f"/v1/role-assignments/{aid}"), 200, 204) \
        .headers["Authz-Revision"]


def everywhere(lc, subject, resource, want):
    return all(r.check(subject, "doc:read", resource, r.name) == want
               for r in lc.regions.values())


def assert_verify(lc):
    v = lc.verify()
    assert v.returncode == 0, f"verify exited {v.returncode}:\n{v.stdout[-3000:]}\n{v.stderr[-2000:]}"


def test_concurrent_writes_converge_and_match_oracle(lc):
    print(f"\nseed {SEED}, {OPS} operations per region")
    models = {n: _tm.Model() for n in REGIONS}
    last = {}
    errors = []

    def writer(i, name):
        try:
            last[name] = _tm.run_ops(lc.regions[name].admin(), models[name],
                                     random.Random(SEED + 10 * i), OPS)
        except BaseException as e:  # reported by the main thread
            errors.append((name, e))

    t0 = time.monotonic()
    threads = [threading.Thread(target=writer, args=(i, n)) for i, n in enumerate(REGIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    t1 = time.monotonic()
    lc.wait_applied(last.values())
    t2 = time.monotonic()
    print(f"writes {t1 - t0:.1f} s; every region applied every origin's last revision "
          f"{(t2 - t1) * 1000:.0f} ms after the last write")
    assert_verify(lc)
    live = {n: r.live_rows() for n, r in lc.regions.items()}
    assert live["us"] == live["eu"] == live["ap"]
    for r in lc.regions.values():
        assert r.sql("SELECT count(*) FROM authz.replication_dead_letters") == "0", r.name
    origins = {re.search(r'"origin": "([a-z]+)"', row).group(1) for row in live["us"]}
    assert origins == set(REGIONS), origins

    # The oracle of the union: ids never collide across regions, subjects do.
    g = _tm.Model()
    for m in models.values():
        g.users.update(m.users)
        g.teams |= m.teams
        g.members |= m.members
        g.roles.update(m.roles)
        g.assignments.update(m.assignments)
        g.subjects_ever += m.subjects_ever
    srng = random.Random(SEED + 2)
    subjects = sorted(set(g.subjects_ever)) + ["nobody"]
    mismatches, allows = [], 0
    for _ in range(CHECKS):
        q = (srng.choice(subjects), f"{srng.choice(_tm.TYPES)}:{srng.choice(_tm.VERBS)}",
             srng.choice(_tm.RESOURCES + ["doc/99"]), srng.choice(REGIONS))
        want = g.check(*q)
        allows += want
        got = {n: r.check(*q) for n, r in lc.regions.items()}
        if set(got.values()) != {want}:
            mismatches.append((q, want, got))
    assert not mismatches, mismatches[:5]
    # Subjects granted through more than one origin: the checks above did
    # depend on rows replicated from elsewhere.
    multi = [s for s in subjects if sum(s in m.subjects_ever for m in models.values()) > 1]
    print(f"{CHECKS} checks x 3 regions match the oracle ({allows} allows); "
          f"{len(g.users)} users, {len(g.members)} memberships, {len(g.assignments)} assignments, "
          f"{len(multi)} subjects in several regions")
    assert 0 < allows < CHECKS and multi


def test_conflicts_larger_hlc_origin_wins(lc):
    us, eu, ap = (lc.regions[n] for n in REGIONS)
    subject = f"conflict-{uuid.uuid4().hex[:8]}"
    _, rev = grant(us, subject, "doc/conflict-base")
    lc.wait_applied([rev])
    uid = us.sql(f"SELECT user_id FROM authz.users WHERE subject = '{subject}'")
    # HLCs 3 s ahead of now: no region may collect the tombstones below
    # before every row of the test has reached it (collection waits for
    # every region's applied[origin] to pass them).
    base = int(us.sql("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint + 3000")) << 16
    # (resource, (region, hlc, deleted), (region, hlc, deleted), winner)
    cases = [
        ("doc/c1", ("us", base + 1, True), ("eu", base + 2, False), "eu"),  # re-created later
        ("doc/c2", ("us", base + 5, True), ("eu", base + 4, False), "us"),  # deleted later
        ("doc/c3", ("eu", base + 7, False), ("us", base + 7, True), "us"),  # equal: us > eu
        ("doc/c4", ("us", base + 9, False), ("eu", base + 9, True), "us"),  # equal: us > eu
        ("doc/c5", ("ap", base + 11, False), ("eu", base + 11, True), "eu"),  # equal: eu > ap
        ("doc/c6", ("ap", base + 14, True), ("us", base + 13, False), "ap"),
    ]
    # The two writes of a key happen while the regions are apart (else the
    # first would reach the other store before the second is made); the
    # links then heal one at a time, so the rows arrive in different orders
    # in different regions: at ap, us's rows before eu's.
    pairs = [("us", "ap"), ("eu", "ap"), ("us", "eu")]
    want, made = {}, []
    try:
        for a, b in pairs:
            lc.link("cut", a, b)
        for i, (res, a, b, winner) in enumerate(cases):
            aid = str(uuid.uuid4())
            role = str(uuid.uuid4())
            for region, hlc, deleted in (a, b):
                lc.regions[region].sql(
                    "INSERT INTO authz.policies (assignment_id, principal_type, principal_id,"
                    " role_id, region, resource, permissions, hlc, origin, origin_seq, deleted)"
                    f" VALUES ('{aid}', 'user', '{uid}', '{role}', '*', '{res}',"
                    f" ARRAY['doc:read'], {hlc}, '{region}', {900000000 + i},"
                    f" {str(deleted).lower()})")
                made.append((aid, region, hlc))
            w = a if a[0] == winner else b
            assert w[0] == winner
            want[aid] = (res, w[1], winner, w[2])
        lc.link("heal", "us", "ap")

        def ap_has_us_rows():
            for aid, region, hlc in made:
                if region != "us":
                    continue
                got = ap.sql("SELECT hlc || '|' || origin FROM authz.policies"
                             f" WHERE assignment_id = '{aid}'")
                if not got or (int(got.split("|")[0]), got.split("|")[1]) < (hlc, "us"):
                    return False
            return True
        wait_until(ap_has_us_rows, 60, "ap receiving us's conflicting rows first")
        # The link still cut kept eu's versions away from both of them.
        for aid, region, hlc in made:
            if region == "eu":
                assert us.sql("SELECT count(*) FROM authz.policies WHERE origin = 'eu'"
                              f" AND assignment_id = '{aid}'") == "0"
    finally:
        for a, b in pairs[1:] + pairs[:1]:
            lc.link("heal", a, b)

    differs = []

    def settled():
        differs.clear()
        for r in lc.regions.values():
            for aid, (res, hlc, origin, deleted) in want.items():
                got = r.sql("SELECT hlc || '|' || origin || '|' || CASE WHEN deleted THEN 't' ELSE 'f' END"
                            " FROM authz.policies"
                            f" WHERE assignment_id = '{aid}'")
                # A winning tombstone may be collected once every region
                # passed it: no row then.
                exp = f"{hlc}|{origin}|{'t' if deleted else 'f'}"
                if got != exp and not (deleted and got == ""):
                    differs.append((r.name, res, "want", exp, "got", got))
        return not differs
    try:
        wait_until(settled, 60, "every region settling on the larger (hlc, origin)")
    except AssertionError as e:
        raise AssertionError(f"{e}: {differs}") from None
    for res, _, _, deleted in want.values():
        assert everywhere(lc, subject, res, not deleted), res
    assert everywhere(lc, subject, "doc/conflict-base", True)
    # verify once the test's rows are below every watermark (settled).
    wait_until(lambda: all(r.applied(o) > base + 20 for r in (us, eu, ap) for o in REGIONS), 30,
               "watermarks passing the conflict rows")
    assert_verify(lc)


def _writers(lc, per_region):
    """Threads granting `per_region` subjects in every region; returns
    (threads, done counters, subjects, last revisions, errors)."""
    done = {n: 0 for n in REGIONS}
    subjects, last, errors = {}, {}, []
    tag = uuid.uuid4().hex[:6]

    def run(name):
        try:
            for i in range(per_region):
                s = f"w-{tag}-{name}-{i}"
                aid, rev = grant(lc.regions[name], s, f"doc/{name}{i % 7}")
                if i % 5 == 4:
                    rev = revoke(lc.regions[name], aid)
                    subjects[s] = None
                else:
                    subjects[s] = f"doc/{name}{i % 7}"
                last[name] = rev
                done[name] = i + 1
        except BaseException as e:  # reported by the main thread
            errors.append((name, e))

    threads = [threading.Thread(target=run, args=(n,)) for n in REGIONS]
    for t in threads:
        t.start()
    return threads, done, subjects, last, errors


def test_cut_region_catches_up(lc):
    n = 60
    threads, done, subjects, last, errors = _writers(lc, n)
    try:
        wait_until(lambda: min(done.values()) >= n // 3 or errors, 120, "writes before the cut")
        out = lc.link("cut", "ap", "us") + lc.link("cut", "ap", "eu")
        assert out.count('"mode":"cut"') == 4, out
        cut_at = dict(done)
    finally:
        for t in threads:
            t.join()
    try:
        assert not errors, errors
        # The cut held: ap has not applied what us and eu wrote after it.
        for o in ("us", "eu"):
            assert lc.regions["ap"].applied(o) < hlc_of(last[o])[1], o
            assert done[o] > cut_at[o]
    finally:
        t0 = time.monotonic()
        lc.link("heal", "ap", "us")
        lc.link("heal", "ap", "eu")
    lc.wait_applied(last.values(), timeout=120)
    print(f"\nap cut off while us made {n - cut_at['us']} of its {n} grants; caught up "
          f"{(time.monotonic() - t0) * 1000:.0f} ms after the heal")
    assert_verify(lc)
    live = {k: r.live_rows() for k, r in lc.regions.items()}
    assert live["us"] == live["eu"] == live["ap"]
    for s, res in list(subjects.items())[::5]:
        assert everywhere(lc, s, res or "doc/none", res is not None), s


def _propagation(lc, what):
    """(seconds from a grant's identity answer in us to an allow in eu,
    milliseconds from its entry in us's feed to its entry in eu's)."""
    s = f"route-{uuid.uuid4().hex[:8]}"
    eu = lc.regions["eu"]
    assert not eu.check(s, "doc:read", "doc/route", "eu")
    aid, _ = grant(lc.regions["us"], s, "doc/route")
    t1 = time.monotonic()
    # Polled every few ms (not wait_until's 50): the figure is printed.
    while not eu.check(s, "doc:read", "doc/route", "eu"):
        assert time.monotonic() - t1 < 30, f"a grant made in us never allowed in eu ({what})"
        time.sleep(0.003)
    t = time.monotonic() - t1
    # Replication alone: the row's entry in us's feed (written by us's
    # consumer) to its entry in eu's (written by eu's replicator); the
    # regions' PostgreSQL servers share this machine's clock.
    q = ("SELECT extract(epoch FROM committed_at) FROM authz.changes WHERE kind = 'policy'"
         f" AND row->>'assignment_id' = '{aid}' ORDER BY seq LIMIT 1")
    hop = (float(eu.sql(q)) - float(lc.regions["us"].sql(q))) * 1000
    print(f"us -> eu {what}: identity answer to allow in eu {t * 1000:.0f} ms, "
          f"us feed to eu feed {hop:.1f} ms")
    return t, hop


ROUTE_DELAY_MS = 20


def test_cut_link_routes_through_third_region(lc):
    # A one-way delay on every link, so one hop more shows in the figures.
    pairs = [("us", "eu"), ("us", "ap"), ("eu", "ap")]
    print(f"\n{ROUTE_DELAY_MS} ms one-way on every link")
    try:
        for a, b in pairs:
            lc.link("delay", a, b, str(ROUTE_DELAY_MS))
        # The first change after the delay change pays for the long polls
        # that were open before it; the second is the normal latency.
        _propagation(lc, "direct, first after the delay change")
        base, base_hop = _propagation(lc, "direct")
        out = lc.link("cut", "us", "eu")
        assert out.count('"mode":"cut"') == 2, out
        both, both_hop = _propagation(lc, "with us-eu cut both ways, through ap")
        lc.link("heal", "us", "eu")
        # The proxy eu's replicator reaches us through: eu no longer reads
        # us's feed, us still reads eu's.
        out = lc.link("cut", "eu", "us", "--one-way")
        assert out.count('"mode":"cut"') == 1, out
        one, one_hop = _propagation(lc, "with eu->us cut one way, through ap")
        # eu's watermark of us was last raised by ap's feed, not us's.
        wait_until(lambda: lc.regions["eu"].sql(
            "SELECT source FROM authz.watermarks WHERE origin = 'us'") == "ap", 10,
            "eu's watermark of us coming from ap")
    finally:
        lc.link("heal", "us", "eu")
        for a, b in pairs:
            lc.link("delay", a, b, "0")
    assert both < 5 and one < 5, (base, both, one)
    # Through ap the row crossed two delayed links (us->ap, ap->eu).
    assert base_hop >= ROUTE_DELAY_MS - 2, base_hop
    assert min(both_hop, one_hop) >= 2 * ROUTE_DELAY_MS - 2, (both_hop, one_hop)
    assert_verify(lc)


def test_revoked_grant_not_resurrected_after_resync(lc):
    us, eu, ap = (lc.regions[n] for n in REGIONS)
    tag = uuid.uuid4().hex[:6]
    early, late = f"early-{tag}", f"late-{tag}"
    early_aid, _ = grant(us, early, "doc/res")
    late_aid, rev = grant(us, late, "doc/res")
    lc.wait_applied([rev])
    assert everywhere(lc, early, "doc/res", True) and everywhere(lc, late, "doc/res", True)
    # Revoked and replicated before the cut: every region holds the
    # tombstone, so the peers may collect it while ap is away.
    rev = revoke(us, early_aid)
    lc.wait_applied([rev])
    assert everywhere(lc, early, "doc/res", False)
    before = {p: ap.sql(f"SELECT coalesce(resynced_at::text, '') FROM authz.replication_cursors"
                        f" WHERE peer = '{p}'") for p in ("us", "eu")}
    try:
        lc.link("cut", "ap", "us")
        lc.link("cut", "ap", "eu")
        # Revoked while ap is away: ap still holds the live row.
        revs = [revoke(us, late_aid)]
        others = {}
        for name in ("us", "eu"):
            for i in range(3):
                s = f"away-{tag}-{name}-{i}"
                _, r = grant(lc.regions[name], s, "doc/away")
                others[s] = r
                revs.append(r)
        lc.wait_applied(revs, regions=("us", "eu"))
        assert ap.check(late, "doc:read", "doc/res", "ap"), "ap was not cut off"
        # Expire ap's cursors: the peers' feeds drop every change they hold
        # (under the feed's lock, so no commit slips in between).
        for p in (us, eu):
            p.sql("BEGIN; SELECT pg_advisory_xact_lock(hashtext('authz.changes'));"
                  " UPDATE authz.feed_state SET pruned_through = authz.feed_last_seq();"
                  " DELETE FROM authz.changes WHERE seq <= (SELECT pruned_through FROM authz.feed_state);"
                  " COMMIT;")
            cur = int(ap.sql(f"SELECT cursor FROM authz.replication_cursors WHERE peer = '{p.name}'"))
            assert int(p.sql("SELECT pruned_through FROM authz.feed_state")) > cur, p.name
    finally:
        lc.link("heal", "ap", "us")
        lc.link("heal", "ap", "eu")

    def resynced():
        now = {p: ap.sql("SELECT coalesce(resynced_at::text, '') FROM authz.replication_cursors"
                         f" WHERE peer = '{p}'") for p in ("us", "eu")}
        return all(now[p] and now[p] != before[p] for p in now)
    wait_until(resynced, 120, "ap resynchronising from us's and eu's snapshots")
    lc.wait_applied(revs, timeout=120)
    for r in (us, eu, ap):
        assert r.sql(f"SELECT coalesce(bool_and(deleted), true) FROM authz.policies"
                     f" WHERE assignment_id IN ('{early_aid}', '{late_aid}')") == "t", r.name
    assert everywhere(lc, early, "doc/res", False)
    assert everywhere(lc, late, "doc/res", False)
    for s in others:
        assert everywhere(lc, s, "doc/away", True), s
    assert_verify(lc)
    live = {k: r.live_rows() for k, r in lc.regions.items()}
    assert live["us"] == live["eu"] == live["ap"]
