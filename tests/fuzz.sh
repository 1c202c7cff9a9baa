#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 5): a smoke run in
# tests/run.sh, a real search with e.g. `tests/fuzz.sh 600`. Stable Rust only, so no sanitizer
# (`-s none`); debug assertions and overflow checks are always on. Runs under a minute use an
# unoptimised build (`-D`: half the compile time, fewer runs per second: right for a smoke
# run); longer ones an optimised one (`-O -a`). Installs cargo-fuzz when missing. A crash stops
# the script with libFuzzer's report; the input is saved under fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-5}"
if [ "$seconds" -lt 60 ]; then build=(-s none -D); else build=(-s none -O -a); fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --version 0.13.2
fi

cd fuzz
cargo fmt -- --check
echo "== cargo fuzz build" >&2
cargo fuzz build "${build[@]}"
mkdir -p target
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  log="target/fuzz-$target.log"
  dict=()
  [ -f "dicts/$target.dict" ] && dict=(-dict="dicts/$target.dict")
  # -timeout: one input taking over 10 s is a finding (a hang), not a slow machine.
  if ! cargo fuzz run "${build[@]}" "$target" -- \
      -max_total_time="$seconds" -timeout=10 "${dict[@]}" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz target $target failed; replay the input saved under fuzz/artifacts/$target/" \
      "with: (cd fuzz && cargo fuzz run ${build[*]} $target FILE)" >&2
    exit 1
  fi
  echo "== fuzz $target: $(grep -E '^Done' "$log" | tail -n 1)" >&2
done
