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
