"""Blue/green release decisions, kept free of Docker and of the filesystem.

Everything here works on plain data (container inspect dicts, ledger entries,
file text) so it can be unit tested without an engine:

- the names: ``{name}-blue`` / ``{name}-green`` and the labels they carry;
- the upstream file the proxy includes: how it is written and read back;
- which colour is live (the one the upstream file points to) and which is idle;
- whether a deploy is needed at all (idempotence);
- which release a rollback goes to;
- which images retention may remove.
"""

import re
from dataclasses import dataclass, field
from datetime import UTC
from typing import Optional

from ansible.module_utils.montaiguillon.deploy.fingerprint import LABEL_CONFIG, config_changes

COLOURS = ("blue", "green")

LABEL_APP = "montaiguillon.app"
LABEL_COLOUR = "montaiguillon.colour"
LABEL_RELEASE = "montaiguillon.release"
LABEL_IMAGE = "montaiguillon.image"
LABEL_IMAGE_ID = "montaiguillon.image_id"
LABEL_REVISION = "montaiguillon.revision"
LABEL_VERSION = "montaiguillon.version"

# Outcomes recorded in the ledger. A release "went live and stayed" with
# success (a deploy) or rollback (a return to an earlier release).
OUTCOME_SUCCESS = "success"
OUTCOME_FAILED = "failed"
OUTCOME_ROLLED_BACK = "rolled_back"
OUTCOME_ROLLBACK = "rollback"
OUTCOMES = (OUTCOME_SUCCESS, OUTCOME_FAILED, OUTCOME_ROLLED_BACK, OUTCOME_ROLLBACK)
LIVE_OUTCOMES = (OUTCOME_SUCCESS, OUTCOME_ROLLBACK)

# Docker's rule for container names, and nginx's for an upstream name we write.
_CONTAINER_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_UPSTREAM_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")

UPSTREAM_HEADER = "# Managed by the bluegreen_release module: do not edit, it is rewritten on every switch."


class ReleaseError(Exception):
    """A release cannot go on; the message is meant for the person deploying."""


def other_colour(colour):
    """The colour that is not ``colour``."""
    if colour not in COLOURS:
        raise ReleaseError(f"unknown colour {colour!r}: expected one of {', '.join(COLOURS)}")
    return COLOURS[1] if colour == COLOURS[0] else COLOURS[0]


def container_name(name, colour):
    """Name of the app container of one colour, e.g. ``app-green``."""
    if colour not in COLOURS:
        raise ReleaseError(f"unknown colour {colour!r}: expected one of {', '.join(COLOURS)}")
    return f"{name}-{colour}"


def upstream_file_name(name):
    """Base name of the one file the module owns in the proxy's conf.d."""
    return f"{name}-upstream.conf"


def validate_params(params):
    """Checks argument_spec cannot express. Returns a list of error strings."""
    errors = []
    name = params.get("name") or ""
    for colour in COLOURS:
        candidate = f"{name}-{colour}"
        if not _CONTAINER_NAME_RE.match(candidate):
            errors.append(
                f"name {name!r} gives the container name {candidate!r}, which Docker refuses "
                "(letters, digits, '_', '.', '-'; starting with a letter or digit)"
            )
            break
    upstream = params.get("proxy_upstream") or ""
    if not _UPSTREAM_NAME_RE.match(upstream):
        errors.append(f"proxy_upstream {upstream!r} must be letters, digits and '_' only")
    port = params.get("port")
    if port is not None and not 1 <= port <= 65535:
        errors.append(f"port must be between 1 and 65535, got {port}")
    keep = params.get("keep_releases")
    if keep is not None and keep < 1:
        errors.append(f"keep_releases must be at least 1 (the live release), got {keep}")
    for key in ("health_timeout", "health_interval", "verify_timeout", "migrate_timeout"):
        value = params.get(key)
        if value is not None and value <= 0:
            errors.append(f"{key} must be greater than 0, got {value}")
    window = params.get("verify_window")
    if window is not None and window < 0:
        errors.append(f"verify_window must be 0 or more seconds, got {window}")
    failures = params.get("watch_failures")
    if failures is not None and failures < 1:
        errors.append(f"watch_failures must be 1 or more, got {failures}")
    history = params.get("history")
    if history is not None and history < 0:
        errors.append(f"history must be 0 or more, got {history}")
    health_path = params.get("health_path") or ""
    if not health_path.startswith("/"):
        errors.append(f"health_path must start with '/', got {health_path!r}")
    version_path = params.get("version_path") or ""
    if version_path and not version_path.startswith("/"):
        errors.append(f"version_path must be empty or start with '/', got {version_path!r}")
    if not params.get("networks"):
        errors.append("networks must name at least one Docker network")
    return errors


# --- the upstream file -------------------------------------------------------


def render_upstream(upstream, host, port, comment=None):
    """Text of ``{name}-upstream.conf`` pointing the upstream at one container."""
    lines = [UPSTREAM_HEADER]
    if comment:
        lines.append(f"# {comment}")
    lines += [
        f"upstream {upstream} {{",
        f"    server {host}:{port} max_fails=0;",
        "    keepalive 32;",
        "}",
        "",
    ]
    return "\n".join(lines)


def parse_upstream_server(text, name):
    """(colour, container, port) of the slot the upstream file points to, or None (missing, placeholder,
    other target, several)."""
    if not text:
        return None
    pattern = re.compile(r"^\s*server\s+(" + re.escape(name) + r"-(" + "|".join(COLOURS) + r")):(\d+)\b", re.MULTILINE)
    found = set(pattern.findall(text))
    if len(found) == 1:
        container, colour, port = found.pop()
        return colour, container, int(port)
    return None


def parse_upstream(text, name):
    """Colour the upstream file points to, or None (missing, placeholder, other target)."""
    server = parse_upstream_server(text, name)
    return server[0] if server else None


# --- state read from containers ----------------------------------------------


@dataclass
class ColourState:
    """What one colour's container says about itself (labels + engine state)."""

    colour: str
    exists: bool = False
    running: bool = False
    status: str = "absent"
    # Optional, not `str | None`: ansible-test's pylint reads module_utils as Python before 3.10 would.
    image_id: Optional[str] = None  # noqa: UP045
    image: Optional[str] = None  # noqa: UP045
    release: Optional[str] = None  # noqa: UP045
    revision: Optional[str] = None  # noqa: UP045
    version: Optional[str] = None  # noqa: UP045
    labels: dict = field(default_factory=dict)

    def summary(self):
        return {
            "colour": self.colour,
            "container_status": self.status,
            "release": self.release,
            "image": self.image,
            "image_id": self.image_id,
            "revision": self.revision,
            "version": self.version,
        }


def colour_state_from_attrs(colour, attrs):
    """Build a ColourState from ``docker inspect`` output (None: no container)."""
    if not attrs:
        return ColourState(colour=colour)
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    state = attrs.get("State") or {}
    return ColourState(
        colour=colour,
        exists=True,
        running=bool(state.get("Running")),
        status=state.get("Status") or ("running" if state.get("Running") else "unknown"),
        image_id=attrs.get("Image") or labels.get(LABEL_IMAGE_ID),
        image=labels.get(LABEL_IMAGE),
        release=labels.get(LABEL_RELEASE),
        revision=labels.get(LABEL_REVISION),
        version=labels.get(LABEL_VERSION) or None,
        labels=dict(labels),
    )


@dataclass
class DeployState:
    """Both colours and which one the proxy sends traffic to."""

    colours: dict
    live_colour: Optional[str]  # noqa: UP045

    @property
    def live(self):
        return self.colours.get(self.live_colour) if self.live_colour else None

    @property
    def idle_colour(self):
        return other_colour(self.live_colour) if self.live_colour else COLOURS[0]

    @property
    def idle(self):
        return self.colours.get(self.idle_colour)

    def live_summary(self):
        """The before/after shape used in ``diff``."""
        live = self.live
        return {
            "live_colour": self.live_colour,
            "live_image": live.image if live and live.exists else None,
            "live_release": live.release if live and live.exists else None,
        }


def read_state(name, upstream_text, inspect_by_colour):
    """DeployState from the upstream file's text and each colour's inspect dict."""
    colours = {colour: colour_state_from_attrs(colour, inspect_by_colour.get(colour)) for colour in COLOURS}
    return DeployState(colours=colours, live_colour=parse_upstream(upstream_text, name))


def choose_target_colour(state):
    """The colour a new release starts on: the one not serving (blue when none is)."""
    return state.idle_colour


@dataclass
class Decision:
    changed: bool
    reason: str


def decide_present(state, image_id, config=None, live_health=None):
    """Is a deploy of ``image_id`` needed? Same image and configuration, running, healthy and routed: no.

    ``config``: the digest of the asked configuration (fingerprint.config_digest); None ignores it.
    ``live_health``: a callable giving ``(ok, description)`` of the live container's health and the
    proxy's answer, asked only when everything else matches: a live release that stopped answering, or
    that the proxy no longer reaches, is replaced by a fresh one of the same image (whose switch reloads
    the proxy) instead of being reported as fine.
    """
    live = state.live
    if state.live_colour is None:
        return Decision(True, "no colour is live yet (the upstream file does not point at an app container)")
    if live is None or not live.exists:
        return Decision(True, f"the upstream points at {state.live_colour} but that container does not exist")
    if not live.running:
        return Decision(True, f"the live container ({state.live_colour}) is {live.status}, not running")
    if image_id is None:
        return Decision(True, "the image is not present locally yet")
    if live.image_id != image_id:
        return Decision(True, f"live runs {short_id(live.image_id)}, asked for {short_id(image_id)}")
    if config is not None:
        changes = config_changes(live.labels, config)
        if changes:
            return Decision(True, changes)
    if live_health is not None:
        healthy, detail = live_health()
        if not healthy:
            return Decision(
                True, f"{state.live_colour} runs {short_id(image_id)} but fails its health check ({detail})"
            )
    return Decision(False, f"{state.live_colour} already runs {short_id(image_id)} and serves the traffic")


# --- releases and the ledger ---------------------------------------------------


def plan_is_settled(changed, ref, pull, lock_held):
    """Whether a check-mode "no change" is final: a real run right now would change nothing either.

    Not when a real run would pull first (a tag can move on the registry; a
    digest cannot), nor when another run holds the lock (it may be changing
    the live release). A playbook may then skip the real run.
    """
    return not changed and (not pull or "@sha256:" in ref) and not lock_held


def short_id(image_id, length=8):
    """``sha256:3f2a9c1d...`` -> ``3f2a9c1d``."""
    if not image_id:
        return "none"
    return image_id.split(":", 1)[-1][:length]


def make_release_id(moment, image_id):
    """Release id: UTC time of the deploy plus the short image id, e.g. 20261126T093000Z-3f2a9c1d."""
    return f"{moment.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}-{short_id(image_id)}"


def live_entries(entries):
    """Ledger entries that made a release live and kept it (success or rollback), oldest first."""
    return [e for e in entries if e.get("outcome") in LIVE_OUTCOMES and e.get("release")]


def find_release(entries, release_id):
    """Latest ledger entry that made ``release_id`` live, or None."""
    for entry in reversed(live_entries(entries)):
        if entry.get("release") == release_id:
            return entry
    return None


def previous_release(entries, live_release_id):
    """The release that was live before the live one: rollback's default target.

    Walk the releases that went live, newest first; skip to the latest one that
    is ``live_release_id``, then return the first older one with another id.
    Rolling back twice therefore returns to where you were (A, B, rollback to A,
    rollback -> B). When the live release is not in the ledger (a lost ledger),
    the newest live entry with another id is returned.
    """
    history = live_entries(entries)
    index = None
    for i in range(len(history) - 1, -1, -1):
        if history[i].get("release") == live_release_id:
            index = i
            break
    candidates = history[:index] if index is not None else history
    for entry in reversed(candidates):
        if entry.get("release") != live_release_id:
            return entry
    return None


def images_to_prune(entries, keep_releases, protected_image_ids, present_image_ids=None):
    """Image ids that retention may remove.

    Kept: the images of the last ``keep_releases`` distinct releases that went
    live (newest first), plus ``protected_image_ids`` (the live and idle
    containers' images). Candidates are only images this module deployed (they
    are in the ledger, whatever the outcome): other images on the server are
    never touched. ``present_image_ids`` (if given) limits the result to images
    still on the server. Order: oldest first.
    """
    protected = {i for i in protected_image_ids if i}
    keep = set()
    seen_releases = []
    for entry in reversed(live_entries(entries)):
        release = entry.get("release")
        if release in seen_releases:
            continue
        if len(seen_releases) >= keep_releases:
            break
        seen_releases.append(release)
        if entry.get("image_id"):
            keep.add(entry["image_id"])
    prune = []
    for entry in entries:
        image_id = entry.get("image_id")
        if not image_id or image_id in keep or image_id in protected or image_id in prune:
            continue
        if present_image_ids is not None and image_id not in present_image_ids:
            continue
        prune.append(image_id)
    return prune


def container_labels(name, colour, release_id, image_ref, image_id, revision, version, config=None):
    """Labels an app container carries; the module reads its state back from them."""
    return {
        LABEL_CONFIG: config or "",
        LABEL_APP: name,
        LABEL_COLOUR: colour,
        LABEL_RELEASE: release_id,
        LABEL_IMAGE: image_ref,
        LABEL_IMAGE_ID: image_id,
        LABEL_REVISION: revision or "",
        LABEL_VERSION: version or "",
    }


def image_declared_version(image_attrs):
    """The version an image declares in its OCI label, if any."""
    labels = ((image_attrs or {}).get("Config") or {}).get("Labels") or {}
    return labels.get("org.opencontainers.image.version") or None


def tail_lines(text, count=20):
    """Last ``count`` non-empty lines of ``text`` (for error messages)."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return "\n".join(lines[-count:])
