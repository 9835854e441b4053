#!/usr/bin/env bash
# The whole test suite, tier by tier, each timed:
#   1. core unit tests (no database)
#   2. #[pg_test]s inside a throwaway PostgreSQL 15 run as the postgres user (never root)
#   3. client-side integration tests (several sessions, cancels, timeouts) against a
#      second throwaway cluster
# Everything is built once, in release mode, and shared by the tiers.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

tier() {
  local name=$1; shift
  echo "==> $name"
  local t0=$SECONDS
  "$@"
  echo "==> $name: passed in $((SECONDS - t0)) s"
}

tier "core crate (cargo test -p customer_analyzer_core)" \
  cargo test --release -p customer_analyzer_core

PGDATA_DIR=${CA_TEST_PGDATA:-/var/lib/postgresql/customer_analyzer-test}
mkdir -p "$PGDATA_DIR"
chown postgres:postgres "$PGDATA_DIR"
# One test at a time: tests share the extension's configuration row.
RUST_TEST_THREADS=1 tier "extension (cargo pgrx test pg15, run as postgres)" \
  cargo pgrx test pg15 --release --runas postgres --pgdata "$PGDATA_DIR"

integration() {
  local dsn rc=0
  dsn=$(bash scripts/test-cluster.sh start)
  CA_IT_DSN="$dsn" cargo test --release -p customer_analyzer_integration -- --test-threads=1 || rc=$?
  bash scripts/test-cluster.sh stop
  return $rc
}
tier "integration (several sessions, cancels, timeouts)" integration
