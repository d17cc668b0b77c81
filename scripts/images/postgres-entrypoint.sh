#!/bin/sh
# A small stand-in for the official postgres image's entrypoint, for real Postgres 15:
# the same environment (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, PGDATA).
set -e
PGDATA=${PGDATA:-/var/lib/postgresql/data}
POSTGRES_USER=${POSTGRES_USER:-postgres}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "initializing database in $PGDATA"
  printf '%s\n' "${POSTGRES_PASSWORD:-postgres}" > /tmp/pwfile
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile=/tmp/pwfile --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 --no-locale --no-sync >/dev/null
  rm -f /tmp/pwfile
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
  if [ "$POSTGRES_DB" != "postgres" ]; then
    echo "CREATE DATABASE \"$POSTGRES_DB\";" | postgres --single -D "$PGDATA" -j postgres >/dev/null
  fi
  echo "initialization complete"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
