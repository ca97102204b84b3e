"""The old idle container: moved out of the new release's way at once, removed once the change is over.

Stopping a container waits for its process to exit (gunicorn's sync worker notices SIGTERM only at its
next one-second select timeout, other servers take longer); on a deploy's critical path that is time the
new release waits for its name. Instead the old container is moved aside (restart policy off, renamed
``<app>-<colour>-retired-<id>``, sent its stop signal, not waited for), and removed, with the usual stop
timeout, when the deploy or rollback ends, whatever its outcome, together with any that a run which died
in between left behind.
"""

import re

from ansible.module_utils.montaiguillon.common.docker_engine import DockerError
from ansible.module_utils.montaiguillon.deploy.plan import COLOURS, LABEL_APP
from ansible.module_utils.montaiguillon.deploy.slots import STOP_TIMEOUT

RETIRED_MARK = "-retired-"


def retired_name(container, container_id):
    """The name a container is moved aside to, e.g. ``app-green-retired-3f2a1b0c9d8e``."""
    return f"{container}{RETIRED_MARK}{(container_id or 'unknown').replace('sha256:', '')[:12]}"


def is_retired(app, candidate):
    """True when ``candidate`` names one of ``app``'s slots moved aside by ``retired_name``."""
    pattern = rf"{re.escape(app)}-(?:{'|'.join(COLOURS)}){re.escape(RETIRED_MARK)}[0-9a-z]+"
    return re.fullmatch(pattern, candidate) is not None


class Retirement:
    """Moving a slot's old container aside, and removing what was moved aside."""

    def retire(self, colour):
        """Move the colour's container aside (see the module docstring); the name it now has, None if none."""
        name = self.cname(colour)
        attrs = self.engine.inspect_container(name)
        if attrs is None:
            return None
        aside = retired_name(name, attrs.get("Id"))
        return aside if self.engine.retire_container(name, aside) else None

    def remove_retired(self):
        """Remove the app's containers moved aside (this run's, and those a dead run left); a failure is a
        warning: the change itself is done, the next run removes them."""
        try:
            labelled = self.engine.container_names(f"{LABEL_APP}={self.name}")
        except DockerError as exc:
            self.warn(f"cannot look for old containers to remove: {exc}")
            return
        names = sorted(name for name in labelled if is_retired(self.name, name))
        if not names:
            return
        with self.step("retire") as step:
            removed, left = [], []
            for name in names:
                try:
                    self.engine.remove_container(name, stop_timeout=STOP_TIMEOUT)
                    removed.append(name)
                except DockerError as exc:
                    left.append(f"{name} ({exc})")
            step.detail = f"removed {', '.join(removed) or 'nothing'}"
            if left:
                step.result = "warning"
                step.detail += f"; left {', '.join(left)} for the next run"
                self.warn(f"old containers not removed: {', '.join(left)}")
