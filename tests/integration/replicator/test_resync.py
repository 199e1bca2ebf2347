"""An expired cursor (issue 10 item 4): a follower whose cursor the peer's
feed no longer holds gets 410, resynchronises from the peer's snapshot and
converges, then follows the feed again."""
import uuid

import pytest

from conftest import REGIONS, live_rows, rows, wait_until
from test_replication import grant, ok


@pytest.fixture(scope="module")
def authz_extra():
    # A feed that keeps only its last 10 changes, pruned every 100 ms.
    return {"feed": {"retain": 10, "prune_interval_ms": 100, "collect_tombstones": False}}


def test_expired_cursor_resyncs_and_converges(regions):
    us, eu, ap = regions["us"], regions["eu"], regions["ap"]
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    _, victim_aid = grant(us, victim, "doc/victim")
    wait_until(lambda: rows(eu) == rows(us) == rows(ap) and rows(us), 60, "first convergence")
    assert eu.authz.check(victim, "doc:read", "doc/victim")["allowed"]
    eu.replicator.stop()
    # Revoked while eu is away: only the snapshot's tombstone can tell eu.
    ok(us.admin.delete(f"/v1/role-assignments/{victim_aid}"), 200, 204)
    cur = {p: int(eu.sql(f"SELECT cursor FROM authz.replication_cursors WHERE peer = '{p}'"))
           for p in ("us", "ap")}
    before = eu.sql("SELECT resynced_at FROM authz.replication_cursors WHERE peer = 'us'")
    subjects = [f"gone-{i}-{uuid.uuid4().hex[:6]}" for i in range(12)]
    for s in subjects:
        grant(us, s, "doc/gone")
    # Both peers' feeds have moved past eu's cursors.
    wait_until(lambda: int(us.sql("SELECT pruned_through FROM authz.feed_state")) > cur["us"],
               60, "us pruning its feed past eu's cursor")
    wait_until(lambda: int(ap.sql("SELECT pruned_through FROM authz.feed_state")) > cur["ap"],
               60, "ap pruning its feed past eu's cursor")
    eu.replicator.start()
    wait_until(lambda: rows(eu) == rows(us) == rows(ap), 60, "convergence after the resync")
    assert live_rows(eu) == live_rows(us)
    assert eu.replicator.metric("rp_peer_errors_total", peer="us", kind="cursor_expired") >= 1
    assert eu.replicator.metric("rp_resyncs_total", peer="us") >= 1
    after = eu.sql("SELECT resynced_at FROM authz.replication_cursors WHERE peer = 'us'")
    assert after != before
    for s in subjects[::4]:
        assert eu.authz.check(s, "doc:read", "doc/gone")["allowed"]
    # The revoked grant did not survive the resync as a stale live row.
    assert eu.sql(f"SELECT deleted FROM authz.policies WHERE assignment_id = '{victim_aid}'") \
        == "t"
    assert not eu.authz.check(victim, "doc:read", "doc/victim")["allowed"]
    # Then it follows the feed from the snapshot's cursor.
    s = f"later-{uuid.uuid4().hex[:8]}"
    resyncs = eu.replicator.metric("rp_resyncs_total")
    grant(us, s, "doc/later")
    wait_until(lambda: eu.authz.check(s, "doc:read", "doc/later")["allowed"], 30,
               "a later write reaching eu")
    assert eu.replicator.metric("rp_resyncs_total") == resyncs
    assert set(eu.replicator.status()["peers"]) == set(REGIONS) - {"eu"}
