"""Poison messages in the identity topic go to the dead-letter table with
their bytes and a reason; consumption goes on and nothing else changes."""
import json
import uuid

from confluent_kafka import Producer

from conftest import policy_set


def envelope(**over):
    ev = {"version": 1, "id": str(uuid.uuid4()), "type": "team.created", "origin": "us",
          "seq": 1, "hlc": 1 << 40, "data": {"id": str(uuid.uuid4())}}
    ev.update(over)
    return json.dumps(ev).encode()


POISON = [
    b"\x00\xff garbage \xfe",
    b"{not json",
    envelope(seq="seven"),                       # wrong type
    envelope(data=[]),                           # data not an object
    envelope(type="team.renamed"),               # unknown type
    envelope(version=2),                         # future version
    envelope(origin="eu", seq=10 ** 9),          # another origin
    b"",                                         # empty
]


def test_poison_messages_are_dead_lettered(cluster, identity, admin, authz):
    u = admin.post("/v1/users", {"subject": "poison-before", "email": "p@x.io", "name": "p"})
    assert u.status_code == 201
    authz.wait_applied(u.headers["Authz-Revision"])
    before = policy_set(authz.snapshot())
    dead_before = authz.status()["dead_letters"]

    p = Producer({"bootstrap.servers": cluster["KAFKA_BOOTSTRAP"], "enable.idempotence": True})
    for m in POISON:
        p.produce(identity.topic, value=m, key=b"us")
    assert p.flush(30) == 0

    # A real change after the poison is still applied.
    r = admin.post("/v1/users", {"subject": "poison-after", "email": "q@x.io", "name": "q"})
    assert r.status_code == 201
    authz.wait_applied(r.headers["Authz-Revision"])
    st = authz.status()
    assert st["consumer"]["state"] == "running"
    assert st["dead_letters"] - dead_before == len(POISON)

    rows = authz.sql("SELECT encode(raw, 'hex') || '|' || reason FROM authz.dead_letters"
                     " ORDER BY id").splitlines()
    got = [bytes.fromhex(line.split("|", 1)[0]) for line in rows[-len(POISON):]]
    assert got == POISON
    assert all(line.split("|", 1)[1] for line in rows)

    # Nothing but the later user changed.
    after = policy_set(authz.snapshot())
    assert after["memberships"] == before["memberships"]
    assert after["policies"] == before["policies"]
    added = set(after["users"]) - set(before["users"])
    assert len(added) == 1 and "poison-after" in added.pop()
    assert authz.check("poison-after", "doc:read", "doc/1")["decision"] == "deny"


def test_duplicates_are_skipped_and_a_gap_stops(cluster, workdir):
    import os
    import subprocess

    import requests

    from conftest import BIN, Authz, wait_until
    topic = f"identity-test.gap{uuid.uuid4().hex[:8]}"
    subprocess.run([os.path.join(BIN, "authz-kafka-admin"), "create-topics", "--bootstrap",
                    cluster["KAFKA_BOOTSTRAP"], topic], check=True, capture_output=True)
    uid = str(uuid.uuid4())
    user = {"id": uid, "subject": "gap-user"}
    msgs = [envelope(type="user.created", seq=1, hlc=(1 << 40) + 1, data=user),
            envelope(type="user.created", seq=1, hlc=(1 << 40) + 1, data=user),   # resent
            envelope(type="heartbeat", seq=1, hlc=(1 << 40) + 2, data={}),
            envelope(type="team.created", seq=3, hlc=(1 << 40) + 3,
                     data={"id": str(uuid.uuid4())})]                           # seq 2 lost
    p = Producer({"bootstrap.servers": cluster["KAFKA_BOOTSTRAP"]})
    for m in msgs:
        p.produce(topic, value=m)
    assert p.flush(30) == 0
    az = Authz(cluster, workdir, topic, "gap")
    az.proc = None
    logf = open(az.log, "a")
    az.proc = subprocess.Popen([os.path.join(BIN, "authz-server"), "--config", az.conf],
                               stdout=logf, stderr=logf)
    logf.close()
    try:
        def stopped():
            try:
                return requests.get(az.url + "/v1/status", timeout=1).json()["consumer"][
                    "state"] == "stopped"
            except (requests.RequestException, ValueError):
                return False
        wait_until(stopped, 60, "the consumer to stop on the gap")
        st = az.status()
        assert "gap" in st["consumer"]["error"] and "seq 3 after 1" in st["consumer"]["error"]
        assert st["consumer"]["duplicates"] == 1
        assert st["origins"]["us"]["applied_seq"] == 1
        assert st["origins"]["us"]["applied_hlc"] == (1 << 40) + 2
        assert st["consumer"]["next_offset"] == 3       # the gap message is not consumed
        r = requests.get(az.url + "/readyz", timeout=5)
        assert r.status_code == 503 and "gap" in r.text
        assert "authz_consumer_stopped 1" in requests.get(az.url + "/metrics", timeout=5).text
        assert [u["subject"] for u in az.snapshot()["users"]] == ["gap-user"]
    finally:
        az.stop()
