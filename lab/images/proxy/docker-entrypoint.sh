#!/bin/sh
# Like the official nginx image's entrypoint: when starting nginx, run the
# executable /docker-entrypoint.d/*.sh scripts in order (source *.envsh), then
# exec the command. Set NGINX_ENTRYPOINT_QUIET_LOGS to silence it.
set -eu

log() {
    if [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then
        echo "$0: $*"
    fi
}

if [ "${1:-}" = "nginx" ] || [ "${1:-}" = "nginx-debug" ]; then
    for f in /docker-entrypoint.d/*; do
        [ -e "$f" ] || continue
        case "$f" in
            *.envsh)
                if [ -x "$f" ]; then log "sourcing $f"; . "$f"; else log "ignoring $f, not executable"; fi ;;
            *.sh)
                if [ -x "$f" ]; then log "launching $f"; "$f"; else log "ignoring $f, not executable"; fi ;;
            *)
                log "ignoring $f" ;;
        esac
    done
    log "configuration complete; ready for start up"
fi

exec "$@"
