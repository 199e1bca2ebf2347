"""Poison messages in the identity topic go to the dead-letter table with
their bytes and a reason; consumption goes on and nothing else changes."""
import json
import time
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
    first = envelope(type="user.created", seq=1, hlc=(1 << 40) + 1, data=user)
    msgs = [first,
            first,                                                              # resent
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
            except (requests.RequestException, ValueError, KeyError):
                return False    # KeyError: an error body while a worker connects
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


def _server_on_new_topic(cluster, workdir, name, extra=None):
    import os
    import subprocess

    from conftest import BIN, Authz
    topic = f"identity-test.{name}{uuid.uuid4().hex[:8]}"
    subprocess.run([os.path.join(BIN, "authz-kafka-admin"), "create-topics", "--bootstrap",
                    cluster["KAFKA_BOOTSTRAP"], topic], check=True, capture_output=True)
    return topic, Authz(cluster, workdir, topic, name, extra=extra)


def test_a_dead_letter_that_cannot_be_stored_stops_visibly(cluster, workdir):
    import requests

    from conftest import wait_until
    topic, az = _server_on_new_topic(cluster, workdir, "dlfail",
                                     {"consumer": {"stall_ms": 600000}})
    az.start()
    try:
        # Every attempt to store a dead letter draws from a sequence (not
        # rolled back), then fails.
        az.sql("CREATE SEQUENCE public.dl_attempts;"
               " CREATE FUNCTION public.refuse_dl() RETURNS trigger LANGUAGE plpgsql AS"
               " $$BEGIN PERFORM nextval('public.dl_attempts');"
               " RAISE EXCEPTION 'dead letters refused by test'; END$$;"
               " CREATE TRIGGER refuse_dl BEFORE INSERT ON authz.dead_letters"
               " FOR EACH ROW EXECUTE FUNCTION public.refuse_dl()")
        p = Producer({"bootstrap.servers": cluster["KAFKA_BOOTSTRAP"]})
        p.produce(topic, value=b"{not json")
        assert p.flush(30) == 0

        def stopped():
            return az.status()["consumer"]["state"] == "stopped"
        wait_until(stopped, 30, "the consumer to stop")
        c = az.status()["consumer"]
        assert "dead letter" in c["error"] and "refused by test" in c["error"], c
        assert c["next_offset"] == -1                   # the message is not consumed
        r = requests.get(az.url + "/readyz", timeout=5)
        assert r.status_code == 503 and "dead letter" in r.text
        assert "authz_consumer_stopped 1" in requests.get(az.url + "/metrics", timeout=5).text
        # Not a loop: over a second (five retry periods of the old loop)
        # there is no further attempt and it stays stopped.
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            assert az.sql("SELECT last_value FROM public.dl_attempts") == "1"
            assert az.status()["consumer"]["state"] == "stopped"
        assert az.status()["dead_letters"] == 0
    finally:
        az.stop()


def test_kafka_errors_go_to_the_json_log(cluster, workdir):
    """librdkafka's own lines are JSON log lines; an unreachable broker
    makes the server not ready (no message) instead of silently waiting."""
    import json as _json
    import os
    import subprocess

    import requests

    from conftest import BIN, Authz, free_port, wait_until
    az = Authz(cluster, workdir, "identity-test.nobroker", "nobroker",
               extra={"kafka": {"bootstrap": f"127.0.0.1:{free_port()}"},
                      "consumer": {"stall_ms": 500}})
    logf = open(az.log, "a")
    az.proc = subprocess.Popen([os.path.join(BIN, "authz-server"), "--config", az.conf],
                               stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
    logf.close()
    try:
        def kafka_logged():
            return any("kafka" in line and "Connect to" in line for line in open(az.log))
        wait_until(kafka_logged, 30, "librdkafka's connection error in the log")

        def not_ready():
            try:
                r = requests.get(az.url + "/readyz", timeout=1)
                return r.status_code == 503 and "no message" in r.text
            except requests.RequestException:
                return False
        wait_until(not_ready, 30, "readyz 503 on no message")
        c = az.status()["consumer"]
        assert c["state"] == "stalled" and "last kafka error" in c["error"], c
    finally:
        az.stop()
    lines = [line for line in open(az.log).read().splitlines() if line.strip()]
    assert not [line for line in lines if line.startswith("%")]
    for line in lines:
        rec = _json.loads(line)
        assert rec["component"] == "authz"
