#!/usr/bin/env bash
# Two figures of the whole-system plan (loadgen/system.toml), measured on this machine:
# - op_bytes: what one op costs the PostgreSQL op log on disk (the ops table with its index
#   and TOAST, over its rows), after an office run (single-keystroke ops) through one node;
# - metadata_queries_per_vcpu_s: indexed primary-key reads PostgreSQL answers per second
#   (`pgbench -S`, 8 clients, 30 s), per vCPU of this machine.
#
#   results/2026-11-30-cluster/stores.sh [OUT_DIR]
#
# Environment: BIN (target/release), PG_PORT (55434).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$(dirname "$0")/common.sh"
out=${1:-$here/results/2026-11-30-cluster/scaling}
bin=${BIN:-$here/target/release}
pg_port=${PG_PORT:-55434}
work=$(mktemp -d /var/tmp/tandem-stores.XXXXXX)
mkdir -p "$out"
ulimit -n 20000 2>/dev/null || true
node=

cleanup() {
    [ -n "$node" ] && kill "$node" 2>/dev/null && wait "$node" 2>/dev/null
    stop_pg
    rm -rf "$work"
}
trap cleanup EXIT


start_pg "$pg_port"

psql -c "CREATE DATABASE ops"
url="postgres://postgres@127.0.0.1:$pg_port/ops"
TANDEM_OPLOG_DATABASE_URL=$url "$bin/tandem" migrate --oplog postgres --auth dev --data-dir "$work/migrate" >/dev/null
TANDEM_OPLOG_DATABASE_URL=$url "$bin/tandem" serve --oplog postgres --auth dev --listen 127.0.0.1:19600 \
    --cores 1 --max-messages-per-s 100000 --data-dir "$work/node" >"$work/node.log" 2>&1 &
node=$!
wait_port 19600
"$bin/tandem-loadgen" run "$here/loadgen/scenarios/office.toml" --target ws://127.0.0.1:19600/ws \
    --duration 10 --out "$work/run" >"$work/loadgen.log" 2>&1
kill "$node"; wait "$node" 2>/dev/null || true; node=
{
    echo "# op_bytes: the PostgreSQL op log's ops table (rows, index, TOAST) over its rows"
    echo "# after an office run through one node (tandem-loadgen run office.toml --duration 10)"
    echo "# $(date -u +%FT%TZ), commit $(git -C "$here" rev-parse --short HEAD), $(nproc)-CPU $(uname -sr)"
    psql -d ops -c "SELECT count(*) AS ops, pg_total_relation_size('tandem_oplog.oplog_ops') AS bytes,
        round(pg_total_relation_size('tandem_oplog.oplog_ops')::numeric / count(*), 1) AS bytes_per_op
        FROM tandem_oplog.oplog_ops" -F ' ' -P footer=off
} | tee "$out/oplog-size.txt"

runuser -u postgres -- "$pgbin/pgbench" -h 127.0.0.1 -p "$pg_port" -U postgres -i -s 10 postgres >/dev/null 2>&1
{
    echo "# metadata_queries_per_vcpu_s: pgbench -S (select-only, indexed primary-key reads),"
    echo "# 8 clients, 2 threads, 30 s, PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}'), the client on the same CPUs"
    echo "# $(date -u +%FT%TZ), $(nproc)-CPU $(uname -sr)"
    runuser -u postgres -- "$pgbin/pgbench" -h 127.0.0.1 -p "$pg_port" -U postgres -S -c 8 -j 2 -T 30 postgres 2>&1 |
        grep -E "tps|latency average|number of transactions"
} | tee "$out/pgbench.txt"
