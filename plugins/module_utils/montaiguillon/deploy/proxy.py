"""The proxy side of a switch: the upstream file, ``nginx -t`` and reload, old workers drained.

One place for what the deploy and the maintenance page do to the proxy container.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from contextlib import suppress

from ansible.module_utils.montaiguillon.common.files import atomic_write_text, read_text
from ansible.module_utils.montaiguillon.deploy.plan import render_upstream, tail_lines

RELOAD_TIMEOUT = 5
RELOAD_POLL = 0.02


def switch_script(proc="/proc", timeout=RELOAD_TIMEOUT, poll=RELOAD_POLL):
    """The one ``docker exec`` a switch asks of nginx (each exec costs 0.1 s, more on a loaded server).

    Test the configuration; note the workers accepting connections (their title is exactly "nginx: worker
    process"; after a reload the old ones become "... is shutting down"); reload, which only signals the
    master; then wait, in the container, until none of the noted workers accepts connections any more and
    a new one does: until then a new connection may still reach an old worker, which proxies to the
    previous colour. Needs only sh and nginx. Exit 90: ``nginx -t`` refused (its output follows); 91: the
    reload failed; 92: old workers still accepted connections after ``timeout`` seconds.
    """
    polls = max(1, int(timeout / poll))
    return (
        # $w: " pid pid ... " of the accepting workers. `read` keeps the title nginx wrote (the shell drops
        # the NUL padding); shell builtins only, so a poll forks nothing on a server short of CPU.
        f'workers() {{ w=" "; for f in {proc}/[0-9]*/cmdline; do c=; read -r c < "$f" 2>/dev/null; '
        'if [ "$c" = \'nginx: worker process\' ]; then p=${f%/cmdline}; w="$w${p##*/} "; fi; '
        "done; }; "
        'out=$(nginx -t 2>&1) || { echo "$out"; exit 90; }; '
        "workers; old=$w; "
        "nginx -s reload 2>&1 || exit 91; "
        '[ "$old" = " " ] && exit 0; '
        f"i=0; while [ $i -lt {polls} ]; do "
        "workers; left=; "
        'for p in $old; do case "$w" in *" $p "*) left="$left $p";; esac; done; '
        '[ "$w" != " " ] && [ -z "$left" ] && exit 0; '
        f"i=$((i+1)); sleep {poll:g} 2>/dev/null || sleep 1; done; "
        'echo "old workers still accept connections:$left"; exit 92'
    )


TEST_AND_RELOAD_SCRIPT = switch_script()
TEST_REFUSED, RELOAD_FAILED, RELOAD_SLOW = 90, 91, 92
# The maintenance page's flag, relative to conf.d (roles/proxy/vars: __proxy_maintenance_flag).
MAINTENANCE_FLAG = os.path.join("maintenance", "on")
# The response header the proxy adds with the serving slot (roles/proxy's site.conf): the switch is
# verified through the proxy by it, without the app's help.
SLOT_HEADER = "X-Montaiguillon-Slot"
SLOT_HEADER_NOTE = "# Managed by the bluegreen_release module: the slot the proxy names in " + SLOT_HEADER + "."


def slot_file_name(name):
    """Base name of the file defining the slot stamp nginx adds to every answer."""
    return f"{name}-slot.conf"


def slot_variable(upstream):
    """The nginx variable holding the serving slot (upstream names are letters, digits and '_')."""
    return f"${upstream}_slot"


def render_slot(upstream, colour):
    """Text of ``{name}-slot.conf``: an http-level map whose only value is the serving colour."""
    return f'{SLOT_HEADER_NOTE}\nmap $host {slot_variable(upstream)} {{ default "{colour}"; }}\n'


class ProxyError(Exception):
    """The proxy is missing or refused a change; the message says which and what was restored."""


@dataclasses.dataclass
class Proxy:
    """The proxy container and the upstream file it includes from its conf.d."""

    engine: object
    container: str
    conf_dir: str
    upstream_path: str
    clock: Callable[[], float]
    warn: Callable[[str], None]
    slot_path: str | None = None

    def check(self):
        """The proxy must run and its conf.d must be here; ``ProxyError`` otherwise."""
        if not os.path.isdir(self.conf_dir):
            raise ProxyError(
                f"proxy_conf_dir {self.conf_dir} does not exist: the proxy role creates it and bind-mounts it "
                "on the proxy's /etc/nginx/conf.d"
            )
        attrs = self.engine.inspect_container(self.container)
        if attrs is None or not (attrs.get("State") or {}).get("Running"):
            status = "does not exist" if attrs is None else f"is {(attrs.get('State') or {}).get('Status')}"
            raise ProxyError(f"proxy container {self.container} {status}: the proxy must run to switch traffic")
        real = os.path.realpath(self.conf_dir)
        mounts = attrs.get("Mounts") or []
        if mounts and not any(os.path.realpath(m.get("Source") or "") == real for m in mounts):
            self.warn(
                f"proxy container {self.container} has no bind mount of {self.conf_dir}: "
                "the upstream file may not reach it"
            )

    def maintenance_reason(self):
        """The reason in the maintenance flag (roles/proxy, ``conf.d/maintenance/on``), None when it is off."""
        text = read_text(os.path.join(self.conf_dir, MAINTENANCE_FLAG))
        return None if text is None else text.strip() or "maintenance"

    def point_at(self, upstream, server, port, comment, not_found_hint="", slot=None):
        """Write the upstream for ``server:port`` (and the slot stamp), test, reload, wait for old workers.

        Returns the seconds taken. On a refusal the previous files are put back and ``ProxyError`` says so.
        """
        proxy = self.container
        started = self.clock()
        previous = self.snapshot()
        atomic_write_text(self.upstream_path, render_upstream(upstream, server, port, comment))
        if slot and self.slot_path:
            atomic_write_text(self.slot_path, render_slot(upstream, slot))
        try:
            code, output = self.engine.exec(proxy, ["sh", "-c", TEST_AND_RELOAD_SCRIPT])
        except Exception:
            # The proxy could not even be asked (stopped, restarting): it must not find the new files later.
            self.restore(previous)
            raise
        if code == TEST_REFUSED:
            self.restore(previous)
            hint = not_found_hint if "host not found" in output else ""
            raise ProxyError(
                f"nginx -t in {proxy} refused the upstream {server}{hint}; the previous upstream file "
                f"is restored: {tail_lines(output, 5)}"
            )
        if code not in (0, RELOAD_SLOW):
            self.restore(previous)
            self.engine.exec(proxy, ["nginx", "-s", "reload"])
            raise ProxyError(
                f"nginx -s reload in {proxy} failed; the previous upstream file is restored: {tail_lines(output, 5)}"
            )
        self.warn_if_slow(code, output)
        return self.clock() - started

    def reload(self):
        """``nginx -t``, reload, and wait until no old worker accepts connections (what a switch does after
        writing its files); ``ProxyError`` when nginx refuses, with nothing reloaded."""
        code, output = self.engine.exec(self.container, ["sh", "-c", TEST_AND_RELOAD_SCRIPT])
        if code == TEST_REFUSED:
            raise ProxyError(f"nginx -t in {self.container} refused its configuration: {tail_lines(output, 5)}")
        if code not in (0, RELOAD_SLOW):
            raise ProxyError(f"nginx -s reload in {self.container} failed: {tail_lines(output, 5)}")
        self.warn_if_slow(code, output)

    def warn_if_slow(self, code, output):
        """The reload is done but old workers still took new connections when the script stopped waiting."""
        if code == RELOAD_SLOW:
            self.warn(
                f"nginx in {self.container} still had old workers accepting connections {RELOAD_TIMEOUT} s after "
                f"the reload ({tail_lines(output, 1)})"
            )

    def snapshot(self):
        """The files a switch writes, as they are now (path -> text, None when absent)."""
        paths = [self.upstream_path] + ([self.slot_path] if self.slot_path else [])
        return {path: read_text(path) for path in paths}

    @staticmethod
    def restore(previous):
        """Put back the files as they were (a ``None`` text: there was none)."""
        for path, text in previous.items():
            if text is None:
                with suppress(FileNotFoundError):
                    os.unlink(path)
            else:
                atomic_write_text(path, text)
