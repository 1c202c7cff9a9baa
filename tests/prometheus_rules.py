"""Reads Prometheus's /api/v1/rules answer on stdin; fails unless some rules are loaded and
every one is healthy. Usage: python3 tests/prometheus_rules.py LABEL (LABEL starts the line it
prints: who scrapes what)."""
import json
import sys

groups = json.load(sys.stdin)["data"]["groups"]
rules = [r for g in groups for r in g["rules"]]
bad = [r["name"] for r in rules if r.get("health") not in ("ok", "unknown")]
assert rules and not bad, f"{len(rules)} rules, unhealthy: {bad}"
print(f"{sys.argv[1]} with {len(rules)} alert rules loaded", file=sys.stderr)
