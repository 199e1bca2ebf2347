#!/usr/bin/env bash
# Integration test of tools/local-cluster itself: up on free ports in a
# private run folder, env/status/second up, every PostgreSQL and the broker
# answer, the topics exist with one partition, a half-up cluster is
# repaired, down leaves no process, and a second down is a no-op. When
# authz-replicator and authz-netem-proxy are built: up --delay-ms starts a
# proxy per ordered pair with that delay and a replicator per region, a
# change crosses regions through them, link cut/heal/delay/blackhole (both
# ways and --one-way) change the proxies (checked through their control
# port and with real requests), verify agrees, and a dead proxy is
# repaired. When authz-filterd is built and nginx installed: each region's
# filter and nginx gateway are up (--gateway auth_request: the gateway
# module is it_gateway's), the gateway passes the filter's 200,
# 401, 403 and headers through, maps an unreachable filter to 503, a dead
# filter or nginx is repaired, and down leaves no nginx on the gateway
# ports. Takes the binaries from $AUTHZ_BIN_DIR (default
# <repo>/build/bin).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cluster="$repo/tools/local-cluster"
bin_dir=${AUTHZ_BIN_DIR:-$repo/build/bin}
run_dir=$(mktemp -d /tmp/authz-it-cluster.XXXXXX)
export AUTHZ_BIN_DIR="$bin_dir"
# The caller's own cluster settings must not leak into this one.
unset AUTHZ_RUN_DIR AUTHZ_BASE_PORT

fail() { echo "FAIL: $*" >&2; exit 1; }
cleanup() {
    "$cluster" down --run-dir "$run_dir" --purge >/dev/null 2>&1 || true
    rm -rf "$run_dir"
}
trap cleanup EXIT

# Running: exists and is not a zombie (an exited daemon stays in /proc
# until init reaps it).
running() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}

delay=30
"$cluster" up --regions us,eu --run-dir "$run_dir" --base-port auto --delay-ms $delay --gateway auth_request
replication=0
if [ -x "$bin_dir/authz-replicator" ] && [ -x "$bin_dir/authz-netem-proxy" ] &&
   [ -x "$bin_dir/authz-server" ] && [ -x "$bin_dir/authz-identity" ]; then
    replication=1
fi

env_text=$("$cluster" env --run-dir "$run_dir")
for v in KAFKA_BOOTSTRAP AUTHZ_REGIONS AUTHZ_RUN_DIR PG_URL_US PG_URL_EU IDENTITY_TOPIC_US IDENTITY_TOPIC_EU; do
    grep -q "^$v=" <<<"$env_text" || fail "env lacks $v"
done
eval "$env_text"
[ "$AUTHZ_REGIONS" = us,eu ] || fail "AUTHZ_REGIONS=$AUTHZ_REGIONS"
[ "$AUTHZ_RUN_DIR" = "$run_dir" ] || fail "AUTHZ_RUN_DIR=$AUTHZ_RUN_DIR, not $run_dir"
[ "$IDENTITY_TOPIC_EU" = identity-events.eu ] || fail "IDENTITY_TOPIC_EU=$IDENTITY_TOPIC_EU"

"$cluster" status --run-dir "$run_dir" >/dev/null || fail "status is not 0 while up"
out=$("$cluster" up --run-dir "$run_dir")
grep -q "already up" <<<"$out" || fail "a second up was not a no-op: $out"

for url in "$PG_URL_US" "$PG_URL_EU"; do
    [ "$(psql -X -tAc 'select 1' "$url")" = 1 ] || fail "no answer from $url"
done
"$bin_dir/authz-kafka-admin" wait --bootstrap "$KAFKA_BOOTSTRAP" --timeout-ms 10000 ||
    fail "the broker does not answer"
meta=$(kcat -L -b "$KAFKA_BOOTSTRAP")
for t in "$IDENTITY_TOPIC_US" "$IDENTITY_TOPIC_EU"; do
    grep -q "topic \"$t\" with 1 partitions" <<<"$meta" || fail "topic $t missing or not 1 partition"
done
# create-topics is idempotent, and refuses a partition count that differs.
"$bin_dir/authz-kafka-admin" create-topics --bootstrap "$KAFKA_BOOTSTRAP" "$IDENTITY_TOPIC_US" \
    >/dev/null || fail "create-topics of an existing topic failed"
if "$bin_dir/authz-kafka-admin" create-topics --bootstrap "$KAFKA_BOOTSTRAP" --partitions 2 \
        "$IDENTITY_TOPIC_US" >/dev/null 2>&1; then
    fail "create-topics accepted an existing topic with another partition count"
fi

# The identity service of each region is up, and a change made through it
# reaches that region's topic.
if [ -x "$bin_dir/authz-identity" ]; then
    for v in IDENTITY_URL_US IDENTITY_URL_EU; do
        grep -q "^$v=" <<<"$env_text" || fail "env lacks $v"
    done
    curl -fsS "$IDENTITY_URL_EU/readyz" >/dev/null || fail "identity eu not ready"
    token=$("$repo/tools/dev-token" --sub local-cluster-test --admin)
    team=$(curl -fsS -X POST "$IDENTITY_URL_EU/v1/teams" -H "Authorization: Bearer $token" \
        -H 'Content-Type: application/json' -d '{"name": "cluster-test"}') || fail "POST /v1/teams failed"
    id=$(/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$team")
    found=0
    for _ in $(seq 1 20); do
        # Heartbeats keep the partition growing, so kcat -e may never see
        # its end: read for a bounded time instead. Read first, then grep:
        # with pipefail, grep -q quitting early would fail the pipeline.
        events=$(timeout 2 kcat -C -b "$KAFKA_BOOTSTRAP" -t "$IDENTITY_TOPIC_EU" -o beginning -q 2>/dev/null || true)
        if grep -q "\"type\":\"team.created\".*$id" <<<"$events"; then found=1; break; fi
    done
    [ $found -eq 1 ] || fail "team.created for $id never reached $IDENTITY_TOPIC_EU"

    # ... and the authz-server of that region turns an assignment to the
    # team into an allow for its member.
    if [ -x "$bin_dir/authz-server" ]; then
        for v in AUTHZ_URL_US AUTHZ_URL_EU; do
            grep -q "^$v=" <<<"$env_text" || fail "env lacks $v"
        done
        curl -fsS "$AUTHZ_URL_EU/readyz" >/dev/null || fail "authz eu not ready"
        post() { curl -fsS -X "$1" "$IDENTITY_URL_EU$2" -H "Authorization: Bearer $token" \
                     -H 'Content-Type: application/json' ${3:+-d "$3"}; }
        jid() { /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
        user=$(post POST /v1/users '{"subject": "lc-user", "email": "lc@x.io", "name": "lc"}' | jid)
        post PUT "/v1/teams/$id/members/$user" >/dev/null || fail "PUT member failed"
        role=$(post POST /v1/roles '{"name": "lc-reader", "permissions": ["doc:read"]}' | jid)
        post POST /v1/role-assignments "{\"principal\": {\"type\": \"team\", \"id\": \"$id\"},
            \"role_id\": \"$role\", \"region\": \"eu\", \"resource\": \"doc/*\"}" >/dev/null ||
            fail "POST assignment failed"
        allowed=0
        for _ in $(seq 1 100); do
            if curl -fsS "$AUTHZ_URL_EU/v1/check" -H 'Content-Type: application/json' \
                    -d '{"subject": "lc-user", "action": "doc:read", "resource": "doc/1"}' |
                    grep -q '"decision":"allow"'; then allowed=1; break; fi
            sleep 0.1
        done
        [ $allowed -eq 1 ] || fail "the assignment made in eu never became an allow in eu"
    fi
fi

# Replication through the proxies, and the links between the regions.
if [ $replication -eq 1 ]; then
    for v in REPLICATOR_URL_US REPLICATOR_URL_EU PROXY_URL_US_EU PROXY_URL_EU_US \
             PROXY_CONTROL_US_EU PROXY_CONTROL_EU_US; do
        grep -q "^$v=" <<<"$env_text" || fail "env lacks $v"
    done
    curl -fsS "$REPLICATOR_URL_US/readyz" >/dev/null || fail "replicator us not ready"
    # The proxy's control protocol: one JSON line per command.
    ctl() {
        /usr/bin/python3 - "$1" "$2" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
with socket.create_connection((host, int(port)), timeout=5) as s:
    s.sendall(sys.argv[2].encode() + b"\n")
    print(s.makefile("rb").readline().decode().strip())
PY
    }
    field() { /usr/bin/python3 -c 'import json,sys; print(json.loads(sys.stdin.read())[sys.argv[1]])' "$1"; }
    # Seconds a request through a proxy takes; fails when it fails.
    through() { curl -sS -o /dev/null --max-time "${2:-5}" -w '%{time_total}' "$1/healthz"; }
    ms() { /usr/bin/python3 -c 'import sys; print(int(float(sys.argv[1]) * 1000))' "$1"; }
    for c in "$PROXY_CONTROL_US_EU" "$PROXY_CONTROL_EU_US"; do
        st=$(ctl "$c" status)
        [ "$(field mode <<<"$st")" = pass ] || fail "proxy $c not in pass mode: $st"
        [ "$(field delay_ms <<<"$st")" = $delay ] || fail "proxy $c lacks the delay of up: $st"
    done
    st=$("$cluster" status --run-dir "$run_dir")
    grep -q "^proxy-us-eu .* up .*pass, delay $delay ms" <<<"$st" ||
        fail "status does not show proxy-us-eu with its delay: $st"
    # A request through the proxy pays the delay both ways (one
    # connection: the TCP handshake is local, the request and the answer
    # cross it).
    t=$(ms "$(through "$PROXY_URL_US_EU")") || fail "no answer through the proxy us->eu"
    echo "local-cluster test: GET /healthz through a ${delay} ms proxy: $t ms"
    [ "$t" -ge $((2 * delay - 5)) ] && [ "$t" -lt 1000 ] || fail "request through the proxy took $t ms"

    # The assignment made in eu above reaches us's store through eu's feed,
    # the proxy us->eu and us's replicator.
    eu_rows() { [ "$(psql -X -tAc "select count(*) from authz.policies where origin = 'eu'" "$PG_URL_US")" -ge 1 ]; }
    ok=0
    for _ in $(seq 1 100); do if eu_rows; then ok=1; break; fi; sleep 0.1; done
    [ $ok -eq 1 ] || fail "the policy made in eu never reached us through the replicator"
    "$cluster" verify --run-dir "$run_dir" >/dev/null 2>&1 || fail "verify does not pass on a converged cluster"

    # cut: both directions refuse at once; heal restores them.
    out=$("$cluster" link cut us eu --run-dir "$run_dir") || fail "link cut failed"
    [ "$(grep -c '"mode":"cut"' <<<"$out")" -eq 2 ] || fail "link cut did not cut both proxies: $out"
    [ "$(field mode <<<"$(ctl "$PROXY_CONTROL_EU_US" status)")" = cut ] || fail "eu->us not cut"
    start=$SECONDS
    ! through "$PROXY_URL_US_EU" 5 >/dev/null 2>&1 || fail "a request crossed a cut link"
    [ $((SECONDS - start)) -le 2 ] || fail "a cut link did not fail at once"
    "$cluster" link heal us eu --run-dir "$run_dir" >/dev/null || fail "link heal failed"
    through "$PROXY_URL_US_EU" >/dev/null || fail "no answer through us->eu after heal"
    through "$PROXY_URL_EU_US" >/dev/null || fail "no answer through eu->us after heal"

    # --one-way: only us->eu, the proxy us's replicator uses to reach eu.
    "$cluster" link delay us eu 120 --one-way --run-dir "$run_dir" >/dev/null || fail "link delay failed"
    [ "$(field delay_ms <<<"$(ctl "$PROXY_CONTROL_US_EU" status)")" = 120 ] || fail "us->eu delay not set"
    [ "$(field delay_ms <<<"$(ctl "$PROXY_CONTROL_EU_US" status)")" = $delay ] || fail "--one-way changed eu->us"
    t=$(ms "$(through "$PROXY_URL_US_EU")")
    [ "$t" -ge 235 ] || fail "a 120 ms link answered in $t ms"
    "$cluster" link blackhole us eu --one-way --run-dir "$run_dir" >/dev/null || fail "link blackhole failed"
    rc=0; through "$PROXY_URL_US_EU" 1 >/dev/null 2>&1 || rc=$?
    [ $rc -eq 28 ] || fail "a blackholed link did not stall until the client's timeout (curl exit $rc)"
    through "$PROXY_URL_EU_US" >/dev/null || fail "--one-way blackholed eu->us too"
    "$cluster" link heal us eu --run-dir "$run_dir" >/dev/null || fail "link heal failed"
    "$cluster" link delay us eu $delay --run-dir "$run_dir" >/dev/null || fail "link delay both ways failed"
    [ "$(field mode <<<"$(ctl "$PROXY_CONTROL_US_EU" status)")" = pass ] || fail "us->eu not healed"

    # A dead proxy shows in status and up starts it again with the delay.
    kill -KILL "$(cat "$run_dir/pids/proxy-eu-us.pid")"
    wait_gone() {
        local deadline=$((SECONDS + 10))
        until ! running "$1"; do
            [ $SECONDS -lt $deadline ] || fail "process $1 survived SIGKILL"
            sleep 0.1
        done
    }
    wait_gone "$(cat "$run_dir/pids/proxy-eu-us.pid")"
    st=$("$cluster" status --run-dir "$run_dir") && fail "status exited 0 with a dead proxy"
    grep -q "^proxy-eu-us .* down" <<<"$st" || fail "a dead proxy shows as up: $st"
    "$cluster" up --run-dir "$run_dir" >/dev/null || fail "up did not restart the dead proxy"
    [ "$(field delay_ms <<<"$(ctl "$PROXY_CONTROL_EU_US" status)")" = $delay ] || fail "restarted proxy lost the delay"

    # Bad link commands: exit 2, clear message.
    for args in "link cut us" "link cut us us" "link delay us eu" "link delay us eu -5" \
                "link frob us eu" "link cut us xx" "status --one-way" "up --delay-ms x"; do
        set +e
        # shellcheck disable=SC2086 # one word per argument
        msg=$("$cluster" $args --run-dir "$run_dir" 2>&1 >/dev/null); rc=$?
        set -e
        [ $rc -eq 2 ] && [ -n "$msg" ] || fail "\"$args\" exited $rc (message: $msg)"
    done
fi

# The gateway filter and the nginx gateway of each region. A placeholder
# authz-filterd (one that does not even print the shared --help) is not
# started by up, so it is not tested either.
gateway=0
if [ -x "$bin_dir/authz-filterd" ] && "$bin_dir/authz-filterd" --help 2>&1 | grep -q -- --config &&
   command -v nginx >/dev/null && [ -x "$bin_dir/authz-server" ] && [ -x "$bin_dir/authz-identity" ]; then
    gateway=1
fi
gateway_ports=""
if [ $gateway -eq 1 ]; then
    for v in FILTER_URL_US FILTER_URL_EU GATEWAY_URL_US GATEWAY_URL_EU UPSTREAM_URL_US UPSTREAM_URL_EU \
             BASELINE_URL_US BASELINE_URL_EU; do
        grep -q "^$v=" <<<"$env_text" || fail "env lacks $v"
    done
    gateway_ports="${GATEWAY_URL_US##*:} ${GATEWAY_URL_EU##*:} ${UPSTREAM_URL_US##*:} ${UPSTREAM_URL_EU##*:}"
    gateway_ports+=" ${BASELINE_URL_US##*:} ${BASELINE_URL_EU##*:}"
    st=$("$cluster" status --run-dir "$run_dir")
    for c in filter-us filter-eu gateway-us gateway-eu upstream-us upstream-eu baseline-us baseline-eu; do
        grep -q "^$c .* up " <<<"$st" || fail "status does not show $c up: $st"
    done
    curl -fsS "$FILTER_URL_EU/readyz" >/dev/null || fail "authz-filterd eu not ready"
    # Status and one header of an answer: "CODE|value".
    hdr() {
        local h=$1; shift
        curl -sS -D - -o /dev/null --max-time 10 "$@" |
            /usr/bin/python3 -c '
import sys
lines = sys.stdin.read().split("\r\n")
code = lines[0].split()[1]
vals = [l.split(":", 1)[1].strip() for l in lines[1:] if l.lower().startswith(sys.argv[1].lower() + ":")]
print(code + "|" + "#".join(vals))' "$h"
    }
    # The upstream answers by itself, without auth_request.
    echo_body=$(curl -fsS "$UPSTREAM_URL_EU/runtime-groups/x?y=1") || fail "the upstream echo of eu does not answer"
    [ "$(/usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["region"], d["uri"])' <<<"$echo_body")" = \
      "eu /runtime-groups/x?y=1" ] || fail "unexpected echo: $echo_body"
    # The measurement-only port proxies to it without auth_request, and
    # never passes a client's subject on.
    echo_body=$(curl -fsS -H 'X-Authz-Subject: mallory' "$BASELINE_URL_EU/a") || fail "the baseline of eu does not answer"
    [[ $echo_body == *'"uri":"/a","subject":""'* ]] || fail "unexpected baseline echo: $echo_body"
    # No token: 401 with the filter's WWW-Authenticate, once.
    r=$(hdr WWW-Authenticate "$GATEWAY_URL_EU/runtime-groups/rg-1")
    [[ $r == 401\|Bearer* ]] && [[ $r != *'#'* ]] || fail "no token through the gateway: $r (want 401 and one WWW-Authenticate)"
    [[ $(hdr Authz-Reason "$GATEWAY_URL_EU/runtime-groups/rg-1") == 401\|?* ]] || fail "401 without Authz-Reason"
    # A grant made through identity eu becomes a 200 through eu's gateway,
    # with the subject passed to the upstream and not the client's.
    gpost() { curl -fsS -X POST "$IDENTITY_URL_EU$1" -H "Authorization: Bearer $token" \
                  -H 'Content-Type: application/json' -d "$2"; }
    gid() { /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
    guser=$(gpost /v1/users '{"subject": "lc-gw-user", "email": "gw@x.io", "name": "gw"}' | gid) ||
        fail "POST user failed"
    grole=$(gpost /v1/roles '{"name": "lc-rg-reader", "permissions": ["runtime_groups:read"]}' | gid) ||
        fail "POST role failed"
    gpost /v1/role-assignments "{\"principal\": {\"type\": \"user\", \"id\": \"$guser\"}, \"role_id\": \"$grole\",
        \"region\": \"*\", \"resource\": \"runtime_groups/*\"}" >/dev/null || fail "POST assignment failed"
    utok=$("$repo/tools/dev-token" --sub lc-gw-user --aud authz-gateway)
    ok=0
    for _ in $(seq 1 100); do
        body=$(curl -sS --max-time 5 -H "Authorization: Bearer $utok" -H 'X-Authz-Subject: mallory' \
            "$GATEWAY_URL_EU/runtime-groups/rg-1" || true)
        if [[ $body == *'"uri":"/runtime-groups/rg-1"'* ]]; then ok=1; break; fi
        sleep 0.1
    done
    [ $ok -eq 1 ] || fail "the grant never became a 200 through the eu gateway (last: $body)"
    [[ $body == *'"subject":"lc-gw-user"'* ]] || fail "the upstream did not get the verified subject: $body"
    # Denies: final, with the reason; no grant to update, no route, a
    # subject nobody granted anything.
    r=$(hdr Authz-Decision -X PUT -H "Authorization: Bearer $utok" "$GATEWAY_URL_EU/runtime-groups/rg-1")
    [ "$r" = "403|final" ] || fail "PUT without a grant through the gateway: $r (want 403|final)"
    r=$(hdr Authz-Reason -H "Authorization: Bearer $utok" "$GATEWAY_URL_EU/no-such-api")
    [[ $r == 403\|?* ]] || fail "an unmapped path through the gateway: $r (want 403 with a reason)"
    ntok=$("$repo/tools/dev-token" --sub lc-gw-nobody --aud authz-gateway)
    r=$(hdr Authz-Decision -H "Authorization: Bearer $ntok" "$GATEWAY_URL_US/runtime-groups/rg-1")
    [ "$r" = "403|final" ] || fail "an ungranted subject through the us gateway: $r (want 403|final)"
    # A token for another audience (the admin one) is not a gateway token.
    r=$(hdr WWW-Authenticate -H "Authorization: Bearer $token" "$GATEWAY_URL_EU/runtime-groups/rg-1")
    [[ $r == 401\|Bearer* ]] || fail "an admin token through the gateway: $r (want 401)"
    gone() {
        local deadline=$((SECONDS + 10))
        until ! running "$1"; do
            [ $SECONDS -lt $deadline ] || fail "process $1 survived SIGKILL"
            sleep 0.1
        done
    }
    # The filter gone: auth_request's 500 becomes a 503 that says why.
    kill -KILL "$(cat "$run_dir/pids/filter-eu.pid")"
    gone "$(cat "$run_dir/pids/filter-eu.pid")"
    r=$(hdr Authz-Decision -H "Authorization: Bearer $utok" "$GATEWAY_URL_EU/runtime-groups/rg-1")
    [ "$r" = "503|unavailable" ] || fail "a dead filter through the gateway: $r (want 503|unavailable)"
    [ "$(hdr Retry-After -H "Authorization: Bearer $utok" "$GATEWAY_URL_EU/runtime-groups/rg-1")" = "503|1" ] ||
        fail "503 of a dead filter without Retry-After"
    [ "$(hdr Authz-Reason -H "Authorization: Bearer $utok" "$GATEWAY_URL_EU/runtime-groups/rg-1")" = \
      "503|filter_unreachable" ] || fail "503 of a dead filter without its reason"
    # A killed nginx master leaves its worker serving the ports: up must
    # clear it and start the gateway again, and the filter.
    kill -KILL "$(cat "$run_dir/pids/gateway-us.pid")"
    gone "$(cat "$run_dir/pids/gateway-us.pid")"
    st=$("$cluster" status --run-dir "$run_dir") && fail "status exited 0 with a dead filter and gateway"
    grep -q "^filter-eu .* down" <<<"$st" && grep -q "^gateway-us .* down" <<<"$st" ||
        fail "a dead filter or gateway shows as up: $st"
    "$cluster" up --run-dir "$run_dir" >/dev/null || fail "up did not restart the dead filter and gateway"
    r=$(hdr Authz-Decision -H "Authorization: Bearer $utok" "$GATEWAY_URL_EU/runtime-groups/rg-1")
    [ "$r" = "200|" ] || fail "the eu gateway after the filter's restart: $r (want 200)"
    r=$(hdr Authz-Decision -H "Authorization: Bearer $utok" "$GATEWAY_URL_US/runtime-groups/rg-1")
    [ "$r" = "200|" ] || fail "the us gateway after its restart: $r (want 200)"
fi

# Half up: a crashed PostgreSQL shows in status (exit 3) and env refuses;
# up starts just that one again, on the same port, with its data.
# (synchronous_commit is off in these clusters: make this commit durable
# before the kill.)
psql -X -q -c 'set synchronous_commit = on; create table survivor(x int)' "$PG_URL_EU"
old_kafka=$(cat "$run_dir/pids/kafka.pid")
kill -KILL "$(cat "$run_dir/pids/pg-eu.pid")"
deadline=$((SECONDS + 10))
until ! running "$(cat "$run_dir/pids/pg-eu.pid")"; do
    [ $SECONDS -lt $deadline ] || fail "postgres-eu survived SIGKILL"
    sleep 0.1
done
set +e
"$cluster" status --run-dir "$run_dir" >/dev/null; rc_status=$?
"$cluster" env --run-dir "$run_dir" >/dev/null 2>&1; rc_env=$?
set -e
[ $rc_status -eq 3 ] || fail "status of a half-up cluster exited $rc_status, not 3"
[ $rc_env -ne 0 ] || fail "env of a half-up cluster succeeded"
"$cluster" up --run-dir "$run_dir" >/dev/null || fail "up did not repair a half-up cluster"
[ "$(cat "$run_dir/pids/kafka.pid")" = "$old_kafka" ] || fail "repairing restarted the healthy broker"
psql -X -q -c 'select * from survivor' "$PG_URL_EU" >/dev/null || fail "the data of eu is gone after repair"

# Bad arguments are refused with a clear message and exit 2.
set +e
"$cluster" up --run-dir "$run_dir/x" --regions 'US,eu' >/dev/null 2>&1; rc1=$?
"$cluster" frobnicate >/dev/null 2>&1; rc2=$?
set -e
[ $rc1 -eq 2 ] || fail "an invalid region was not refused with exit 2 (got $rc1)"
[ $rc2 -eq 2 ] || fail "an unknown command did not exit 2"
[ ! -e "$run_dir/x" ] || fail "a refused up created its run folder"

# down stops every recorded process and leaves nothing that refers to the
# run folder.
pids=$(cat "$run_dir"/pids/*.pid)
"$cluster" down --run-dir "$run_dir"
for pid in $pids; do
    ! running "$pid" || fail "process $pid still runs after down"
done
! pgrep -f -- "$run_dir" >/dev/null || fail "processes of $run_dir remain: $(pgrep -af -- "$run_dir")"
[ -z "$(ls "$run_dir/pids")" ] || fail "pid files remain after down: $(ls "$run_dir/pids")"
for port in $gateway_ports; do
    [ -z "$(ss -Hltn "sport = :$port")" ] || fail "something still listens on gateway port $port after down"
done
set +e
"$cluster" status --run-dir "$run_dir" >/dev/null; rc=$?
set -e
[ $rc -eq 3 ] || fail "status after down exited $rc, not 3"
"$cluster" down --run-dir "$run_dir" >/dev/null || fail "a second down failed"
[ -d "$run_dir/pg/us" ] || fail "down without --purge removed the data"
"$cluster" down --run-dir "$run_dir" --purge >/dev/null || fail "down --purge failed"
[ ! -e "$run_dir/pg" ] || fail "down --purge kept the data"
echo "local-cluster test: passed"
