#!/usr/bin/env bash
# What forwarding a document's frames through another node would cost at the least, against
# the clients connecting to the node that serves it (what `moved` gives them): the same
# office load, halved (1,000 documents x 5 users: a relay holds two descriptors per
# connection, and a process may open 20,000 here) on one `tandem serve --cores 1`, direct and through
# a TCP relay (HAProxy in TCP mode, one thread): the cheapest possible forwarder, which reads
# and writes bytes without parsing frames or routing them by document. Alternating, ROUNDS
# rounds. The relay's CPU is sampled from /proc over the whole generator run.
#
#   results/2026-11-30-cluster/forwarding.sh [OUT_DIR]
#
# Environment: BIN (target/release), ROUNDS ("1 2"), DURATION.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$(dirname "$0")/common.sh"
out=${1:-$here/results/2026-11-30-cluster/forwarding}
bin=${BIN:-$here/target/release}
scenario=office-5k
work=$(mktemp -d /var/tmp/tandem-forwarding.XXXXXX)
sed -e 's/^docs = 2000$/docs = 1000/' -e 's/^name = "office"$/name = "office-5k"/' \
    "$here/loadgen/scenarios/office.toml" >"$work/$scenario.toml"
grep -q '^docs = 1000$' "$work/$scenario.toml"
mkdir -p "$out"
ulimit -n 20000 2>/dev/null || true
server= relay=

cleanup() {
    for p in $server $relay; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT


cpu_s() { awk -v t="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); print ($12 + $13) / t}' "/proc/$1/stat"; }

cat >"$work/haproxy.cfg" <<EOF
global
    maxconn 6000
    fd-hard-limit 20000
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend relay
    bind 127.0.0.1:19701
    default_backend node
backend node
    server node 127.0.0.1:19700
EOF

run() {
    local via=$1 i=$2 dir="$out/$scenario-$1-$2" port=19700
    mkdir -p "$dir"
    "$bin/tandem" serve --listen 127.0.0.1:19700 --cores 1 --auth dev --max-messages-per-s 100000 \
        --data-dir "$work/data-$via-$i" >"$dir/server.log" 2>&1 &
    server=$!
    wait_port 19700
    if [ "$via" = relayed ]; then
        haproxy -f "$work/haproxy.cfg" -db >"$dir/haproxy.log" 2>&1 &
        relay=$!
        port=19701
        wait_port 19701
    fi
    local r0=0 r1=0
    [ -n "$relay" ] && r0=$(cpu_s "$relay")
    echo "== $via, round $i" >&2
    # The server's pid given: through the relay the listening port is HAProxy's.
    "$bin/tandem-loadgen" run "$work/$scenario.toml" --target "ws://127.0.0.1:$port/ws" \
        --server-pid "$server" --label "tandem-$via" --out "$dir" ${DURATION:+--duration "$DURATION"} \
        >"$dir/loadgen.log" 2>&1
    if [ -n "$relay" ]; then
        r1=$(cpu_s "$relay")
        echo "relay_cpu_s=$(echo "$r1 - $r0" | bc)" | tee "$dir/relay.txt" >&2
        kill "$relay"; wait "$relay" 2>/dev/null || true; relay=
    fi
    kill "$server"; wait "$server" 2>/dev/null || true; server=
    grep -E "edits acked|^\| ack|^\| server" "$dir/report.md" >&2 || true
}

for i in ${ROUNDS:-1 2}; do
    if [ $((i % 2)) = 1 ]; then order="direct relayed"; else order="relayed direct"; fi
    for via in $order; do run "$via" "$i"; done
done
echo FORWARDING_DONE >&2
