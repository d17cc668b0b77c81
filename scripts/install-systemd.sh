#!/usr/bin/env bash
# Install vrooli as a systemd service, or update it, or remove it.
#
#   scripts/install-systemd.sh [--wheels DIR]     install or update (run again after editing
#                                                 /etc/vrooli/resources.toml's data paths)
#   scripts/install-systemd.sh --uninstall [--purge]
#
# Install: the `vrooli` system user and group, a virtualenv in /opt/vrooli with the package,
# /usr/local/bin/vrooli, /etc/vrooli/resources.toml (kept if present; a new one is
# 0640 root:vrooli, as it may hold passwords), the unit systemd/vrooli.service, and a drop-in
# /etc/systemd/system/vrooli.service.d/10-install.conf generated from the config: the data
# paths its resources write (ReadWritePaths=/StateDirectory=, see below) and the docker group
# when there is one. Then: systemctl start vrooli; journalctl -u vrooli -f.
# Operators: `usermod -aG vrooli USER` lets USER run `vrooli status`, `logs`, ... against it.
#
# --wheels DIR installs offline: PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR, from the project's wheel
# and its dependencies' wheels in DIR (on a connected machine: `pip wheel . -w DIR`).
# Without it the package is built from this checkout with pip's usual index.
#
# Idempotent: a second run with the same inputs changes nothing (files are replaced only
# when their content differs, the package only when the wheel's files differ) and succeeds.
#
# --uninstall stops and disables the unit and removes the unit, the drop-in, the virtualenv
# and /usr/local/bin/vrooli. It keeps /etc/vrooli, /var/lib/vrooli and the `vrooli` user and
# group (the kept files are owned by that user; a later system user must not inherit them).
# --purge also removes /etc/vrooli, /var/lib/vrooli and the user and group; data paths
# outside /var/lib/vrooli that the config named are listed and left alone.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
prefix=${VROOLI_PREFIX:-/opt/vrooli}
config_dir=/etc/vrooli
config=$config_dir/resources.toml
unit=/etc/systemd/system/vrooli.service
dropin_dir=/etc/systemd/system/vrooli.service.d
dropin=$dropin_dir/10-install.conf
link=/usr/local/bin/vrooli
state_root=/var/lib/vrooli

usage() { echo "usage: install-systemd.sh [--wheels DIR] | --uninstall [--purge]" >&2; exit 2; }
mode=install wheels="" purge=0
while [ $# -gt 0 ]; do
  case $1 in
    --wheels) [ $# -ge 2 ] || usage; wheels=$(cd "$2" 2>/dev/null && pwd) || {
                echo "install-systemd: --wheels $2: no such directory" >&2; exit 2; }; shift 2 ;;
    --wheels=*) wheels=$(cd "${1#--wheels=}" 2>/dev/null && pwd) || {
                echo "install-systemd: $1: no such directory" >&2; exit 2; }; shift ;;
    --uninstall) mode=uninstall; shift ;;
    --purge) purge=1; shift ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage ;;
  esac
done
[ "$purge" = 0 ] || [ "$mode" = uninstall ] || { echo "install-systemd: --purge goes with --uninstall" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "install-systemd: run as root" >&2; exit 1; }
systemd_running() { [ -d /run/systemd/system ]; }
changed=0

# put_file SRC DEST MODE: install SRC at DEST unless DEST already has that content and mode.
put_file() {
  if [ -f "$2" ] && cmp -s "$1" "$2" && [ "$(stat -c %a "$2")" = "$3" ]; then return 0; fi
  install -D -m "$3" "$1" "$2"
  changed=1
}

# data_paths: the config's data paths as drop-in lines, directories and warnings
# (scripts/systemd_paths.py says how they are found).
data_paths() { python3 "$src/scripts/systemd_paths.py" "$config" "$state_root"; }

# The drop-in: what the config and this machine decide, regenerated on every run.
write_dropin() {
  local tmp; tmp=$(mktemp); local line kind value
  {
    echo "# Written by scripts/install-systemd.sh from $config: run it again after changing"
    echo "# the data paths there. Your own settings belong in another file of this directory."
    echo "[Service]"
    if getent group docker >/dev/null; then
      echo "# Docker's socket is root-equivalent: see the top of vrooli.service."
      echo "SupplementaryGroups=docker"
    fi
  } >"$tmp"
  while IFS= read -r line; do
    kind=${line%% *} value=${line#* }
    case $kind in
      line) echo "$value" >>"$tmp" ;;
      dir)
        if [ ! -e "$value" ]; then
          install -d -o vrooli -g vrooli -m 0750 "$value"
          echo "install-systemd: created $value (vrooli:vrooli 0750)"
        fi ;;
      warn) echo "install-systemd: warning: $value" >&2 ;;
    esac
  done < <(data_paths)
  put_file "$tmp" "$dropin" 644
  rm -f "$tmp"
}

# The project's wheel: the one in --wheels DIR, or one built from this checkout.
project_wheel() {
  local dir=$1
  if [ -z "$wheels" ]; then
    "$prefix/venv/bin/pip" wheel -q --disable-pip-version-check --no-deps -w "$dir" "$src" >&2
  fi
  local found; found=$(ls -t "${wheels:-$dir}"/vrooli_orchestrator-*.whl 2>/dev/null | head -1 || true)
  [ -n "$found" ] || { echo "install-systemd: no vrooli_orchestrator-*.whl in ${wheels:-$dir}" >&2; exit 1; }
  echo "$found"
}

# installed_matches WHEEL: the virtualenv already holds exactly the wheel's files.
installed_matches() {
  "$prefix/venv/bin/python" - "$1" <<'EOF'
import importlib.metadata as md, sys, zipfile

def hashes(text):
    rows = (line.split(",") for line in text.splitlines())
    return {row[0]: row[1] for row in rows if len(row) >= 2 and row[1]}

with zipfile.ZipFile(sys.argv[1]) as wheel:
    record = next(n for n in wheel.namelist() if n.endswith(".dist-info/RECORD"))
    wanted = hashes(wheel.read(record).decode())
try:
    have = hashes(md.distribution("vrooli-orchestrator").read_text("RECORD") or "")
except md.PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if all(have.get(path) == digest for path, digest in wanted.items()) else 1)
EOF
}

install_package() {
  if [ ! -x "$prefix/venv/bin/python" ]; then
    python3 -m venv "$prefix/venv" || {
      echo "install-systemd: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
    changed=1
  fi
  local build; build=$(mktemp -d)
  local wheel; wheel=$(project_wheel "$build")
  if installed_matches "$wheel"; then
    echo "install-systemd: package up to date ($(basename "$wheel"))"
  else
    # The wheel first, with its dependencies; then again by force, since a rebuilt wheel of
    # the same version is "already satisfied" for pip.
    "$prefix/venv/bin/pip" install -q --disable-pip-version-check "$wheel"
    "$prefix/venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel"
    echo "install-systemd: installed $(basename "$wheel")"
    changed=1
  fi
  rm -rf "$build"
}

do_install() {
  getent group vrooli >/dev/null || { groupadd --system vrooli; changed=1; }
  if ! id vrooli >/dev/null 2>&1; then
    useradd --system --gid vrooli --home-dir "$state_root" --no-create-home --shell /usr/sbin/nologin vrooli
    changed=1
  fi
  if [ -n "$wheels" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=$wheels; fi
  install_package
  put_file "$src/README.md" "$prefix/README.md" 644
  if [ "$(readlink "$link" 2>/dev/null)" != "$prefix/venv/bin/vrooli" ]; then
    ln -sfn "$prefix/venv/bin/vrooli" "$link"; changed=1
  fi

  [ -d "$config_dir" ] || { install -d -m 0755 "$config_dir"; changed=1; }
  if [ ! -e "$config" ]; then
    install -m 0640 -o root -g vrooli "$src/resources.toml" "$config"; changed=1
  fi
  put_file "$src/systemd/vrooli.service" "$unit" 644
  write_dropin
  systemd-analyze verify "$unit" >/dev/null

  if systemd_running; then
    if [ "$(systemctl show -p NeedDaemonReload --value vrooli.service)" = yes ]; then systemctl daemon-reload; fi
    systemctl is-enabled -q vrooli.service 2>/dev/null || systemctl enable -q vrooli.service
    if [ "$changed" = 1 ] && systemctl is-active -q vrooli.service; then
      echo "install-systemd: updated; the running daemon keeps the old files until: systemctl restart vrooli"
    elif [ "$changed" = 1 ]; then
      echo "install-systemd: installed; start with: systemctl start vrooli"
    else
      echo "install-systemd: nothing to change"
    fi
  else
    echo "install-systemd: installed; systemd is not running here, so nothing was enabled"
  fi
}

do_uninstall() {
  if systemd_running && [ -e "$unit" ]; then
    # Stopping the daemon stops its resources, in reverse dependency order.
    systemctl disable -q --now vrooli.service 2>/dev/null || systemctl stop vrooli.service || true
  fi
  local outside=""
  if [ "$purge" = 1 ] && [ -f "$config" ]; then
    outside=$(data_paths 2>/dev/null | sed -n 's/^dir //p' || true)
  fi
  rm -f "$unit" "$dropin"
  rmdir "$dropin_dir" 2>/dev/null || true
  if systemd_running; then
    systemctl daemon-reload
    systemctl reset-failed vrooli.service 2>/dev/null || true
  fi
  if [ "$(readlink "$link" 2>/dev/null)" = "$prefix/venv/bin/vrooli" ]; then rm -f "$link"; fi
  rm -rf "$prefix"
  if [ "$purge" = 1 ]; then
    rm -rf "$config_dir" "$state_root"
    if id vrooli >/dev/null 2>&1; then userdel vrooli; fi
    if getent group vrooli >/dev/null; then groupdel vrooli; fi
    echo "install-systemd: removed, with $config_dir, $state_root and the vrooli user"
    if [ -n "$outside" ]; then
      echo "install-systemd: data paths left alone:" $outside
    fi
  else
    echo "install-systemd: removed; kept $config_dir, $state_root and the vrooli user (--purge removes them)"
  fi
}

"do_$mode"
