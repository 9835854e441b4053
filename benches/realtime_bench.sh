#!/usr/bin/env bash
# Real-time latency: inserts events for random users at a steady 200, 500 and 1,000
# events/s, each its own committed transaction, while a second connection LISTENs on
# customer_analyzer_scores, and prints the delay from an insert's commit returning to the
# worker's NOTIFY for that event arriving (p50/p95/p99, client clocks on one machine),
# the queue depth over the run and the users rescored per second. Then the insert rate
# the shop sustains (pgbench, 4 clients, single-row inserts) with real time on and off,
# alternated INSERT_ROUNDS times (default 5) after INSERT_WARMUP seconds (default 40).
# The client is Python (psycopg) in a throwaway virtualenv, not a dependency.
# Usage: benches/realtime_bench.sh [database] [seconds per rate]  (default shop, 20;
# after scripts/demo.sh, whose cluster runs the worker for that database)
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${1:-shop}
SECONDS_PER_RATE=${2:-20}
# Debian's own Python, which the postgres user may run (the client connects as postgres
# by peer authentication on the local socket)
VENV=${CA_REALTIME_VENV:-/tmp/customer-analyzer-realtime-venv}
[ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "psycopg[binary]"
chmod -R a+rX "$VENV"
psql_db() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
psql_db -c "SELECT customer_analyzer.configure() ->> 'realtime' AS realtime" \
        -c "SELECT count(*) AS deployed_tasks FROM customer_analyzer.deployed_models" \
        -c "SELECT count(*) AS rescoring_workers FROM pg_stat_activity WHERE backend_type = 'customer_analyzer rescoring'"
# the client connects as postgres over the local socket
runuser -u postgres -- "$VENV/bin/python" - "$DB" "$SECONDS_PER_RATE" <<'PY'
import random, statistics, sys, threading, time
import psycopg

db, seconds = sys.argv[1], float(sys.argv[2])
TAG = '{"source": "realtime_bench"}'   # deleted at the end
conninfo = f"dbname={db}"
with psycopg.connect(conninfo, autocommit=True) as c:
    users = [r[0] for r in c.execute("SELECT user_id FROM customer_analyzer.user_metrics")]

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")

for rate in (200, 500, 1000):
    arrived = {}          # event time text -> first NOTIFY arrival (monotonic)
    stop = threading.Event()
    def listen():
        with psycopg.connect(conninfo, autocommit=True) as l:
            l.execute("LISTEN customer_analyzer_scores")
            while not stop.is_set():
                for n in l.notifies(timeout=0.2):
                    t = time.monotonic()
                    # the payload's event_at is the newest queued event of the user
                    key = n.payload.split('"event_at" : "')[-1].split('"')[0]
                    arrived.setdefault(key, t)
    depth = []
    def watch():
        with psycopg.connect(conninfo, autocommit=True) as w:
            while not stop.is_set():
                depth.append(w.execute("SELECT count(*) FROM customer_analyzer.rescore_queue").fetchone()[0])
                time.sleep(1)
    threads = [threading.Thread(target=listen), threading.Thread(target=watch)]
    for t in threads: t.start()
    time.sleep(1)
    with psycopg.connect(conninfo, autocommit=True) as w:
        rescored0 = w.execute("SELECT coalesce(sum(users_rescored), 0)::bigint FROM customer_analyzer.worker_status").fetchone()[0]
        committed = {}    # event time text -> commit returned (monotonic)
        start = time.monotonic()
        n = int(rate * seconds)
        for i in range(n):
            due = start + i / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            at = w.execute(
                "INSERT INTO public.events (user_id, event_type, created_at, event_data) "
                "VALUES (%s, 'page_view', clock_timestamp(), %s) RETURNING created_at::text",
                (random.choice(users), TAG)).fetchone()[0]
            committed[at] = time.monotonic()
        sent_for = time.monotonic() - start
        time.sleep(3)   # let the queue drain
        rescored = w.execute("SELECT coalesce(sum(users_rescored), 0)::bigint FROM customer_analyzer.worker_status").fetchone()[0] - rescored0
    stop.set()
    for t in threads: t.join()
    # psql's json_build_object prints timestamptz like to_json: 2026-11-26T19:00:00.123456+00:00
    def norm(s):
        return s.replace("T", " ").replace("+00:00", "+00")
    arrivals = {norm(k): v for k, v in arrived.items()}
    delays = [(arrivals[k] - t) * 1000 for k, t in committed.items() if k in arrivals]
    print(f"{rate} events/s: {n} inserts in {sent_for:.1f} s ({n / sent_for:.0f}/s achieved), "
          f"{len(delays)} matched to a NOTIFY (the rest were folded into a later event of the same user); "
          f"delay ms p50 {pct(delays, 50):.0f}, p95 {pct(delays, 95):.0f}, p99 {pct(delays, 99):.0f}, max {max(delays, default=float('nan')):.0f}; "
          f"queue depth per second {depth}; users rescored {rescored} ({rescored / (sent_for + 3):.0f}/s)")
PY

# the insert rate the shop sustains: real time on (the worker drains meanwhile) and off,
# alternated, then the trigger alone
script=$(mktemp); chmod 0644 "$script"
cat > "$script" <<'SQL'
\set uid random(1, 100000)
INSERT INTO public.events (user_id, event_type, created_at, event_data)
SELECT id, 'page_view', now(), '{"source": "realtime_bench"}' FROM public.users WHERE id = (SELECT min(id) FROM public.users) + :uid % (SELECT count(*) FROM public.users);
SQL
# the worker is pointed at another database (and restarted) for "trigger only": the
# trigger's own cost on each insert, without the worker's share of the cores
worker_serves() {
  psql_db -c "ALTER SYSTEM SET customer_analyzer.database = '$1'" -c "SELECT pg_reload_conf()" \
          -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'customer_analyzer rescoring'" >/dev/null
  sleep 7   # the postmaster starts it again after 5 s
}
realtime() {
  psql_db -c "ALTER SYSTEM SET customer_analyzer.realtime = $1" -c "SELECT pg_reload_conf()" >/dev/null
  sleep 2
}
inserts() {
  runuser -u postgres -- pgbench -n -c 4 -j 2 -T "$1" -f "$script" "$DB" 2>/dev/null | awk '/^tps/ {print $3; exit}'
}
worker_ticks() {
  local pid
  pid=$(psql_db -At -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'customer_analyzer rescoring'")
  if [ -n "$pid" ]; then awk '{print $14 + $15}' "/proc/$pid/stat"; else echo 0; fi
}
# On and off alternate (the machine's rate drifts by 10% between runs). Turning real
# time off empties the worker's kept histories, so each "on" run first inserts unmeasured
# for WARM seconds: what is measured is the steady state, as a shop that leaves it on sees.
echo "server: shared_buffers $(psql_db -At -c 'SHOW shared_buffers'), $(nproc) cores"
ROUNDS=${INSERT_ROUNDS:-5}
WARM=${INSERT_WARMUP:-40}
ticks_per_s=$(getconf CLK_TCK)
on_sum=0; off_sum=0
measure_on() {
  realtime on
  inserts "$WARM" >/dev/null
  local t0 t1
  t0=$(worker_ticks)
  on=$(inserts "$SECONDS_PER_RATE")
  t1=$(worker_ticks)
  queued=$(psql_db -At -c "SELECT count(*) FROM customer_analyzer.rescore_queue")
  cpu=$(( (t1 - t0) * 100 / (ticks_per_s * SECONDS_PER_RATE) ))
}
measure_off() {
  realtime off
  off=$(inserts "$SECONDS_PER_RATE")
}
# the order turns every round (on-off, off-on, ...): the machine's rate drifts during a
# run, and a fixed order would hand the drift to one side
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then measure_on; measure_off; else measure_off; measure_on; fi
  echo "pgbench single-row inserts, 4 clients, round $round: real time on $on tps (worker ${cpu}% of a core, $queued queued at the end), off $off tps" \
       "($(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.1f", 100 * (1 - a / b)}')% lower)"
  on_sum=$(awk -v a="$on_sum" -v b="$on" 'BEGIN {print a + b}')
  off_sum=$(awk -v a="$off_sum" -v b="$off" 'BEGIN {print a + b}')
done
echo "$on_sum $off_sum $ROUNDS" | awk '{printf "insert rate, mean of %d rounds: on %.0f tps, off %.0f tps: %.1f%% lower with real time on\n", $3, $1 / $3, $2 / $3, 100 * (1 - $1 / $2)}'
realtime on
worker_serves postgres
echo "pgbench single-row inserts, 4 clients, trigger only (the worker serves another database): $(inserts "$SECONDS_PER_RATE") tps"
worker_serves "$DB"
psql_db -c "ALTER SYSTEM RESET customer_analyzer.realtime" -c "ALTER SYSTEM RESET customer_analyzer.database" \
        -c "SELECT pg_reload_conf()" >/dev/null
rm -f "$script"
# leave the shop as it was: a run inserts over half a million events, and a shop that
# grows from run to run makes the next run's figures incomparable
psql_db -c "DELETE FROM public.events WHERE event_data @> '{\"source\": \"realtime_bench\"}'" \
        -c "VACUUM public.events"
