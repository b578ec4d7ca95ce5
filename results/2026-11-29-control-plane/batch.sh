#!/usr/bin/env bash
# The data plane before and after the control plane (one origin; dev auth) and with real
# accounts, alternating, in one batch. Server on CPU 0 (one core), generator on CPU 1.
set -euo pipefail
cd /work/main
out=results/2026-11-29-control-plane
run() { SERVER_CPUS=0 GEN_CPUS=1 SERVERS=tandem BIN=/tmp/bin-$1 TAG=$2 TANDEM_AUTH=$3 FIRST_RUN=$4 loadgen/bench/data-plane.sh $out $5; }
for i in 1 2; do
  for sc in max-throughput join-storm office; do
    if [ $i = 1 ]; then order="before dev accounts"; else order="accounts dev before"; fi
    for v in $order; do
      case $v in
        before) [ "$sc" = office ] || run before before none $i $sc ;;
        dev) run after dev dev $i $sc ;;
        accounts) run after accounts accounts $i $sc ;;
      esac
    done
  done
done
echo BATCH_DONE
