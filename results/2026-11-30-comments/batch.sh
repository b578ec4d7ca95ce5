#!/usr/bin/env bash
# The cost of comment anchors: office (2,000 documents x 5 users, fixed load) with 100 comment
# threads per document and with none (the same line of 100 words in both), alternating, three
# rounds (ROUNDS="4 5 6" adds more). Server on CPU 0 (one core), generator on CPU 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=results/2026-11-30-comments
run() { SERVER_CPUS=0 GEN_CPUS=1 SERVERS=tandem BIN=${BIN:-target/release} TAG=threads-$1 TANDEM_AUTH=dev FIRST_RUN=$2 \
  LOADGEN_ARGS="--comment-threads $1" loadgen/bench/data-plane.sh $out ${SCENARIO:-office}; }
for i in ${ROUNDS:-1 2 3}; do
  if [ $((i % 2)) = 1 ]; then order="100 0"; else order="0 100"; fi
  for v in $order; do run $v $i; done
done
echo COMMENTS_BATCH_DONE
