"""Set-based outbox insert: deleting a team with thousands of members puts
all of its events into the outbox in one statement (one round trip while
the region-wide outbox lock is held), and they reach Kafka in order with
consecutive seqs, one HLC apart, in one transaction.

AUTHZ_TEAM_DELETE_MEMBERS overrides the member count (the report's
10,000-member timing uses it)."""
import os
import time
import uuid

from conftest import changes, read_events, wait_until

MEMBERS = int(os.environ.get("AUTHZ_TEAM_DELETE_MEMBERS", "2000"))


def test_team_delete_many_members(identity, admin, cluster):
    t = admin.post("/v1/teams", {"name": f"big-{uuid.uuid4().hex[:8]}"}).json()
    # Members are seeded directly in the database: thousands of HTTP round
    # trips would test the API, not the outbox.
    tag = uuid.uuid4().hex[:8]
    identity.sql(
        "INSERT INTO identity.users (id, subject, email, name)"
        f" SELECT gen_random_uuid(), 'bulk-{tag}-' || g, 'b@example.com', 'B'"
        f"   FROM generate_series(1, {MEMBERS}) g;"
        "INSERT INTO identity.team_members (team_id, user_id)"
        f" SELECT '{t['id']}', id FROM identity.users WHERE subject LIKE 'bulk-{tag}-%'")
    members = {u for u in identity.sql(
        f"SELECT user_id FROM identity.team_members WHERE team_id = '{t['id']}'").split()}
    assert len(members) == MEMBERS
    before = int(identity.sql("SELECT last_seq FROM identity.outbox_state"))

    t0 = time.monotonic()
    r = admin.delete(f"/v1/teams/{t['id']}")
    elapsed = time.monotonic() - t0
    assert r.status_code == 200 and r.json()["deleted"], r.text
    print(f"\nteam delete with {MEMBERS} members: {elapsed * 1000:.0f} ms")

    rows = identity.sql("SELECT seq, hlc, created_at, type FROM identity.outbox"
                        f" WHERE seq > {before} ORDER BY seq").splitlines()
    rows = [r.split("|") for r in rows]
    assert len(rows) == MEMBERS + 1
    assert len({r[2] for r in rows}) == 1, "the events were written by one transaction"
    assert [int(r[0]) for r in rows] == list(range(before + 1, before + MEMBERS + 2))
    hlcs = [int(r[1]) for r in rows]
    assert hlcs == list(range(hlcs[0], hlcs[0] + MEMBERS + 1))

    total = before + MEMBERS + 1
    events = changes(read_events(cluster["KAFKA_BOOTSTRAP"], identity.topic,
                                 lambda evs: any(e["seq"] == total for e in evs), timeout=120))
    mine = [e for e in events if e["seq"] > before]
    assert [e["seq"] for e in mine] == list(range(before + 1, total + 1))
    assert [e["type"] for e in mine] == ["team.member_removed"] * MEMBERS + ["team.deleted"]
    assert {e["data"]["user_id"] for e in mine[:-1]} == members
    assert all(e["data"]["team_id"] == t["id"] for e in mine[:-1])
    assert mine[-1]["data"] == {"id": t["id"]}
    assert all(e.get("epoch", 1) == 1 for e in mine)
    wait_until(lambda: identity.sql("SELECT count(*) FROM identity.outbox"
                                    " WHERE published_at IS NULL") == "0", 60, "rows marked")
