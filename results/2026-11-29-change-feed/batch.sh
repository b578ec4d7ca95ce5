#!/usr/bin/env bash
# The change feed's cost on acks: office (2,000 documents x 5 users, fixed load) with the feed
# on and off, alternating, three rounds. Server on CPU 0 (one core), generator on CPU 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=results/2026-11-29-change-feed
printf '[events]\nchange_feed = false\n' >/tmp/tandem-feed-off.toml
printf '[events]\nchange_feed = true\n' >/tmp/tandem-feed-on.toml
run() { SERVER_CPUS=0 GEN_CPUS=1 SERVERS=tandem BIN=${BIN:-target/release} TAG=feed-$1 TANDEM_AUTH=dev FIRST_RUN=$2 \
  TANDEM_ARGS="--config /tmp/tandem-feed-$1.toml" loadgen/bench/data-plane.sh $out ${SCENARIO:-office}; }
for i in 1 2 3; do
  if [ $((i % 2)) = 1 ]; then order="on off"; else order="off on"; fi
  for v in $order; do run $v $i; done
done
echo FEED_BATCH_DONE
