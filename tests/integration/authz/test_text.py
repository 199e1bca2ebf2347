"""A message whose unknown member name cannot be cut at a fixed byte count
without splitting a character ends in the dead-letter table, and the
consumer goes on; check errors quoting such names stay valid JSON."""
import json
import uuid

from confluent_kafka import Producer


def envelope(**over):
    ev = {"version": 1, "id": str(uuid.uuid4()), "type": "team.created", "origin": "us",
          "seq": 1, "hlc": 1 << 40, "data": {"id": str(uuid.uuid4())}}
    ev.update(over)
    return ev


def test_multibyte_member_names_are_dead_lettered(cluster, identity, admin, authz):
    dead_before = authz.status()["dead_letters"]
    names = ["é" * 300, "a" * 63 + "é" * 5, "a" * 62 + "€" * 5, "a" * 61 + "😀" * 5]
    msgs = []
    for n in names:
        ev = envelope()
        ev[n] = 1
        msgs.append(json.dumps(ev, ensure_ascii=False).encode())
    p = Producer({"bootstrap.servers": cluster["KAFKA_BOOTSTRAP"], "enable.idempotence": True})
    for m in msgs:
        p.produce(identity.topic, value=m, key=b"us")
    assert p.flush(30) == 0

    # A real change after them is still applied: consumption went on.
    r = admin.post("/v1/users", {"subject": "after-text", "email": "t@x.io", "name": "t"})
    assert r.status_code == 201
    authz.wait_applied(r.headers["Authz-Revision"])
    st = authz.status()
    assert st["consumer"]["state"] == "running"
    assert st["dead_letters"] - dead_before == len(msgs)
    rows = authz.sql("SELECT encode(raw, 'hex') || '|' || reason FROM authz.dead_letters"
                     " ORDER BY id").splitlines()[-len(msgs):]
    assert [bytes.fromhex(x.split("|", 1)[0]) for x in rows] == msgs
    for line, n in zip(rows, names):
        reason = line.split("|", 1)[1]
        assert "unknown member" in reason, reason
        quoted = reason.split('"')[1]
        assert n.startswith(quoted) and 60 <= len(quoted.encode()) <= 64, reason


def test_check_error_quotes_whole_characters(authz):
    name = "a" + "é" * 300
    body = {"subject": "s", "action": "doc:read", "resource": "doc/1", name: "x"}
    r = authz.s.post(authz.url + "/v1/check", data=json.dumps(body),
                     headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400, r.text
    err = json.loads(r.content.decode("utf-8", errors="strict"))["error"]
    assert err["code"] == "invalid_request"
    quoted = err["message"].split('"')[1]
    assert name.startswith(quoted) and len(quoted.encode()) == 63, err
