"""Issue 8.1 end to end: acknowledged commits lost at the origin.

The scenario that split identity and authz before: writes are acknowledged
and reach Kafka and the authz server, then the identity database is
restored to a point before them (as after a failover to an asynchronous
standby, or a restore from backup), and new writes reuse their seqs. Both
ends must notice: the relay refuses to publish over a topic that holds
events its outbox does not, and the authz consumer refuses an event whose
seq it has applied under another id. `authz-identity resync` then starts a
new origin epoch carrying the origin's whole state, and afterwards identity
and authz hold the same users, memberships and assignments, including the
writes made after the repair.
"""
import json
import os
import subprocess
import time

import requests
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import Authz, BIN, Client, wait_until

import importlib.util

_spec = importlib.util.spec_from_file_location(
    "identity_conftest_e2e",
    os.path.join(os.path.dirname(__file__), "..", "identity", "conftest.py"))
_id = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_id)
Identity = _id.Identity
read_events = _id.read_events


def psql_admin(cluster, sql):
    subprocess.run(["psql", "-X", "-q", cluster["PG_URL_US"], "-c", sql], check=True,
                   capture_output=True)


def start_unready(idn):
    """Starts identity and waits for /healthz only: a diverged relay keeps
    /readyz at 503 on purpose."""
    logf = open(idn.log, "a")
    idn.proc = subprocess.Popen([os.path.join(BIN, "authz-identity"), "--config", idn.conf],
                                stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
    logf.close()

    def up():
        assert idn.proc.poll() is None, open(idn.log).read()[-2000:]
        try:
            return requests.get(idn.url + "/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False
    wait_until(up, 30, "authz-identity up")


def high_watermark(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "hw-probe"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        c.close()


def ok(r, *codes):
    assert r.status_code in codes, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r


def new_user(adm, subject):
    return ok(adm.post("/v1/users", {"subject": subject, "email": f"{subject}@x.io",
                                     "name": subject}), 201)


def identity_state(idn):
    users = idn.sql("SELECT id || ' ' || subject FROM identity.users ORDER BY 1")
    members = idn.sql("SELECT team_id || ' ' || user_id FROM identity.team_members ORDER BY 1")
    assignments = idn.sql(
        "SELECT a.id || ' ' || a.principal_type || ' ' || a.principal_id || ' ' || a.role_id"
        "       || ' ' || a.region || ' ' || a.resource || ' ' ||"
        "       array_to_string(ARRAY(SELECT unnest(r.permissions) ORDER BY 1), ',')"
        "  FROM identity.role_assignments a JOIN identity.roles r ON r.id = a.role_id ORDER BY 1")
    return users.splitlines(), members.splitlines(), assignments.splitlines()


def authz_state(az):
    users = az.sql("SELECT user_id || ' ' || subject FROM authz.users WHERE NOT deleted ORDER BY 1")
    members = az.sql("SELECT team_id || ' ' || user_id FROM authz.memberships"
                     " WHERE NOT deleted ORDER BY 1")
    assignments = az.sql(
        "SELECT assignment_id || ' ' || principal_type || ' ' || principal_id || ' ' || role_id"
        "       || ' ' || region || ' ' || resource || ' ' ||"
        "       array_to_string(ARRAY(SELECT unnest(permissions) ORDER BY 1), ',')"
        "  FROM authz.policies WHERE NOT deleted ORDER BY 1")
    return users.splitlines(), members.splitlines(), assignments.splitlines()


def test_restore_is_detected_at_both_ends_and_resync_reconverges(cluster, workdir, keys):
    bootstrap = cluster["KAFKA_BOOTSTRAP"]
    idn = Identity(cluster, workdir, keys, "restored")
    idn.create_storage()
    idn.start()
    az = Authz(cluster, workdir, idn.topic, "restored",
               extra={"consumer": {"stall_ms": 3000}}).start()
    adm = Client(idn.url, keys.token())
    try:
        # A: the state the backup will hold.
        users = [new_user(adm, f"e2e-a{i}").json()["id"] for i in range(5)]
        team = ok(adm.post("/v1/teams", {"name": "e2e-team"}), 201).json()["id"]
        for u in users[:4]:
            ok(adm.put(f"/v1/teams/{team}/members/{u}"), 200, 201, 204)
        role = ok(adm.post("/v1/roles", {"name": "e2e-reader", "permissions": ["doc:read"]}),
                  201).json()["id"]
        r = ok(adm.post("/v1/role-assignments", {"principal": {"type": "team", "id": team},
                                                 "role_id": role, "region": "*",
                                                 "resource": "doc/*"}), 201)
        az.wait_applied(r.headers["Authz-Revision"])
        assert az.check("e2e-a0", "doc:read", "doc/1")["decision"] == "allow"

        idn.stop()
        psql_admin(cluster, f'CREATE DATABASE "{idn.db}_backup" TEMPLATE "{idn.db}"')
        idn.start()

        # B: acknowledged, published, applied by authz ... and then lost.
        ok(adm.delete(f"/v1/teams/{team}/members/{users[0]}"), 200, 204)
        lost = new_user(adm, "e2e-lost")
        az.wait_applied(lost.headers["Authz-Revision"])
        assert az.check("e2e-a0", "doc:read", "doc/1")["decision"] == "deny"
        b_events = {e["seq"]: e["id"] for e in read_events(
            bootstrap, idn.topic, lambda evs: any(e["type"] == "user.created" and
                                                  e["data"]["subject"] == "e2e-lost"
                                                  for e in evs))
            if e["type"] != "heartbeat"}
        idn.stop()
        psql_admin(cluster, f'DROP DATABASE "{idn.db}" WITH (FORCE)')
        psql_admin(cluster, f'ALTER DATABASE "{idn.db}_backup" RENAME TO "{idn.db}"')

        # The restored origin: its relay must see that Kafka holds events
        # its outbox does not, and publish nothing.
        start_unready(idn)

        def relay_diverged():
            r = requests.get(idn.url + "/readyz", timeout=5)
            m = requests.get(idn.url + "/metrics", timeout=5).text
            # /readyz names the first reason it is not ready: while the
            # restarted identity's workers are still connecting to their
            # database that is the database, so wait for the divergence.
            return (r.status_code == 503 and "identity_relay_diverged 1" in m and
                    "resync" in r.text and r.text)
        ready_text = wait_until(relay_diverged, 30, "the relay to report the divergence")
        assert "resync" in ready_text, ready_text
        assert "resync" in open(idn.log).read()
        hw = high_watermark(bootstrap, idn.topic)

        # C: new writes, acknowledged by the restored origin, reusing seqs.
        c_user = new_user(adm, "e2e-after-restore").json()["id"]
        ok(adm.put(f"/v1/teams/{team}/members/{users[4]}"), 200, 201, 204)
        rows = idn.sql("SELECT seq || ' ' || event_id || ' ' || payload FROM identity.outbox"
                       " WHERE published_at IS NULL ORDER BY seq").splitlines()
        c_rows = [(int(x.split(" ", 2)[0]), x.split(" ", 2)[1], x.split(" ", 2)[2]) for x in rows]
        assert c_rows and all(seq in b_events for seq, _, _ in c_rows), (c_rows, b_events)
        # Nothing reaches the topic while the relay is diverged (it re-checks
        # about once a second: give it a few checks).
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert high_watermark(bootstrap, idn.topic) == hw
            time.sleep(0.25)

        # The authz end: the same events, published by something without
        # the relay's check, are refused, not skipped as duplicates.
        p = Producer({"bootstrap.servers": bootstrap})
        for _, _, payload in c_rows:
            p.produce(idn.topic, payload.encode(), key=b"us", partition=0)
        assert p.flush(30) == 0
        first_seq, first_id, _ = c_rows[0]

        def authz_diverged():
            st = az.status()["consumer"]
            return st["state"] == "stopped" and st.get("divergence") and st
        st = wait_until(authz_diverged, 30, "authz to report the divergence")
        d = st["divergence"]
        assert d["seq"] == first_seq and d["received_id"] == first_id, d
        assert d["applied_id"] == b_events[first_seq], d
        assert requests.get(az.url + "/readyz", timeout=5).status_code == 503
        assert "authz_consumer_stopped 1" in az.get("/metrics").text

        # The repair.
        out = subprocess.run([os.path.join(BIN, "authz-identity"), "resync", "--config",
                              idn.conf], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        assert summary["epoch"] == 2, summary
        assert summary["first_seq"] > max(b_events), summary
        wait_until(lambda: requests.get(idn.url + "/readyz", timeout=5).status_code == 200, 30,
                   "identity ready after the resync")
        wait_until(lambda: az.status()["consumer"]["state"] == "running" and
                   requests.get(az.url + "/readyz", timeout=5).status_code == 200, 60,
                   "authz running after the resync")

        # D: a write after the repair is not lost.
        d_user = new_user(adm, "e2e-after-repair").json()["id"]
        r = ok(adm.put(f"/v1/teams/{team}/members/{d_user}"), 200, 201)
        az.wait_applied(r.headers["Authz-Revision"])
        epoch2 = [e for e in read_events(bootstrap, idn.topic,
                                         lambda evs: any(e["type"] == "team.member_added" and
                                                         e["data"]["user_id"] == d_user
                                                         for e in evs))
                  if e.get("epoch", 1) == 2 and e["type"] != "heartbeat"]
        assert epoch2[0]["type"] == "resync.begin" and epoch2[0]["seq"] == summary["first_seq"]
        assert [e["seq"] for e in epoch2] == list(range(epoch2[0]["seq"],
                                                        epoch2[0]["seq"] + len(epoch2)))

        # Identity and authz hold the same authorization data.
        assert identity_state(idn) == authz_state(az)
        ids = identity_state(idn)[0]
        assert any(c_user in u for u in ids) and any(d_user in u for u in ids)
        assert not any(lost.json()["id"] in u for u in authz_state(az)[0])
        # users[0]'s membership was removed in B, which the origin lost:
        # the origin's truth (a member again) wins.
        assert az.check("e2e-a0", "doc:read", "doc/1")["decision"] == "allow"
        assert az.check("e2e-after-repair", "doc:read", "doc/1")["decision"] == "allow"
        assert az.check("e2e-lost", "doc:read", "doc/1")["decision"] != "allow"
        az.stop()
        idn.stop()
    finally:
        az.kill()
        idn.kill()
