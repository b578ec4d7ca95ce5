#!/usr/bin/env bash
# Tandem's main job with embedded defaults, the browser editor included: builds the editor
# (scripts/build-web.sh) and the server, then runs `tandem serve` and prints the URL to open
# (http://127.0.0.1:8080/ unless --listen says otherwise). Extra arguments go to `tandem serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
web="$(scripts/build-web.sh)"
exec cargo run --release -p tandem -- serve --web-dir "$web" "$@"
