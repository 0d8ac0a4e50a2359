#!/usr/bin/env bash
# Writes the current benchmark table into BENCHMARKS.md, between its markers, from the
# BENCH lines of `make bench` (bench.out), with the machine that ran them named.
# Usage: scripts/bench-table.sh bench.out BENCHMARKS.md
set -euo pipefail
out=${1:-bench.out}
doc=${2:-BENCHMARKS.md}
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
table=$(mktemp)
{
	echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname): $(nproc) cores ($cpu), $mem,"
	echo "Linux $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg) when the run ended."
	echo
	echo "| benchmark | value | unit | ratio |"
	echo "|---|---|---|---|"
	grep '^BENCH ' "$out" | awk '{ r = ""; for (i = 5; i <= NF; i++) if ($i ~ /^ratio=/) r = substr($i, 7); printf "| `%s` | %s | %s | %s |\n", $2, $3, $4, r }'
} >"$table"
awk -v table="$table" '
	/<!-- bench:begin -->/ { print; while ((getline l < table) > 0) print l; skip = 1; next }
	/<!-- bench:end -->/ { skip = 0 }
	!skip' "$doc" >"$doc.new"
mv "$doc.new" "$doc"
rm -f "$table"
