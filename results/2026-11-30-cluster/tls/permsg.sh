#!/usr/bin/env bash
# The per-message cost of TLS under load: the same scenario against the same server binary,
# once on a plain port and once on a TLS one, alternating, twice each. Run from the
# repository root after `cargo build --release -p tandem -p tandem-loadgen`.
#   results/2026-11-30-cluster/tls/permsg.sh [SCENARIO] [OUT]
set -euo pipefail
scenario=${1:-results/2026-11-30-cluster/tls/docs-1000x5-light.toml}
out=${2:-/tmp/tls-permsg}
mkdir -p "$out"
cd "$(dirname "$0")/../../.."
if [ ! -f "$out/cert.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$out/key.pem" \
    -out "$out/cert.pem" -days 30 -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -addext basicConstraints=critical,CA:FALSE 2>/dev/null
fi
port=8556
for round in 1 2; do
  for mode in plain tls; do
    data=$(mktemp -d)
    tls=()
    target="ws://127.0.0.1:$port/ws"
    ca=()
    if [ "$mode" = tls ]; then
      tls=(--tls-cert "$out/cert.pem" --tls-key "$out/key.pem")
      target="wss://localhost:$port/ws"
      ca=(--ca-file "$out/cert.pem")
    fi
    # The data plane alone: no change feed, no workers in the process.
    printf '[events]\nchange_feed = false\nworkers = []\n' > "$data/tandem.toml"
    target/release/tandem serve --config "$data/tandem.toml" --listen "127.0.0.1:$port" --cores 2 --auth dev \
      --max-connections 20000 --data-dir "$data" "${tls[@]}" 2>"$out/server-$mode-$round.log" &
    server=$!
    trap 'kill $server 2>/dev/null || true' EXIT
    for _ in $(seq 100); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.1
    done
    target/release/tandem-loadgen run "$scenario" --target "$target" "${ca[@]}" --label "$mode" \
      --server-pid "$server" --out "$out/$mode-$round" >/dev/null
    kill "$server"; wait "$server" || true
    rm -rf "$data"
  done
done
for d in "$out"/plain-* "$out"/tls-*; do
  python3 - "$d" <<'PY'
import json, sys
r = json.load(open(sys.argv[1] + "/report.json"))
s = r["server"]
m = s.get("metrics_per_s") or {}
if "tandem_messages_in_total" not in m:
    print(f'{sys.argv[1]}: the server counters could not be read'); sys.exit()
msgs = m["tandem_messages_in_total"] + m["tandem_frames_out_total"]
print(f'{sys.argv[1]}: converged={r["converged"]} errors={r["errors"]} '
      f'in/s={m["tandem_messages_in_total"]:.0f} frames out/s={m["tandem_frames_out_total"]:.0f} '
      f'ack p50={r["ack_latency_ms"]["p50"]:.2f} p99={r["ack_latency_ms"]["p99"]:.2f} ms '
      f'server cpu={s["cpu_util"]:.3f} cores, {s["cpu_util"] / msgs * 1e6:.2f} us per message in or frame out, '
      f'rss/conn={s.get("rss_per_connection_bytes", 0):.0f} B, generator cpu={r["generator"]["cpu_util"]:.2f}')
PY
done
