"""The release manager: a deploy, a rollback or a status, on one server's Docker."""

from ansible.module_utils.montaiguillon.common.lock import read_holder
from ansible.module_utils.montaiguillon.deploy.ledger import with_snapshot_state
from ansible.module_utils.montaiguillon.deploy.plan import (
    COLOURS,
)
from ansible.module_utils.montaiguillon.deploy.present import PresentRelease
from ansible.module_utils.montaiguillon.deploy.release_base import ReleaseBase
from ansible.module_utils.montaiguillon.deploy.retire import Retirement
from ansible.module_utils.montaiguillon.deploy.rollback import RollbackRelease
from ansible.module_utils.montaiguillon.deploy.slots import SlotOps
from ansible.module_utils.montaiguillon.deploy.story import StepFailed


class BlueGreenRelease(PresentRelease, RollbackRelease, SlotOps, Retirement, ReleaseBase):
    """Reads the state, decides, acts (outside check mode) and tells the story in ``steps``."""

    # --- state: status ------------------------------------------------------------------

    def status(self):
        state = self.read_state()
        colours = {}
        for colour in COLOURS:
            c = state.colours[colour]
            info = c.summary()
            info["live"] = colour == state.live_colour
            info["container"] = self.cname(colour)
            if c.running:
                info["healthy"], info["health"] = self.probe_health(colour)
                try:
                    info["reported_version"], info["reported_revision"] = self.read_version(colour)
                except StepFailed as exc:
                    info["reported_version"], info["reported_revision"] = None, None
                    info["version_error"] = str(exc)
            else:
                info["healthy"], info["health"] = False, "not running"
            colours[colour] = info
        history = self.p["history"]
        releases = with_snapshot_state(self.read_ledger()[-history:]) if history else []
        holder = read_holder(self.lock_path)
        return {
            "changed": False,
            "live_colour": state.live_colour,
            "idle_colour": state.idle_colour,
            "colours": colours,
            "live": colours.get(state.live_colour) if state.live_colour else None,
            "idle": colours.get(state.idle_colour),
            "lock": {k: v for k, v in holder.items() if k != "token"} if holder is not None else None,
            "releases": releases,
            "upstream_file": self.upstream_path,
        }

    def run(self):
        state = self.p["state"]
        if state == "present":
            return self.present()
        if state == "rolled_back":
            return self.rolled_back()
        return self.status()
