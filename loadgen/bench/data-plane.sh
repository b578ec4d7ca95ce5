#!/usr/bin/env bash
# The data plane's benchmarks: Tandem against the tokio + tokio-tungstenite baseline, same
# scenarios, alternating runs, in one go (ratios are only quoted within one run of this script).
#
#   loadgen/bench/data-plane.sh OUT_DIR [SCENARIO ...]
#
# Environment:
#   BIN          where tandem, tandem-loadgen and tandem-tokio-baseline are (target/release)
#   SERVER_CPUS  CPUs for the server, a taskset list (default: all); its worker count follows
#   GEN_CPUS     CPUs for the generator (default: all)
#   REPEAT       runs of each (scenario, server) pair (default 1)
#   DURATION     steady seconds, overriding the scenarios
#   SERVERS      which servers (default "tandem tokio-baseline"; also sharedb and y-websocket,
#                installed by loadgen/peers/install.sh; Node is single-threaded, so they get
#                the server CPUs but no worker count)
#   WORKERS      server worker threads (default: one per server CPU)
#   TAG          appended to each run's directory name (to keep variants apart)
#   FIRST_RUN    number of the first run (default 1), to add runs to an existing OUT_DIR
#   TANDEM_ARGS  extra flags for tandem serve (e.g. "--oplog none", "--fsync never")
#   TANDEM_AUTH  dev (default: no accounts), accounts (users sign up first: the server gets
#                rate limits above the load, the generator --sign-up 16), or none (no --auth
#                flag, for builds older than accounts)
#   LOADGEN_ARGS extra flags for tandem-loadgen run (e.g. "--no-cursors")
# Each run leaves OUT_DIR/<scenario>-<server>-<i>/report.{json,md} and server.log.
set -euo pipefail
out=${1:?usage: data-plane.sh OUT_DIR [SCENARIO ...]}
shift
scenarios=("$@")
if [ ${#scenarios[@]} -eq 0 ]; then
    scenarios=(fanout-100-max docs-1000x5-max fanout-100 docs-1000x5 idle)
fi
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${BIN:-$here/target/release}
server_cpus=${SERVER_CPUS:-0-$(($(nproc --all) - 1))}
gen_cpus=${GEN_CPUS:-0-$(($(nproc --all) - 1))}
repeat=${REPEAT:-1}
servers=${SERVERS:-tandem tokio-baseline}
workers=${WORKERS:-$(taskset -c "$server_cpus" nproc)}
tag=${TAG:+-$TAG}
port=19400
mkdir -p "$out"
ulimit -n 20000 2>/dev/null || true

wait_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "server on port $1 did not come up" >&2
    return 1
}

first=${FIRST_RUN:-1}
for i in $(seq "$first" $((first + repeat - 1))); do
    for scenario in "${scenarios[@]}"; do
        for server in $servers; do
            port=$((port + 1))
            dir="$out/$scenario-$server$tag-$i"
            mkdir -p "$dir"
            case $server in
            tandem)
                data=$(mktemp -d)
                auth=()
                case ${TANDEM_AUTH:-dev} in
                none) ;;
                accounts)
                    printf '[control.rate_limits]\nrequests_per_ip = 100000000\nwrites_per_user = 100000000\nauth_per_ip = 1000000\n' >"$data.toml"
                    auth=(--auth accounts --config "$data.toml")
                    ;;
                *) auth=(--auth "${TANDEM_AUTH:-dev}") ;;
                esac
                taskset -c "$server_cpus" "$bin/tandem" serve "${auth[@]}" --listen "127.0.0.1:$port" --data-dir "$data" \
                    --cores "$workers" --max-messages-per-s 1000000 --log warn ${TANDEM_ARGS:-} 2>"$dir/server.log" &
                ;;
            tokio-baseline)
                taskset -c "$server_cpus" "$bin/tandem-tokio-baseline" --listen "127.0.0.1:$port" \
                    --threads "$workers" 2>"$dir/server.log" &
                ;;
            sharedb | y-websocket)
                peer=$("$here/loadgen/peers/install.sh" "$server")
                taskset -c "$server_cpus" node "$peer/server.js" --port "$port" 2>"$dir/server.log" &
                ;;
            *) echo "unknown server $server" >&2; exit 2 ;;
            esac
            pid=$!
            wait_port "$port"
            sleep 0.5
            case $server in
            sharedb) target=(--target "ws://127.0.0.1:$port/" --protocol sharedb) ;;
            y-websocket) target=(--target "ws://127.0.0.1:$port/" --protocol yjs) ;;
            *) target=(--target "ws://127.0.0.1:$port/ws") ;;
            esac
            args=(run "$here/loadgen/scenarios/$scenario.toml" "${target[@]}"
                --out "$dir" --label "$server$tag" --server-pid "$pid")
            if [ -n "${DURATION:-}" ]; then args+=(--duration "$DURATION"); fi
            # shellcheck disable=SC2206
            args+=(${LOADGEN_ARGS:-})
            if [ "$server" = tandem ] && [ "${TANDEM_AUTH:-dev}" = accounts ]; then args+=(--sign-up 16); fi
            echo "== $scenario on $server (run $i): server CPUs $server_cpus ($workers workers), generator CPUs $gen_cpus"
            taskset -c "$gen_cpus" "$bin/tandem-loadgen" "${args[@]}" >"$dir/loadgen.log" 2>&1 || {
                echo "loadgen failed, see $dir/loadgen.log" >&2
                tail -5 "$dir/loadgen.log" >&2
            }
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            if [ "$server" = tandem ]; then rm -rf "$data" "$data.toml"; fi
            grep -E "per server CPU|per connection" "$dir/report.md" 2>/dev/null || true
        done
    done
done
