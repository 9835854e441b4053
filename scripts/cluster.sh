#!/usr/bin/env bash
# Starts Debian's PostgreSQL 15 cluster "15/main" as the postgres user (PostgreSQL refuses
# root), with pg_cron preloaded, and creates the database the demo and tests use.
# Idempotent: a second run only checks. With --restart, a running cluster is restarted
# (after a new build of the extension was installed: backends keep the library they
# loaded).
set -euo pipefail
RESTART=0
[ "${1:-}" = "--restart" ] && RESTART=1

DB=${CA_DATABASE:-shop}
PORT=${CA_PORT:-5432}
CONF_DIR=/etc/postgresql/15/main

if ! pg_lsclusters -h | awk '$1 == 15 && $2 == "main"' | grep -q .; then
  echo "==> creating cluster 15/main"
  pg_createcluster 15 main --port "$PORT" >/dev/null
fi

# Settings the extension relies on; written once into conf.d, applied by a restart.
mkdir -p "$CONF_DIR/conf.d"
# The rescoring worker starts with the server, serving $DB, once the library is
# installed (a server does not start with a preloaded library that is missing).
preload="pg_cron"
if [ -f /usr/lib/postgresql/15/lib/customer_analyzer.so ]; then
  preload="pg_cron,customer_analyzer"
fi
want=$(cat <<CONF
# written by customer_analyzer/scripts/cluster.sh
shared_preload_libraries = '$preload'
cron.database_name = '$DB'
# pg_cron's jobs run as background workers: Debian's pg_hba asks a password of the TCP
# connections pg_cron would otherwise open to localhost
cron.use_background_workers = on
cron.max_running_jobs = 4
customer_analyzer.database = '$DB'
max_worker_processes = 16
CONF
)
conf="$CONF_DIR/conf.d/customer_analyzer.conf"
changed=0
if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
  printf '%s\n' "$want" > "$conf"
  chown postgres:postgres "$conf"
  changed=1
fi

status=$(pg_lsclusters -h | awk '$1 == 15 && $2 == "main" {print $4}')
if [ "$status" != "online" ]; then
  echo "==> starting cluster 15/main"
  pg_ctlcluster 15 main start
elif [ $changed = 1 ] || [ $RESTART = 1 ]; then
  echo "==> restarting cluster 15/main"
  pg_ctlcluster 15 main restart
fi

psql_pg() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" "$@"; }
for _ in $(seq 1 30); do
  runuser -u postgres -- pg_isready -q -p "$PORT" && break
  sleep 1
done
if ! psql_pg -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
  echo "==> creating database $DB"
  psql_pg -d postgres -c "CREATE DATABASE $DB"
fi
