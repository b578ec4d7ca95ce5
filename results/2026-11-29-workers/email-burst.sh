#!/usr/bin/env bash
# Email: a burst of N (default 10,000) shares drained through one SMTP sink (aiosmtpd,
# Maildir), and the data plane meanwhile. tandem serve (accounts, one core) on CPU 0; the
# generator (typing-room: 50 signed-in editors on one document), the share driver and the
# sink on CPU 1 (the generator at nice -10, so the driver and the sink on its CPU do not
# delay its own measurements). Three loadgen runs on the same server: alone, while the shares
# are made over REST, and while the emails drain after the last share. Reports emails/s
# (first share to last email in the sink) and the ack latency of each run. On a bigger
# machine: SERVER_CPUS, GEN_CPUS, SINK_CPUS, DRIVER_CPUS, CORES, OUTDIR, PYTHON (one with
# aiosmtpd).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUTDIR:-results/2026-11-29-workers}
py=${PYTHON:-/usr/bin/python3}
bin=${BIN:-target/release}
n=${N:-10000}
dir=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
sport=$((port + 1))
# aiosmtpd makes the Maildir (new/, cur/, tmp/) itself when it does not exist.
taskset -c "${SINK_CPUS:-1}" "$py" -m aiosmtpd -n -l "127.0.0.1:$sport" -c aiosmtpd.handlers.Mailbox "$dir/maildir" &
sink=$!
cat >"$dir/tandem.toml" <<TOML
[control.rate_limits]
requests_per_ip = 100000000
writes_per_user = 100000000
auth_per_ip = 1000000
[mail]
smtp_host = "127.0.0.1"
smtp_port = $sport
tls = "none"
TOML
taskset -c "${SERVER_CPUS:-0}" "$bin/tandem" serve --auth accounts --config "$dir/tandem.toml" --listen "127.0.0.1:$port" \
    --data-dir "$dir/data" --cores "${CORES:-1}" --max-messages-per-s 1000000 --log warn 2>"$out/email-burst-server.log" &
pid=$!
trap 'kill $pid $sink 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
gen() {
    mkdir -p "$out/email-$1"
    taskset -c "${GEN_CPUS:-1}" nice -n -10 "$bin/tandem-loadgen" run loadgen/scenarios/typing-room.toml --target "ws://127.0.0.1:$port/ws" \
        --out "$out/email-$1" --label "tandem-$1" --server-pid "$pid" --sign-up 16 >"$out/email-$1/loadgen.log" 2>&1
}
gen alone
taskset -c "${DRIVER_CPUS:-1}" "$py" results/2026-11-29-workers/burst.py "$port" "$n" >"$dir/burst.json" &
driver=$!
gen during-shares
wait $driver
sent() { find "$dir/maildir/new" -type f | wc -l; }
echo "after the shares: $(sent) of $n emails in the sink" >"$dir/drain.txt"
gen during-drain
echo "after the drain run: $(sent) of $n emails in the sink" >>"$dir/drain.txt"
for _ in $(seq 1200); do
    [ "$(sent)" -ge "$n" ] && break
    sleep 0.5
done
python3 - "$dir" "$n" <<'PY' | tee "$out/email-burst.txt"
import json, os, sys
d, n = sys.argv[1], int(sys.argv[2])
b = json.load(open(f"{d}/burst.json"))
times = sorted(os.path.getmtime(os.path.join(f"{d}/maildir/new", f)) for f in os.listdir(f"{d}/maildir/new"))
print(f"shares: {b['shares']} accepted in {b['share_s']:.1f} s ({b['shares'] / b['share_s']:.0f}/s over REST, one connection)")
print(f"emails in the sink: {len(times)} (expected {n}); the last {times[-1] - b['started']:.1f} s after the first share")
print(f"emails/s, first share to last email: {len(times) / (times[-1] - b['started']):.0f}")
if len(times) > 1:
    print(f"emails/s, first email to last: {(len(times) - 1) / (times[-1] - times[0]):.0f}")
PY
{
    echo "commit ${COMMIT:-$(git rev-parse --short HEAD)}, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs"
    cat "$dir/drain.txt"
    echo "ack latency (ms): | ack | count | p50 | p90 | p99 | p99.9 | max |"
    for r in alone during-shares during-drain; do echo "== $r"; grep -E "^\| ack" "$out/email-$r/report.md" || true; done
} | tee -a "$out/email-burst.txt"
curl -s "127.0.0.1:$port/metrics" | grep -E "^tandem_(worker|outbox|bus_lag)" >>"$out/email-burst.txt"
