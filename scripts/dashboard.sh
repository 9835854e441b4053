#!/usr/bin/env bash
# Starts, stops or reports on the dashboard (customer-analyzer-web) of the demo database.
# Usage: scripts/dashboard.sh start|stop|status
#
# It runs as the unprivileged user nobody, connects over TCP to 127.0.0.1 as the login
# role customer_analyzer_web (the extension's reader rights only) with the password
# scripts/demo.sh generated, and listens on ${CUSTOMER_ANALYZER_WEB_LISTEN:-127.0.0.1:8080}.
# Its files live in /var/lib/customer_analyzer/web: the binary, web.env (the connection
# string, mode 0600), dashboard.pid and dashboard.log. A second start replaces the
# running one.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=/var/lib/customer_analyzer/web
PIDFILE=$DIR/dashboard.pid
LOG=$DIR/dashboard.log
ENVFILE=$DIR/web.env
LISTEN=${CUSTOMER_ANALYZER_WEB_LISTEN:-127.0.0.1:8080}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

stop() {
  if running; then
    local pid
    pid=$(cat "$PIDFILE")
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    echo "dashboard stopped (pid $pid)"
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  start)
    if [ ! -f "$ENVFILE" ]; then
      echo "$ENVFILE is missing: scripts/demo.sh creates the dashboard's role and password" >&2
      exit 1
    fi
    bin=target/release/customer-analyzer-web
    if [ ! -x "$bin" ]; then
      source scripts/env.sh
      cargo build --release -p customer_analyzer_web
    fi
    stop
    # a copy nobody can run: the checkout may be readable by root only
    install -m 0755 "$bin" "$DIR/customer-analyzer-web"
    set -a
    # shellcheck disable=SC1090
    source "$ENVFILE"
    set +a
    export CUSTOMER_ANALYZER_WEB_LISTEN=$LISTEN
    nohup setpriv --reuid=nobody --regid=nogroup --clear-groups \
      "$DIR/customer-analyzer-web" >"$LOG" 2>&1 </dev/null &
    echo $! > "$PIDFILE"
    for _ in $(seq 1 50); do
      grep -q '^listening on' "$LOG" 2>/dev/null && break
      running || { cat "$LOG" >&2; echo "the dashboard did not start" >&2; exit 1; }
      sleep 0.1
    done
    grep -q '^listening on' "$LOG" || { cat "$LOG" >&2; exit 1; }
    echo "dashboard: $(sed -n 's/^listening on //p' "$LOG" | head -1) (pid $(cat "$PIDFILE"), log $LOG)"
    ;;
  stop)
    stop
    ;;
  status)
    if running; then
      echo "dashboard running: $(sed -n 's/^listening on //p' "$LOG" | head -1) (pid $(cat "$PIDFILE"), log $LOG)"
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
