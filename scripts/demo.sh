#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to the demo: installs what is missing,
# builds and installs the extension into Debian's PostgreSQL 15, starts the cluster as
# the postgres user, generates the demo shop and prints what customer_analyzer sees.
# Usage: scripts/demo.sh [n_users] [days]   (defaults 10000 users, 240 days)
set -euo pipefail
cd "$(dirname "$0")/.."

N_USERS=${1:-10000}
DAYS=${2:-240}
DB=${CA_DATABASE:-shop}
case "$DB" in
  *[!A-Za-z0-9_]* | "") echo "CA_DATABASE must be a plain name (letters, digits, _), not '$DB'" >&2; exit 2 ;;
esac

source scripts/env.sh
bash scripts/install-deps.sh
echo "==> building customer_analyzer (release) and installing it into Debian's PostgreSQL 15"
PKG=target/release/customer_analyzer-package
rm -rf "$PKG"
cargo pgrx package --pg-config "$CA_PG_CONFIG" --out-dir "$PKG" >/dev/null
bash scripts/install-ext.sh "$PKG" "$DEBIAN_PG_CONFIG"
# a running cluster keeps the library it loaded: restart it onto the new one
bash scripts/cluster.sh --restart

echo "==> running the demo in database $DB"
# fed on standard input: the postgres user may not read the checkout (a root-only clone)
runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d "$DB" \
  -v n_users="$N_USERS" -v days="$DAYS" < scripts/demo.sql

echo "==> the dashboard: login role customer_analyzer_web (reader rights) and its connection string"
WEB_DIR=/var/lib/customer_analyzer/web
install -d -m 0755 "$WEB_DIR"
# a fresh password on every run, kept only in a root-only file
password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<SQL
SET client_min_messages = warning;
DO \$\$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'customer_analyzer_web') THEN
        CREATE ROLE customer_analyzer_web LOGIN;
    END IF;
END \$\$;
ALTER ROLE customer_analyzer_web PASSWORD '$password';
SELECT customer_analyzer.grant_reader('customer_analyzer_web');
SQL
# the port the cluster really listens on (it may predate CA_PORT)
port=$(pg_lsclusters -h | awk '$1 == 15 && $2 == "main" {print $3}')
(umask 077 && printf "CUSTOMER_ANALYZER_WEB_DSN='host=127.0.0.1 port=%s dbname=%s user=customer_analyzer_web password=%s'\n" \
  "$port" "$DB" "$password" > "$WEB_DIR/web.env")
echo "==> building and starting the dashboard"
bash scripts/dashboard.sh start
echo
echo "Dashboard: $(sed -n 's/^listening on //p' "$WEB_DIR/dashboard.log" | head -1)   (scripts/dashboard.sh stop|start|status; log $WEB_DIR/dashboard.log)"
