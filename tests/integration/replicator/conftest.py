"""Fixtures for the authz-replicator integration tests.

The session cluster (real PostgreSQL, real Kafka) comes from the identity
suite's conftest. Each module gets three regions, us, eu and ap, each an
authz-identity (fresh database and topic), an authz-server reading that
topic (fresh database) and an authz-replicator following the other two
regions' authz-servers. The regions' databases all live in the cluster's
PostgreSQL: one server is enough to keep them apart, and cheaper on a
small machine than one per region.
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
    "authz_conftest_rp", os.path.join(os.path.dirname(__file__), "..", "authz", "conftest.py"))
_az = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_az)
_id = _az._id

cluster = _az.cluster
workdir = _az.workdir
keys = _az.keys
wait_until = _az.wait_until
free_port = _az.free_port
Client = _az.Client
Authz = _az.Authz
Identity = _id.Identity
BIN = _az.BIN
REPO = _az.REPO

REGIONS = ("us", "eu", "ap")


class Replicator:
    """One authz-replicator process for `region`, following `peers`
    (region name -> base URL)."""

    def __init__(self, folder, region, pg_url, peers, regions=",".join(REGIONS), extra=None):
        self.region = region
        self.pg_url = pg_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = os.path.join(folder, f"replicator-{region}-{uuid.uuid4().hex[:6]}.log")
        self.conf = os.path.join(folder, f"replicator-{region}-{uuid.uuid4().hex[:6]}.json")
        cfg = {
            "service": {"region": region, "regions": regions},
            "http": {"port": self.port},
            "pg": {"url": pg_url, "migrations_dir": os.path.join(REPO, "sql", "authz")},
            "peers": dict(peers),
            "replication": {"wait_ms": 5000, "limit": 1000, "backoff_max_ms": 1000},
            "log": {"level": "info"},
        }
        for section, values in (extra or {}).items():
            cfg.setdefault(section, {}).update(values)
        with open(self.conf, "w") as f:
            json.dump(cfg, f)
        self.proc = None

    def start(self, ready=True):
        logf = open(self.log, "a")
        self.proc = subprocess.Popen([os.path.join(BIN, "authz-replicator"), "--config",
                                      self.conf], stdout=logf, stderr=logf,
                                     stdin=subprocess.DEVNULL)
        logf.close()
        probe = "/readyz" if ready else "/healthz"

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"authz-replicator exited: {open(self.log).read()[-3000:]}")
            try:
                return requests.get(self.url + probe, timeout=1).status_code == 200
            except requests.RequestException:
                return False
        wait_until(up, 60, f"authz-replicator {self.region} answering {probe}")
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self):
        """SIGTERM; the process must exit 0 (a sanitizer report fails it)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            assert self.proc.returncode == 0, open(self.log).read()[-3000:]

    def status(self):
        r = requests.get(self.url + "/v1/status", timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def metric(self, name, **labels):
        """Sum of the series of `name` whose labels include `labels`."""
        text = requests.get(self.url + "/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$", line)
            if not m or m.group(1) != name:
                continue
            got = dict(re.findall(r'([a-zA-Z_]+)="([^"]*)"', m.group(2) or ""))
            if all(got.get(k) == v for k, v in labels.items()):
                total += float(m.group(3))
        return total


class Region:
    """identity + authz-server + (later) replicator of one region."""

    def __init__(self, cluster, folder, keys, name, authz_extra=None):
        self.name = name
        self.identity = Identity(cluster, folder, keys, f"id-{name}",
                                 extra={"service": {"region": name}})
        self.identity.create_storage()
        extra = {"service": {"region": name}}
        for section, values in (authz_extra or {}).items():
            extra.setdefault(section, {}).update(values)
        self.authz = Authz(cluster, folder, self.identity.topic, name, extra=extra)
        self.admin = Client(self.identity.url, keys.token())
        self.replicator = None

    def sql(self, query):
        return self.authz.sql(query)


def rows(region, origin=None):
    """(kind, key, hlc, origin, origin_seq, deleted) of every replicated
    row of the region's authz store (of `origin` only, when given)."""
    where = "" if origin is None else f" WHERE origin = '{origin}'"
    out = region.sql(
        "SELECT 'user', user_id::text, hlc, origin, origin_seq, deleted FROM authz.users" + where +
        " UNION ALL SELECT 'membership', team_id || '/' || user_id, hlc, origin, origin_seq,"
        " deleted FROM authz.memberships" + where +
        " UNION ALL SELECT 'policy', assignment_id::text, hlc, origin, origin_seq, deleted"
        " FROM authz.policies" + where + " ORDER BY 1, 2")
    return [tuple(line.split("|")) for line in out.splitlines() if line]


def live_rows(region):
    """The live rows with their whole payload, comparable across regions."""
    out = region.sql(
        "SELECT 'user|' || to_jsonb(t)::text FROM authz.users t WHERE NOT deleted"
        " UNION ALL SELECT 'membership|' || to_jsonb(t)::text FROM authz.memberships t"
        "  WHERE NOT deleted"
        " UNION ALL SELECT 'policy|' || to_jsonb(t)::text FROM authz.policies t"
        "  WHERE NOT deleted ORDER BY 1")
    return sorted(out.splitlines())


def start_replicator(folder, region, regions, names=REGIONS, extra=None):
    peers = {p.name: p.authz.url for p in regions if p.name != region.name and p.name in names}
    region.replicator = Replicator(folder, region.name, region.authz.pg_url, peers,
                                   extra=extra).start()
    return region.replicator


@pytest.fixture(scope="module")
def authz_extra():
    """Extra authz-server settings of every region (a module may override).
    Tombstone collection is off: the tests compare tombstones row by row,
    and a region collecting them once all peers have passed them would
    make that comparison race with it."""
    return {"feed": {"collect_tombstones": False}}


@pytest.fixture(scope="module")
def replicator_extra():
    """Extra authz-replicator settings of every region (a module may
    override)."""
    return None


@pytest.fixture(scope="module")
def regions(cluster, workdir, keys, authz_extra, replicator_extra):
    made = []
    try:
        for name in REGIONS:
            made.append(Region(cluster, workdir, keys, name, authz_extra))
        for r in made:
            r.identity.start()
            r.authz.start()
        for r in made:
            start_replicator(workdir, r, made, extra=replicator_extra)
        yield {r.name: r for r in made}
    finally:
        for r in made:
            if r.replicator is not None:
                r.replicator.stop()
            r.authz.stop()
            r.identity.stop()
