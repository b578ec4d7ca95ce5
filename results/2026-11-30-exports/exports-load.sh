#!/usr/bin/env bash
# The data plane while exports render: tandem serve (accounts, one core) on CPU 0; the
# generator (typing-room: 50 signed-in editors on one document, 26 s) on CPU 1 at nice -10;
# the export driver (server/examples/export_load.rs: a 50-page document with 20 images,
# PDF and DOCX exports two at a time, the per-user limit's worth) on CPU 1 too. Two runs on
# the same server: alone, then while the driver keeps exports rendering. Compares the ack
# latency of the two. Binaries from `cargo build --release -p tandem -p tandem-loadgen
# --bins --examples`. On a bigger machine: SERVER_CPUS, GEN_CPUS, CORES, OUTDIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUTDIR:-results/2026-11-30-exports}
bin=${BIN:-target/release}
dir=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
cat >"$dir/tandem.toml" <<TOML
[control.rate_limits]
requests_per_ip = 100000000
writes_per_user = 100000000
auth_per_ip = 1000000
TOML
taskset -c "${SERVER_CPUS:-0}" "$bin/tandem" serve --auth accounts --config "$dir/tandem.toml" --listen "127.0.0.1:$port" \
    --data-dir "$dir/data" --cores "${CORES:-1}" --max-messages-per-s 1000000 --log warn 2>"$out/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
gen() {
    mkdir -p "$out/$1"
    taskset -c "${GEN_CPUS:-1}" nice -n -10 "$bin/tandem-loadgen" run loadgen/scenarios/typing-room.toml --target "ws://127.0.0.1:$port/ws" \
        --out "$out/$1" --label "tandem-$1" --server-pid "$pid" --sign-up 16 >"$out/$1/loadgen.log" 2>&1
}
gen alone
taskset -c "${GEN_CPUS:-1}" "$bin/examples/export_load" "127.0.0.1:$port" 40 2 >"$out/driver.txt" 2>&1 &
driver=$!
sleep 8 # the driver writes its document and uploads first
gen during-exports
wait $driver
{
    echo "commit ${COMMIT:-$(git rev-parse --short HEAD)}, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs"
    echo "exports while the second run measured (request to done):"
    cat "$out/driver.txt"
    echo "ack latency (ms): | ack | count | p50 | p90 | p99 | p99.9 | max |"
    for r in alone during-exports; do echo "== $r"; grep -E "^\| ack" "$out/$r/report.md" || true; done
    echo "server CPU (loadgen's procstat):"
    for r in alone during-exports; do echo "== $r"; grep -iE "server cpu" "$out/$r/report.md" | head -2 || true; done
} | tee "$out/exports-load.txt"
