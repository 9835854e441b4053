#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to the demo: installs what is missing,
# builds and installs the extension into Debian's PostgreSQL 15, starts the cluster as
# the postgres user, generates the demo shop and prints what customer_analyzer sees.
# Usage: scripts/demo.sh [n_users] [days]   (defaults 10000 users, 180 days)
set -euo pipefail
cd "$(dirname "$0")/.."

N_USERS=${1:-10000}
DAYS=${2:-180}
DB=${CA_DATABASE:-shop}

bash scripts/install-deps.sh
echo "==> building and installing customer_analyzer (release)"
cargo pgrx install --release --pg-config /usr/lib/postgresql/15/bin/pg_config >/dev/null
bash scripts/cluster.sh

echo "==> running the demo in database $DB"
# fed on standard input: the postgres user may not read the checkout (a root-only clone)
runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d "$DB" \
  -v n_users="$N_USERS" -v days="$DAYS" < scripts/demo.sql
