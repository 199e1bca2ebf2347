"""ngx_http_authz_filter_module (issue 12) on the session's cluster, whose
gateways load it (tools/local-cluster's default), and nginx -t on
configurations of its own:

- answers of the module itself: garbage and expired tokens (401 with
  invalid_token), path-confusion spellings, methods mapped to other
  actions, the variables in the access log;
- nginx -t: bad directive values name the file and line; a missing or
  invalid authz_filter_config refuses to start instead of allowing;
- nginx -s reload under wrk: no failed request, and the processes hold
  the same descriptors and authz-server connections as before.
"""
import http.client
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

import conftest as rc
from conftest import fresh, token

wait_until = rc.wait_until
MODULE = os.environ.get("AUTHZ_NGINX_MODULE") or os.path.join(
    os.path.dirname(rc.BIN), "lib", "ngx_http_authz_filter_module.so")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@pytest.fixture(scope="module")
def eu(lc):
    r = lc.regions["eu"]
    assert r.kind == "module", \
        f"the cluster's gateways do not load the module ({r.kind}): is {MODULE} built?"
    return r


def nginx_env():
    """A sanitizer build of the module needs the runtime preloaded."""
    env = dict(os.environ)
    out = subprocess.run(["ldd", MODULE], capture_output=True, text=True).stdout
    if "libasan" in out:
        lib = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                             text=True).stdout.strip()
        env["LD_PRELOAD"] = lib
        env["ASAN_OPTIONS"] = "detect_leaks=0"
    return env


def test_module_answers_bad_tokens_and_odd_paths(lc, eu):
    s = fresh("mod")
    tok = token(s, lc.env)
    eu.assign(eu.user(s), "runtime_groups/rgm")
    wait_until(lambda: eu.get("/runtime-groups/rgm", tok).status_code == 200, 30,
               "the grant allowed through the module")
    r = eu.get("/runtime-groups/rgm", tok)
    assert s in r.text, r.text  # $authz_subject reached the upstream
    for bad in ("garbage", tok[:-4] + "AAAA", tok + "x"):
        r = eu.get("/runtime-groups/rgm", bad)
        assert r.status_code == 401, (bad, r.status_code, r.text)
        assert 'error="invalid_token"' in r.headers.get("WWW-Authenticate", ""), r.headers
        assert r.json()["error"]["reason"] == "bad_token", r.text
    r = eu.s.get(eu.gateway_url + "/runtime-groups/rgm", timeout=10,
                 headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401, (r.status_code, r.text)
    for odd in ("/runtime-groups/%2e%2e/rgm", "//runtime-groups/%2F", "/runtime-groups/rgm%5Cx",
                "/runtime-groups/*", "/runtime-groups/rgm/../rgm2", "/RUNTIME-groups/rgm"):
        r = eu.get(odd, tok)
        assert r.status_code in (400, 403), (odd, r.status_code, r.text)
        assert r.headers.get("Authz-Decision") != "allow", (odd, r.headers)
    # POST is another action, which the grant does not cover.
    r = eu.s.post(eu.gateway_url + "/runtime-groups/rgm", timeout=10,
                  headers={"Authorization": f"Bearer {tok}"}, data="{}")
    assert r.status_code == 403 and r.headers["Authz-Decision"] == "final", (r.status_code,
                                                                           r.headers)
    assert r.json()["error"] == {"code": "forbidden", "decision": "final",
                                 "reason": r.headers["Authz-Reason"]}, r.text
    # Two revision headers are refused, never half-read.
    host, port = eu.gateway_url.split("//", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("GET", "/runtime-groups/rgm")
    conn.putheader("Authorization", f"Bearer {tok}")
    conn.putheader("Authz-Revision", "a")
    conn.putheader("Authz-Revision", "b")
    conn.endheaders()
    r2 = conn.getresponse()
    assert r2.status in (400, 403) and r2.getheader("Authz-Decision") != "allow", \
        (r2.status, r2.getheaders())
    conn.close()
    # The verdicts are in the access log, from the module's variables.
    log = os.path.join(lc.run, "logs", "nginx-eu.access.log")
    wait_until(lambda: os.path.exists(log) and
               re.search(rf'authz=allow reason="allowed" subject="{s}"', open(log).read()),
               10, "the allow in the access log (flushed every second)")
    assert re.search(r'authz=final reason="bad_token"', open(log).read())


def test_module_status_shows_the_workers_policy(eu):
    st = eu.status()
    assert st["loaded"] is True and st["feed_connected"] is True, st
    assert st["assignments"] >= 1 and st["routes"] >= 1, st
    assert set(st["origins"]) == {"us", "eu", "ap"}, st
    assert all(o["staleness_ms"] < 5000 for o in st["origins"].values()), st


# ---- nginx -t --------------------------------------------------------------------

def nginx_t(tmp, body, top=""):
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"load_module {MODULE};\n{top}pid {tmp}/nginx.pid;\nerror_log stderr;\n"
                f"events {{}}\nhttp {{\n{body}\n}}\n")
    p = subprocess.run([NGINX, "-t", "-p", tmp + "/", "-c", conf, "-e", "/dev/stderr"],
                       capture_output=True, text=True, env=nginx_env(), timeout=60)
    return p.returncode, p.stderr, conf


def line_of(conf, needle):
    with open(conf) as f:
        for n, text in enumerate(f, 1):
            if needle in text:
                return n
    raise AssertionError(needle)


def test_nginx_t_refuses_bad_directives_and_configurations(lc):
    good = os.path.join(lc.run, "gateway-eu.json")
    tmp = tempfile.mkdtemp(prefix="authz-it-ngxt.")
    try:
        bad_json = os.path.join(tmp, "bad.json")
        with open(bad_json, "w") as f:
            f.write('{"service": {"region": "eu"},')
        unknown = os.path.join(tmp, "unknown.json")
        with open(good) as f:
            text = f.read()
        with open(unknown, "w") as f:
            f.write(text.replace('"decision": {', '"decision": {"retry_budjet_ms": 5, ', 1))
        no_keys = os.path.join(tmp, "nokeys.json")
        with open(no_keys, "w") as f:
            f.write(re.sub(r'"keys_file": "[^"]*"', f'"keys_file": "{tmp}/none.pem"', text))
        cases = [
            ("authz_filter maybe;", "authz_filter maybe",
             'invalid value "maybe" in "authz_filter" directive'),
            (f"authz_filter_config {good}; authz_filter_retry_budget 3 parsecs;",
             "authz_filter_retry_budget", "invalid"),
            ("authz_filter on;", "authz_filter on",
             '"authz_filter on" without "authz_filter_config"'),
            (f"authz_filter_config {tmp}/missing.json; authz_filter on;",
             "missing.json", "No such file or directory"),
            (f"authz_filter_config {bad_json}; authz_filter on;", "bad.json", "bad.json"),
            (f"authz_filter_config {unknown}; authz_filter on;", "unknown.json",
             "retry_budjet_ms"),
            (f"authz_filter_config {no_keys}; authz_filter on;", "nokeys.json", "none.pem"),
            (f"authz_filter_config {good}; authz_filter_config {good};",
             "authz_filter_config", "is duplicate"),
            (f"authz_filter_config {good}; authz_filter on on;", "authz_filter on on",
             "invalid number of arguments"),
        ]
        for directives, needle, message in cases:
            body = f"server {{ listen 127.0.0.1:1; location / {{ {directives} }} }}"
            code, err, conf = nginx_t(tmp, body)
            assert code != 0, (directives, err)
            assert message in err, (directives, err)
            assert f"{conf}:{line_of(conf, needle)}" in err, (directives, err)
        # And the good file passes, so the cases above failed for their reason.
        code, err, _ = nginx_t(tmp, f"authz_filter_config {good}; server {{ listen 127.0.0.1:1;"
                                    f" location / {{ authz_filter on; }} }}")
        assert code == 0, err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- reload under load ---------------------------------------------------------------

def nginx_pids(master):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True,
                         text=True).stdout.split()
    return [master] + [int(p) for p in out]


def fd_count(pids):
    n = 0
    for p in pids:
        try:
            n += len(os.listdir(f"/proc/{p}/fd"))
        except FileNotFoundError:
            pass
    return n


def authz_connections(pids, authz_port):
    """Established connections from these processes to the authz-server."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", f"( dport = :{authz_port} )"],
                         capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() for p in pids if f"pid={p}," in line)


def settled(master, expect_workers):
    """Only the new worker left (old ones exit once their requests end)."""
    return len(nginx_pids(master)) == 1 + expect_workers


def fresh_worker_fds(master, authz_port):
    """Descriptors of the master and one idle worker just started by a
    reload (once the old ones have gone)."""
    old = set(nginx_pids(master)[1:])
    os.kill(master, 1)
    wait_until(lambda: settled(master, 1) and not old & set(nginx_pids(master)[1:]), 60,
               "the reload's new worker alone")
    pids = nginx_pids(master)
    # Ready once its feed is connected.
    wait_until(lambda: authz_connections(pids, authz_port) == 1, 30, "the new worker's feed")
    return {"master": fd_count(pids[:1]), "worker": fd_count(pids[1:])}


def test_reload_under_load_fails_nothing_and_leaks_nothing(lc, eu):
    s = fresh("mod-reload")
    tok = token(s, lc.env)
    eu.assign(eu.user(s), "runtime_groups/rgr")
    wait_until(lambda: eu.get("/runtime-groups/rgr", tok).status_code == 200, 30,
               "the grant allowed")
    master = lc.pid("gateway-eu")
    authz_port = int(eu.authz_url.rsplit(":", 1)[1])
    # A worker's kept-alive upstream connections are its own business:
    # descriptors are compared between fresh, idle workers.
    fds0 = fresh_worker_fds(master, authz_port)
    conns0 = authz_connections(nginx_pids(master), authz_port)
    assert conns0 == 1, conns0  # the worker's feed
    # New connections per request: a kept-alive connection that nginx
    # closes while idle on a graceful stop is nginx's behaviour with any
    # module (the client's retry), not a failed decision.
    wrk = subprocess.Popen(["wrk", "-t1", "-c8", "-d8s", "-H", f"Authorization: Bearer {tok}",
                            "-H", "Connection: close", eu.gateway_url + "/runtime-groups/rgr"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        reloads = 0
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            time.sleep(0.8)  # the load's pace between reloads, not a wait for a condition
            os.kill(master, 1)  # SIGHUP: nginx -s reload
            reloads += 1
        out, _ = wrk.communicate(timeout=60)
    finally:
        if wrk.poll() is None:
            wrk.kill()
    print(f"\n{reloads} reloads under wrk:\n{out}")
    total = re.search(r"(\d+) requests in", out)
    assert total and int(total.group(1)) > 100, out
    assert "Non-2xx" not in out, out
    assert "Socket errors" not in out, out
    wait_until(lambda: settled(master, 1), 60, "the old workers gone after the reloads")
    wait_until(lambda: authz_connections(nginx_pids(master), authz_port) == conns0, 30,
               "the old workers' feed connections closed")
    assert fresh_worker_fds(master, authz_port) == fds0
    log = os.path.join(lc.run, "logs", "nginx-eu.error.log")
    with open(log, errors="replace") as f:
        text = f.read()
    assert "exited on signal" not in text, text[-3000:]
    assert eu.get("/runtime-groups/rgr", tok).status_code == 200
