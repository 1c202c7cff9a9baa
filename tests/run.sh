#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what is missing, then runs
# format, lint, every test (unit, property and end-to-end against the real binary), the
# packaging checks (tests/deploy.sh), the systemd walkthrough under systemd itself
# (tests/systemd.sh), then a few seconds of each fuzz target (tests/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup-debian.sh --test
# Tests that would skip for a missing tool (schemathesis) fail instead: setup installed it.
export PORTCULLIS_REQUIRE_TOOLS=1
# PostgreSQL is installed above: its tests fail rather than skip.
export PORTCULLIS_REQUIRE_POSTGRES=1

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== cargo test ($(df -h --output=avail . | tail -n 1 | tr -d ' ') free on this disk)" >&2
cargo test --locked --workspace -- --test-threads=2
echo "== packaging: schemas, systemd, container, Kubernetes, completions, man pages" >&2
tests/deploy.sh
echo "== systemd: the README's walkthrough under a real systemd, zero-downtime restarts" >&2
tests/systemd.sh
echo "== fuzz smoke run ($(df -h --output=avail . | tail -n 1 | tr -d ' ') free on this disk)" >&2
tests/fuzz.sh 5
