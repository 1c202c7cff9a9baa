#!/usr/bin/env bash
# Side-by-side benchmark: the echo upstream reached directly, Portcullis, nginx and HAProxy,
# all on loopback with the same certificates, the same upstream, the same load generator
# (portcullis-load) and the same CPU pinning. Each scenario alternates the targets round by
# round (direct portcullis nginx haproxy, direct portcullis nginx haproxy, ...) so that drift on
# a shared machine hits them alike; the tables give medians over rounds and ratios to direct.
#
#   bench/run.sh                   # everything, ~6-8 minutes after the build
#   ROUNDS=5 ROUND_SECS=10 bench/run.sh
#   BASELINE=/path/to/older/portcullis bench/run.sh   # adds that build as baseline-noaudit
#
# Knobs (environment): ROUNDS (3), ROUND_SECS (5), WARMUP_SECS (1), CONNS (32),
# NEWCONN_CONNS (16), OPEN_LOOP_CONNS (64), IDLE_CONNS (2000), HOLD_SECS (6),
# CALLGRIND_REQUESTS (2000, 0 skips the instruction count), PROXY_CPU (0), LOAD_CPU (1),
# BASE_PORT (18000), RESULTS (bench/RESULTS.md; "-" to only print), CARGO_TARGET_DIR.
# Needs: cargo, nginx, haproxy (installed with apt-get when missing and running as root),
# taskset (optional), valgrind (optional, for the instruction count).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-3}
ROUND_SECS=${ROUND_SECS:-5}
WARMUP_SECS=${WARMUP_SECS:-1}
CONNS=${CONNS:-32}
NEWCONN_CONNS=${NEWCONN_CONNS:-16}
OPEN_LOOP_CONNS=${OPEN_LOOP_CONNS:-64}
IDLE_CONNS=${IDLE_CONNS:-2000}
HOLD_SECS=${HOLD_SECS:-6}
CALLGRIND_REQUESTS=${CALLGRIND_REQUESTS:-2000}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-18000}
RESULTS=${RESULTS:-$ROOT/bench/RESULTS.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

ECHO_PORT=$((BASE_PORT + 81))
PCL_PORT=$((BASE_PORT + 443))
PCL_METRICS_PORT=$((BASE_PORT + 901))
NGINX_PORT=$((BASE_PORT + 444))
HAPROXY_PORT=$((BASE_PORT + 445))
CG_PORT=$((BASE_PORT + 446))
CG_METRICS_PORT=$((BASE_PORT + 902))
TARGETS=(direct portcullis portcullis-noaudit nginx haproxy)
PCL_NOAUDIT_PORT=$((BASE_PORT + 447))
BASELINE=${BASELINE:-}
BASE_NOAUDIT_PORT=$((BASE_PORT + 448))
BASE_NOAUDIT_METRICS_PORT=$((BASE_PORT + 904))
CG_BASE_PORT=$((BASE_PORT + 449))
CG_BASE_METRICS_PORT=$((BASE_PORT + 905))
if [[ -n $BASELINE ]]; then
  TARGETS=(direct portcullis portcullis-noaudit baseline-noaudit nginx haproxy)
fi
PCL_NOAUDIT_METRICS_PORT=$((BASE_PORT + 903))

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- processes we start, and only those, are stopped on exit --------------------------------
PIDS=()
WORK=""
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [[ -n "$WORK" && -z "${KEEP_WORK:-}" ]]; then
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
forget_pid() { # a process we started has ended: never signal its (reusable) id again
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
trap 'exit 130' INT TERM

# --- build ----------------------------------------------------------------------------------
log "building release binaries into $TARGET_DIR"
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --quiet \
  -p portcullis-bench --bin portcullis-load -p portcullis --bin portcullis)
LOAD="$TARGET_DIR/release/portcullis-load"
PCL="$TARGET_DIR/release/portcullis"

# --- peers ----------------------------------------------------------------------------------
install_if_missing() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing $pkg with apt-get"
    (apt-get install -y "$pkg" >/dev/null 2>&1 ||
      { apt-get update >/dev/null 2>&1 && apt-get install -y "$pkg" >/dev/null 2>&1; }) || true
  fi
  command -v "$cmd" >/dev/null 2>&1
}
NGINX_MISSING=""
HAPROXY_MISSING=""
install_if_missing nginx nginx || NGINX_MISSING="nginx not installed (apt-get install nginx failed)"
install_if_missing haproxy haproxy || HAPROXY_MISSING="haproxy not installed (apt-get install haproxy failed)"
NGINX=$(command -v nginx || true)
HAPROXY=$(command -v haproxy || true)

# --- CPU pinning ----------------------------------------------------------------------------
NCPU=$(nproc)
if command -v taskset >/dev/null 2>&1 && [[ $NCPU -ge 2 ]]; then
  PIN_SUT=(taskset -c "$PROXY_CPU")
  PIN_LOAD=(taskset -c "$LOAD_CPU")
  PINNING="core $PROXY_CPU: echo upstream + the proxy under test (each proxy runs 1 worker thread/process); core $LOAD_CPU: portcullis-load (1 thread)"
else
  PIN_SUT=()
  PIN_LOAD=()
  PINNING="no pinning (taskset missing or fewer than 2 CPUs)"
fi
log "pinning: $PINNING"

# Idle-connection probe and the proxies need many descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT=$(ulimit -n)
[[ $FD_LIMIT == unlimited ]] && FD_LIMIT=65536
# Each proxied connection may cost two descriptors (client side, upstream side).
PEER_MAXCONN=$(((FD_LIMIT - 200) / 2))
log "open-file limit: $FD_LIMIT (peers' connection limit: $PEER_MAXCONN)"
if [[ $((IDLE_CONNS + 200)) -gt $PEER_MAXCONN ]]; then
  log "warning: IDLE_CONNS=$IDLE_CONNS is close to the descriptor budget"
fi
LOADAVG_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

WORK=$(mktemp -d /tmp/portcullis-bench.XXXXXX)
chmod 755 "$WORK"
RECORDS="$WORK/records.jsonl"
: >"$RECORDS"
"$LOAD" certs --out "$WORK"
TLS_ARGS=(--ca "$WORK/ca.pem" --cert "$WORK/client.pem" --key "$WORK/client.key")
printf '{"order":{"id":"A-1042","customer":"bench","items":[' >"$WORK/body.json"
for i in $(seq 1 12); do
  printf '{"sku":"SKU-%04d","qty":%d,"price":"19.99","note":"standard item"},' "$i" "$i" >>"$WORK/body.json"
done
printf '{"sku":"SKU-LAST","qty":1,"price":"1.00","note":"end"}],"currency":"EUR"}}' >>"$WORK/body.json"
BODY_BYTES=$(wc -c <"$WORK/body.json")

url_of() {
  case $1 in
    direct) echo "http://127.0.0.1:$ECHO_PORT/bench/item" ;;
    portcullis) echo "https://127.0.0.1:$PCL_PORT/bench/item" ;;
    portcullis-noaudit) echo "https://127.0.0.1:$PCL_NOAUDIT_PORT/bench/item" ;;
    baseline-noaudit) echo "https://127.0.0.1:$BASE_NOAUDIT_PORT/bench/item" ;;
    nginx) echo "https://127.0.0.1:$NGINX_PORT/bench/item" ;;
    haproxy) echo "https://127.0.0.1:$HAPROXY_PORT/bench/item" ;;
  esac
}
tls_of() { [[ $1 == direct ]] || printf '%s\n' "${TLS_ARGS[@]}"; }

# Waits until one request to URL succeeds (plain or mTLS), up to ~N tenths of a second.
wait_ok() {
  local url=$1 tenths=$2
  shift 2
  for _ in $(seq 1 "$tenths"); do
    if "$LOAD" run "$url" "$@" -n 1 -c 1 --timeout 2s --json 2>/dev/null | grep -q '"ok":1,'; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# Sum of VmRSS (KiB) of a process and its direct children (nginx's master and worker).
rss_tree_kb() {
  local root=$1 total=0 st pid ppid rss
  for st in /proc/[0-9]*/status; do
    pid=${st#/proc/}
    pid=${pid%/status}
    ppid=$(awk '/^PPid:/{print $2}' "$st" 2>/dev/null || true)
    if [[ $pid == "$root" || $ppid == "$root" ]]; then
      rss=$(awk '/^VmRSS:/{print $2}' "$st" 2>/dev/null || true)
      total=$((total + ${rss:-0}))
    fi
  done
  echo "$total"
}

declare -A PID_OF FAIL_OF
start_bg() { # name, log file, command...
  local name=$1 logf=$2
  shift 2
  "$@" >"$logf" 2>&1 </dev/null &
  PIDS+=("$!")
  PID_OF[$name]=$!
}

# --- echo upstream --------------------------------------------------------------------------
start_bg echo "$WORK/echo.log" "${PIN_SUT[@]}" "$PCL" echo --listen "127.0.0.1:$ECHO_PORT" --name bench
wait_ok "http://127.0.0.1:$ECHO_PORT/healthz" 100 || { log "echo upstream did not start"; cat "$WORK/echo.log" >&2; exit 1; }

# --- Portcullis -----------------------------------------------------------------------------
write_pcl_config() { # file, port, metrics port, audit (on|off)
  cat >"$1" <<EOF
# Full pipeline as built today: mTLS + identity + access rules + routing + per-tenant and
# per-identity rate limits (configured far above the offered load, so never triggered), a
# body-size limit, DLP scanning request and response bodies (the bench bodies hold nothing
# it detects, so it inspects every byte and acts on none), and (audit on) the fail-closed
# audit log: each request's admission record fsynced before it is forwarded.
listeners:
  - name: public
    address: 127.0.0.1:$2
    tls: { certificate: server.pem, private_key: server.key, client_auth: required, client_ca: ca.pem }
metrics: { address: 127.0.0.1:$3 }
shutdown: { grace_period: 1s }
upstreams:
  - name: echo
    targets: [127.0.0.1:$ECHO_PORT]
tenants:
  - name: bench
    routes:
      - name: all
        path_prefix: /
        upstream: echo
        access:
          - id: bench-client
            spiffe_id: [spiffe://bench.local/ns/bench/sa/client]
    limits:
      rate: { requests: 4000000, per: 1s }
      per_identity: { requests: 4000000, per: 1s }
      max_request_body: 1048576
    dlp:
      request: { card_number: block, us_ssn: redact, private_key: block, aws_secret_key: block }
      response: { card_number: redact, us_ssn: redact, private_key: block, aws_secret_key: block }
EOF
  if [[ ${4:-on} == on ]]; then
    cat >>"$1" <<EOF
audit:
  directory: $1.audit
  signing_key: $1.audit.key
  mode: fail-closed
EOF
  fi
}
write_pcl_config "$WORK/portcullis.yaml" "$PCL_PORT" "$PCL_METRICS_PORT"
# Default log level (info): Portcullis writes its access log line per request, like the peers.
start_bg portcullis "$WORK/portcullis.log" "${PIN_SUT[@]}" "$PCL" serve --config "$WORK/portcullis.yaml"
wait_ok "$(url_of portcullis)" 150 "${TLS_ARGS[@]}" || FAIL_OF[portcullis]="portcullis did not become ready (see its log)"
write_pcl_config "$WORK/portcullis-noaudit.yaml" "$PCL_NOAUDIT_PORT" "$PCL_NOAUDIT_METRICS_PORT" off
start_bg portcullis-noaudit "$WORK/portcullis-noaudit.log" "${PIN_SUT[@]}" "$PCL" serve --config "$WORK/portcullis-noaudit.yaml"
wait_ok "$(url_of portcullis-noaudit)" 150 "${TLS_ARGS[@]}" || FAIL_OF[portcullis-noaudit]="portcullis-noaudit did not become ready (see its log)"
if [[ -n $BASELINE ]]; then
  write_pcl_config "$WORK/baseline-noaudit.yaml" "$BASE_NOAUDIT_PORT" "$BASE_NOAUDIT_METRICS_PORT" off
  start_bg baseline-noaudit "$WORK/baseline-noaudit.log" "${PIN_SUT[@]}" "$BASELINE" serve --config "$WORK/baseline-noaudit.yaml"
  wait_ok "$(url_of baseline-noaudit)" 150 "${TLS_ARGS[@]}" || FAIL_OF[baseline-noaudit]="baseline-noaudit did not become ready (see its log)"
fi

# --- nginx ----------------------------------------------------------------------------------
if [[ -z $NGINX_MISSING ]]; then
  mkdir -p "$WORK/nginx-tmp"
  cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
worker_rlimit_nofile $FD_LIMIT;
events { worker_connections $PEER_MAXCONN; }
http {
  access_log $WORK/nginx-access.log;
  client_body_temp_path $WORK/nginx-tmp/body;
  proxy_temp_path $WORK/nginx-tmp/proxy;
  fastcgi_temp_path $WORK/nginx-tmp/fastcgi;
  uwsgi_temp_path $WORK/nginx-tmp/uwsgi;
  scgi_temp_path $WORK/nginx-tmp/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  upstream echo {
    server 127.0.0.1:$ECHO_PORT;
    keepalive 64;
    keepalive_requests 10000000;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT ssl http2;
    ssl_certificate $WORK/server.pem;
    ssl_certificate_key $WORK/server.key;
    ssl_client_certificate $WORK/ca.pem;
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Client-Subject \$ssl_client_s_dn;
    }
  }
}
EOF
  start_bg nginx "$WORK/nginx.log" "${PIN_SUT[@]}" "$NGINX" -e "$WORK/nginx-error.log" -p "$WORK" -c "$WORK/nginx.conf"
  wait_ok "$(url_of nginx)" 100 "${TLS_ARGS[@]}" || FAIL_OF[nginx]="nginx did not become ready: $(tail -n 2 "$WORK/nginx-error.log" 2>/dev/null | tr '\n' ' ')"
else
  FAIL_OF[nginx]=$NGINX_MISSING
fi

# --- HAProxy --------------------------------------------------------------------------------
if [[ -z $HAPROXY_MISSING ]]; then
  cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn $PEER_MAXCONN
  log stderr format raw local0
defaults
  mode http
  log global
  option httplog
  option http-keep-alive
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
frontend fe
  bind 127.0.0.1:$HAPROXY_PORT ssl crt $WORK/server-bundle.pem ca-file $WORK/ca.pem verify required alpn h2,http/1.1
  http-request set-header X-Client-Subject %[ssl_c_s_dn]
  default_backend echo
backend echo
  http-reuse always
  server echo 127.0.0.1:$ECHO_PORT
EOF
  start_bg haproxy "$WORK/haproxy.log" "${PIN_SUT[@]}" "$HAPROXY" -db -f "$WORK/haproxy.cfg"
  wait_ok "$(url_of haproxy)" 100 "${TLS_ARGS[@]}" || FAIL_OF[haproxy]="haproxy did not become ready: $(tail -n 2 "$WORK/haproxy.log" | tr '\n' ' ')"
else
  FAIL_OF[haproxy]=$HAPROXY_MISSING
fi

alive() { # target: is it usable right now? (sets FAIL_OF when it died)
  local t=$1
  [[ $t == direct ]] && return 0
  [[ -n ${FAIL_OF[$t]:-} ]] && return 1
  if ! kill -0 "${PID_OF[$t]}" 2>/dev/null; then
    FAIL_OF[$t]="$t exited during the run (see its log)"
    return 1
  fi
  return 0
}

record_failure() { # scenario target round reason
  local reason=${4//\"/\'}
  printf '{"scenario":"%s","target":"%s","round":%s,"failure":"%s"}\n' "$1" "$2" "$3" "$reason" >>"$RECORDS"
}

# One measured run of portcullis-load; appends its JSON report to the records.
measure() { # scenario target round load-args...
  local scenario=$1 t=$2 round=$3 out
  shift 3
  if ! alive "$t"; then
    record_failure "$scenario" "$t" "$round" "${FAIL_OF[$t]}"
    return 0
  fi
  local -a tls
  mapfile -t tls < <(tls_of "$t")
  if out=$("${PIN_LOAD[@]}" "$LOAD" run "$(url_of "$t")" "${tls[@]}" --json \
    --duration "${ROUND_SECS}s" --warmup "${WARMUP_SECS}s" "$@" 2>"$WORK/load.err"); then
    printf '{"scenario":"%s","target":"%s","round":%s,"report":%s}\n' "$scenario" "$t" "$round" "$out" >>"$RECORDS"
    log "$scenario $t round $round: $(grep -o '"rps":[0-9.]*' <<<"$out") $(grep -o '"errors_total":[0-9]*' <<<"$out")"
  else
    record_failure "$scenario" "$t" "$round" "load generator failed: $(tr '\n' ' ' <"$WORK/load.err")"
  fi
}

scenario() { # name load-args...
  local name=$1 round t
  shift
  for round in $(seq 1 "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
      measure "$name" "$t" "$round" "$@"
    done
  done
}

# BENCH_COMMIT names the source when ROOT is an exported tree rather than a git checkout.
COMMIT=${BENCH_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}
if [[ -z ${BENCH_COMMIT:-} ]] && ! git -C "$ROOT" diff --quiet HEAD -- gateway policy src ca 2>/dev/null; then
  COMMIT="$COMMIT with uncommitted changes"
fi
START_TS=$(date -u +%Y-%m-%dT%H:%M:%SZ)
log "scenario: keep-alive GET"
scenario ka-get --connections "$CONNS"
log "scenario: keep-alive POST ($BODY_BYTES bytes of JSON)"
scenario ka-post --connections "$CONNS" --body "$WORK/body.json"
log "scenario: new connection per request"
scenario new-conn --new-conn --connections "$NEWCONN_CONNS"
if RATE=$("$LOAD" summarize --records "$RECORDS" --half-rate-of ka-get 2>"$WORK/rate.err"); then
  log "scenario: open loop at $RATE req/s"
  scenario open-loop --rate "$RATE" --connections "$OPEN_LOOP_CONNS"
else
  RATE=""
  for t in "${TARGETS[@]}"; do
    record_failure open-loop "$t" 1 "no rate: $(tr '\n' ' ' <"$WORK/rate.err")"
  done
fi

# --- memory per idle connection -------------------------------------------------------------
log "scenario: $IDLE_CONNS idle mTLS connections per proxy"
for t in portcullis nginx haproxy; do
  if ! alive "$t"; then
    record_failure idle-memory "$t" 1 "${FAIL_OF[$t]}"
    continue
  fi
  before=$(rss_tree_kb "${PID_OF[$t]}")
  "${PIN_LOAD[@]}" "$LOAD" hold "$(url_of "$t")" "${TLS_ARGS[@]}" --connections "$IDLE_CONNS" \
    --for "${HOLD_SECS}s" >"$WORK/hold-$t.out" 2>"$WORK/hold-$t.err" &
  hold_pid=$!
  PIDS+=("$hold_pid")
  for _ in $(seq 1 600); do
    [[ -s "$WORK/hold-$t.out" ]] && break
    kill -0 "$hold_pid" 2>/dev/null || break
    sleep 0.1
  done
  sleep 1
  during=$(rss_tree_kb "${PID_OF[$t]}")
  wait "$hold_pid" || true
  forget_pid "$hold_pid"
  first=$(sed -n 1p "$WORK/hold-$t.out")
  still=$(sed -n 2p "$WORK/hold-$t.out" | grep -o '[0-9]*' || true)
  if [[ -z $first ]]; then
    record_failure idle-memory "$t" 1 "hold failed: $(tr '\n' ' ' <"$WORK/hold-$t.err")"
    continue
  fi
  printf '{"scenario":"idle-memory","target":"%s","round":1,"idle":%s}\n' "$t" \
    "${first%\}},\"rss_before_kb\":$before,\"rss_during_kb\":$during,\"still_open\":${still:-null}}" >>"$RECORDS"
  log "idle-memory $t: $first before=${before}KiB during=${during}KiB still_open=${still:-?}"
  sleep 1
done
END_TS=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOADAVG_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- instruction count per proxied request (callgrind) -------------------------------------
# instructions BINARY NAME PORT METRICS_PORT AUDIT(on|off): one line saying how many
# instructions one keep-alive GET costs that build under callgrind.
instructions() {
  local bin=$1 name=$2 port=$3 mport=$4 audit=$5 dir="$WORK/cg-$2" ok ir line
  mkdir -p "$dir"
  cp "$WORK"/{ca.pem,server.pem,server.key} "$dir/"
  write_pcl_config "$dir/portcullis.yaml" "$port" "$mport" "$audit"
  start_bg "cg-$name" "$dir/portcullis.log" "${PIN_SUT[@]}" valgrind --tool=callgrind \
    --callgrind-out-file="$dir/callgrind.out.%p" "$bin" serve --config "$dir/portcullis.yaml"
  local url="https://127.0.0.1:$port/bench/item"
  if wait_ok "$url" 1200 "${TLS_ARGS[@]}"; then
    # Warm the connection pools and caches, then count only the measured batch.
    "${PIN_LOAD[@]}" "$LOAD" run "$url" "${TLS_ARGS[@]}" -c 1 -n 200 --duration 120s >/dev/null
    callgrind_control -z "${PID_OF[cg-$name]}" >/dev/null
    "${PIN_LOAD[@]}" "$LOAD" run "$url" "${TLS_ARGS[@]}" -c 1 -n "$CALLGRIND_REQUESTS" \
      --duration 600s --json >"$dir/batch.json"
    callgrind_control -d "${PID_OF[cg-$name]}" >/dev/null
    sleep 1
    ok=$(grep -o '"ok":[0-9]*' "$dir/batch.json" | grep -o '[0-9]*')
    ir=$(grep -h '^summary:\|^totals:' "$dir"/callgrind.out.* 2>/dev/null | awk '{print $2}' | sort -n | tail -n 1)
    if [[ -n $ir && ${ok:-0} -gt 0 ]]; then
      line="$((ir / ok)) instructions per proxied request (Ir $ir over $ok keep-alive GETs on one mTLS connection, all threads, counters zeroed after a 200-request warm-up)"
    else
      line="failed: no callgrind totals (ok=${ok:-0})"
    fi
  else
    line="failed: $name under valgrind did not become ready"
  fi
  kill -TERM "${PID_OF[cg-$name]}" 2>/dev/null || true
  wait "${PID_OF[cg-$name]}" 2>/dev/null || true
  forget_pid "${PID_OF[cg-$name]}"
  echo "$line"
}

CALLGRIND_LINE="not measured (CALLGRIND_REQUESTS=0)"
BASELINE_CALLGRIND_LINE=""
if [[ $CALLGRIND_REQUESTS -gt 0 ]]; then
  if command -v valgrind >/dev/null 2>&1 && command -v callgrind_control >/dev/null 2>&1; then
    log "instruction count: Portcullis under callgrind, $CALLGRIND_REQUESTS keep-alive GETs"
    CALLGRIND_LINE=$(instructions "$PCL" portcullis "$CG_PORT" "$CG_METRICS_PORT" on)
    if [[ -n $BASELINE ]]; then
      log "instruction count: this build and the baseline without audit"
      NOAUDIT_IR=$(instructions "$PCL" portcullis-noaudit "$CG_PORT" "$CG_METRICS_PORT" off)
      BASE_IR=$(instructions "$BASELINE" baseline-noaudit "$CG_BASE_PORT" "$CG_BASE_METRICS_PORT" off)
      BASELINE_CALLGRIND_LINE="Without audit, this build: $NOAUDIT_IR. Baseline ($BASELINE): $BASE_IR."
    fi
  else
    CALLGRIND_LINE="not measured: valgrind/callgrind_control not installed (apt-get install valgrind)"
  fi
  log "instructions: $CALLGRIND_LINE $BASELINE_CALLGRIND_LINE"
fi

# --- report ---------------------------------------------------------------------------------
BASELINE_NOTE=""
if [[ -n $BASELINE ]]; then
  BASELINE_NOTE="**baseline-noaudit** is an earlier build ($BASELINE) with the portcullis-noaudit configuration: the pair gives what the changes since that build cost, in the same run."
fi
TABLES=$("$LOAD" summarize --records "$RECORDS")
CPU_MODEL=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
NGINX_V=$({ [[ -n $NGINX ]] && "$NGINX" -v 2>&1; } || echo "nginx: not installed")
HAPROXY_V=$({ [[ -n $HAPROXY ]] && "$HAPROXY" -v 2>&1 | head -n 1; } || echo "haproxy: not installed")
RUSTC_V=$(rustc -V)
REPORT=$(
  cat <<EOF
# Portcullis benchmark results

Generated by \`bench/run.sh\` — $START_TS to $END_TS.

**What "portcullis" runs today:** the full pipeline as built = mTLS + identity (SPIFFE ID from
the client certificate) + access rules + routing + per-tenant and per-identity rate limits
(configured far above the offered load, never triggered) + DLP on request and response bodies
(card numbers, SSNs, private keys, AWS keys; nothing in the bench bodies matches) + per-request
access log + the fail-closed audit log (every allowed request's admission record written and
fsynced before forwarding, a completion record after), at commit $COMMIT.
**portcullis-noaudit** is the same configuration without the audit section: the pair gives the
audit log's cost in the same run.
$BASELINE_NOTE

## Machine and versions

- CPUs: $NCPU × $CPU_MODEL; $(awk '/MemTotal/{printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo); kernel $(uname -r)
- Load average (1/5/15 min) before: $LOADAVG_BEFORE; after: $LOADAVG_AFTER. The machine is shared:
  other builds may run on the same cores, which is why only ratios within one run are reported.
- Pinning: $PINNING
- $RUSTC_V; portcullis and portcullis-load built with \`cargo build --release\`
- $NGINX_V
- $HAPROXY_V
- TLS libraries: Portcullis rustls 0.23 (ring); nginx and HAProxy $(openssl version 2>/dev/null || echo "OpenSSL (version unknown)") (Debian's)
- Settings: $ROUNDS rounds × $ROUND_SECS s (+$WARMUP_SECS s warm-up) per target per scenario, targets
  alternated within each round; keep-alive $CONNS connections; new-connection $NEWCONN_CONNS loops;
  open loop $OPEN_LOOP_CONNS connections${RATE:+ at $RATE req/s}; POST body $BODY_BYTES bytes of JSON;
  $IDLE_CONNS idle connections held ${HOLD_SECS}s. TLS 1.3, ECDSA P-256 certificates from one dev CA,
  no session resumption (every new connection is a full handshake).
- Peers: nginx and HAProxy terminate mTLS (verify required, same CA), proxy to the same echo
  upstream over keep-alive HTTP/1.1, set a client-subject header and write an access log;
  1 worker each. Portcullis: 1 worker thread (pingora sizes it from the 1-CPU affinity).

## Results

How to read: **direct** is plain HTTP straight to the echo upstream (no TLS, no proxy): the
physical limit. The proxies share core $PROXY_CPU with the echo upstream, so a ratio to direct
includes the upstream's own share of that core. Medians over rounds; "rounds min–max" shows how
much the shared machine moved between rounds. Closed-loop latencies (keep-alive, new connection)
mostly measure queueing at $CONNS or $NEWCONN_CONNS requests in flight; the open-loop table is the
latency one.

$TABLES

## Instruction count per proxied request (Portcullis, callgrind)

$CALLGRIND_LINE
$BASELINE_CALLGRIND_LINE

## Exact commands

\`\`\`
$(printf '%q ' "$0") # with ROUNDS=$ROUNDS ROUND_SECS=$ROUND_SECS WARMUP_SECS=$WARMUP_SECS CONNS=$CONNS IDLE_CONNS=$IDLE_CONNS
# per target and round, e.g. Portcullis keep-alive GET:
${PIN_LOAD[*]} portcullis-load run https://127.0.0.1:$PCL_PORT/bench/item --ca ca.pem --cert client.pem --key client.key --json --duration ${ROUND_SECS}s --warmup ${WARMUP_SECS}s --connections $CONNS
#   POST: add --body body.json; handshakes: --new-conn --connections $NEWCONN_CONNS; open loop: --rate ${RATE:-R} --connections $OPEN_LOOP_CONNS
#   idle memory: portcullis-load hold URL --ca … --connections $IDLE_CONNS --for ${HOLD_SECS}s, VmRSS of the proxy's processes before and while holding
#   instructions: valgrind --tool=callgrind portcullis serve …; callgrind_control -z after 200 warm-up requests; $CALLGRIND_REQUESTS requests; callgrind_control -d
\`\`\`
EOF
)
printf '%s\n' "$REPORT"
if [[ $RESULTS != "-" ]]; then
  printf '%s\n' "$REPORT" >"$RESULTS"
  log "wrote $RESULTS"
fi
