#!/usr/bin/env bash
# Install vrooli as a systemd service: a system user in the docker group, a virtualenv in
# /opt/vrooli, /usr/local/bin/vrooli, /etc/vrooli/resources.toml (kept if present) and the
# unit. Then: systemctl start vrooli; journalctl -u vrooli -f; curl 127.0.0.1:9500/readyz
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "install-systemd: run as root" >&2; exit 1; }
src=$(cd "$(dirname "$0")/.." && pwd)
prefix=${VROOLI_PREFIX:-/opt/vrooli}

getent group docker >/dev/null || groupadd --system docker
id vrooli >/dev/null 2>&1 || useradd --system --home-dir /var/lib/vrooli --no-create-home \
  --shell /usr/sbin/nologin --groups docker vrooli
usermod -aG docker vrooli

python3 -m venv "$prefix/venv"
"$prefix/venv/bin/pip" install -q --disable-pip-version-check "$src"
install -m 0644 "$src/README.md" "$prefix/README.md"
ln -sf "$prefix/venv/bin/vrooli" /usr/local/bin/vrooli

install -d -m 0755 /etc/vrooli
[ -e /etc/vrooli/resources.toml ] || install -m 0644 "$src/resources.toml" /etc/vrooli/resources.toml
install -m 0644 "$src/systemd/vrooli.service" /etc/systemd/system/vrooli.service
systemd-analyze verify /etc/systemd/system/vrooli.service

if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable vrooli.service
  echo "installed; start with: systemctl start vrooli"
else
  echo "installed; systemd is not running here, so nothing was enabled"
fi
