"""Admin authentication of authz-identity: bearer JWTs checked strictly
(pinned algorithm, exp/nbf/iss/aud), the admin rule, key rotation on
SIGHUP, and the OpenAPI spec against the registered routes."""
import base64
import json
import os
import signal
import subprocess
import uuid

import requests

from conftest import BIN, REPO, Client, Keys, wait_until

TEAM = {"name": "auth-team"}


def b64(d):
    return base64.urlsafe_b64encode(d).rstrip(b"=").decode()


def status(identity, token, method="GET", path="/v1/teams", body=None):
    h = {} if token is None else {"Authorization": f"Bearer {token}"}
    if body is not None:
        h["Content-Type"] = "application/json"
        body = json.dumps(body)
    return requests.request(method, identity.url + path, headers=h, data=body, timeout=10)


def test_missing_or_malformed_authorization(identity):
    r = requests.get(identity.url + "/v1/teams", timeout=10)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    for h in ("Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer ", "bearer x.y.z", "Token abc"):
        assert requests.get(identity.url + "/v1/teams", headers={"Authorization": h},
                            timeout=10).status_code == 401


def test_token_checks(identity, keys, workdir):
    assert status(identity, keys.token()).status_code == 200
    assert status(identity, keys.token(ttl=-120)).status_code == 401          # expired
    assert status(identity, keys.token(aud="someone-else")).status_code == 401
    assert status(identity, keys.token(iss="https://evil.example")).status_code == 401
    assert status(identity, keys.token(kid="unknown-kid")).status_code == 401
    odir = os.path.join(workdir, "other")
    os.makedirs(odir, exist_ok=True)
    other = Keys(odir)
    assert status(identity, keys.token(key=other.private)).status_code == 401  # wrong key
    good = keys.token()
    h, p, s = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=="))
    claims["sub"] = "someone-else"
    forged = f"{h}.{b64(json.dumps(claims).encode())}.{s}"
    assert status(identity, forged).status_code == 401                          # tampered
    none_header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    none = f"{none_header}.{p}."
    assert status(identity, none).status_code == 401                            # alg none
    assert status(identity, "not-a-jwt").status_code == 401
    assert status(identity, "a" * 9000).status_code == 401


def test_hs256_key_confusion_rejected(identity, keys):
    import hashlib
    import hmac
    pub = open(keys.private.replace(".key", ".pub"), "rb").read()
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": keys.kid}).encode())
    payload = b64(json.dumps({"sub": "admin", "iss": "authz-test", "aud": "authz-admin",
                              "exp": 4102444800, "authz_admin": True}).encode())
    sig = b64(hmac.new(pub, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    assert status(identity, f"{header}.{payload}.{sig}").status_code == 401


def test_non_admin_is_forbidden(identity, keys):
    r = status(identity, keys.token(sub="bob", admin=False))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = status(identity, keys.token(sub="bob", admin=False), "POST", "/v1/teams", TEAM)
    assert r.status_code == 403
    assert identity.sql("SELECT count(*) FROM identity.teams WHERE name = 'auth-team'") == "0"


def test_admin_subjects_and_key_rotation(cluster, workdir, keys):
    from conftest import Identity
    folder = os.path.join(workdir, "rot")
    os.makedirs(folder, exist_ok=True)
    k1 = Keys(folder, kid="old")
    svc = Identity(cluster, folder, k1, "rotation", relay=False,
                   extra={"auth": {"admin_subjects": "carol, dave"}})
    svc.create_storage()
    svc.start()
    try:
        assert status(svc, k1.token(sub="carol", admin=False)).status_code == 200
        assert status(svc, k1.token(sub="erin", admin=False)).status_code == 403
        # Rotate: a new key set with only "new"; SIGHUP; old tokens stop working.
        k2folder = os.path.join(folder, "k2")
        os.makedirs(k2folder, exist_ok=True)
        k2 = Keys(k2folder, kid="new")
        with open(k1.keyset, "w") as f:
            json.dump([{"kid": "new", "alg": "ES256", "file": os.path.join(k2folder, "new.pub")}], f)
        svc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: status(svc, k2.token(sub="carol", admin=False)).status_code == 200,
                   10, "the new key")
        assert status(svc, k1.token(sub="carol", admin=False)).status_code == 401
        # A broken key file on SIGHUP keeps the current keys.
        with open(k1.keyset, "w") as f:
            f.write("[not json")
        svc.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "keeping the old keys" in open(svc.log).read(), 10, "the reload error")
        assert status(svc, k2.token(sub="carol", admin=False)).status_code == 200
        assert svc.proc.poll() is None
    finally:
        svc.stop()


def test_bad_config_is_refused(workdir):
    bad = os.path.join(workdir, "bad.json")
    cases = [
        ({"service": {"region": "us", "regions": "us"}, "pg": {"url": "x"}, "relay": {"enabled": False},
          "auth": {"keys_file": "k", "issuer": "i", "audience": "a"}, "http": {"prot": 1}}, "unknown key"),
        ({"service": {"region": "US", "regions": "us"}}, "service.region"),
        ({"service": {"region": "us", "regions": "eu"}, "pg": {"url": "x"}}, "must include"),
        ({"service": {"region": "us", "regions": "us"}, "http": {"port": "80"}}, "http.port"),
        ({"service": {"region": "us", "regions": "us"}, "pg": {"url": "x"}}, "auth.keys_file"),
    ]
    for cfg, needle in cases:
        with open(bad, "w") as f:
            json.dump(cfg, f)
        r = subprocess.run([os.path.join(BIN, "authz-identity"), "--config", bad],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, (cfg, r.stderr)
        assert needle in r.stderr, (needle, r.stderr)
    r = subprocess.run([os.path.join(BIN, "authz-identity"), "--bogus"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "unknown argument" in r.stderr
    r = subprocess.run([os.path.join(BIN, "authz-identity"), "--version"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and "authz-identity" in r.stdout


def test_openapi_matches_routes():
    import yaml
    spec = yaml.safe_load(open(os.path.join(REPO, "docs", "openapi", "identity.yaml")))
    documented = {f"{m.upper()} {path}" for path, item in spec["paths"].items()
                  for m in item if m in ("get", "post", "put", "patch", "delete")}
    out = subprocess.run([os.path.join(BIN, "identity_routes_dump")], check=True,
                         capture_output=True, text=True).stdout
    served = set(out.split("\n")) - {""}
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"
