#!/usr/bin/env bash
# The end-to-end load benchmark: Redis and PostgreSQL started here, loadgen recording
# as fast as the recorder takes events, two coworkers draining, and the baselines of
# the same servers in the same run.
#
# Prints, one line each:
#   redis-benchmark   XADD per second (pipelined 16, 50 clients)
#   pg-apply          the bare UNNEST upsert of rollup rows, and the drain step's rate
#   end to end        events per second from loadgen's first record to the last event
#                     visible in PostgreSQL's rollups; the drain lag (record to visible
#                     in the analytics query) p50, p99 and maximum, from probes every
#                     100 ms; the peak memory (VmHWM) of loadgen and each coworker
#   reprice           the logged requests priced again with every input rate changed
#                     (`coworker reprice --apply`, pages of 2,000): requests per second,
#                     each corrected once (rollups, wallets, the corrections table)
# and checks that PostgreSQL holds loadgen's exact totals.
#
# Usage: scripts/bench.sh [EVENTS] [RATE]
#   EVENTS  default 1,000,000
#   RATE    loadgen's target events per second; 0 (default): as fast as it can, which
#           measures the drain's throughput (the lag then is the backlog's); a rate
#           the drain sustains measures the lag
# The coworkers read ROUTERO_SPEND_LOG and ROUTERO_MAX_BATCHES from the environment
# (see examples/coworker.rs), to compare settings.
set -euo pipefail

cd "$(dirname "$0")/.."
require=1
work="$(mktemp -d /tmp/routero-bench.XXXXXX)"
chmod 755 "$work"
# shellcheck source=scripts/services.sh
. scripts/services.sh
events="${1:-1000000}"
rate="${2:-0}"

cargo build --release --all-features --example loadgen --example coworker --example pg-apply
bin=target/release/examples

coworker_pids=()
bench_cleanup() {
  local status=$?
  set +e
  for pid in "${coworker_pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  services_cleanup "$status"
}
trap bench_cleanup EXIT INT TERM

start_redis
start_postgres
export ROUTERO_REDIS_URL="$redis_url" ROUTERO_DATABASE_URL="$database_url"
export ROUTERO_REDIS_PREFIX=bench ROUTERO_SHARDS=16 RUST_LOG=warn

echo "coworkers: 2, request log ${ROUTERO_SPEND_LOG:-1}, at most ${ROUTERO_MAX_BATCHES:-512} batches of 1,000 per step"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
if command -v redis-benchmark >/dev/null 2>&1; then
  redis-benchmark -p "$redis_port" -q -n 500000 -P 16 -c 50 xadd bench:baseline '*' f v |
    tr '\r' '\n' | grep -i xadd | tail -1 | sed 's/^/redis-benchmark: /'
fi
echo "pg-apply: $("$bin/pg-apply" 200000 1000)"

hwm() { awk '/VmHWM/ {print $2 " kB"}' "/proc/$1/status" 2>/dev/null || echo "?"; }

for n in 1 2; do
  ROUTERO_HOLDER="coworker-$n" "$bin/coworker" >"$work/coworker-$n.log" 2>&1 &
  coworker_pids+=($!)
done
sleep 2

start_ns=$(date +%s%N)
"$bin/loadgen" --events "$events" --rate "$rate" --probe --run bench >"$work/expected.json" 2>"$work/loadgen.log" &
loadgen_pid=$!
loadgen_hwm="?"
while kill -0 "$loadgen_pid" 2>/dev/null; do
  loadgen_hwm="$(hwm "$loadgen_pid")"
  sleep 0.5
done
wait "$loadgen_pid" || { cat "$work/loadgen.log" >&2; exit 1; }
check_flags=()
[ "${ROUTERO_SPEND_LOG:-1}" = "0" ] && check_flags=(--no-request-log)
"$bin/loadgen" check "$work/expected.json" --wait 600 "${check_flags[@]}" >"$work/check.json"
end_ns=$(date +%s%N)

field() { grep -o "\"$1\":[0-9]*" "$2" | head -1 | cut -d: -f2; }
recorded=$(field events "$work/expected.json")
elapsed_ms=$(( (end_ns - start_ns) / 1000000 ))
echo "end to end: $recorded events in ${elapsed_ms} ms = $(( recorded * 1000 / elapsed_ms )) events/s" \
  "(loadgen alone recorded at $(field events_per_second "$work/expected.json") events/s)"
echo "drain lag: p50 $(field lag_p50_ms "$work/expected.json") ms, p99 $(field lag_p99_ms "$work/expected.json") ms," \
  "max $(field lag_max_ms "$work/expected.json") ms over $(field lag_samples "$work/expected.json") probes"
echo "peak memory: loadgen ${loadgen_hwm}; coworkers $(for pid in "${coworker_pids[@]}"; do printf '%s; ' "$(hwm "$pid")"; done)"
echo "check: $(cat "$work/check.json")"

# Repricing: every input rate of the bundled table with a digit appended (0.15 ->
# 0.151), so every logged request with input tokens gets a correction.
for c in "${coworker_pids[@]}"; do kill "$c" 2>/dev/null; wait "$c" 2>/dev/null; done
coworker_pids=()
sed -e 's/^version = .*/version = "bench-reprice"/' -e 's/^input = "\(.*\)"/input = "\11"/' \
  routero-core/prices/default.toml >"$work/reprice.toml"
reprice_start=$(date +%s%N)
"$bin/coworker" reprice --apply --reason "bench" --from "$(date -u -d yesterday +%F)" \
  --to "$(date -u +%F)" --prices "$work/reprice.toml" >"$work/reprice.json" 2>"$work/reprice.log" ||
  { cat "$work/reprice.log" >&2; exit 1; }
reprice_ms=$(( ($(date +%s%N) - reprice_start) / 1000000 ))
planned=$(grep -o '"requests": [0-9]*' "$work/reprice.json" | head -1 | grep -o '[0-9]*$')
corrected=$(grep -o '"corrected": [0-9]*' "$work/reprice.json" | head -1 | grep -o '[0-9]*$')
echo "reprice: $planned logged requests read, $corrected corrected, in ${reprice_ms} ms" \
  "(dry run included) = $(( planned * 1000 / (reprice_ms > 0 ? reprice_ms : 1) )) requests/s"
