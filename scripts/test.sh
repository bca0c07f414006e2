#!/usr/bin/env bash
# Runs every test of the workspace against throwaway Redis and PostgreSQL servers.
#
# On a fresh Debian machine it installs what is missing (redis-server, PostgreSQL,
# Chromium and ChromeDriver for the dashboard's browser test),
# makes a throwaway CA and certificates (openssl), starts one instance of each on free
# loopback ports in a temporary directory (Redis with a TLS port that asks for client
# certificates, PostgreSQL with ssl=on), exports ROUTERO_TEST_REDIS_URL,
# ROUTERO_TEST_REDIS_TLS_URL, ROUTERO_TEST_DATABASE_URL and ROUTERO_TEST_TLS_DIR, starts
# a Redis Cluster of three masters with a replica each (ROUTERO_TEST_REDIS_CLUSTER_URL)
# and a streaming replica of PostgreSQL (ROUTERO_TEST_DATABASE_READ_URL), starts
# an S3-compatible server (moto, from PyPI; ROUTERO_TEST_S3_ENDPOINT), runs
# `cargo test --workspace`, and stops the servers whatever happens.
#
# Environment:
#   ROUTERO_TEST_REQUIRE_SERVICES=1  a server that cannot be installed or started fails
#                                    the run (CI sets it); otherwise the adapter tests
#                                    that need it skip with a notice.
#   ROUTERO_LITELLM_PRICES=PATH      also check the community LiteLLM price map.
#   ROUTERO_TEST_ARTEFACTS=DIR       where the dashboard test writes its screenshots
#                                    (default: target/test-artefacts).
#   Extra arguments are passed to `cargo test`.
set -euo pipefail

cd "$(dirname "$0")/.."
require="${ROUTERO_TEST_REQUIRE_SERVICES:-0}"
work="$(mktemp -d /tmp/routero-test.XXXXXX)"
chmod 755 "$work"
# shellcheck source=scripts/services.sh
. scripts/services.sh
trap services_cleanup EXIT INT TERM

make_certs
[ -n "$tls_dir" ] && export ROUTERO_TEST_TLS_DIR="$tls_dir"
start_redis
[ -n "$redis_url" ] && export ROUTERO_TEST_REDIS_URL="$redis_url"
[ -n "$redis_tls_url" ] && export ROUTERO_TEST_REDIS_TLS_URL="$redis_tls_url"
start_redis_cluster
[ -n "$redis_cluster_url" ] && export ROUTERO_TEST_REDIS_CLUSTER_URL="$redis_cluster_url"
start_postgres
[ -n "$database_url" ] && export ROUTERO_TEST_DATABASE_URL="$database_url"
start_pg_replica
[ -n "$database_read_url" ] && export ROUTERO_TEST_DATABASE_READ_URL="$database_read_url"
start_s3
[ -n "$s3_endpoint" ] && export ROUTERO_TEST_S3_ENDPOINT="$s3_endpoint"
ensure_browser
export ROUTERO_TEST_ARTEFACTS="${ROUTERO_TEST_ARTEFACTS:-$PWD/target/test-artefacts}"

if [ -n "${ROUTERO_LITELLM_PRICES:-}" ] && [ ! -f "$ROUTERO_LITELLM_PRICES" ]; then
  log "FATAL: ROUTERO_LITELLM_PRICES=$ROUTERO_LITELLM_PRICES is not a file"
  exit 1
fi

cargo test --workspace --all-features "$@"
