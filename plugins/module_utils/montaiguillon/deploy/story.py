"""What a release run tells: its steps, how it failed, what it returns when a release went live."""

from ansible.module_utils.montaiguillon.deploy.plan import (
    OUTCOME_FAILED,
)


class ReleaseFailure(Exception):
    """The run failed; ``result`` holds what to return with fail_json."""

    def __init__(self, message, result=None):
        super().__init__(message)
        self.result = result or {}


class StepFailed(Exception):
    """A step of a release failed; ``outcome`` is what the ledger records."""

    def __init__(self, message, outcome=OUTCOME_FAILED):
        super().__init__(message)
        self.outcome = outcome


class Step:
    def __init__(self, name):
        self.name = name
        self.detail = ""
        self.result = "ok"


def went_live(entry, before, colour, image, previous_colour, switch_seconds):
    """The module's result when a deploy or a rollback made ``entry``'s release live on ``colour``."""
    return {
        "changed": True,
        "msg": entry["message"],
        "release": entry,
        "live_colour": colour,
        "previous_colour": previous_colour,
        "switch_seconds": switch_seconds,
        "diff": {
            "before": before,
            "after": {"live_colour": colour, "live_image": image, "live_release": entry["release"]},
        },
    }
