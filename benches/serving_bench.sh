#!/usr/bin/env bash
# Serving throughput and cold start, on a database whose feature store is filled and
# whose churn model is deployed (scripts/demo.sh's shop, or benches/sql_bench.sh's):
#   1. pgbench -M prepared -c 8 -j 2 -T $SECS: SELECT customer_analyzer.predict_churn(:uid)
#      over random users, and in the same run the plain index lookup of the same user's
#      feature row, alternated twice; transactions/s, p50 and p99 of each, and the ratio.
#   2. the first prediction on a fresh backend (the library is preloaded: model read and
#      decode, plans), timed inside the server, over $COLD fresh connections, against the second
#      call on the same backend.
#   3. both loads again through pgbouncer in transaction mode (the simple protocol: it
#      keeps no prepared statements in that mode), beside the same load direct with the
#      simple protocol.
# Runs as the postgres user over the cluster's Unix socket.
# Usage: benches/serving_bench.sh [database] [seconds]   (default shop, 20)
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${1:-shop}
SECS=${2:-20}
COLD=${COLD:-30}
# not pgbouncer's usual 6432: Debian's package may run its own instance there
BOUNCER_PORT=${CA_BOUNCER_PORT:-6439}
PG_PORT=$(pg_lsclusters -h | awk '$1 == 15 && $2 == "main" {print $3}')
if ! command -v pgbouncer >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null
fi

tmp=$(mktemp -d)
chown postgres "$tmp"
bouncer=
trap '[ -n "$bouncer" ] && kill "$bouncer" 2>/dev/null; rm -rf "$tmp"' EXIT
as_pg() { runuser -u postgres -- "$@"; }
psql_db() { as_pg psql -X -qAt -p "$PG_PORT" -d "$DB" "$@"; }

read -r lo hi users <<<"$(psql_db -F' ' -c "SELECT min(user_id), max(user_id), count(*) FROM customer_analyzer.user_metrics")"
[ "${users:-0}" -gt 0 ] || { echo "the feature store of $DB is empty" >&2; exit 1; }
model=$(psql_db -c "SELECT model_id || ' (' || algorithm || ')' FROM customer_analyzer.deployed_models WHERE task = 'churn'")
[ -n "$model" ] || { echo "no churn model is deployed in $DB" >&2; exit 1; }
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; database $DB, $users users in the feature store (ids $lo to $hi), churn model $model; $(date -u +%FT%TZ)"

echo "\\set uid random($lo, $hi)
SELECT customer_analyzer.predict_churn(:uid);" > "$tmp/predict.sql"
echo "\\set uid random($lo, $hi)
SELECT * FROM customer_analyzer.user_metrics WHERE user_id = :uid;" > "$tmp/lookup.sql"
chmod 644 "$tmp"/*.sql

# one pgbench run; prints "tps p50 p99" (latencies from the per-transaction log)
bench() {
  local script=$1 mode=$2 port=$3
  rm -f "$tmp"/pgb.*
  (cd "$tmp" && as_pg pgbench -n -M "$mode" -c 8 -j 2 -T "$SECS" -p "$port" -h "${4:-/var/run/postgresql}" \
      -f "$tmp/$script.sql" -l --log-prefix=pgb "$DB" > "$tmp/pgbench.txt" 2>&1) ||
    { cat "$tmp/pgbench.txt" >&2; exit 1; }
  local tps failed
  tps=$(awk '/^tps/ {printf "%d", $3; exit}' "$tmp/pgbench.txt")
  failed=$(awk '/number of failed transactions/ {print $5}' "$tmp/pgbench.txt")
  [ "${failed:-0}" = 0 ] || { echo "pgbench: $failed failed transactions" >&2; cat "$tmp/pgbench.txt" >&2; exit 1; }
  echo "$tps $(cat "$tmp"/pgb.* | awk '{print $3}' | sort -n | awk '{v[NR]=$1} END {printf "%.3f %.3f", v[int(NR*0.5)]/1000, v[int(NR*0.99)]/1000}')"
}
report() {  # label, then "tps p50 p99" of lookup and of predict
  local label=$1 lt lp50 lp99 pt pp50 pp99
  read -r lt lp50 lp99 <<<"$2"
  read -r pt pp50 pp99 <<<"$3"
  echo "$label: lookup $lt tps (p50 $lp50 ms, p99 $lp99 ms); predict_churn $pt tps (p50 $pp50 ms, p99 $pp99 ms); predict / lookup $(awk -v p="$pt" -v l="$lt" 'BEGIN {printf "%.2f", p / l}')"
}

# warm: every backend pgbench opens is fresh, so a short run first fills the OS cache
bench predict prepared "$PG_PORT" >/dev/null
echo "== 1. direct, pgbench -M prepared -c 8 -j 2 -T $SECS, alternated"
for round in 1 2; do
  report "round $round" "$(bench lookup prepared "$PG_PORT")" "$(bench predict prepared "$PG_PORT")"
done

echo "== 2. the first prediction on a fresh backend ($COLD connections, a random user each)"
for i in $(seq 1 "$COLD"); do
  uid=$(( lo + (RANDOM * 32768 + RANDOM) % (hi - lo + 1) ))
  # each statement's own duration, measured by the server: the first call reads and
  # decodes the model and prepares its plans; the second finds them in the backend's cache
  psql_db -F' ' -c "SELECT customer_analyzer.predict_churn($uid) IS NOT NULL, 1000 * extract(epoch FROM clock_timestamp() - statement_timestamp())" \
               -c "SELECT customer_analyzer.predict_churn($uid + 0) IS NOT NULL, 1000 * extract(epoch FROM clock_timestamp() - statement_timestamp())" |
    awk '{print $2}' | paste -sd' '
done > "$tmp/cold.txt"
first=$(awk '{print $1}' "$tmp/cold.txt" | sort -n | awk '{v[NR]=$1} END {printf "p50 %.1f ms, max %.1f ms", v[int((NR+1)/2)], v[NR]}')
second=$(awk '{print $2}' "$tmp/cold.txt" | sort -n | awk '{v[NR]=$1} END {printf "p50 %.2f ms, max %.2f ms", v[int((NR+1)/2)], v[NR]}')
echo "first call on a fresh backend: $first; second call: $second (n = $COLD)"

echo "== 3. through pgbouncer (transaction mode, simple protocol) beside direct (simple protocol)"
cat > "$tmp/pgbouncer.ini" <<INI
[databases]
$DB = host=/var/run/postgresql port=$PG_PORT dbname=$DB
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $tmp/userlist.txt
pool_mode = transaction
default_pool_size = 8
max_client_conn = 100
logfile = $tmp/pgbouncer.log
pidfile = $tmp/pgbouncer.pid
INI
echo '"postgres" ""' > "$tmp/userlist.txt"
chown postgres "$tmp"/pgbouncer.ini "$tmp"/userlist.txt
as_pg pgbouncer "$tmp/pgbouncer.ini" > "$tmp/pgbouncer.out" 2>&1 &
bouncer=$!
for _ in $(seq 1 50); do
  as_pg psql -X -qAt -h 127.0.0.1 -p "$BOUNCER_PORT" -d "$DB" -c "SELECT 1" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "pgbouncer $(pgbouncer --version | head -1 | awk '{print $2}'), pool of 8 server connections"
bench predict simple "$BOUNCER_PORT" 127.0.0.1 >/dev/null
report "direct, simple protocol" "$(bench lookup simple "$PG_PORT")" "$(bench predict simple "$PG_PORT")"
report "pgbouncer, transaction mode" "$(bench lookup simple "$BOUNCER_PORT" 127.0.0.1)" "$(bench predict simple "$BOUNCER_PORT" 127.0.0.1)"
