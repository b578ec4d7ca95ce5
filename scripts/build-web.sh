#!/usr/bin/env bash
# Builds the browser editor (web/app -> web/app/dist) from a fresh clone: installs Node.js
# and npm from Debian when missing, the locked npm packages (from the npm registry; npm's
# cache is in ~/.npm), and runs Vite. Nothing is fetched at run time: `tandem serve` serves
# every script, style and font from web/app/dist.
set -euo pipefail
cd "$(dirname "$0")/../web"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing nodejs and npm (Debian packages)" >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >&2
fi

# Vite 7 needs Node.js 20.19 or newer (Debian 12's own package is 18).
node_version="$(node -p 'process.versions.node')"
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'; then
  echo "error: the editor's build needs Node.js 20.19 or newer; this machine has $node_version" >&2
  exit 1
fi

# npm ci only when the lock changed since the last install.
stamp=node_modules/.tandem-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$want" >"$stamp"
fi
npm run build --silent >&2
echo "web/app/dist"
