"""Peer authentication from the replicator's side: with authz-server's
feed and snapshot closed to anonymous callers, the replicators send the
service token of auth.token_file and replication works."""
import os
import subprocess
import uuid

import pytest
import requests

from conftest import BIN, wait_until
from test_replication import grant

ISSUER = "authz-test"
AUDIENCE = "authz-admin"


@pytest.fixture(scope="module")
def authz_extra(keys):
    return {"feed": {"collect_tombstones": False},
            "auth": {"keys_file": keys.keyset, "issuer": ISSUER, "audience": AUDIENCE}}


@pytest.fixture(scope="module")
def replicator_extra(keys, workdir):
    token = subprocess.run([os.path.join(BIN, "authz-dev-token"), "--sub", "replicator",
                            "--scope", "authz:replicate", "--ttl", "3600", "--key", keys.private,
                            "--kid", keys.kid, "--iss", ISSUER, "--aud", AUDIENCE],
                           check=True, capture_output=True, text=True).stdout.strip()
    path = os.path.join(workdir, "replicator.token")
    with open(path, "w") as f:
        f.write(token + "\n")
    return {"auth": {"token_file": path}}


def test_replication_with_peer_authentication(regions):
    us, eu = regions["us"], regions["eu"]
    # The feed is really closed to anonymous callers.
    r = requests.get(us.authz.url + "/v1/policy/changes?after=0", timeout=10)
    assert r.status_code == 401, r.text
    s = f"auth-{uuid.uuid4().hex[:8]}"
    grant(us, s, "doc/auth")
    wait_until(lambda: eu.authz.check(s, "doc:read", "doc/auth")["allowed"], 30,
               "a grant in us allowing in eu through authenticated feeds")
    assert eu.replicator.metric("rp_peer_errors_total", kind="http_4xx") == 0
    assert eu.replicator.status()["peers"]["us"]["reached"]
