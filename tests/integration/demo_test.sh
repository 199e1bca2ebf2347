#!/usr/bin/env bash
# End-to-end test of tools/demo (issue 13, Tests, first bullet): the demo's
# story run non-interactively with every step asserted (--check) on free
# ports in a private run folder; the output shows each step; a second
# tools/demo on the running deployment says so and exits 0 without
# breaking it; tools/demo down leaves no process of the run folder. Takes
# the binaries from $AUTHZ_BIN_DIR (default <repo>/build/bin).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
demo="$repo/tools/demo"
bin_dir=${AUTHZ_BIN_DIR:-$repo/build/bin}
export AUTHZ_BIN_DIR="$bin_dir"
# The caller's own cluster settings must not leak into this one.
unset AUTHZ_RUN_DIR AUTHZ_BASE_PORT AUTHZ_TOKEN AUTHZ_REGION AUTHZ_REGIONS
run_dir=$(mktemp -d /tmp/authz-it-demo.XXXXXX)
out_file=$(mktemp /tmp/authz-it-demo-out.XXXXXX)

fail() { echo "FAIL: $*" >&2; exit 1; }
cleanup() {
    "$repo/tools/local-cluster" down --run-dir "$run_dir" --purge >/dev/null 2>&1 || true
    rm -rf "$run_dir" "$out_file"
}
trap cleanup EXIT

running() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}

# ---- the story ----------------------------------------------------------------

start=$(date +%s)
set +e
"$demo" --no-setup --check --run-dir "$run_dir" --base-port auto --delay-ms 40 >"$out_file" 2>&1
rc=$?
set -e
cat "$out_file"
[ $rc -eq 0 ] || fail "tools/demo --check exited $rc"
out=$(cat "$out_file")
for s in "== a. " "== b. " "== c. " "== d. " "== e. " "== f. " "== g. "; do
    grep -qF -- "$s" <<<"$out" || fail "the output lacks step \"$s\""
done
# b: the call with the revision succeeded, and per-region times are shown.
grep -A3 '^== b\. ' <<<"$out" | grep -q -- '-> 200 ' || fail "step b: no 200 through the eu gateway"
for r in us eu ap; do
    grep -A12 '^== b\. ' <<<"$out" | grep -Eq "^  $r: applied [0-9]+ ms after the write" ||
        fail "step b: no propagation time for $r"
done
# c: a 200, and either the retries or that none was needed.
sed -n '/^== c\. /,/^== d\. /p' <<<"$out" | grep -q -- '-> 200 ' || fail "step c: no 200"
sed -n '/^== c\. /,/^== d\. /p' <<<"$out" | grep -Eq 'retry: attempt|no retry was needed' ||
    fail "step c: neither a retry nor \"no retry was needed\""
# d: a final 403 after one attempt.
sed -n '/^== d\. /,/^== e\. /p' <<<"$out" | grep -q -- '-> 403 final after 1 attempt' ||
    fail "step d: no final 403 after one attempt"
# e: the cut, eu applied, the call through eu, the heal.
sed -n '/^== e\. /,/^== f\. /p' <<<"$out" | grep -q '"mode":"cut"' || fail "step e: the link was not cut"
sed -n '/^== e\. /,/^== f\. /p' <<<"$out" | grep -Eq '^  eu: applied [0-9]+ ms' || fail "step e: eu did not apply"
sed -n '/^== e\. /,/^== f\. /p' <<<"$out" | grep -q -- '-> 200 ' || fail "step e: no 200 through eu"
sed -n '/^== e\. /,/^== f\. /p' <<<"$out" | grep -q '"mode":"pass"' || fail "step e: the link was not healed"
# f: each region's gateway denies.
for r in us eu ap; do
    sed -n '/^== f\. /,/^== g\. /p' <<<"$out" | grep -Eq "^  $r: requests sent from [0-9]+ ms after the answer are denied" ||
        fail "step f: no deny time for $r"
done
# g: endpoints, a token, commands.
grep -q '^  us  gateway http://127.0.0.1:' <<<"$out" || fail "step g: no endpoints"
grep -q 'export AUTHZ_TOKEN=ey' <<<"$out" || fail "step g: no admin token"
grep -q 'authzctl status' <<<"$out" || fail "step g: no authzctl commands"
echo "demo test: story passed in $(( $(date +%s) - start )) s"

# ---- a second demo on the running deployment ------------------------------------

pids=$(cat "$run_dir"/pids/*.pid)
set +e
out2=$("$demo" --no-setup --check --run-dir "$run_dir" --delay-ms 40 2>&1)
rc=$?
set -e
[ $rc -eq 0 ] || fail "a second tools/demo exited $rc: $out2"
grep -q "already running" <<<"$out2" || fail "a second tools/demo did not say the deployment runs: $out2"
grep -q '^  eu  gateway http://127.0.0.1:' <<<"$out2" || fail "a second tools/demo did not print the endpoints: $out2"
! grep -q '^== a\. ' <<<"$out2" || fail "a second tools/demo told the story again"
for pid in $pids; do
    running "$pid" || fail "process $pid died during the second tools/demo"
done
"$repo/tools/local-cluster" status --run-dir "$run_dir" >/dev/null ||
    fail "the deployment is not fully up after the second tools/demo"

# ---- down -------------------------------------------------------------------------

"$demo" down --run-dir "$run_dir" >/dev/null || fail "tools/demo down failed"
for pid in $pids; do
    ! running "$pid" || fail "process $pid still runs after tools/demo down"
done
! pgrep -f -- "$run_dir" >/dev/null || fail "processes of $run_dir remain: $(pgrep -af -- "$run_dir")"
[ -z "$(ls "$run_dir/pids")" ] || fail "pid files remain after down: $(ls "$run_dir/pids")"
echo "demo test: passed in $(( $(date +%s) - start )) s"
