#!/usr/bin/env bash
# GET /api/documents at 1,000 req/s with the server on both CPUs (the generator shares them).
set -euo pipefail
cd /work/main
out=results/2026-11-29-control-plane
bin=/tmp/bin-after
data=$(mktemp -d)
cfg=$data.toml
printf '[control.rate_limits]\nrequests_per_ip = 100000000\nwrites_per_user = 100000000\nauth_per_ip = 100000000\nlogins_per_email = 100000000\n' >"$cfg"
port=19750
"$bin/rest-bench" seed --data-dir "$data" --docs 100000 | sed 's/^/2 CPUs: /' | tee -a "$out/rest.txt"
"$bin/tandem" serve --config "$cfg" --data-dir "$data" --listen 127.0.0.1:$port --log warn 2>/dev/null &
pid=$!
sleep 2
for i in 1 2; do
  "$bin/rest-bench" list --target 127.0.0.1:$port --rate 1000 --duration 30 --connections 8 | sed 's/^/2 CPUs: /' | tee -a "$out/rest.txt"
done
kill -TERM $pid; wait $pid || true
rm -rf "$data" "$cfg"
echo REST2_DONE
