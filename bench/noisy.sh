# Sourced by bench/run.sh (NOISY=0 skips it): the noisy-neighbour scenario. Tenant `quiet`
# sends QUIET_RATE requests/s open loop over 16 keep-alive connections; tenant `noisy`, limited
# to NOISY_LIMIT requests/s, floods its own route with NOISY_CONNS keep-alive connections, so
# nearly all of its requests are refused (429). The quiet tenant's latency is measured alone,
# then beside the flood, for Portcullis (without audit, its default `connections.abuse`: a
# connection refused over and over is slowed, then closed, and reconnections are rate-limited
# at accept; and again with refusals never slowed or closed, portcullis-noescalation, to show
# what the cheaper refusals alone do) and for nginx (`limit_req` on the noisy tenant's
# location, burst NOISY_LIMIT, nodelay, 429), one proxy at a time with the pinning of the other scenarios. Both load
# generators run on the load core, and both tenants present the same client certificate from
# the same address (the quiet tenant's connections are opened before the flood and kept).
#
# Then (HEAVY=0 skips it) the expensive-but-allowed neighbour: tenant `heavy`, its rate limit
# far above what it sends (never refused), POSTs HEAVY_BYTES of JSON that its request DLP
# rules scan in full (nothing matches) over HEAVY_CONNS keep-alive connections, as fast as
# they are answered. The quiet tenant's open-loop latency is measured alone, then beside it,
# for Portcullis with `fairness: { max_in_flight: N }` for each N in FAIR_SLOTS
# (portcullis-fairN; quiet and heavy weight 1 each), Portcullis without fairness, and nginx
# (the same body, no DLP).
# Sets NOISY_LINES (the report's markdown).

NOISY_PORT=$((BASE_PORT + 460))
NOISY_METRICS_PORT=$((BASE_PORT + 910))
HEAVY_PORT=$((BASE_PORT + 461))
HEAVY_METRICS_PORT=$((BASE_PORT + 911))

noisy_pcl_config() { # file [abuse]
  local abuse=${2:-"{}"}
  cat >"$1" <<YAML
listeners:
  - name: public
    address: 127.0.0.1:$NOISY_PORT
    tls: { certificate: server.pem, private_key: server.key, client_auth: required, client_ca: ca.pem }
    connections: { max_requests_per_connection: 1000000, max_connections_per_source: 10000, abuse: $abuse }
metrics: { address: 127.0.0.1:$NOISY_METRICS_PORT }
shutdown: { grace_period: 1s }
upstreams:
  - name: echo
    targets: [127.0.0.1:$ECHO_PORT]
tenants:
  - name: quiet
    routes:
      - name: quiet
        path_prefix: /quiet
        upstream: echo
        access: [{ id: bench-client, spiffe_id: [spiffe://bench.local/ns/bench/sa/client] }]
  - name: noisy
    routes:
      - name: noisy
        path_prefix: /noisy
        upstream: echo
        access: [{ id: bench-client, spiffe_id: [spiffe://bench.local/ns/bench/sa/client] }]
    limits:
      rate: { requests: $NOISY_LIMIT, per: 1s }
YAML
}

noisy_nginx_config() { # file
  write_nginx_config "$1" "$NOISY_PORT" 1 off
  sed -i -e "s|^  server {|  limit_req_zone \$server_name zone=noisy:1m rate=${NOISY_LIMIT}r/s;\n  limit_req_status 429;\n  server {|" \
    -e "s|^    location / {|    location /noisy {\n      limit_req zone=noisy burst=$NOISY_LIMIT nodelay;\n      proxy_pass http://echo;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }\n    location / {|" "$1"
}

# Medians over NOISY_ROUNDS rounds of one target's reports in DIR (alone-R.json,
# beside-R.json and SIDE-R.json, SIDE being the neighbour's load): "alone_p50 alone_p99
# beside_p50 beside_p99 ratio_p50 ratio_p99 side_rps quiet_errors side_errors", latencies in
# ms, ratios the median of each round's beside/alone (a missing report counts as a failure).
noisy_rounds() { # dir side
  python3 - "$1" "$2" "$NOISY_ROUNDS" <<'PY' 2>/dev/null || echo "- - - - - - - - -"
import json, statistics, sys
d, side, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
def load(name, r):
    try:
        return json.load(open("%s/%s-%d.json" % (d, name, r)))
    except (OSError, ValueError):
        return None
rows, quiet_err, side_err, side_rps = [], 0, 0, []
for r in range(1, rounds + 1):
    a, b, f = load("alone", r), load("beside", r), load(side, r)
    for rep in (a, b):
        quiet_err += rep["errors_total"] if rep else 1
    side_err += f["errors_total"] if f else 1
    if f:
        side_rps.append(f["rps"])
    if a and b:
        rows.append([a["latency_us"]["p50"] / 1000, a["latency_us"]["p99"] / 1000,
                     b["latency_us"]["p50"] / 1000, b["latency_us"]["p99"] / 1000])
med = lambda xs: statistics.median(xs)
cols = [med([r[i] for r in rows]) for i in range(4)]
r50 = med([r[2] / r[0] for r in rows if r[0] > 0])
r99 = med([r[3] / r[1] for r in rows if r[1] > 0])
print("%.3f %.3f %.3f %.3f %.2f× %.2f× %.0f %d %d" % (*cols, r50, r99, med(side_rps), quiet_err, side_err))
PY
}

# NOISY_ROUNDS rounds of the quiet tenant's open loop alone (DIR/alone-R.json), then beside the
# neighbour's load (SIDE-COMMAND, started 1 s before it and outlasting it: DIR/SIDE-R.json,
# DIR/beside-R.json).
neighbour_rounds() { # dir quiet-url side side-command...
  local dir=$1 quiet=$2 side=$3 round pid
  shift 3
  for round in $(seq 1 "$NOISY_ROUNDS"); do
    "${PIN_LOAD[@]}" "$LOAD" run "$quiet" "${TLS_ARGS[@]}" --rate "$QUIET_RATE" -c 16 \
      --warmup 1s --duration "${NOISY_SECS}s" --json >"$dir/alone-$round.json" 2>/dev/null || true
    "$@" --duration "$((NOISY_SECS + 3))s" --json >"$dir/$side-$round.json" 2>/dev/null &
    pid=$!
    sleep 1
    "${PIN_LOAD[@]}" "$LOAD" run "$quiet" "${TLS_ARGS[@]}" --rate "$QUIET_RATE" -c 16 \
      --warmup 1s --duration "${NOISY_SECS}s" --json >"$dir/beside-$round.json" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

noisy_target() { # name
  local name=$1 dir="$WORK/noisy-$1" quiet noisy
  mkdir -p "$dir"
  cp "$WORK"/{ca.pem,server.pem,server.key} "$dir/"
  case $name in
    portcullis | portcullis-noescalation)
      if [[ $name == portcullis ]]; then
        noisy_pcl_config "$dir/portcullis.yaml"
      else
        noisy_pcl_config "$dir/portcullis.yaml" \
          "{ refusals: { slow_after: 1000000000, close_after: 1000000000 } }"
      fi
      start_bg "noisy-$name" "$dir/proxy.log" "${PIN_SUT[@]}" "$PCL" serve --config "$dir/portcullis.yaml"
      ;;
    nginx)
      noisy_nginx_config "$dir/nginx.conf"
      start_bg "noisy-$name" "$dir/proxy.log" "${PIN_SUT[@]}" "$NGINX" -e "$dir/nginx-error.log" -p "$dir" -c "$dir/nginx.conf"
      ;;
  esac
  quiet="https://127.0.0.1:$NOISY_PORT/quiet/item"
  noisy="https://127.0.0.1:$NOISY_PORT/noisy/item"
  if ! wait_ok "$quiet" 100 "${TLS_ARGS[@]}"; then
    NOISY_ROWS+="| $name | did not start (see $dir/proxy.log) | | | | | |"$'\n'
    stop_bg "noisy-$name"
    return
  fi
  # The flood starts first and outlasts the quiet run.
  neighbour_rounds "$dir" "$quiet" flood "${PIN_LOAD[@]}" "$LOAD" run "$noisy" "${TLS_ARGS[@]}" \
    -c "$NOISY_CONNS" --expect-status 429
  local a_p50 a_p99 b_p50 b_p99 r50 r99 f_rps q_err f_err
  read -r a_p50 a_p99 b_p50 b_p99 r50 r99 f_rps q_err f_err <<<"$(noisy_rounds "$dir" flood)"
  NOISY_ROWS+="| $name | $a_p50 / $a_p99 | $b_p50 / $b_p99 | $r50 / $r99 | $q_err | $f_rps | $f_err |"$'\n'
  log "noisy neighbour, $name: quiet alone p50/p99 $a_p50/$a_p99 ms, beside the flood $b_p50/$b_p99 ms ($r50 / $r99); flood answered $f_rps/s, $f_err failed"
  if [[ $name == portcullis* ]]; then
    NOISY_METRICS+="    # $name"$'\n'
    NOISY_METRICS+=$(curl -s "http://127.0.0.1:$NOISY_METRICS_PORT/metrics" |
      grep -E '^portcullis_(requests_total\{.*tenant="noisy"|abuse_escalations_total|connections_refused_total)' | sed 's/^/    /')
    NOISY_METRICS+=$'\n'
  fi
  stop_bg "noisy-$name"
}

# --- the expensive-but-allowed neighbour --------------------------------------------------

heavy_pcl_config() { # file [fairness section]
  cat >"$1" <<YAML
listeners:
  - name: public
    address: 127.0.0.1:$HEAVY_PORT
    tls: { certificate: server.pem, private_key: server.key, client_auth: required, client_ca: ca.pem }
    connections: { max_requests_per_connection: 1000000, max_connections_per_source: 10000 }
metrics: { address: 127.0.0.1:$HEAVY_METRICS_PORT }
shutdown: { grace_period: 1s }
${2:-}
upstreams:
  - name: echo
    targets: [127.0.0.1:$ECHO_PORT]
tenants:
  - name: quiet
    limits: { weight: 1 }
    routes:
      - name: quiet
        path_prefix: /quiet
        upstream: echo
        access: [{ id: bench-client, spiffe_id: [spiffe://bench.local/ns/bench/sa/client] }]
  - name: heavy
    limits:
      weight: 1
      rate: { requests: 10000000, per: 1s }
      max_request_body: 1048576
    dlp:
      request: { card_number: block, us_ssn: redact, private_key: block, aws_secret_key: block }
    routes:
      - name: heavy
        path_prefix: /heavy
        upstream: echo
        access: [{ id: bench-client, spiffe_id: [spiffe://bench.local/ns/bench/sa/client] }]
YAML
}

# nginx keeps the whole body in memory (its default 16 KiB buffer would spill it to a file).
heavy_nginx_config() { # file
  write_nginx_config "$1" "$HEAVY_PORT" 1 off
  sed -i -e "s|^  server {|  client_body_buffer_size $((HEAVY_BYTES + 1024));\n  server {|" "$1"
}

# HEAVY_BYTES of JSON that no DLP detector matches: order lines as in the POST scenario.
heavy_body() { # file
  python3 - "$1" "$HEAVY_BYTES" <<'PY'
import sys
path, size = sys.argv[1], int(sys.argv[2])
head, tail = '{"order":{"id":"A-2048","customer":"heavy","items":[', '{"sku":"SKU-LAST","qty":1}]}}'
items, i = [], 0
while len(head) + sum(len(x) for x in items) + len(tail) < size - 80:
    i += 1
    items.append('{"sku":"SKU-%05d","qty":%d,"price":"19.99","note":"standard item"},' % (i, i % 50))
body = head + "".join(items) + tail
# Padded with spaces to the size exactly (a long run of letters could look like a key).
pad = size - len(body) - len(',"memo":"}')
body = body[:-1] + ',"memo":"' + " " * max(pad, 0) + '"}'
open(path, "w").write(body)
PY
}

heavy_target() { # name
  local name=$1 dir="$WORK/heavy-$1" quiet heavy
  mkdir -p "$dir"
  cp "$WORK"/{ca.pem,server.pem,server.key} "$dir/"
  case $name in
    portcullis-fair*)
      heavy_pcl_config "$dir/portcullis.yaml" "fairness: { max_in_flight: ${name#portcullis-fair} }"
      start_bg "heavy-$name" "$dir/proxy.log" "${PIN_SUT[@]}" "$PCL" serve --config "$dir/portcullis.yaml"
      ;;
    portcullis)
      heavy_pcl_config "$dir/portcullis.yaml"
      start_bg "heavy-$name" "$dir/proxy.log" "${PIN_SUT[@]}" "$PCL" serve --config "$dir/portcullis.yaml"
      ;;
    nginx)
      heavy_nginx_config "$dir/nginx.conf"
      start_bg "heavy-$name" "$dir/proxy.log" "${PIN_SUT[@]}" "$NGINX" -e "$dir/nginx-error.log" -p "$dir" -c "$dir/nginx.conf"
      ;;
  esac
  quiet="https://127.0.0.1:$HEAVY_PORT/quiet/item"
  heavy="https://127.0.0.1:$HEAVY_PORT/heavy/item"
  if ! wait_ok "$quiet" 100 "${TLS_ARGS[@]}"; then
    HEAVY_ROWS+="| $name | did not start (see $dir/proxy.log) | | | | | |"$'\n'
    stop_bg "heavy-$name"
    return
  fi
  # The heavy tenant starts first and outlasts the quiet run. Its generator runs at the lowest
  # priority, so that on the shared load core the quiet generator still sends on time and
  # reads its answers at once: the quiet latency is the proxy's.
  neighbour_rounds "$dir" "$quiet" heavy "${PIN_LOAD[@]}" nice -n 19 "$LOAD" run "$heavy" "${TLS_ARGS[@]}" \
    -c "$HEAVY_CONNS" --body "$WORK/heavy.json"
  local a_p50 a_p99 b_p50 b_p99 r50 r99 h_rps q_err h_err
  read -r a_p50 a_p99 b_p50 b_p99 r50 r99 h_rps q_err h_err <<<"$(noisy_rounds "$dir" heavy)"
  local mib
  mib=$(awk -v r="$h_rps" -v b="$HEAVY_BYTES" 'BEGIN { if (r > 0) printf "%.0f", r * b / 1048576; else print "—" }')
  HEAVY_ROWS+="| $name | $a_p50 / $a_p99 | $b_p50 / $b_p99 | $r50 / $r99 | $q_err | $h_rps ($mib MiB/s) | $h_err |"$'\n'
  log "expensive neighbour, $name: quiet alone p50/p99 $a_p50/$a_p99 ms, beside the heavy tenant $b_p50/$b_p99 ms ($r50 / $r99); heavy answered $h_rps/s, $h_err failed"
  if [[ $name == portcullis* ]]; then
    HEAVY_METRICS+="    # $name"$'\n'
    HEAVY_METRICS+=$(curl -s "http://127.0.0.1:$HEAVY_METRICS_PORT/metrics" |
      grep -E '^portcullis_(fairness_(queued_requests|timeouts_total|wait_seconds_(sum|count))|requests_total\{.*tenant="heavy")' |
      sed 's/^/    /')
    HEAVY_METRICS+=$'\n'
  fi
  stop_bg "heavy-$name"
}

NOISY_ROWS=""
NOISY_METRICS=""
log "noisy neighbour: quiet $QUIET_RATE req/s open loop, noisy flood $NOISY_CONNS connections (limit $NOISY_LIMIT/s), ${NOISY_SECS}s each"
noisy_target portcullis
noisy_target portcullis-noescalation
if [[ -z $NGINX_MISSING ]]; then
  noisy_target nginx
fi
NOISY_LINES="Tenant \`quiet\`: $QUIET_RATE req/s open loop (16 connections); tenant \`noisy\` (rate limit $NOISY_LIMIT/s): $NOISY_CONNS keep-alive connections as fast as they are answered. ${NOISY_SECS} s each; the quiet run beside the flood starts 1 s into it. $NOISY_ROUNDS rounds per target (alone, then beside): the latencies are medians over rounds, the ratios the median of each round's beside / alone.

| target | quiet alone p50 / p99 ms | quiet beside the flood p50 / p99 ms | beside / alone | quiet errors | flood answered /s | flood failures |
|---|---:|---:|---:|---:|---:|---:|
$NOISY_ROWS
Portcullis's counters after the flood (the noisy tenant's decisions, escalations, connections refused at accept):

$NOISY_METRICS"

if [[ $HEAVY == 1 ]]; then
  HEAVY_ROWS=""
  HEAVY_METRICS=""
  heavy_body "$WORK/heavy.json"
  log "expensive neighbour: quiet $QUIET_RATE req/s open loop, heavy $HEAVY_CONNS connections POSTing $HEAVY_BYTES bytes (DLP-scanned), fairness max_in_flight ${FAIR_SLOTS// / and }, ${NOISY_SECS}s each"
  for slots in $FAIR_SLOTS; do
    heavy_target "portcullis-fair$slots"
  done
  heavy_target portcullis
  if [[ -z $NGINX_MISSING ]]; then
    heavy_target nginx
  fi
  NOISY_LINES+="
Beside an expensive but allowed tenant: tenant \`quiet\` as above; tenant \`heavy\` (rate limit 10M/s, never refused; request DLP: card_number, us_ssn, private_key, aws_secret_key, nothing matching) POSTs $(wc -c <"$WORK/heavy.json") bytes of JSON over $HEAVY_CONNS keep-alive connections as fast as they are answered. portcullis-fair*N*: \`fairness: { max_in_flight: N }\`, quiet and heavy weight 1 each (so while both are active the heavy tenant holds at most half the slots, and its body chunks give way to the quiet tenant's requests); portcullis: no fairness section; all Portcullis targets without audit. nginx proxies the same body with no DLP (it has none), the body kept in memory (\`client_body_buffer_size\`). ${NOISY_SECS} s each, $NOISY_ROUNDS rounds per target as above; the quiet run beside the heavy tenant starts 1 s into it; both load generators share the load core, the heavy one at \`nice -n 19\`.

| target | quiet alone p50 / p99 ms | quiet beside heavy p50 / p99 ms | beside / alone | quiet errors | heavy answered /s | heavy failures |
|---|---:|---:|---:|---:|---:|---:|
$HEAVY_ROWS
Portcullis's fairness counters and the heavy tenant's requests after the run:

$HEAVY_METRICS"
else
  NOISY_LINES+="
The expensive-but-allowed neighbour: not measured (HEAVY=0)."
fi
