#!/usr/bin/env bash
# Scaling across nodes: one scenario (office: 2,000 documents x 5 users, a fixed load) against
# 1, 2 and 3 `tandem serve --cluster` nodes of one core each, sharing one PostgreSQL (op log
# and leases), alternating, ROUNDS rounds. The generator spreads its users over the nodes;
# those that reach a node not serving their document follow `moved` to its owner.
#
#   results/2026-11-30-cluster/scaling.sh [OUT_DIR]
#
# Environment: BIN (target/release), SCENARIO (office), ROUNDS ("1 2"), NODES ("1 2 3"),
# DURATION (steady seconds, overriding the scenario's), PG_PORT (55433).
# Everything runs on this machine's cores, unpinned: nodes, PostgreSQL and the generator share
# them, so the runs measure the cost per message at each node count, not added capacity.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$(dirname "$0")/common.sh"
out=${1:-$here/results/2026-11-30-cluster/scaling}
bin=${BIN:-$here/target/release}
scenario=${SCENARIO:-office}
pg_port=${PG_PORT:-55433}
work=$(mktemp -d /var/tmp/tandem-scaling.XXXXXX)
mkdir -p "$out"
ulimit -n 20000 2>/dev/null || true
pids=()

cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    stop_pg
    rm -rf "$work"
}
trap cleanup EXIT


# PostgreSQL with its default durability (fsync and synchronous commit on).
start_pg "$pg_port"

# PostgreSQL's CPU seconds so far: every live process, plus what the postmaster reaped.
pg_cpu() {
    local master; master=$(head -1 "$work/pg/postmaster.pid")
    local ticks=0 f
    for f in /proc/[0-9]*/stat; do
        local pid=${f#/proc/}; pid=${pid%/stat}
        [ "$(stat -c %U "/proc/$pid" 2>/dev/null)" = postgres ] || continue
        # utime stime (and for the postmaster cutime cstime): fields 14-17 after the comm.
        local rest; rest=$(sed 's/^.*) //' "$f" 2>/dev/null) || continue
        set -- $rest
        ticks=$((ticks + ${12} + ${13}))
        [ "$pid" = "$master" ] && ticks=$((ticks + ${14} + ${15}))
    done
    echo "scale=2; $ticks / $(getconf CLK_TCK)" | bc
}

served() { curl -s "http://127.0.0.1:$1/metrics" | awk '/^tandem_cluster_shards_served /{print $2}'; }

run() {
    local n=$1 i=$2 db="scaling_${1}_${2}" dir="$out/$scenario-nodes-$1-$2" urls="" ports=()
    mkdir -p "$dir"
    psql -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    local url="postgres://postgres@127.0.0.1:$pg_port/$db"
    TANDEM_OPLOG_DATABASE_URL=$url "$bin/tandem" migrate --oplog postgres --auth dev \
        --data-dir "$work/migrate" >/dev/null
    pids=()
    for k in $(seq 1 "$n"); do
        local port=$((19500 + k))
        ports+=("$port")
        TANDEM_OPLOG_DATABASE_URL=$url TANDEM_CLUSTER_DATABASE_URL=$url \
            "$bin/tandem" serve --cluster true --node "node-$k" --listen "127.0.0.1:$port" \
            --cores 1 --oplog postgres --auth dev --max-messages-per-s 100000 \
            --data-dir "$work/node-$k-$i" >"$dir/node-$k.log" 2>&1 &
        pids+=($!)
        urls="${urls:+$urls,}ws://127.0.0.1:$port/ws"
    done
    for p in "${ports[@]}"; do wait_port "$p"; done
    # Until the shards are spread evenly (each node within one hand-back round of its share).
    for _ in $(seq 300); do
        local total=0 low=1024
        for p in "${ports[@]}"; do
            local s; s=$(served "$p"); s=${s:-0}
            total=$((total + s)); [ "$s" -lt "$low" ] && low=$s
        done
        if [ "$total" -eq 1024 ] && [ "$low" -ge $((1024 / n - 32)) ]; then break; fi
        sleep 0.2
    done
    echo "== $n node(s), round $i: shards spread, running $scenario" >&2
    local pg0 ops0; pg0=$(pg_cpu); ops0=$(psql -d "$db" -c "SELECT count(*) FROM tandem_oplog.oplog_ops")
    local t0; t0=$(date +%s.%N)
    "$bin/tandem-loadgen" run "$here/loadgen/scenarios/$scenario.toml" --target "$urls" \
        --label "tandem-cluster-$n" --out "$dir" ${DURATION:+--duration "$DURATION"} >"$dir/loadgen.log" 2>&1
    local pg1 ops1 t1; pg1=$(pg_cpu); ops1=$(psql -d "$db" -c "SELECT count(*) FROM tandem_oplog.oplog_ops"); t1=$(date +%s.%N)
    # Over the whole generator run (ramps included): PostgreSQL's share of the work.
    echo "postgres_cpu_s=$(echo "$pg1 - $pg0" | bc) ops=$((ops1 - ops0)) seconds=$(echo "$t1 - $t0" | bc)" \
        | tee "$dir/postgres.txt" >&2
    for p in "${pids[@]}"; do kill "$p"; done
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
    grep -E "Converged|edits acked|ops delivered|^\| server|connections sent" "$dir/report.md" >&2 || true
}

for i in ${ROUNDS:-1 2}; do
    order=${NODES:-1 2 3}
    if [ $((i % 2)) = 0 ]; then order=$(echo "$order" | tr ' ' '\n' | tac | tr '\n' ' '); fi
    for n in $order; do run "$n" "$i"; done
done
echo SCALING_DONE >&2
