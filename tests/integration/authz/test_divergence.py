"""Divergence from the origin's history stops the consumer visibly; a
resync (a new origin epoch carrying the whole state) repairs it; a
consumer that cannot make progress is reported as not ready.

Crafted envelopes go straight into a fresh topic per test, so every seq,
id, epoch and HLC is chosen by the test."""
import json
import os
import subprocess
import uuid

import requests
from confluent_kafka import Producer

from conftest import BIN, Authz, wait_until

HLC0 = 1 << 40
QUIET = {"consumer": {"stall_ms": 600000}}   # no relay sends heartbeats here


def new_topic(cluster):
    topic = f"identity-test.div{uuid.uuid4().hex[:8]}"
    subprocess.run([os.path.join(BIN, "authz-kafka-admin"), "create-topics", "--bootstrap",
                    cluster["KAFKA_BOOTSTRAP"], topic], check=True, capture_output=True)
    return topic


class Origin:
    """Writes crafted events of origin us into a topic."""

    def __init__(self, cluster, topic):
        self.topic = topic
        self.p = Producer({"bootstrap.servers": cluster["KAFKA_BOOTSTRAP"]})
        self.offset = 0

    def ev(self, type, seq, data, epoch=1, hlc=None, id=None):
        e = {"version": 1, "id": id or str(uuid.uuid4()), "type": type, "origin": "us",
             "epoch": epoch, "seq": seq, "hlc": hlc if hlc is not None else HLC0 + seq,
             "data": data}
        return e

    def send(self, *events):
        for e in events:
            self.p.produce(self.topic, value=json.dumps(e).encode())
        assert self.p.flush(30) == 0
        self.offset += len(events)
        return events


def user(seq, uid, subject, **kw):
    return ("user.created", seq, {"id": uid, "subject": subject}, kw)


def start(az):
    """Starts az without waiting for /readyz (it may never be ready)."""
    logf = open(az.log, "a")
    az.proc = subprocess.Popen([os.path.join(BIN, "authz-server"), "--config", az.conf],
                               stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
    logf.close()

    def up():
        if az.proc.poll() is not None:
            raise AssertionError(f"authz-server exited: {open(az.log).read()[-3000:]}")
        try:
            return requests.get(az.url + "/v1/status", timeout=1).status_code == 200
        except requests.RequestException:
            return False
    wait_until(up, 60, "authz-server answering")
    return az


def consumer(az):
    return az.status()["consumer"]


def wait_consumer(az, cond, what, timeout=60):
    def ok():
        # A worker may still be connecting to its database after a start.
        r = requests.get(az.url + "/v1/status", timeout=5)
        if r.status_code != 200:
            return None
        c = r.json()["consumer"]
        return c if cond(c) else None
    return wait_until(ok, timeout, what)


def readyz(az):
    return requests.get(az.url + "/readyz", timeout=5)


def metric(az, name):
    for line in requests.get(az.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} missing")


def assert_stopped(az, what):
    c = wait_consumer(az, lambda c: c["state"] == "stopped", f"the consumer to stop ({what})")
    r = readyz(az)
    assert r.status_code == 503 and "stopped" in r.text, r.text
    assert metric(az, "authz_consumer_stopped") == 1
    return c


def users(az):
    """user_id -> (subject, deleted) of authz.users."""
    rows = az.sql("SELECT user_id || '|' || subject || '|' || deleted FROM authz.users")
    return {r.split("|")[0]: (r.split("|")[1], r.split("|")[2] == "true")
            for r in rows.splitlines() if r}


def test_different_id_diverges_survives_restart_and_resync_repairs(cluster, workdir):
    topic = new_topic(cluster)
    o = Origin(cluster, topic)
    u1, u2, u3, u4 = (str(uuid.uuid4()) for _ in range(4))
    team, role, asg = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    e1 = o.send(o.ev("user.created", 1, {"id": u1, "subject": "div-alice"}),
                o.ev("user.created", 2, {"id": u2, "subject": "div-bob"}),
                o.ev("role.created", 3, {"id": role, "name": "reader",
                                         "permissions": ["doc:read"]}),
                o.ev("assignment.created", 4, {"id": asg, "principal": {"type": "user", "id": u1},
                                               "role_id": role, "region": "*",
                                               "resource": "doc/*"}),
                o.ev("team.member_added", 5, {"team_id": team, "user_id": u2}))
    o.send(o.ev("heartbeat", 5, {"last_id": e1[4]["id"]}, hlc=HLC0 + 50))
    az = start(Authz(cluster, workdir, topic, "div", extra=QUIET))
    try:
        wait_until(lambda: az.status()["origins"].get("us", {}).get("applied_hlc") == HLC0 + 50,
                   60, "epoch 1 applied")
        assert az.check("div-alice", "doc:read", "doc/1")["decision"] == "allow"

        # Another event at the applied seq 3, then a new one: nothing more
        # is applied.
        other = o.ev("user.created", 3, {"id": u3, "subject": "div-carol"})
        o.send(other, o.ev("user.created", 6, {"id": u3, "subject": "div-carol"}))
        c = assert_stopped(az, "divergence")
        assert c["divergence"] == {"seq": 3, "applied_id": e1[2]["id"],
                                   "received_id": other["id"], "kafka_offset": 6}, c
        assert "diverged" in c["error"] and "different event" in c["error"]
        assert metric(az, "authz_consumer_divergences_total") == 1
        assert u3 not in users(az)
        st = az.status()
        assert st["origins"]["us"]["applied_seq"] == 5
        assert st["consumer"]["next_offset"] == 6      # the diverging message is not consumed

        # A restart reads it again and diverges again.
        az.stop()
        start(az)
        c = assert_stopped(az, "divergence after restart")
        assert c["divergence"]["seq"] == 3 and c["divergence"]["received_id"] == other["id"]

        # Resync, epoch 2: alice renamed, the role changed, dave new; bob
        # and his membership are gone.
        H = HLC0 + 1000
        begin = o.ev("resync.begin", 100, {}, epoch=2, hlc=H)
        state = [o.ev("user.created", 101, {"id": u1, "subject": "div-alice2"}, epoch=2, hlc=H + 1),
                 o.ev("user.created", 102, {"id": u4, "subject": "div-dave"}, epoch=2, hlc=H + 2),
                 o.ev("role.created", 103, {"id": role, "name": "writer",
                                            "permissions": ["doc:write"]}, epoch=2, hlc=H + 3),
                 o.ev("assignment.created", 104, {"id": asg,
                                                  "principal": {"type": "user", "id": u1},
                                                  "role_id": role, "region": "*",
                                                  "resource": "doc/*"}, epoch=2, hlc=H + 4)]
        end = o.ev("resync.end", 105, {"users": 2, "roles": 1, "teams": 0, "memberships": 0,
                                       "assignments": 1}, epoch=2, hlc=H + 5)
        o.send(begin, o.ev("heartbeat", 100, {}, epoch=2, hlc=H), *state)
        # Staged, not applied: still stopped, still the old rows.
        wait_consumer(az, lambda c: (c.get("resync") or {}).get("staged") == 4, "staging")
        assert consumer(az)["state"] == "stopped"
        assert users(az)[u1] == ("div-alice", False)
        o.send(end)
        c = wait_consumer(az, lambda c: c["state"] == "running", "the resync to apply")
        assert c["error"] is None and c.get("divergence") is None and c["epoch"] == 2
        assert readyz(az).status_code == 200
        assert metric(az, "authz_consumer_stopped") == 0
        assert metric(az, "authz_resyncs_applied_total") == 1
        w = az.status()["origins"]["us"]
        assert w["applied_seq"] == 105 and w["applied_hlc"] == H + 5 and w["known_hlc"] == H + 5
        assert az.sql("SELECT epoch FROM authz.watermarks WHERE origin = 'us'") == "2"
        rows = users(az)
        assert rows[u1] == ("div-alice2", False) and rows[u4] == ("div-dave", False)
        assert rows[u2][1] is True                   # absent from the state: tombstone
        assert u3 not in rows                        # the diverging event never applied
        assert az.sql(f"SELECT deleted FROM authz.memberships WHERE user_id = '{u2}'") == "t"
        assert az.sql(f"SELECT deleted || '|' || array_to_string(permissions, ',')"
                      f" FROM authz.policies WHERE assignment_id = '{asg}'") == "false|doc:write"
        assert az.check("div-alice2", "doc:write", "doc/1")["decision"] == "allow"
        assert az.check("div-alice2", "doc:read", "doc/1")["decision"] == "deny"
        assert az.check("div-bob", "doc:read", "doc/1")["decision"] == "deny"
        assert az.sql("SELECT count(*) FROM authz.resync_staging") == "0"

        # Later: a resent end is a duplicate; an epoch-1 straggler is dead-
        # lettered; epoch 2 goes on.
        dead = az.status()["dead_letters"]
        o.send(end, o.ev("user.created", 7, {"id": u3, "subject": "div-carol"}),
               o.ev("user.created", 106, {"id": u3, "subject": "div-erin"}, epoch=2, hlc=H + 6),
               o.ev("heartbeat", 106, {}, epoch=2, hlc=H + 7))
        wait_until(lambda: az.status()["origins"]["us"]["applied_hlc"] == H + 7, 60, "epoch 2")
        st = az.status()
        assert st["consumer"]["state"] == "running" and st["consumer"]["duplicates"] >= 1
        assert st["dead_letters"] == dead + 1
        assert "older than the current epoch" in az.sql(
            "SELECT reason FROM authz.dead_letters ORDER BY id DESC LIMIT 1")
        assert users(az)[u3] == ("div-erin", False)
    finally:
        az.stop()


def test_heartbeat_below_applied_seq_diverges(cluster, workdir):
    topic = new_topic(cluster)
    o = Origin(cluster, topic)
    evs = o.send(*(o.ev("user.created", s, {"id": str(uuid.uuid4()), "subject": f"hb{s}"})
                   for s in (1, 2, 3)))
    az = start(Authz(cluster, workdir, topic, "hblow", extra=QUIET))
    try:
        wait_until(lambda: az.status()["origins"].get("us", {}).get("applied_seq") == 3, 60,
                   "seq 3 applied")
        o.send(o.ev("heartbeat", 2, {"last_id": evs[1]["id"]}, hlc=HLC0 + 100))
        c = assert_stopped(az, "a heartbeat below the applied seq")
        assert "forgot events" in c["error"]
        assert c["divergence"] == {"seq": 2, "applied_id": evs[1]["id"],
                                   "received_id": evs[1]["id"], "kafka_offset": 3}
        # The watermarks did not move.
        assert az.status()["origins"]["us"]["applied_hlc"] == HLC0 + 3
    finally:
        az.stop()


def test_heartbeat_with_wrong_last_id_diverges(cluster, workdir):
    topic = new_topic(cluster)
    o = Origin(cluster, topic)
    evs = o.send(o.ev("user.created", 1, {"id": str(uuid.uuid4()), "subject": "hbid1"}),
                 o.ev("user.created", 2, {"id": str(uuid.uuid4()), "subject": "hbid2"}))
    # A right last_id and an old-style heartbeat are accepted.
    o.send(o.ev("heartbeat", 2, {"last_id": evs[1]["id"]}, hlc=HLC0 + 10),
           o.ev("heartbeat", 2, {}, hlc=HLC0 + 11))
    az = start(Authz(cluster, workdir, topic, "hbid", extra=QUIET))
    try:
        wait_until(lambda: az.status()["origins"].get("us", {}).get("applied_hlc") == HLC0 + 11,
                   60, "heartbeats applied")
        assert consumer(az)["state"] == "running"
        wrong = str(uuid.uuid4())
        o.send(o.ev("heartbeat", 2, {"last_id": wrong}, hlc=HLC0 + 12))
        c = assert_stopped(az, "a heartbeat naming another event")
        assert c["divergence"] == {"seq": 2, "applied_id": evs[1]["id"], "received_id": wrong,
                                   "kafka_offset": 4}
        assert az.status()["origins"]["us"]["applied_hlc"] == HLC0 + 11
    finally:
        az.stop()


def test_large_resync_killed_midway_converges(cluster, workdir):
    topic = new_topic(cluster)
    o = Origin(cluster, topic)
    old = str(uuid.uuid4())
    o.send(o.ev("user.created", 1, {"id": old, "subject": "big-old"}))
    n, S, H = 3000, 10, HLC0 + 100000
    ids = [str(uuid.uuid4()) for _ in range(n)]
    begin = o.ev("resync.begin", S, {}, epoch=2, hlc=H)
    state = [o.ev("user.created", S + 1 + i, {"id": ids[i], "subject": f"big-{i}"}, epoch=2,
                  hlc=H + 1 + i) for i in range(n)]
    end = o.ev("resync.end", S + 1 + n, {"users": n, "roles": 0, "teams": 0, "memberships": 0,
                                         "assignments": 0}, epoch=2, hlc=H + 1 + n)
    o.send(begin, *state[:n // 2])
    az = start(Authz(cluster, workdir, topic, "big",
                     extra={"consumer": {"stall_ms": 600000, "batch": 100}}))
    try:
        wait_consumer(az, lambda c: (c.get("resync") or {}).get("staged") == n // 2,
                      "half of the resync staged")
        az.kill()
        o.send(*state[n // 2:], end)
        start(az)
        c = wait_consumer(az, lambda c: c["epoch"] == 2, "the resync to apply", timeout=120)
        assert c["state"] == "running" and c["error"] is None
        w = az.status()["origins"]["us"]
        assert w["applied_seq"] == S + 1 + n and w["applied_hlc"] == H + 1 + n
        assert az.sql("SELECT count(*) FROM authz.users WHERE NOT deleted") == str(n)
        assert az.sql(f"SELECT deleted FROM authz.users WHERE user_id = '{old}'") == "t"
        assert az.sql("SELECT count(*) FROM authz.applied_events") == str(n + 2)
        assert len(az.snapshot()["users"]) == n
    finally:
        az.stop()


def test_resync_end_with_wrong_counts_stops(cluster, workdir):
    topic = new_topic(cluster)
    o = Origin(cluster, topic)
    old = str(uuid.uuid4())
    o.send(o.ev("user.created", 1, {"id": old, "subject": "cnt-old"}))
    H = HLC0 + 500
    new = [str(uuid.uuid4()) for _ in range(2)]
    o.send(o.ev("resync.begin", 10, {}, epoch=2, hlc=H),
           o.ev("user.created", 11, {"id": new[0], "subject": "cnt-a"}, epoch=2, hlc=H + 1),
           o.ev("user.created", 12, {"id": new[1], "subject": "cnt-b"}, epoch=2, hlc=H + 2),
           o.ev("resync.end", 13, {"users": 3, "roles": 0, "teams": 0, "memberships": 0,
                                   "assignments": 0}, epoch=2, hlc=H + 3))
    az = start(Authz(cluster, workdir, topic, "cnt", extra=QUIET))
    try:
        c = assert_stopped(az, "a resync with wrong counts")
        assert "incomplete" in c["error"] and "3 users, 2 were received" in c["error"], c
        rows = users(az)
        assert rows == {old: ("cnt-old", False)}     # nothing of the resync applied
        w = az.status()["origins"]["us"]
        assert w["applied_seq"] == 1 and c["epoch"] == 1
        # A complete resync of a newer epoch repairs it.
        H3 = H + 100
        o.send(o.ev("resync.begin", 20, {}, epoch=3, hlc=H3),
               o.ev("user.created", 21, {"id": new[0], "subject": "cnt-a"}, epoch=3, hlc=H3 + 1),
               o.ev("resync.end", 22, {"users": 1, "roles": 0, "teams": 0, "memberships": 0,
                                       "assignments": 0}, epoch=3, hlc=H3 + 2))
        c = wait_consumer(az, lambda c: c["state"] == "running", "the epoch 3 resync")
        assert c["epoch"] == 3
        rows = users(az)
        assert rows[new[0]] == ("cnt-a", False) and rows[old][1] is True and new[1] not in rows
    finally:
        az.stop()


def test_rolling_back_batches_make_it_not_ready(cluster, workdir, identity, admin):
    """A batch that keeps failing (here a trigger refusing user rows) turns
    /readyz 503 within stall_ms, says why, and recovers when it can."""
    az = Authz(cluster, workdir, identity.topic, "stall", extra={"consumer": {"stall_ms": 1500}})
    az.start()
    try:
        az.sql("CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS"
               " $$BEGIN RAISE EXCEPTION 'refused by test'; END$$;"
               " CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON authz.users"
               " FOR EACH ROW EXECUTE FUNCTION public.refuse()")
        r = admin.post("/v1/users", {"subject": "stall-user", "email": "s@x.io", "name": "s"})
        assert r.status_code == 201
        wait_until(lambda: readyz(az).status_code == 503, 30, "readyz 503")
        c = consumer(az)
        assert c["state"] == "stalled", c
        assert "rolling back" in c["error"] and "refused by test" in c["error"]
        assert "rolling back" in readyz(az).text
        assert metric(az, "authz_consumer_stalled") == 1
        assert metric(az, "authz_consumer_stopped") == 0
        az.sql("DROP TRIGGER refuse ON authz.users")
        az.wait_applied(r.headers["Authz-Revision"])
        wait_until(lambda: readyz(az).status_code == 200, 30, "readyz 200 again")
        assert consumer(az)["state"] == "running"
        assert metric(az, "authz_consumer_stalled") == 0
    finally:
        az.stop()


def test_no_message_makes_it_not_ready(cluster, workdir):
    """No message at all (not even a heartbeat) for stall_ms: not ready."""
    topic = new_topic(cluster)
    az = start(Authz(cluster, workdir, topic, "silent", extra={"consumer": {"stall_ms": 500}}))
    try:
        # Not the 503 of a database link still connecting at start: the
        # consumer's own verdict.
        wait_until(lambda: readyz(az).status_code == 503 and
                   consumer(az)["state"] == "stalled", 30, "readyz 503, the consumer stalled")
        c = consumer(az)
        assert c["state"] == "stalled" and "no message" in c["error"], c
        assert c["last_message_age_ms"] > 500
        o = Origin(cluster, topic)
        o.send(o.ev("heartbeat", 0, {}))
        wait_until(lambda: readyz(az).status_code == 200, 30, "readyz 200 after a heartbeat")
    finally:
        az.stop()


def test_resend_beyond_the_retained_ids_cannot_be_verified(cluster, workdir):
    """Ids are pruned to consumer.applied_ids_retain; a resend older than
    that is a divergence that says it cannot verify, never a silent skip."""
    topic = new_topic(cluster)
    o = Origin(cluster, topic)
    evs = o.send(*(o.ev("user.created", s, {"id": str(uuid.uuid4()), "subject": f"ret{s}"})
                   for s in range(1, 6)))
    az = start(Authz(cluster, workdir, topic, "retain",
                     extra={"consumer": {"stall_ms": 600000, "applied_ids_retain": 2}}))
    try:
        wait_until(lambda: az.status()["origins"].get("us", {}).get("applied_seq") == 5, 60,
                   "seq 5 applied")
        assert az.sql("SELECT string_agg(seq::text, ',' ORDER BY seq)"
                      " FROM authz.applied_events") == "4,5"
        o.send(evs[4])                                # a retained resend: a duplicate
        wait_consumer(az, lambda c: c["duplicates"] == 1, "the duplicate")
        o.send(evs[0])
        c = assert_stopped(az, "an unverifiable resend")
        assert "cannot verify" in c["error"]
        assert c["divergence"] == {"seq": 1, "applied_id": None, "received_id": evs[0]["id"],
                                   "kafka_offset": 6}
    finally:
        az.stop()
