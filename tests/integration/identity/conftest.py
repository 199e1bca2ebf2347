"""Fixtures for the authz-identity integration tests.

One local cluster (real PostgreSQL per region, real Kafka broker) is
brought up for the session on free ports in a temporary run folder. Each
test module gets its own identity service(s): a fresh database in region
us's PostgreSQL, a fresh single-partition topic, and a fresh ES256 admin
key pair, so tests never see each other's rows or events.
"""
import json
import os
import socket
import subprocess
import tempfile
import time
import uuid

import pytest
import requests
from confluent_kafka import Consumer, TopicPartition

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BIN = os.environ.get("AUTHZ_BIN_DIR", os.path.join(REPO, "build", "bin"))
CLUSTER = os.path.join(REPO, "tools", "local-cluster")
ISSUER = "authz-test"
AUDIENCE = "authz-admin"


def wait_until(cond, timeout=30.0, what="condition"):
    """Polls cond() until it is truthy or the deadline passes."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="session")
def cluster():
    run = tempfile.mkdtemp(prefix="authz-it-identity.")
    env = dict(os.environ, AUTHZ_BIN_DIR=BIN)
    # The cluster's own identity services are not needed here: each test
    # module starts its own against its own database.
    try:
        subprocess.run([CLUSTER, "up", "--regions", "us,eu", "--run-dir", run, "--base-port",
                        "auto"], check=True, env=env, stdout=subprocess.DEVNULL)
        out = subprocess.run([CLUSTER, "env", "--run-dir", run], check=True, env=env,
                             capture_output=True, text=True).stdout
    except BaseException:
        # A half-started cluster is still ours to stop.
        subprocess.run([CLUSTER, "down", "--run-dir", run, "--purge"], env=env,
                       stdout=subprocess.DEVNULL)
        raise
    vals = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    vals["RUN_DIR"] = run
    vals["ENV"] = env
    yield vals
    subprocess.run([CLUSTER, "down", "--run-dir", run, "--purge"], env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["rm", "-rf", run])


class Keys:
    """An ES256 key pair, its key-set file, and token minting."""

    def __init__(self, folder, kid="test-1"):
        self.folder = folder
        self.kid = kid
        self.private = os.path.join(folder, f"{kid}.key")
        pub = os.path.join(folder, f"{kid}.pub")
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-out", self.private], check=True,
                       capture_output=True)
        subprocess.run(["openssl", "pkey", "-in", self.private, "-pubout", "-out", pub],
                       check=True, capture_output=True)
        self.keyset = os.path.join(folder, "keys.json")
        with open(self.keyset, "w") as f:
            json.dump([{"kid": kid, "alg": "ES256", "file": f"{kid}.pub"}], f)

    def token(self, sub="admin", admin=True, ttl=600, key=None, kid=None, aud=AUDIENCE,
              iss=ISSUER, alg="ES256"):
        cmd = [os.path.join(BIN, "authz-dev-token"), "--sub", sub, "--ttl", str(ttl),
               "--key", key or self.private, "--kid", kid or self.kid, "--iss", iss,
               "--aud", aud, "--alg", alg]
        if admin:
            cmd.append("--admin")
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


class Identity:
    """One authz-identity process with its own database and topic."""

    def __init__(self, cluster, folder, keys, name, api=True, relay=True, extra=None,
                 db=None, topic=None, port=None):
        self.cluster = cluster
        self.keys = keys
        self.name = name
        self.db = db or f"it_{name}_{uuid.uuid4().hex[:8]}"
        self.topic = topic or f"identity-test.{self.db}"
        base_pg = cluster["PG_URL_US"].rsplit("/", 1)[0]
        self.pg_url = f"{base_pg}/{self.db}"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = os.path.join(folder, f"{name}.log")
        self.conf = os.path.join(folder, f"{name}.json")
        cfg = {
            "service": {"region": "us", "regions": "us,eu,ap"},
            "http": {"port": self.port, "workers": 2},
            "pg": {"url": self.pg_url, "migrations_dir": os.path.join(REPO, "sql", "identity")},
            "kafka": {"bootstrap": cluster["KAFKA_BOOTSTRAP"], "topic": self.topic},
            "auth": {"keys_file": keys.keyset, "issuer": ISSUER, "audience": AUDIENCE},
            "api": {"enabled": api},
            "relay": {"enabled": relay},
        }
        for section, values in (extra or {}).items():
            cfg.setdefault(section, {}).update(values)
        with open(self.conf, "w") as f:
            json.dump(cfg, f)
        self.proc = None
        self.api = api

    def create_storage(self):
        subprocess.run(["psql", "-X", "-q", self.cluster["PG_URL_US"], "-c",
                        f'CREATE DATABASE "{self.db}"'], check=True, capture_output=True)
        subprocess.run([os.path.join(BIN, "authz-kafka-admin"), "create-topics", "--bootstrap",
                        self.cluster["KAFKA_BOOTSTRAP"], self.topic], check=True,
                       capture_output=True)

    def start(self, ready=True):
        """Starts the process and, with the API, waits until /readyz answers
        200 (ready=False: until /healthz does, for a service expected to
        start unready)."""
        logf = open(self.log, "a")
        self.proc = subprocess.Popen([os.path.join(BIN, "authz-identity"), "--config", self.conf],
                                     stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
        logf.close()
        if self.api:
            probe = "/readyz" if ready else "/healthz"

            def up():
                if self.proc.poll() is not None:
                    raise AssertionError(f"authz-identity exited: {open(self.log).read()[-2000:]}")
                try:
                    return requests.get(self.url + probe, timeout=1).status_code == 200
                except requests.RequestException:
                    return False
            wait_until(up, 30, f"authz-identity answering {probe}")
        return self

    def kill(self, sig=9):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            # A sanitizer report at shutdown, or a crash, fails the test.
            assert self.proc.returncode == 0, open(self.log).read()[-3000:]

    def sql(self, query):
        return subprocess.run(["psql", "-X", "-tA", self.pg_url, "-c", query], check=True,
                              capture_output=True, text=True).stdout.strip()


class Client:
    """requests with the admin token and JSON defaults."""

    def __init__(self, base, token):
        self.base = base
        self.s = requests.Session()
        self.token = token

    def req(self, method, path, body=None, headers=None, token=True, raw=None, **kw):
        h = {}
        if token:
            h["Authorization"] = f"Bearer {self.token if token is True else token}"
        if body is not None:
            h["Content-Type"] = "application/json"
            raw = json.dumps(body)
        h.update(headers or {})
        return self.s.request(method, self.base + path, data=raw, headers=h, timeout=30, **kw)

    def post(self, path, body=None, **kw):
        return self.req("POST", path, body, **kw)

    def get(self, path, **kw):
        return self.req("GET", path, **kw)

    def patch(self, path, body=None, **kw):
        return self.req("PATCH", path, body, **kw)

    def put(self, path, **kw):
        return self.req("PUT", path, **kw)

    def delete(self, path, **kw):
        return self.req("DELETE", path, **kw)


def read_events(bootstrap, topic, until, timeout=60.0):
    """Reads the topic from the beginning until until(events) is true."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                  "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    c.assign([TopicPartition(topic, 0, 0)])
    events = []
    end = time.monotonic() + timeout
    try:
        while not until(events):
            if time.monotonic() > end:
                raise AssertionError(f"timed out reading {topic}: {len(events)} events")
            m = c.poll(0.2)
            if m is None or m.error():
                continue
            ev = json.loads(m.value())
            ev["_offset"] = m.offset()
            events.append(ev)
    finally:
        c.close()
    return events


def changes(events):
    return [e for e in events if e["type"] != "heartbeat"]


@pytest.fixture(scope="module")
def workdir():
    d = tempfile.mkdtemp(prefix="authz-it-id.")
    yield d
    # AUTHZ_TEST_KEEP=1 keeps the logs and configurations for a post-mortem.
    if os.environ.get("AUTHZ_TEST_KEEP") != "1":
        subprocess.run(["rm", "-rf", d])


@pytest.fixture(scope="module")
def keys(workdir):
    return Keys(workdir)


@pytest.fixture(scope="module")
def identity(cluster, workdir, keys):
    svc = Identity(cluster, workdir, keys, "api")
    svc.create_storage()
    svc.start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def admin(identity, keys):
    return Client(identity.url, keys.token())
