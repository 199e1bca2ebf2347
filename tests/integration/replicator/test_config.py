"""authz-replicator refuses a bad configuration with a clear message and
exit status 2, before it connects to anything."""
import json
import os
import subprocess

import pytest

from conftest import BIN

BASE = {"service": {"region": "us", "regions": "us,eu,ap"},
        "pg": {"url": "postgresql://127.0.0.1:9/none"},
        "peers": {"eu": "http://127.0.0.1:9"}}


def run(tmp_path, cfg, env=None):
    path = tmp_path / "rp.json"
    path.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return subprocess.run([os.path.join(BIN, "authz-replicator"), "--config", str(path)],
                          capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, **(env or {})))


def patch(section, key, value):
    cfg = json.loads(json.dumps(BASE))
    if value is None:
        cfg[section].pop(key)
    else:
        cfg.setdefault(section, {})[key] = value
    return cfg


@pytest.mark.parametrize("cfg,env,message", [
    (patch("peers", "eu", "ftp://127.0.0.1:9"), None, "peers.eu must be an http:// URL"),
    (patch("peers", "eu", "http://127.0.0.1:9/x?y=1"), None, "peers.eu must hold no query"),
    (patch("peers", "eu", 7), None, "peers.eu"),
    (patch("peers", "us", "http://127.0.0.1:9"), None, "peers.us names this region itself"),
    (patch("peers", "eu", None), None, "no peers"),
    (patch("peers", "mars", "http://127.0.0.1:9"), None, "peers.mars"),
    (patch("replication", "wait_ms", "soon"), None, "replication.wait_ms"),
    (patch("replication", "limit", 0), None, "replication.limit"),
    (patch("replication", "bogus", 1), None, "replication.bogus"),
    (patch("pg", "url", None), None, "pg.url must be set"),
    ("{\"service\": ", None, "configuration"),
    (BASE, {"AUTHZ_PEERS_EU": "nope"}, "peers.eu"),
])
def test_bad_configuration_exits_2(tmp_path, cfg, env, message):
    p = run(tmp_path, cfg, env)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert message in p.stderr, p.stderr
