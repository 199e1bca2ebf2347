"""How a batch is written (replicator/apply.c): consecutive rows of one
kind go to PostgreSQL as one statement, a "run". What a run must keep
from the row by row apply it replaced: last-writer-wins between versions
of one key inside the run (two spellings of one uuid being one key), the
first of two equal versions, any text as it was sent, the batch's order
in the local feed (a reader cut inside the batch must never see a state
that did not exist at the peer), and snapshots larger than one run."""
import json
import uuid

from conftest import wait_until
from test_stream import HLC, follow_fake, fresh_db, snapshot  # noqa: F401 (fixtures)

T = str(uuid.uuid4())


def user(seq, uid, subject, hlc):
    return {"seq": seq, "kind": "user",
            "row": {"user_id": uid, "subject": subject, "hlc": hlc, "origin": "fk",
                    "origin_seq": seq, "deleted": False}}


def membership(seq, team, uid, hlc, deleted=False):
    return {"seq": seq, "kind": "membership",
            "row": {"team_id": team, "user_id": uid, "hlc": hlc, "origin": "fk",
                    "origin_seq": seq, "deleted": deleted}}


def policy(seq, aid, principal, perms, hlc, deleted=False, ptype="user"):
    return {"seq": seq, "kind": "policy",
            "row": {"assignment_id": aid, "principal_type": ptype, "principal_id": principal,
                    "role_id": str(uuid.uuid4()), "region": "*", "resource": "doc/runs",
                    "permissions": perms, "hlc": hlc, "origin": "fk", "origin_seq": seq,
                    "deleted": deleted}}


def one_batch(changes, cursor):
    line = json.dumps({"changes": changes, "cursor": str(cursor), "more": False,
                       "watermarks": {"fk": {"applied": HLC + 1000, "known": HLC + 1000}}})

    def script(path, peer):
        if "after=0&" in path:
            return "application/x-ndjson", [line], "keepalive"
        return "application/x-ndjson", [], "keepalive"
    return script


def test_runs_keep_lww_text_and_batch_order(follow_fake):
    a, b, c, d = (str(uuid.uuid4()) for _ in range(4))
    p1, p2 = str(uuid.uuid4()), str(uuid.uuid4())
    # Subjects may hold any printable byte but a space: the array literal
    # of a run must carry commas, quotes, backslashes and braces through.
    odd = 'a,"b"\\c{d}NULL'
    perms = ["doc:read", "doc:*", "team:write"]
    changes = [
        user(1, a, "a-new", HLC + 10),
        user(2, b, odd, HLC + 1),
        user(3, a.upper(), "a-old", HLC + 5),           # older, same key spelled otherwise
        user(4, c, "c-first", HLC + 3),
        user(5, c, "c-second", HLC + 3),                # equal: the first stays
        membership(6, T, b, HLC + 6),
        policy(7, p1, b, ["doc:read"], HLC + 7, deleted=True),
        membership(8, T, d, HLC + 8),
        user(9, d, "NULL", HLC + 9),
        policy(10, p2, d, perms, HLC + 10, ptype="team"),
        policy(11, p1, b, ["doc:write"], HLC + 4),      # older than seq 7: skipped
    ]
    rep, fake = follow_fake(one_batch(changes, 11))
    wait_until(lambda: rep.sql("SELECT cursor FROM authz.replication_cursors"
                               " WHERE peer = 'fk'") == "11", 30, "the batch applied")
    users = dict(line.split("|", 1) for line in rep.sql(
        "SELECT user_id, subject FROM authz.users").splitlines())
    assert users == {a: "a-new", b: odd, c: "c-first", d: "NULL"}
    assert rep.sql("SELECT deleted, permissions FROM authz.policies"
                   f" WHERE assignment_id = '{p1}'") == "t|{doc:read}"
    got = rep.sql("SELECT to_json(permissions) FROM authz.policies"
                  f" WHERE assignment_id = '{p2}'")
    assert json.loads(got) == perms
    assert rep.sql("SELECT count(*) FROM authz.memberships") == "2"
    # The local feed holds the rows in the batch's order, the versions the
    # guard dropped left out: users a, b, c, membership b, policy p1,
    # membership d, user d, policy p2.
    feed = rep.sql("SELECT kind, (row->>'origin_seq') FROM authz.changes ORDER BY seq")
    assert [tuple(x.split("|")) for x in feed.splitlines()] == [
        ("user", "1"), ("user", "2"), ("user", "4"), ("membership", "6"), ("policy", "7"),
        ("membership", "8"), ("user", "9"), ("policy", "10")]
    assert rep.metric("rp_rows_applied_total", peer="fk", kind="user") == 4
    assert rep.metric("rp_rows_skipped_total", peer="fk", reason="older") == 3
    assert rep.sql("SELECT count(*) FROM authz.replication_dead_letters") == "0"


def test_bad_row_inside_a_run_is_a_dead_letter(follow_fake):
    good = [str(uuid.uuid4()) for _ in range(3)]
    changes = [user(1, good[0], "g0", HLC + 1), user(2, "not-a-uuid", "bad", HLC + 2),
               user(3, good[1], "g1", HLC + 3), user(4, good[2], "g2", HLC + 4)]
    rep, fake = follow_fake(one_batch(changes, 4))
    wait_until(lambda: rep.sql("SELECT cursor FROM authz.replication_cursors"
                               " WHERE peer = 'fk'") == "4", 30, "the batch applied")
    assert rep.sql("SELECT count(*) FROM authz.users") == "3"
    dead = rep.sql("SELECT feed_seq, reason FROM authz.replication_dead_letters")
    assert dead.startswith("2|postgres 22P02"), dead


def test_snapshot_larger_than_a_run(follow_fake):
    n = 12001
    users = [user(i, str(uuid.uuid4()), f"s{i}", HLC + i)["row"] for i in range(1, n + 1)]
    pols = [policy(i, str(uuid.uuid4()), users[i % n]["user_id"], ["doc:read"], HLC + i)["row"]
            for i in range(1, n + 1)]
    doc = snapshot(50)
    doc["users"], doc["policies"] = users, pols

    def script(path, peer):
        return "application/x-ndjson", [], "keepalive"

    rep, fake = follow_fake(script, snapshot_doc=doc)
    wait_until(lambda: rep.sql("SELECT cursor FROM authz.replication_cursors"
                               " WHERE peer = 'fk'") == "50", 120, "the snapshot applied")
    assert rep.sql("SELECT count(*) FROM authz.users") == str(n)
    assert rep.sql("SELECT count(*) FROM authz.policies") == str(n)
    assert rep.metric("rp_rows_applied_total", peer="fk", kind="policy") == n
