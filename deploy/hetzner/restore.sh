#!/bin/sh
# Restores a cell's database from a dump made by backup.sh:
#   ./restore.sh /mnt/storagebox/webhost/webhost-20261201T033000Z.dump
# Stops the cell, restores into the running PostgreSQL (dropping what is
# there), starts the cell again. Run it from this directory on the server.
set -eu
dump="${1:?usage: restore.sh DUMP_FILE}"
[ -f "$dump" ] || { echo "no such dump: $dump" >&2; exit 1; }
docker-compose stop webhost
docker-compose exec -T postgres pg_restore --clean --if-exists --no-owner \
  -U webhost -d webhost < "$dump"
docker-compose start webhost
echo "restored $dump"
