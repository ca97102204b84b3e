"""The proxy side of a switch: the upstream file, ``nginx -t`` and reload, old workers drained.

One place for what the deploy and the maintenance page do to the proxy container.
"""

import os
from contextlib import suppress

from ansible.module_utils.montaiguillon.common.files import atomic_write_text, read_text
from ansible.module_utils.montaiguillon.deploy.plan import render_upstream, tail_lines

# Lists the nginx workers that still accept connections (their title is exactly "nginx: worker process";
# after a reload the old ones become "nginx: worker process is shutting down"). Needs only sh, tr and sed.
NGINX_WORKERS_SCRIPT = (
    "for f in /proc/[0-9]*/cmdline; do "
    "c=$(tr '\\000' ' ' < \"$f\" 2>/dev/null | sed 's/ *$//'); "
    "if [ \"$c\" = 'nginx: worker process' ]; then p=${f#/proc/}; echo ${p%/cmdline}; fi; "
    "done"
)
RELOAD_TIMEOUT = 5


class ProxyError(Exception):
    """The proxy is missing or refused a change; the message says which and what was restored."""


class Proxy:
    """The proxy container and the upstream file it includes from its conf.d."""

    def __init__(self, engine, container, conf_dir, upstream_path, clock, sleep, warn):
        self.engine = engine
        self.container = container
        self.conf_dir = conf_dir
        self.upstream_path = upstream_path
        self.clock = clock
        self.sleep = sleep
        self.warn = warn

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

    def point_at(self, upstream, server, port, comment, not_found_hint=""):
        """Write the upstream for ``server:port``, test, reload, wait for old workers. Returns seconds taken.

        On a refusal the previous upstream file is put back and ``ProxyError`` says so.
        """
        proxy = self.container
        started = self.clock()
        previous = read_text(self.upstream_path)
        atomic_write_text(self.upstream_path, render_upstream(upstream, server, port, comment))
        code, output = self.engine.exec(proxy, ["nginx", "-t"])
        if code != 0:
            self.restore(previous)
            hint = not_found_hint if "host not found" in output else ""
            raise ProxyError(
                f"nginx -t in {proxy} refused the upstream {server}{hint}; the previous upstream file "
                f"is restored: {tail_lines(output, 5)}"
            )
        old_workers = self.accepting_workers()
        code, output = self.engine.exec(proxy, ["nginx", "-s", "reload"])
        if code != 0:
            self.restore(previous)
            self.engine.exec(proxy, ["nginx", "-s", "reload"])
            raise ProxyError(f"nginx -s reload in {proxy} failed; the previous upstream file is restored: {output}")
        self.wait_for_reload(old_workers)
        return self.clock() - started

    def accepting_workers(self):
        """Pids of the nginx workers that accept new connections (not those shutting down)."""
        code, output = self.engine.exec(self.container, ["sh", "-c", NGINX_WORKERS_SCRIPT])
        return set(output.split()) if code == 0 else set()

    def wait_for_reload(self, old_workers):
        """`nginx -s reload` only signals the master: wait until no old worker accepts connections any more.

        Until then a new connection may still reach an old worker, which proxies to the previous colour.
        """
        if not old_workers:
            return
        deadline = self.clock() + RELOAD_TIMEOUT
        while self.clock() < deadline:
            current = self.accepting_workers()
            if current and not current & old_workers:
                return
            self.sleep(0.05)
        self.warn(
            f"nginx in {self.container} still had old workers accepting connections {RELOAD_TIMEOUT} s after the reload"
        )

    def restore(self, previous):
        """Put back the upstream file as it was (``None``: there was none)."""
        if previous is None:
            with suppress(FileNotFoundError):
                os.unlink(self.upstream_path)
        else:
            atomic_write_text(self.upstream_path, previous)
