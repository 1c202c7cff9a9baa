#!/usr/bin/env bash
# Installs Portcullis as system services: the binary, the two services and their socket units,
# the sysusers.d and tmpfiles.d entries (applied at once), example configs (never over existing
# ones), their JSON Schemas, man pages and bash completion. Then: README.md, "Run it under systemd".
#
#   deploy/systemd/install.sh [--root DIR] [--bin PATH]
#
# --root installs into DIR instead of / (the tests do; nothing is started then).
set -euo pipefail

root=/
bin=target/release/portcullis
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    *) echo "usage: $0 [--root DIR] [--bin PATH]" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")" && pwd)
r=${root%/}
[ -x "$bin" ] || { echo "install: $bin not found; build it with: cargo build --release --locked" >&2; exit 1; }

install -D -m 0755 "$bin" "$r/usr/local/bin/portcullis"
install -D -m 0644 "$here/portcullis.service" "$r/etc/systemd/system/portcullis.service"
install -D -m 0644 "$here/portcullis.socket" "$r/etc/systemd/system/portcullis.socket"
install -D -m 0644 "$here/portcullis-admin.service" "$r/etc/systemd/system/portcullis-admin.service"
install -D -m 0644 "$here/portcullis-admin.socket" "$r/etc/systemd/system/portcullis-admin.socket"
install -D -m 0644 "$here/sysusers.d/portcullis.conf" "$r/usr/lib/sysusers.d/portcullis.conf"
install -D -m 0644 "$here/tmpfiles.d/portcullis.conf" "$r/usr/lib/tmpfiles.d/portcullis.conf"
mkdir -p "$r/etc"
systemd-sysusers --root="$root" portcullis.conf
systemd-tmpfiles --root="$root" --create portcullis.conf

# Example configs, readable by their service's group only; an existing file is kept.
gid() { awk -F: -v n="$1" '$1 == n { print $3 }' "$r/etc/group"; }
for pair in gateway:portcullis ca:portcullis-ca admin:portcullis-ca; do
  name=${pair%%:*} group=${pair#*:}
  target="$r/etc/portcullis/$name.yaml"
  [ -e "$target" ] || install -m 0640 -o 0 -g "$(gid "$group")" "$here/../config/$name.yaml" "$target"
  "$r/usr/local/bin/portcullis" config schema --kind "$name" >"$r/etc/portcullis/portcullis-$name.schema.json"
done

"$r/usr/local/bin/portcullis" man --dir "$r/usr/local/share/man/man1"
install -d "$r/usr/local/share/bash-completion/completions"
"$r/usr/local/bin/portcullis" completions bash >"$r/usr/local/share/bash-completion/completions/portcullis"

if [ "$r" = "" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
echo "install: done under ${root}; next: README.md, \"Run it under systemd\"" >&2
