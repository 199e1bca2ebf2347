"""Fixtures for the authz-server integration tests.

The session cluster (real PostgreSQL, real Kafka), the identity service
fixtures and the admin client come from the identity suite's conftest.
Each module gets its own identity service (fresh database and topic) and
its own authz-server(s), each with a fresh database, reading that topic.
"""
import importlib.util
import json
import os
import re
import subprocess
import uuid

import pytest
import requests

_spec = importlib.util.spec_from_file_location(
    "identity_conftest", os.path.join(os.path.dirname(__file__), "..", "identity", "conftest.py"))
_id = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_id)

# Fixtures and helpers shared with the identity suite.
cluster = _id.cluster
workdir = _id.workdir
keys = _id.keys
identity = _id.identity
admin = _id.admin
wait_until = _id.wait_until
free_port = _id.free_port
Client = _id.Client
BIN = _id.BIN
REPO = _id.REPO


class Authz:
    """One authz-server process with its own database."""

    def __init__(self, cluster, folder, topic, name, extra=None):
        self.cluster = cluster
        self.db = f"az_{name}_{uuid.uuid4().hex[:8]}"
        base_pg = cluster["PG_URL_US"].rsplit("/", 1)[0]
        self.pg_url = f"{base_pg}/{self.db}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = os.path.join(folder, f"authz-{name}.log")
        self.conf = os.path.join(folder, f"authz-{name}.json")
        cfg = {
            "service": {"region": "us", "regions": "us,eu,ap"},
            "http": {"port": self.port, "workers": 2},
            "pg": {"url": self.pg_url, "migrations_dir": os.path.join(REPO, "sql", "authz")},
            "kafka": {"bootstrap": cluster["KAFKA_BOOTSTRAP"], "topic": topic},
        }
        for section, values in (extra or {}).items():
            cfg.setdefault(section, {}).update(values)
        with open(self.conf, "w") as f:
            json.dump(cfg, f)
        subprocess.run(["psql", "-X", "-q", cluster["PG_URL_US"], "-c",
                        f'CREATE DATABASE "{self.db}"'], check=True, capture_output=True)
        self.proc = None
        self.s = requests.Session()

    def start(self):
        logf = open(self.log, "a")
        self.proc = subprocess.Popen([os.path.join(BIN, "authz-server"), "--config", self.conf],
                                     stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
        logf.close()

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"authz-server exited: {open(self.log).read()[-3000:]}")
            try:
                return requests.get(self.url + "/readyz", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        wait_until(ready, 60, "authz-server ready")
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            assert self.proc.returncode == 0, open(self.log).read()[-3000:]

    def get(self, path, **kw):
        return self.s.get(self.url + path, timeout=90, **kw)

    def check(self, subject, action, resource, region=None, revision=None):
        body = {"subject": subject, "action": action, "resource": resource}
        if region:
            body["region"] = region
        h = {"Authz-Revision": revision} if revision else {}
        r = self.s.post(self.url + "/v1/check", json=body, headers=h, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def status(self):
        r = self.get("/v1/status")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_applied(self, revision, timeout=120):
        """Polls until this server has applied `revision` ("v1.us.<hex>")."""
        m = re.fullmatch(r"v1\.([a-z][a-z0-9-]*)\.([0-9a-f]{16})", revision)
        assert m, revision
        origin, hlc = m.group(1), int(m.group(2), 16)

        def applied():
            o = self.status()["origins"].get(origin)
            return o is not None and o["applied_hlc"] >= hlc
        wait_until(applied, timeout, f"authz-server applying {revision}")

    def snapshot(self):
        r = self.get("/v1/policy/snapshot")
        assert r.status_code == 200, r.text
        return r.json()

    def sql(self, query):
        return subprocess.run(["psql", "-X", "-tA", self.pg_url, "-c", query], check=True,
                              capture_output=True, text=True).stdout.strip()


def policy_set(snap):
    """The rows of a snapshot, comparable across servers."""
    return {k: sorted(json.dumps(r, sort_keys=True) for r in snap[k])
            for k in ("users", "memberships", "policies")}


@pytest.fixture(scope="module")
def authz(cluster, workdir, identity):
    svc = Authz(cluster, workdir, identity.topic, "main").start()
    yield svc
    svc.stop()
