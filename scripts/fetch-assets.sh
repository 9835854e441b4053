#!/usr/bin/env bash
# Fetches the dashboard's one third-party asset, Apache ECharts, from the npm registry at
# a pinned version, checks the tarball against the registry's sha512 integrity, and puts
# the minified build and its licence where the web crate compiles them into its binary
# (crates/customer_analyzer_web/assets/vendor/, not committed). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=5.6.0
INTEGRITY=sha512-oTbVTsXfKuEhxftHqL5xprgLoc0k7uScAwtryCgWF6hPYFLRwOUHiFmHGCBKP5NPFNkDVopOieyUqYGH8Fa3kA==
URL=https://registry.npmjs.org/echarts/-/echarts-$VERSION.tgz
DEST=crates/customer_analyzer_web/assets/vendor
STAMP=$DEST/.echarts-$VERSION

[ -f "$STAMP" ] && [ -f "$DEST/echarts.min.js" ] && [ -f "$DEST/echarts-LICENSE.txt" ] && exit 0

echo "==> fetching Apache ECharts $VERSION from the npm registry"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL --retry 3 -o "$tmp/echarts.tgz" "$URL"
got="sha512-$(openssl dgst -sha512 -binary "$tmp/echarts.tgz" | base64 -w0)"
if [ "$got" != "$INTEGRITY" ]; then
  echo "echarts-$VERSION.tgz does not match its pinned checksum ($got)" >&2
  exit 1
fi
tar -xzf "$tmp/echarts.tgz" -C "$tmp" package/dist/echarts.min.js package/LICENSE
mkdir -p "$DEST"
rm -f "$DEST"/.echarts-*
cp "$tmp/package/dist/echarts.min.js" "$DEST/echarts.min.js"
cp "$tmp/package/LICENSE" "$DEST/echarts-LICENSE.txt"
touch "$STAMP"
