#!/usr/bin/env bash
# Installs the system packages and cargo-pgrx this project builds and tests with.
# Idempotent: a second run only checks and returns within seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

PGRX_VERSION=0.18.1
# curl, ca-certificates and openssl fetch and check the dashboard's chart library
# (scripts/fetch-assets.sh); chromium, chromium-driver and a font drive the browser test
PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-15-cron clang libclang-dev
          pkg-config libssl-dev sudo build-essential curl ca-certificates openssl
          chromium chromium-driver fonts-dejavu-core)

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

bash scripts/pg-tree.sh
if ! grep -qsF "$CA_PG_CONFIG" "$PGRX_HOME/config.toml"; then
  echo "==> pointing cargo-pgrx ($PGRX_HOME) at the build tree"
  mkdir -p "$PGRX_HOME"
  cargo pgrx init --pg15="$CA_PG_CONFIG" >/dev/null
fi

bash scripts/fetch-assets.sh
