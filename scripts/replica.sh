#!/usr/bin/env bash
# A streaming replica (hot standby) of the local cluster on the same machine, to serve
# predictions from: pg_basebackup -R copies the primary into a second data directory,
# which starts as the postgres user, follows the primary's WAL and answers reads.
#
#   scripts/replica.sh start    create it (or replace it) and wait until it answers
#   scripts/replica.sh stop     stop it and remove its data directory
#   scripts/replica.sh status   is it there, in recovery, and how far behind
#
# Of Debian's cluster 15/main (scripts/cluster.sh) by default: the replica is Debian
# cluster 15/replica on port ${CA_REPLICA_PORT:-5433}, with the primary's conf.d (the
# same preloaded libraries; a standby needs max_worker_processes at least the primary's).
# With CA_REPLICA_OF=test, of the test cluster (scripts/test-cluster.sh) instead: data in
# /var/lib/postgresql/customer_analyzer-it-replica, 127.0.0.1:${CA_REPLICA_PORT:-5498}.
# The extension's workers do not start on a standby, and functions that write refuse with
# SQLSTATE 25006; pg_cron waits until a promotion.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
as_pg() { runuser -u postgres -- env -u RUST_BACKTRACE "$@"; }

if [ "${CA_REPLICA_OF:-debian}" = test ]; then
  BIN=$CA_PG_TREE/lib/postgresql/15/bin
  PRIMARY="-h 127.0.0.1 -p ${CA_IT_PORT:-5499} -U postgres"
  PORT=${CA_REPLICA_PORT:-5498}
  DATA=${CA_REPLICA_PGDATA:-/var/lib/postgresql/customer_analyzer-it-replica}
  REPLICA="-h 127.0.0.1 -p $PORT -U postgres"
  create() { mkdir -p "$DATA"; chown postgres:postgres "$DATA"; chmod 700 "$DATA"; }
  # the test cluster takes its settings on the command line, which the copy does not
  # carry: the replica gets the same (a standby needs max_worker_processes at least the
  # primary's), on its own port
  launch() {
    local same
    same=$(psql_primary -c "SELECT string_agg(format('-c %s=%s', name, setting), ' ')
      FROM pg_settings WHERE source = 'command line'
       AND name NOT IN ('port', 'listen_addresses', 'unix_socket_directories')")
    as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 120 \
      -o "-p $PORT -k /tmp -c listen_addresses=127.0.0.1 $same" start >/dev/null
  }
  halt() {
    [ -f "$DATA/postmaster.pid" ] || return 0
    as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1 || { rm -f "$DATA/postmaster.pid"; return 0; }
    as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 ||
      as_pg "$BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null ||
      { echo "replica.sh: the replica in $DATA does not stop" >&2; exit 1; }
  }
  remove() { halt; rm -rf "$DATA"; }
  present() { [ -f "$DATA/PG_VERSION" ]; }
else
  BIN=/usr/lib/postgresql/15/bin
  main_port=$(pg_lsclusters -h | awk '$1 == 15 && $2 == "main" {print $3}')
  [ -n "$main_port" ] || { echo "replica.sh: Debian's cluster 15/main does not exist (run scripts/cluster.sh)" >&2; exit 1; }
  PRIMARY="-h /var/run/postgresql -p $main_port"
  PORT=${CA_REPLICA_PORT:-5433}
  DATA=/var/lib/postgresql/15/replica
  REPLICA="-h /var/run/postgresql -p $PORT"
  create() {
    pg_createcluster 15 replica --port "$PORT" >/dev/null
    mkdir -p /etc/postgresql/15/replica/conf.d
    cp -p /etc/postgresql/15/main/conf.d/*.conf /etc/postgresql/15/replica/conf.d/ 2>/dev/null || true
    find "$DATA" -mindepth 1 -delete
  }
  launch() { pg_ctlcluster 15 replica start; }
  halt() {
    if pg_lsclusters -h | awk '$1 == 15 && $2 == "replica"' | grep -q online; then
      pg_ctlcluster 15 replica stop -m fast
    fi
  }
  remove() {
    if pg_lsclusters -h | awk '$1 == 15 && $2 == "replica"' | grep -q .; then
      pg_dropcluster 15 replica --stop
    fi
  }
  present() { pg_lsclusters -h | awk '$1 == 15 && $2 == "replica"' | grep -q .; }
fi

psql_replica() { as_pg "$BIN/psql" -X -q -At $REPLICA -d postgres "$@"; }
psql_primary() { as_pg "$BIN/psql" -X -q -At $PRIMARY -d postgres "$@"; }
# The replica's slot keeps on the primary the WAL it has not replayed yet (without one, a
# standby that falls behind a large write loses the segments it needs and stops for
# good); removing the replica drops it, or the primary would keep WAL forever.
SLOT=customer_analyzer_replica
drop_slot() {
  # the primary's walsender may outlive the stopped replica by a moment, and an active
  # slot cannot be dropped: try for up to 30 s (a primary that is down has nothing to drop)
  local left
  for _ in $(seq 1 60); do
    left=$(psql_primary -c "SELECT count(*) FROM (SELECT pg_drop_replication_slot(slot_name)
                                                   FROM pg_replication_slots
                                                   WHERE slot_name = '$SLOT' AND NOT active) dropped;
                            SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$SLOT'" 2>/dev/null | tail -1) || return 0
    [ "$left" = 0 ] && return 0
    sleep 0.5
  done
  echo "replica.sh: replication slot $SLOT is still in use on the primary" >&2
  return 1
}

case "${1:-}" in
  start)
    remove
    drop_slot
    create
    # -R writes standby.signal, primary_conninfo and the slot's name; -C -S makes the
    # slot; -X stream copies the WAL made during the copy; -c fast starts at once
    # instead of waiting for a checkpoint
    as_pg "$BIN/pg_basebackup" $PRIMARY -D "$DATA" -R -C -S "$SLOT" -X stream -c fast
    launch
    for _ in $(seq 1 120); do
      [ "$(psql_replica -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = t ] && break
      sleep 1
    done
    [ "$(psql_replica -c 'SELECT pg_is_in_recovery()')" = t ] || { echo "replica.sh: the replica does not answer" >&2; exit 1; }
    echo "replica of ${CA_REPLICA_OF:-debian} running on port $PORT ($DATA)"
    ;;
  stop)
    remove
    drop_slot
    echo "replica removed"
    ;;
  status)
    if ! present; then echo "no replica"; exit 3; fi
    psql_replica -F ' ' -c "SELECT 'port $PORT, in recovery: ' || pg_is_in_recovery(),
        'replayed up to ' || coalesce(pg_last_wal_replay_lsn()::text, '-'),
        'last replayed commit ' || coalesce(pg_last_xact_replay_timestamp()::text, '-')" ||
      { echo "replica on port $PORT is not running"; exit 3; }
    psql_primary -F ' ' -c \
      "SELECT 'primary sees a standby: ' || state || ', replay lag ' || coalesce(replay_lag::text, '0') FROM pg_stat_replication;
       SELECT 'slot $SLOT keeps ' || pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) || ' of WAL'
       FROM pg_replication_slots WHERE slot_name = '$SLOT'"
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
