#!/usr/bin/env bash
# Integration test of tools/local-cluster itself: up on free ports in a
# private run folder, env/status/second up, every PostgreSQL and the broker
# answer, the topics exist with one partition, down leaves no process, and
# a second down is a no-op.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cluster="$repo/tools/local-cluster"
bin_dir=${AUTHZ_BIN_DIR:-$repo/build/bin}
run_dir=$(mktemp -d /tmp/authz-it-cluster.XXXXXX)
export AUTHZ_BIN_DIR="$bin_dir"

fail() { echo "FAIL: $*" >&2; exit 1; }
cleanup() {
    "$cluster" down --run-dir "$run_dir" >/dev/null 2>&1 || true
    rm -rf "$run_dir"
}
trap cleanup EXIT

"$cluster" up --regions us,eu --run-dir "$run_dir" --base-port auto

env_text=$("$cluster" env --run-dir "$run_dir")
for v in KAFKA_BOOTSTRAP AUTHZ_REGIONS PG_URL_US PG_URL_EU IDENTITY_TOPIC_US IDENTITY_TOPIC_EU; do
    grep -q "^$v=" <<<"$env_text" || fail "env lacks $v"
done
eval "$env_text"
[ "$AUTHZ_REGIONS" = us,eu ] || fail "AUTHZ_REGIONS=$AUTHZ_REGIONS"

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
# create-topics is idempotent
"$bin_dir/authz-kafka-admin" create-topics --bootstrap "$KAFKA_BOOTSTRAP" "$IDENTITY_TOPIC_US" \
    >/dev/null || fail "create-topics of an existing topic failed"

# Bad arguments are refused with a clear message and exit 2.
set +e
"$cluster" up --run-dir "$run_dir/x" --regions 'US,eu' >/dev/null 2>&1; rc1=$?
"$cluster" frobnicate >/dev/null 2>&1; rc2=$?
set -e
[ $rc1 -ne 0 ] || fail "an invalid region was accepted"
[ $rc2 -eq 2 ] || fail "an unknown command did not exit 2"
rm -rf "$run_dir/x"

pids=$(cat "$run_dir"/pids/*.pid)
"$cluster" down --run-dir "$run_dir"
for pid in $pids; do
    ! kill -0 "$pid" 2>/dev/null || fail "process $pid still runs after down"
done
! pgrep -f -- "$run_dir" >/dev/null || fail "processes of $run_dir remain: $(pgrep -af -- "$run_dir")"
set +e
"$cluster" status --run-dir "$run_dir" >/dev/null; rc=$?
set -e
[ $rc -eq 3 ] || fail "status after down exited $rc, not 3"
"$cluster" down --run-dir "$run_dir" >/dev/null || fail "a second down failed"
echo "local-cluster test: passed"
