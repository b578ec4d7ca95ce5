#!/usr/bin/env bash
# The REST API under load: GET /api/documents on SQLite holding 100,000 documents at
# 1,000 req/s; login throughput; the data plane's ack p99 with an idle control plane and
# while logins run. Server on CPU 0 (one core), load on CPU 1.
set -euo pipefail
cd /work/main
out=results/2026-11-29-control-plane
bin=/tmp/bin-after
data=$(mktemp -d)
cfg=$data.toml
printf '[control.rate_limits]\nrequests_per_ip = 100000000\nwrites_per_user = 100000000\nauth_per_ip = 100000000\nlogins_per_email = 100000000\n' >"$cfg"
port=19700
"$bin/rest-bench" seed --data-dir "$data" --docs "${DOCS:-100000}" | tee -a "$out/rest.txt"
taskset -c 0 "$bin/tandem" serve --config "$cfg" --data-dir "$data" --listen 127.0.0.1:$port --log warn 2>"$out/rest-server.log" &
pid=$!
sleep 2
for i in $(seq "${LISTS:-3}"); do
  taskset -c 1 "$bin/rest-bench" list --target 127.0.0.1:$port --rate 1000 --duration 30 --connections 8 | tee -a "$out/rest.txt"
done
taskset -c 1 "$bin/rest-bench" login --target 127.0.0.1:$port --duration 15 --concurrency 4 | tee -a "$out/rest.txt"
# The data plane while logins run: typing-room with signed-in users, alone, then with logins.
for i in $(seq "${ROUNDS:-3}"); do
  for with in idle logins; do
    dir="$out/typing-room-$with-$i"
    mkdir -p "$dir"
    if [ $with = logins ]; then
      taskset -c 1 "$bin/rest-bench" login --target 127.0.0.1:$port --duration 32 --concurrency 4 >"$dir/logins.txt" &
      lp=$!
    fi
    taskset -c 1 "$bin/tandem-loadgen" run loadgen/scenarios/typing-room.toml --target ws://127.0.0.1:$port/ws \
      --sign-up 4 --out "$dir" --label "tandem-$with" --server-pid $pid >"$dir/loadgen.log" 2>&1
    if [ $with = logins ]; then wait $lp; cat "$dir/logins.txt" | tee -a "$out/rest.txt"; fi
    grep -E "^\| ack " "$dir/report.md" | sed "s/^/$with $i: /" | tee -a "$out/rest.txt"
  done
done
kill -TERM $pid; wait $pid || true
rm -rf "$data" "$cfg"
echo REST_DONE
