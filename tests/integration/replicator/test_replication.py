"""authz-replicator across three regions (issue 10 items 1-3, 6, 10).

Every region (us, eu, ap) has its own identity service, authz-server and
replicator; writes go through each region's identity API, and the tests
compare the regions' authz stores row by row.
"""
import threading
import time
import uuid

import requests

from conftest import REGIONS, Authz, Identity, Region, Replicator, live_rows, rows, \
    start_replicator, wait_until


def ok(r, *codes):
    assert r.status_code in codes, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r


def grant(region, subject, resource, perm="doc:read"):
    """A user `subject` with a role granting `perm` on `resource` in every
    region, made through `region`'s identity API. Returns (user id,
    assignment id)."""
    adm = region.admin
    u = ok(adm.post("/v1/users", {"subject": subject, "email": f"{subject}@x.io",
                                  "name": subject}), 201).json()
    role = ok(adm.post("/v1/roles", {"name": f"r-{uuid.uuid4().hex[:10]}",
                                     "permissions": [perm]}), 201).json()
    a = ok(adm.post("/v1/role-assignments", {"principal": {"type": "user", "id": u["id"]},
                                             "role_id": role["id"], "region": "*",
                                             "resource": resource}), 201).json()
    return u["id"], a["id"]


def converged(regs, what="rows"):
    """Waits until every region holds the same rows (tombstones included)."""
    def same():
        sets = [rows(r) for r in regs]
        return all(s == sets[0] for s in sets[1:]) and sets[0]
    return wait_until(same, 90, f"regions converging ({what})")


def test_writes_everywhere_converge(regions):
    regs = [regions[n] for n in REGIONS]
    subjects = {}
    revs = []
    for r in regs:
        for i in range(3):
            s = f"conv-{r.name}-{i}-{uuid.uuid4().hex[:6]}"
            uid, aid = grant(r, s, f"doc/{r.name}{i}")
            subjects[s] = f"doc/{r.name}{i}"
        team = ok(r.admin.post("/v1/teams", {"name": f"t-{uuid.uuid4().hex[:8]}"}), 201).json()
        ok(r.admin.put(f"/v1/teams/{team['id']}/members/{uid}"), 200, 201, 204)
        # A delete: a tombstone that must replicate too.
        revs.append(ok(r.admin.delete(f"/v1/role-assignments/{aid}"), 200, 204)
                    .headers["Authz-Revision"])
        subjects[s] = None
    # Watermark adoption: once a region's watermarks say it has applied
    # every origin's last write, its rows must already be there.
    for r in regs:
        for rev in revs:
            r.authz.wait_applied(rev, 60)
    got = rows(regs[0])
    for r in regs[1:]:
        assert rows(r) == got, r.name
    origins = {row[3] for row in got}
    assert origins == set(REGIONS), origins
    assert any(row[5] == "t" for row in got), "no tombstone replicated"
    live = [live_rows(r) for r in regs]
    assert live[0] == live[1] == live[2]
    # The regions answer checks alike: allowed where granted, denied where
    # the grant was deleted.
    for s, res in subjects.items():
        answers = {r.name: r.authz.check(s, "doc:read", res or "doc/none")["allowed"]
                   for r in regs}
        assert set(answers.values()) == {res is not None}, (s, answers)
    st = regions["us"].replicator.status()
    assert set(st["peers"]) == {"eu", "ap"}
    assert all(p["state"] == "following" and p["reached"] for p in st["peers"].values()), st
    for o in ("eu", "ap"):
        assert st["origins"][o]["applied_hlc"] > 0 and st["origins"][o]["source"] in REGIONS
    rp = regions["us"].replicator
    assert rp.metric("rp_rows_applied_total", peer="eu") > 0


def test_grant_in_us_becomes_allow_in_eu(regions):
    us, eu = regions["us"], regions["eu"]
    s = f"prop-{uuid.uuid4().hex[:8]}"
    assert not eu.authz.check(s, "doc:read", "doc/prop")["allowed"]
    t0 = time.monotonic()
    _, aid = grant(us, s, "doc/prop")
    wait_until(lambda: eu.authz.check(s, "doc:read", "doc/prop")["allowed"], 30,
               "the grant made in us allowing in eu")
    total = (time.monotonic() - t0) * 1000
    # Replication alone: authz.changes.committed_at is now() of the
    # transaction that wrote the row, in us's consumer and in eu's
    # replicator (both stores share one PostgreSQL server, hence one clock).
    q = ("SELECT extract(epoch FROM committed_at) FROM authz.changes"
         f" WHERE kind = 'policy' AND row->>'assignment_id' = '{aid}' ORDER BY seq LIMIT 1")
    hop = (float(eu.sql(q)) - float(us.sql(q))) * 1000
    print(f"\npropagation us -> eu: identity write to allow in eu {total:.0f} ms; "
          f"us apply transaction to eu apply transaction {hop:.1f} ms")
    assert hop > 0
    # Watermark adoption: eu's own authz-server sees us as applied.
    wm = eu.sql("SELECT applied_hlc > 0 AND source IS NOT NULL FROM authz.watermarks"
                " WHERE origin = 'us'")
    assert wm == "t"
    peer = eu.sql("SELECT count(*) FROM authz.peer_watermarks WHERE peer = 'us'")
    assert int(peer) >= 1


def test_kill9_during_burst_loses_and_repeats_nothing(regions, workdir):
    regs = [regions[n] for n in REGIONS]
    ap = regions["ap"]
    stop = threading.Event()
    errors = []

    def burst(region):
        i = 0
        while not stop.is_set() and i < 2000:
            try:
                u = ok(region.admin.post("/v1/users", {"subject": f"b-{region.name}-{i}-"
                                                       f"{uuid.uuid4().hex[:6]}",
                                                       "email": "b@x.io", "name": "b"}),
                       201).json()
                if i % 3 == 0:
                    ok(region.admin.delete(f"/v1/users/{u['id']}"), 200, 204)
            except Exception as ex:  # reported below
                errors.append(ex)
                return
            i += 1

    threads = [threading.Thread(target=burst, args=(r,)) for r in (regions["us"],
                                                                  regions["eu"])]
    for t in threads:
        t.start()
    # Kill the replicator while rows are flowing into ap.
    base = int(ap.sql("SELECT count(*) FROM authz.users"))
    wait_until(lambda: int(ap.sql("SELECT count(*) FROM authz.users")) > base + 5, 60,
               "rows reaching ap")
    ap.replicator.kill()
    # Writes go on at the origins while it is down.
    us = regions["us"]
    before = int(us.sql("SELECT count(*) FROM authz.users"))
    wait_until(lambda: int(us.sql("SELECT count(*) FROM authz.users")) > before + 2, 60,
               "writes while ap's replicator is down")
    ap.replicator.start()
    # And while it catches up.
    after = int(ap.sql("SELECT count(*) FROM authz.users"))
    wait_until(lambda: int(ap.sql("SELECT count(*) FROM authz.users")) > after + 5, 60,
               "rows reaching ap after the restart")
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    converged(regs, "after kill -9")
    # Row for row, every region holds exactly the origin's version of each
    # of the origin's rows: same hlc, origin_seq and deleted.
    for origin in ("us", "eu"):
        want = rows(regions[origin], origin)
        for r in regs:
            assert rows(r, origin) == want, (r.name, origin)
    # Nothing applied twice: every change of ap's local feed (each applied
    # row version) appears once.
    dup = ap.sql("SELECT count(*) FROM (SELECT kind, row->>'user_id', row->>'team_id',"
                 " row->>'assignment_id', row->>'hlc', row->>'origin' FROM authz.changes"
                 " GROUP BY 1, 2, 3, 4, 5, 6 HAVING count(*) > 1) d")
    assert dup == "0"


def test_new_region_bootstraps_then_follows(regions, cluster, workdir, keys):
    regs = [regions[n] for n in REGIONS]
    grant(regions["eu"], f"boot-{uuid.uuid4().hex[:8]}", "doc/boot")
    converged(regs, "before the new region")
    # A fourth region: an authz store of its own with nothing in it.
    sa = Region.__new__(Region)
    sa.name = "sa"
    sa.identity = Identity(cluster, workdir, keys, "id-sa",
                           extra={"service": {"region": "sa", "regions": "us,eu,ap,sa"}})
    sa.identity.create_storage()
    sa.authz = Authz(cluster, workdir, sa.identity.topic, "sa",
                     extra={"service": {"region": "sa", "regions": "us,eu,ap,sa"}})
    sa.authz.start()
    peers = {r.name: r.authz.url for r in regs}
    rep = Replicator(workdir, "sa", sa.authz.pg_url, peers, regions="us,eu,ap,sa").start()
    try:
        # Writes continue while it bootstraps and after.
        s = f"after-boot-{uuid.uuid4().hex[:8]}"
        grant(regions["us"], s, "doc/after")
        # us's own store first (its consumer applies the grant), so the
        # comparison below cannot match on a state before the grant.
        wait_until(lambda: regions["us"].authz.check(s, "doc:read", "doc/after")["allowed"], 60,
                   "us applying the grant")
        wait_until(lambda: live_rows(sa) == live_rows(regions["us"]), 60,
                   "the new region converging")
        assert sa.authz.check(s, "doc:read", "doc/after")["allowed"]
        resynced = sa.sql("SELECT count(*) FROM authz.replication_cursors"
                          " WHERE resynced_at IS NOT NULL")
        assert resynced == "3"
        assert rep.metric("rp_resyncs_total") == 3
        # Following, not re-bootstrapping: a later write arrives by the feed.
        s2 = f"follow-{uuid.uuid4().hex[:8]}"
        grant(regions["ap"], s2, "doc/follow")
        wait_until(lambda: sa.authz.check(s2, "doc:read", "doc/follow")["allowed"], 30,
                   "a later write reaching the new region")
        assert rep.metric("rp_resyncs_total") == 3
    finally:
        rep.stop()
        sa.authz.stop()


def test_sigterm_exits_zero_and_resumes(regions):
    eu = regions["eu"]
    rep = eu.replicator
    rep.proc.terminate()
    rep.proc.wait(timeout=30)
    assert rep.proc.returncode == 0, open(rep.log).read()[-2000:]
    s = f"term-{uuid.uuid4().hex[:8]}"
    grant(regions["us"], s, "doc/term")
    rep.start()
    wait_until(lambda: eu.authz.check(s, "doc:read", "doc/term")["allowed"], 30,
               "a write made while eu's replicator was stopped")
    assert requests.get(rep.url + "/readyz", timeout=5).status_code == 200
