#!/usr/bin/env bash
# Integration test of tools/local-cluster itself: up on free ports in a
# private run folder, env/status/second up, every PostgreSQL and the broker
# answer, the topics exist with one partition, a half-up cluster is
# repaired, down leaves no process, and a second down is a no-op. Takes
# the binaries from $AUTHZ_BIN_DIR (default <repo>/build/bin).
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

"$cluster" up --regions us,eu --run-dir "$run_dir" --base-port auto

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
set +e
"$cluster" status --run-dir "$run_dir" >/dev/null; rc=$?
set -e
[ $rc -eq 3 ] || fail "status after down exited $rc, not 3"
"$cluster" down --run-dir "$run_dir" >/dev/null || fail "a second down failed"
[ -d "$run_dir/pg/us" ] || fail "down without --purge removed the data"
"$cluster" down --run-dir "$run_dir" --purge >/dev/null || fail "down --purge failed"
[ ! -e "$run_dir/pg" ] || fail "down --purge kept the data"
echo "local-cluster test: passed"
