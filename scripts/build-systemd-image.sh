#!/usr/bin/env bash
# Build vrooli-test/systemd:bookworm, the image tests/test_systemd_real.py boots: a Debian
# bookworm root made with debootstrap from Debian's own packages (systemd as PID 1,
# python3 3.11 with venv, redis-server as a real resource to supervise), loaded with
# `docker import`. It also holds, in /opt/vrooli-wheels, the wheels of vrooli's
# dependencies and of its build backend, so that inside the container the project is
# built and installed with no index at all (scripts/install-systemd.sh --wheels DIR).
#
# Needs root, debootstrap (installed here if missing) and the Debian mirror; PyPI for the
# wheels. Only at build time: the test itself runs offline. ~80 s, ~310 MB.
#
# Idempotent, like scripts/build-test-images.sh: an image whose inputs (this script and
# the project's dependency list) have not changed is not rebuilt (label vrooli.inputs).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tag=${VROOLI_SYSTEMD_IMAGE:-vrooli-test/systemd:bookworm}
mirror=${VROOLI_DEBIAN_MIRROR:-http://deb.debian.org/debian}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
command -v docker >/dev/null || { echo "build-systemd-image: docker is required" >&2; exit 1; }

# The dependency list and the build backend, not the whole pyproject: editing the test
# extras or the version must not cost a rebuild.
deps=$(python3 -c 'import tomllib,sys; p = tomllib.load(open(sys.argv[1], "rb"))
print("\n".join(p["project"]["dependencies"] + p["build-system"]["requires"]))' "$here/pyproject.toml")
inputs=$( (sha256sum "$0" | cut -d' ' -f1; echo "$deps") | sha256sum | cut -c1-16)
current=$(docker image inspect -f '{{index .Config.Labels "vrooli.inputs"}}' "$tag" 2>/dev/null || true)
if [ "$current" = "$inputs" ]; then
  echo "up to date $tag"
  exit 0
fi

if ! command -v debootstrap >/dev/null; then
  echo "build-systemd-image: installing debootstrap"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

work=$(mktemp -d /tmp/vrooli-systemd-image.XXXXXX)
cleanup() { as_root rm -rf "$work"; }
trap cleanup EXIT
root=$work/root

echo "build-systemd-image: debootstrap bookworm (about a minute)"
# minbase + what the test drives: systemd as init, python3 with venv (pip and its bundled
# wheels), redis-server, procps (ps, pgrep for the process counts).
as_root debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,dbus,python3,python3-venv,redis-server,procps \
  bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -20 "$work/debootstrap.log" >&2
    echo "build-systemd-image: debootstrap failed (is $mirror reachable?)" >&2
    exit 1
  }

# Debian enables redis-server.service on install: the test runs its own redis under vrooli,
# so the packaged one stays off. Units that only make sense on a real machine are masked,
# so that boot reaches multi-user.target quickly and `systemctl is-system-running` is honest.
as_root systemctl --root="$root" disable redis-server.service >/dev/null 2>&1 || true
for unit in getty.target console-getty.service systemd-firstboot.service \
            systemd-udevd.service systemd-udev-trigger.service systemd-modules-load.service \
            sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount \
            systemd-remount-fs.service apt-daily.timer apt-daily-upgrade.timer \
            e2scrub_all.timer fstrim.timer; do
  as_root ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# An empty machine-id: systemd makes one at boot, so two containers never share one.
as_root sh -c ": > '$root/etc/machine-id'"
# The journal in memory only: the container is thrown away after the test.
as_root mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRateLimitBurst=0\n' | as_root tee "$root/etc/systemd/journald.conf.d/vrooli-test.conf" >/dev/null

echo "build-systemd-image: wheels of the dependencies and of the build backend"
# Built by this machine's python3 for bookworm's: compiled wheels (psutil, regex) must match.
host_py=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
root_py=$(basename "$(readlink -f "$root/usr/bin/python3")")
[ "python$host_py" = "$root_py" ] || {
  echo "build-systemd-image: python3 here is $host_py, the image has $root_py: the wheels would not fit" >&2; exit 1; }
wheels=$work/wheels
mkdir -p "$wheels"
# `pip wheel .` builds the project and every dependency; the project's own wheel is left
# out of the image (the test builds the checkout it runs from), its build backend is kept
# so that build needs no index either.
python3 -m pip wheel -q --disable-pip-version-check -w "$wheels" "$here"
python3 -c 'import tomllib,sys; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"]))' \
  "$here/pyproject.toml" >"$work/build-requires.txt"
python3 -m pip wheel -q --disable-pip-version-check -w "$wheels" -r "$work/build-requires.txt" wheel
rm -f "$wheels"/vrooli_orchestrator-*.whl
as_root mkdir -p "$root/opt/vrooli-wheels"
as_root cp "$wheels"/*.whl "$root/opt/vrooli-wheels/"

# Smaller image: no package lists, caches, docs or man pages.
as_root rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*

old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
as_root tar --numeric-owner -C "$root" -c . | docker import \
  --change "LABEL vrooli.inputs=$inputs" --change "LABEL vrooli.test-image=true" \
  --change "ENV container=docker" \
  --change 'CMD ["/sbin/init"]' - "$tag" >/dev/null
if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]; then
  docker rmi "$old" >/dev/null 2>&1 || true
fi
echo "built $tag"
