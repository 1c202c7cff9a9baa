#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what is missing, then runs
# format, lint, and every test (unit, property and end-to-end against the real binary).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup-debian.sh --test

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== cargo test" >&2
cargo test --locked --workspace -- --test-threads=2
