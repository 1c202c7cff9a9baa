#!/usr/bin/env bash
# One command from a fresh Debian machine to a running Portcullis: installs what the build
# needs, builds the release binary, and runs `portcullis demo` (Ctrl-C stops it).
# Extra arguments go to `portcullis demo` (e.g. --port 9443 --state /tmp/pc-demo).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup-debian.sh
cargo build --release --locked --bin portcullis
exec target/release/portcullis demo "$@"
