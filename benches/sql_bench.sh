#!/usr/bin/env bash
# SQL benchmark: demo generation, all-user refresh_features() and single-user refresh,
# timed inside the server. Needs the extension installed (scripts/demo.sh does that).
# Usage: benches/sql_bench.sh [n_users] [days]   (defaults 100000 users, 240 days)
set -euo pipefail
cd "$(dirname "$0")/.."
N_USERS=${1:-100000}
DAYS=${2:-240}
DB=ca_bench
bash scripts/cluster.sh >/dev/null
runuser -u postgres -- psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
# fed on standard input: the postgres user may not read the checkout (a root-only clone)
cat benches/sql_bench.sql benches/sql_bench_segments.sql benches/sql_bench_cancel.sql |
  runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -v n_users="$N_USERS" -v days="$DAYS"
