#!/usr/bin/env bash
# Makes (or refreshes, when Debian's PostgreSQL packages changed) the project's private
# copy of Debian's PostgreSQL 15 installation at $CA_PG_TREE (see scripts/env.sh).
# Idempotent: a second run only compares package versions.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

want=$(dpkg-query -W -f='${Version}' postgresql-15 postgresql-server-dev-15 | tr '\n' ' ')
if [ "$(cat "$CA_PG_TREE/.debian-versions" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "==> copying Debian's PostgreSQL 15 into $CA_PG_TREE (the build and test tree)"
new="$CA_PG_TREE.new"
rm -rf "$new"
mkdir -p "$new/lib/postgresql" "$new/share/postgresql" "$new/include"
cp -a /usr/lib/postgresql/15 "$new/lib/postgresql/"
cp -a /usr/share/postgresql/15 "$new/share/postgresql/"
cp -a /usr/include/postgresql "$new/include/"
# only what this project installs into the tree may be there
rm -f "$new"/lib/postgresql/15/lib/customer_analyzer.so \
      "$new"/share/postgresql/15/extension/customer_analyzer[.-]*
printf '%s' "$want" > "$new/.debian-versions"
chmod 0755 "$(dirname "$CA_PG_TREE")" "$new"
rm -rf "$CA_PG_TREE"
mv "$new" "$CA_PG_TREE"
