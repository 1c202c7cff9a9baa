#!/usr/bin/env bash
# Type-checks a Grafana dashboard (JSON) against the `Dashboard` type of Grafana's published
# schema package, npm @grafana/schema, with the TypeScript compiler (`tsc --strict`): unknown
# keys, missing required keys and values of the wrong type or outside an enumeration fail.
# Grafana itself is not run (it is not installable here); this is the check it would make of
# the dashboard's shape, not of its queries (tests/e2e/observability.rs evaluates those).
#
#   tests/grafana/check-dashboard.sh [DASHBOARD.json]   (default: the shipped dashboard)
#
# The versions are pinned in tests/grafana/package.json and package-lock.json; `npm ci` installs
# them into tests/grafana/node_modules (ignored by git) when missing or older than the lock.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dashboard=$(realpath "${1:-$here/../../deploy/observability/portcullis-dashboard.json}")

if [ ! -d "$here/node_modules" ] || [ "$here/package-lock.json" -nt "$here/node_modules" ]; then
  npm ci --prefix "$here" --no-audit --no-fund --loglevel=error >&2 \
    || { echo "grafana: npm ci in tests/grafana failed" >&2; exit 1; }
  touch "$here/node_modules"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ln -s "$here/node_modules" "$work/node_modules"
# The JSON as a TypeScript expression, checked with `satisfies` (excess keys are errors).
# `AsJson` is the only adaptation: the schema's string enums (ThresholdsMode, ...) are TypeScript
# enums, which no JSON value can be; their members' values ("absolute", ...) are what Grafana
# reads from JSON, and exactly those are allowed. Numeric enums accept their numbers as they are.
{
  cat <<'TS'
import type { Dashboard } from '@grafana/schema';
type AsJson<T> = 0 extends 1 & T
  ? T
  : T extends string
    ? string extends T ? string : `${T}`
    : T extends (infer E)[]
      ? AsJson<E>[]
      : T extends object
        ? { [K in keyof T]: AsJson<T[K]> }
        : T;
export const dashboard = (
TS
  cat "$dashboard"
  echo ') satisfies AsJson<Dashboard>;'
} >"$work/dashboard.ts"
# Line numbers in the errors are the dashboard's own (the generated file adds 11 lines first).
if ! node "$here/node_modules/typescript/bin/tsc" --noEmit --strict --target es2022 --module esnext \
  --moduleResolution bundler --pretty false "$work/dashboard.ts" >"$work/tsc.out" 2>&1; then
  python3 - "$work/tsc.out" "$(basename "$dashboard")" <<'PY' >&2
import re, sys
name = sys.argv[2]
for line in open(sys.argv[1]):
    print(re.sub(r"^\S*dashboard\.ts\((\d+),(\d+)\)", lambda m: f"{name}:{int(m[1]) - 11}:{m[2]}", line), end="")
PY
  echo "grafana: $(basename "$dashboard") does not match the Dashboard type of @grafana/schema $(node -p "require('$here/node_modules/@grafana/schema/package.json').version")" >&2
  exit 1
fi
echo "grafana: $(basename "$dashboard") matches the Dashboard type of @grafana/schema" \
  "$(node -p "require('$here/node_modules/@grafana/schema/package.json').version")" \
  "(tsc $(node "$here/node_modules/typescript/bin/tsc" --version | sed 's/Version //') --strict)" >&2
