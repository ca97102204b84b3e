#!/usr/bin/env bash
# Entrypoint with the official mariadb/mysql images' contract (the subset that
# matters to servers): initialise an empty data directory once, set the root
# password, create the optional database and user, run init scripts, then exec
# the server as the mysql user.
set -o errexit -o nounset -o pipefail

log() { printf '%s [entrypoint] %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# file_env VAR: VAR may be given directly or as VAR_FILE (a secret file).
file_env() {
  local var=$1 file_var="${1}_FILE" def=${2:-}
  if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
    die "both $var and $file_var are set (they are exclusive)"
  fi
  local val=$def
  if [ -n "${!var:-}" ]; then
    val=${!var}
  elif [ -n "${!file_var:-}" ]; then
    val=$(<"${!file_var}")
  fi
  export "$var"="$val"
  unset "$file_var"
}

# MARIADB_* wins over MYSQL_*, as in the official mariadb image.
for name in ROOT_PASSWORD DATABASE USER PASSWORD ALLOW_EMPTY_ROOT_PASSWORD RANDOM_ROOT_PASSWORD ROOT_HOST; do
  file_env "MARIADB_$name"
  file_env "MYSQL_$name"
  m="MARIADB_$name"; y="MYSQL_$name"
  [ -n "${!m}" ] && export "$y"="${!m}"
done

if [ "${1:0:1}" = '-' ]; then
  set -- mariadbd "$@"
fi
case "$1" in
  mariadbd|mysqld) ;;
  *) exec "$@" ;;
esac

DATADIR=/var/lib/mysql
SOCKET=/run/mysqld/mysqld.sock

if [ "$(id -u)" = 0 ]; then
  install -d -o mysql -g mysql "$DATADIR" /run/mysqld
  find "$DATADIR" /run/mysqld -maxdepth 0 \! -user mysql -exec chown mysql:mysql '{}' +
fi

sql_escape() { printf '%s' "$1" | sed -e "s/\\\\/\\\\\\\\/g" -e "s/'/\\\\'/g"; }

if [ ! -d "$DATADIR/mysql" ]; then
  if [ -z "$MYSQL_ROOT_PASSWORD" ] && [ -z "$MYSQL_ALLOW_EMPTY_ROOT_PASSWORD" ] && [ -z "$MYSQL_RANDOM_ROOT_PASSWORD" ]; then
    die "the database is uninitialized and no password option is given: set MYSQL_ROOT_PASSWORD (or MARIADB_ROOT_PASSWORD), MYSQL_ALLOW_EMPTY_ROOT_PASSWORD or MYSQL_RANDOM_ROOT_PASSWORD"
  fi
  log "initialising the data directory"
  mariadb-install-db --user=mysql --datadir="$DATADIR" --skip-test-db \
    --auth-root-authentication-method=normal --skip-name-resolve >/dev/null
  log "starting a temporary server (no networking)"
  setpriv --reuid=mysql --regid=mysql --init-groups -- "$@" --skip-networking --socket="$SOCKET" --log-bin=0 --skip-log-bin &
  pid=$!
  for _ in $(seq 1 60); do
    mariadb-admin --socket="$SOCKET" ping >/dev/null 2>&1 && break
    sleep 1
  done
  mariadb-admin --socket="$SOCKET" ping >/dev/null 2>&1 || die "the temporary server did not start"

  if [ -n "$MYSQL_RANDOM_ROOT_PASSWORD" ]; then
    MYSQL_ROOT_PASSWORD=$(head -c 24 /dev/urandom | base64)
    log "GENERATED ROOT PASSWORD: $MYSQL_ROOT_PASSWORD"
  fi
  root_host=${MYSQL_ROOT_HOST:-%}
  rootpw=$(sql_escape "$MYSQL_ROOT_PASSWORD")
  {
    echo "SET @@SESSION.SQL_LOG_BIN=0;"
    echo "DELETE FROM mysql.global_priv WHERE User='' OR (User='root' AND Host NOT IN ('localhost'));"
    echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '$rootpw';"
    if [ "$root_host" != localhost ]; then
      echo "CREATE USER 'root'@'$root_host' IDENTIFIED BY '$rootpw';"
      echo "GRANT ALL ON *.* TO 'root'@'$root_host' WITH GRANT OPTION;"
    fi
    if [ -n "$MYSQL_DATABASE" ]; then
      echo "CREATE DATABASE IF NOT EXISTS \`$MYSQL_DATABASE\`;"
    fi
    if [ -n "$MYSQL_USER" ] && [ -n "$MYSQL_PASSWORD" ]; then
      echo "CREATE USER '$MYSQL_USER'@'%' IDENTIFIED BY '$(sql_escape "$MYSQL_PASSWORD")';"
      [ -n "$MYSQL_DATABASE" ] && echo "GRANT ALL ON \`$MYSQL_DATABASE\`.* TO '$MYSQL_USER'@'%';"
    fi
    echo "FLUSH PRIVILEGES;"
  } | mariadb --protocol=socket --socket="$SOCKET" -uroot

  for f in /docker-entrypoint-initdb.d/*; do
    [ -e "$f" ] || continue
    case "$f" in
      *.sh) log "running $f"; . "$f" ;;
      *.sql) log "running $f"; mariadb --socket="$SOCKET" -uroot -p"$MYSQL_ROOT_PASSWORD" ${MYSQL_DATABASE:+"$MYSQL_DATABASE"} <"$f" ;;
      *.sql.gz) log "running $f"; gunzip -c "$f" | mariadb --socket="$SOCKET" -uroot -p"$MYSQL_ROOT_PASSWORD" ${MYSQL_DATABASE:+"$MYSQL_DATABASE"} ;;
      *.sql.zst) log "running $f"; zstd -dc "$f" | mariadb --socket="$SOCKET" -uroot -p"$MYSQL_ROOT_PASSWORD" ${MYSQL_DATABASE:+"$MYSQL_DATABASE"} ;;
      *) log "ignoring $f" ;;
    esac
  done

  kill "$pid"
  wait "$pid" || true
  log "initialisation complete"
fi

unset MYSQL_ROOT_PASSWORD MARIADB_ROOT_PASSWORD MYSQL_PASSWORD MARIADB_PASSWORD
if [ "$(id -u)" = 0 ]; then
  exec setpriv --reuid=mysql --regid=mysql --init-groups -- "$@"
fi
exec "$@"
