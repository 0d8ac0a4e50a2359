#!/usr/bin/env bash
# Fetches libchdb.so (embedded ClickHouse) from the npm package into a cache outside the
# tree, once. Usage: scripts/chdb.sh VERSION DEST_DIR
set -euo pipefail
version=$1 dest=$2
lib="$dest/package/libchdb.so"
[ -s "$lib" ] && exit 0
command -v npm >/dev/null || { echo "chdb: npm is needed (apt-get install npm)" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "chdb: downloading @chdb/lib-linux-x64-gnu@$version (about 180 MB) into $dest" >&2
(cd "$tmp" && npm pack --loglevel=http "@chdb/lib-linux-x64-gnu@$version" >&2)
mkdir -p "$dest"
tar -xzf "$tmp"/chdb-lib-linux-x64-gnu-*.tgz -C "$dest"
[ -s "$lib" ] || { echo "chdb: $lib missing after unpack" >&2; exit 1; }
echo "chdb: ready at $lib" >&2
