"""authzctl against a local cluster of its own (tools/local-cluster: three
regions with identity, authz-server, replicators, and gateways when
authz-filterd and nginx are there): every identity resource through the
CLI, check, status, wait, call with the retrying client (a transient 403
retried until the grant arrives, a final 403 not retried, a POST replayed
with its Idempotency-Key), and the documented exit codes and messages for
bad flags, unreachable endpoints, bad tokens and timeouts. The endpoints
come from the run folder's env file (AUTHZ_RUN_DIR), as after
`eval "$(tools/local-cluster env)"` without export.
"""
import json
import os
import subprocess
import tempfile
import time
import uuid

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BIN = os.environ.get("AUTHZ_BIN_DIR", os.path.join(REPO, "build", "bin"))
CLUSTER = os.path.join(REPO, "tools", "local-cluster")
AUTHZCTL = os.path.join(BIN, "authzctl")
REGIONS = ["us", "eu", "ap"]


def dev_token(*args, env=None):
    return subprocess.run([os.path.join(REPO, "tools", "dev-token"), *args, "--ttl", "7200"],
                          check=True, env=env, capture_output=True, text=True).stdout.strip()


class Run:
    def __init__(self, run, env):
        self.run = run
        self.env = env
        out = subprocess.run([CLUSTER, "env", "--run-dir", run], env=env, check=True,
                             capture_output=True, text=True).stdout
        vals = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        self.vals = {k: v.strip("'") for k, v in vals.items()}
        self.admin = dev_token("--sub", "admin", "--admin", env=env)

    def ctl(self, *args, token=True, env=None, timeout=120):
        e = dict(self.env, AUTHZ_RUN_DIR=self.run)
        if token:
            e["AUTHZ_TOKEN"] = self.admin
        e.update(env or {})
        return subprocess.run([AUTHZCTL, *args], env=e, capture_output=True, text=True,
                              timeout=timeout)

    def ok(self, *args, **kw):
        r = self.ctl(*args, **kw)
        assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
        return r

    def j(self, *args, **kw):
        return json.loads(self.ok("--json", *args, **kw).stdout)


@pytest.fixture(scope="module")
def lc():
    assert os.access(AUTHZCTL, os.X_OK), f"{AUTHZCTL} is not built"
    run = tempfile.mkdtemp(prefix="authz-it-authzctl.")
    env = dict(os.environ, AUTHZ_BIN_DIR=BIN)
    for k in ("AUTHZ_RUN_DIR", "AUTHZ_BASE_PORT", "AUTHZ_TOKEN", "AUTHZ_ADMIN_TOKEN",
              "AUTHZ_REGIONS", "AUTHZ_REGION"):
        env.pop(k, None)
    down = [CLUSTER, "down", "--run-dir", run]   # the folder is removed after it
    up = [CLUSTER, "up", "--regions", ",".join(REGIONS), "--run-dir", run, "--base-port", "auto"]
    # The gateways only carry the client's requests here: auth_request to
    # authz-filterd, so that this path of nginx meets real clients too
    # (it_gateway's go through the module).
    up += ["--gateway", "auth_request"]
    try:
        subprocess.run(up, check=True, env=env, stdout=subprocess.DEVNULL)
        c = Run(run, env)
    except BaseException:
        subprocess.run(down, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", run])
        raise
    yield c
    subprocess.run(down, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["rm", "-rf", run])


def fresh(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def grant(lc, subject, permission, region, resource):
    """A user in a team whose role grants `permission`; the last revision."""
    team = lc.j("teams", "create", "--name", fresh("team"))
    role = lc.j("roles", "create", "--name", fresh("role"), "--permission", permission)
    user = lc.j("users", "create", "--subject", subject, "--email", f"{subject}@example.com",
                "--name", subject)
    lc.j("assignments", "create", "--team", team["id"], "--role", role["id"], "--in", region,
         "--resource", resource)
    m = lc.j("members", "add", team["id"], user["id"])
    assert m["added"] is True
    return team, role, user, m["revision"]


def test_admin_flow_wait_and_check(lc):
    s = fresh("alice")
    team, role, user, rev = grant(lc, s, "doc:read", "eu", "doc/*")
    w = lc.j("wait", "--revision", rev, "--timeout", "30")
    assert w["timed_out"] is False
    assert set(w["regions"]) == set(REGIONS)
    assert all(v["applied"] and v["waited_ms"] >= 0 for v in w["regions"].values()), w
    # Plain lines when stdout is not a terminal, then the table.
    r = lc.ok("wait", "--revision", rev)
    assert "REGION" in r.stdout and "WAITED_MS" in r.stdout
    assert all(f"{x}: applied after" in r.stdout for x in REGIONS), r.stdout
    d = lc.j("check", "--region", "eu", "--sub", s, "--action", "doc:read", "--resource", "doc/1")
    assert d["allowed"] is True and d["decision"] == "allow"
    r = lc.ctl("check", "--region", "us", "--sub", s, "--action", "doc:read",
               "--resource", "doc/1")
    assert r.returncode == 1 and r.stdout.startswith("deny"), (r.stdout, r.stderr)
    # Human tables name what was made.
    assert team["name"] in lc.ok("teams", "list", "--all").stdout
    assert "doc:read" in lc.ok("roles", "show", role["id"]).stdout
    members = lc.ok("members", "list", team["id"]).stdout
    assert s in members and members.splitlines()[0].split() == ["USER", "SUBJECT", "ADDED"]
    a = lc.j("assignments", "list", "--team", team["id"])
    assert [x["resource"] for x in a["items"]] == ["doc/*"]
    # Adding again is idempotent and says so.
    assert "already a member" in lc.ok("members", "add", team["id"], user["id"]).stdout


def test_update_delete_and_if_match(lc):
    t = lc.j("teams", "create", "--name", fresh("t"), "--description", "first")
    u = lc.j("teams", "update", t["id"], "--description", "second", "--if-match", "1")
    assert u["description"] == "second" and u["version"] == 2 and u["revision"].startswith("v1.us.")
    r = lc.ctl("teams", "update", t["id"], "--name", fresh("t"), "--if-match", "1")
    assert r.returncode == 1 and "412" in r.stderr, r.stderr
    r = lc.ctl("teams", "update", t["id"])
    assert r.returncode == 2 and "nothing to change" in r.stderr
    assert lc.j("teams", "delete", t["id"])["deleted"] is True
    r = lc.ctl("teams", "show", t["id"])
    assert r.returncode == 1 and "404" in r.stderr, r.stderr
    role = lc.j("roles", "create", "--name", fresh("r"), "--permission", "a:b,c:*")
    assert role["permissions"] == ["a:b", "c:*"]
    role = lc.j("roles", "update", role["id"], "--permission", "x:y")
    assert role["permissions"] == ["x:y"]
    assert lc.j("roles", "delete", role["id"])["deleted"] is True
    user = lc.j("users", "create", "--subject", fresh("u"), "--email", "u@example.com",
                "--name", "U")
    assert lc.j("users", "update", user["id"], "--name", "V")["name"] == "V"
    assert lc.j("users", "delete", user["id"])["deleted"] is True


def test_list_pages(lc):
    for _ in range(3):
        lc.j("teams", "create", "--name", fresh("page"))
    page = lc.j("teams", "list", "--limit", "2")
    assert len(page["items"]) == 2 and page["next_cursor"]
    r = lc.ok("teams", "list", "--limit", "2")
    assert "--cursor" in r.stderr
    nxt = lc.j("teams", "list", "--limit", "2", "--cursor", page["next_cursor"])
    assert {x["id"] for x in nxt["items"]}.isdisjoint({x["id"] for x in page["items"]})
    every = lc.j("teams", "list", "--limit", "2", "--all")
    assert len(every["items"]) >= 3 and every["next_cursor"] is None


def test_status(lc):
    st = lc.j("status")["regions"]
    assert set(st) == set(REGIONS)
    for r in REGIONS:
        assert st[r]["authz"]["region"] == r
        assert set(st[r]["authz"]["origins"]) == set(REGIONS)
        if "REPLICATOR_URL_" + r.upper() in lc.vals:
            assert set(st[r]["replicator"]["peers"]) == set(REGIONS) - {r}
    out = lc.ok("status").stdout
    assert "APPLIED_SEQ" in out and "STALENESS_MS" in out and "CONSUMER" in out
    one = lc.j("status", "--regions", "eu")["regions"]
    assert list(one) == ["eu"]


def test_exit_codes_and_messages(lc):
    r = lc.ctl("teams", "list", "--bogus")
    assert r.returncode == 2 and "unknown flag --bogus" in r.stderr
    r = lc.ctl("frobnicate")
    assert r.returncode == 2 and "unknown command" in r.stderr
    r = lc.ctl("users", "show", "not-an-id")
    assert r.returncode == 2 and "not a user id" in r.stderr
    r = lc.ctl("teams", "list", "--identity-url", "http://127.0.0.1:1", "--attempts", "2")
    assert r.returncode == 1 and "cannot reach the identity service" in r.stderr \
        and "connection refused" in r.stderr, r.stderr
    r = lc.ctl("teams", "list", "--token", "not-a-jwt")
    assert r.returncode == 1 and "refused the token (401" in r.stderr, r.stderr
    r = lc.ctl("teams", "list", token=False)
    assert r.returncode == 1 and "no token given" in r.stderr, r.stderr
    r = lc.ctl("teams", "list", "--token", dev_token("--sub", "nobody", env=lc.env))
    assert r.returncode == 1 and "403" in r.stderr, r.stderr
    # A revision no region will apply within the timeout: exit 3.
    ahead = "v1.us.%016x" % (((int(time.time() * 1000) + 3_600_000) << 16))
    t0 = time.monotonic()
    r = lc.ctl("wait", "--revision", ahead, "--timeout", "0.5")
    assert r.returncode == 3 and "timed out after 500 ms" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 5
    r = lc.ctl("wait", "--revision", "nonsense")
    assert r.returncode == 2
    r = lc.ctl("status", "--regions", "us", env={"AUTHZ_URL_US": "http://127.0.0.1:1"},
               timeout=60)
    assert r.returncode == 1 and "unreachable" in r.stdout, (r.stdout, r.stderr)
    r = lc.ctl("teams", "list", "--region", "mars")
    assert r.returncode == 2 and "IDENTITY_URL_MARS" in r.stderr


def test_help_for_every_command(lc):
    top = lc.ok("--help", token=False).stdout
    commands = [line.strip().split("  ")[0] for line in
                top.split("commands:\n")[1].split("\n\n")[0].splitlines()]
    assert "users create" in commands and "wait" in commands and len(commands) > 20
    for c in commands:
        r = lc.ctl(*c.split(), "--help", token=False)
        assert r.returncode == 0 and r.stdout.startswith(f"usage: authzctl {c}"), (c, r.stdout)


def test_call_idempotent_post_replayed(lc):
    url = lc.vals["IDENTITY_URL_US"] + "/v1/teams"
    body = json.dumps({"name": fresh("idem")})
    key = fresh("key")
    a = lc.j("call", "POST", url, "--data", body, "--idempotency-key", key,
             "--header", f"Authorization: Bearer {lc.admin}", token=False)
    b = lc.j("call", "POST", url, "--data", body, "--idempotency-key", key,
             "--header", f"Authorization: Bearer {lc.admin}", token=False)
    assert a["status"] == 201 and b["status"] == 201
    assert a["body"]["id"] == b["body"]["id"]
    assert b["headers"].get("Idempotent-Replayed") == "true"
    assert a["idempotency_key"] == key
    r = lc.ctl("call", "POST", url, "--data", "{not json")
    assert r.returncode == 2 and "--data is not JSON" in r.stderr


def test_call_through_gateways(lc):
    assert "GATEWAY_URL_EU" in lc.vals, "local-cluster runs no gateway (authz-filterd or nginx missing)"
    s = fresh("gw")
    _, _, _, rev = grant(lc, s, "runtime_groups:read", "eu", "runtime_groups/*")
    tok = dev_token("--sub", s, "--aud", "authz-gateway", env=lc.env)
    auth = f"Authorization: Bearer {tok}"
    # Within the revision: allowed in eu once it is applied, the filter
    # waiting for it if need be.
    r = lc.j("call", "GET", lc.vals["GATEWAY_URL_EU"] + "/runtime-groups/7", "--revision", rev,
             "--header", auth, "--budget", "20", token=False)
    assert r["status"] == 200, r
    # eu-only: a final 403 in us, not retried.
    r = lc.ctl("--json", "call", "GET", lc.vals["GATEWAY_URL_US"] + "/runtime-groups/7",
               "--header", auth, token=False)
    res = json.loads(r.stdout)
    assert r.returncode == 1 and res["status"] == 403 and res["attempts"] == 1, res
    assert res["headers"]["Authz-Decision"] == "final" and res["stop"] == "final 403"


def test_call_retries_transient_403_until_the_grant_arrives(lc):
    assert "GATEWAY_URL_EU" in lc.vals and "PROXY_CONTROL_US_EU" in lc.vals, \
        "local-cluster runs no gateway or no proxies"
    s = fresh("late")
    tok = dev_token("--sub", s, "--aud", "authz-gateway", env=lc.env)
    lk = lambda *a: subprocess.run([CLUSTER, "link", *a, "--run-dir", lc.run], env=lc.env,
                                   check=True, capture_output=True)
    # Beyond the filter's hold (2 s): its first answer is a transient 403.
    for a, b in (("us", "eu"), ("us", "ap"), ("eu", "ap")):
        lk("delay", a, b, "3000")
    try:
        _, _, _, rev = grant(lc, s, "runtime_groups:read", "eu", "runtime_groups/*")
        r = lc.j("call", "GET", lc.vals["GATEWAY_URL_EU"] + "/runtime-groups/8", "--revision",
                 rev, "--header", f"Authorization: Bearer {tok}", "--budget", "30",
                 "--attempts", "10", token=False, timeout=60)
    finally:
        for a, b in (("us", "eu"), ("us", "ap"), ("eu", "ap")):
            lk("delay", a, b, "0")
    assert r["status"] == 200, r
    assert r["attempts"] >= 2 and r["retries"], r
    first = r["retries"][0]
    assert first["status"] == 403 and "403 transient" in first["reason"], first
    assert first["delay_ms"] >= 1000, first   # the filter's Retry-After, in seconds
