"""Integration test of authz-netem-proxy with real sockets: an echo server
behind the proxy, the proxy switched through its control port (and
signals). Proves the added one-way delay (printed), that cut fails at once
and heal restores, that blackhole stalls until a client timeout and
releases the held bytes on heal, that a large transfer arrives intact and
in order through a delay (beyond the back-pressure bound), and that bad
flags and bad control lines are refused clearly.

Run: AUTHZ_BIN_DIR=<build>/bin /usr/bin/python3 -m pytest -q -p no:cacheprovider \
     tests/integration/netem_proxy_test.py
"""
import hashlib
import json
import os
import signal
import socket
import socketserver
import statistics
import subprocess
import threading
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.environ.get("AUTHZ_BIN_DIR", os.path.join(REPO, "build", "bin"))
PROXY = os.path.join(BIN_DIR, "authz-netem-proxy")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                data = self.request.recv(65536)
                if not data:
                    return
                self.request.sendall(data)
        except OSError:
            return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def echo():
    srv = _Server(("127.0.0.1", 0), _Echo)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


class Proxy:
    def __init__(self, target, delay_ms=0):
        self.port = free_port()
        self.control_port = free_port()
        args = [PROXY, "--listen", f"127.0.0.1:{self.port}", "--target", f"127.0.0.1:{target}",
                "--control", f"127.0.0.1:{self.control_port}", "--delay-ms", str(delay_ms)]
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
        wait_until(self._listening, what="the proxy to listen")

    def _listening(self):
        assert self.proc.poll() is None, f"proxy exited: {self.proc.stderr.read()}"
        try:
            socket.create_connection(("127.0.0.1", self.control_port), timeout=1).close()
            return True
        except OSError:
            return False

    def ctl(self, line):
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=5) as s:
            s.sendall(line.encode() + b"\n")
            f = s.makefile("rb")
            return json.loads(f.readline())

    def connect(self, timeout=5):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("the proxy ignored SIGTERM")
        err = self.proc.stderr.read()
        assert rc == 0, f"proxy exited {rc}: {err}"
        return err


@pytest.fixture
def proxy_factory(echo):
    made = []

    def make(delay_ms=0, target=None):
        p = Proxy(echo if target is None else target, delay_ms)
        made.append(p)
        return p

    yield make
    for p in made:
        if p.proc.poll() is None:
            p.stop()


def rtt_ms(sock, n=15):
    """Median round trip of a small message, in ms."""
    samples = []
    for i in range(n):
        msg = b"ping%03d" % i
        t0 = time.monotonic()
        sock.sendall(msg)
        got = b""
        while len(got) < len(msg):
            chunk = sock.recv(64)
            assert chunk, "connection closed mid-ping"
            got += chunk
        samples.append((time.monotonic() - t0) * 1000)
        assert got == msg
    return statistics.median(samples)


def test_delay_adds_one_way_latency_each_direction(echo, proxy_factory):
    with socket.create_connection(("127.0.0.1", echo)) as direct:
        direct.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        base = rtt_ms(direct)
    p = proxy_factory(delay_ms=40)
    with p.connect() as s:
        through = rtt_ms(s)
    added = through - base
    print(f"\nnetem: delay 40 ms one way: direct rtt {base:.2f} ms, "
          f"through proxy {through:.2f} ms, added {added:.2f} ms (expected ~80)")
    assert 75 <= added <= 120, added
    # The delay changes at run time, for new bytes.
    assert p.ctl("delay 0")["delay_ms"] == 0
    with p.connect() as s:
        fast = rtt_ms(s)
    print(f"netem: delay 0: through proxy {fast:.2f} ms")
    assert fast < 20, fast
    st = p.ctl("delay 15")
    assert st["mode"] == "pass" and st["delay_ms"] == 15
    with p.connect() as s:
        mid = rtt_ms(s)
    print(f"netem: delay 15: through proxy {mid:.2f} ms (expected ~30)")
    assert 28 <= mid - base <= 60, mid


def test_large_transfer_arrives_intact_in_order_with_delay(proxy_factory):
    # A sink that hashes what it gets, so the 24 MiB (six times the proxy's
    # per-direction bound) exercise the back-pressure in one direction.
    got = {}
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)

    def sink():
        c, _ = lsock.accept()
        h, n = hashlib.sha256(), 0
        while True:
            d = c.recv(1 << 20)
            if not d:
                break
            h.update(d)
            n += len(d)
        c.sendall(b"%d %s" % (n, h.hexdigest().encode()))
        c.close()
        got["done"] = True

    t = threading.Thread(target=sink, daemon=True)
    t.start()
    p = proxy_factory(delay_ms=20, target=lsock.getsockname()[1])
    blob = os.urandom(24 << 20)
    want = hashlib.sha256(blob).hexdigest()
    t0 = time.monotonic()
    with p.connect(timeout=60) as s:
        s.sendall(blob)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            answer += d
    secs = time.monotonic() - t0
    print(f"\nnetem: 24 MiB through a 20 ms proxy in {secs:.2f} s")
    n, h = answer.split()
    assert int(n) == len(blob)
    assert h.decode() == want
    t.join(10)
    lsock.close()
    st = p.ctl("status")
    assert st["bytes_up"] == len(blob)
    wait_until(lambda: p.ctl("status")["connections"] == 0, what="the connection to be closed")


def test_echo_round_trip_of_a_large_blob_with_delay(proxy_factory):
    # Both directions at once, each beyond the bound: no deadlock, no loss.
    p = proxy_factory(delay_ms=10)
    blob = os.urandom(12 << 20)
    out = bytearray()
    with p.connect(timeout=60) as s:
        def reader():
            while len(out) < len(blob):
                d = s.recv(1 << 20)
                if not d:
                    break
                out.extend(d)
        t = threading.Thread(target=reader)
        t.start()
        s.sendall(blob)
        t.join(60)
    assert bytes(out) == blob


def test_cut_fails_at_once_and_heal_restores(proxy_factory):
    p = proxy_factory()
    s = p.connect()
    assert rtt_ms(s, 2) < 50
    st = p.ctl("cut")
    assert st["mode"] == "cut" and st["connections"] == 0
    # The existing connection is reset: the next read fails or sees EOF at
    # once, not after a timeout.
    t0 = time.monotonic()
    s.settimeout(2)
    try:
        data = s.recv(16)
        assert data == b""
    except (ConnectionResetError, BrokenPipeError):
        pass
    assert time.monotonic() - t0 < 0.5
    s.close()
    # New connections are accepted and reset at once.
    t0 = time.monotonic()
    with pytest.raises((ConnectionResetError, BrokenPipeError, ConnectionAbortedError, EOFError)):
        with p.connect(timeout=2) as c:
            c.sendall(b"hello")
            if c.recv(16) == b"":
                raise EOFError("closed")
    assert time.monotonic() - t0 < 0.5
    assert p.ctl("status")["refused"] >= 1
    # Heal: traffic flows again on new connections.
    assert p.ctl("heal")["mode"] == "pass"
    with p.connect() as c:
        assert rtt_ms(c, 3) < 50


def test_blackhole_stalls_then_heal_releases(proxy_factory):
    p = proxy_factory()
    held = p.connect()
    assert rtt_ms(held, 1) < 50
    assert p.ctl("blackhole")["mode"] == "blackhole"
    # An existing connection stalls: only the client's timeout ends it.
    held.settimeout(0.5)
    held.sendall(b"stalled")
    t0 = time.monotonic()
    with pytest.raises(socket.timeout):
        held.recv(16)
    assert time.monotonic() - t0 >= 0.45
    # A new one is accepted (connect succeeds) and stalls too.
    fresh = p.connect(timeout=0.5)
    fresh.sendall(b"fresh")
    with pytest.raises(socket.timeout):
        fresh.recv(16)
    assert p.ctl("status")["connections"] == 2
    # Heal: what was held flows, in order, like a retransmission.
    p.ctl("pass")
    for s, msg in ((held, b"stalled"), (fresh, b"fresh")):
        s.settimeout(5)
        got = b""
        while len(got) < len(msg):
            d = s.recv(16)
            assert d
            got += d
        assert got == msg
        s.close()


def test_blackhole_buffering_is_bounded(proxy_factory):
    # A stalled link must push back on the sender (as a full TCP window
    # would), not let the proxy buffer without limit.
    p = proxy_factory()
    p.ctl("blackhole")
    s = p.connect()
    s.setblocking(False)
    sent, chunk = 0, b"x" * 65536
    deadline, stalled_since = time.monotonic() + 20, None
    while time.monotonic() < deadline:
        try:
            sent += s.send(chunk)
            stalled_since = None
        except BlockingIOError:
            now = time.monotonic()
            if stalled_since is None:
                stalled_since = now
            elif now - stalled_since > 0.5:
                break
            time.sleep(0.01)
    else:
        raise AssertionError(f"the sender was never pushed back ({sent} bytes accepted)")
    print(f"\nnetem: blackhole took {sent / 2**20:.1f} MiB before pushing back "
          "(proxy bound 4 MiB plus kernel socket buffers)")
    assert sent < 40 << 20
    s.close()


def test_target_down_resets_the_client(echo, proxy_factory):
    p = proxy_factory(target=free_port())
    t0 = time.monotonic()
    with p.connect() as s:
        s.settimeout(2)
        try:
            assert s.recv(16) == b""
        except ConnectionResetError:
            pass
    assert time.monotonic() - t0 < 1
    assert p.proc.poll() is None


def test_signals_cut_and_heal(proxy_factory):
    p = proxy_factory()
    p.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: p.ctl("status")["mode"] == "cut", what="SIGUSR1 to cut")
    p.proc.send_signal(signal.SIGUSR2)
    wait_until(lambda: p.ctl("status")["mode"] == "pass", what="SIGUSR2 to heal")
    with p.connect() as s:
        assert rtt_ms(s, 2) < 50
    err = p.stop()
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    msgs = [(line.get("msg"), line.get("mode")) for line in lines]
    assert ("mode changed", "cut") in msgs and ("mode changed", "pass") in msgs
    assert all(line["component"] == "netem-proxy" for line in lines)


def test_control_errors(proxy_factory):
    p = proxy_factory()
    with socket.create_connection(("127.0.0.1", p.control_port), timeout=5) as s:
        f = s.makefile("rb")
        for bad in (b"frobnicate", b"delay", b"delay x", b"delay 9999999", b"cut now", b""):
            s.sendall(bad + b"\n")
            reply = json.loads(f.readline())
            assert "error" in reply, (bad, reply)
        # The same connection still takes good commands.
        s.sendall(b"status\r\n")
        assert json.loads(f.readline())["mode"] == "pass"
        # A line that never ends is refused and the connection closed.
        s.sendall(b"x" * 5000)
        assert "too long" in json.loads(f.readline())["error"]
        try:
            assert f.readline() == b""
        except ConnectionResetError:
            pass  # the unread rest of the line turns the close into a reset
    assert p.ctl("status")["mode"] == "pass"


@pytest.mark.parametrize("args,fragment", [
    ([], "required"),
    (["--listen", "127.0.0.1:1"], "required"),
    (["--listen", "127.0.0.1:1", "--target", "127.0.0.1:2", "--delay-ms", "abc"], "--delay-ms"),
    (["--listen", "nowhere:1", "--target", "127.0.0.1:2"], "numeric IPv4"),
    (["--frob"], "unknown argument"),
])
def test_bad_flags_exit_2(args, fragment):
    r = subprocess.run([PROXY] + args, capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert fragment in r.stderr
    assert r.stdout == ""


def test_help_version_and_taken_port():
    r = subprocess.run([PROXY, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "--control" in r.stdout
    r = subprocess.run([PROXY, "--version"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.startswith("authz-netem-proxy ")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = subprocess.run([PROXY, "--listen", f"127.0.0.1:{port}", "--target", "127.0.0.1:1"],
                           capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert "cannot listen" in r.stderr
