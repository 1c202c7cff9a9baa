#!/usr/bin/env bash
# Packaging and operations checks, run by tests/run.sh after `cargo test` (which built the
# binary). Each part drives the real tool a user would run:
#   1. config schemas: `portcullis config schema` for each kind; every YAML config in README.md,
#      deploy/config, deploy/container, the Kubernetes ConfigMaps and the demo's state folder
#      validated with check-jsonschema, and `portcullis check` on the complete ones;
#   2. systemd: README "Run it under systemd" in a scratch root (deploy/systemd/install.sh, a
#      SoftHSM2 CA, certificates, the audit key as a credential), units verified and rated by
#      `systemd-analyze security` (2.0 or lower), then the gateway run with the unit's own
#      ExecStart/ExecReload under strace (every system call against the unit's
#      SystemCallFilter=): an mTLS request through it, Prometheus with the README's
#      prometheus.yml, SIGHUP reload, /metrics, SIGTERM, and the audit log verified; the
#      issuance API with its unit's ExecStart and the HSM PIN credential;
#   3. the container build file linted by hadolint (not built: no registry here);
#   4. Kubernetes manifests validated by kubernetes-validate --strict (CRDs skipped, said so)
#      and checked to fit together (selectors, named ports, targets);
#   5. shell completions parsed by bash, man pages rendered by man/groff;
#   6. the Grafana dashboard type-checked against Grafana's published schema (npm
#      @grafana/schema, `Dashboard`) by the TypeScript compiler (tests/grafana/check-dashboard.sh).
# Everything listens on 127.0.0.1; every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

target=${CARGO_TARGET_DIR:-target}
bin="$target/debug/portcullis"
if [ ! -x "$bin" ]; then
  cargo build --locked --bin portcullis
fi
bin=$(cd "$(dirname "$bin")" && pwd)/portcullis

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"; [ -z "${KEEP_WORK:-}" ] || echo "deploy: kept $work" >&2
}
trap cleanup EXIT

step() { echo "== deploy: $*" >&2; }
fail() { echo "deploy: FAILED: $*" >&2; exit 1; }
# A free TCP port on 127.0.0.1 (bound and released; the kernel does not hand it out again soon).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits up to $2 tenths of a second for command $1 to succeed.
wait_for() {
  local cmd=$1 tries=$2
  for _ in $(seq "$tries"); do
    if eval "$cmd" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  return 1
}

# The system calls a group of systemd's names (`@system-service`), nested groups expanded.
syscall_group() {
  local name
  for name in $(systemd-analyze syscall-filter "$1" | sed '1d' | grep -v '^ *#'); do
    case $name in @*) syscall_group "$name" ;; *) echo "$name" ;; esac
  done
}
# Fails when the traced process made a system call the unit's SystemCallFilter= refuses (or
# opened a socket family, or a mapping, the unit forbids): the parts of the sandbox that could
# break the service and that can be judged without systemd.
# fchown is left out: SQLite calls it only as root (to keep a database's owner), and the
# services run as their own users.
syscall_filter_check() { # UNIT TRACE
  local line allowed="" denied="" used refused
  while read -r line; do
    for group in ${line#\~}; do
      case $line in "~"*) denied+=$(syscall_group "$group" 2>/dev/null || echo "$group")$'\n' ;;
        *) allowed+=$(syscall_group "$group" 2>/dev/null || echo "$group")$'\n' ;; esac
    done
  done < <(sed -n 's/^SystemCallFilter=//p' "deploy/systemd/$1")
  used=$(sed -nE 's/^[0-9]+ +([a-z0-9_]+)\(.*/\1/p' "$2" | sort -u)
  refused=$(comm -23 <(printf '%s\n' "$used") <(printf '%s' "$allowed" | sort -u))
  refused+=$'\n'$(comm -12 <(printf '%s\n' "$used") <(printf '%s' "$denied" | sort -u))
  refused=$(printf '%s\n' "$refused" | { grep -vx -e '' -e fchown || true; } | sort -u | tr '\n' ' ')
  [ -z "$refused" ] || fail "$1: SystemCallFilter= would refuse: $refused"
  # Likewise the socket families it opened, against RestrictAddressFamilies=.
  local families family
  families=$(sed -n 's/^RestrictAddressFamilies=//p' "deploy/systemd/$1")
  for family in $(grep -oE 'socket\(AF_[A-Z0-9]+' "$2" | sed 's/socket(//' | sort -u); do
    [[ " $families " == *" $family "* ]] || fail "$1: RestrictAddressFamilies= would refuse $family"
  done
  # And MemoryDenyWriteExecute=: no writable and executable mapping, no mprotect to executable.
  if grep -q '^MemoryDenyWriteExecute=yes' "deploy/systemd/$1" \
    && grep -qE 'mprotect\([^)]*PROT_EXEC|mmap\([^)]*(PROT_WRITE\|PROT_EXEC|PROT_EXEC\|PROT_WRITE)' "$2"; then
    fail "$1: MemoryDenyWriteExecute= would refuse a mapping it made"
  fi
  echo "deploy: $1: all $(printf '%s\n' "$used" | wc -l) system calls it made pass its SystemCallFilter=," \
    "its sockets ($(grep -oE 'socket\(AF_[A-Z0-9]+' "$2" | sed 's/socket(//' | sort -u | paste -sd, -)) its RestrictAddressFamilies=" >&2
}

# --- 1. Config schemas ------------------------------------------------------------------
step "config schemas"
schemas="$work/schemas"
mkdir -p "$schemas"
for kind in gateway ca admin; do
  "$bin" config schema --kind "$kind" >"$schemas/$kind.json"
  check-jsonschema --check-metaschema "$schemas/$kind.json" >/dev/null \
    || fail "the $kind schema is not a valid JSON Schema"
done

# Every YAML block of README.md, and the configs inside the Kubernetes ConfigMaps, as files;
# each named by the kind of config it is (by its top-level keys), or skipped with a message.
examples="$work/examples"
mkdir -p "$examples"
python3 - "$examples" <<'PY'
import pathlib, re, sys, yaml
out = pathlib.Path(sys.argv[1])
def kind(doc):
    if not isinstance(doc, dict):
        return None
    if "state_dir" in doc and "backend" in doc:
        return "ca"
    if "listen" in doc and "ca" in doc:
        return "admin"
    if {"listeners", "tenants", "upstreams"} & doc.keys():
        return "gateway"
    return None
blocks = re.findall(r"```yaml\n(.*?)```", pathlib.Path("README.md").read_text(), re.S)
for i, text in enumerate(blocks, 1):
    k = kind(yaml.safe_load(text))
    if k is None:
        print(f"deploy: README.md yaml block {i} is not a Portcullis config; skipped", file=sys.stderr)
        continue
    (out / f"readme-{i}.{k}.yaml").write_text(text)
for path in sorted(pathlib.Path("deploy/kubernetes").glob("*/configmap.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        for name, text in (doc.get("data") or {}).items():
            k = kind(yaml.safe_load(text))
            if k is not None:
                (out / f"k8s-{path.parent.name}-{name[:-5]}.{k}.yaml").write_text(text)
PY
for f in deploy/config/*.yaml deploy/container/*.yaml; do
  cp "$f" "$examples/$(basename "$(dirname "$f")")-$(basename "$f" .yaml).$(basename "$f" .yaml).yaml"
done
count=0
for f in "$examples"/*.yaml; do
  kind=${f%.yaml}
  kind=${kind##*.}
  check-jsonschema --schemafile "$schemas/$kind.json" "$f" >/dev/null \
    || { check-jsonschema --schemafile "$schemas/$kind.json" "$f" || true; fail "$(basename "$f") does not match the $kind schema"; }
  count=$((count + 1))
done
[ "$count" -ge 8 ] || fail "only $count example configs found"
echo "deploy: $count example configs match their schema" >&2

# The configs `portcullis demo` writes (README "Two commands") match too.
"$bin" demo --state "$work/demo" --port "$(free_port)" --upstream-port "$(free_port)" \
  --metrics-port "$(free_port)" >"$work/demo.out" 2>"$work/demo.log" </dev/null &
demo=$!
pids+=("$demo")
wait_for "grep -q 'State folder' '$work/demo.out'" 300 \
  || { tail -n 20 "$work/demo.log" >&2; fail "portcullis demo did not start"; }
kill "$demo"
check-jsonschema --schemafile "$schemas/gateway.json" "$work/demo/portcullis.yaml" >/dev/null \
  || fail "the demo's portcullis.yaml does not match the gateway schema"
check-jsonschema --schemafile "$schemas/ca.json" "$work/demo/ca.yaml" >/dev/null \
  || fail "the demo's ca.yaml does not match the CA schema"

# The schema refuses what serde refuses: an unknown key and a duration humantime cannot read.
printf 'listeners: []\nshutdown: { grace_period: 10s }\ntenant: []\n' >"$work/typo.yaml"
! check-jsonschema --schemafile "$schemas/gateway.json" "$work/typo.yaml" >/dev/null \
  || fail "the gateway schema accepted an unknown key"
! "$bin" check --config "$work/typo.yaml" >/dev/null 2>&1 || fail "check accepted an unknown key"
printf 'listeners: []\nshutdown: { grace_period: 10 seconds please }\n' >"$work/duration.yaml"
! check-jsonschema --schemafile "$schemas/gateway.json" "$work/duration.yaml" >/dev/null \
  || fail "the gateway schema accepted a bad duration"
printf 'listeners: []\nshutdown: { grace_period: 1h 30m }\n' >"$work/duration.yaml"
check-jsonschema --schemafile "$schemas/gateway.json" "$work/duration.yaml" >/dev/null \
  || fail "the gateway schema refused '1h 30m'"

# --- 2. systemd: README "Run it under systemd", in a scratch root --------------------------
step "systemd units"
root="$work/root"
deploy/systemd/install.sh --root "$root" --bin "$bin" 2>"$work/install.log" \
  || { cat "$work/install.log" >&2; fail "install.sh"; }
grep -q '^portcullis:' "$root/etc/passwd" || fail "sysusers: no portcullis user"
grep -q '^portcullis-ca:' "$root/etc/passwd" || fail "sysusers: no portcullis-ca user"
[ "$(stat -c %a "$root/etc/portcullis/credentials")" = 700 ] || fail "tmpfiles: credentials folder mode"
[ "$(stat -c %a "$root/etc/portcullis/gateway.yaml")" = 640 ] || fail "gateway.yaml mode"

# Each service requires its socket unit: `verify` finds it beside the copy.
cp deploy/systemd/portcullis.socket deploy/systemd/portcullis-admin.socket "$work/"
for unit in portcullis.service portcullis-admin.service; do
  line=$(systemd-analyze security --offline=true --threshold=20 "deploy/systemd/$unit" 2>&1 | tail -n 1) \
    || fail "$unit: exposure above 2.0: $line"
  echo "deploy: $unit: ${line#→ }" >&2
  # `verify` needs the binary where the unit says: check a copy pointing at this build.
  sed "s#/usr/local/bin/portcullis#$bin#g" "deploy/systemd/$unit" >"$work/$unit"
  systemd-analyze verify --man=no "$work/$unit" || fail "systemd-analyze verify $unit"
done
for unit in portcullis.socket portcullis-admin.socket; do
  systemd-analyze verify --man=no "$work/$unit" || fail "systemd-analyze verify $unit"
done
# The admin API's socket unit listens where admin.yaml does (the server refuses any other).
[ "$(sed -n 's/^ListenStream=//p' deploy/systemd/portcullis-admin.socket)" = "$(sed -n 's/^listen: *\([^ ]*\).*/\1/p' deploy/config/admin.yaml)" ] \
  || fail "portcullis-admin.socket's ListenStream= is not admin.yaml's listen"

# The paths the services see, inside the scratch root: the only change to the README steps.
in_root() { sed -e "s#/etc/portcullis#$root/etc/portcullis#g" -e "s#/var/lib/portcullis#$root/var/lib/portcullis#g" \
  -e "s#/run/credentials#$root/run/credentials#g" -e "s#/usr/local/bin/portcullis#$bin#g" "$@"; }
for f in gateway ca admin; do
  in_root "$root/etc/portcullis/$f.yaml" >"$work/$f.yaml" && cp "$work/$f.yaml" "$root/etc/portcullis/$f.yaml"
done

step "systemd walkthrough: CA in SoftHSM2, certificates, audit key, check"
export SOFTHSM2_CONF="$work/softhsm2.conf"
mkdir -p "$work/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$work/tokens" >"$SOFTHSM2_CONF"
pin=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
softhsm2-util --init-token --free --label portcullis-ca --pin "$pin" --so-pin "$pin" >/dev/null
printf %s "$pin" | install -m 0600 /dev/stdin "$root/etc/portcullis/credentials/hsm.pin"
# README: `ca init` and `ca issue` run as root, reading the PIN from the root-only file.
sed "s#$root/run/credentials/portcullis-admin.service#$root/etc/portcullis/credentials#" \
  "$root/etc/portcullis/ca.yaml" | install -m 0600 /dev/stdin "$root/etc/portcullis/ca-root.yaml"
# What systemd makes for the gateway (StateDirectory=portcullis) at its first start; the CA's
# folder is made by `ca init`, before its service ever starts.
mkdir -p "$root/var/lib/portcullis"
"$bin" ca init --config "$root/etc/portcullis/ca-root.yaml" >"$work/ca-init.out" 2>"$work/ca-init.err" \
  || { cat "$work/ca-init.err" >&2; fail "ca init"; }
grep -q 'ca init: done in' "$work/ca-init.err" || fail "ca init printed no elapsed time"
echo "deploy: $(grep 'ca init: done' "$work/ca-init.err")" >&2

issue() { # issue NAME PROFILE SUBJECT-ALT-NAME
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$work/$1.key" -out "$work/$1.csr" -addext "subjectAltName=$3" 2>/dev/null
  "$bin" ca issue --config "$root/etc/portcullis/ca-root.yaml" --csr "$work/$1.csr" --tenant "$4" \
    --profile "$2" --out "$work/$1.pem" >/dev/null 2>>"$work/ca.log" \
    || { cat "$work/ca.log" >&2; fail "ca issue $1"; }
}
issue server edge DNS:api.acme.example acme
issue frontend workloads URI:spiffe://acme.example/ns/prod/sa/frontend acme
state="$root/var/lib/portcullis-ca/state"
install -m 0644 "$work/server.pem" "$state/bundle.pem" "$state/crl.pem" "$root/etc/portcullis/tls/"
install -m 0640 "$work/server.key" "$root/etc/portcullis/tls/"
# The audit key: Ed25519 PKCS#8 (DER), root-only, handed over by LoadCredential=audit.key.
openssl genpkey -algorithm ed25519 -outform DER -out "$root/etc/portcullis/credentials/audit.key"
chmod 0600 "$root/etc/portcullis/credentials/audit.key"
# What systemd does at start: the credential, readable by the service only, in a read-only folder.
creds="$root/run/credentials/portcullis.service"
install -d -m 0700 "$creds"
install -m 0400 "$root/etc/portcullis/credentials/audit.key" "$creds/audit.key"
chmod 0500 "$creds"

# Loopback ports for the test instead of :443 and :9901, and a real upstream.
port=$(free_port) mport=$(free_port) uport=$(free_port)
sed -i -e "s#0.0.0.0:443#127.0.0.1:$port#" -e "s#127.0.0.1:9901#127.0.0.1:$mport#" \
  -e "s#127.0.0.1:8080#127.0.0.1:$uport#" "$root/etc/portcullis/gateway.yaml"
"$bin" check --config "$root/etc/portcullis/gateway.yaml" >/dev/null || fail "check gateway.yaml"

# The container and Kubernetes configs are complete too: check them with their files in place.
for f in "$examples"/k8s-*.gateway.yaml "$examples"/container-*.gateway.yaml; do
  croot="$work/croot-$(basename "$f" .yaml)"
  mkdir -p "$croot/etc/portcullis/tls" "$croot/run/portcullis/secrets" "$croot/run/secrets/portcullis"
  for n in tls.crt server.pem; do cp "$work/server.pem" "$croot/etc/portcullis/tls/$n"; done
  for n in tls.key server.key; do cp "$work/server.key" "$croot/etc/portcullis/tls/$n"; done
  for n in ca.crt bundle.pem; do cp "$state/bundle.pem" "$croot/etc/portcullis/tls/$n"; done
  cp "$root/etc/portcullis/credentials/audit.key" "$croot/run/portcullis/secrets/audit.key"
  cp "$root/etc/portcullis/credentials/audit.key" "$croot/run/secrets/portcullis/audit.key"
  sed -e "s#/etc/portcullis#$croot/etc/portcullis#g" -e "s#/run/#$croot/run/#g" \
    -e "s#/var/lib/portcullis#$croot/var/lib/portcullis#g" "$f" >"$croot/gateway.yaml"
  "$bin" check --config "$croot/gateway.yaml" >/dev/null || fail "check $(basename "$f")"
done

step "systemd walkthrough: serve with the unit's ExecStart, reload, metrics, stop"
"$bin" echo --listen "127.0.0.1:$uport" --name app 2>"$work/echo.log" &
pids+=($!)
exec_start=$(sed -n 's/^ExecStart=//p' "$work/portcullis.service")
exec_start=$(printf '%s' "$exec_start" | in_root)
# Traced: every system call it makes is compared below with the unit's SystemCallFilter=.
# shellcheck disable=SC2086 # the unit's command line, split as systemd splits it (no quotes)
strace -f -qq -o "$work/gateway.trace" $exec_start 2>"$work/gateway.log" &
tracer=$!
pids+=("$tracer")
wait_for "pgrep -P $tracer" 50 || fail "the gateway did not start under strace"
gw=$(pgrep -P "$tracer")
wait_for "'$bin' health http://127.0.0.1:$mport/readyz" 150 \
  || { tail -n 20 "$work/gateway.log" >&2; fail "the gateway never became ready"; }
# The container's HEALTHCHECK command, against the same listener.
health=$(sed -n 's/.*CMD \["\/usr\/local\/bin\/portcullis", "health", "\([^"]*\)"\].*/\1/p' deploy/container/Containerfile)
[ "$health" = "http://127.0.0.1:9901/healthz" ] || fail "Containerfile HEALTHCHECK not found"
"$bin" health "${health/9901/$mport}" >/dev/null || fail "portcullis health"
[ -s "$root/var/lib/portcullis/audit.pub" ] || fail "the audit public key was not written to audit.public_key"

# An mTLS request through the gateway, as the route's rule allows.
# Tried a few times: a full run once ended here silently (curl failed inside `$(…)` under
# `set -e`); a retry is said in the log with curl's exit codes, so it is seen, not hidden.
tries=""
for _ in 1 2 3 4 5; do
  code=$(curl -s -o "$work/body" -w '%{http_code}' --max-time 5 \
    --resolve "api.acme.example:$port:127.0.0.1" --cacert "$state/bundle.pem" \
    --cert "$work/frontend.pem" --key "$work/frontend.key" \
    "https://api.acme.example:$port/api/orders") && [ "$code" = 200 ] && break
  tries="$tries curl=$? http=${code:-none};"
  sleep 0.5
done
[ -z "$tries" ] || echo "deploy: the mTLS request was tried again:$tries" >&2
[ "${code:-}" = 200 ] \
  || { tail -n 20 "$work/gateway.log" >&2; fail "mTLS request through the gateway:$tries"; }

# Prometheus with the README's prometheus.yml: the alert rules load, the gateway is up.
python3 - "$work/prometheus.yml" "$repo/deploy/observability/alerts.yml" "$mport" <<'PY'
import pathlib, re, sys
readme = pathlib.Path("README.md").read_text()
block = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S)
             if b.startswith("# /etc/prometheus/prometheus.yml (on the gateway's host)"))
block = block.replace("/etc/prometheus/portcullis/alerts.yml", sys.argv[2])
block = block.replace("127.0.0.1:9901", f"127.0.0.1:{sys.argv[3]}")
block = block.replace("scrape_interval: 15s", "scrape_interval: 1s")
pathlib.Path(sys.argv[1]).write_text(block)
PY
promtool check config "$work/prometheus.yml" >/dev/null || fail "promtool check config (README prometheus.yml)"
pport=$(free_port)
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prometheus-data" \
  --web.listen-address="127.0.0.1:$pport" >/dev/null 2>"$work/prometheus.log" &
prom=$!
pids+=("$prom")
prom_query() { curl -sf --max-time 2 "http://127.0.0.1:$pport/api/v1/query" --data-urlencode "query=$1"; }
wait_for "prom_query 'up{job=\"portcullis\"} == 1' | grep -q '\"value\"'" 200 \
  || { tail -n 20 "$work/prometheus.log" >&2; fail "Prometheus never scraped the gateway"; }
rules=$(curl -sf --max-time 2 "http://127.0.0.1:$pport/api/v1/rules")
printf '%s' "$rules" | python3 tests/prometheus_rules.py "deploy: Prometheus scrapes the gateway" || fail "the alert rules did not load"
kill "$prom"

# ExecReload, as systemd runs it ($MAINPID is the gateway).
exec_reload=$(sed -n 's/^ExecReload=//p' "$work/portcullis.service")
${exec_reload//\$MAINPID/$gw}
wait_for "curl -sf http://127.0.0.1:$mport/metrics | grep -q 'portcullis_config_reloads_total{result=\"success\"} 1'" 100 \
  || fail "SIGHUP (ExecReload) did not reload"
curl -sf "http://127.0.0.1:$mport/metrics" | grep -q '^portcullis_requests_total' \
  || fail "/metrics has no request counter"

# systemctl stop: SIGTERM, a clean exit, and an audit log that verifies.
kill -TERM "$gw"
for _ in $(seq 100); do kill -0 "$gw" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$gw" 2>/dev/null || fail "the gateway did not stop within 10 s of SIGTERM"
wait "$tracer" || fail "the gateway exited non-zero after SIGTERM"
syscall_filter_check portcullis.service "$work/gateway.trace"
"$bin" audit verify "$root/var/lib/portcullis/audit" --key "$root/var/lib/portcullis/audit.pub" \
  >/dev/null 2>"$work/verify.err" || { cat "$work/verify.err" >&2; fail "audit verify"; }
grep -q "records in" "$work/verify.err" && grep -q "reading 1 segment file" "$work/verify.err" \
  || fail "audit verify printed no progress or elapsed time"
echo "deploy: $(grep 'audit verify:' "$work/verify.err")" >&2

step "systemd walkthrough: the CA's issuance API with the unit's ExecStart and its PIN credential"
acreds="$root/run/credentials/portcullis-admin.service"
install -d -m 0700 "$acreds"
install -m 0400 "$root/etc/portcullis/credentials/hsm.pin" "$acreds/hsm.pin"
aport=$(free_port) amport=$(free_port)
sed -i -e "s#0.0.0.0:9443#127.0.0.1:$aport#" -e "s#127.0.0.1:9902#127.0.0.1:$amport#" \
  "$root/etc/portcullis/admin.yaml"
"$bin" admin check --config "$root/etc/portcullis/admin.yaml" >/dev/null 2>>"$work/admin.log" \
  || { cat "$work/admin.log" >&2; fail "admin check"; }
admin_start=$(sed -n 's/^ExecStart=//p' "$work/portcullis-admin.service" | in_root)
# shellcheck disable=SC2086 # split as systemd splits it
strace -f -qq -o "$work/admin.trace" $admin_start 2>>"$work/admin.log" &
admin_tracer=$!
pids+=("$admin_tracer")
wait_for "pgrep -P $admin_tracer" 50 || fail "the admin API did not start under strace"
admin=$(pgrep -P "$admin_tracer")
wait_for "curl -sf http://127.0.0.1:$amport/metrics | grep -q portcullis_admin_" 150 \
  || { tail -n 20 "$work/admin.log" >&2; fail "the admin API never served"; }
# Its HTTPS listener, with the certificate it issued itself from the HSM-backed CA.
curl -s -o /dev/null --max-time 5 --resolve "ca.acme.example:$aport:127.0.0.1" \
  --cacert "$state/bundle.pem" "https://ca.acme.example:$aport/" \
  || fail "the admin API's TLS listener (self-issued certificate) refused the handshake"
kill -TERM "$admin"
for _ in $(seq 100); do kill -0 "$admin" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$admin" 2>/dev/null || fail "the admin API did not stop within 10 s of SIGTERM"
wait "$admin_tracer" || fail "the admin API exited non-zero after SIGTERM"
syscall_filter_check portcullis-admin.service "$work/admin.trace"
# Its audit log and key in its state folder (StateDirectory=portcullis-ca).
"$bin" audit verify "$root/var/lib/portcullis-ca/audit" --key "$root/var/lib/portcullis-ca/admin-audit.key.pub" \
  >/dev/null 2>>"$work/admin.log" || { tail -n 5 "$work/admin.log" >&2; fail "the admin API's audit log"; }

# --- 3. Container build file ------------------------------------------------------------
step "container: hadolint"
hadolint --failure-threshold warning deploy/container/Containerfile
grep -q '^USER 65532' deploy/container/Containerfile || fail "the image does not run as non-root"

# --- 4. Kubernetes manifests ------------------------------------------------------------
step "kubernetes: kubernetes-validate --strict"
manifests=()
for f in deploy/kubernetes/*/*.yaml; do
  if grep -q '^apiVersion: monitoring.coreos.com/' "$f"; then
    echo "deploy: $f is a Prometheus Operator resource (a CRD): no schema here, only its selector and port are checked" >&2
  else
    manifests+=("$f")
  fi
done
kubernetes-validate --strict --quiet "${manifests[@]}"
# What the schemas cannot see: that the objects of each folder refer to each other correctly
# (selectors match the pod labels, named ports exist, the HPA and PDB target the Deployment),
# and the ServiceMonitor's selector and port, which its CRD would not check either.
python3 - deploy/kubernetes/edge deploy/kubernetes/sidecar <<'PY' || fail "Kubernetes manifests do not fit together"
import pathlib, sys, yaml
def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())
for folder in map(pathlib.Path, sys.argv[1:]):
    docs = [d for f in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    (deploy,) = by_kind["Deployment"]
    pod = deploy["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert matches(deploy["spec"]["selector"]["matchLabels"], labels), f"{folder}: Deployment selector"
    containers = pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
    ports = {p["name"] for c in containers for p in c.get("ports", [])}
    for c in containers:
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            port = c.get(probe, {}).get("httpGet", {}).get("port")
            assert port is None or port in ports, f"{folder}: {c['name']} {probe} port {port}"
    mounts = {m["name"] for c in containers for m in c.get("volumeMounts", [])}
    volumes = {v["name"] for v in pod["spec"].get("volumes", [])}
    assert mounts <= volumes, f"{folder}: mounts without volumes: {mounts - volumes}"
    for cm in (v["configMap"]["name"] for v in pod["spec"]["volumes"] if "configMap" in v):
        assert cm in {d["metadata"]["name"] for d in by_kind["ConfigMap"]}, f"{folder}: ConfigMap {cm}"
    for svc in by_kind.get("Service", []):
        assert matches(svc["spec"]["selector"], labels), f"{folder}: Service {svc['metadata']['name']} selector"
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports, f"{folder}: Service targetPort {p['targetPort']}"
    for pdb in by_kind.get("PodDisruptionBudget", []):
        assert matches(pdb["spec"]["selector"]["matchLabels"], labels), f"{folder}: PDB selector"
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) == ("Deployment", deploy["metadata"]["name"]), f"{folder}: HPA target"
    for np in by_kind.get("NetworkPolicy", []):
        assert matches(np["spec"]["podSelector"]["matchLabels"], labels), f"{folder}: NetworkPolicy selector"
        numbers = {p["containerPort"] for c in containers for p in c.get("ports", [])}
        for rule in np["spec"].get("ingress", []):
            for p in rule.get("ports", []):
                assert p["port"] in numbers, f"{folder}: NetworkPolicy admits port {p['port']} nothing listens on"
    for sm in by_kind.get("ServiceMonitor", []):
        svcs = [s for s in by_kind["Service"] if matches(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert len(svcs) == 1, f"{folder}: ServiceMonitor selects {len(svcs)} Services"
        names = {p["name"] for p in svcs[0]["spec"]["ports"]}
        for e in sm["spec"]["endpoints"]:
            assert e["port"] in names, f"{folder}: ServiceMonitor port {e['port']}"
            assert e["path"] == "/metrics"
    print(f"deploy: {folder}: {len(docs)} objects refer to each other correctly", file=sys.stderr)
PY
# It catches a misspelled field (so a pass above means something).
sed 's/readOnlyRootFilesystem/readOnlyRootFilesytem/' deploy/kubernetes/edge/deployment.yaml >"$work/bad.yaml"
! kubernetes-validate --strict --quiet "$work/bad.yaml" >/dev/null 2>&1 \
  || fail "kubernetes-validate accepted a misspelled field"
for f in deploy/kubernetes/*/deployment.yaml; do
  grep -q 'readOnlyRootFilesystem: true' "$f" && grep -q 'runAsNonRoot: true' "$f" \
    || fail "$f: not read-only and non-root"
  ! grep -qE '^\s+(env|envFrom):' "$f" || fail "$f: secrets belong in files, not the environment"
done

# --- 5. Completions and man pages --------------------------------------------------------
step "completions and man pages"
"$bin" completions bash >"$work/portcullis.bash"
bash -n "$work/portcullis.bash" || fail "the bash completion script does not parse"
grep -q 'config' "$work/portcullis.bash" || fail "bash completion lacks the config command"
# shellcheck disable=SC1091
(source "$work/portcullis.bash" && complete -p portcullis >/dev/null) || fail "bash completion not registered"
for shell in zsh fish; do
  "$bin" completions "$shell" >"$work/completion.$shell" && grep -q portcullis "$work/completion.$shell" \
    || fail "$shell completion"
done
# A reader that goes away early is not a failure (nor a panic).
"$bin" completions zsh 2>"$work/pipe.err" | head -c 10 >/dev/null
[ ! -s "$work/pipe.err" ] || fail "completions into a closed pipe: $(cat "$work/pipe.err")"
man1="$root/usr/local/share/man/man1"
[ -s "$man1/portcullis-serve.1" ] || fail "no portcullis-serve.1"
if command -v man >/dev/null; then
  MANWIDTH=100 man -l "$man1/portcullis-serve.1" 2>/dev/null | grep -q -- '--config' \
    || fail "man -l portcullis-serve.1 does not show --config"
fi
for page in "$man1"/*.1; do
  warnings=$(groff -k -man -Tutf8 -ww -z "$page" 2>&1) || fail "groff $page"
  [ -z "$warnings" ] || fail "groff warns on $(basename "$page"): $warnings"
done
# --- 6. Grafana dashboard ----------------------------------------------------------------
step "grafana: the dashboard against @grafana/schema's Dashboard type (tsc --strict)"
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  [ -z "${PORTCULLIS_REQUIRE_TOOLS:-}" ] \
    || fail "node and npm are needed for the dashboard check (deploy/setup-debian.sh --test installs them)"
  echo "deploy: SKIPPED the dashboard check: node or npm is not installed (deploy/setup-debian.sh --test installs them)" >&2
else
  tests/grafana/check-dashboard.sh || fail "the dashboard does not match Grafana's schema"
  # It catches a broken panel (so a pass above means something).
  python3 - deploy/observability/portcullis-dashboard.json "$work/broken-dashboard.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
next(p for p in d["panels"] if p["type"] != "row")["gridPos"] = "x"
json.dump(d, open(sys.argv[2], "w"), indent=2)
PY
  ! tests/grafana/check-dashboard.sh "$work/broken-dashboard.json" >/dev/null 2>&1 \
    || fail "the dashboard check accepted a panel whose gridPos is a string"
fi

echo "deploy: all checks passed" >&2
