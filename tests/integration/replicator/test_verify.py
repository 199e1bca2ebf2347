"""`authz-replicator verify` (replicator/verify.c) against real PostgreSQL.

Each test makes three fresh authz stores (databases with the authz
migrations) in the session cluster's PostgreSQL, fills them by SQL with
rows of three origins, and runs verify over them: authz-replicator when it
is built (unless RP_VERIFY_DRIVER=1), the rp-verify-driver test binary
otherwise. Both take the same configuration and exit with the same codes:
0 all agree, 1 some differ, 2 bad configuration, 3 a region unreachable.
"""
import importlib.util
import json
import os
import subprocess
import time
import uuid

import pytest

_spec = importlib.util.spec_from_file_location(
    "identity_conftest", os.path.join(os.path.dirname(__file__), "..", "identity", "conftest.py"))
_id = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_id)

# The session cluster: from this folder's conftest when there is one (one
# cluster for the whole session), else straight from the identity suite's.
if not os.path.exists(os.path.join(os.path.dirname(__file__), "conftest.py")):
    cluster = _id.cluster
    workdir = _id.workdir
free_port = _id.free_port
BIN = _id.BIN
REPO = _id.REPO

REGIONS = ("us", "eu", "ap")
MIGRATIONS = os.path.join(REPO, "sql", "authz")


def verify_cmd():
    rep = os.path.join(BIN, "authz-replicator")
    if os.path.exists(rep) and os.environ.get("RP_VERIFY_DRIVER") != "1":
        return [rep, "verify"]
    return [os.path.join(BIN, "rp-verify-driver"), "verify"]


def uid(*parts):
    """A fixed uuid per name, so the regions' rows share keys."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(str(p) for p in parts)))


class Store:
    """One region's authz store: a fresh database with the migrations."""

    def __init__(self, cluster, region):
        self.region = region
        self.db = f"vf_{region}_{uuid.uuid4().hex[:8]}"
        self.admin_url = cluster["PG_URL_US"]
        self.url = f"{cluster['PG_URL_US'].rsplit('/', 1)[0]}/{self.db}"
        self.psql(self.admin_url, f'CREATE DATABASE "{self.db}"')
        for name in sorted(os.listdir(MIGRATIONS)):
            if name.endswith(".sql"):
                subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", self.url, "-f",
                                os.path.join(MIGRATIONS, name)], check=True, capture_output=True)

    @staticmethod
    def psql(url, sql):
        return subprocess.run(["psql", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                              check=True, capture_output=True, text=True).stdout.strip()

    def sql(self, sql):
        # Without the feed triggers: these rows are test fixtures, not changes.
        return self.psql(self.url, "SET session_replication_role = replica; " + sql)

    def drop(self):
        self.psql(self.admin_url, f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')


def user_sql(user, subject, hlc, origin, seq, deleted=False):
    return ("INSERT INTO authz.users (user_id, subject, hlc, origin, origin_seq, deleted) VALUES "
            f"('{user}', '{subject}', {hlc}, '{origin}', {seq}, {str(deleted).lower()});")


def membership_sql(team, user, hlc, origin, seq, deleted=False):
    return ("INSERT INTO authz.memberships (team_id, user_id, hlc, origin, origin_seq, deleted) "
            f"VALUES ('{team}', '{user}', {hlc}, '{origin}', {seq}, {str(deleted).lower()});")


def policy_sql(aid, hlc, origin, seq, deleted=False, resource="doc/1", perms="{doc.read}"):
    return ("INSERT INTO authz.policies (assignment_id, principal_type, principal_id, role_id, "
            "region, resource, permissions, hlc, origin, origin_seq, deleted) VALUES "
            f"('{aid}', 'user', '{uid('p', aid)}', '{uid('role', 1)}', '*', '{resource}', "
            f"'{perms}', {hlc}, '{origin}', {seq}, {str(deleted).lower()});")


def base_rows():
    """Rows of the three origins, each below hlc 1000, one tombstone each."""
    out = []
    for o in REGIONS:
        for i in range(5):
            out.append(user_sql(uid("u", o, i), f"{o}-user-{i}", 100 + i, o, 1 + i))
            out.append(membership_sql(uid("t", o), uid("u", o, i), 200 + i, o, 10 + i))
            out.append(policy_sql(uid("a", o, i), 300 + i, o, 20 + i))
        out.append(policy_sql(uid("a", o, "gone"), 400, o, 30, deleted=True))
    return out


def watermarks_sql(applied):
    """applied: origin -> applied_hlc."""
    return "".join(
        "INSERT INTO authz.watermarks (origin, applied_hlc, known_hlc) VALUES "
        f"('{o}', {h}, {h}) ON CONFLICT (origin) DO UPDATE SET applied_hlc = {h}, known_hlc = {h};"
        for o, h in applied.items())


@pytest.fixture
def stores(cluster):
    made = {r: Store(cluster, r) for r in REGIONS}
    yield made
    for s in made.values():
        s.drop()


def fill(stores, rows=None, applied=1000):
    rows = base_rows() if rows is None else rows
    for s in stores.values():
        s.sql("".join(rows) + watermarks_sql({o: applied for o in REGIONS}))


def write_config(workdir, stores, region="us", verify=None, drop=()):
    cfg = {
        "service": {"region": region, "regions": ",".join(REGIONS)},
        "http": {"addr": "127.0.0.1", "port": free_port()},
        "pg": {"url": stores[region].url, "migrations_dir": MIGRATIONS},
        "peers": {r: "http://127.0.0.1:9" for r in REGIONS if r != region},
        "replication": {"wait_ms": 1000, "limit": 100, "backoff_max_ms": 100},
        "log": {"level": "info"},
        "verify": {r: s.url for r, s in stores.items() if r != region},
    }
    cfg["verify"].update(verify or {})
    for section, key in drop:
        cfg[section].pop(key, None)
    path = os.path.join(workdir, f"verify-{uuid.uuid4().hex[:8]}.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


class Result:
    def __init__(self, proc):
        self.code = proc.returncode
        self.stderr = proc.stderr
        self.lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        self.pairs = {(ln["region"], ln["origin"]): ln for ln in self.lines if "digest" in ln}
        self.diffs = {ln["origin"]: ln for ln in self.lines if "differences" in ln}
        self.summary = self.lines[-1] if self.lines else None

    def diff_for(self, key):
        """The difference entry (and its origin line) whose key has uuid `key`."""
        for ln in self.diffs.values():
            for d in ln["differences"]:
                if key in d["key"].values():
                    return d
        return None


def run_verify(config, timeout=300):
    proc = subprocess.run(verify_cmd() + ["--config", config], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return Result(proc)


def test_equal_sets_agree(stores, workdir):
    fill(stores)
    r = run_verify(write_config(workdir, stores))
    assert r.code == 0, r.stderr + json.dumps(r.lines)
    assert set(r.pairs) == {(reg, o) for reg in REGIONS for o in REGIONS}
    for o in REGIONS:
        lines = [r.pairs[(reg, o)] for reg in REGIONS]
        assert all(ln["agrees"] for ln in lines)
        assert all(ln["watermark"] == 1000 for ln in lines)
        # 5 users, 5 memberships, 5 policies and a tombstone per origin.
        assert all(ln["rows"] == 16 for ln in lines)
        assert len({ln["digest"] for ln in lines}) == 1
    assert len({r.pairs[("us", o)]["digest"] for o in REGIONS}) == 3
    assert r.diffs == {}
    assert r.summary["summary"] is True and r.summary["agrees"] is True
    assert r.summary["differing_keys"] == 0


def test_each_kind_of_difference_is_named(stores, workdir):
    fill(stores)
    missing, older, tomb, extra = uid("a", "us", 1), uid("u", "eu", 2), uid("a", "ap", "gone"), \
        uid("a", "ap", "extra")
    # eu lacks a policy of us; ap holds an older version of a user of eu;
    # us lacks a tombstone of ap (nobody recorded the peers' watermarks, so
    # it cannot have been collected); eu holds a live row of ap nobody else has.
    stores["eu"].sql(f"DELETE FROM authz.policies WHERE assignment_id = '{missing}';")
    stores["ap"].sql(f"UPDATE authz.users SET hlc = 50, subject = 'stale' WHERE user_id = '{older}';")
    stores["us"].sql(f"DELETE FROM authz.policies WHERE assignment_id = '{tomb}';")
    stores["eu"].sql(policy_sql(extra, 500, "ap", 40))
    r = run_verify(write_config(workdir, stores))
    assert r.code == 1, r.stderr + json.dumps(r.lines)
    assert r.summary["agrees"] is False and r.summary["differing_keys"] == 4

    d = r.diff_for(missing)
    assert d and d["kind"] == "policy" and d["differing_regions"] == ["eu"]
    assert d["versions"]["eu"] is None and d["versions"]["us"]["hlc"] == 301
    d = r.diff_for(older)
    assert d and d["kind"] == "user" and d["differing_regions"] == ["ap"]
    assert d["versions"]["ap"]["hlc"] == 50 and d["versions"]["ap"]["subject"] == "stale"
    assert d["versions"]["eu"]["hlc"] == 102
    d = r.diff_for(tomb)
    assert d and d["differing_regions"] == ["us"] and d["versions"]["us"] is None
    assert d["versions"]["eu"]["deleted"] is True
    d = r.diff_for(extra)
    assert d and sorted(d["differing_regions"]) == ["ap", "us"]
    assert d["versions"]["eu"]["deleted"] is False and d["versions"]["us"] is None

    assert not r.pairs[("eu", "us")]["agrees"] and r.pairs[("us", "us")]["agrees"]
    assert not r.pairs[("ap", "eu")]["agrees"] and r.pairs[("eu", "eu")]["agrees"]
    assert not r.pairs[("us", "ap")]["agrees"] and not r.pairs[("ap", "ap")]["agrees"]
    assert r.pairs[("eu", "ap")]["agrees"]


def test_rows_above_the_common_watermark_are_ignored(stores, workdir):
    fill(stores)
    # ap has applied us only up to 302: us's later rows are not compared yet.
    stores["ap"].sql(watermarks_sql({"us": 302}))
    stores["ap"].sql(f"DELETE FROM authz.policies WHERE assignment_id = '{uid('a', 'us', 4)}';")
    # eu already holds a change of eu above the watermark the others have.
    stores["eu"].sql(watermarks_sql({"eu": 5000}) + policy_sql(uid("a", "eu", "new"), 4000, "eu", 50))
    # us already overwrote a row of eu with a newer one of its own (hlc 3000,
    # above its watermark), the others still hold the older one.
    stores["us"].sql(f"UPDATE authz.policies SET hlc = 3000, origin = 'us', deleted = true "
                     f"WHERE assignment_id = '{uid('a', 'eu', 0)}';")
    r = run_verify(write_config(workdir, stores))
    assert r.code == 0, r.stderr + json.dumps(r.lines)
    assert all(r.pairs[(reg, "us")]["watermark"] == 302 for reg in REGIONS)
    assert all(r.pairs[(reg, "eu")]["watermark"] == 1000 for reg in REGIONS)
    # At or below 302: us's users, memberships and three of its policies.
    assert {r.pairs[(reg, "us")]["rows"] for reg in REGIONS} == {13}
    # The row us moved on is left out of every region's digest of eu.
    assert {r.pairs[(reg, "eu")]["rows"] for reg in REGIONS} == {15}

    # The same rows at or below the watermark are a difference.
    stores["ap"].sql(watermarks_sql({"us": 1000}))
    r = run_verify(write_config(workdir, stores))
    assert r.code == 1
    assert r.diff_for(uid("a", "us", 4))["differing_regions"] == ["ap"]


def test_tombstone_collected_under_the_rule_is_not_a_difference(stores, workdir):
    fill(stores)
    tomb = uid("a", "us", "gone")
    stores["eu"].sql(f"DELETE FROM authz.policies WHERE assignment_id = '{tomb}';")
    cfg = write_config(workdir, stores)
    # eu has not seen every region pass the tombstone: it must still hold it.
    stores["eu"].sql("INSERT INTO authz.peer_watermarks (peer, origin, applied_hlc, known_hlc) "
                     "VALUES ('us', 'us', 1000, 1000), ('ap', 'us', 399, 399);")
    r = run_verify(cfg)
    assert r.code == 1 and r.diff_for(tomb)["differing_regions"] == ["eu"]
    # Once eu recorded every other region past hlc 400, it may have collected it.
    stores["eu"].sql("UPDATE authz.peer_watermarks SET applied_hlc = 400 WHERE peer = 'ap';")
    r = run_verify(cfg)
    assert r.code == 0, r.stderr + json.dumps(r.lines)
    assert all(ln["agrees"] for ln in r.pairs.values())


def test_unreachable_region_exits_3(stores, workdir):
    fill(stores)
    port = free_port()
    r = run_verify(write_config(workdir, stores, verify={
        "eu": f"postgresql://postgres@127.0.0.1:{port}/authz", "connect_timeout_ms": 500}))
    assert r.code == 3, r.stderr
    assert "eu" in r.stderr
    assert {"region": "eu", "reachable": False} == {k: r.lines[0][k] for k in ("region", "reachable")}
    assert r.summary["unreachable"] == ["eu"]
    # A server that answers but holds no authz store cannot be read either.
    bare = stores["ap"].admin_url.rsplit("/", 1)[0] + "/postgres"
    r = run_verify(write_config(workdir, stores, verify={"ap": bare}))
    assert r.code == 3 and "ap" in r.stderr and r.summary["unreachable"] == ["ap"]


@pytest.mark.parametrize("case", ["missing_url", "url_not_string", "no_regions", "not_json",
                                  "bad_timeout", "region_twice"])
def test_bad_config_exits_2(stores, workdir, case):
    if case == "missing_url":
        cfg = write_config(workdir, stores, drop=[("verify", "eu")])
    elif case == "url_not_string":
        cfg = write_config(workdir, stores, verify={"ap": 5})
    elif case == "no_regions":
        cfg = write_config(workdir, stores, drop=[("service", "regions")])
    elif case == "region_twice":
        cfg = write_config(workdir, stores)
        with open(cfg) as f:
            c = json.load(f)
        c["service"]["regions"] = "us,eu,ap,eu"
        with open(cfg, "w") as f:
            json.dump(c, f)
    elif case == "bad_timeout":
        cfg = write_config(workdir, stores, verify={"connect_timeout_ms": -1})
    else:
        cfg = os.path.join(workdir, "broken.json")
        with open(cfg, "w") as f:
            f.write('{"service": ')
    r = run_verify(cfg)
    assert r.code == 2, r.stderr
    assert r.stderr.strip(), "a bad configuration must say what is wrong"
    assert not any("digest" in ln for ln in r.lines)


def test_100k_rows_per_region(stores, workdir, capsys):
    n = 100000
    fill_sql = (
        "INSERT INTO authz.policies (assignment_id, principal_type, principal_id, role_id, region, "
        "resource, permissions, hlc, origin, origin_seq, deleted) "
        "SELECT md5('a' || i)::uuid, 'user', md5('p' || i)::uuid, md5('r' || (i % 50))::uuid, '*', "
        "'doc/' || i, ARRAY['doc.read', 'doc.write'], 1000 + i, "
        "(ARRAY['us', 'eu', 'ap'])[1 + i % 3], i, i % 97 = 0 FROM generate_series(1, " + str(n) +
        ") AS i;")
    for s in stores.values():
        s.sql(fill_sql + watermarks_sql({o: 1000 + n for o in REGIONS}))
    cfg = write_config(workdir, stores)
    t0 = time.monotonic()
    r = run_verify(cfg)
    took = time.monotonic() - t0
    assert r.code == 0, r.stderr + json.dumps(r.lines[-3:])
    assert sum(r.pairs[("us", o)]["rows"] for o in REGIONS) == n
    # One changed row among them is found and named.
    key = stores["ap"].sql("SELECT md5('a' || 77777)::uuid")
    stores["ap"].sql(f"UPDATE authz.policies SET resource = 'doc/x' WHERE assignment_id = '{key}';")
    t1 = time.monotonic()
    r2 = run_verify(cfg)
    took2 = time.monotonic() - t1
    assert r2.code == 1 and r2.summary["differing_keys"] == 1
    assert r2.diff_for(key)["differing_regions"] == ["ap"]
    with capsys.disabled():
        print(f"\nverify: {n} rows x {len(REGIONS)} regions: {took:.2f} s agreeing "
              f"({r.summary['elapsed_ms']} ms inside), {took2:.2f} s with one difference")
    assert took < 120
