#!/usr/bin/env bash
# Runs every test, on a fresh machine too: installs what the tests need into caches outside
# the clone (~/.cache/tandem, or $TANDEM_CACHE) and then runs them. Nothing is skipped except
# the ScyllaDB suite, which needs a ScyllaDB cluster no package here provides: it runs when
# TANDEM_SCYLLA_URI names one, and says "skipped" otherwise.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -p tandem-net   # extra arguments go to cargo test
#
# Installed when missing: Node.js and npm (Debian packages), the quill-delta reference and the
# load generator's peers (npm), PostgreSQL 15 (Debian package; the tests start their own
# server in a temp directory with initdb and pg_ctl and stop it afterwards), the aiosmtpd
# SMTP sink (Debian package), the tansu Kafka-API broker and the s3s-fs S3-API server (cargo
# install, cached), and poppler and LibreOffice to check exported PDFs and DOCX files
# (Debian packages).
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
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
# The SMTP sink the notification tests send to.
/usr/bin/python3 -c "import aiosmtpd" 2>/dev/null || apt_install python3-aiosmtpd

# Exports are checked with pdftotext/pdftoppm (poppler) and by converting DOCX to PDF in
# LibreOffice.
command -v pdftotext >/dev/null && command -v soffice >/dev/null && command -v unzip >/dev/null ||
  apt_install poppler-utils libreoffice-writer-nogui unzip

# The S3-API server the S3 blob store's tests start (s3s-fs; ~90 s to build, once).
s3s="$cache/s3s-fs/bin/s3s-fs"
if [ ! -x "$s3s" ]; then
  echo "installing s3s-fs (an S3-API server) into $cache/s3s-fs" >&2
  cargo install s3s-fs@0.14.1 --features binary --locked --root "$cache/s3s-fs" >&2
fi
export TANDEM_S3S_FS="$s3s"

# The Kafka-API broker the Kafka backend's tests start (tansu; ~25 min to build, once).
tansu="$cache/tansu/bin/tansu"
if [ ! -x "$tansu" ]; then
  echo "installing tansu (a Kafka-API broker) into $cache/tansu: a first build takes ~25 min" >&2
  cargo install tansu --locked --features dynostore --root "$cache/tansu" >&2
fi
export TANDEM_TANSU="$tansu"

TANDEM_QUILL_DELTA="$(.ci/setup-quill-delta)"
export TANDEM_QUILL_DELTA
loadgen/peers/install.sh >/dev/null
export TANDEM_PEERS_DIR="$cache/peers"

cargo test --workspace "$@"
if [ "$#" = 0 ]; then
  # Prints "skipped: TANDEM_SCYLLA_URI not set" unless a ScyllaDB cluster is named.
  cargo test -p tandem-storage --features scylla --test conformance_scylla -- --nocapture
  # The bus conformance suite on Kafka (a tansu broker each run starts and stops).
  cargo test -p tandem-events --features kafka --test conformance
  # `tandem worker` processes beside `tandem serve` on Kafka, with a kill -9 mid-stream.
  cargo test -p tandem --features kafka --test kafka_workers
fi
