#!/usr/bin/env bash
# Two services talking through two sidecars, on one machine: service A (here: you, with curl)
# calls service B (the built-in echo upstream) in plain HTTP through A's sidecar egress
# listener; A's sidecar judges the call as A's workload (rules, egress DLP, access log with
# direction "egress"), and carries it over mTLS with A's X.509-SVID to B's sidecar, which it
# checks by B's SPIFFE ID (the SVIDs carry no DNS names); B's sidecar lets only namespace `a`
# in and forwards to B. Ctrl-C stops everything.
#
#   deploy/demo-sidecar.sh
#   BIN=target/debug/portcullis deploy/demo-sidecar.sh   # an existing build
set -euo pipefail
cd "$(dirname "$0")/.."
EGRESS_PORT=${EGRESS_PORT:-15001}
A_PORT=${A_PORT:-8443}
B_PORT=${B_PORT:-8543}
B_ECHO_PORT=${B_ECHO_PORT:-8082}
STATE=${STATE:-$(mktemp -d -t portcullis-sidecar-demo.XXXXXX)}

deploy/setup-debian.sh
command -v openssl >/dev/null || { echo "demo-sidecar: openssl is needed" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then            # BIN=path/to/portcullis skips the build
  cargo build --release --locked --bin portcullis
  BIN=$PWD/target/release/portcullis
fi

mkdir -p "$STATE"
cd "$STATE"
umask 077
TD=demo.portcullis.local
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
  -subj "/CN=Portcullis sidecar demo CA" -keyout ca.key -out ca.pem 2>/dev/null
for svc in a b; do
  # An X.509-SVID: the SPIFFE ID as the only name, for client and server alike.
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=demo" \
    -keyout "$svc.key" -out "$svc.csr" 2>/dev/null
  printf 'subjectAltName=URI:spiffe://%s/ns/%s/sa/svc\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n' \
    "$TD" "$svc" > "$svc.ext"
  openssl x509 -req -in "$svc.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 7 \
    -extfile "$svc.ext" -out "$svc.pem" 2>/dev/null
done
chmod 644 ca.pem a.pem b.pem

cat > sidecar-a.yaml <<EOF
listeners:
  - name: inbound                    # A's own callers (unused in this demo)
    address: 127.0.0.1:$A_PORT
    tls: { certificate: a.pem, private_key: a.key, client_auth: required, client_ca: ca.pem }
egress:
  - name: outbound                   # A calls out here, in plain HTTP, on loopback only
    address: 127.0.0.1:$EGRESS_PORT
    workload: spiffe://$TD/ns/a/sa/svc
metrics: { address: 127.0.0.1:9911 }
upstreams:
  - name: b
    targets: [127.0.0.1:$B_PORT]
    tls:
      spiffe_id: [spiffe://$TD/ns/b/sa/svc]
      ca: ca.pem
      client_certificate: a.pem
      client_key: a.key
tenants:
  - name: mesh
    dlp: { request: { card_number: block } }
    routes:
      - name: to-b
        host: b.mesh
        upstream: b
        access: [ { id: a-out, spiffe_id: ["spiffe://$TD/ns/a/sa/svc"] } ]
EOF

cat > sidecar-b.yaml <<EOF
listeners:
  - name: inbound
    address: 127.0.0.1:$B_PORT
    tls: { certificate: b.pem, private_key: b.key, client_auth: required, client_ca: ca.pem }
metrics: { address: 127.0.0.1:9912 }
upstreams:
  - name: svc
    targets: [127.0.0.1:$B_ECHO_PORT]
tenants:
  - name: b
    routes:
      - name: svc
        upstream: svc
        access: [ { id: from-a, spiffe_id: ["spiffe://$TD/ns/a/**"] } ]
EOF

"$BIN" check --config sidecar-a.yaml
"$BIN" check --config sidecar-b.yaml
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
"$BIN" echo --listen "127.0.0.1:$B_ECHO_PORT" --name service-b & pids+=($!)
"$BIN" serve --config sidecar-b.yaml 2> sidecar-b.log & pids+=($!)
"$BIN" serve --config sidecar-a.yaml 2> sidecar-a.log & pids+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$EGRESS_PORT") 2>/dev/null && break
  sleep 0.1
done

cat <<EOF

Sidecars running (state in $STATE). As service A, in another terminal:

  # B answers; it saw A's SPIFFE ID, proved by A's SVID over mTLS (x-portcullis-spiffe-id):
  curl -s -H 'Host: b.mesh' http://127.0.0.1:$EGRESS_PORT/orders/1
  # Egress DLP: a card number leaving A is blocked (403):
  curl -s -H 'Host: b.mesh' -H 'Content-Type: application/json' \\
       -d '{"card":"4111 1111 1111 1111"}' http://127.0.0.1:$EGRESS_PORT/orders
  # Only routed hosts leave (404):
  curl -s -H 'Host: elsewhere.example' http://127.0.0.1:$EGRESS_PORT/
  # A's access log, direction "egress":
  tail -n 3 $STATE/sidecar-a.log

Ctrl-C stops the demo.
EOF
wait
