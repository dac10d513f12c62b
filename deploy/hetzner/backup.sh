#!/bin/sh
# Nightly pg_dump of the cell's database to /backups (the storage box), at
# 03:30 UTC, keeping BACKUP_KEEP_DAYS days. A dump is written to a temporary
# name and renamed once complete, so a half-written file is never taken for
# a backup. Restore with restore.sh.
set -eu
keep="${BACKUP_KEEP_DAYS:-14}"
while true; do
  now=$(date -u +%s)
  next=$(date -u -d "$(date -u +%Y-%m-%d) 03:30" +%s)
  [ "$next" -gt "$now" ] || next=$((next + 86400))
  sleep $((next - now))
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  if pg_dump --format=custom --file="/backups/.webhost-$stamp.dump.part"; then
    mv "/backups/.webhost-$stamp.dump.part" "/backups/webhost-$stamp.dump"
    find /backups -name 'webhost-*.dump' -mtime +"$keep" -delete
    echo "backup webhost-$stamp.dump done"
  else
    rm -f "/backups/.webhost-$stamp.dump.part"
    echo "backup $stamp FAILED" >&2
  fi
done
