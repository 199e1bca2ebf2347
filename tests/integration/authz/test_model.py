"""Model-based test of authz-server against a plain oracle.

A random sequence of identity operations (users, teams, memberships, roles
with wildcard permissions, assignments with region and resource scopes,
deletes, role permission changes) goes through the identity REST API. One
authz-server follows it undisturbed; a second one, on its own database, is
killed with SIGKILL at random points and restarted. Afterwards every check
of a large sample answers what the oracle computes from the same
operations, on both servers, and both hold the identical policy set.
"""
import os
import random
import threading
import time

from conftest import Authz, policy_set

OPS = int(os.environ.get("AUTHZ_TEST_OPS", "10000"))
SEED = int(os.environ.get("AUTHZ_TEST_SEED", str(int(time.time()))))

TYPES = ["doc", "img", "db"]
VERBS = ["read", "write", "delete"]
REGIONS = ["us", "eu", "ap"]
PERMS = [f"{t}:{v}" for t in TYPES for v in VERBS] + [f"{t}:*" for t in TYPES] + ["*"]
RESOURCES = [f"{t}/{i}" for t in TYPES for i in range(1, 4)]
PATTERNS = RESOURCES + [f"{t}/*" for t in TYPES] + ["*"]


class Model:
    """The oracle: identity state as plain dicts, and DESIGN section 3."""

    def __init__(self):
        self.users = {}      # id -> subject
        self.teams = set()
        self.members = set()  # (team, user)
        self.roles = {}      # id -> [permissions]
        self.assignments = {}  # id -> (ptype, pid, role, region, resource)
        self.subjects_ever = []

    def check(self, subject, action, resource, region):
        uids = [u for u, s in self.users.items() if s == subject]
        principals = {("user", u) for u in uids}
        principals |= {("team", t) for (t, u) in self.members if u in uids}
        atype = action.split(":")[0]
        rtype = resource.split("/")[0]
        for (pt, pid, role, reg, res) in self.assignments.values():
            if (pt, pid) not in principals or reg not in (region, "*"):
                continue
            if res not in (resource, f"{rtype}/*", "*"):
                continue
            if set(self.roles[role]) & {action, f"{atype}:*", "*"}:
                return True
        return False


def run_ops(admin, model, rng, n):
    """Applies n random operations through the REST API; returns the last
    revision."""
    last = None
    counter = [0]

    def ok(r, *codes):
        assert r.status_code in codes, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
        return r

    for _ in range(n):
        kind = rng.choices(
            ["user", "del_user", "team", "del_team", "member", "unmember", "role",
             "role_update", "del_role", "assign", "unassign"],
            [10, 2, 6, 1, 16, 6, 4, 5, 2, 20, 8])[0]
        r = None
        if kind == "user" or (not model.users and kind in ("del_user", "member", "unmember")):
            counter[0] += 1
            subject = f"s{counter[0]}"
            r = ok(admin.post("/v1/users", {"subject": subject, "email": f"{subject}@x.io",
                                            "name": subject}), 201)
            model.users[r.json()["id"]] = subject
            model.subjects_ever.append(subject)
        elif kind == "del_user":
            u = rng.choice(sorted(model.users))
            r = ok(admin.delete(f"/v1/users/{u}"), 200, 204)
            del model.users[u]
            model.members = {(t, x) for (t, x) in model.members if x != u}
            model.assignments = {a: v for a, v in model.assignments.items()
                                 if (v[0], v[1]) != ("user", u)}
        elif kind == "team" or (not model.teams and kind in ("del_team", "member", "unmember")):
            r = ok(admin.post("/v1/teams", {"name": f"t{rng.getrandbits(48)}"}), 201)
            model.teams.add(r.json()["id"])
        elif kind == "del_team":
            t = rng.choice(sorted(model.teams))
            r = ok(admin.delete(f"/v1/teams/{t}"), 200, 204)
            model.teams.discard(t)
            model.members = {(x, u) for (x, u) in model.members if x != t}
            model.assignments = {a: v for a, v in model.assignments.items()
                                 if (v[0], v[1]) != ("team", t)}
        elif kind == "member":
            t, u = rng.choice(sorted(model.teams)), rng.choice(sorted(model.users))
            r = ok(admin.put(f"/v1/teams/{t}/members/{u}"), 200, 201, 204)
            model.members.add((t, u))
        elif kind == "unmember":
            if not model.members:
                continue
            t, u = rng.choice(sorted(model.members))
            r = ok(admin.delete(f"/v1/teams/{t}/members/{u}"), 200, 204)
            model.members.discard((t, u))
        elif kind == "role" or (not model.roles and kind in ("role_update", "del_role", "assign")):
            perms = rng.sample(PERMS, rng.randint(1, 3))
            r = ok(admin.post("/v1/roles", {"name": f"r{rng.getrandbits(48)}",
                                            "permissions": perms}), 201)
            model.roles[r.json()["id"]] = perms
        elif kind == "role_update":
            role = rng.choice(sorted(model.roles))
            perms = rng.sample(PERMS, rng.randint(1, 3))
            r = ok(admin.patch(f"/v1/roles/{role}", {"permissions": perms}), 200)
            model.roles[role] = perms
        elif kind == "del_role":
            role = rng.choice(sorted(model.roles))
            if any(v[2] == role for v in model.assignments.values()):
                ok(admin.delete(f"/v1/roles/{role}"), 409)
                continue
            r = ok(admin.delete(f"/v1/roles/{role}"), 200, 204)
            del model.roles[role]
        elif kind == "assign":
            if rng.random() < 0.5 and model.users:
                p = ("user", rng.choice(sorted(model.users)))
            elif model.teams:
                p = ("team", rng.choice(sorted(model.teams)))
            else:
                continue
            v = (p[0], p[1], rng.choice(sorted(model.roles)), rng.choice(REGIONS + ["*"]),
                 rng.choice(PATTERNS))
            if v in model.assignments.values():
                continue
            r = ok(admin.post("/v1/role-assignments", {
                "principal": {"type": v[0], "id": v[1]}, "role_id": v[2], "region": v[3],
                "resource": v[4]}), 201)
            model.assignments[r.json()["id"]] = v
        elif kind == "unassign":
            if not model.assignments:
                continue
            a = rng.choice(sorted(model.assignments))
            r = ok(admin.delete(f"/v1/role-assignments/{a}"), 200, 204)
            del model.assignments[a]
        if r is not None and r.headers.get("Authz-Revision"):
            last = r.headers["Authz-Revision"]
    return last


def test_model_and_crash_recovery(cluster, workdir, identity, admin, authz):
    print(f"seed {SEED} ops {OPS}")
    rng = random.Random(SEED)
    model = Model()
    victim = Authz(cluster, workdir, identity.topic, "victim").start()
    stop = threading.Event()
    kills = [0]
    errors = []

    def killer():
        krng = random.Random(SEED + 1)
        try:
            while not stop.wait(krng.uniform(0.5, 3.0)):
                victim.kill()
                kills[0] += 1
                victim.start()
        except Exception as e:  # reported by the main thread
            errors.append(e)

    t = threading.Thread(target=killer)
    t.start()
    try:
        try:
            last = run_ops(admin, model, rng, OPS)
        finally:
            stop.set()
            t.join()
        check_both(model, authz, victim, last, kills[0], errors)
        victim.stop()
    finally:
        victim.kill()   # a failure must not leave it running


def check_both(model, authz, victim, last, kills, errors):
    assert not errors, errors
    assert kills >= (3 if OPS >= 5000 else 1), f"only {kills} kills"
    authz.wait_applied(last)
    victim.wait_applied(last)

    # Both servers hold the same policy set.
    assert policy_set(victim.snapshot()) == policy_set(authz.snapshot())
    st = authz.status()
    assert st["dead_letters"] == 0 and st["consumer"]["state"] == "running"

    # Every sampled check answers what the oracle says.
    srng = random.Random(SEED + 2)
    subjects = model.subjects_ever + ["nobody", "s0"]
    mismatches = []
    for i in range(3000):
        q = (srng.choice(subjects), f"{srng.choice(TYPES)}:{srng.choice(VERBS)}",
             srng.choice(RESOURCES + ["doc/99", "img/x"]), srng.choice(REGIONS))
        want = model.check(*q)
        server = authz if i % 2 == 0 else victim
        got = server.check(q[0], q[1], q[2], q[3])
        assert got["decision"] in ("allow", "deny"), got
        if got["allowed"] != want:
            mismatches.append((q, want, got))
    assert not mismatches, mismatches[:5]
    print(f"{kills} kills; {len(model.users)} users, {len(model.teams)} teams, "
          f"{len(model.members)} memberships, {len(model.assignments)} assignments")
