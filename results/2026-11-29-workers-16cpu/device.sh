#!/usr/bin/env bash
# Issue 13's benchmarks that do not fit the 2-CPU build machine, on a 16-CPU one (one call
# of the project's device machine; see README.md here). Carried in .devcarry/ (ignored):
# bins.tar.xz (release tandem with the kafka feature, tandem-loadgen, tansu; x86-64,
# stripped) and whl/ (aiosmtpd and atpublic, for the SMTP sink). Every result is packed
# into $OUT/results.tgz as it is made, so a run cut short still returns what it did.
#
# CPUs: server 0-7 (--cores 4: four cores, and the control runtime and workers beside them),
# generator 8-13, Kafka broker / SMTP sink 14, share driver 15.
#   1. office (2,000 documents x 5 users, 4,000 ops/s) with the change feed off, then on
#      (in process, every worker): ack p99 on/off, the feed's throughput, search lag;
#   2. office on Kafka (tansu): the feed's throughput and search lag there;
#   3. 10,000 shares through one SMTP sink while typing-room runs: emails/s and its acks.
set -uo pipefail
cd "$(dirname "$0")/../.."
export COMMIT=${COMMIT:?set COMMIT to the commit the binaries were built at}
out=results/2026-11-29-workers-16cpu
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/b /tmp/shim
pack() { tar czf "$OUT/results.tgz" "$out" 2>/dev/null; }
{
    echo "commit $COMMIT, $(date -u +%Y-%m-%dT%H:%MZ)"
    uname -a; nproc; grep -m1 "model name" /proc/cpuinfo; free -g | head -2
} | tee "$out/machine.txt"
python3 -c "import tarfile; tarfile.open('.devcarry/bins.tar.xz').extractall('/tmp/b')" || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .devcarry/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
# curl, if the machine has none: the scripts only GET.
if ! command -v curl >/dev/null; then
    cat >/tmp/shim/curl <<'PY'
#!/usr/bin/env python3
import sys, urllib.request
url = [a for a in sys.argv[1:] if not a.startswith("-")][-1]
try:
    sys.stdout.buffer.write(urllib.request.urlopen(url if "://" in url else "http://" + url, timeout=10).read())
except Exception:
    sys.exit(22)
PY
    chmod +x /tmp/shim/curl
    export PATH=/tmp/shim:$PATH
fi
ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || ulimit -n 20000
echo "fds: $(ulimit -n)" | tee -a "$out/machine.txt"
export BIN=/tmp/b OUTDIR=$out TANDEM_TANSU=/tmp/b/tansu SERVER_CPUS=0-7 CORES=4 GEN_CPUS=8-13 KAFKA_CPUS=14
stop() { pkill -f "/tmp/b/tandem " ; pkill -f /tmp/b/tansu; pkill -f aiosmtpd; sleep 1; } 2>/dev/null
lag() { timeout "${LAG_TIMEOUT:-200}" bash results/2026-11-29-workers/search-lag.sh 2>&1 | tail -40 | tee "$out/$1.txt"; stop; pack; }
# RUNS picks some (default all); ROUND names a repeat (its files end in -ROUND).
for r in ${RUNS:-feed-off feed-on kafka email}; do
    case $r in
    feed-off) FEED=off TAG=office-feed-off${ROUND:+-$ROUND} lag office-feed-off${ROUND:+-$ROUND} ;;
    feed-on) TAG=office-feed-on${ROUND:+-$ROUND} lag office-feed-on${ROUND:+-$ROUND} ;;
    kafka) KAFKA=1 TAG=office-kafka${ROUND:+-$ROUND} lag office-kafka${ROUND:+-$ROUND} ;;
    max) SCENARIO=max-feed SCENARIO_FILE=$out/max-feed.toml TAG=max-feed lag max-feed ;;
    email)
        SINK_CPUS=14 DRIVER_CPUS=15 PYTHON=python3 timeout 280 bash results/2026-11-29-workers/email-burst.sh 2>&1 |
            tail -40 | tee "$out/email.txt"
        stop
        pack
        ;;
    esac
done
echo DEVICE_DONE
