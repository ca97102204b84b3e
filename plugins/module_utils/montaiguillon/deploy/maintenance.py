"""The maintenance page: its flag on, or off once the live slot answers, with the deploy's own code.

The proxy (roles/proxy) serves the page while ``conf.d/maintenance/on`` exists, checked on
every request, so turning it on needs no reload. Turning it off: the live slot is read from
the upstream file the deploy writes (``plan.parse_upstream_server``), probed with the deploy's
HTTP probe until it answers its health check (a restore restarted it), nginx is tested and
reloaded the way a switch does it (``Proxy.reload``: containers restarted meanwhile may have new
addresses), and only then the flag goes. It goes even when the slot never answers: the page
must not stay up forever; the result then says so and the role fails naming the slot.
"""

import os
from contextlib import suppress

from ansible.module_utils.montaiguillon.common.docker_engine import DockerError
from ansible.module_utils.montaiguillon.common.files import atomic_write_text, read_text
from ansible.module_utils.montaiguillon.deploy.plan import parse_upstream_server
from ansible.module_utils.montaiguillon.deploy.probe import PROBE_TIMEOUT, ProbeError
from ansible.module_utils.montaiguillon.deploy.proxy import MAINTENANCE_FLAG


class MaintenancePage:
    """One site's maintenance page on one server."""

    def __init__(self, engine, proxy, probe, name, network, health_path, clock, sleep):
        self.engine, self.proxy, self.probe = engine, proxy, probe
        self.name, self.network, self.health_path = name, network, health_path
        self.clock, self.sleep = clock, sleep
        self.flag = os.path.join(proxy.conf_dir, MAINTENANCE_FLAG)

    def reason(self):
        return self.proxy.maintenance_reason()

    def turn_on(self, reason, check_mode=False):
        """Write the flag; the first reason stays when it is already on. Whether it changed."""
        if self.reason() is not None:
            return False
        if not check_mode:
            os.makedirs(os.path.dirname(self.flag), mode=0o755, exist_ok=True)
            atomic_write_text(self.flag, f"{reason or 'maintenance'}\n", mode=0o644)
        return True

    def live(self):
        """The live slot as the upstream file names it: (container, port), or None (no release yet)."""
        server = parse_upstream_server(read_text(self.proxy.upstream_path), self.name)
        return None if server is None else server[1:]

    def probe_live(self, container, port):
        """(ok, description) of one health probe of the live slot, as a deploy probes a slot."""
        try:
            address = self.engine.container_ip(container, self.network)
            answer = self.probe.get(f"http://{address}:{port}{self.health_path}", timeout=PROBE_TIMEOUT)
        except (ProbeError, DockerError) as exc:
            return False, str(exc)
        return 200 <= answer.status < 300, answer.describe()

    def turn_off(self, timeout, check_mode=False):
        """Wait (a bound) for the live slot, reload the proxy, remove the flag. What happened, as a dict."""
        if self.reason() is None:
            return {"changed": False, "live": None, "healthy": None, "health": "maintenance was off"}
        live = self.live()
        if check_mode:
            return {"changed": True, "live": live and live[0], "healthy": None, "health": "check mode: not probed"}
        healthy, health = (True, "no release yet: nothing to wait for") if live is None else self._wait(live, timeout)
        self.proxy.reload()
        with suppress(FileNotFoundError):
            os.unlink(self.flag)
        return {"changed": True, "live": live and live[0], "healthy": healthy, "health": health}

    def _wait(self, live, timeout):
        deadline = self.clock() + timeout
        while True:
            healthy, health = self.probe_live(*live)
            if healthy or self.clock() >= deadline:
                return healthy, health
            self.sleep(2)
