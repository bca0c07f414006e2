#!/usr/bin/env bash
# The exactly-once chaos suite, with real processes: loadgen records synthetic traffic
# into Redis while three coworkers drain it into PostgreSQL, and faults are injected
# while it runs:
#
#   1. kill -9 a coworker while it drains (every coworker is always mid-batch under
#      load), and start it again;
#   2. SIGSTOP a coworker past its leases' lifetime (10 s) so the others take its
#      shards, then SIGCONT it: its late writes must be refused by the fencing tokens;
#   3. restart Redis (AOF on) under the recorder and the coworkers;
#   4. stop PostgreSQL for 30 seconds and bring it back;
#   5. kill -9 every coworker at once and start them all again.
#
# At the end `loadgen check` compares PostgreSQL with loadgen's exact expected totals,
# overall, per org and per team, and the request log. The script prints the faults
# injected, the events recorded, and the lost and doubled counts, and exits non-zero
# unless both are 0 and every total is equal to the last digit.
#
# Usage: scripts/chaos.sh [--long]
#   (default)  80,000 events at 1,000/s, each fault once: about two minutes (CI)
#   --long     600,000 events at 2,000/s, the faults in a loop until loadgen ends
# Environment: ROUTERO_CHAOS_RELEASE=1 builds the binaries in release mode.
set -euo pipefail

cd "$(dirname "$0")/.."
require=1
work="$(mktemp -d /tmp/routero-chaos.XXXXXX)"
chmod 755 "$work"
# shellcheck source=scripts/services.sh
. scripts/services.sh

events=80000
rate=1000
long=0
if [ "${1:-}" = "--long" ]; then
  events=600000
  rate=2000
  long=1
fi

profile=debug
build_flags=()
if [ "${ROUTERO_CHAOS_RELEASE:-0}" = "1" ]; then
  profile=release
  build_flags=(--release)
fi
cargo build "${build_flags[@]}" --all-features --example loadgen --example coworker
bin="target/$profile/examples"

declare -A coworkers=()
loadgen_pid=""
chaos_cleanup() {
  set +e
  for pid in "${coworkers[@]}" $loadgen_pid; do
    kill -CONT "$pid" 2>/dev/null
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [ "${keep_logs:-0}" = "1" ]; then
    cp -r "$work" "/tmp/routero-chaos-logs.$$" 2>/dev/null && log "logs kept in /tmp/routero-chaos-logs.$$"
  fi
  services_cleanup
}
trap chaos_cleanup EXIT INT TERM

start_redis
start_postgres
export ROUTERO_REDIS_URL="$redis_url" ROUTERO_DATABASE_URL="$database_url"
export ROUTERO_REDIS_PREFIX=chaos ROUTERO_SHARDS=8 RUST_LOG=warn

start_coworker() {
  ROUTERO_HOLDER="coworker-$1" "$bin/coworker" >>"$work/coworker-$1.log" 2>&1 &
  coworkers[$1]=$!
}
for n in 1 2 3; do start_coworker "$n"; done

run="chaos$(date +%s)"
"$bin/loadgen" --events "$events" --rate "$rate" --orgs 12 --run "$run" \
  >"$work/expected.json" 2>"$work/loadgen.log" &
loadgen_pid=$!
started=$(date +%s)

faults=()
fault() {
  log "fault $(( ${#faults[@]} + 1 )) at +$(( $(date +%s) - started ))s: $*"
  faults+=("$*")
}
running() { kill -0 "$loadgen_pid" 2>/dev/null; }

inject_all() {
  sleep 5
  fault "kill -9 coworker 1 while it drains; restart it"
  kill -9 "${coworkers[1]}"; wait "${coworkers[1]}" 2>/dev/null || true
  sleep 1; start_coworker 1
  sleep 4

  fault "SIGSTOP coworker 2 for 15 s (leases last 10 s); SIGCONT"
  kill -STOP "${coworkers[2]}"; sleep 15; kill -CONT "${coworkers[2]}"
  sleep 3

  fault "restart Redis (AOF on)"
  stop_redis; sleep 2; start_redis
  sleep 5

  fault "stop PostgreSQL for 30 s"
  stop_postgres; sleep 30; start_postgres
  sleep 5

  fault "kill -9 every coworker at once; restart them"
  for n in 1 2 3; do kill -9 "${coworkers[$n]}" 2>/dev/null || true; done
  for n in 1 2 3; do wait "${coworkers[$n]}" 2>/dev/null || true; done
  for n in 1 2 3; do start_coworker "$n"; done
}

inject_all
while [ "$long" = "1" ] && running; do inject_all; done

if ! wait "$loadgen_pid"; then
  keep_logs=1
  log "FAIL: loadgen did not record every event"
  cat "$work/loadgen.log" >&2
  exit 1
fi
loadgen_pid=""
recorded=$(grep -o '"events":[0-9]*' "$work/expected.json" | head -1 | cut -d: -f2)

set +e
"$bin/loadgen" check "$work/expected.json" --wait 180 >"$work/check.json" 2>"$work/check.log"
status=$?
set -e
lost=$(grep -o '"lost":[0-9]*' "$work/check.json" | cut -d: -f2)
doubled=$(grep -o '"doubled":[0-9]*' "$work/check.json" | cut -d: -f2)

echo "chaos: ${#faults[@]} faults injected in $(( $(date +%s) - started )) s:"
for f in "${faults[@]}"; do echo "  - $f"; done
echo "chaos: events recorded: ${recorded:-?}; lost: ${lost:-?}; doubled: ${doubled:-?}"
count_lines() { cat "$work"/coworker-*.log | grep -c "$1" || true; }
echo "chaos: coworker logs: $(count_lines 'newer leader wrote') writes refused to a stale leader," \
  "$(count_lines 'lease lost') leases lost, $(count_lines 'drain step failed') drain steps retried"
cat "$work/check.json"
if [ "$status" != "0" ] || [ "${lost:-1}" != "0" ] || [ "${doubled:-1}" != "0" ]; then
  keep_logs=1
  cat "$work/check.log" >&2
  echo "chaos: FAIL" >&2
  exit 1
fi
echo "chaos: PASS (PostgreSQL equals loadgen's totals to the last digit, overall, per org and per team)"
