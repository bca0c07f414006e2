# Throwaway Redis and PostgreSQL servers for the scripts: sourced, not run.
#
# Set before sourcing: `require` (1: a server that cannot be installed or started is
# fatal) and `work` (a private directory for the servers' files). Provides:
#   start_redis      start redis-server (AOF on) on a free port, or on the same port
#                    and data again after stop_redis; sets redis_url
#   stop_redis       stop it gracefully (the AOF is flushed)
#   start_postgres   initdb once, then start PostgreSQL on a free port (the same one
#                    after stop_postgres); sets database_url
#   stop_postgres    stop it (fast shutdown)
#   start_pg_replica a streaming replica of it (pg_basebackup -R) on another port;
#                    sets database_read_url
#   make_certs       a throwaway CA, a server certificate for "localhost", a client
#                    certificate and an unrelated CA, in $work/tls (sets tls_dir);
#                    called before the servers start, it gives Redis a TLS port
#                    (client certificates required; sets redis_tls_url) and
#                    PostgreSQL ssl=on
#   start_redis_cluster
#                    a Redis Cluster on loopback: three masters with one replica
#                    each (cluster-enabled, AOF on, node timeout 2 s), made with
#                    `redis-cli --cluster create`; sets redis_cluster_url
#                    (redis-cluster://host:port,…) and redis_cluster_ports
#   start_s3         an S3-compatible server on loopback (moto_server, installed
#                    from PyPI with `pip install moto[server]` when missing); sets
#                    s3_endpoint
#   services_cleanup [STATUS]  stop them all and remove `work` (install it as the EXIT
#                    trap); after a failure (STATUS, else $?) print the servers' last
#                    log lines and the free disk first
#   ensure_browser   install Debian's chromium and chromium-driver when missing (the
#                    dashboard's browser test)
# Functions log to stderr with the script's name.

redis_pid=""
redis_port=""
redis_url=""
redis_tls_port=""
redis_tls_url=""
tls_dir=""
pg_bin=""
pg_ctl=""
pg_data=""
pg_port=""
pg_user=""
database_url=""
database_read_url=""
s3_pid=""
s3_endpoint=""
redis_cluster_pids=""
redis_cluster_ports=""
redis_cluster_url=""

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }

missing_service() {
  if [ "$require" = "1" ]; then
    log "FATAL: $1 (ROUTERO_TEST_REQUIRE_SERVICES=1)"
    exit 1
  fi
  log "warning: $1; the tests that need it will skip"
}

services_cleanup() {
  local status="${1:-$?}"
  set +e
  [ "$status" = "0" ] || services_report
  stop_redis
  # shellcheck disable=SC2086
  [ -n "$redis_cluster_pids" ] && kill -9 $redis_cluster_pids 2>/dev/null
  [ -n "$s3_pid" ] && kill "$s3_pid" 2>/dev/null
  if [ -n "$pg_ctl" ] && [ -n "$pg_data" ]; then
    [ -d "$work/pg/replica" ] && as_pg "$pg_ctl" -D "$work/pg/replica" -m immediate stop >/dev/null 2>&1
    as_pg "$pg_ctl" -D "$pg_data" -m immediate stop >/dev/null 2>&1
  fi
  rm -rf "$work"
}

# After a failed run: what the servers logged last and how much disk was left, the
# usual causes of a test losing its connections all at once.
services_report() {
  local file
  for file in "$work/pg/server.log" "$work/pg/replica.log" "$work/redis/redis.log"; do
    [ -s "$file" ] || continue
    log "the last lines of $file:"
    tail -n 40 "$file" >&2
  done
  log "disk space:"
  df -h "$work" "$PWD" >&2 2>/dev/null
}

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

ensure_browser() {
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    return 0
  fi
  log "installing chromium and chromium-driver"
  apt_install chromium chromium-driver ||
    missing_service "chromium and chromium-driver are not installed and could not be"
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

make_certs() {
  if ! command -v openssl >/dev/null 2>&1; then
    log "installing openssl"
    apt_install openssl || { missing_service "openssl is not installed and could not be"; return 0; }
  fi
  local dir="$work/tls"
  mkdir -p "$dir"
  (
    set -e
    cd "$dir"
    for ca in ca other-ca; do
      openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=Routero test $ca" \
        -keyout "$ca.key" -out "$ca.crt" 2>/dev/null
    done
    printf 'subjectAltName=DNS:localhost\n' > server.ext
    printf 'extendedKeyUsage=clientAuth\n' > client.ext
    for leaf in server client; do
      openssl req -newkey rsa:2048 -nodes -subj "/CN=$leaf" \
        -keyout "$leaf.key" -out "$leaf.csr" 2>/dev/null
      openssl x509 -req -in "$leaf.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -days 2 -extfile "$leaf.ext" -out "$leaf.crt" 2>/dev/null
    done
    chmod 644 ./*.crt ./*.key
  ) || { missing_service "openssl could not make the test certificates"; return 0; }
  tls_dir="$dir"
  log "test certificates in $tls_dir"
}

start_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    log "installing redis-server"
    apt_install redis-server || { missing_service "redis-server is not installed and could not be"; return 0; }
  fi
  if [ -z "$redis_port" ]; then
    redis_port="$(free_port)" || { missing_service "no free port for Redis"; return 0; }
  fi
  mkdir -p "$work/redis"
  local tls=()
  if [ -n "$tls_dir" ]; then
    if [ -z "$redis_tls_port" ]; then
      redis_tls_port="$(free_port)" || { missing_service "no free port for Redis TLS"; return 0; }
    fi
    tls=(--tls-port "$redis_tls_port" --tls-cert-file "$tls_dir/server.crt"
      --tls-key-file "$tls_dir/server.key" --tls-ca-cert-file "$tls_dir/ca.crt"
      --tls-auth-clients yes)
  fi
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" \
    --appendonly yes --appendfsync everysec --save "" \
    --logfile "$work/redis/redis.log" "${tls[@]}" &
  redis_pid=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null; then
      redis_url="redis://127.0.0.1:$redis_port"
      log "redis-server on $redis_url"
      if [ -n "$redis_tls_port" ]; then
        redis_tls_url="rediss://localhost:$redis_tls_port"
        log "redis-server over TLS on $redis_tls_url"
      fi
      return 0
    fi
    sleep 0.1
  done
  missing_service "redis-server did not start (see its log above)"
  cat "$work/redis/redis.log" >&2 || true
}

stop_redis() {
  if [ -n "$redis_pid" ]; then
    kill "$redis_pid" 2>/dev/null
    wait "$redis_pid" 2>/dev/null
    redis_pid=""
  fi
  return 0
}

# One cluster node on `port` (its files in $work/cluster/$port: started again after a
# kill, it rejoins the cluster from its nodes.conf and AOF).
start_cluster_node() {
  local port=$1 dir="$work/cluster/$1"
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --cluster-enabled yes \
    --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
    --appendonly yes --appendfsync everysec --save "" --logfile "$dir/redis.log" &
  redis_cluster_pids="$redis_cluster_pids $!"
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
}

start_redis_cluster() {
  command -v redis-server >/dev/null 2>&1 || return 0 # start_redis said why
  local ports=() port
  for _ in 1 2 3 4 5 6; do
    port="$(free_port)" || { missing_service "no free port for the Redis Cluster"; return 0; }
    ports+=("$port")
    start_cluster_node "$port"
  done
  local nodes=()
  for port in "${ports[@]}"; do nodes+=("127.0.0.1:$port"); done
  if ! redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
      >"$work/cluster/create.log" 2>&1; then
    cat "$work/cluster/create.log" >&2
    missing_service "redis-cli --cluster create failed"
    return 0
  fi
  # Every node agrees that the cluster is up before anyone uses it.
  for port in "${ports[@]}"; do
    for _ in $(seq 1 200); do
      redis-cli -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && break
      sleep 0.1
    done
  done
  redis_cluster_ports="${ports[*]}"
  redis_cluster_url="redis-cluster://127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
  log "Redis Cluster (3 masters, 3 replicas) on $redis_cluster_url"
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

# The server's options (and, with tls_dir, its TLS files, owned by its user); the port
# is the primary's unless given.
pg_options() {
  local options="-p ${1:-$pg_port} -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
  if [ -n "$tls_dir" ]; then
    cp "$tls_dir/server.crt" "$tls_dir/server.key" "$work/pg/"
    chmod 600 "$work/pg/server.key"
    [ -n "$pg_user" ] && chown "$pg_user" "$work/pg/server.crt" "$work/pg/server.key"
    options="$options -c ssl=on -c ssl_cert_file=$work/pg/server.crt -c ssl_key_file=$work/pg/server.key"
  fi
  echo "$options"
}

start_postgres() {
  if [ -n "$pg_data" ] && [ -d "$pg_data" ]; then
    as_pg "$pg_ctl" -D "$pg_data" -l "$work/pg/server.log" -w -t 60 \
      -o "$(pg_options)" start >/dev/null
    return $?
  fi
  if ! pg_bin="$(find_pg_bin)"; then
    log "installing PostgreSQL"
    apt_install postgresql || true
    pg_bin="$(find_pg_bin)" || { missing_service "PostgreSQL is not installed and could not be"; return 0; }
  fi
  if [ "$(id -u)" = "0" ]; then
    pg_user=postgres
    if ! id "$pg_user" >/dev/null 2>&1; then
      useradd --system --no-create-home --shell /usr/sbin/nologin "$pg_user" 2>/dev/null ||
        { missing_service "cannot create the unprivileged postgres user"; return 0; }
    fi
  fi
  pg_port="$(free_port)" || { missing_service "no free port for PostgreSQL"; return 0; }
  mkdir -p "$work/pg"
  [ -n "$pg_user" ] && chown -R "$pg_user" "$work/pg"
  if ! as_pg "$pg_bin/initdb" -D "$work/pg/data" -U routero --auth=trust -E UTF8 --no-locale >"$work/pg/initdb.log" 2>&1; then
    cat "$work/pg/initdb.log" >&2
    missing_service "initdb failed"
    return 0
  fi
  pg_data="$work/pg/data"
  pg_ctl="$pg_bin/pg_ctl"
  if ! as_pg "$pg_ctl" -D "$pg_data" -l "$work/pg/server.log" -w -t 60 \
      -o "$(pg_options)" start >/dev/null; then
    cat "$work/pg/server.log" >&2 || true
    missing_service "PostgreSQL did not start"
    return 0
  fi
  database_url="postgres://routero@127.0.0.1:$pg_port/postgres"
  log "PostgreSQL on $database_url"
}

# A PostgreSQL program of the same installation as the server's (bin directories may
# hold only links to initdb and pg_ctl, as /usr/local/bin does on some machines).
pg_tool() {
  local dir
  for dir in "$pg_bin" "$(dirname "$(readlink -f "$pg_bin/initdb")")" /usr/lib/postgresql/*/bin; do
    if [ -x "$dir/$1" ]; then
      echo "$dir/$1"
      return 0
    fi
  done
  command -v "$1"
}

# A streaming replica of the primary (pg_basebackup -R), on its own port; sets
# database_read_url.
start_pg_replica() {
  [ -n "$database_url" ] || return 0 # start_postgres said why
  local port
  port="$(free_port)" || { missing_service "no free port for the PostgreSQL replica"; return 0; }
  local basebackup
  basebackup="$(pg_tool pg_basebackup)" || { missing_service "pg_basebackup is not installed"; return 0; }
  if ! as_pg "$basebackup" -h 127.0.0.1 -p "$pg_port" -U routero \
      -D "$work/pg/replica" -R -X stream >"$work/pg/basebackup.log" 2>&1; then
    cat "$work/pg/basebackup.log" >&2
    missing_service "pg_basebackup of the primary failed"
    return 0
  fi
  if ! as_pg "$pg_ctl" -D "$work/pg/replica" -l "$work/pg/replica.log" -w -t 60 \
      -o "$(pg_options "$port")" start >/dev/null; then
    cat "$work/pg/replica.log" >&2 || true
    missing_service "the PostgreSQL replica did not start"
    return 0
  fi
  database_read_url="postgres://routero@127.0.0.1:$port/postgres"
  log "PostgreSQL streaming replica on $database_read_url"
}

stop_postgres() {
  as_pg "$pg_ctl" -D "$pg_data" -m fast -w stop >/dev/null
}

start_s3() {
  if ! command -v moto_server >/dev/null 2>&1; then
    log "installing moto[server] from PyPI"
    python3 -m pip install -q 'moto[server]' >/dev/null 2>&1 ||
      { missing_service "moto_server is not installed and could not be"; return 0; }
    hash -r
  fi
  local port
  port="$(free_port)" || { missing_service "no free port for S3"; return 0; }
  mkdir -p "$work/s3"
  moto_server -H 127.0.0.1 -p "$port" >"$work/s3/moto.log" 2>&1 &
  s3_pid=$!
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      s3_endpoint="http://127.0.0.1:$port"
      log "S3-compatible server (moto) on $s3_endpoint"
      return 0
    fi
    sleep 0.1
  done
  missing_service "moto_server did not start"
  cat "$work/s3/moto.log" >&2 || true
}
