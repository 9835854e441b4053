#!/usr/bin/env bash
# The whole test suite: core unit tests (no database), then the extension's tests
# against a real PostgreSQL 15 server run as the postgres user (never as root).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

echo "==> core crate: cargo test -p customer_analyzer_core"
cargo test -p customer_analyzer_core

echo "==> extension: cargo pgrx test pg15 (a PostgreSQL 15 run as postgres)"
PGDATA_DIR=${CA_TEST_PGDATA:-/var/lib/postgresql/customer_analyzer-test}
mkdir -p "$PGDATA_DIR"
chown postgres:postgres "$PGDATA_DIR"
# One test at a time: tests share the extension's configuration row.
RUST_TEST_THREADS=1 cargo pgrx test pg15 --runas postgres --pgdata "$PGDATA_DIR"
