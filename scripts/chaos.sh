#!/usr/bin/env bash
# The exactly-once chaos suite, with real processes: loadgen records synthetic traffic
# into Redis while three coworkers drain it into PostgreSQL, and faults are injected
# while it runs:
#
#   1. kill -9 a coworker while it drains (every coworker is always mid-batch under
#      load), and start it again; then change the number of shards (8 to 12, and 4
#      more on each round of --long) with `coworker shards --set`: the old shards
#      are sealed, drained to the end and retired while the new ones take the spend;
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
# With --cluster, Redis is a Redis Cluster of three masters with a replica each, and
# fault 3 becomes three: kill -9 the master of a shard's slot (its replica is
# promoted; the killed node comes back as a replica), move a shard's slot to another
# master with `redis-cli --cluster reshard` while traffic flows, and promote a
# replica with CLUSTER FAILOVER. The coworkers drain with ROUTERO_REDIS_WAIT_REPLICAS=1
# (what they apply, a replica holds: 0 doubled); loadgen records with
# ROUTERO_CHAOS_WAIT_REPLICAS (default 1: an append is acknowledged once a replica
# holds it, so 0 lost). With ROUTERO_CHAOS_WAIT_REPLICAS=0 the appends a killed master
# acknowledged but had not replicated are lost: the run reports how many, and passes
# when nothing was doubled.
#
# Usage: scripts/chaos.sh [--long] [--cluster]
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
cluster=0
for arg in "$@"; do
  case "$arg" in
    --long) events=600000; rate=2000; long=1 ;;
    --cluster) cluster=1 ;;
    *) echo "usage: scripts/chaos.sh [--long] [--cluster]" >&2; exit 2 ;;
  esac
done
loadgen_wait="${ROUTERO_CHAOS_WAIT_REPLICAS:-1}"

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
  local status=$?
  set +e
  for pid in "${coworkers[@]}" $loadgen_pid; do
    kill -CONT "$pid" 2>/dev/null
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [ "${keep_logs:-0}" = "1" ]; then
    cp -r "$work" "/tmp/routero-chaos-logs.$$" 2>/dev/null && log "logs kept in /tmp/routero-chaos-logs.$$"
  fi
  services_cleanup "$status"
}
trap chaos_cleanup EXIT INT TERM

start_postgres
if [ "$cluster" = "1" ]; then
  start_redis_cluster
  export ROUTERO_REDIS_URL="$redis_cluster_url" ROUTERO_REDIS_WAIT_REPLICAS=1
else
  start_redis
  export ROUTERO_REDIS_URL="$redis_url"
fi
export ROUTERO_DATABASE_URL="$database_url"
export ROUTERO_REDIS_PREFIX=chaos ROUTERO_SHARDS=8 RUST_LOG=warn

start_coworker() {
  ROUTERO_HOLDER="coworker-$1" "$bin/coworker" >>"$work/coworker-$1.log" 2>&1 &
  coworkers[$1]=$!
}

# The cluster's nodes: `id port role` of each (role master or slave), from any live one.
cluster_nodes() {
  local port
  for port in $redis_cluster_ports; do
    if redis-cli -p "$port" cluster nodes 2>/dev/null |
        awk '$3 !~ /fail/ { split($2, a, "[:@]"); r = ($3 ~ /master/) ? "master" : "slave"; print $1, a[2], r }' |
        grep .; then
      return 0
    fi
  done
}
# The port of the master that serves `slot` now.
master_of_slot() {
  local port
  local answer
  for port in $redis_cluster_ports; do
    redis-cli -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || continue
    answer="$(redis-cli -p "$port" cluster nodes 2>/dev/null | awk -v s="$1" '
      $3 ~ /master/ && $3 !~ /fail/ {
        for (i = 9; i <= NF; i++) {
          n = split($i, r, "-"); lo = r[1]; hi = (n == 2) ? r[2] : r[1]
          if ($i !~ /^\[/ && s >= lo && s <= hi) { split($2, a, "[:@]"); print a[2]; exit }
        }
      }')"
    if [ -n "$answer" ]; then
      echo "$answer"
      return 0
    fi
  done
}
# Waits until every live node says the cluster is ok and `slot` has a live master
# (other than the port given second, a node just killed).
cluster_settled() {
  local port ok
  for _ in $(seq 1 300); do
    ok=1
    [ -n "${2:-}" ] && [ "$(master_of_slot "$1")" = "$2" ] && ok=0
    for port in $redis_cluster_ports; do
      if redis-cli -p "$port" ping >/dev/null 2>&1 &&
          ! redis-cli -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; then
        ok=0
      fi
    done
    [ "$ok" = "1" ] && [ -n "$(master_of_slot "$1")" ] && return 0
    sleep 0.2
  done
  log "the cluster did not settle"
  return 1
}
# A shard's slot: the slot of its hash tag.
shard_slot() { redis-cli -p "${redis_cluster_ports%% *}" cluster keyslot "{$1}"; }

cluster_faults() {
  local slot master pid id target count replica first s0 s3 s5
  # Shards of the current layout (its ids start after the earlier layouts').
  first="$("$bin/coworker" shards 2>/dev/null | grep -o '"shards":\[[0-9]*' | grep -o '[0-9]*$' || true)"
  first="${first:-0}"; s0=$first; s3=$(( first + 3 )); s5=$(( first + 5 ))
  slot="$(shard_slot "$s0")"
  master="$(master_of_slot "$slot")"
  fault "kill -9 the master of shard $s0 (127.0.0.1:$master) under load; its replica is promoted; the node comes back as a replica"
  pid="$(redis-cli -p "$master" info server | tr -d '\r' | sed -n 's/^process_id://p')"
  kill -9 "$pid"
  cluster_settled "$slot" "$master"
  log "shard $s0's slot $slot is served by 127.0.0.1:$(master_of_slot "$slot") now"
  start_cluster_node "$master"
  # Back as a replica of the promoted node (appends wait for one).
  for _ in $(seq 1 150); do
    redis-cli -p "$master" role 2>/dev/null | head -1 | grep -q slave && break
    sleep 0.2
  done
  cluster_settled "$slot"
  sleep 5

  slot="$(shard_slot "$s3")"
  master="$(master_of_slot "$slot")"
  id="$(cluster_nodes | awk -v p="$master" '$2 == p { print $1 }')"
  target="$(cluster_nodes | awk -v p="$master" '$3 == "master" && $2 != p { print $1; exit }')"
  # The reshard moves the source's lowest slots first: as many as it holds up to
  # shard $s3's, so that shard $s3 moves.
  count="$(redis-cli -p "$master" cluster nodes | awk -v me="$id" -v s="$slot" '
    $1 == me { c = 0; for (i = 9; i <= NF; i++) { n = split($i, r, "-"); lo = r[1]; hi = (n == 2) ? r[2] : r[1];
      if ($i ~ /^\[/) continue; if (hi > s) hi = s; if (hi >= lo) c += hi - lo + 1 } print c }')"
  fault "redis-cli --cluster reshard: $count slots, shard $s3's ($slot) among them, from 127.0.0.1:$master to another master under load"
  redis-cli --cluster reshard "127.0.0.1:$master" --cluster-from "$id" --cluster-to "$target" \
    --cluster-slots "$count" --cluster-yes >"$work/reshard.log" 2>&1 ||
    { cat "$work/reshard.log" >&2; log "reshard failed"; return 1; }
  cluster_settled "$slot"
  log "shard $s3's slot $slot is served by 127.0.0.1:$(master_of_slot "$slot") now"
  sleep 5

  slot="$(shard_slot "$s5")"
  master="$(master_of_slot "$slot")"
  id="$(cluster_nodes | awk -v p="$master" '$2 == p { print $1 }')"
  replica="$(for port in $redis_cluster_ports; do
    redis-cli -p "$port" cluster nodes 2>/dev/null | awk -v m="$id" '$3 ~ /slave/ && $3 !~ /fail/ && $4 == m { split($2, a, "[:@]"); print a[2] }'
    break; done | head -1)"
  fault "CLUSTER FAILOVER: promote 127.0.0.1:$replica, the replica of shard $s5's master 127.0.0.1:$master"
  redis-cli -p "$replica" cluster failover >/dev/null
  cluster_settled "$slot"
  log "shard $s5's slot $slot is served by 127.0.0.1:$(master_of_slot "$slot") now"
  sleep 5
}
for n in 1 2 3; do start_coworker "$n"; done

run="chaos$(date +%s)"
ROUTERO_REDIS_WAIT_REPLICAS="$([ "$cluster" = "1" ] && echo "$loadgen_wait" || echo 0)" \
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

  reshards=$(( ${reshards:-0} + 1 ))
  fault "change the number of shards under load: coworker shards --set $(( 8 + 4 * reshards ))"
  "$bin/coworker" shards --set $(( 8 + 4 * reshards )) >>"$work/shards.log" 2>&1 ||
    log "the change was refused (the previous one is still retiring its shards)"
  sleep 3

  fault "SIGSTOP coworker 2 for 15 s (leases last 10 s); SIGCONT"
  kill -STOP "${coworkers[2]}"; sleep 15; kill -CONT "${coworkers[2]}"
  sleep 3

  if [ "$cluster" = "1" ]; then
    cluster_faults
  else
    fault "restart Redis (AOF on)"
    stop_redis; sleep 2; start_redis
    sleep 5
  fi

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
echo "chaos: shard layout at the end: $("$bin/coworker" shards 2>/dev/null | grep -o '"layout":"[^"]*"')"
count_lines() { cat "$work"/coworker-*.log | grep -c "$1" || true; }
echo "chaos: coworker logs: $(count_lines 'newer leader wrote') writes refused to a stale leader," \
  "$(count_lines 'lease lost') leases lost, $(count_lines 'drain step failed') drain steps retried"
cat "$work/check.json"
if [ "$cluster" = "1" ] && [ "$loadgen_wait" = "0" ] && [ "${doubled:-1}" = "0" ] &&
    [ -n "$lost" ]; then
  # Without WAIT on the appends, what a killed master acknowledged and had not yet
  # replicated is gone: that is the option's point, reported rather than failed.
  echo "chaos: with ROUTERO_CHAOS_WAIT_REPLICAS=0, $lost acknowledged events were lost with the killed master"
  echo "chaos: PASS (0 doubled)"
  exit 0
fi
if [ "$status" != "0" ] || [ "${lost:-1}" != "0" ] || [ "${doubled:-1}" != "0" ]; then
  keep_logs=1
  cat "$work/check.log" >&2
  echo "chaos: FAIL" >&2
  exit 1
fi
echo "chaos: PASS (PostgreSQL equals loadgen's totals to the last digit, overall, per org and per team)"
