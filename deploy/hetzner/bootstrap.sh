#!/usr/bin/env bash
# Turns a fresh Debian/Ubuntu server into a WebHost cell: installs Docker
# and Compose, mounts the storage box for backups, writes .env, starts the
# stack (compose.yaml) and has the control plane take the cell in.
#
# Hetzner Cloud runs it from cloud-init.yaml (the hetzner provider fills in
# the variables); on a dedicated server, after the OS install, run it from
# this directory as root with the same variables set:
#
#   WEBHOST_CONTROL_URL=https://control.example.com \
#   WEBHOST_ADMIN_TOKEN=… SECRET_KEY_BASE=… TOKEN_SIGNING_SECRET=… \
#   PUBLIC_HOST=cell-fsn1-2.example.com ./bootstrap.sh
#
# Without WEBHOST_CELL_ID it registers the cell itself (POST
# /api/admin/cells with its public URL) and uses the id it gets; either way
# the control plane marks the cell `active` only once the cell's
# /api/health answers through PUBLIC_HOST. Re-running it is safe: what is
# installed, mounted or generated already is kept.
set -euo pipefail
cd "$(dirname "$0")"

need() { [ -n "${!1:-}" ] || { echo "bootstrap: set $1" >&2; exit 2; }; }
for name in WEBHOST_CONTROL_URL WEBHOST_ADMIN_TOKEN SECRET_KEY_BASE TOKEN_SIGNING_SECRET PUBLIC_HOST; do
  need "$name"
done
POOL="${POOL:-hetzner}"
PRIMARY_REGION="${PRIMARY_REGION:-fsn1}"

log() { printf 'bootstrap: %s\n' "$*"; }

log "packages"
export DEBIAN_FRONTEND=noninteractive
if ! command -v docker-compose >/dev/null || ! command -v curl >/dev/null || ! command -v jq >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq docker.io docker-compose curl jq cifs-utils openssl >/dev/null
fi
systemctl enable --now docker >/dev/null 2>&1 || true

BACKUP_DIR="${BACKUP_DIR:-/mnt/storagebox/webhost}"
if [ -n "${STORAGE_BOX_HOST:-}" ]; then
  log "storage box ${STORAGE_BOX_HOST}"
  need STORAGE_BOX_USER
  need STORAGE_BOX_PASSWORD
  mkdir -p /mnt/storagebox
  umask 077
  printf 'username=%s\npassword=%s\n' "$STORAGE_BOX_USER" "$STORAGE_BOX_PASSWORD" > /etc/storagebox.credentials
  umask 022
  line="//${STORAGE_BOX_HOST}/backup /mnt/storagebox cifs credentials=/etc/storagebox.credentials,iocharset=utf8,uid=70,gid=70,file_mode=0660,dir_mode=0770 0 0"
  grep -qF "//${STORAGE_BOX_HOST}/backup " /etc/fstab || echo "$line" >> /etc/fstab
  mountpoint -q /mnt/storagebox || mount /mnt/storagebox
fi
mkdir -p "$BACKUP_DIR"

api() {
  curl -fsS --retry 5 --retry-all-errors --max-time 30 \
    -H "authorization: Bearer ${WEBHOST_ADMIN_TOKEN}" -H 'content-type: application/json' "$@"
}

if [ -z "${WEBHOST_CELL_ID:-}" ] && [ -f .env ]; then
  WEBHOST_CELL_ID=$(sed -n 's/^WEBHOST_CELL_ID=//p' .env)
fi
if [ -z "${WEBHOST_CELL_ID:-}" ]; then
  log "registering https://${PUBLIC_HOST} with ${WEBHOST_CONTROL_URL}"
  body=$(jq -n --arg pool "$POOL" --arg region "$PRIMARY_REGION" --arg url "https://${PUBLIC_HOST}" \
    '{pool: $pool, region: $region, url: $url}')
  WEBHOST_CELL_ID=$(api -X POST "${WEBHOST_CONTROL_URL}/api/admin/cells" -d "$body" | jq -r .id)
fi
log "cell ${WEBHOST_CELL_ID}"

POSTGRES_PASSWORD=$( (sed -n 's/^POSTGRES_PASSWORD=//p' .env 2>/dev/null || true) | head -n1)
[ -n "$POSTGRES_PASSWORD" ] || POSTGRES_PASSWORD=$(openssl rand -hex 24)

log "writing .env"
umask 077
cat > .env <<ENV
PUBLIC_HOST=${PUBLIC_HOST}
POSTGRES_PASSWORD=${POSTGRES_PASSWORD}
SECRET_KEY_BASE=${SECRET_KEY_BASE}
TOKEN_SIGNING_SECRET=${TOKEN_SIGNING_SECRET}
WEBHOST_ADMIN_TOKEN=${WEBHOST_ADMIN_TOKEN}
WEBHOST_CELL_ID=${WEBHOST_CELL_ID}
WEBHOST_CONTROL_URL=${WEBHOST_CONTROL_URL}
PRIMARY_REGION=${PRIMARY_REGION}
WEBHOST_IMAGE=${WEBHOST_IMAGE:-ghcr.io/webhost/webhost:latest}
BACKUP_DIR=${BACKUP_DIR}
ENV
umask 022

log "starting the stack"
docker-compose pull -q
docker-compose up -d

log "waiting for https://${PUBLIC_HOST}/api/health"
for _ in $(seq 1 60); do
  if curl -fsS --max-time 5 "https://${PUBLIC_HOST}/api/health" >/dev/null 2>&1; then
    log "healthy; the control plane turns the cell active at its next check"
    exit 0
  fi
  sleep 10
done
echo "bootstrap: the cell did not answer on https://${PUBLIC_HOST}/api/health within 10 minutes" >&2
docker-compose ps >&2
exit 1
