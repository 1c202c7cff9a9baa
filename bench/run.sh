#!/usr/bin/env bash
# Side-by-side benchmark: the echo upstream reached directly, Portcullis (with and without its
# audit log), a bare pingora mTLS proxy (portcullis-bare-pingora: the framework floor), nginx
# and HAProxy, all on loopback with the same certificates, the same upstream, the same load
# generator (portcullis-load) and the same CPU pinning. Each scenario alternates the targets
# round by round (direct portcullis ... haproxy, direct portcullis ... haproxy, ...) so that
# drift on a shared machine hits them alike; the tables give medians over rounds, the ratio to
# direct, and the median of per-round ratios to nginx and to bare pingora.
#
# Scenarios, one worker each (proxy on core PROXY_CPU, load generator on LOAD_CPU): keep-alive
# GET, keep-alive POST, HTTP/2 keep-alive GET (H2_CONNS connections x H2_STREAMS streams),
# new connection per request, open loop, idle-connection memory. Then keep-alive GET with two
# workers per proxy on both CPUs, shared with the load generator (TWO_WORKERS=0 skips it).
# Then instructions per request under callgrind: Portcullis with and without audit, bare
# pingora, nginx, and Portcullis with a bearer token, with HTTP/2 to the upstream and through a
# sidecar's egress listener.
#
# portcullis-bearer is portcullis-noaudit with the benched route on `authentication: oidc`
# (a tenant identity provider: portcullis-bench-idp, a static provider on loopback with a
# certificate of the bench CA; an access rule on the token's `groups`): every request carries
# `Authorization: Bearer` with the same token, verified once and then served from the cache.
# It runs in the keep-alive GET scenario and under callgrind, next to portcullis-noaudit.
# So do two more variants of portcullis-noaudit:
# - portcullis-h2up: the echo upstream on `protocol: http2` (h2c: `portcullis echo` speaks
#   HTTP/2 with prior knowledge and HTTP/1.1 on one port), HTTP/1.1 over mTLS from the client;
# - portcullis-egress: a sidecar's `egress:` listener on loopback, `workload:` the bench client's
#   SPIFFE ID (so the same access rule applies), the load generator sending plain HTTP/1.1 with
#   `Host: echo.bench`, the route matched by that host, forwarded to the echo over plain HTTP
#   (comparable to direct; a real sidecar would originate mTLS to the remote peer).
#
#   bench/run.sh                   # everything: ~15 minutes after the build
#   ROUNDS=5 ROUND_SECS=10 bench/run.sh
#   ROUNDS=1 ROUND_SECS=2 CALLGRIND_REQUESTS=300 RESULTS=- bench/run.sh   # a quick check
#   BASELINE=/path/to/older/portcullis bench/run.sh   # adds that build as baseline-noaudit
#     (a build that reads the listener `connections:` section, commit cdf897b or later)
#
# Knobs (environment): ROUNDS (3), ROUND_SECS (5), WARMUP_SECS (1), CONNS (32),
# NEWCONN_CONNS (16), OPEN_LOOP_CONNS (64), H2_CONNS (4), H2_STREAMS (8), IDLE_CONNS (2000),
# HOLD_SECS (6), TWO_WORKERS (1), LOAD_THREADS_2W (2), CALLGRIND_REQUESTS (2000, 0 skips the
# instruction count), NOISY (1; 0 skips the noisy-neighbour scenario, bench/noisy.sh),
# QUIET_RATE (300), NOISY_LIMIT (200), NOISY_CONNS (32), NOISY_SECS (5), NOISY_ROUNDS (3:
# rounds per target of both neighbour scenarios, medians reported), HEAVY (1; 0 skips
# the expensive-but-allowed neighbour of bench/noisy.sh), HEAVY_BYTES (65536), HEAVY_CONNS
# (32), FAIR_SLOTS ("2 8": fairness.max_in_flight, one portcullis-fairN per value), PROXY_CPU (0),
# LOAD_CPU (1), BASE_PORT (18000), RESULTS (bench/RESULTS.md; "-" to only print),
# CARGO_TARGET_DIR.
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
H2_CONNS=${H2_CONNS:-4}
H2_STREAMS=${H2_STREAMS:-8}
IDLE_CONNS=${IDLE_CONNS:-2000}
HOLD_SECS=${HOLD_SECS:-6}
TWO_WORKERS=${TWO_WORKERS:-1}
LOAD_THREADS_2W=${LOAD_THREADS_2W:-2}
CALLGRIND_REQUESTS=${CALLGRIND_REQUESTS:-2000}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-18000}
RESULTS=${RESULTS:-$ROOT/bench/RESULTS.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BASELINE=${BASELINE:-}
NOISY=${NOISY:-1}
QUIET_RATE=${QUIET_RATE:-300}
NOISY_LIMIT=${NOISY_LIMIT:-200}
NOISY_CONNS=${NOISY_CONNS:-32}
NOISY_SECS=${NOISY_SECS:-5}
NOISY_ROUNDS=${NOISY_ROUNDS:-3}
HEAVY=${HEAVY:-1}
HEAVY_BYTES=${HEAVY_BYTES:-65536}
HEAVY_CONNS=${HEAVY_CONNS:-32}
FAIR_SLOTS=${FAIR_SLOTS:-2 8}

ECHO_PORT=$((BASE_PORT + 81))
CG_PORT=$((BASE_PORT + 446))
CG_METRICS_PORT=$((BASE_PORT + 902))
CG_BASE_PORT=$((BASE_PORT + 449))
CG_BASE_METRICS_PORT=$((BASE_PORT + 905))
IDP_PORT=$((BASE_PORT + 950))
# portcullis-egress under callgrind: its egress listener (its mTLS listener is CG_PORT).
CG_EGRESS_PORT=$((BASE_PORT + 455))
# The host portcullis-egress routes to the echo by (the load generator's Host header).
EGRESS_HOST=echo.bench
# The proxies' ports; the two-worker set runs on its own (set_ports 20), so a lingering socket
# of the one-worker set cannot get in its way.
set_ports() { # shift
  PCL_PORT=$((BASE_PORT + 443 + $1))
  NGINX_PORT=$((BASE_PORT + 444 + $1))
  HAPROXY_PORT=$((BASE_PORT + 445 + $1))
  PCL_NOAUDIT_PORT=$((BASE_PORT + 447 + $1))
  BASE_NOAUDIT_PORT=$((BASE_PORT + 448 + $1))
  PINGORA_PORT=$((BASE_PORT + 450 + $1))
  PCL_BEARER_PORT=$((BASE_PORT + 451 + $1))
  PCL_H2UP_PORT=$((BASE_PORT + 452 + $1))
  # portcullis-egress: its (unused) mTLS listener, and the egress listener the load goes to.
  PCL_EGRESS_PORT=$((BASE_PORT + 453 + $1))
  PCL_EGRESS_OUT_PORT=$((BASE_PORT + 454 + $1))
  PCL_TRACED0_PORT=$((BASE_PORT + 456 + $1))
  PCL_TRACED_PORT=$((BASE_PORT + 457 + $1))
  PCL_TRACED0_METRICS_PORT=$((BASE_PORT + 909 + $1))
  PCL_TRACED_METRICS_PORT=$((BASE_PORT + 910 + $1))
  PCL_METRICS_PORT=$((BASE_PORT + 901 + $1))
  PCL_NOAUDIT_METRICS_PORT=$((BASE_PORT + 903 + $1))
  BASE_NOAUDIT_METRICS_PORT=$((BASE_PORT + 904 + $1))
  PCL_BEARER_METRICS_PORT=$((BASE_PORT + 906 + $1))
  PCL_H2UP_METRICS_PORT=$((BASE_PORT + 907 + $1))
  PCL_EGRESS_METRICS_PORT=$((BASE_PORT + 908 + $1))
}
set_ports 0
PROXIES=(portcullis portcullis-noaudit pingora nginx haproxy)
if [[ -n $BASELINE ]]; then
  PROXIES=(portcullis portcullis-noaudit baseline-noaudit pingora nginx haproxy)
fi
TARGETS=(direct "${PROXIES[@]}")
# Keep-alive GET (one worker) also runs these variants, next to portcullis-noaudit.
VARIANTS=(portcullis-bearer portcullis-h2up portcullis-egress portcullis-traced0 portcullis-traced)
KA_GET_TARGETS=()
for t in "${TARGETS[@]}"; do
  KA_GET_TARGETS+=("$t")
  if [[ $t == portcullis-noaudit ]]; then KA_GET_TARGETS+=("${VARIANTS[@]}"); fi
done

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

# --- build (once; cargo reuses it when nothing changed) --------------------------------------
log "building release binaries into $TARGET_DIR"
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --quiet \
  -p portcullis-bench --bin portcullis-load --bin portcullis-bare-pingora --bin portcullis-bench-idp \
  -p portcullis --bin portcullis)
LOAD="$TARGET_DIR/release/portcullis-load"
PCL="$TARGET_DIR/release/portcullis"
BARE="$TARGET_DIR/release/portcullis-bare-pingora"
IDP="$TARGET_DIR/release/portcullis-bench-idp"

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
  PIN_BOTH=(taskset -c "$PROXY_CPU,$LOAD_CPU")
  PINNING="core $PROXY_CPU: echo upstream + the proxy under test (each proxy runs 1 worker thread/process); core $LOAD_CPU: portcullis-load (1 thread)"
  PINNING_2W="cores $PROXY_CPU,$LOAD_CPU shared by everything: the proxy under test (2 worker threads/processes), the echo upstream (1 thread) and portcullis-load ($LOAD_THREADS_2W threads), placed by the kernel's scheduler; so a proxy that needs less CPU per request leaves more to the load generator"
else
  PIN_SUT=()
  PIN_LOAD=()
  PIN_BOTH=()
  PINNING="no pinning (taskset missing or fewer than 2 CPUs)"
  PINNING_2W=$PINNING
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
    portcullis-bearer) echo "https://127.0.0.1:$PCL_BEARER_PORT/bench/item" ;;
    portcullis-h2up) echo "https://127.0.0.1:$PCL_H2UP_PORT/bench/item" ;;
    portcullis-egress) echo "http://127.0.0.1:$PCL_EGRESS_OUT_PORT/bench/item" ;;
    portcullis-traced0) echo "https://127.0.0.1:$PCL_TRACED0_PORT/bench/item" ;;
    portcullis-traced) echo "https://127.0.0.1:$PCL_TRACED_PORT/bench/item" ;;
    baseline-noaudit) echo "https://127.0.0.1:$BASE_NOAUDIT_PORT/bench/item" ;;
    pingora) echo "https://127.0.0.1:$PINGORA_PORT/bench/item" ;;
    nginx) echo "https://127.0.0.1:$NGINX_PORT/bench/item" ;;
    haproxy) echo "https://127.0.0.1:$HAPROXY_PORT/bench/item" ;;
  esac
}
# The load generator's TLS arguments (none for plain HTTP), and the bearer token or the Host
# header where the target wants one.
tls_of() {
  case $1 in
    direct) ;;
    portcullis-egress) printf '%s\n' --header "Host: $EGRESS_HOST" ;;
    portcullis-bearer) printf '%s\n' "${TLS_ARGS[@]}" --bearer-file "$WORK/token" ;;
    *) printf '%s\n' "${TLS_ARGS[@]}" ;;
  esac
}

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

# Stops one process started with start_bg (TERM, then KILL after 5 s) and forgets it.
stop_bg() { # name
  local pid=${PID_OF[$1]:-}
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
  unset 'PID_OF[$1]'
}

# --- the bench identity provider (for portcullis-bearer) -----------------------------------
# Serves its discovery document and key set on 127.0.0.1:IDP_PORT with the bench server
# certificate, and writes one ES256 token (aud https://bench.local/api, groups [bench-eng],
# valid 24 h) to $WORK/token. The cleanup trap stops it.
start_bg idp "$WORK/idp.log" "$IDP" --listen "127.0.0.1:$IDP_PORT" --cert "$WORK/server.pem" \
  --key "$WORK/server.key" --token-out "$WORK/token" --audience https://bench.local/api \
  --group bench-eng --lifetime 24h
for _ in $(seq 1 100); do
  [[ -s "$WORK/token" ]] && break
  kill -0 "${PID_OF[idp]}" 2>/dev/null || break
  sleep 0.1
done
if [[ ! -s "$WORK/token" ]]; then
  log "the bench identity provider did not start; portcullis-bearer will fail"
  cat "$WORK/idp.log" >&2
fi

# --- echo upstream --------------------------------------------------------------------------
start_bg echo "$WORK/echo.log" "${PIN_SUT[@]}" "$PCL" echo --listen "127.0.0.1:$ECHO_PORT" --name bench
wait_ok "http://127.0.0.1:$ECHO_PORT/healthz" 100 || { log "echo upstream did not start"; cat "$WORK/echo.log" >&2; exit 1; }

# --- the OTLP sink (for portcullis-traced) -------------------------------------------------
# An OTLP/HTTP receiver on loopback that reads each export and answers 200 with an empty
# ExportTraceServiceResponse, as a collector beside the gateway would. python3's http.server:
# its cost is its own process's, outside the gateway's instruction count.
OTLP_PORT=$((BASE_PORT + 951))
if command -v python3 >/dev/null 2>&1; then
  start_bg otlp-sink "$WORK/otlp-sink.log" "${PIN_LOAD[@]}" python3 -c '
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
' "$OTLP_PORT"
else
  log "no python3: the OTLP sink is absent, portcullis-traced's exports fail (and are dropped)"
fi

# --- the proxies' configurations ------------------------------------------------------------
# file, port, metrics port, audit (on|off), authentication (mtls|oidc), limits (open|refused),
# upstream protocol (http1|http2), egress listener port (none when empty), trace sampling ratio
# (tracing off when empty)
write_pcl_config() {
  local providers="" authn="" rule="spiffe_id: [spiffe://bench.local/ns/bench/sa/client]"
  local protocol="" host="" egress=""
  # refused: the tenant's rate allows one request a day, so every request after the first is
  # answered 429 (the cost of a refusal, next to a proxied request's).
  local rate="{ requests: 4000000, per: 1s }"
  [[ ${6:-open} == refused ]] && rate="{ requests: 1, per: 24h }"
  if [[ ${5:-mtls} == oidc ]]; then
    # The benched route takes bearer tokens of the bench identity provider (the TLS handshake
    # still asks for the client certificate, as for the other targets).
    providers="
    identity_providers:
      - name: bench-idp
        issuer: https://127.0.0.1:$IDP_PORT
        audiences: [https://bench.local/api]
        ca: $WORK/ca.pem
        algorithms: [ES256]"
    authn="
        authentication: oidc"
    rule="groups: [bench-eng]"
  fi
  # h2c to the echo upstream (it speaks both).
  [[ ${7:-http1} == http2 ]] && protocol="
    protocol: http2"
  if [[ -n ${8:-} ]]; then
    # A sidecar's outbound listener: the bench client's SPIFFE ID as the workload, so the
    # access rule is the same; the route is matched by host, as a sidecar's routes are.
    egress="
egress:
  - name: outbound
    address: 127.0.0.1:$8
    workload: spiffe://bench.local/ns/bench/sa/client
    connections:
      max_requests_per_connection: 1000000
      max_connections_per_source: 10000
      abuse:
        connection_rate_per_source: off
        connection_rate_per_identity: off
        refusals: { slow_after: 1000000000, close_after: 1000000000 }"
    host="
        host: $EGRESS_HOST"
  fi
  cat >"$1" <<EOF
# Full pipeline as built today: mTLS + identity + access rules + routing + per-tenant and
# per-identity rate limits (configured far above the offered load, so never triggered), a
# body-size limit, DLP scanning request and response bodies (the bench bodies hold nothing
# it detects, so it inspects every byte and acts on none), and (audit on) the fail-closed
# audit log: each request's admission record fsynced before it is forwarded. Keep-alive and
# per-source connection caps are raised like the peers' (nginx keepalive_requests 10000000,
# HAProxy and pingora unbounded), and new-connection rates are off (the new-connection
# scenario reconnects from one address and identity thousands of times a second) and refused
# requests are never slowed (portcullis-refused measures a refusal's own cost), so no target
# reconnects or refuses where another does not.
listeners:
  - name: public
    address: 127.0.0.1:$2
    tls: { certificate: server.pem, private_key: server.key, client_auth: required, client_ca: ca.pem }
    connections:
      max_requests_per_connection: 1000000
      max_connections_per_source: 10000
      abuse:
        connection_rate_per_source: off
        connection_rate_per_identity: off
        refusals: { slow_after: 1000000000, close_after: 1000000000 }$egress
metrics: { address: 127.0.0.1:$3 }
shutdown: { grace_period: 1s }
upstreams:
  - name: echo
    targets: [127.0.0.1:$ECHO_PORT]$protocol
tenants:
  - name: bench$providers
    routes:
      - name: all$host
        path_prefix: /
        upstream: echo$authn
        access:
          - id: bench-client
            $rule
    limits:
      rate: $rate
      per_identity: { requests: 4000000, per: 1s }
      max_request_body: 1048576
    dlp:
      request: { card_number: block, us_ssn: redact, private_key: block, aws_secret_key: block }
      response: { card_number: redact, us_ssn: redact, private_key: block, aws_secret_key: block }
EOF
  if [[ -n ${9:-} ]]; then
    # Traces: sampling ratio $9, exported over OTLP/HTTP to the local sink (OTLP_PORT).
    cat >>"$1" <<EOF
tracing:
  otlp: { endpoint: "http://127.0.0.1:$OTLP_PORT/v1/traces", protocol: http }
  sampling: { ratio: $9 }
EOF
  fi
  if [[ ${4:-on} == on ]]; then
    cat >>"$1" <<EOF
audit:
  directory: $1.audit
  signing_key: $1.audit.key
  mode: fail-closed
EOF
  fi
}

write_nginx_config() { # file, port, workers, master_process (on|off)
  local dir=${1%.conf}
  mkdir -p "$dir-tmp"
  cat >"$1" <<EOF
worker_processes $3;
master_process $4;
daemon off;
pid $dir.pid;
error_log $dir-error.log warn;
worker_rlimit_nofile $FD_LIMIT;
events { worker_connections $PEER_MAXCONN; }
http {
  access_log $dir-access.log;
  client_body_temp_path $dir-tmp/body;
  proxy_temp_path $dir-tmp/proxy;
  fastcgi_temp_path $dir-tmp/fastcgi;
  uwsgi_temp_path $dir-tmp/uwsgi;
  scgi_temp_path $dir-tmp/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  upstream echo {
    server 127.0.0.1:$ECHO_PORT;
    keepalive 64;
    keepalive_requests 10000000;
  }
  server {
    listen 127.0.0.1:$2 ssl http2;
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
}

write_haproxy_config() { # file, port, threads
  cat >"$1" <<EOF
global
  nbthread $3
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
  bind 127.0.0.1:$2 ssl crt $WORK/server-bundle.pem ca-file $WORK/ca.pem verify required alpn h2,http/1.1
  http-request set-header X-Client-Subject %[ssl_c_s_dn]
  default_backend echo
backend echo
  http-reuse always
  server echo 127.0.0.1:$ECHO_PORT
EOF
}

# Arguments of portcullis-bare-pingora in front of the echo upstream.
bare_args() { # port threads
  printf '%s\n' --listen "127.0.0.1:$1" --upstream "127.0.0.1:$ECHO_PORT" --cert "$WORK/server.pem" \
    --key "$WORK/server.key" --client-ca "$WORK/ca.pem" --threads "$2"
}

# --- the proxies under test -----------------------------------------------------------------
# Starts every proxy with WORKERS worker threads/processes (Portcullis sizes itself from its
# CPU affinity), pinned with PIN_SUT, on the current ports; a proxy that does not become ready
# is recorded in FAIL_OF and skipped by the scenarios.
start_proxies() { # workers
  local w=$1 sfx="" t
  if [[ $w -gt 1 ]]; then sfx="-${w}w"; fi
  for t in "${PROXIES[@]}"; do unset 'FAIL_OF[$t]'; done
  # Default log level (info): Portcullis writes its access log line per request, like nginx
  # and HAProxy; bare pingora writes none.
  write_pcl_config "$WORK/portcullis$sfx.yaml" "$PCL_PORT" "$PCL_METRICS_PORT"
  start_bg portcullis "$WORK/portcullis$sfx.log" "${PIN_SUT[@]}" "$PCL" serve --config "$WORK/portcullis$sfx.yaml"
  write_pcl_config "$WORK/portcullis-noaudit$sfx.yaml" "$PCL_NOAUDIT_PORT" "$PCL_NOAUDIT_METRICS_PORT" off
  start_bg portcullis-noaudit "$WORK/portcullis-noaudit$sfx.log" "${PIN_SUT[@]}" "$PCL" serve --config "$WORK/portcullis-noaudit$sfx.yaml"
  if [[ $w -eq 1 ]]; then # the variants run in the one-worker keep-alive GET only
    write_pcl_config "$WORK/portcullis-bearer.yaml" "$PCL_BEARER_PORT" "$PCL_BEARER_METRICS_PORT" off oidc
    start_bg portcullis-bearer "$WORK/portcullis-bearer.log" "${PIN_SUT[@]}" "$PCL" serve --config "$WORK/portcullis-bearer.yaml"
    write_pcl_config "$WORK/portcullis-h2up.yaml" "$PCL_H2UP_PORT" "$PCL_H2UP_METRICS_PORT" off mtls open http2
    start_bg portcullis-h2up "$WORK/portcullis-h2up.log" "${PIN_SUT[@]}" "$PCL" serve --config "$WORK/portcullis-h2up.yaml"
    write_pcl_config "$WORK/portcullis-egress.yaml" "$PCL_EGRESS_PORT" "$PCL_EGRESS_METRICS_PORT" off mtls open http1 "$PCL_EGRESS_OUT_PORT"
    start_bg portcullis-egress "$WORK/portcullis-egress.log" "${PIN_SUT[@]}" "$PCL" serve --config "$WORK/portcullis-egress.yaml"
    write_pcl_config "$WORK/portcullis-traced0.yaml" "$PCL_TRACED0_PORT" "$PCL_TRACED0_METRICS_PORT" off mtls open http1 "" 0
    start_bg portcullis-traced0 "$WORK/portcullis-traced0.log" "${PIN_SUT[@]}" "$PCL" serve --config "$WORK/portcullis-traced0.yaml"
    write_pcl_config "$WORK/portcullis-traced.yaml" "$PCL_TRACED_PORT" "$PCL_TRACED_METRICS_PORT" off mtls open http1 "" 1
    start_bg portcullis-traced "$WORK/portcullis-traced.log" "${PIN_SUT[@]}" "$PCL" serve --config "$WORK/portcullis-traced.yaml"
  fi
  if [[ -n $BASELINE ]]; then
    write_pcl_config "$WORK/baseline-noaudit$sfx.yaml" "$BASE_NOAUDIT_PORT" "$BASE_NOAUDIT_METRICS_PORT" off
    start_bg baseline-noaudit "$WORK/baseline-noaudit$sfx.log" "${PIN_SUT[@]}" "$BASELINE" serve --config "$WORK/baseline-noaudit$sfx.yaml"
  fi
  local -a bare
  mapfile -t bare < <(bare_args "$PINGORA_PORT" "$w")
  start_bg pingora "$WORK/pingora$sfx.log" "${PIN_SUT[@]}" "$BARE" "${bare[@]}"
  if [[ -z $NGINX_MISSING ]]; then
    write_nginx_config "$WORK/nginx$sfx.conf" "$NGINX_PORT" "$w" on
    start_bg nginx "$WORK/nginx$sfx.log" "${PIN_SUT[@]}" "$NGINX" -e "$WORK/nginx$sfx-error.log" -p "$WORK" -c "$WORK/nginx$sfx.conf"
  else
    FAIL_OF[nginx]=$NGINX_MISSING
  fi
  if [[ -z $HAPROXY_MISSING ]]; then
    write_haproxy_config "$WORK/haproxy$sfx.cfg" "$HAPROXY_PORT" "$w"
    start_bg haproxy "$WORK/haproxy$sfx.log" "${PIN_SUT[@]}" "$HAPROXY" -db -f "$WORK/haproxy$sfx.cfg"
  else
    FAIL_OF[haproxy]=$HAPROXY_MISSING
  fi
  local -a started=("${PROXIES[@]}") tls
  if [[ $w -eq 1 ]]; then started+=("${VARIANTS[@]}"); fi
  for t in "${started[@]}"; do
    if [[ -n ${FAIL_OF[$t]:-} ]]; then continue; fi
    mapfile -t tls < <(tls_of "$t")
    if ! wait_ok "$(url_of "$t")" 150 "${tls[@]}"; then
      case $t in
        nginx) FAIL_OF[$t]="nginx did not become ready: $(tail -n 2 "$WORK/nginx$sfx-error.log" 2>/dev/null | tr '\n' ' ')" ;;
        haproxy) FAIL_OF[$t]="haproxy did not become ready: $(tail -n 2 "$WORK/haproxy$sfx.log" | tr '\n' ' ')" ;;
        *) FAIL_OF[$t]="$t did not become ready (see its log)" ;;
      esac
      log "${FAIL_OF[$t]}"
    fi
  done
}

stop_proxies() {
  local t
  for t in "${PROXIES[@]}" "${VARIANTS[@]}"; do stop_bg "$t"; done
}

alive() { # target: is it usable right now? (sets FAIL_OF when it died)
  local t=$1
  [[ $t == direct ]] && return 0
  [[ -n ${FAIL_OF[$t]:-} ]] && return 1
  if ! kill -0 "${PID_OF[$t]:-}" 2>/dev/null; then
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

scenario() { # name targets-array-name load-args...
  local name=$1 round t
  local -n on=$2
  shift 2
  for round in $(seq 1 "$ROUNDS"); do
    for t in "${on[@]}"; do
      measure "$name" "$t" "$round" "$@"
    done
  done
}

# BENCH_COMMIT names the source when ROOT is an exported tree rather than a git checkout.
COMMIT=${BENCH_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}
if [[ -z ${BENCH_COMMIT:-} ]] && ! git -C "$ROOT" diff --quiet HEAD -- gateway policy src ca bench 2>/dev/null; then
  COMMIT="$COMMIT with uncommitted changes"
fi
START_TS=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# --- one worker per proxy -------------------------------------------------------------------
start_proxies 1
log "scenario: keep-alive GET"
scenario ka-get KA_GET_TARGETS --connections "$CONNS"
log "scenario: keep-alive POST ($BODY_BYTES bytes of JSON)"
scenario ka-post TARGETS --connections "$CONNS" --body "$WORK/body.json"
# The proxies' HTTP/2 ingress (HTTP/1.1 to the echo): no direct row.
log "scenario: HTTP/2 keep-alive GET ($H2_CONNS connections x $H2_STREAMS streams)"
scenario h2-get PROXIES --http 2 --connections "$H2_CONNS" --streams "$H2_STREAMS"
log "scenario: new connection per request"
scenario new-conn TARGETS --new-conn --connections "$NEWCONN_CONNS"
if RATE=$("$LOAD" summarize --records "$RECORDS" --half-rate-of ka-get 2>"$WORK/rate.err"); then
  log "scenario: open loop at $RATE req/s"
  scenario open-loop TARGETS --rate "$RATE" --connections "$OPEN_LOOP_CONNS"
else
  RATE=""
  for t in "${TARGETS[@]}"; do
    record_failure open-loop "$t" 1 "no rate: $(tr '\n' ' ' <"$WORK/rate.err")"
  done
fi

# --- memory per idle connection -------------------------------------------------------------
log "scenario: $IDLE_CONNS idle mTLS connections per proxy"
for t in portcullis pingora nginx haproxy; do
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
stop_proxies

# --- two workers per proxy, on both CPUs ----------------------------------------------------
if [[ $TWO_WORKERS != 0 ]]; then
  log "scenario: keep-alive GET, 2 workers per proxy; pinning: $PINNING_2W"
  PIN_SUT_1W=("${PIN_SUT[@]}")
  PIN_LOAD_1W=("${PIN_LOAD[@]}")
  PIN_SUT=("${PIN_BOTH[@]}")
  PIN_LOAD=("${PIN_BOTH[@]}")
  if [[ ${#PIN_BOTH[@]} -gt 0 ]]; then
    taskset -a -p -c "$PROXY_CPU,$LOAD_CPU" "${PID_OF[echo]}" >/dev/null
  fi
  set_ports 20
  start_proxies 2
  scenario ka-get-2w TARGETS --connections "$CONNS" --threads "$LOAD_THREADS_2W"
  stop_proxies
  set_ports 0
  PIN_SUT=("${PIN_SUT_1W[@]}")
  PIN_LOAD=("${PIN_LOAD_1W[@]}")
  if [[ ${#PIN_BOTH[@]} -gt 0 ]]; then
    taskset -a -p -c "$PROXY_CPU" "${PID_OF[echo]}" >/dev/null
  fi
fi
END_TS=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOADAVG_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- instruction count per proxied request (callgrind) -------------------------------------
# instructions NAME PORT COMMAND...: runs COMMAND (a proxy listening on PORT) under callgrind
# and sets CG_N, the instructions per keep-alive GET ("-" when it failed), and CG_LINE, saying
# how it was counted. Both batches run on a fresh connection after a warm-up, with the
# counters zeroed before and dumped after: one request, then CALLGRIND_REQUESTS requests. Their
# difference over CALLGRIND_REQUESTS-1 requests is what a keep-alive request costs, with the
# handshake and connection set-up cancelled out (the one-request batch minus N is their cost).
# CG_LOAD_EXTRA: more arguments for the load generator (the bearer token, a Host header).
# CG_URL and CG_TLS: where the load goes and its TLS arguments, when not https on PORT with
# the client certificate (portcullis-egress: plain HTTP to its egress listener).
CG_LOAD_EXTRA=()
CG_URL=""
CG_TLS=("${TLS_ARGS[@]}")
instructions() {
  local name=$1 port=$2
  shift 2
  local dir="$WORK/cg-$name" url=${CG_URL:-"https://127.0.0.1:$port/bench/item"} pid one all ok1 okn errs
  local kind="mTLS"
  [[ ${#CG_TLS[@]} -gt 0 ]] || kind="plain HTTP"
  mkdir -p "$dir"
  start_bg "cg-$name" "$dir/out.log" "${PIN_SUT[@]}" valgrind --tool=callgrind \
    --callgrind-out-file="$dir/callgrind.out.%p" "$@"
  pid=${PID_OF[cg-$name]}
  CG_N="-"
  if wait_ok "$url" 1200 "${CG_TLS[@]}" "${CG_LOAD_EXTRA[@]}"; then
    # Warm the upstream pool and caches on a connection of its own.
    "${PIN_LOAD[@]}" "$LOAD" run "$url" "${CG_TLS[@]}" "${CG_LOAD_EXTRA[@]}" -c 1 -n 200 --duration 120s >/dev/null
    callgrind_control -z "$pid" >/dev/null
    "${PIN_LOAD[@]}" "$LOAD" run "$url" "${CG_TLS[@]}" "${CG_LOAD_EXTRA[@]}" -c 1 -n 1 --duration 60s --json >"$dir/one.json"
    callgrind_control -d "$pid" >/dev/null
    callgrind_control -z "$pid" >/dev/null
    "${PIN_LOAD[@]}" "$LOAD" run "$url" "${CG_TLS[@]}" "${CG_LOAD_EXTRA[@]}" -c 1 -n "$CALLGRIND_REQUESTS" \
      --duration 600s --json >"$dir/batch.json"
    callgrind_control -d "$pid" >/dev/null
    sleep 1
    one=$(awk '/^summary:/{print $2; exit}' "$dir/callgrind.out.$pid.1" 2>/dev/null || true)
    all=$(awk '/^summary:/{print $2; exit}' "$dir/callgrind.out.$pid.2" 2>/dev/null || true)
    ok1=$(grep -o '"ok":[0-9]*' "$dir/one.json" | grep -o '[0-9]*' || true)
    okn=$(grep -o '"ok":[0-9]*' "$dir/batch.json" | grep -o '[0-9]*' || true)
    errs=$(grep -o '"errors_total":[0-9]*' "$dir/batch.json" | grep -o '[0-9]*' || true)
    if [[ -n $one && -n $all && ${ok1:-0} -eq 1 && ${okn:-0} -gt 1 && ${errs:-1} -eq 0 ]]; then
      CG_N=$(((all - one) / (okn - 1)))
      CG_LINE="$CG_N instructions per request ((Ir $all over $okn keep-alive GETs − Ir $one over 1) / $((okn - 1)), one $kind connection each, all threads); a new connection's handshake and set-up: $((one - CG_N))"
    else
      CG_LINE="failed: no callgrind summary or failed requests (1-request batch ok=${ok1:-0}, $CALLGRIND_REQUESTS-request batch ok=${okn:-0}, errors=${errs:-?}; see $dir)"
    fi
  else
    CG_LINE="failed: $name under valgrind did not become ready"
  fi
  stop_bg "cg-$name"
}

# "A/B" of two instruction counts, or "—".
ir_ratio() { # a b
  if [[ $1 =~ ^[0-9]+$ && $2 =~ ^[0-9]+$ && $2 -gt 0 ]]; then
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'
  else
    echo "—"
  fi
}

CALLGRIND_LINES="Not measured (CALLGRIND_REQUESTS=$CALLGRIND_REQUESTS; it takes at least 2)."
if [[ $CALLGRIND_REQUESTS -gt 1 ]]; then
  if command -v valgrind >/dev/null 2>&1 && command -v callgrind_control >/dev/null 2>&1; then
    log "instruction count under callgrind: $CALLGRIND_REQUESTS keep-alive GETs per target"
    cg_pcl() { # name port metrics-port audit binary [authentication] [limits] [protocol] [egress port] [trace ratio]
      local dir="$WORK/cg-$1"
      mkdir -p "$dir"
      cp "$WORK"/{ca.pem,server.pem,server.key} "$dir/"
      write_pcl_config "$dir/portcullis.yaml" "$2" "$3" "$4" "${6:-mtls}" "${7:-open}" "${8:-http1}" "${9:-}" "${10:-}"
      instructions "$1" "$2" "$5" serve --config "$dir/portcullis.yaml"
    }
    cg_pcl portcullis "$CG_PORT" "$CG_METRICS_PORT" on "$PCL"
    IR_PCL=$CG_N LINE_PCL=$CG_LINE
    log "portcullis: $LINE_PCL"
    cg_pcl portcullis-noaudit "$CG_PORT" "$CG_METRICS_PORT" off "$PCL"
    IR_NOAUDIT=$CG_N LINE_NOAUDIT=$CG_LINE
    log "portcullis-noaudit: $LINE_NOAUDIT"
    CG_LOAD_EXTRA=(--bearer-file "$WORK/token")
    cg_pcl portcullis-bearer "$CG_PORT" "$CG_METRICS_PORT" off "$PCL" oidc
    CG_LOAD_EXTRA=()
    IR_BEARER=$CG_N LINE_BEARER=$CG_LINE
    log "portcullis-bearer: $LINE_BEARER"
    cg_pcl portcullis-h2up "$CG_PORT" "$CG_METRICS_PORT" off "$PCL" mtls open http2
    IR_H2UP=$CG_N LINE_H2UP=$CG_LINE
    log "portcullis-h2up: $LINE_H2UP"
    CG_URL="http://127.0.0.1:$CG_EGRESS_PORT/bench/item" CG_TLS=()
    CG_LOAD_EXTRA=(--header "Host: $EGRESS_HOST")
    cg_pcl portcullis-egress "$CG_PORT" "$CG_METRICS_PORT" off "$PCL" mtls open http1 "$CG_EGRESS_PORT"
    CG_URL="" CG_TLS=("${TLS_ARGS[@]}") CG_LOAD_EXTRA=()
    IR_EGRESS=$CG_N LINE_EGRESS=$CG_LINE
    log "portcullis-egress: $LINE_EGRESS"
    CG_LOAD_EXTRA=(--expect-status 429)
    cg_pcl portcullis-refused "$CG_PORT" "$CG_METRICS_PORT" off "$PCL" mtls refused
    CG_LOAD_EXTRA=()
    IR_REFUSED=$CG_N LINE_REFUSED=$CG_LINE
    log "portcullis-refused: $LINE_REFUSED"
    cg_pcl portcullis-traced0 "$CG_PORT" "$CG_METRICS_PORT" off "$PCL" mtls open http1 "" 0
    IR_TRACED0=$CG_N LINE_TRACED0=$CG_LINE
    log "portcullis-traced0: $LINE_TRACED0"
    cg_pcl portcullis-traced "$CG_PORT" "$CG_METRICS_PORT" off "$PCL" mtls open http1 "" 1
    IR_TRACED=$CG_N LINE_TRACED=$CG_LINE
    log "portcullis-traced: $LINE_TRACED"
    mapfile -t bare < <(bare_args "$CG_PORT" 1)
    instructions pingora "$CG_PORT" "$BARE" "${bare[@]}"
    IR_PINGORA=$CG_N LINE_PINGORA=$CG_LINE
    log "pingora: $LINE_PINGORA"
    if [[ -z $NGINX_MISSING ]]; then
      mkdir -p "$WORK/cg-nginx"
      write_nginx_config "$WORK/cg-nginx/nginx.conf" "$CG_PORT" 1 off
      instructions nginx "$CG_PORT" "$NGINX" \
        -e "$WORK/cg-nginx/nginx-error.log" -p "$WORK/cg-nginx" -c "$WORK/cg-nginx/nginx.conf"
      IR_NGINX=$CG_N LINE_NGINX=$CG_LINE
    else
      IR_NGINX="-" LINE_NGINX=$NGINX_MISSING
    fi
    log "nginx: $LINE_NGINX"
    CALLGRIND_LINES="- **portcullis** (fail-closed audit): $LINE_PCL
- **portcullis-noaudit**: $LINE_NOAUDIT
- **portcullis-bearer** (portcullis-noaudit + \`authentication: oidc\`, the same bearer token on every request, verified once then cached): $LINE_BEARER
- **portcullis-h2up** (portcullis-noaudit with the echo upstream on \`protocol: http2\`, h2c): $LINE_H2UP
- **portcullis-egress** (portcullis-noaudit's pipeline behind an \`egress:\` listener: plain HTTP/1.1 in from loopback, judged as the workload, routed by host, plain HTTP to the echo): $LINE_EGRESS
- **portcullis-refused** (portcullis-noaudit with the tenant's rate at one request a day: every request answered 429): $LINE_REFUSED
- **portcullis-traced0** (portcullis-noaudit with \`tracing:\` on, sampling ratio 0: a trace id and an upstream traceparent per request, nothing recorded): $LINE_TRACED0
- **portcullis-traced** (portcullis-noaudit with \`tracing:\` on, ratio 1: every request's spans exported over OTLP/HTTP to a local sink; the exporter thread counted too): $LINE_TRACED
- **pingora** (portcullis-bare-pingora): $LINE_PINGORA
- **nginx** (\`master_process off; daemon off;\`, one process): $LINE_NGINX"
    if [[ -n $BASELINE ]]; then
      cg_pcl baseline-noaudit "$CG_BASE_PORT" "$CG_BASE_METRICS_PORT" off "$BASELINE"
      IR_BASE=$CG_N LINE_BASE=$CG_LINE
      log "baseline-noaudit: $LINE_BASE"
      CALLGRIND_LINES="$CALLGRIND_LINES
- **baseline-noaudit** ($BASELINE): $LINE_BASE (this build without audit / baseline: $(ir_ratio "$IR_NOAUDIT" "$IR_BASE"))"
    fi
    CALLGRIND_LINES="$CALLGRIND_LINES

Ratios: Portcullis / pingora $(ir_ratio "$IR_PCL" "$IR_PINGORA") with the audit log, $(ir_ratio "$IR_NOAUDIT" "$IR_PINGORA") without; pingora / nginx $(ir_ratio "$IR_PINGORA" "$IR_NGINX"); Portcullis without audit / nginx $(ir_ratio "$IR_NOAUDIT" "$IR_NGINX"); bearer token (cached validation) / mTLS only: portcullis-bearer / portcullis-noaudit $(ir_ratio "$IR_BEARER" "$IR_NOAUDIT"); HTTP/2 (h2c) / HTTP/1.1 to the upstream: portcullis-h2up / portcullis-noaudit $(ir_ratio "$IR_H2UP" "$IR_NOAUDIT"); plain HTTP from the workload on an egress listener / mTLS ingress: portcullis-egress / portcullis-noaudit $(ir_ratio "$IR_EGRESS" "$IR_NOAUDIT"); a refusal (429) / a proxied request: portcullis-refused / portcullis-noaudit $(ir_ratio "$IR_REFUSED" "$IR_NOAUDIT"); tracing sampled out / no tracing: portcullis-traced0 / portcullis-noaudit $(ir_ratio "$IR_TRACED0" "$IR_NOAUDIT"); tracing with every request exported / no tracing: portcullis-traced / portcullis-noaudit $(ir_ratio "$IR_TRACED" "$IR_NOAUDIT")."
  else
    CALLGRIND_LINES="Not measured: valgrind/callgrind_control not installed (apt-get install valgrind)."
  fi
fi

# --- noisy neighbour (bench/noisy.sh) ------------------------------------------------------
NOISY_LINES="Not measured (NOISY=0)."
if [[ $NOISY == 1 ]]; then
  # shellcheck source=bench/noisy.sh
  source "$ROOT/bench/noisy.sh"
fi

# --- report ---------------------------------------------------------------------------------
BASELINE_NOTE=""
if [[ -n $BASELINE ]]; then
  BASELINE_NOTE="**baseline-noaudit** is an earlier build ($BASELINE) with the portcullis-noaudit configuration: the pair gives what the changes since that build cost, in the same run."
fi
TABLES=$("$LOAD" summarize --records "$RECORDS")
CPU_MODEL=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
NGINX_V=$({ [[ -n $NGINX ]] && "$NGINX" -v 2>&1; } || echo "nginx: not installed")
# sed reads all of it: with head, haproxy could die of SIGPIPE and fail the pipeline.
HAPROXY_V=$({ [[ -n $HAPROXY ]] && "$HAPROXY" -v 2>&1 | sed -n 1p; } || echo "haproxy: not installed")
RUSTC_V=$(rustc -V)
TWO_WORKER_NOTE=$PINNING_2W
if [[ $TWO_WORKERS == 0 ]]; then TWO_WORKER_NOTE="not run (TWO_WORKERS=0)"; fi
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
**portcullis-bearer** (keep-alive GET and callgrind only) is portcullis-noaudit with the route on
\`authentication: oidc\`: a tenant identity provider (\`portcullis-bench-idp\`, a static
provider on loopback: discovery document and an ES256 key set over TLS), an access rule on the
token's \`groups\`, and every request carrying the same \`Authorization: Bearer\` token, verified
once and then served from the gateway's token cache (the client certificate is still required
in the handshake). Against portcullis-noaudit it gives what cached bearer validation costs.
**portcullis-h2up** (keep-alive GET and callgrind only) is portcullis-noaudit with the echo
upstream on \`protocol: http2\`: the gateway speaks HTTP/2 in plaintext with prior knowledge
(h2c) to \`portcullis echo\`, which answers HTTP/2 and HTTP/1.1 on one port; the client side is
unchanged (HTTP/1.1 over mTLS). Against portcullis-noaudit it gives what HTTP/2 to the upstream
costs or saves per request.
**portcullis-egress** (keep-alive GET and callgrind only) is portcullis-noaudit's pipeline (rules,
limits, DLP, access log) behind a sidecar's \`egress:\` listener on loopback, its \`workload:\`
the bench client's SPIFFE ID (so the same access rule applies): the load generator sends plain
HTTP/1.1 with \`Host: $EGRESS_HOST\`, the route is matched by that host, and the request goes to
the echo over plain HTTP, so it is comparable to **direct** (the same plain HTTP/1.1 in and
out, plus the proxy). A real sidecar would originate mTLS to the remote peer's sidecar, so
its outbound hop costs more than this. Against portcullis-noaudit it gives what the egress path
costs without TLS on the client side; against direct, what the extra hop costs.
**pingora** is the framework floor: \`portcullis-bare-pingora\` (bench/src/bare_pingora.rs), the
workspace's pingora 0.9 with the gateway's features (rustls, ring, Portcullis's restricted
provider) and allocator (mimalloc), a \`ProxyHttp\` that only picks the echo upstream, mTLS with
client certificates required against the same CA, no access log. What Portcullis costs beyond
it is Portcullis's own work.
$BASELINE_NOTE

## Machine and versions

- CPUs: $NCPU × $CPU_MODEL; $(awk '/MemTotal/{printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo); kernel $(uname -r)
- Load average (1/5/15 min) before: $LOADAVG_BEFORE; after: $LOADAVG_AFTER. The machine is shared:
  other builds may run on the same cores, which is why only ratios within one run are reported.
- Pinning: $PINNING. Two-worker scenario: $TWO_WORKER_NOTE.
- $RUSTC_V; portcullis, portcullis-bare-pingora and portcullis-load built with \`cargo build --release\`
- $NGINX_V
- $HAPROXY_V
- TLS libraries: Portcullis and bare pingora rustls 0.23 (ring); nginx and HAProxy $(openssl version 2>/dev/null || echo "OpenSSL (version unknown)") (Debian's)
- Settings: $ROUNDS rounds × $ROUND_SECS s (+$WARMUP_SECS s warm-up) per target per scenario, targets
  alternated within each round; keep-alive $CONNS connections; HTTP/2 $H2_CONNS connections × $H2_STREAMS
  streams; new-connection $NEWCONN_CONNS loops; open loop $OPEN_LOOP_CONNS connections${RATE:+ at $RATE req/s};
  POST body $BODY_BYTES bytes of JSON; $IDLE_CONNS idle connections held ${HOLD_SECS}s. TLS 1.3, ECDSA P-256
  certificates from one dev CA, no session resumption (every new connection is a full handshake).
- Peers: nginx and HAProxy terminate mTLS (verify required, same CA), proxy to the same echo
  upstream over keep-alive HTTP/1.1, set a client-subject header and write an access log; bare
  pingora does the same without the header and the log. 1 worker each (2 in the two-worker
  scenario). Portcullis: 1 worker thread (pingora sizes it from the 1-CPU affinity; 2 on 2 CPUs).

## Results

How to read: **direct** is plain HTTP straight to the echo upstream (no TLS, no proxy): the
physical limit. The proxies share core $PROXY_CPU with the echo upstream, so a ratio to direct
includes the upstream's own share of that core. Medians over rounds; "vs direct" is the ratio of
medians; "vs nginx" and "vs pingora" are the median over rounds of that round's ratio (targets
run seconds apart within a round, so drift of the shared machine largely cancels). "rounds
min–max" shows how much the shared machine moved between rounds. Closed-loop latencies
(keep-alive, HTTP/2, new connection) mostly measure queueing at the requests in flight; the
open-loop table is the latency one.

$TABLES

## Instruction count per proxied request (callgrind)

Keep-alive GET, proxy pinned to core $PROXY_CPU under \`valgrind --tool=callgrind\`, all threads.

$CALLGRIND_LINES

## Noisy neighbour (one core)

$NOISY_LINES

## Exact commands

\`\`\`
$(printf '%q ' "$0") # with ROUNDS=$ROUNDS ROUND_SECS=$ROUND_SECS WARMUP_SECS=$WARMUP_SECS CONNS=$CONNS H2_CONNS=$H2_CONNS H2_STREAMS=$H2_STREAMS IDLE_CONNS=$IDLE_CONNS CALLGRIND_REQUESTS=$CALLGRIND_REQUESTS
# bare pingora:
${PIN_SUT[*]} portcullis-bare-pingora --listen 127.0.0.1:$PINGORA_PORT --upstream 127.0.0.1:$ECHO_PORT --cert server.pem --key server.key --client-ca ca.pem --threads 1
# per target and round, e.g. Portcullis keep-alive GET:
${PIN_LOAD[*]} portcullis-load run https://127.0.0.1:$PCL_PORT/bench/item --ca ca.pem --cert client.pem --key client.key --json --duration ${ROUND_SECS}s --warmup ${WARMUP_SECS}s --connections $CONNS
#   portcullis-bearer: add --bearer-file token (the token portcullis-bench-idp wrote; keep-alive GET and callgrind only)
#   portcullis-h2up: https://127.0.0.1:$PCL_H2UP_PORT/bench/item, the same arguments (keep-alive GET and callgrind only)
#   portcullis-egress: ${PIN_LOAD[*]} portcullis-load run http://127.0.0.1:$PCL_EGRESS_OUT_PORT/bench/item --header 'Host: $EGRESS_HOST' --json … (no TLS arguments; keep-alive GET and callgrind only)
#   POST: add --body body.json; HTTP/2: --http 2 --connections $H2_CONNS --streams $H2_STREAMS;
#   handshakes: --new-conn --connections $NEWCONN_CONNS; open loop: --rate ${RATE:-R} --connections $OPEN_LOOP_CONNS
#   two workers: proxies on ${PIN_BOTH[*]:-all CPUs} with 2 threads/workers, the echo upstream re-pinned there, load generator ${PIN_BOTH[*]} portcullis-load run … --threads $LOAD_THREADS_2W
#   idle memory: portcullis-load hold URL --ca … --connections $IDLE_CONNS --for ${HOLD_SECS}s, VmRSS of the proxy's processes before and while holding
#   instructions: ${PIN_SUT[*]} valgrind --tool=callgrind PROXY …; 200 warm-up requests; callgrind_control -z; 1 request (new connection); callgrind_control -d;
#     callgrind_control -z; $CALLGRIND_REQUESTS requests (new connection); callgrind_control -d; per request = (Ir_$CALLGRIND_REQUESTS − Ir_1) / $((CALLGRIND_REQUESTS - 1))
\`\`\`
EOF
)
printf '%s\n' "$REPORT"
if [[ $RESULTS != "-" ]]; then
  printf '%s\n' "$REPORT" >"$RESULTS"
  log "wrote $RESULTS"
fi
