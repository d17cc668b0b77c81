#!/usr/bin/env bash
# Everything a fresh machine needs to run the stack offline and the tests: Debian
# packages (Postgres 15, redis-server, Docker, docker-compose), the Python package with
# its test extra, a running Docker engine, and the locally built images. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
[ -x /usr/bin/python3.11 ] || missing+=(python3)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v docker-registry >/dev/null || missing+=(docker-registry)  # a local registry: pulls in tests
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian postgresql and redis-server packages may start servers of their own (5432,
# 6379). They are the user's: we leave them alone. Tests and the shipped stack use other
# ports (tests pick free ones; the stack uses 5433 and 6380).

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
# An editable install leaves bytecode to the first import, and with PYTHONDONTWRITEBYTECODE
# set (as on this machine) every `vrooli` call would compile the package again: ~40 ms
# of a cold `vrooli up`. Compile it now, as a wheel install would.
python3 -m compileall -q orchestrator tests/standins
# Under pyenv a new console script needs a shim before `vrooli` is on PATH.
if command -v pyenv >/dev/null; then pyenv rehash; fi

if ! docker info >/dev/null 2>&1; then
  echo "setup: starting dockerd"
  # Its pid is kept so that whoever asked for it (CI) can stop exactly this one.
  as_root sh -c 'nohup dockerd >/var/log/vrooli-dockerd.log 2>&1 & echo $! >/run/vrooli-dockerd.pid'
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start; see /var/log/vrooli-dockerd.log" >&2; exit 1; }
fi
scripts/build-test-images.sh
# A Debian root with systemd as PID 1, for tests/test_systemd_real.py (debootstrap from the
# Debian mirror, the dependencies' wheels from PyPI: only here, never at test time).
scripts/build-systemd-image.sh
