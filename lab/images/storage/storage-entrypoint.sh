#!/bin/sh
# Start the storage host: its SSH host key (the lab's, mounted at
# /etc/storage/ssh_host_ed25519_key, so the servers can pin it; otherwise a
# new one), the authorized keys from STORAGE_AUTHORIZED_KEYS (one public key a
# line), each confined by rrsync to /srv/backup (STORAGE_RRSYNC_OPTIONS, for
# example -no-del for an append-only store), then sshd in the foreground.
# rrsync's default single-run lock is per user: it would make two servers'
# copies fail when they overlap, though each writes its own directory, so the
# default options are -no-lock.
set -eu

key=/etc/ssh/ssh_host_ed25519_key
if [ -f /etc/storage/ssh_host_ed25519_key ]; then
  install -m 0600 -o root -g root /etc/storage/ssh_host_ed25519_key "$key"
  ssh-keygen -y -f "$key" >"$key.pub"
elif [ ! -f "$key" ]; then
  ssh-keygen -q -t ed25519 -N '' -f "$key"
fi

authorized=/home/offsite/.ssh/authorized_keys
printf '%s\n' "${STORAGE_AUTHORIZED_KEYS:-}" | while IFS= read -r line; do
  case "$line" in
    ssh-*|ecdsa-*) printf 'restrict,command="/usr/bin/rrsync %s /srv/backup" %s\n' "${STORAGE_RRSYNC_OPTIONS--no-lock}" "$line" ;;
  esac
done >"$authorized"
chown offsite:offsite "$authorized" /srv/backup
chmod 0600 "$authorized"

mkdir -p /run/sshd
exec /usr/sbin/sshd -D -e
