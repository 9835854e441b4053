#!/usr/bin/env bash
# Installs the system packages and cargo-pgrx this project builds and tests with.
# Idempotent: a second run only checks and returns within seconds.
set -euo pipefail

PGRX_VERSION=0.18.1
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-15-cron clang libclang-dev
          pkg-config libssl-dev sudo build-essential)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The server and its headers come from the same update, so the headers match the server.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" postgresql-15 >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  echo "==> installing cargo-pgrx $PGRX_VERSION (a few minutes, once)"
  cargo install cargo-pgrx --version "=$PGRX_VERSION" --locked
fi

if ! grep -qs "pg15" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  echo "==> pointing cargo-pgrx at Debian's PostgreSQL 15"
  cargo pgrx init --pg15="$PG_CONFIG"
fi
