#!/usr/bin/env bash
# Search index lag at the office scenario's edit rate (2,000 documents, one typist each at
# 2 ops/s: 4,000 ops/s): tandem serve (dev auth, change feed on, every worker in process)
# with one core, the generator on the other CPU. After the run, and once the search worker has
# drained the backlog, the server's own numbers: tandem_search_lag_ms (per op, from its commit,
# i.e. its ack, to searchable: the index committed and reloaded), the workers' counts, the
# feed's. SERVER_CPUS picks the server's CPUs (default 0: one CPU for the core and the
# workers; "0,1" shares both CPUs with the generator). SCENARIO defaults to office. On a
# bigger machine: CORES (the server's, default 1), GEN_CPUS, KAFKA_CPUS (the broker's),
# OUTDIR, FEED=off (no change feed: the acks' baseline).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUTDIR:-results/2026-11-29-workers}
bin=${BIN:-target/release}
scenario=${SCENARIO:-office}
tag=${TAG:-$scenario-cpu${SERVER_CPUS:-0}}
data=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
printf '[events]\nchange_feed = %s\n' "$([ "${FEED:-on}" = off ] && echo false || echo true)" >"$data/tandem.toml"
broker=
if [ "${KAFKA:-0}" = 1 ]; then
    kport=$((port + 1))
    taskset -c "${KAFKA_CPUS:-${GEN_CPUS:-1}}" "${TANDEM_TANSU:-$HOME/.cache/tandem/tansu/bin/tansu}" broker \
        --listener-url "tcp://127.0.0.1:$kport" --advertised-listener-url "tcp://127.0.0.1:$kport" \
        --storage-engine memory://tansu/ >/dev/null 2>&1 &
    broker=$!
    for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$kport) 2>/dev/null && break; sleep 0.1; done
    printf 'backend = "kafka"\n[events.kafka]\nbrokers = "127.0.0.1:%s"\npartitions = 4\nreplication = 1\nlag_interval_ms = 1000\n' \
        "$kport" >>"$data/tandem.toml"
fi
taskset -c "${SERVER_CPUS:-0}" "$bin/tandem" serve --auth dev --listen "127.0.0.1:$port" --data-dir "$data/data" --cores "${CORES:-1}" \
    --config "$data/tandem.toml" --max-messages-per-s 1000000 --log warn 2>"$out/$tag-server.log" &
pid=$!
trap 'kill $pid $broker 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
mkdir -p "$out/$tag"
taskset -c "${GEN_CPUS:-1}" "$bin/tandem-loadgen" run "${SCENARIO_FILE:-loadgen/scenarios/$scenario.toml}" --target "ws://127.0.0.1:$port/ws" \
    --out "$out/$tag" --label "tandem-search" --server-pid "$pid" >"$out/$tag/loadgen.log" 2>&1 ||
    echo "loadgen: $(tail -1 "$out/$tag/loadgen.log")"
ended=$(date +%s)
lag() { curl -s "127.0.0.1:$port/metrics" | awk -v g="$1" '$1 ~ "tandem_bus_lag_messages\\{group=\""g"\"" {print $2}'; }
for _ in $(seq 600); do [ "${FEED:-on}" = off ] && break; [ "$(lag search)" = 0 ] && [ "$(lag analytics-edits)" = 0 ] && break; sleep 0.5; done
drained=$(( $(date +%s) - ended ))
{
    echo "# $scenario, server CPUs ${SERVER_CPUS:-0} (--cores ${CORES:-1}), feed ${FEED:-on}, bus $([ "${KAFKA:-0}" = 1 ] && echo kafka || echo in-process); backlog drained $drained s after the load stopped"
    echo "# commit ${COMMIT:-$(git rev-parse --short HEAD)}, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs $(uname -m)"
    curl -s "127.0.0.1:$port/metrics" | grep -E "^tandem_(search|worker|bus_lag|feed|analytics|oplog_ops_total)"
} >"$out/$tag-metrics.txt"
grep -E "ack p99|ops/s|Ack" "$out/$tag/report.md" | head -5 || true
cat "$out/$tag-metrics.txt"
