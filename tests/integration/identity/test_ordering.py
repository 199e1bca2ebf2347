"""Ordering and durability of the outbox relay: bursts of concurrent admin
writes from many connections reach Kafka in commit order, with strictly
increasing seq and HLC and no gap; the same when the relay is killed with
SIGKILL mid-burst and restarted, and across a broker restart."""
import concurrent.futures
import os
import signal
import subprocess
import threading
import uuid

import pytest
import requests

from conftest import CLUSTER, Client, Identity, changes, read_events, wait_until

WRITERS = 16


def check_stream(events, expect):
    """Validates the partition as a consumer would: duplicates (a seq seen
    before, same event id) are allowed; a gap, a reordering or an HLC that
    goes back is not. Returns the distinct change events."""
    applied, last_hlc, ids, distinct = 0, 0, {}, []
    for e in events:
        if e["type"] == "heartbeat":
            assert e["seq"] <= applied, f"heartbeat seq {e['seq']} ahead of applied {applied}"
            assert e["hlc"] > last_hlc, "heartbeat hlc went back"
            last_hlc = e["hlc"]
            continue
        if e["seq"] <= applied:
            assert ids[e["seq"]] == e["id"], f"seq {e['seq']} reused by another event"
            continue
        assert e["seq"] == applied + 1, f"gap: seq {e['seq']} after {applied}"
        assert e["hlc"] > last_hlc, f"hlc went back at seq {e['seq']}"
        applied, last_hlc = e["seq"], e["hlc"]
        ids[e["seq"]] = e["id"]
        distinct.append(e)
    assert len(distinct) == expect, (len(distinct), expect)
    return distinct


def burst(url, token, n, names, errors, pause=None):
    """n team creations spread over WRITERS threads, each with its own
    connection; records every created name. `pause` (an Event) lets a test
    hold writers mid-burst."""
    per = n // WRITERS

    def writer(w):
        s = requests.Session()
        h = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        for i in range(per):
            if pause is not None:
                pause.wait()
            name = f"burst-{w}-{i}-{uuid.uuid4().hex[:6]}"
            r = s.post(url + "/v1/teams", data=f'{{"name": "{name}"}}', headers=h, timeout=60)
            if r.status_code == 201:
                names.append(name)
            else:
                errors.append((r.status_code, r.text))

    with concurrent.futures.ThreadPoolExecutor(WRITERS) as ex:
        list(ex.map(writer, range(WRITERS)))
    return per * WRITERS


def test_concurrent_burst_in_order(identity, admin, cluster):
    before = int(identity.sql("SELECT last_seq FROM identity.outbox_state"))
    names, errors = [], []
    n = burst(identity.url, admin.token, 800, names, errors)
    assert errors == [] and len(names) == n
    total = before + n
    events = read_events(cluster["KAFKA_BOOTSTRAP"], identity.topic,
                         lambda evs: len({e["seq"] for e in changes(evs)}) >= total, timeout=120)
    distinct = check_stream(events, total)
    created = {e["data"]["id"] for e in distinct[before:] if e["type"] == "team.created"}
    assert len(created) == n
    # The outbox agrees: every row published.
    wait_until(lambda: identity.sql("SELECT count(*) FROM identity.outbox WHERE published_at IS NULL") == "0",
               30, "rows marked published")


@pytest.fixture()
def split(cluster, workdir, keys):
    """An API-only process and a relay-only process on one database."""
    api = Identity(cluster, workdir, keys, f"split-api-{uuid.uuid4().hex[:4]}", relay=False)
    api.create_storage()
    relay = Identity(cluster, workdir, keys, api.name.replace("api", "relay"), api=False,
                     db=api.db, topic=api.topic, extra={"relay": {"max_in_flight": 50}})
    api.start()
    relay.start()
    yield api, relay
    api.stop()
    relay.stop()


def test_relay_killed_mid_burst(split, keys, cluster):
    api, relay = split
    names, errors = [], []
    token = keys.token()
    total_box = {}

    t = threading.Thread(target=lambda: total_box.setdefault("n", burst(api.url, token, 960, names, errors)))
    t.start()
    # Kill the relay (SIGKILL) twice while writes are flowing, restarting it each time.
    for _ in range(2):
        wait_until(lambda: int(api.sql("SELECT count(*) FROM identity.outbox WHERE published_at IS NOT NULL")) > 0
                   and len(names) > 100, 60, "relay progress")
        actives = open(relay.log).read().count("relay: active")
        relay.kill(signal.SIGKILL)
        relay.start()
        wait_until(lambda: open(relay.log).read().count("relay: active") > actives, 30,
                   "the restarted relay active")
        before = len(names)
        wait_until(lambda: len(names) > before + 100 or not t.is_alive(), 60, "more writes")
    t.join()
    assert errors == []
    n = total_box["n"]
    events = read_events(cluster["KAFKA_BOOTSTRAP"], api.topic,
                         lambda evs: len({e["seq"] for e in changes(evs)}) >= n, timeout=120)
    check_stream(events, n)
    wait_until(lambda: api.sql("SELECT count(*) FROM identity.outbox WHERE published_at IS NULL") == "0",
               30, "rows marked published")


def test_broker_restart(split, keys, cluster):
    api, relay = split
    run = cluster["RUN_DIR"]
    env = cluster["ENV"]
    admin = Client(api.url, keys.token())
    first = [admin.post("/v1/teams", {"name": f"pre-{i}-{uuid.uuid4().hex[:6]}"}) for i in range(20)]
    assert all(r.status_code == 201 for r in first)
    pid = int(open(os.path.join(run, "pids", "kafka.pid")).read())
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0,
               60, "broker stopped")
    # The API keeps accepting writes while Kafka is down.
    during = [admin.post("/v1/teams", {"name": f"down-{i}-{uuid.uuid4().hex[:6]}"}) for i in range(50)]
    assert all(r.status_code == 201 for r in during)
    subprocess.run([CLUSTER, "up", "--run-dir", run], check=True, env=env, stdout=subprocess.DEVNULL)
    after = [admin.post("/v1/teams", {"name": f"post-{i}-{uuid.uuid4().hex[:6]}"}) for i in range(30)]
    assert all(r.status_code == 201 for r in after)
    events = read_events(cluster["KAFKA_BOOTSTRAP"], api.topic,
                         lambda evs: len({e["seq"] for e in changes(evs)}) >= 100, timeout=180)
    distinct = check_stream(events, 100)
    assert [e["data"]["id"] for e in distinct] == [r.json()["id"] for r in first + during + after]
