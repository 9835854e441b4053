#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for the regression and integration tests, run from
# the project's build and test tree (scripts/env.sh) as the postgres user, on
# 127.0.0.1:${CA_IT_PORT:-5499} with trust authentication, in its own data directory.
# Never the user's cluster, never Debian's installation.
# Usage: scripts/test-cluster.sh start|stop   (start prints the connection string)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

BIN=$CA_PG_TREE/lib/postgresql/15/bin
DATA=${CA_IT_PGDATA:-/var/lib/postgresql/customer_analyzer-it}
PORT=${CA_IT_PORT:-5499}
as_pg() { runuser -u postgres -- env -u RUST_BACKTRACE "$@"; }

# a replica of this cluster (scripts/replica.sh, the replica test) goes with it
stop_replica() { CA_REPLICA_OF=test bash scripts/replica.sh stop >/dev/null 2>&1 || true; }

case "${1:-}" in
  start)
    stop_replica
    if [ -f "$DATA/postmaster.pid" ]; then
      as_pg "$BIN/pg_ctl" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$DATA"
    mkdir -p "$DATA"
    chown postgres:postgres "$DATA"
    as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
      -o "-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=50 \
          -c shared_preload_libraries=pg_cron,customer_analyzer -c customer_analyzer.database=ca_it_realtime \
          -c cron.database_name=postgres -c cron.use_background_workers=on -c cron.max_running_jobs=4 \
          -c max_worker_processes=16" \
      start >/dev/null
    # the database the workers serve (tests/integration/tests/realtime.rs, lifecycle.rs);
    # pg_cron lives in postgres and runs jobs in it with cron.schedule_in_database()
    as_pg "$BIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -c "CREATE DATABASE ca_it_realtime"
    echo "host=127.0.0.1 port=$PORT user=postgres"
    ;;
  stop)
    stop_replica
    if [ -f "$DATA/postmaster.pid" ]; then
      if as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
      else
        # left behind by a machine that went down with the server running
        rm -f "$DATA/postmaster.pid"
      fi
    fi
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
