#!/bin/sh
# As the official redis image does: with no config file, leave protected mode off so
# connections through the published port (from the bridge, not loopback) are served.
set -e
if [ "${1:-}" = "redis-server" ]; then
  shift
  exec redis-server --protected-mode no "$@"
fi
exec "$@"
