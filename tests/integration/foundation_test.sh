#!/usr/bin/env bash
# Integration test of the foundation: brings up a two-region local cluster
# (real PostgreSQL per region, real Kafka broker) in a private run folder on
# free ports, runs it_foundation against it (migrations on every region's
# PostgreSQL, ordered events through Kafka), then brings everything down
# and checks that no process of this run is left.
#
# usage: foundation_test.sh BIN_DIR   (BIN_DIR holds it_foundation)
set -euo pipefail

bin_dir=${1:?usage: foundation_test.sh BIN_DIR}
repo=$(cd "$(dirname "$0")/../.." && pwd)
run_dir=$(mktemp -d /tmp/authz-it-foundation.XXXXXX)
cluster="$repo/tools/local-cluster"

cleanup() {
    "$cluster" down --run-dir "$run_dir" >/dev/null 2>&1 || true
    rm -rf "$run_dir"
}
trap cleanup EXIT

export AUTHZ_BIN_DIR="$bin_dir"
"$cluster" up --regions us,eu --run-dir "$run_dir" --base-port auto
eval "$("$cluster" env --run-dir "$run_dir")"
export KAFKA_BOOTSTRAP AUTHZ_REGIONS PG_URL_US PG_URL_EU IDENTITY_TOPIC_US IDENTITY_TOPIC_EU

"$bin_dir/it_foundation" "$repo/tests/integration/fixtures/migrations"

# Remember what ran, then check `down` leaves none of it.
pids=$(cat "$run_dir"/pids/*.pid 2>/dev/null || true)
"$cluster" down --run-dir "$run_dir"
for pid in $pids; do
    if kill -0 "$pid" 2>/dev/null; then
        echo "FAIL: process $pid still running after down" >&2
        exit 1
    fi
done
if pgrep -f -- "$run_dir" >/dev/null; then
    echo "FAIL: processes referring to $run_dir remain:" >&2
    pgrep -a -f -- "$run_dir" >&2
    exit 1
fi
echo "foundation integration test: passed"
