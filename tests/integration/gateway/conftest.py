"""Shared parts of the gateway suite: one three-region local cluster for
the whole session (tests/integration/gateway/*.py), its regions' clients,
and the authz suite's helpers (paths, the admin client, wait_until),
loaded without its session fixtures."""
import importlib.util
import os
import re
import subprocess
import tempfile
import uuid

import pytest
import requests

_spec = importlib.util.spec_from_file_location(
    "authz_conftest_gw", os.path.join(os.path.dirname(__file__), "..", "authz", "conftest.py"))
_az = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_az)

BIN = _az.BIN
REPO = _az.REPO
Client = _az.Client
wait_until = _az.wait_until

REGIONS = ("us", "eu", "ap")
CLUSTER = os.path.join(REPO, "tools", "local-cluster")
DELAY_MS = 40
STALENESS_MS = 6000
rc = _az  # the names below were written against the suite's helpers


def ok(r, *codes):
    assert r.status_code in codes, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r


class Region:
    def __init__(self, name, env, admin_token):
        up = name.upper()
        self.name = name
        self.identity_url = env[f"IDENTITY_URL_{up}"]
        self.authz_url = env[f"AUTHZ_URL_{up}"]
        self.gateway_url = env[f"GATEWAY_URL_{up}"]
        self.filter_url = env[f"FILTER_URL_{up}"]
        self.kind = env.get(f"GATEWAY_KIND_{up}", "auth_request")
        self.admin = rc.Client(self.identity_url, admin_token)
        self.s = requests.Session()
        self.role = None

    def runtime_role(self):
        """This region's role granting runtime_groups:read (made once)."""
        if self.role is None:
            self.role = ok(self.admin.post("/v1/roles", {
                "name": f"rg-read-{uuid.uuid4().hex[:8]}",
                "permissions": ["runtime_groups:read"]}), 201).json()["id"]
        return self.role

    def user(self, subject):
        return ok(self.admin.post("/v1/users", {"subject": subject, "email": f"{subject}@x.io",
                                                "name": subject}), 201).json()["id"]

    def assign(self, user_id, resource):
        """Returns (assignment id, revision)."""
        r = ok(self.admin.post("/v1/role-assignments", {
            "principal": {"type": "user", "id": user_id}, "role_id": self.runtime_role(),
            "region": "*", "resource": resource}), 201)
        return r.json()["id"], r.headers["Authz-Revision"]

    def revoke(self, aid):
        return ok(self.admin.delete(f"/v1/role-assignments/{aid}"), 200, 204) \
            .headers["Authz-Revision"]

    def get(self, path, token=None, revision=None, timeout=15):
        h = {}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        if revision is not None:
            h["Authz-Revision"] = revision
        return self.s.get(self.gateway_url + path, headers=h, timeout=timeout)

    def metrics(self):
        """authz-filterd's /metrics."""
        return requests.get(self.filter_url + "/metrics", timeout=5).text

    def status(self):
        """The nginx module's view (authz_filter_status of the worker that
        answers: local-cluster runs one), or None with auth_request."""
        if self.kind != "module":
            return None
        r = requests.get(self.gateway_url + "/_authz/status", timeout=5)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()["filters"][0]


def metric(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pat = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)"
    m = re.search(r"^" + pat + r"$", text, re.M)
    return None if m is None else float(m.group(1))


def token(subject, env):
    return subprocess.run([os.path.join(REPO, "tools", "dev-token"), "--sub", subject,
                           "--aud", "authz-gateway", "--ttl", "7200"], check=True, env=env,
                          capture_output=True, text=True).stdout.strip()


class Cluster:
    def __init__(self, run, env):
        self.run = run
        self.env = env
        out = self.lc("env").stdout
        vals = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        vals = {k: v.strip("'\"") for k, v in vals.items()}
        for r in REGIONS:
            assert f"GATEWAY_URL_{r.upper()}" in vals, \
                f"local-cluster runs no gateway (are authz-filterd and nginx there?): {out}"
        admin = subprocess.run([os.path.join(REPO, "tools", "dev-token"), "--sub", "admin",
                                "--admin", "--ttl", "7200"], check=True, env=env,
                               capture_output=True, text=True).stdout.strip()
        self.regions = {r: Region(r, vals, admin) for r in REGIONS}

    def lc(self, *args, check=True):
        return subprocess.run([CLUSTER, *args, "--run-dir", self.run], env=self.env,
                              capture_output=True, text=True, check=check)

    def delay_all(self, ms):
        for a, b in (("us", "eu"), ("us", "ap"), ("eu", "ap")):
            self.lc("link", "delay", a, b, str(ms))

    def pid(self, name):
        with open(os.path.join(self.run, "pids", f"{name}.pid")) as f:
            return int(f.read().strip())


@pytest.fixture(scope="session")
def lc():
    run = tempfile.mkdtemp(prefix="authz-it-gateway.")
    env = dict(os.environ, AUTHZ_BIN_DIR=BIN)
    env.pop("AUTHZ_RUN_DIR", None)
    env.pop("AUTHZ_BASE_PORT", None)
    # The filters' staleness bound, short enough to be crossed in a test
    # (only authz-filterd has a "policy" section).
    env["AUTHZ_POLICY_MAX_STALENESS_MS"] = str(STALENESS_MS)
    down = [CLUSTER, "down", "--run-dir", run, "--purge"]
    try:
        subprocess.run([CLUSTER, "up", "--regions", ",".join(REGIONS), "--run-dir", run,
                        "--base-port", "auto", "--delay-ms", str(DELAY_MS)], check=True,
                       env=env, stdout=subprocess.DEVNULL)
        c = Cluster(run, env)
    except BaseException:
        subprocess.run(down, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", run])
        raise
    yield c
    if os.environ.get("AUTHZ_KEEP_RUN"):
        print(f"\nrun folder kept: {run}")
        return
    subprocess.run(down, env=env, stdout=subprocess.DEVNULL)
    reports = []
    logs = os.path.join(run, "logs")
    for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
        with open(os.path.join(logs, name), errors="replace") as f:
            text = f.read()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in text:
                i = text.index(marker)
                reports.append(f"{name}: {text[max(0, i - 200):i + 1500]}")
    subprocess.run(["rm", "-rf", run])
    assert not reports, "\n".join(reports)


def fresh(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


