#!/usr/bin/env bash
# Runs every test, on a fresh machine too: installs what the tests need into caches outside
# the clone (~/.cache/tandem, or $TANDEM_CACHE) and then runs them. Nothing is skipped except
# the ScyllaDB suite, which needs a ScyllaDB cluster no package here provides: it runs when
# TANDEM_SCYLLA_URI names one, and says "skipped" otherwise.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -p tandem-net   # extra arguments go to cargo test
#
# Installed when missing: Node.js and npm (Debian packages), the web packages (npm ci in web/:
# the client library, the editor and their test tools), Chromium (Debian package) for the
# browser tests, the quill-delta reference and the
# load generator's peers (npm), PostgreSQL 15 (Debian package; the tests start their own
# server in a temp directory with initdb and pg_ctl and stop it afterwards), the aiosmtpd
# SMTP sink (Debian package), the tansu Kafka-API broker and the s3s-fs S3-API server (cargo
# install, cached), poppler and LibreOffice to check exported PDFs and DOCX files (Debian
# packages), HAProxy (Debian package) and kubernetes-validate (PyPI) for deploy/'s files.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${TANDEM_CACHE:-$HOME/.cache/tandem}"
mkdir -p "$cache"

apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing $* (Debian packages)" >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >&2
}

command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
# The browser tests drive Debian's Chromium (playwright-core cannot download a browser here).
# (Noto Color Emoji: the screenshots show emoji, not boxes.)
[ -x /usr/bin/chromium ] && [ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] ||
  apt_install chromium fonts-noto-color-emoji
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
# The browser's HTTPS test makes its certificate with openssl.
command -v openssl >/dev/null || apt_install openssl
# The SMTP sink the notification tests send to.
/usr/bin/python3 -c "import aiosmtpd" 2>/dev/null || apt_install python3-aiosmtpd

# Exports are checked with pdftotext/pdftoppm (poppler) and by converting DOCX to PDF in
# LibreOffice.
command -v pdftotext >/dev/null && command -v soffice >/dev/null && command -v unzip >/dev/null ||
  apt_install poppler-utils libreoffice-writer-nogui unzip

# The Compose cluster's load balancer (deploy/cluster, run without Docker by tandem's deploy
# test).
[ -x /usr/sbin/haproxy ] || apt_install haproxy
# The Kubernetes manifests are checked against the API's schemas (kubernetes-validate from
# PyPI, which carries them), in a virtual environment of its own.
kv="$cache/venv/bin/kubernetes-validate"
if [ ! -x "$kv" ]; then
  echo "installing kubernetes-validate into $cache/venv" >&2
  python3 -m venv "$cache/venv" >&2
  "$cache/venv/bin/pip" install -q kubernetes-validate==1.31.0 >&2
fi
export TANDEM_KUBERNETES_VALIDATE="$kv"

# The S3-API server the S3 blob store's tests start (s3s-fs; ~90 s to build, once).
s3s="$cache/s3s-fs/bin/s3s-fs"
if [ ! -x "$s3s" ]; then
  echo "installing s3s-fs (an S3-API server) into $cache/s3s-fs" >&2
  cargo install s3s-fs@0.14.1 --features binary --locked --root "$cache/s3s-fs" >&2
fi
export TANDEM_S3S_FS="$s3s"

# The Kafka-API broker the Kafka backend's tests start (tansu; built once, unoptimized: 8
# minutes on 2 CPUs against 25 for a release build, and the tests' few thousand messages do
# not need its speed).
tansu="$cache/tansu/bin/tansu"
if [ ! -x "$tansu" ]; then
  echo "installing tansu (a Kafka-API broker) into $cache/tansu: a first build takes ~8 min" >&2
  CARGO_PROFILE_DEV_DEBUG=false cargo install tansu@0.6.0 --locked --debug --features dynostore \
    --root "$cache/tansu" >&2
fi
export TANDEM_TANSU="$tansu"

TANDEM_QUILL_DELTA="$(.ci/setup-quill-delta)"
export TANDEM_QUILL_DELTA
loadgen/peers/install.sh >/dev/null
export TANDEM_PEERS_DIR="$cache/peers"

# One build for every test: the workspace with the Kafka and ScyllaDB backends compiled in. A
# second `cargo test -p tandem --features kafka` resolved dependency features differently
# (serde, tokio) and rebuilt the whole tree, typst included: 14 minutes of a warm CI run.
#   - tandem-storage's conformance_scylla and tandem's cluster (its ScyllaDB scenario) print
#     "skipped: TANDEM_SCYLLA_URI not set" unless a ScyllaDB cluster is named;
#   - tandem-events' conformance runs the bus suite on Kafka (a tansu broker each run starts);
#   - tandem's kafka_workers runs `tandem worker` processes beside `tandem serve` on Kafka,
#     with a kill -9 mid-stream.
features=tandem/kafka,tandem/scylla,tandem-storage/postgres
if [ "$#" = 0 ]; then
  # The browser editor, built before the Rust tests that serve it.
  scripts/build-web.sh >/dev/null
  cargo test --workspace --features "$features"
  # Again with its output shown, so that the skip is said (same build: nothing recompiles).
  cargo test --workspace --features "$features" --test conformance_scylla -- --nocapture
  cargo test --workspace --features "$features" --test cluster scylladb -- --nocapture
  # The JavaScript client against a real `tandem serve` (the binary the tests above built),
  # then the editor end to end in Chromium.
  # Where cargo put it: ./target, or $CARGO_TARGET_DIR (absolute, for the tests run in web/).
  TANDEM_BIN="$(realpath -m "${CARGO_TARGET_DIR:-target}")/debug/tandem"
  export TANDEM_BIN
  (cd web && npm test --silent && npm run test:e2e --silent)
else
  cargo test "$@"
fi
