#!/usr/bin/env bash
# The HTTP API against the SQL it runs: GET /api/predictions/{id} for random users under
# wrk (8 connections, 2 threads), then pgbench running the very statement the endpoint
# runs (customer-analyzer-web --print-sql predictions) with 8 clients, prepared, in the
# same run, both over TCP to 127.0.0.1 as the dashboard's reader role. Prints requests
# (transactions) per second, p50 and p99 of each, and the ratio; then both again with one
# connection, for the latency of a request alone.
# Usage: benches/web_bench.sh [database] [seconds]   (default shop, 20; after
# scripts/demo.sh, which creates the role and /var/lib/customer_analyzer/web/web.env)
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${1:-shop}
SECS=${2:-20}
PORT=${CA_WEB_BENCH_PORT:-18090}
ENVFILE=/var/lib/customer_analyzer/web/web.env
source scripts/env.sh

if ! command -v wrk >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
cargo build --release -q -p customer_analyzer_web
BIN=target/release/customer-analyzer-web
set -a; source "$ENVFILE"; set +a
# the bench's own database, whatever web.env names
export CUSTOMER_ANALYZER_WEB_DSN="$CUSTOMER_ANALYZER_WEB_DSN dbname=$DB"
export CUSTOMER_ANALYZER_WEB_LISTEN=127.0.0.1:$PORT

tmp=$(mktemp -d)
chmod 755 "$tmp"
web=
trap '[ -n "$web" ] && kill "$web" 2>/dev/null; rm -rf "$tmp"' EXIT
"$BIN" > "$tmp/web.log" 2>&1 &
web=$!
for _ in $(seq 1 50); do grep -q '^listening' "$tmp/web.log" && break; sleep 0.1; done
grep -q '^listening' "$tmp/web.log" || { cat "$tmp/web.log" >&2; echo "the service did not start" >&2; exit 1; }

psql_db() { runuser -u postgres -- psql -X -qAt -d "$DB" "$@"; }
read -r lo hi users <<<"$(psql_db -F' ' -c "SELECT min(user_id), max(user_id), count(*) FROM customer_analyzer.user_metrics")"
[ "${users:-0}" -gt 0 ] || { echo "the feature store of $DB is empty: run scripts/demo.sh first" >&2; exit 1; }
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; database $DB, $users users in the feature store (ids $lo to $hi); $(date -u +%FT%TZ)"

cat > "$tmp/random.lua" <<LUA
math.randomseed(42)
request = function()
  return wrk.format("GET", "/api/predictions/" .. math.random($lo, $hi))
end
LUA
# warm every connection's cache (plans, decoded models) first, as a running service is
wrk -t2 -c8 -d5s -s "$tmp/random.lua" "http://127.0.0.1:$PORT" >/dev/null

{
  echo "\\set uid random($lo, $hi)"
  "$BIN" --print-sql predictions | sed 's/\$1/:uid/g; s/\$2/3/g' | tr '\n' ' '
  echo ";"
} > "$tmp/predictions.sql"
pass=$(sed -n 's/.*password=\([^ ]*\).*/\1/p' <<<"$CUSTOMER_ANALYZER_WEB_DSN")
user=$(sed -n 's/.*user=\([^ ]*\).*/\1/p' <<<"$CUSTOMER_ANALYZER_WEB_DSN")
pg() {
  PGPASSWORD=$pass pgbench -n -M prepared -c "$1" -j "$(( $1 < 2 ? 1 : 2 ))" -T "$2" -h 127.0.0.1 -U "$user" \
    -f "$tmp/predictions.sql" "${@:3}" "$DB"
}
pg 8 5 >/dev/null 2>&1

# the same load both ways: 8 connections (the issue's figure), then 1 (latency alone)
for conns in 8 1; do
  wrk -t"$(( conns < 2 ? 1 : 2 ))" -c"$conns" -d"${SECS}s" --latency -s "$tmp/random.lua" "http://127.0.0.1:$PORT" > "$tmp/wrk.txt"
  http_rps=$(awk '/^Requests\/sec/ {print $2}' "$tmp/wrk.txt")
  http_p50=$(awk '$1 == "50%" {print $2}' "$tmp/wrk.txt")
  http_p99=$(awk '$1 == "99%" {print $2}' "$tmp/wrk.txt")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$tmp/wrk.txt")
  rm -f "$tmp"/pgb.*
  (cd "$tmp" && pg "$conns" "$SECS" -l --log-prefix=pgb > pgbench.txt 2>&1)
  sql_tps=$(awk '/^tps/ {print $3; exit}' "$tmp/pgbench.txt")
  read -r sql_p50 sql_p99 <<<"$(cat "$tmp"/pgb.* | awk '{print $3}' | sort -n | awk '{v[NR]=$1} END {printf "%.2fms %.2fms", v[int(NR*0.5)]/1000, v[int(NR*0.99)]/1000}')"
  failed=$(awk '/number of failed transactions/ {print $5}' "$tmp/pgbench.txt")
  echo "GET /api/predictions/{id} (wrk, $conns connection(s), ${SECS} s): ${http_rps} requests/s, p50 ${http_p50}, p99 ${http_p99}${non2xx:+, non-2xx: $non2xx}"
  echo "the same SQL (pgbench -M prepared, $conns client(s), ${SECS} s): ${sql_tps} transactions/s, p50 ${sql_p50}, p99 ${sql_p99}, failed ${failed:-0}"
  awk -v h="$http_rps" -v s="$sql_tps" 'BEGIN {printf "HTTP throughput / SQL throughput: %.2f\n", h / s}'
done
