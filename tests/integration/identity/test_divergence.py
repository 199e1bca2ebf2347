"""Lost commits at the origin (issue 8.1), against real PostgreSQL and Kafka.

The scenario, made deterministic: acknowledged writes reach Kafka, then the
database is restored to a snapshot taken before them (as after a failover
to an asynchronous standby or a restore from backup), and new writes reuse
their seqs. The relay must notice that the topic holds events the outbox
does not, publish nothing (readyz, metric, log say so), and
`authz-identity resync` must start epoch 2 above the topic's tail carrying
the database's exact state, after which publishing resumes in epoch 2.
Also: resync bootstraps an empty topic, superseding unpublished rows; and a
resync that cannot run (bad configuration, Kafka unreachable) exits
non-zero and writes nothing."""
import json
import os
import subprocess
import uuid

import requests
from confluent_kafka import Consumer, TopicPartition

from conftest import BIN, Client, Identity, changes, free_port, read_events, wait_until


def new_user(admin):
    s = f"user-{uuid.uuid4().hex[:10]}"
    r = admin.post("/v1/users", {"subject": s, "email": f"{s}@example.com", "name": "U"})
    assert r.status_code == 201, r.text
    return r.json()


def seed(admin):
    """A small state of every kind; returns the two members of the team."""
    u1, u2 = new_user(admin), new_user(admin)
    t = admin.post("/v1/teams", {"name": f"team-{uuid.uuid4().hex[:8]}"}).json()
    role = admin.post("/v1/roles", {"name": f"role-{uuid.uuid4().hex[:8]}",
                                    "permissions": ["doc:read", "doc:*"]}).json()
    for u in (u1, u2):
        assert admin.put(f"/v1/teams/{t['id']}/members/{u['id']}").status_code == 201
    r = admin.post("/v1/role-assignments", {"principal": {"type": "team", "id": t["id"]},
                                            "role_id": role["id"], "region": "*",
                                            "resource": "doc/*"})
    assert r.status_code == 201, r.text
    return t, u1, u2


def psql_admin(cluster, query):
    subprocess.run(["psql", "-X", "-q", cluster["PG_URL_US"], "-c", query], check=True,
                   capture_output=True)


def high_watermark(cluster, topic):
    c = Consumer({"bootstrap.servers": cluster["KAFKA_BOOTSTRAP"], "group.id": uuid.uuid4().hex})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        c.close()


def metric(svc, name):
    text = requests.get(svc.url + "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def readyz(svc):
    r = requests.get(svc.url + "/readyz", timeout=5)
    return r.status_code, r.text


def published(svc):
    return svc.sql("SELECT count(*) FROM identity.outbox"
                   " WHERE published_at IS NULL AND NOT superseded") == "0"


def resync(svc, conf=None, timeout=60):
    return subprocess.run([os.path.join(BIN, "authz-identity"), "resync", "--config",
                           conf or svc.conf], capture_output=True, text=True, timeout=timeout)


def db_state(svc):
    """The origin's authorization state, as the resync must carry it."""
    def rows(q):
        return {tuple(r.split("|")) for r in svc.sql(q).splitlines() if r}
    return {
        "user.created": rows("SELECT id, subject FROM identity.users"),
        "role.created": rows("SELECT id, name, array_to_json(permissions) FROM identity.roles"),
        "team.created": rows("SELECT id FROM identity.teams"),
        "team.member_added": rows("SELECT team_id, user_id FROM identity.team_members"),
        "assignment.created": rows("SELECT id, principal_type, principal_id, role_id, region,"
                                   " resource FROM identity.role_assignments"),
    }


def event_key(e):
    d = e["data"]
    return {
        "user.created": lambda: (d["id"], d["subject"]),
        "role.created": lambda: (d["id"], d["name"], json.dumps(d["permissions"],
                                                                separators=(",", ":"))),
        "team.created": lambda: (d["id"],),
        "team.member_added": lambda: (d["team_id"], d["user_id"]),
        "assignment.created": lambda: (d["id"], d["principal"]["type"], d["principal"]["id"],
                                       d["role_id"], d["region"], d["resource"]),
    }[e["type"]]()


ORDER = ["user.created", "role.created", "team.created", "team.member_added",
         "assignment.created"]
COUNTS = {"user.created": "users", "role.created": "roles", "team.created": "teams",
          "team.member_added": "memberships", "assignment.created": "assignments"}


def check_epoch(events, summary, state):
    """The resync's events: consecutive seqs from first_seq, begin, the
    state in the contract's order, end with the counts; all in its epoch."""
    mine = [e for e in events if e["type"] != "heartbeat" and e.get("epoch", 1) == summary["epoch"]
            and summary["first_seq"] <= e["seq"] <= summary["last_seq"]]
    assert [e["seq"] for e in mine] == list(range(summary["first_seq"], summary["last_seq"] + 1))
    assert mine[0]["type"] == "resync.begin" and mine[0]["data"] == {}
    assert mine[-1]["type"] == "resync.end"
    body = mine[1:-1]
    kinds = [e["type"] for e in body]
    assert kinds == sorted(kinds, key=ORDER.index), "state events out of the contract's order"
    for kind in ORDER:
        got = [event_key(e) for e in body if e["type"] == kind]
        assert len(got) == len(set(got))
        assert set(got) == state[kind], kind
        assert mine[-1]["data"][COUNTS[kind]] == len(got) == summary[COUNTS[kind]]
    hlcs = [e["hlc"] for e in mine]
    assert hlcs == sorted(set(hlcs))
    return mine


def test_lost_commits_detected_and_repaired(cluster, workdir, keys):
    svc = Identity(cluster, workdir, keys, "div")
    svc.create_storage()
    svc.start()
    try:
        admin = Client(svc.url, keys.token())
        t, u1, u2 = seed(admin)
        wait_until(lambda: published(svc), 30, "seed published")
        svc.stop()
        snap = f"{svc.db}_snap"
        psql_admin(cluster, f'CREATE DATABASE "{snap}" TEMPLATE "{svc.db}"')

        # Acknowledged writes that reach Kafka ...
        svc.start()
        for u in (u1, u2):
            assert admin.delete(f"/v1/teams/{t['id']}/members/{u['id']}").status_code == 200
        wait_until(lambda: published(svc), 30, "deletes published")
        lost_tail = int(svc.sql("SELECT last_seq FROM identity.outbox_state"))
        lost_ids = svc.sql("SELECT event_id FROM identity.outbox ORDER BY seq DESC LIMIT 2").split()
        svc.stop()
        # ... and are lost: the database goes back to the snapshot.
        psql_admin(cluster, f'DROP DATABASE "{svc.db}"')
        psql_admin(cluster, f'ALTER DATABASE "{snap}" RENAME TO "{svc.db}"')
        restored_seq = int(svc.sql("SELECT last_seq FROM identity.outbox_state"))
        assert restored_seq == lost_tail - 2
        hi = high_watermark(cluster, svc.topic)

        svc.start(ready=False)
        # (503 "database connection is down" may come first while the
        # workers connect.)
        wait_until(lambda: readyz(svc)[0] == 503 and "resync" in readyz(svc)[1], 30,
                   "readyz 503 naming the repair")
        status, body = readyz(svc)
        assert status == 503 and str(lost_tail) in body, body
        # A write now reuses a lost seq: accepted into the outbox, never sent.
        u3 = new_user(admin)
        assert int(svc.sql("SELECT last_seq FROM identity.outbox_state")) == restored_seq + 1
        checks = metric(svc, "identity_relay_tail_checks_total")
        wait_until(lambda: metric(svc, "identity_relay_tail_checks_total") >= checks + 2, 30,
                   "two more tail checks after the write")
        assert high_watermark(cluster, svc.topic) == hi, "the diverged relay published"
        assert metric(svc, "identity_relay_diverged") == 1
        log = open(svc.log).read()
        line = next(ln for ln in log.splitlines() if "diverged from the topic" in ln)
        assert "authz-identity resync" in line and str(lost_tail) in line
        assert json.loads(line)["topic_seq"] == lost_tail
        assert json.loads(line)["topic_event"] == lost_ids[0]

        # The repair, while the service and its diverged relay keep running.
        out = resync(svc)
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        assert summary["epoch"] == 2 and summary["first_seq"] == lost_tail + 1
        assert summary["superseded"] == 1   # u3's row: its effect is in the state
        state = db_state(svc)
        assert (u3["id"], u3["subject"]) in state["user.created"]
        assert (t["id"], u1["id"]) in state["team.member_added"]   # the lost delete stays lost
        events = read_events(cluster["KAFKA_BOOTSTRAP"], svc.topic,
                             lambda evs: any(e["type"] == "resync.end" for e in evs), timeout=60)
        check_epoch(events, summary, state)
        # Nothing of epoch 1 after the old tail: the superseded row never left.
        assert all(e["seq"] <= lost_tail for e in changes(events) if e.get("epoch", 1) == 1)
        wait_until(lambda: readyz(svc)[0] == 200, 30, "readyz 200 after the repair")
        assert metric(svc, "identity_relay_diverged") == 0

        # A write after the repair: epoch 2, the next seq, not lost.
        r = admin.post("/v1/teams", {"name": f"after-{uuid.uuid4().hex[:8]}"})
        assert r.status_code == 201
        after = r.json()["id"]
        events = read_events(cluster["KAFKA_BOOTSTRAP"], svc.topic,
                             lambda evs: any(e["type"] == "team.created" and
                                             e["data"]["id"] == after for e in evs), timeout=60)
        ev = next(e for e in events if e["type"] == "team.created" and e["data"]["id"] == after)
        assert ev["epoch"] == 2 and ev["seq"] == summary["last_seq"] + 1
        assert ev["hlc"] > max(e["hlc"] for e in events if e["seq"] <= summary["last_seq"]
                               and e["type"] != "heartbeat")
        # Heartbeats of epoch 2 name the event at their seq.
        ids = {e["seq"]: e["id"] for e in changes(events) if e.get("epoch", 1) == 2}
        events = read_events(cluster["KAFKA_BOOTSTRAP"], svc.topic,
                             lambda evs: any(e["type"] == "heartbeat" and e.get("epoch") == 2
                                             and e["seq"] == ev["seq"] for e in evs), timeout=30)
        hb = next(e for e in events if e["type"] == "heartbeat" and e.get("epoch") == 2
                  and e["seq"] == ev["seq"])
        assert hb["data"] == {"last_id": ids[ev["seq"]]}
    finally:
        svc.stop()


def test_resync_bootstraps_empty_topic(cluster, workdir, keys):
    # The API without a relay: the rows stay unpublished, the topic empty.
    svc = Identity(cluster, workdir, keys, "boot", relay=False)
    svc.create_storage()
    svc.start()
    relay = None
    try:
        admin = Client(svc.url, keys.token())
        seed(admin)
        before = int(svc.sql("SELECT last_seq FROM identity.outbox_state"))
        out = resync(svc)
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        assert summary["epoch"] == 2 and summary["first_seq"] == before + 1
        assert summary["superseded"] == before
        assert high_watermark(cluster, svc.topic) == 0
        relay = Identity(cluster, workdir, keys, "boot-relay", api=False, db=svc.db,
                         topic=svc.topic)
        relay.start()
        events = read_events(cluster["KAFKA_BOOTSTRAP"], svc.topic,
                             lambda evs: any(e["type"] == "resync.end" for e in evs), timeout=60)
        first = changes(events)[0]
        assert first["type"] == "resync.begin" and first["seq"] == before + 1, first
        check_epoch(events, summary, db_state(svc))
        assert all(e.get("epoch") == 2 for e in events)
    finally:
        if relay is not None:
            relay.stop()
        svc.stop()


def test_resync_failures_write_nothing(cluster, workdir, keys):
    svc = Identity(cluster, workdir, keys, "fail", relay=False)
    svc.create_storage()
    svc.start()
    try:
        admin = Client(svc.url, keys.token())
        new_user(admin)
        q = ("SELECT epoch, epoch_start_seq, last_seq, last_hlc,"
             " (SELECT count(*) FROM identity.outbox),"
             " (SELECT count(*) FROM identity.outbox WHERE superseded)"
             " FROM identity.outbox_state")
        before = svc.sql(q)
        cfg = json.load(open(svc.conf))

        bad = os.path.join(workdir, "resync-bad.json")
        json.dump({k: v for k, v in cfg.items() if k != "pg"}, open(bad, "w"))
        out = resync(svc, bad)
        assert out.returncode == 2 and "pg.url" in out.stderr, out.stderr

        cfg["kafka"]["bootstrap"] = f"127.0.0.1:{free_port()}"
        down = os.path.join(workdir, "resync-down.json")
        json.dump(cfg, open(down, "w"))
        out = resync(svc, down)
        assert out.returncode == 1, out.stderr
        assert "cannot read the end of topic" in out.stderr and "nothing was written" in out.stderr
        assert out.stdout == ""

        out = subprocess.run([os.path.join(BIN, "authz-identity"), "resync", "resync"],
                             capture_output=True, text=True)
        assert out.returncode == 2 and "unknown argument" in out.stderr
        assert svc.sql(q) == before
    finally:
        svc.stop()
