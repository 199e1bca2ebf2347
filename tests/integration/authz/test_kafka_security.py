"""Kafka over TLS and SASL: the identity relay and the authz-server consumer
against the session broker's SASL_SSL listener and its SSL listener that
requires a client certificate (tools/local-cluster: a CA made for the run,
a user for PLAIN and SCRAM-SHA-256/512, a client certificate).

A refused login or a broker certificate that does not verify must lose
nothing: the write stays in the outbox, the relay says why in its log, and
the event is published once the setting is fixed. Settings that cannot
work stop each binary at start-up with the key named.
"""
import json
import os
import subprocess
import uuid

import pytest

from conftest import Authz, BIN, Client, wait_until
import conftest

Identity = conftest._id.Identity
read_events = conftest._id.read_events


def secure(cluster, mechanism="PLAIN", password=None, ca=True):
    s = {"bootstrap": cluster["KAFKA_SASL_SSL_BOOTSTRAP"], "security_protocol": "sasl_ssl",
         "sasl_mechanism": mechanism, "sasl_username": cluster["KAFKA_SASL_USERNAME"],
         "sasl_password": password or cluster["KAFKA_SASL_PASSWORD"]}
    if ca:
        s["ssl_ca_location"] = cluster["KAFKA_CA_FILE"]
    return s


def mutual_tls(cluster, cert=True):
    s = {"bootstrap": cluster["KAFKA_SSL_BOOTSTRAP"], "security_protocol": "ssl",
         "ssl_ca_location": cluster["KAFKA_CA_FILE"]}
    if cert:
        s.update(ssl_certificate_location=cluster["KAFKA_CLIENT_CERT"],
                 ssl_key_location=cluster["KAFKA_CLIENT_KEY"])
    return s


SETTINGS = {
    "PLAIN": lambda c: (secure(c, "PLAIN"), "sasl_ssl PLAIN as authz"),
    "SCRAM-SHA-256": lambda c: (secure(c, "SCRAM-SHA-256"), "sasl_ssl SCRAM-SHA-256 as authz"),
    "SCRAM-SHA-512": lambda c: (secure(c, "SCRAM-SHA-512"), "sasl_ssl SCRAM-SHA-512 as authz"),
    "mutual TLS": lambda c: (mutual_tls(c), "ssl"),
}


def log_has(path, needle):
    try:
        with open(path) as f:
            return needle in f.read()
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("relay,consumer", [("PLAIN", "SCRAM-SHA-256"),
                                            ("mutual TLS", "SCRAM-SHA-512")])
def test_end_to_end_secured(cluster, workdir, keys, relay, consumer):
    """A grant from the relay to a decision of authz-server, both secured."""
    (rk, rdesc), (ck, cdesc) = SETTINGS[relay](cluster), SETTINGS[consumer](cluster)
    name = f"tls{uuid.uuid4().hex[:6]}"
    ident = Identity(cluster, workdir, keys, name, extra={"kafka": rk})
    ident.create_storage()
    ident.start()
    az = Authz(cluster, workdir, ident.topic, name, extra={"kafka": ck})
    try:
        az.start()
        admin = Client(ident.url, keys.token())
        u = admin.post("/v1/users", {"subject": "tls-user", "email": "t@x.io", "name": "T"})
        assert u.status_code == 201, u.text
        role = admin.post("/v1/roles", {"name": f"readers-{name}", "permissions": ["doc:read"]})
        assert role.status_code == 201, role.text
        r = admin.post("/v1/role-assignments",
                       {"principal": {"type": "user", "id": u.json()["id"]},
                        "role_id": role.json()["id"], "region": "us", "resource": "doc/1"})
        assert r.status_code == 201, r.text
        rev = r.headers["Authz-Revision"]
        az.wait_applied(rev, timeout=60)
        assert az.check("tls-user", "doc:read", "doc/1", revision=rev)["decision"] == "allow"
        # Each start line says how it reached Kafka, without the password.
        assert log_has(ident.log, f'"kafka":"{rdesc}"'), open(ident.log).read()
        assert log_has(az.log, f'"kafka":"{cdesc}"'), open(az.log).read()
        for path in (ident.log, az.log):
            assert cluster["KAFKA_SASL_PASSWORD"] not in open(path).read()
    finally:
        az.stop()
        ident.stop()


@pytest.mark.parametrize("case", ["wrong_password", "unverified_broker", "no_client_certificate"])
def test_refused_connection_loses_nothing(cluster, workdir, keys, case):
    if case == "wrong_password":
        bad, why = secure(cluster, password="not-the-password"), "Authentication failed"
    elif case == "unverified_broker":
        # No CA: the system store does not know the run's CA.
        bad, why = secure(cluster, ca=False), "certificate verify failed"
    else:
        bad, why = mutual_tls(cluster, cert=False), "bad certificate"
    name = f"refused-{case}"
    ident = Identity(cluster, workdir, keys, name, extra={"kafka": bad})
    ident.create_storage()
    ident.start(ready=False)
    try:
        admin = Client(ident.url, keys.token())
        subject = f"kept-{uuid.uuid4().hex[:8]}"
        # Started without waiting for ready (the broker refuses it): its
        # database link may still be connecting, which answers 503 and
        # commits nothing, so the write is retried past that.
        # (A tuple: a Response with a 4xx status is falsy.)
        u, = wait_until(lambda: (lambda r: (r,) if r.status_code != 503 else None)(
            admin.post("/v1/users", {"subject": subject, "email": "k@x.io", "name": "K"})),
            30, "the identity service's database link")
        assert u.status_code == 201, u.text
        wait_until(lambda: log_has(ident.log, why), 60, f"the relay logging {why!r}")
        # Committed, not published: the outbox keeps it.
        assert ident.sql("SELECT count(*) FROM identity.outbox WHERE published_at IS NULL "
                         "AND type = 'user.created'") == "1"
    finally:
        ident.stop()
    # The same service with the right setting publishes what it kept.
    with open(ident.conf) as f:
        cfg = json.load(f)
    cfg["kafka"] = dict(secure(cluster), topic=ident.topic)
    with open(ident.conf, "w") as f:
        json.dump(cfg, f)
    ident.start()
    try:
        evs = read_events(cluster["KAFKA_BOOTSTRAP"], ident.topic,
                          lambda es: any(e["type"] == "user.created" and
                                         e["data"].get("subject") == subject for e in es))
        assert [e["data"]["subject"] for e in evs if e["type"] == "user.created"] == [subject]
        wait_until(lambda: ident.sql("SELECT count(*) FROM identity.outbox "
                                     "WHERE published_at IS NULL") == "0", 30,
                   "the outbox emptied")
    finally:
        ident.stop()


BAD_SETTINGS = [
    ({"security_protocol": "tls"}, "kafka.security_protocol \"tls\""),
    ({"security_protocol": "sasl_ssl", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
     "kafka.sasl_password must be set"),
    ({"ssl_ca_location": "/nonexistent/ca.pem"},
     "kafka.ssl_ca_location is set but kafka.security_protocol plaintext has no TLS"),
    ({"security_protocol": "ssl", "ssl_ca_location": "/nonexistent/ca.pem"},
     "kafka.ssl_ca_location: /nonexistent/ca.pem: No such file"),
    ({"security_protocol": "sasl_plaintext", "sasl_mechanism": "GSSAPI", "sasl_username": "u",
      "sasl_password": "p"}, "kafka.sasl_mechanism \"GSSAPI\""),
    ({"sasl_user": "u"}, "kafka.sasl_user"),
]


@pytest.mark.parametrize("binary", ["authz-identity", "authz-server"])
@pytest.mark.parametrize("settings,message", BAD_SETTINGS)
def test_bad_settings_stop_at_start(cluster, workdir, binary, settings, message):
    conf = os.path.join(workdir, f"bad-{uuid.uuid4().hex[:8]}.json")
    cfg = {"service": {"region": "us", "regions": "us"},
           "pg": {"url": cluster["PG_URL_US"]},
           "kafka": dict({"bootstrap": cluster["KAFKA_BOOTSTRAP"]}, **settings),
           "relay": {"enabled": True}, "api": {"enabled": False}}
    if binary == "authz-server":
        del cfg["relay"], cfg["api"]
    with open(conf, "w") as f:
        json.dump(cfg, f)
    p = subprocess.run([os.path.join(BIN, binary), "--config", conf], capture_output=True,
                       text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert message in p.stderr, p.stderr


def test_consumer_refused_login_is_not_ready(cluster, workdir, identity):
    """authz-server with a wrong password: not ready, and /readyz says why."""
    az = Authz(cluster, workdir, identity.topic, "refused",
               extra={"kafka": secure(cluster, "SCRAM-SHA-256", password="wrong"),
                      "consumer": {"stall_ms": 1000}})
    logf = open(az.log, "a")
    az.proc = subprocess.Popen([os.path.join(BIN, "authz-server"), "--config", az.conf],
                               stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
    logf.close()
    try:
        def refused():
            assert az.proc.poll() is None, open(az.log).read()[-2000:]
            try:
                r = az.s.get(az.url + "/readyz", timeout=2)
            except Exception:
                return False
            # Ready at first (nothing is late yet), until stall_ms passes.
            return r.status_code == 503 and "SASL authentication error" in r.text
        wait_until(refused, 60, "/readyz naming the refused login")
        st = az.status()["consumer"]
        assert st["state"] == "stalled" and st["events_applied"] == 0, st
    finally:
        az.stop()
