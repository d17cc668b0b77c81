#!/usr/bin/env bash
# Build the local images the tests and the offline stack use. No registry is reachable
# here, so nothing is pulled: each image is a root filesystem assembled from this host's
# own binaries and the libraries `ldd` names, loaded with `docker import`.
#
#   vrooli-test/postgres:15      real Postgres 15 (Debian's), initdb on first start
#   vrooli-test/redis:7          real redis-server
#   vrooli-test/standin:1        Python stdlib + the stand-ins for qdrant, n8n and ollama
#
# Idempotent: an image whose inputs have not changed is not rebuilt (label vrooli.inputs).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/vrooli-images.XXXXXX)
trap 'rm -rf "$work"' EXIT

need() { command -v "$1" >/dev/null || { echo "build-test-images: $1 is required" >&2; exit 1; }; }
need docker
need ldd

copy_with_libs() {  # copy_with_libs ROOT FILE... : files plus every library ldd lists
  local root=$1; shift
  local f lib
  for f in "$@"; do
    [ -e "$f" ] || continue
    mkdir -p "$root$(dirname "$f")"
    cp -a "$f" "$root$f"
    if [ -L "$f" ]; then
      local real; real=$(readlink -f "$f")
      mkdir -p "$root$(dirname "$real")"; cp -a "$real" "$root$real"
    fi
    for lib in $(ldd "$f" 2>/dev/null | grep -oE '/[^ ]+' || true); do
      [ -e "$root$lib" ] && continue
      mkdir -p "$root$(dirname "$lib")"
      cp -aL "$lib" "$root$lib"
    done
  done
}

base_root() {  # minimal userland: sh, a passwd with an unprivileged user, /tmp
  local root=$1
  mkdir -p "$root"/{bin,etc,tmp,dev,proc,sys,usr/bin}
  chmod 1777 "$root/tmp"
  copy_with_libs "$root" /usr/bin/dash /usr/bin/cat /usr/bin/sleep /usr/bin/rm /usr/bin/env
  ln -sf /usr/bin/dash "$root/bin/sh"
  printf 'root:x:0:0:root:/root:/bin/sh\npostgres:x:999:999:postgres:/var/lib/postgresql:/bin/sh\nredis:x:998:998:redis:/data:/bin/sh\nnode:x:1000:1000:node:/home/node:/bin/sh\n' > "$root/etc/passwd"
  printf 'root:x:0:\npostgres:x:999:\nredis:x:998:\nnode:x:1000:\n' > "$root/etc/group"
  echo "hosts: files dns" > "$root/etc/nsswitch.conf"
  for lib in /lib/x86_64-linux-gnu/libnss_files.so.2 /lib/x86_64-linux-gnu/libnss_dns.so.2 \
             /lib/aarch64-linux-gnu/libnss_files.so.2 /lib/aarch64-linux-gnu/libnss_dns.so.2; do
    [ -e "$lib" ] && copy_with_libs "$root" "$lib"
  done
  return 0
}

import_image() {  # import_image ROOT TAG INPUTS_HASH CHANGES...
  local root=$1 tag=$2 inputs=$3; shift 3
  local args=(--change "LABEL vrooli.inputs=$inputs" --change "LABEL vrooli.test-image=true")
  local change
  for change in "$@"; do args+=(--change "$change"); done
  local old; old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
  tar --numeric-owner -C "$root" -c . | docker import "${args[@]}" - "$tag" >/dev/null
  # The image this one replaces is ours and now untagged: do not leave it dangling.
  if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]; then
    docker rmi "$old" >/dev/null 2>&1 || true
  fi
  echo "built $tag"
}

current_inputs() { docker image inspect -f '{{index .Config.Labels "vrooli.inputs"}}' "$1" 2>/dev/null || true; }

# ---------------------------------------------------------------- postgres
pg_bin=/usr/lib/postgresql/15/bin
pg_inputs=$( (sha256sum "$pg_bin/postgres" "$here/scripts/images/postgres-entrypoint.sh") | sha256sum | cut -c1-16)
if [ "$(current_inputs vrooli-test/postgres:15)" != "$pg_inputs" ]; then
  [ -x "$pg_bin/postgres" ] || { echo "build-test-images: Postgres 15 is not installed ($pg_bin)" >&2; exit 1; }
  root=$work/postgres; base_root "$root"
  copy_with_libs "$root" "$pg_bin"/* /usr/lib/postgresql/15/lib/*.so
  mkdir -p "$root/usr/share/postgresql" "$root/usr/share/zoneinfo"
  cp -a /usr/share/postgresql/15 "$root/usr/share/postgresql/"
  cp -a /usr/share/zoneinfo/. "$root/usr/share/zoneinfo/"
  install -m 0755 "$here/scripts/images/postgres-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh" 2>/dev/null || {
    mkdir -p "$root/usr/local/bin"; install -m 0755 "$here/scripts/images/postgres-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"; }
  mkdir -p "$root/var/lib/postgresql/data" "$root/var/run/postgresql"
  chown -R 999:999 "$root/var/lib/postgresql" "$root/var/run/postgresql"
  chmod 700 "$root/var/lib/postgresql/data"
  import_image "$root" vrooli-test/postgres:15 "$pg_inputs" \
    "USER 999" "ENV PATH=$pg_bin:/usr/local/bin:/usr/bin:/bin" "ENV PGDATA=/var/lib/postgresql/data" \
    'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' "EXPOSE 5432"
else
  echo "up to date vrooli-test/postgres:15"
fi

# ---------------------------------------------------------------- redis
redis_bin=$(command -v redis-server || true)
[ -n "$redis_bin" ] || { echo "build-test-images: redis-server is not installed" >&2; exit 1; }
redis_inputs=$( (sha256sum "$(readlink -f "$redis_bin")" "$here/scripts/images/redis-entrypoint.sh" "$0") | sha256sum | cut -c1-16)
if [ "$(current_inputs vrooli-test/redis:7)" != "$redis_inputs" ]; then
  root=$work/redis; base_root "$root"
  copy_with_libs "$root" "$(readlink -f "$redis_bin")" "$(readlink -f "$(command -v redis-cli)")"
  for tool in redis-server redis-cli; do
    real=$(readlink -f "$(command -v "$tool")")
    [ "$real" = "/usr/bin/$tool" ] || ln -sf "$real" "$root/usr/bin/$tool"
  done
  mkdir -p "$root/data" "$root/usr/local/bin"; chown 998:998 "$root/data"
  install -m 0755 "$here/scripts/images/redis-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
  import_image "$root" vrooli-test/redis:7 "$redis_inputs" \
    "USER 998" "WORKDIR /data" "ENV PATH=/usr/local/bin:/usr/bin:/bin" \
    'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' 'CMD ["redis-server"]' "EXPOSE 6379"
else
  echo "up to date vrooli-test/redis:7"
fi

# ---------------------------------------------------------------- stand-ins (Python stdlib)
py=/usr/bin/python3.11
[ -x "$py" ] || { echo "build-test-images: $py is required (apt-get install python3)" >&2; exit 1; }
standin_inputs=$( (sha256sum "$py" "$here"/tests/standins/*.py) | sha256sum | cut -c1-16)
if [ "$(current_inputs vrooli-test/standin:1)" != "$standin_inputs" ]; then
  root=$work/standin; base_root "$root"
  copy_with_libs "$root" "$py"
  ln -sf python3.11 "$root/usr/bin/python3"
  mkdir -p "$root/usr/lib/python3.11"
  (cd /usr/lib/python3.11 && tar --exclude=test --exclude=idlelib --exclude=tkinter --exclude=turtledemo \
      --exclude=ensurepip --exclude=lib2to3 --exclude=pydoc_data --exclude=__pycache__ \
      --exclude=dist-packages --exclude=site-packages -c .) | tar -C "$root/usr/lib/python3.11" -x
  copy_with_libs "$root" /usr/lib/python3.11/lib-dynload/*.so
  mkdir -p "$root/standins" "$root/home/node/.n8n" "$root/qdrant/storage" "$root/root/.ollama"
  chown -R 1000:1000 "$root/home/node"
  cp "$here"/tests/standins/*.py "$root/standins/"
  import_image "$root" vrooli-test/standin:1 "$standin_inputs" \
    "ENV PATH=/usr/bin:/bin" "ENV PYTHONDONTWRITEBYTECODE=1" "ENV PYTHONUNBUFFERED=1" \
    'ENTRYPOINT ["python3"]'
else
  echo "up to date vrooli-test/standin:1"
fi
