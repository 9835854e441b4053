#!/usr/bin/env bash
# Installs a packaged build of the extension into the PostgreSQL installation of a
# pg_config, atomically: each file is written beside its target and renamed over it, so
# a backend that has the old library mapped keeps running it (an in-place copy crashes
# it with SIGBUS). Usage: scripts/install-ext.sh <package dir> <pg_config>
set -euo pipefail
pkg=$1
pg_config=$2
libdir=$("$pg_config" --pkglibdir)
extdir=$("$pg_config" --sharedir)/extension
so=$(find "$pkg" -name 'customer_analyzer.so' -print -quit)
[ -n "$so" ] || { echo "no customer_analyzer.so under $pkg" >&2; exit 1; }
place() {  # place <file> <directory> <mode>
  local tmp="$2/.$(basename "$1").new.$$"
  install -m "$3" "$1" "$tmp"
  mv -f "$tmp" "$2/$(basename "$1")"
}
place "$so" "$libdir" 0755
for f in $(find "$pkg" -path '*/extension/customer_analyzer*' -type f); do
  place "$f" "$extdir" 0644
done
