#!/usr/bin/env bash
set -euo pipefail
cd /work/main
out=results/2026-11-29-hardening
run() { SERVER_CPUS=0 GEN_CPUS=1 SERVERS=tandem BIN=/tmp/bin-$1 TAG=$1 FIRST_RUN=$2 loadgen/bench/data-plane.sh $out $3; }
for i in 1 2; do
  for sc in typing-room office fanout; do
    if [ $i = 1 ]; then run before $i $sc; run after $i $sc; else run after $i $sc; run before $i $sc; fi
  done
done
run before 1 max-throughput; run after 1 max-throughput
run after 1 join-storm; run before 1 join-storm
echo BATCH_DONE
