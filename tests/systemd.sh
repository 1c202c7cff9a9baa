#!/usr/bin/env bash
# README "Run it under systemd", run by systemd itself: Debian's systemd booted as PID 1 of new
# PID, mount, network, UTS and IPC namespaces (root only), with /etc, /usr/local, /var/lib,
# /var/log and /var/cache as overlays on the host's (nothing is written to the host's) and
# /run, /tmp fresh. Then, inside it:
#   - the README's steps 1–5, extracted from README.md and run as written (without `sudo` and
#     the release build: this build's binary is installed);
#   - the units active with their sandbox enforced and their secrets as LoadCredential= says,
#     and rated by `systemd-analyze security` on the running services; an mTLS request
#     through the gateway;
#   - `systemctl reload portcullis` (SIGHUP, a reload counted in /metrics);
#   - Prometheus from Debian's package under its own unit, with the README's prometheus.yml
#     and alert rules: it scrapes the gateway and every rule loads;
#   - `systemctl restart portcullis` three times while clients send requests on new
#     connections all along: portcullis.socket holds the listening socket, no request fails;
#   - the admin API through portcullis-admin.socket (systemd holds its listening socket), and
#     `systemctl restart portcullis-admin` five times while clients make mTLS requests to it on
#     new connections all along: no request fails;
#   - `systemctl stop`, and the audit log verifies; a socket unit that disagrees with the
#     config (or a datagram socket) is refused with a clear error, by the gateway and by the
#     admin API.
# Everything listens inside the new network namespace; every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

step() { echo "== systemd: $*" >&2; }
fail() {
  echo "systemd: FAILED: $*" >&2
  if [ -n "${sd:-}" ]; then
    in_ns systemctl status --no-pager --lines=0 portcullis.socket portcullis portcullis-admin.socket portcullis-admin >&2 || true
    in_ns journalctl --no-pager -n 40 -o cat -u portcullis -u portcullis.socket -u portcullis-admin -u portcullis-admin.socket >&2 || true
  fi
  exit 1
}
[ "$(id -u)" = 0 ] || fail "needs root (namespaces, overlays, systemd as PID 1)"

target=${CARGO_TARGET_DIR:-target}
bin="$target/debug/portcullis"
[ -x "$bin" ] || cargo build --locked --bin portcullis
bin=$(cd "$(dirname "$bin")" && pwd)/portcullis

# Not under /tmp: inside, /tmp is a fresh tmpfs (systemd's tmpfiles would empty the host's).
work=$(mktemp -d /var/tmp/portcullis-systemd.XXXXXX)
boot=""
sd=""
cleanup() {
  # Killing PID 1 of the namespace ends everything in it; the overlays go with its mounts.
  [ -z "$sd" ] || kill -KILL "$sd" 2>/dev/null || true
  [ -z "$boot" ] || wait "$boot" 2>/dev/null || true
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"; [ -z "${KEEP_WORK:-}" ] || echo "systemd: kept $work" >&2
}
trap cleanup EXIT
in_ns() { nsenter --target "$sd" --all "$@"; }
# Waits up to $2 tenths of a second for command $1 (run inside) to succeed.
wait_in() {
  local cmd=$1 tries=$2
  for _ in $(seq "$tries"); do
    if in_ns bash -c "$cmd" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  return 1
}

step "booting systemd in new namespaces"
# Units of a full boot that would reach outside the namespaces (devices, kernel settings, the
# clock) or run jobs nobody asked for: masked.
masked="systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket
systemd-udev-trigger.service systemd-udev-settle.service systemd-sysctl.service
systemd-timesyncd.service systemd-pstore.service kmod-static-nodes.service
systemd-tmpfiles-setup-dev.service systemd-binfmt.service proc-sys-fs-binfmt_misc.automount
systemd-modules-load.service systemd-hwdb-update.service systemd-firstboot.service
systemd-machine-id-commit.service systemd-journal-flush.service getty.target
apt-daily.timer apt-daily-upgrade.timer certbot.timer e2scrub_all.timer fstrim.timer
man-db.timer dpkg-db-backup.timer"
cat >"$work/boot.sh" <<EOF
set -e
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
for d in etc usr/local var/lib var/log var/cache; do
  mkdir -p "$work/upper/\$d" "$work/overlay/\$d"
  mount -t overlay overlay -o "lowerdir=/\$d,upperdir=$work/upper/\$d,workdir=$work/overlay/\$d" "/\$d"
done
mkdir -p /run/systemd/system
printf '[Unit]\nDescription=Portcullis systemd test\nDefaultDependencies=no\n' \
  >/run/systemd/system/portcullis-test.target
for unit in $(echo $masked); do ln -s /dev/null "/run/systemd/system/\$unit"; done
ip link set lo up
# systemd makes / a shared mount at boot unless it runs in a container, and this machine may be
# one (Docker: systemd-detect-virt -c); the mounts above are private (unshare). It sets up a
# unit's credentials (LoadCredential=) on a ramfs mounted in a mount namespace of its own and
# relies on propagation to bring it to /run/credentials/UNIT: without it the service finds
# that folder empty and root-only. Shared here, in the test's namespace (not the host's).
mount --make-rshared /
exec /lib/systemd/systemd --system --unit=portcullis-test.target --log-target=console --show-status=no
EOF
unshare --pid --fork --mount --mount-proc --net --uts --ipc --propagation private \
  bash "$work/boot.sh" >"$work/systemd.log" 2>&1 </dev/null &
boot=$!
for _ in $(seq 100); do
  sd=$(pgrep -P "$boot" -x systemd || true)
  [ -n "$sd" ] && break
  sleep 0.1
done
[ -n "$sd" ] || { cat "$work/systemd.log" >&2; fail "systemd did not start"; }
wait_in 'systemctl is-system-running | grep -qE "^(running|degraded)$"' 300 \
  || { tail -n 30 "$work/systemd.log" >&2; fail "systemd never finished booting"; }
echo "systemd: $(in_ns systemctl --version | head -n 1) is PID 1 of the test's namespaces" >&2

step "README steps 1-5, as written"
# The block that starts with step 1, without sudo, with this build instead of a release one.
python3 - "$work/readme-steps.sh" "$bin" "$repo" <<'PY'
import pathlib, re, sys
readme = pathlib.Path("README.md").read_text()
block = next(b for b in re.findall(r"```sh\n(.*?)```", readme, re.S)
             if b.startswith("# 1. The binary"))
block = block.replace("cargo build --release --locked\n", "")
# Run from a scratch folder (the files of step 3 land there), the repository's scripts by path.
block = block.replace("sudo deploy/systemd/install.sh", f"{sys.argv[3]}/deploy/systemd/install.sh --bin {sys.argv[2]}")
block = block.replace("sudo ", "")
assert "systemctl enable --now" in block, "README step 5 starts no service"
# Split before step 5's start, so that the credential check below can come in between.
before, start = block.split("systemctl enable", 1)
pathlib.Path(sys.argv[1]).write_text("set -euxo pipefail\n" + before)
pathlib.Path(sys.argv[1] + ".start").write_text("set -euxo pipefail\nsystemctl enable" + start)
PY
mkdir -p "$work/steps"
# Step 5's "edit gateway.yaml": the example's upstream (127.0.0.1:8080) is this echo server.
in_ns systemd-run --quiet --unit=app-echo "$bin" echo --listen 127.0.0.1:8080 --name app
(cd "$work/steps" && in_ns bash "$work/readme-steps.sh") >"$work/steps.log" 2>&1 \
  || { tail -n 30 "$work/steps.log" >&2; fail "README steps 1-5"; }
# Credentials (LoadCredential=) as the units use them, for a service that is not root: a probe
# first, so that a machine where they do not work says so here rather than as a service that
# cannot read its key. (`systemd-run --wait` would need D-Bus, which this boot does not start;
# a oneshot's start waits for it to end and fails with it.)
echo probe | install -m 0600 /dev/stdin "$work/probe.cred"
in_ns systemd-run --quiet --unit=credential-probe -p Type=oneshot -p "LoadCredential=probe:$work/probe.cred" \
  -p User=nobody bash -c '[ "$(cat "$CREDENTIALS_DIRECTORY/probe")" = probe ]' 2>/dev/null \
  || { in_ns journalctl --no-pager -o cat -u credential-probe >&2; fail "systemd does not hand a credential (LoadCredential=) to a non-root service"; }
# The admin API's rate limits (30 calls a minute per identity by default) would answer the
# load below with 429s: raised for this test, so that what is counted is the restarts.
printf 'rate_limits:\n  per_identity: { requests: 100000, per: 1m, burst: 100000 }\n  per_source: { requests: 100000, per: 1m, burst: 100000 }\n' \
  | in_ns tee -a /etc/portcullis/admin.yaml >/dev/null
echo "systemd: NOTE admin.yaml's rate limits raised to 100000 a minute for the restart load (test only)" >&2
(cd "$work/steps" && in_ns bash "$work/readme-steps.sh.start") >>"$work/steps.log" 2>&1 \
  || { tail -n 30 "$work/steps.log" >&2; fail "README step 5"; }
for unit in portcullis.socket portcullis.service portcullis-admin.socket portcullis-admin.service; do
  wait_in "systemctl is-active --quiet $unit" 100 || fail "$unit is not active"
done
wait_in "curl -sf http://127.0.0.1:9901/readyz" 150 || fail "the gateway never became ready"
for unit in portcullis.service portcullis-admin.service; do
  exposure=$(in_ns systemd-analyze security --no-pager "$unit" | tail -n 1)
  echo "systemd: $unit (running): ${exposure#→ }" >&2
  in_ns systemd-analyze security --no-pager --threshold=20 "$unit" >/dev/null \
    || fail "$unit: exposure above 2.0: $exposure"
done

step "an mTLS request through the gateway"
state=/var/lib/portcullis-ca/state
in_ns bash -c "cd '$work/steps' && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj /CN=frontend -addext subjectAltName=URI:spiffe://acme.example/ns/prod/sa/frontend \
  -keyout frontend.key -out frontend.csr 2>/dev/null && \
  portcullis ca issue --config /etc/portcullis/ca-root.yaml --csr frontend.csr --tenant acme \
  --profile workloads --out frontend.pem 2>/dev/null" || fail "issuing the client certificate"
request() { # prints the HTTP status of one GET on a new connection
  in_ns curl -s -o /dev/null -w '%{http_code}' --max-time 5 --resolve api.acme.example:443:127.0.0.1 \
    --cacert "$state/bundle.pem" --cert "$work/steps/frontend.pem" --key "$work/steps/frontend.key" \
    "https://api.acme.example/api/orders/$1" || true
}
[ "$(request first)" = 200 ] || fail "mTLS request through the gateway"

step "systemctl reload portcullis"
reloads() { in_ns curl -sf http://127.0.0.1:9901/metrics | sed -n 's/^portcullis_config_reloads_total{result="success"} //p'; }
before=$(reloads)
in_ns systemctl reload portcullis
wait_in "curl -sf http://127.0.0.1:9901/metrics | grep -q 'portcullis_config_reloads_total{result=\"success\"} $((${before:-0} + 1))\$'" 100 \
  || fail "systemctl reload did not reload the config (successful reloads before: ${before:-none})"

step "Prometheus under its unit, with the README's prometheus.yml"
python3 - "$work/prometheus.yml" <<'PY'
import pathlib, re, sys
readme = pathlib.Path("README.md").read_text()
block = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S)
             if b.startswith("# /etc/prometheus/prometheus.yml (on the gateway's host)"))
pathlib.Path(sys.argv[1]).write_text(block.replace("scrape_interval: 15s", "scrape_interval: 1s"))
PY
in_ns install -m 0644 "$work/prometheus.yml" /etc/prometheus/prometheus.yml
in_ns systemctl start prometheus
# The README's two commands, as written.
sh_block=$(python3 -c '
import pathlib, re
readme = pathlib.Path("README.md").read_text()
print(next(b for b in re.findall(r"```sh\n(.*?)```", readme, re.S) if "deploy/observability/alerts.yml /etc/prometheus" in b).replace("sudo ", ""))')
in_ns bash -euc "cd '$repo' && $sh_block" >"$work/prometheus-steps.log" 2>&1 \
  || { cat "$work/prometheus-steps.log" >&2; fail "the README's Prometheus steps"; }
prom_query() { in_ns curl -sf --max-time 2 http://127.0.0.1:9090/api/v1/query --data-urlencode "query=$1"; }
for _ in $(seq 300); do
  prom_query 'up{job="portcullis"} == 1' 2>/dev/null | grep -q '"value"' && break
  sleep 0.1
done
prom_query 'up{job="portcullis"} == 1' | grep -q '"value"' || fail "Prometheus never scraped the gateway"
in_ns curl -sf --max-time 2 http://127.0.0.1:9090/api/v1/rules | python3 tests/prometheus_rules.py "systemd: Prometheus (its own unit) scrapes the gateway" || fail "the alert rules did not load"

step "systemctl restart portcullis x3 under load: no failed request"
# Four clients, each a request on a new connection after the other, for the whole run
# (bounded: 60 s or 3,000 requests each); a failure is any answer but 200.
client() { # client N REQUEST-FUNCTION
  local ok=0 failed=0 started=$SECONDS
  for i in $(seq 3000); do
    [ -e "$work/stop" ] || [ $((SECONDS - started)) -ge 60 ] && break
    code=$("$2" "c$1-$i")
    if [ "$code" = 200 ]; then ok=$((ok + 1)); else failed=$((failed + 1)); echo "c$1-$i: $code" >>"$work/failures"; fi
  done
  echo "$ok $failed" >"$work/client-$1"
}
load_start() { # load_start REQUEST-FUNCTION: four clients, until load_stop
  rm -f "$work/stop" "$work/failures" "$work"/client-?
  clients=()
  for c in 1 2 3 4; do client "$c" "$1" & clients+=($!); done
}
load_stop() { # sets ok and failed
  touch "$work/stop"
  for p in "${clients[@]}"; do wait "$p"; done
  ok=0 failed=0
  for c in 1 2 3 4; do read -r o f <"$work/client-$c"; ok=$((ok + o)) failed=$((failed + f)); done
}
load_start request
sleep 2
restart_ms=()
for round in 1 2 3; do
  old=$(in_ns systemctl show -P MainPID portcullis)
  t0=$(date +%s%N)
  in_ns systemctl restart portcullis || fail "systemctl restart portcullis (round $round)"
  restart_ms+=($((($(date +%s%N) - t0) / 1000000)))
  new=$(in_ns systemctl show -P MainPID portcullis)
  [ "$new" != "$old" ] && [ "$new" != 0 ] || fail "round $round: the main process did not change ($old -> $new)"
  sleep 2
done
load_stop
echo "systemd: FIGURE 3 restarts under load: $ok requests answered 200, $failed failed; systemctl restart took ${restart_ms[*]} ms" >&2
[ "$failed" = 0 ] || { head -n 20 "$work/failures" >&2; fail "$failed requests failed across systemctl restart"; }
[ "$ok" -ge 40 ] || fail "only $ok requests were sent: the load did not run"

step "the admin API through portcullis-admin.socket"
admin_request() { # prints the HTTP status of one mTLS GET of the admin API on a new connection
  in_ns curl -s -o /dev/null -w '%{http_code}' --max-time 5 --resolve ca.acme.example:9443:127.0.0.1 \
    --cacert "$state/bundle.pem" --cert "$work/steps/frontend.pem" --key "$work/steps/frontend.key" \
    "https://ca.acme.example:9443/v1/crl?$1" || true
}
wait_in "curl -s -o /dev/null --max-time 2 --cacert $state/bundle.pem --resolve ca.acme.example:9443:127.0.0.1 https://ca.acme.example:9443/" 150 \
  || fail "the admin API never answered on 9443"
[ "$(admin_request first)" = 200 ] || fail "mTLS request to the admin API"
# The socket is systemd's (PID 1 holds it, the service uses it), and the service says it took it.
in_ns ss -ltnpH 'sport = :9443' | grep -q 'pid=1,' || { in_ns ss -ltnp 'sport = :9443' >&2; fail "9443 is not systemd's socket"; }
in_ns journalctl --no-pager -o cat -u portcullis-admin | grep -q 'listening socket passed by systemd' \
  || fail "portcullis-admin did not take its socket from systemd"
echo "systemd: the admin API answers on portcullis-admin.socket (0.0.0.0:9443, held by PID 1)" >&2

rounds=5
step "systemctl restart portcullis-admin x$rounds under load: no failed request"
load_start admin_request
sleep 2
restart_ms=()
for round in $(seq $rounds); do
  old=$(in_ns systemctl show -P MainPID portcullis-admin)
  t0=$(date +%s%N)
  in_ns systemctl restart portcullis-admin || fail "systemctl restart portcullis-admin (round $round)"
  restart_ms+=($((($(date +%s%N) - t0) / 1000000)))
  new=$(in_ns systemctl show -P MainPID portcullis-admin)
  [ "$new" != "$old" ] && [ "$new" != 0 ] || fail "round $round: the admin API's main process did not change ($old -> $new)"
  sleep 2
done
load_stop
echo "systemd: FIGURE $rounds admin API restarts under load: $ok mTLS requests answered 200, $failed failed; systemctl restart portcullis-admin took ${restart_ms[*]} ms" >&2
[ "$failed" = 0 ] || { head -n 20 "$work/failures" >&2; fail "$failed admin API requests failed across systemctl restart"; }
[ "$ok" -ge 40 ] || fail "only $ok admin API requests were sent: the load did not run"

step "systemctl stop; the audit log verifies"
in_ns systemctl stop portcullis portcullis.socket portcullis-admin portcullis-admin.socket
in_ns systemctl is-failed --quiet portcullis && fail "portcullis failed on stop"
in_ns portcullis audit verify /var/lib/portcullis/audit --key /var/lib/portcullis/audit.pub \
  >/dev/null 2>"$work/verify.err" || { cat "$work/verify.err" >&2; fail "audit verify"; }
echo "systemd: $(grep 'audit verify:' "$work/verify.err")" >&2
step "a socket unit that disagrees with the config is refused"
# A socket no listener serves would take connections nobody answers: the gateway says so.
# (systemd-socket-activate starts the program at the first connection.)
in_ns timeout 20 systemd-socket-activate -l 127.0.0.1:8443 \
  portcullis serve --config /etc/portcullis/gateway.yaml >"$work/stray.log" 2>&1 &
stray=$!
wait_in "exec 3<>/dev/tcp/127.0.0.1/8443" 50 || fail "systemd-socket-activate did not listen"
if wait "$stray"; then fail "the gateway started with a socket for 127.0.0.1:8443, which no listener names"; fi
grep -q 'systemd passed a listening socket for 127.0.0.1:8443' "$work/stray.log" \
  || { cat "$work/stray.log" >&2; fail "no clear error for a stray socket"; }
# A datagram socket where a listener's address is (a socket unit with ListenDatagram=): refused
# by what it is, not taken for a TCP listener.
in_ns timeout 20 systemd-socket-activate --datagram -l 127.0.0.1:443 \
  portcullis serve --config /etc/portcullis/gateway.yaml >"$work/datagram.log" 2>&1 &
stray=$!
wait_in "ss -ulnH | grep -q '127.0.0.1:443 '" 50 || fail "systemd-socket-activate did not bind the datagram socket"
in_ns bash -c 'echo x >/dev/udp/127.0.0.1/443'
if wait "$stray"; then fail "the gateway started with a datagram socket passed by systemd"; fi
grep -q 'socket activation: socket 0 passed by systemd' "$work/datagram.log" \
  || { cat "$work/datagram.log" >&2; fail "no clear error for a datagram socket"; }
step "an admin socket unit that disagrees with admin.yaml is refused"
in_ns timeout 20 systemd-socket-activate -l 127.0.0.1:8444 \
  portcullis admin serve --config /etc/portcullis/admin.yaml >"$work/admin-stray.log" 2>&1 &
stray=$!
wait_in "exec 3<>/dev/tcp/127.0.0.1/8444" 50 || fail "systemd-socket-activate did not listen"
if wait "$stray"; then fail "the admin API started with a socket for 127.0.0.1:8444, not admin.yaml's listen"; fi
grep -q "systemd passed a listening socket for 127.0.0.1:8444 (portcullis-admin.socket's ListenStream=), but \`listen\` in /etc/portcullis/admin.yaml is 0.0.0.0:9443" "$work/admin-stray.log" \
  || { cat "$work/admin-stray.log" >&2; fail "no clear error for a stray admin socket"; }
# Two sockets (the right one and another): refused too, rather than one of them left unserved.
in_ns timeout 20 systemd-socket-activate -l 0.0.0.0:9443 -l 127.0.0.1:8445 \
  portcullis admin serve --config /etc/portcullis/admin.yaml >"$work/admin-two.log" 2>&1 &
stray=$!
wait_in "exec 3<>/dev/tcp/127.0.0.1/8445" 50 || fail "systemd-socket-activate did not listen"
if wait "$stray"; then fail "the admin API started with two sockets passed by systemd"; fi
grep -q 'systemd passed 2 sockets (LISTEN_FDS); portcullis-admin.socket must list exactly one ListenStream=' "$work/admin-two.log" \
  || { cat "$work/admin-two.log" >&2; fail "no clear error for two admin sockets"; }
in_ns timeout 20 systemd-socket-activate --datagram -l 0.0.0.0:9443 \
  portcullis admin serve --config /etc/portcullis/admin.yaml >"$work/admin-datagram.log" 2>&1 &
stray=$!
wait_in "ss -ulnH | grep -q '0.0.0.0:9443 '" 50 || fail "systemd-socket-activate did not bind the datagram socket"
in_ns bash -c 'echo x >/dev/udp/127.0.0.1/9443'
if wait "$stray"; then fail "the admin API started with a datagram socket passed by systemd"; fi
grep -q 'socket activation: socket 0 passed by systemd (LISTEN_FDS): .*portcullis-admin.socket may list one TCP ListenStream= only' "$work/admin-datagram.log" \
  || { cat "$work/admin-datagram.log" >&2; fail "no clear error for a datagram admin socket"; }
echo "systemd: the admin API refuses a stray socket, two sockets and a datagram socket: $(tail -n 1 "$work/admin-datagram.log")" >&2
echo "systemd: ok" >&2
