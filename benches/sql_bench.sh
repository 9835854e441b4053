#!/usr/bin/env bash
# SQL benchmark: demo generation, refresh_features() (all users and single users), train(),
# predict_churn(), score_all(), drift_report(), segment_users() and how fast a cancel
# lands, timed inside the server with clock_timestamp(). Each step of benches/sql_bench.sql
# (and the segmentation and cancel scripts) runs in a backend of its own, so the peak
# resident memory (VmHWM) printed after it is that step's own. Needs the extension
# installed (scripts/demo.sh does that).
# Usage: benches/sql_bench.sh [n_users] [days]   (defaults 100000 users, 240 days; churn's
# training schedule needs about 190 days, so shorter shops stop at train_churn_gbm)
#   KEEP_SHOP=1  reuse the shop already generated in database ca_bench (same size), e.g.
#                to time the steps again on a quiet machine; generation is then skipped.
#   SKIP_STEPS="a b"  leave out the steps named (e.g. "refresh_features(user_id) cancel").
set -euo pipefail
cd "$(dirname "$0")/.."
N_USERS=${1:-100000}
DAYS=${2:-240}
DB=ca_bench
psql_pg() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 "$@"; }
bash scripts/cluster.sh >/dev/null

if [ "${KEEP_SHOP:-0}" = 1 ]; then
  have=$(psql_pg -d "$DB" -Atc "SELECT figure FROM bench_figures WHERE what = 'shop size'" 2>/dev/null || true)
  if [ "$have" != "$N_USERS users x $DAYS days" ]; then
    echo "KEEP_SHOP=1, but $DB holds '${have:-no shop}', not $N_USERS users x $DAYS days" >&2
    exit 1
  fi
  # keep the generation's figures; the steps run again add theirs
  psql_pg -d "$DB" -c "DELETE FROM bench_figures WHERE id > (SELECT min(id) FROM bench_figures WHERE what LIKE '%step generate')"
else
  # About 0.5 events per user-day at ~180 bytes each with the two indexes, plus the feature
  # store, the models and room for WAL and sorts: refuse early rather than fill the disk.
  data_dir=$(psql_pg -d postgres -Atc "SHOW data_directory")
  need_gb=$(( N_USERS * DAYS / 10000000 + 5 ))
  # the shop this run replaces frees its space first
  old_gb=$(psql_pg -d postgres -Atc "SELECT coalesce((SELECT pg_database_size(datname) FROM pg_database
                                                       WHERE datname = '$DB'), 0) / 1073741824")
  free_gb=$(( $(df -BG --output=avail "$data_dir" | tail -1 | tr -dc 0-9) + ${old_gb:-0} ))
  if [ "$free_gb" -lt "$need_gb" ]; then
    echo "sql_bench: $N_USERS users x $DAYS days needs about $need_gb GB free where PostgreSQL keeps its data ($data_dir); $free_gb GB are free" >&2
    exit 1
  fi
  echo "disk: about $need_gb GB needed, $free_gb GB free in $data_dir"
  psql_pg -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
  psql_pg -d "$DB" <<SQL
SET client_min_messages = warning;
CREATE EXTENSION customer_analyzer;
CREATE TABLE bench_figures (id serial, what text, figure text);
INSERT INTO bench_figures (what, figure) VALUES ('shop size', '$N_USERS users x $DAYS days');
SQL
fi
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

# Splits the scripts at their "-- step: name" lines and runs each step in a new session
# (fed on standard input: the postgres user may not read the checkout, a root-only clone).
preamble=""
run_step() {
  local name=$1 body=$2
  if [ "$name" = preamble ]; then preamble=$body; return 0; fi
  [ "${KEEP_SHOP:-0}" = 1 ] && [ "$name" = generate ] && return 0
  for skip in ${SKIP_STEPS:-}; do [ "$skip" = "$name" ] && return 0; done
  echo "==> $name ($(date +%T))"
  psql_pg -d "$DB" -v step="$name" <<SQL
\pset footer off
SET client_min_messages = warning;
SELECT set_config('bench.n_users', '$N_USERS', false), set_config('bench.days', '$DAYS', false) \gset
$preamble
$body
INSERT INTO bench_figures (what, figure)
SELECT '  peak backend memory (VmHWM) of step ' || :'step',
       (regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\s+(\d+) kB'))[1]::bigint / 1024 || ' MB';
SQL
}
name="" body=""
while IFS= read -r line; do
  if [[ $line =~ ^--\ step:\ (.*)$ ]]; then
    [ -n "$name" ] && run_step "$name" "$body"
    name=${BASH_REMATCH[1]} body=""
  else
    body+="$line"$'\n'
  fi
done < <(cat benches/sql_bench.sql benches/sql_bench_segments.sql benches/sql_bench_cancel.sql)
[ -n "$name" ] && run_step "$name" "$body"

psql_pg -d "$DB" <<'SQL'
\pset footer off
INSERT INTO bench_figures (what, figure)
VALUES ('events table size', pg_size_pretty(pg_total_relation_size('public.events'))),
       ('feature_store size', pg_size_pretty(pg_total_relation_size('customer_analyzer.feature_store'))),
       ('customer_analyzer.max_memory_mb', current_setting('customer_analyzer.max_memory_mb'));
SELECT what, figure FROM bench_figures ORDER BY id;
SQL
