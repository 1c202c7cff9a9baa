#!/usr/bin/env bash
# The browser login, end to end on one machine: a real OpenID provider (the test provider in
# tests/oidc: npm oidc-provider on Node.js; it logs people in by name, without a password —
# a demo and test tool only), an echo upstream, and a gateway whose /app route needs a login
# and whose /admin route needs MFA, all on loopback. Ctrl-C stops everything.
#
#   deploy/demo-oidc.sh            # then open https://localhost:8443/app/ in a browser
#   PORT=9443 IDP_PORT=9444 deploy/demo-oidc.sh
#   BIN=target/debug/portcullis deploy/demo-oidc.sh   # an existing build
#
# Log in as `alice` (password only: /app works, /admin asks for a step-up) or `bob` (MFA:
# both work). Sign out at /.portcullis/oidc/logout. The browser will warn about the demo's own
# certificate authority ($STATE/ca.pem); trust it or accept the warning for localhost.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-8443}
IDP_PORT=${IDP_PORT:-8444}
ECHO_PORT=${ECHO_PORT:-8081}
METRICS_PORT=${METRICS_PORT:-9901}
STATE=${STATE:-$(mktemp -d -t portcullis-oidc-demo.XXXXXX)}

deploy/setup-debian.sh
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm
fi
command -v openssl >/dev/null || { echo "demo-oidc: openssl is needed" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then            # BIN=path/to/portcullis skips the build
  cargo build --release --locked --bin portcullis
  BIN=$PWD/target/release/portcullis
fi
[ -d tests/oidc/node_modules ] || npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error

mkdir -p "$STATE"
cd "$STATE"
umask 077
# A CA and one certificate for localhost, used by the gateway and the provider alike.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
  -subj "/CN=Portcullis OIDC demo CA" -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 7 \
  -extfile server.ext -out server.pem 2>/dev/null
echo "k1 $(openssl rand -base64 32)" > session-keys
openssl rand -hex 24 > client-secret
chmod 644 ca.pem server.pem

cat > idp.json <<EOF
{
  "port": $IDP_PORT, "host": "127.0.0.1", "issuer": "https://localhost:$IDP_PORT",
  "code_client": { "client_id": "portcullis-demo", "client_secret": "$(cat client-secret)",
                   "redirect_uris": ["https://localhost:$PORT/.portcullis/oidc/callback"] }
}
EOF

cat > gateway.yaml <<EOF
listeners:
  - name: public
    address: 127.0.0.1:$PORT
    tls: { certificate: server.pem, private_key: server.key, client_auth: off }
metrics:
  address: 127.0.0.1:$METRICS_PORT
sessions:
  key_ring: session-keys
upstreams:
  - name: echo
    targets: [127.0.0.1:$ECHO_PORT]
tenants:
  - name: demo
    identity_providers:
      - name: demo-idp
        issuer: https://localhost:$IDP_PORT
        audiences: [https://api.portcullis.test]
        ca: ca.pem
        client_id: portcullis-demo
        client_secret_file: client-secret
        redirect_uri: https://localhost:$PORT/.portcullis/oidc/callback
        scopes: [openid, email, groups, profile, offline_access]
    routes:
      - name: app
        path_prefix: /app
        upstream: echo
        authentication: oidc
        login: demo-idp
        access:
          - id: engineers
            groups: [eng]
      - name: admin
        path_prefix: /admin
        upstream: echo
        authentication: oidc
        login: demo-idp
        mfa: { amr: [mfa] }
        access:
          - id: admins
            groups: [admins]
EOF

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
node "$OLDPWD/tests/oidc/provider.mjs" server.pem server.key idp.json 2> idp.log &
pids+=($!)
"$BIN" echo --listen "127.0.0.1:$ECHO_PORT" --name demo 2> echo.log &
pids+=($!)
"$BIN" check --config gateway.yaml
cat <<EOF

Portcullis OIDC demo (state in $STATE):
  open   https://localhost:$PORT/app/      log in as alice (password) or bob (MFA)
  then   https://localhost:$PORT/admin/    alice is asked to step up; bob gets in
  sign out at https://localhost:$PORT/.portcullis/oidc/logout
  metrics: http://127.0.0.1:$METRICS_PORT/metrics    provider log: $STATE/idp.log

EOF
"$BIN" serve --config gateway.yaml
