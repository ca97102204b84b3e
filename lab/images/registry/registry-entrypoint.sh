#!/bin/sh
# Make the registry's htpasswd file from the lab's password, then run the
# registry as its own user. The password comes from a file (mounted read-only
# at REGISTRY_PASSWORD_FILE); it never goes on a command line or in the
# container's environment.
#
#   REGISTRY_USERNAME       the one account (default: montaiguillon)
#   REGISTRY_PASSWORD_FILE  file holding its password (default: /run/secrets/registry-password)
set -o errexit -o nounset

username=${REGISTRY_USERNAME:-montaiguillon}
password_file=${REGISTRY_PASSWORD_FILE:-/run/secrets/registry-password}
htpasswd_file=/etc/docker-registry/htpasswd

if [ ! -s "$password_file" ]; then
  echo "registry: no password in $password_file; refusing to start without authentication" >&2
  exit 1
fi
umask 027
# -B bcrypt (the only scheme the registry accepts), -i password from stdin.
tr -d '\n' <"$password_file" | htpasswd -B -i -c "$htpasswd_file" "$username" 2>/dev/null
chown root:docker-registry "$htpasswd_file"
chmod 0640 "$htpasswd_file"

exec setpriv --reuid=docker-registry --regid=docker-registry --init-groups -- "$@"
