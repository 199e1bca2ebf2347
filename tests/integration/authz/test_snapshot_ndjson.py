"""GET /v1/policy/snapshot?format=ndjson: the same answer as the JSON
format, framed one JSON object a line (head, one line per row, an end line
with the counts), for clients that load a very large set a row at a time.

Each answer is compared with the JSON format's at the same state; rows
come from the identity service (a user, a team with a member, a role
assignment), from SQL (more than a page of policies, and tombstones so
that tombstones=0 and tombstones=1 differ).
"""
import json

import requests

from conftest import policy_set
from test_replication_api import hlc, insert_policy, now_ms

KINDS = (("user", "users"), ("membership", "memberships"), ("policy", "policies"))
HEAD_KEYS = ("region", "cursor", "watermarks")


def ndjson(authz, query=""):
    """The NDJSON answer parsed line by line: (head, rows by table, end, response)."""
    r = authz.get("/v1/policy/snapshot?format=ndjson" + query)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/x-ndjson"
    assert r.headers.get("Transfer-Encoding") == "chunked"
    body = r.content.decode()
    assert body.endswith("\n"), body[-200:]
    lines = body.split("\n")[:-1]
    parsed = [json.loads(line) for line in lines]     # every line is one JSON value
    assert all(isinstance(p, dict) for p in parsed)
    head, rows, end = parsed[0], parsed[1:-1], parsed[-1]
    assert set(head) == set(HEAD_KEYS), head
    assert set(end) == {"end"}, end
    by_table = {t: [] for _, t in KINDS}
    order = [k for k, _ in KINDS]
    last = 0
    for p in rows:
        assert set(p) == {"kind", "row"} and isinstance(p["row"], dict), p
        # Tables in order: users, then memberships, then policies.
        i = order.index(p["kind"])
        assert i >= last, (p["kind"], order[last])
        last = i
        by_table[KINDS[i][1]].append(p["row"])
    return head, by_table, end["end"], r


def json_snapshot(authz, query=""):
    r = authz.get("/v1/policy/snapshot" + ("?" + query.lstrip("&") if query else ""))
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    return r.json()


def same_state(authz, query=""):
    """A JSON answer and an NDJSON one of the same rows, and a JSON answer
    after it. Heartbeats move the watermarks between two requests (five
    times a second: three requests under the sanitizers rarely fit in
    between), and writes would move the cursor, both only forward: when
    the JSON answers before and after the NDJSON one agree on everything
    but the watermarks, the NDJSON one saw those rows, and its watermarks
    lie between theirs."""
    for _ in range(50):
        before = json_snapshot(authz, query)
        got = ndjson(authz, query)
        after = json_snapshot(authz, query)
        if without_watermarks(before) == without_watermarks(after):
            return before, after, got
    raise AssertionError("the snapshot's rows never held still over three requests")


def without_watermarks(snap):
    return {k: v for k, v in snap.items() if k != "watermarks"}


def watermarks_between(lo, mid, hi):
    """Every origin's applied and known in mid are within [lo, hi]."""
    return set(lo) == set(mid) == set(hi) and all(
        lo[o][k] <= mid[o][k] <= hi[o][k] for o in mid for k in ("applied", "known"))


def make_rows(admin, authz):
    u = admin.post("/v1/users", {"subject": "nd-alice", "email": "a@x.io", "name": "A"})
    assert u.status_code in (200, 201), u.text
    uid = u.json()["id"]
    team = admin.post("/v1/teams", {"name": "nd-team"}).json()["id"]
    r = admin.put(f"/v1/teams/{team}/members/{uid}")
    assert r.status_code in (200, 201, 204), r.text
    role = admin.post("/v1/roles", {"name": "nd-readers", "permissions": ["doc:read"]}).json()
    r = admin.post("/v1/role-assignments", {"principal": {"type": "team", "id": team},
                                            "role_id": role["id"], "region": "*",
                                            "resource": "doc/*"})
    assert r.status_code in (200, 201), r.text
    authz.wait_applied(r.headers["Authz-Revision"])
    # More than a page (FETCH 1000) of policies, and tombstones.
    authz.sql("INSERT INTO authz.policies (assignment_id, principal_type, principal_id, role_id,"
              " region, resource, permissions, hlc, origin, origin_seq, deleted)"
              " SELECT md5('nd-live' || i)::uuid, 'user', md5('p' || i)::uuid, md5('r' || i)::uuid,"
              f" '*', 'doc/' || i, ARRAY['doc:read'], {hlc(now_ms() - 5000)}, 'eu', i, false"
              " FROM generate_series(1, 2100) i")
    dead = [insert_policy(authz, "eu", hlc(now_ms() - 5000), True) for _ in range(3)]
    return dead


def test_ndjson_matches_json(admin, authz):
    dead = make_rows(admin, authz)
    seen = {}
    for query in ("", "&tombstones=0", "&tombstones=1"):
        snap, later, (head, rows, end, _) = same_state(authz, query)
        assert without_watermarks(head) == {k: snap[k] for k in HEAD_KEYS if k != "watermarks"}
        assert watermarks_between(snap["watermarks"], head["watermarks"], later["watermarks"]), \
            (query, snap["watermarks"], head["watermarks"], later["watermarks"])
        assert policy_set(rows) == policy_set(snap), query
        # No row twice: the sets above would hide a repeat.
        for _, t in KINDS:
            assert len(rows[t]) == len(snap[t]), (query, t)
        assert end == {t: len(rows[t]) for _, t in KINDS}, query
        assert list(end) == [t for _, t in KINDS], end
        assert all(len(rows[t]) > 0 for _, t in KINDS), end
        assert end["policies"] > 2000, end
        seen[query] = {p["assignment_id"] for p in rows["policies"]}
    for q in ("", "&tombstones=0"):
        assert not seen[q] & set(dead), q
    assert set(dead) <= seen["&tombstones=1"]
    assert seen[""] < seen["&tombstones=1"]
    # format=json is the default, spelled out.
    r = authz.get("/v1/policy/snapshot?format=json")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert set(r.json()) == {"region", "cursor", "watermarks", "users", "memberships", "policies"}


def test_ndjson_read_a_line_at_a_time(authz):
    """What a loading client does: one line parsed and applied at a time."""
    counts = {t: 0 for _, t in KINDS}
    with requests.get(authz.url + "/v1/policy/snapshot",
                      params={"format": "ndjson", "tombstones": "1"},
                      stream=True, timeout=90) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        head = json.loads(next(lines))
        assert head["region"] == "us" and int(head["cursor"]) > 0
        end = None
        for line in lines:
            assert end is None, "a line after the end line"
            obj = json.loads(line)
            if "end" in obj:
                end = obj["end"]
                continue
            counts[dict(KINDS)[obj["kind"]]] += 1
    assert end == counts


def test_format_invalid(authz):
    for bad in ("bogus", "", "NDJSON", "json ", "ndjson,json"):
        r = requests.get(authz.url + "/v1/policy/snapshot", params={"format": bad}, timeout=30)
        assert r.status_code == 400, (bad, r.text)
        assert r.headers["Content-Type"].startswith("application/json")
        err = r.json()["error"]
        assert err["code"] == "invalid_request", (bad, err)
        assert "format" in err["message"], (bad, err)
    r = requests.head(authz.url + "/v1/policy/snapshot?format=bogus", timeout=30)
    assert r.status_code == 400


def test_head(authz):
    for fmt, ctype in (("json", "application/json"), ("ndjson", "application/x-ndjson")):
        r = requests.head(f"{authz.url}/v1/policy/snapshot?format={fmt}", timeout=30)
        assert r.status_code == 200, fmt
        assert r.headers["Content-Type"] == ctype, fmt
        assert r.content == b"", fmt
    # The server is still fine afterwards (the places of both were given back).
    assert ndjson(authz)[0]["region"] == "us"
