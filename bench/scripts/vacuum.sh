#!/bin/bash
# Vacuum of a bucket volume, end to end: 20,000 documents of 1 KiB with an index on `n`, on 1 MiB
# segments, four in five deleted, then the time from `VOLUME.ADMIN VACUUM START` until the run is
# no longer active (polled every 50 ms). Needs redis-cli and python3 with the redis package.
#
#   bash bench/scripts/vacuum.sh target/release/kronotop
set -euo pipefail
BIN=${1:?usage: vacuum.sh <kronotop binary>}
PORT=${PORT:-7811}
ADMIN=$((PORT + 1))
DATA=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$DATA"' EXIT
KRONOTOP_VOLUME__SEGMENT_SIZE=1048576 "$BIN" --bootstrap --port "$PORT" --admin-port "$ADMIN" \
    --data-dir "$DATA" --log-level warn > "$DATA/log" 2>&1 &
PID=$!
for _ in $(seq 100); do redis-cli -p "$PORT" PING > /dev/null 2>&1 && break; sleep 0.1; done
# --bootstrap routes the shards just after the member listens.
until redis-cli -p "$PORT" BUCKET.CREATE v | grep -q OK; do sleep 0.1; done
redis-cli -p "$PORT" BUCKET.INDEX CREATE v '{n: {bson_type: "int32"}}' > /dev/null
PORT=$PORT python3 - <<'PY'
import os, redis
r = redis.Redis(port=int(os.environ["PORT"]))
pad = "x" * 1000
for b in range(200):
    docs = ['{n: %d, k: %d, pad: "%s"}' % (b * 100 + j, j % 5, pad) for j in range(100)]
    r.execute_command("BUCKET.INSERT", "v", "DOCS", *docs)
while r.execute_command("BUCKET.DELETE", "v", "{k: {$gt: 0}}", "LIMIT", "1000")[1]:
    pass
PY
t0=$(date +%s.%N)
redis-cli -p "$ADMIN" VOLUME.ADMIN VACUUM START bucket-shard-0 50 > /dev/null
while redis-cli -p "$ADMIN" VOLUME.ADMIN VACUUM STATUS bucket-shard-0 | sed -n 2p | grep -q 1; do
    sleep 0.05
done
t1=$(date +%s.%N)
result=$(redis-cli -p "$ADMIN" VOLUME.ADMIN VACUUM STATUS bucket-shard-0 | sed -n 9p)
segments=$(redis-cli -p "$ADMIN" VOLUME.ADMIN VACUUM STATUS bucket-shard-0 | sed -n 11p)
# redis-cli prints the cursor id, then one document per line.
live=$(($(redis-cli -p "$PORT" BUCKET.QUERY v '{n: {$gte: 0}}' LIMIT 100000 | wc -l) - 1))
echo "result=$result segments=$segments live_documents=$live seconds=$(echo "$t1 - $t0" | bc)"
