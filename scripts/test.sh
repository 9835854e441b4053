#!/usr/bin/env bash
# The whole test suite, tier by tier, each timed:
#   1. formatting and lints (cargo fmt --check, cargo clippy -D warnings)
#   2. core unit tests (no database)
#   3. #[pg_test]s inside a throwaway PostgreSQL 15 run as the postgres user
#   4. SQL regression tests (tests/pg_regress, PostgreSQL's pg_regress)
#   5. client-side integration tests (several sessions, cancels, timeouts, upgrades, a replica,
#      dump and restore)
#   6. the dashboard: its API against SQL, and every page in headless Chromium
# The extension is built once, in release mode, and installed only into the project's
# build and test tree (scripts/env.sh); a last check proves that Debian's installation,
# which the demo cluster runs, is exactly as it was.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

bash scripts/install-deps.sh

# Runs one tier and reports its time. The status is checked explicitly: set -e does not
# apply inside a function called from a condition.
tier() {
  local name=$1; shift
  echo "==> $name"
  local t0=$SECONDS rc=0
  "$@" || rc=$?
  if [ $rc != 0 ]; then
    echo "==> $name: FAILED after $((SECONDS - t0)) s"
    return $rc
  fi
  echo "==> $name: passed in $((SECONDS - t0)) s"
}

debian_so=$("$DEBIAN_PG_CONFIG" --pkglibdir)/customer_analyzer.so
fingerprint() { if [ -f "$debian_so" ]; then sha256sum < "$debian_so"; else echo "not installed"; fi; }
debian_before=$(fingerprint)

tier "formatting (cargo fmt --check)" cargo fmt --all --check
tier "lints (cargo clippy -D warnings)" \
  cargo clippy --release --workspace --all-targets -- -D warnings

tier "core crate (cargo test -p customer_analyzer_core)" \
  cargo test --release -p customer_analyzer_core

# a cluster left over from an interrupted run must not hold the tree's library
bash scripts/test-cluster.sh stop
PGDATA_DIR=${CA_TEST_PGDATA:-/var/lib/postgresql/customer_analyzer-test}
mkdir -p "$PGDATA_DIR"
chown postgres:postgres "$PGDATA_DIR"
# One test at a time: tests share the extension's configuration row.
RUST_TEST_THREADS=1 tier "extension (cargo pgrx test pg15, run as postgres)" \
  cargo pgrx test pg15 --release --runas postgres --pgdata "$PGDATA_DIR"

against_test_cluster() {
  local dsn rc=0
  dsn=$(bash scripts/test-cluster.sh start)
  tier "SQL regression (tests/pg_regress)" bash scripts/regress.sh || rc=$?
  if [ $rc = 0 ]; then
    CA_IT_DSN="$dsn" tier "integration (several sessions, cancels, timeouts, upgrades)" \
      cargo test --release -p customer_analyzer_integration -- --test-threads=1 || rc=$?
  fi
  if [ $rc = 0 ]; then
    # on ports the system picks, so a running demo dashboard (8080) is never in the way
    CA_IT_DSN="$dsn" tier "dashboard (the HTTP API, and every page in headless Chromium)" \
      cargo test --release -p customer_analyzer_web -- --test-threads=1 || rc=$?
  fi
  bash scripts/test-cluster.sh stop
  return $rc
}
against_test_cluster

debian_untouched() {
  local after
  after=$(fingerprint)
  if [ "$after" != "$debian_before" ]; then
    echo "the test run changed $debian_so" >&2
    return 1
  fi
  local release
  release=$(find target/release/customer_analyzer-package -name customer_analyzer.so -print -quit 2>/dev/null || true)
  if [ -f "$debian_so" ] && [ -n "$release" ] && ! cmp -s "$debian_so" "$release"; then
    echo "$debian_so is not the release build scripts/demo.sh installed" >&2
    return 1
  fi
  echo "Debian's library: $after (${release:+the release build of scripts/demo.sh}${release:-no release build here})"
}
tier "Debian's PostgreSQL still loads what it loaded before the tests" debian_untouched
