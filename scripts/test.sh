#!/usr/bin/env bash
# Runs every test of the workspace against throwaway Redis and PostgreSQL servers.
#
# On a fresh Debian machine it installs what is missing (redis-server, PostgreSQL),
# starts one instance of each on free loopback ports in a temporary directory, exports
# ROUTERO_TEST_REDIS_URL and ROUTERO_TEST_DATABASE_URL, runs `cargo test --workspace`,
# and stops both servers whatever happens.
#
# Environment:
#   ROUTERO_TEST_REQUIRE_SERVICES=1  a server that cannot be installed or started fails
#                                    the run (CI sets it); otherwise the adapter tests
#                                    that need it skip with a notice.
#   ROUTERO_LITELLM_PRICES=PATH      also check the community LiteLLM price map.
#   Extra arguments are passed to `cargo test`.
set -euo pipefail

cd "$(dirname "$0")/.."
require="${ROUTERO_TEST_REQUIRE_SERVICES:-0}"
work="$(mktemp -d /tmp/routero-test.XXXXXX)"
chmod 755 "$work"
redis_pid=""
pg_ctl=""
pg_data=""
pg_user=""

log() { printf '[test.sh] %s\n' "$*" >&2; }

missing_service() {
  if [ "$require" = "1" ]; then
    log "FATAL: $1 (ROUTERO_TEST_REQUIRE_SERVICES=1)"
    exit 1
  fi
  log "warning: $1; the tests that need it will skip"
}

cleanup() {
  set +e
  if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; fi
  if [ -n "$pg_ctl" ] && [ -n "$pg_data" ]; then
    as_pg "$pg_ctl" -D "$pg_data" -m immediate stop >/dev/null 2>&1
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

apt_updated=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  [ "$(id -u)" = "0" ] || return 1
  if [ "$apt_updated" = "0" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || return 1
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

# A TCP port on 127.0.0.1 that nothing listens on.
free_port() {
  local port
  for _ in $(seq 1 200); do
    port=$(( 20000 + RANDOM % 30000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

# Runs a command as the unprivileged PostgreSQL user (initdb and pg_ctl refuse root).
as_pg() {
  if [ -n "$pg_user" ]; then
    runuser -u "$pg_user" -- "$@"
  else
    "$@"
  fi
}

start_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    log "installing redis-server"
    apt_install redis-server || { missing_service "redis-server is not installed and could not be"; return 0; }
  fi
  local port
  port="$(free_port)" || { missing_service "no free port for Redis"; return 0; }
  mkdir -p "$work/redis"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$work/redis" \
    --appendonly yes --appendfsync everysec --save "" \
    --logfile "$work/redis/redis.log" &
  redis_pid=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      export ROUTERO_TEST_REDIS_URL="redis://127.0.0.1:$port"
      log "redis-server on $ROUTERO_TEST_REDIS_URL"
      return 0
    fi
    sleep 0.1
  done
  missing_service "redis-server did not start (see its log above)"
  cat "$work/redis/redis.log" >&2 || true
}

find_pg_bin() {
  local dir
  for dir in /usr/local/bin /usr/lib/postgresql/*/bin; do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

start_postgres() {
  local bin
  if ! bin="$(find_pg_bin)"; then
    log "installing PostgreSQL"
    apt_install postgresql || true
    bin="$(find_pg_bin)" || { missing_service "PostgreSQL is not installed and could not be"; return 0; }
  fi
  if [ "$(id -u)" = "0" ]; then
    pg_user=postgres
    if ! id "$pg_user" >/dev/null 2>&1; then
      useradd --system --no-create-home --shell /usr/sbin/nologin "$pg_user" 2>/dev/null ||
        { missing_service "cannot create the unprivileged postgres user"; return 0; }
    fi
  fi
  local port
  port="$(free_port)" || { missing_service "no free port for PostgreSQL"; return 0; }
  pg_data="$work/pg/data"
  mkdir -p "$work/pg"
  [ -n "$pg_user" ] && chown -R "$pg_user" "$work/pg"
  if ! as_pg "$bin/initdb" -D "$pg_data" -U routero --auth=trust -E UTF8 --no-locale >"$work/pg/initdb.log" 2>&1; then
    cat "$work/pg/initdb.log" >&2
    missing_service "initdb failed"
    return 0
  fi
  pg_ctl="$bin/pg_ctl"
  if ! as_pg "$pg_ctl" -D "$pg_data" -l "$work/pg/server.log" -w -t 60 \
      -o "-p $port -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null; then
    cat "$work/pg/server.log" >&2 || true
    missing_service "PostgreSQL did not start"
    return 0
  fi
  export ROUTERO_TEST_DATABASE_URL="postgres://routero@127.0.0.1:$port/postgres"
  log "PostgreSQL on $ROUTERO_TEST_DATABASE_URL"
}

start_redis
start_postgres

if [ -n "${ROUTERO_LITELLM_PRICES:-}" ] && [ ! -f "$ROUTERO_LITELLM_PRICES" ]; then
  log "FATAL: ROUTERO_LITELLM_PRICES=$ROUTERO_LITELLM_PRICES is not a file"
  exit 1
fi

cargo test --workspace --all-features "$@"
