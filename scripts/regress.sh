#!/usr/bin/env bash
# The SQL regression tests: tests/pg_regress/sql/*.sql run by PostgreSQL's pg_regress
# against the running test cluster (scripts/test-cluster.sh start), each output compared
# with tests/pg_regress/expected/*.out. pg_regress and psql run as root and connect as
# postgres over TCP, so nothing run as postgres reads the checkout.
# Usage: scripts/regress.sh [test ...]   (default: every test in tests/pg_regress/schedule)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

# the README's tour is tests/pg_regress/sql/tour.sql, character for character
readme_tour=$(awk '/^## A short SQL tour/ {t=1} t && /^```sql$/ {b=1; next} b && /^```$/ {exit} b' README.md)
if [ "$readme_tour" != "$(cat tests/pg_regress/sql/tour.sql)" ]; then
  echo "README.md's SQL tour differs from tests/pg_regress/sql/tour.sql" >&2
  diff <(printf '%s\n' "$readme_tour") tests/pg_regress/sql/tour.sql >&2 || true
  exit 1
fi

PG_REGRESS=$CA_PG_TREE/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress
OUT=$(mktemp -d /tmp/customer_analyzer-regress.XXXXXX)
args=(--bindir="$CA_PG_TREE/lib/postgresql/15/bin" --host=127.0.0.1 --port="${CA_IT_PORT:-5499}"
      --user=postgres --dbname=ca_regress --inputdir=tests/pg_regress --outputdir="$OUT")
# one thread, so that every trained figure is the same on every run and machine
export PGOPTIONS="-c customer_analyzer.max_threads=1"
if [ $# -gt 0 ]; then
  tests=("$@")
else
  mapfile -t tests < <(sed -n 's/^test: //p' tests/pg_regress/schedule)
fi
if ! "$PG_REGRESS" "${args[@]}" "${tests[@]}"; then
  cat "$OUT/regression.diffs" 2>/dev/null || true
  echo "outputs kept in $OUT"
  exit 1
fi
rm -rf "$OUT"
