#!/usr/bin/env bash
# Starts, stops or reports on the dashboard (customer-analyzer-web) of the demo database.
# Usage: scripts/dashboard.sh start|stop|status
#
# It runs as its own system user, customer_analyzer_web (no login, no home), from a copy
# of the binary in /var/lib/customer_analyzer/web, with only the variables it needs in
# its environment. It connects over TCP to 127.0.0.1 as the login role
# customer_analyzer_web (the extension's reader rights only) with the password
# scripts/demo.sh generated, and listens on ${CUSTOMER_ANALYZER_WEB_LISTEN:-127.0.0.1:8080}.
# Its files: /var/lib/customer_analyzer/web/web.env (the connection string, root's,
# mode 0600), dashboard.pid and dashboard.log. A second start replaces the running one.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=/var/lib/customer_analyzer/web
BIN=$DIR/customer-analyzer-web
PIDFILE=$DIR/dashboard.pid
LOG=$DIR/dashboard.log
ENVFILE=$DIR/web.env
LISTEN=${CUSTOMER_ANALYZER_WEB_LISTEN:-127.0.0.1:8080}
SERVICE_USER=customer_analyzer_web

# the pid file's process, only while it is still our binary (a pid can be reused)
ours() {
  local pid
  [ -f "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE")
  [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$BIN" ] && echo "$pid"
}

stop() {
  local pid
  if pid=$(ours); then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$BIN" ]; then
      kill -9 "$pid"
    fi
    echo "dashboard stopped (pid $pid)"
  fi
  rm -f "$PIDFILE"
}

address() { sed -n 's/^listening on //p' "$LOG" | head -1; }

case "${1:-}" in
  start)
    if [ ! -f "$ENVFILE" ]; then
      echo "$ENVFILE is missing: scripts/demo.sh creates the dashboard's role and password" >&2
      exit 1
    fi
    source scripts/env.sh
    cargo build --release -q -p customer_analyzer_web
    stop
    id -u "$SERVICE_USER" >/dev/null 2>&1 ||
      useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$SERVICE_USER"
    # a copy the service user can run: the checkout may be readable by root only
    install -m 0755 target/release/customer-analyzer-web "$BIN"
    dsn=$(sed -n "s/^CUSTOMER_ANALYZER_WEB_DSN='\(.*\)'$/\1/p" "$ENVFILE")
    : > "$LOG"  # so that the wait below never reads an earlier run's address
    (cd "$DIR" && exec env -i PATH=/usr/bin:/bin \
      CUSTOMER_ANALYZER_WEB_DSN="$dsn" CUSTOMER_ANALYZER_WEB_LISTEN="$LISTEN" \
      ${CUSTOMER_ANALYZER_WEB_TOKEN:+CUSTOMER_ANALYZER_WEB_TOKEN="$CUSTOMER_ANALYZER_WEB_TOKEN"} \
      setpriv --reuid="$(id -u "$SERVICE_USER")" --regid="$(id -g "$SERVICE_USER")" --clear-groups \
      "$BIN" >>"$LOG" 2>&1 </dev/null) &
    pid=
    for _ in $(seq 1 50); do
      pid=$(pgrep -n -f "^$BIN\$" || true)
      [ -n "$pid" ] && [ -n "$(address)" ] && break
      sleep 0.1
    done
    if [ -z "$(address)" ] || [ -z "$pid" ]; then
      cat "$LOG" >&2
      echo "the dashboard did not start" >&2
      exit 1
    fi
    echo "$pid" > "$PIDFILE"
    # started is not working: ask it whether it reaches the database
    url=$(address)
    health=$(curl -s -H "Authorization: Bearer ${CUSTOMER_ANALYZER_WEB_TOKEN:-}" "$url/api/health" || true)
    case "$health" in
      *'"database":"ok"'*) echo "dashboard: $url (pid $pid, log $LOG)" ;;
      *) echo "the dashboard runs at $url but does not reach the database: $health" >&2; exit 1 ;;
    esac
    ;;
  stop)
    stop
    ;;
  status)
    if pid=$(ours); then
      echo "dashboard running: $(address) (pid $pid, log $LOG)"
    else
      echo "dashboard not running"
      exit 3
    fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
