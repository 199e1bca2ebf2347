"""authz-identity REST API: every endpoint's success and error paths,
pagination, ETag/If-Match, Idempotency-Key, revisions, and the events each
change puts on Kafka."""
import json
import uuid

from conftest import changes, read_events, wait_until


def new_user(admin, subject=None):
    subject = subject or f"user-{uuid.uuid4().hex[:10]}"
    r = admin.post("/v1/users", {"subject": subject, "email": f"{subject}@example.com",
                                 "name": "Some One"})
    assert r.status_code == 201, r.text
    return r.json()


def new_team(admin, name=None):
    r = admin.post("/v1/teams", {"name": name or f"team-{uuid.uuid4().hex[:10]}"})
    assert r.status_code == 201, r.text
    return r.json()


def new_role(admin, perms=("doc:read",)):
    r = admin.post("/v1/roles", {"name": f"role-{uuid.uuid4().hex[:10]}", "permissions": list(perms)})
    assert r.status_code == 201, r.text
    return r.json()


def err(r, status, code=None, field=None):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()["error"]
    assert body["message"]
    if code:
        assert body["code"] == code, body
    if field:
        assert body["field"] == field, body
    return body


def hlc_of(rev):
    v, origin, hexhlc = rev.split(".")
    assert v == "v1" and origin == "us" and len(hexhlc) == 16
    return int(hexhlc, 16)


def identity_rows(admin, subject):
    items = admin.get("/v1/users?limit=500").json()["items"]
    return sum(1 for u in items if u["subject"] == subject)


# ---- users -----------------------------------------------------------------

def test_user_lifecycle(admin):
    r = admin.post("/v1/users", {"subject": "alice-1", "email": "alice@example.com", "name": "Alice"})
    assert r.status_code == 201
    u = r.json()
    assert u["subject"] == "alice-1" and u["email"] == "alice@example.com" and u["version"] == 1
    assert r.headers["Location"] == f"/v1/users/{u['id']}"
    assert r.headers["ETag"] == '"1"'
    assert r.headers["Authz-Revision"] == u["revision"]
    r = admin.get(f"/v1/users/{u['id']}")
    assert r.status_code == 200 and r.json()["name"] == "Alice" and r.headers["ETag"] == '"1"'
    assert "revision" not in r.json()

    r = admin.patch(f"/v1/users/{u['id']}", {"name": "Alice B"}, headers={"If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["name"] == "Alice B" and r.json()["version"] == 2
    assert r.headers["ETag"] == '"2"'
    assert hlc_of(r.json()["revision"]) > hlc_of(u["revision"])
    err(admin.patch(f"/v1/users/{u['id']}", {"name": "Stale"}, headers={"If-Match": '"1"'}),
        412, "precondition_failed")
    err(admin.delete(f"/v1/users/{u['id']}", headers={"If-Match": '"7"'}), 412)
    r = admin.delete(f"/v1/users/{u['id']}", headers={"If-Match": '"2"'})
    assert r.status_code == 200 and r.json()["deleted"] is True and r.headers["Authz-Revision"]
    err(admin.get(f"/v1/users/{u['id']}"), 404, "not_found")
    err(admin.delete(f"/v1/users/{u['id']}"), 404)
    err(admin.patch(f"/v1/users/{u['id']}", {"name": "x"}), 404)


def test_user_validation(admin):
    ok = {"subject": "v-1", "email": "v@example.com", "name": "V"}
    err(admin.post("/v1/users", {**ok, "extra": 1}), 400, "invalid_field", "extra")
    err(admin.post("/v1/users", {"email": "v@example.com", "name": "V"}), 400, "invalid_field", "subject")
    err(admin.post("/v1/users", {**ok, "subject": 5}), 400, "invalid_field", "subject")
    err(admin.post("/v1/users", {**ok, "subject": "has space"}), 400, "invalid_field", "subject")
    err(admin.post("/v1/users", {**ok, "subject": ""}), 400, "invalid_field", "subject")
    err(admin.post("/v1/users", {**ok, "email": "nope"}), 400, "invalid_field", "email")
    err(admin.post("/v1/users", {**ok, "name": "x" * 201}), 400, "invalid_field", "name")
    err(admin.post("/v1/users", {**ok, "name": "line\nbreak"}), 400, "invalid_field", "name")
    err(admin.post("/v1/users", [1, 2]), 400, "invalid_body")
    err(admin.post("/v1/users", raw='{"subject": "x",', headers={"Content-Type": "application/json"}),
        400, "invalid_json")
    err(admin.post("/v1/users", raw=json.dumps(ok), headers={"Content-Type": "text/plain"}),
        415, "unsupported_media_type")
    r = admin.post("/v1/users", raw='{"name": "' + "x" * 70000 + '"}',
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    err(admin.patch("/v1/users/" + str(uuid.uuid4()), {}), 400, "invalid_body")
    err(admin.get("/v1/users/not-a-uuid"), 404)
    err(admin.req("PUT", "/v1/users"), 405, "method_not_allowed")
    err(admin.get("/v1/nothing"), 404)
    # Bad input changed nothing.
    assert identity_rows(admin, "v-1") == 0


def test_duplicate_subject_conflict(admin):
    u = new_user(admin)
    err(admin.post("/v1/users", {"subject": u["subject"], "email": "b@example.com", "name": "B"}),
        409, "conflict")
    other = new_user(admin)
    err(admin.patch(f"/v1/users/{other['id']}", {"subject": u["subject"]}), 409, "conflict")


def test_pagination(admin):
    made = {new_user(admin)["id"] for _ in range(7)}
    seen, cursor, pages = [], None, 0
    while True:
        r = admin.get("/v1/users?limit=3" + (f"&cursor={cursor}" if cursor else ""))
        assert r.status_code == 200
        page = r.json()
        assert len(page["items"]) <= 3
        seen += [u["id"] for u in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert made <= set(seen) and len(seen) == len(set(seen)) and seen == sorted(seen)
    assert pages >= 3
    err(admin.get("/v1/users?limit=0"), 400, "invalid_query")
    err(admin.get("/v1/users?limit=501"), 400, "invalid_query")
    err(admin.get("/v1/users?limit=abc"), 400, "invalid_query")
    err(admin.get("/v1/users?cursor=garbage"), 400, "invalid_query")


# ---- teams and members -----------------------------------------------------

def test_team_lifecycle_and_members(admin):
    t = new_team(admin, "platform-x")
    assert t["description"] == ""
    err(admin.post("/v1/teams", {"name": "platform-x"}), 409, "conflict")
    err(admin.post("/v1/teams", {"name": ""}), 400, "invalid_field", "name")
    err(admin.post("/v1/teams", {"description": "no name"}), 400, "invalid_field", "name")
    r = admin.patch(f"/v1/teams/{t['id']}", {"description": "the platform team"})
    assert r.status_code == 200 and r.json()["description"] == "the platform team"

    u1, u2 = new_user(admin), new_user(admin)
    r = admin.put(f"/v1/teams/{t['id']}/members/{u1['id']}")
    assert r.status_code == 201 and r.json()["added"] is True
    rev1 = r.headers["Authz-Revision"]
    r = admin.put(f"/v1/teams/{t['id']}/members/{u1['id']}")   # idempotent
    assert r.status_code == 200 and r.json()["added"] is False
    assert hlc_of(r.headers["Authz-Revision"]) >= hlc_of(rev1)
    assert admin.put(f"/v1/teams/{t['id']}/members/{u2['id']}").status_code == 201
    members = admin.get(f"/v1/teams/{t['id']}/members").json()["items"]
    assert {m["user_id"] for m in members} == {u1["id"], u2["id"]}
    assert {m["subject"] for m in members} == {u1["subject"], u2["subject"]}
    err(admin.put(f"/v1/teams/{t['id']}/members/{uuid.uuid4()}"), 404)
    err(admin.put(f"/v1/teams/{uuid.uuid4()}/members/{u1['id']}"), 404)
    err(admin.get(f"/v1/teams/{uuid.uuid4()}/members"), 404)
    r = admin.delete(f"/v1/teams/{t['id']}/members/{u1['id']}")
    assert r.status_code == 200 and r.json()["removed"] is True
    err(admin.delete(f"/v1/teams/{t['id']}/members/{u1['id']}"), 404)

    r = admin.delete(f"/v1/teams/{t['id']}")
    assert r.status_code == 200
    err(admin.get(f"/v1/teams/{t['id']}"), 404)
    # u2's membership went with the team
    assert admin.get(f"/v1/users/{u2['id']}").status_code == 200


# ---- roles and assignments -------------------------------------------------

def test_roles(admin):
    r = admin.post("/v1/roles", {"name": "doc-editor", "permissions": ["doc:read", "doc:write", "img:*"]})
    assert r.status_code == 201
    role = r.json()
    assert role["permissions"] == ["doc:read", "doc:write", "img:*"]
    err(admin.post("/v1/roles", {"name": "doc-editor", "permissions": []}), 409, "conflict")
    for bad, idx in ((["doc:read", "Doc:read"], 1), (["doc"], 0), (["*:read"], 0),
                     (["doc:read", "doc:read"], 1), ([5], 0), (["doc:"], 0), (["doc: read"], 0)):
        err(admin.post("/v1/roles", {"name": "bad", "permissions": bad}), 400, "invalid_field",
            f"permissions[{idx}]")
    err(admin.post("/v1/roles", {"name": "bad", "permissions": "doc:read"}), 400, "invalid_field",
        "permissions")
    err(admin.post("/v1/roles", {"name": "bad", "permissions": ["a:b"] * 257}), 400, "invalid_field")
    assert admin.post("/v1/roles", {"name": "root", "permissions": ["*"]}).status_code == 201
    r = admin.patch(f"/v1/roles/{role['id']}", {"permissions": ["doc:*"]}, headers={"If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["permissions"] == ["doc:*"] and r.json()["version"] == 2
    assert admin.get(f"/v1/roles/{role['id']}").json()["permissions"] == ["doc:*"]


def test_assignments(admin):
    u, t, role = new_user(admin), new_team(admin), new_role(admin)
    body = {"principal": {"type": "user", "id": u["id"]}, "role_id": role["id"], "region": "eu",
            "resource": "doc/42"}
    r = admin.post("/v1/role-assignments", body)
    assert r.status_code == 201, r.text
    a = r.json()
    assert a["principal"] == {"type": "user", "id": u["id"]} and a["resource"] == "doc/42"
    err(admin.post("/v1/role-assignments", body), 409, "conflict")
    for field, patch in (("region", {"region": "mars"}), ("resource", {"resource": "doc"}),
                         ("resource", {"resource": "Doc/1"}), ("resource", {"resource": "doc/a b"}),
                         ("principal.type", {"principal": {"type": "group", "id": u["id"]}}),
                         ("principal.id", {"principal": {"type": "user", "id": "x"}}),
                         ("principal.id", {"principal": {"type": "user", "id": str(uuid.uuid4())}}),
                         ("principal", {"principal": {"type": "user"}}),
                         ("role_id", {"role_id": str(uuid.uuid4())})):
        err(admin.post("/v1/role-assignments", {**body, **patch}), 400, "invalid_field", field)
    for res in ("*", "doc/*", "doc/a.b:c@d"):
        assert admin.post("/v1/role-assignments", {**body, "resource": res, "region": "*"}).status_code == 201
    at = admin.post("/v1/role-assignments", {**body, "principal": {"type": "team", "id": t["id"]}})
    assert at.status_code == 201

    mine = admin.get(f"/v1/role-assignments?principal_type=user&principal_id={u['id']}").json()["items"]
    assert len(mine) == 4 and all(x["principal"]["id"] == u["id"] for x in mine)
    err(admin.get("/v1/role-assignments?principal_type=user"), 400, "invalid_query")
    err(admin.get(f"/v1/role-assignments?principal_type=robot&principal_id={u['id']}"), 400)

    err(admin.delete(f"/v1/roles/{role['id']}"), 409, "role_in_use")
    r = admin.delete(f"/v1/role-assignments/{a['id']}")
    assert r.status_code == 200
    err(admin.delete(f"/v1/role-assignments/{a['id']}"), 404)

    # Deleting the user and the team removes their assignments in the same transaction.
    assert admin.delete(f"/v1/users/{u['id']}").status_code == 200
    assert admin.delete(f"/v1/teams/{t['id']}").status_code == 200
    assert admin.get(f"/v1/role-assignments?principal_type=user&principal_id={u['id']}").json()["items"] == []
    assert admin.delete(f"/v1/roles/{role['id']}").status_code == 200


def test_delete_user_emits_cascade_events(admin, identity, cluster):
    u, t, role = new_user(admin), new_team(admin), new_role(admin)
    admin.put(f"/v1/teams/{t['id']}/members/{u['id']}")
    a = admin.post("/v1/role-assignments", {"principal": {"type": "user", "id": u["id"]},
                                            "role_id": role["id"], "region": "us", "resource": "*"}).json()
    r = admin.delete(f"/v1/users/{u['id']}")
    rev = hlc_of(r.json()["revision"])
    events = read_events(cluster["KAFKA_BOOTSTRAP"], identity.topic,
                         lambda evs: any(e["hlc"] == rev for e in evs))
    tail = [e for e in changes(events) if e["hlc"] <= rev][-3:]
    assert [e["type"] for e in tail] == ["team.member_removed", "assignment.deleted", "user.deleted"]
    assert tail[0]["data"] == {"team_id": t["id"], "user_id": u["id"]}
    assert tail[1]["data"] == {"id": a["id"]}
    assert tail[2]["data"] == {"id": u["id"]}
    assert [e["seq"] for e in tail] == list(range(tail[0]["seq"], tail[0]["seq"] + 3))


def test_events_carry_no_personal_data(admin, identity, cluster):
    u = new_user(admin, "private-subject")
    rev = hlc_of(u["revision"])
    events = read_events(cluster["KAFKA_BOOTSTRAP"], identity.topic,
                         lambda evs: any(e["hlc"] == rev for e in evs))
    ev = next(e for e in events if e["hlc"] == rev)
    assert ev["type"] == "user.created" and ev["origin"] == "us"
    assert ev["data"] == {"id": u["id"], "subject": "private-subject"}


# ---- idempotency -------------------------------------------------------------

def test_idempotency_key(admin, identity):
    body = {"name": f"idem-{uuid.uuid4().hex[:8]}"}
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    r1 = admin.post("/v1/teams", body, headers=key)
    r2 = admin.post("/v1/teams", body, headers=key)
    assert r1.status_code == r2.status_code == 201
    assert r1.json() == r2.json()
    assert r2.headers["Authz-Revision"] == r1.headers["Authz-Revision"]
    assert r2.headers.get("Idempotent-Replayed") == "true"
    assert identity.sql(f"SELECT count(*) FROM identity.teams WHERE name = '{body['name']}'") == "1"
    assert identity.sql(f"SELECT count(*) FROM identity.outbox WHERE payload LIKE '%{r1.json()['id']}%'") == "1"
    err(admin.post("/v1/teams", {"name": "something else"}, headers=key), 422, "idempotency_key_reused")
    # The key is per caller: another admin may use the same key.
    other = admin.__class__(admin.base, identity.keys.token(sub="another-admin"))
    r3 = other.post("/v1/teams", {"name": f"idem-{uuid.uuid4().hex[:8]}"}, headers=key)
    assert r3.status_code == 201 and r3.json()["id"] != r1.json()["id"]
    err(admin.post("/v1/teams", body, headers={"Idempotency-Key": "x" * 300}), 400, "invalid_header")
    # A failed request is not stored: the same key may be used again.
    k2 = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    err(admin.post("/v1/teams", {"name": ""}, headers=k2), 400)
    assert admin.post("/v1/teams", {"name": f"idem-{uuid.uuid4().hex[:8]}"}, headers=k2).status_code == 201


def test_concurrent_idempotent_posts_write_once(admin, identity):
    import concurrent.futures
    body = {"name": f"race-{uuid.uuid4().hex[:8]}"}
    key = {"Idempotency-Key": f"race-{uuid.uuid4()}"}
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        rs = list(ex.map(lambda _: admin.__class__(admin.base, admin.token).post("/v1/teams", body, headers=key),
                         range(8)))
    assert {r.status_code for r in rs} == {201}
    assert len({r.json()["id"] for r in rs}) == 1
    assert identity.sql(f"SELECT count(*) FROM identity.teams WHERE name = '{body['name']}'") == "1"


# ---- revisions ---------------------------------------------------------------

def test_revisions_increase_and_match_events(admin, identity, cluster):
    revs = [hlc_of(new_team(admin)["revision"]) for _ in range(5)]
    assert revs == sorted(revs) and len(set(revs)) == 5
    events = read_events(cluster["KAFKA_BOOTSTRAP"], identity.topic,
                         lambda evs: all(any(e["hlc"] == h for e in evs) for h in revs))
    assert all(e["type"] == "team.created" for e in events if e["hlc"] in revs)


def test_anonymous_gets_401_before_body_checks(admin):
    """Authentication comes first: no 415 or invalid_json for a client
    without a valid token, and nothing is parsed for it. (A body over the
    server's limit still gets evhttp's own 413, see docs/architecture.md;
    the route-limit 413 case is in tests/unit/test_http_edge.c.)"""
    for raw, ctype in [('{"name": "x"}', "text/plain"), ('{"name":', "application/json"),
                       ('[1, 2]', "application/json")]:
        for token in (False, "not.a.jwt"):
            r = admin.post("/v1/teams", raw=raw, headers={"Content-Type": ctype}, token=token)
            err(r, 401, "unauthorized")
            assert "Bearer" in r.headers["WWW-Authenticate"]
    # The probes stay public.
    assert admin.req("GET", "/healthz", token=False).status_code == 200


def test_blank_or_hidden_names_refused(admin):
    """Names that are blank or hide control or invisible format characters
    (U+202E reorders text, U+200B is invisible) are 400 naming the field."""
    team = new_team(admin)
    for bad in ["   ", "\u00a0\u3000", "evil\u202etxt", "zero\u200bwidth", "bom\ufeff",
                "c1\u0085x", "del\u007f", "soft\u00adhyphen"]:
        err(admin.post("/v1/teams", {"name": bad}), 400, "invalid_field", "name")
        err(admin.patch(f"/v1/teams/{team['id']}", {"name": bad}), 400, "invalid_field", "name")
        err(admin.post("/v1/roles", {"name": bad, "permissions": ["doc:read"]}),
            400, "invalid_field", "name")
        err(admin.post("/v1/users", {"subject": f"s-{uuid.uuid4().hex[:8]}",
                                     "email": "s@example.com", "name": bad}),
            400, "invalid_field", "name")
    # Visible text outside ASCII is fine.
    new_team(admin, name=f"\u65e5\u672c {uuid.uuid4().hex[:6]}")
