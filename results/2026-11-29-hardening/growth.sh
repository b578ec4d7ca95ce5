#!/usr/bin/env bash
# Disk growth per byte of ops: each build, fresh data dir, 28 x 1,000,000-char inserts.
set -euo pipefail
out=$1; mkdir -p "$out"
for build in before after; do
  data=$(mktemp -d); port=19391
  /tmp/bin-$build/tandem serve --listen 127.0.0.1:$port --data-dir "$data" --cores 1 --log warn 2>"$out/server-$build.log" &
  pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  du0=$(du -sb --apparent-size "$data/blobs" 2>/dev/null | cut -f1 || echo 0)
  sent=$(NODE_PATH=$HOME/.cache/tandem/peers/sharedb/node_modules node loadgen/bench/disk-growth.js ws://127.0.0.1:$port/ws 28 1000000)
  sleep 1; kill -INT $pid; wait $pid || true
  snaps=$(du -sb --apparent-size "$data/blobs" | cut -f1)
  # Log bytes actually written: up to the end of records in each segment (segments are pre-zeroed).
  logb=$(python3 - "$data" <<'PY'
import sys, os, struct, glob
total = 0
for f in glob.glob(os.path.join(sys.argv[1], "oplog", "core-*", "*.log")):
    d = open(f, "rb").read(); at = 32
    while at + 8 <= len(d):
        n = struct.unpack_from("<I", d, at)[0]
        if n == 0: break
        at += (8 + n + 7) & ~7
    total += at - 32
print(total)
PY
)
  echo "{\"build\":\"$build\",\"client\":$sent,\"snapshot_bytes\":$snaps,\"log_record_bytes\":$logb,\"du_data_dir\":$(du -sb "$data" | cut -f1)}" | tee -a "$out/disk-growth.jsonl"
  ls "$data/blobs/snapshots/"*/ | wc -l | sed "s/^/snapshots kept ($build): /"
  rm -rf "$data"
done
