#!/usr/bin/env bash
# Installs the peer servers' npm packages (pinned in each package.json) under
# ~/.cache/tandem/peers/<peer>/ (outside the clone) and prints the directory of each; run a
# peer with `node <dir>/server.js --port N`.
#
#   loadgen/peers/install.sh [sharedb] [y-websocket]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${TANDEM_CACHE:-$HOME/.cache/tandem}/peers
peers=("$@")
[ ${#peers[@]} -eq 0 ] && peers=(sharedb y-websocket)
for p in "${peers[@]}"; do
    [ -f "$here/$p/package.json" ] || { echo "no peer $p in $here" >&2; exit 2; }
    dir=$cache/$p
    mkdir -p "$dir"
    cp "$here/$p/package.json" "$here/$p/server.js" "$dir/"
    if ! cmp -s "$dir/package.json" "$dir/.installed" 2>/dev/null; then
        (cd "$dir" && npm install --no-audit --no-fund --loglevel=error >&2)
        cp "$dir/package.json" "$dir/.installed"
    fi
    echo "$dir"
done
