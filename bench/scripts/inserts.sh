#!/bin/bash
# Single-document bucket inserts against one kronotop build, for A/B runs of builds on this
# machine: a `--bootstrap` server on a Unix socket, 50 redis-benchmark clients inserting 1 KiB
# JSON documents (`BUCKET.INSERT bench DOCS <doc>`), one line per round with the rate, the p50 in
# ms and the server's CPU time (user + system, from /proc/<pid>/stat) per insert in µs. Needs
# redis-benchmark and redis-cli (Debian package redis-tools).
#
#   bash bench/scripts/inserts.sh target/release/kronotop [rounds] [inserts per round]
set -euo pipefail
BIN=${1:?usage: inserts.sh <kronotop binary> [rounds] [inserts per round]}
ROUNDS=${2:-3}
N=${3:-40000}
DATA=$(mktemp -d)
PORT=${PORT:-7821}
"$BIN" --unix-socket "$DATA/k.sock" --port "$PORT" --admin-port 0 --log-level warn --bootstrap \
    --data-dir "$DATA/data" > "$DATA/log" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do redis-cli -p "$PORT" PING >/dev/null 2>&1 && break; sleep 0.1; done
# The bucket shards open their volumes right after the bootstrap: wait for an insert to work.
for _ in $(seq 100); do
    redis-cli -p "$PORT" BUCKET.CREATE bench IF-NOT-EXISTS >/dev/null
    [[ $(redis-cli -p "$PORT" BUCKET.INSERT bench DOCS '{}') != ERR* ]] && break
    sleep 0.2
done
PAD=$(head -c 964 /dev/zero | tr '\0' x)
DOC="{\"k\": \"__rand_int__\", \"name\": \"user-__rand_int__\", \"pad\": \"$PAD\"}"
TICKS=$(getconf CLK_TCK)
for _ in $(seq "$ROUNDS"); do
    t0=$(awk '{print $14 + $15}' "/proc/$PID/stat")
    out=$(redis-benchmark -s "$DATA/k.sock" -r 100000 -c 50 -n "$N" --csv \
        BUCKET.INSERT bench DOCS "$DOC" | tail -1)
    t1=$(awk '{print $14 + $15}' "/proc/$PID/stat")
    # The CSV line ends with rps, avg, min, p50, p95, p99, max (quoted).
    echo "$out" | tr -d '"' | awk -F, -v c=$((t1 - t0)) -v n="$N" -v hz="$TICKS" \
        '{printf "inserts/s %s  p50 ms %s  server CPU us/insert %.1f\n", $(NF-6), $(NF-3), c * 1e6 / hz / n}'
done
