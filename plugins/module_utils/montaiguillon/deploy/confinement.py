"""How a release's containers are confined: privileges, root filesystem, limits.

Every container the deploy module creates from a release image (the two
serving slots and the one-off migration) gets the same confinement, so a
release that migrates fine also serves under the same rules. The defaults are
the least any well-behaved web image needs: no Linux capabilities at all, no
privilege gain through setuid binaries (``no-new-privileges``), and limits on
memory and processes so one runaway release cannot starve the database on the
same server. A read-only root filesystem is opt-in per image (the sample site
honours it; many images write to their own tree).

``Confinement.from_params(params)`` reads the module's ``confinement`` option;
``errors()`` says what is wrong with it in words; ``docker_kwargs()`` is what
``docker.containers.create`` takes.
"""

import copy
import re
from dataclasses import dataclass

# Docker's memory notation: a number and an optional unit (b, k, m, g).
_MEMORY_RE = re.compile(r"^([0-9]+)([bkmg]?)$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
# Below this a Python or PHP web process does not even start: a typo, not a limit.
MIN_MEMORY_BYTES = 32 * 1024**2
MIN_PIDS = 16
# Linux capability names as Docker takes them (CHOWN or CAP_CHOWN).
_CAPABILITY_RE = re.compile(r"^(CAP_)?[A-Z][A-Z_]+$")
# Mounted on a read-only root filesystem's scratch directories.
# mode=1777 (sticky, like /tmp) for a directory the image lacks; Docker gives one the image has its
# owner and mode (measured on the lab's Docker 20.10), so a non-root image needs it writable there.
TMPFS_OPTIONS = "rw,noexec,nosuid,nodev,size=64m,mode=1777"
# A tmpfs private to the container (not the host's /tmp), mounted only when
# the root filesystem is read-only.
SCRATCH_DIRS = ("/tmp",)  # noqa: S108

_SPEC = {
    "type": "dict",
    "default": {},
    "options": {
        "capabilities": {"type": "list", "elements": "str", "default": []},
        "no_new_privileges": {"type": "bool", "default": True},
        "read_only": {"type": "bool", "default": False},
        "tmpfs": {"type": "list", "elements": "str", "default": list(SCRATCH_DIRS)},
        "memory": {"type": "str", "default": "512m"},
        "pids_limit": {"type": "int", "default": 256},
    },
}


def confinement_spec():
    """The module option's spec, a fresh copy: AnsibleModule writes defaults into the dicts it is given."""
    return copy.deepcopy(_SPEC)


def memory_bytes(text):
    """``"512m"`` -> 536870912; None when the text is not Docker memory notation."""
    match = _MEMORY_RE.match(str(text).strip())
    if not match:
        return None
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


@dataclass(frozen=True)
class Confinement:
    capabilities: tuple = ()
    no_new_privileges: bool = True
    read_only: bool = False
    tmpfs: tuple = SCRATCH_DIRS
    memory: str = "512m"
    pids_limit: int = 256

    @classmethod
    def from_params(cls, params):
        options = dict(params.get("confinement") or {})
        defaults = {key: spec["default"] for key, spec in _SPEC["options"].items()}
        for key, value in defaults.items():
            if options.get(key) is None:
                options[key] = value
        return cls(
            capabilities=tuple(str(cap).strip().upper() for cap in options["capabilities"]),
            no_new_privileges=bool(options["no_new_privileges"]),
            read_only=bool(options["read_only"]),
            tmpfs=tuple(options["tmpfs"]),
            memory=str(options["memory"]).strip(),
            pids_limit=int(options["pids_limit"]),
        )

    def errors(self):
        """What is wrong, one sentence per problem, naming the option."""
        problems = []
        for cap in self.capabilities:
            if not _CAPABILITY_RE.match(cap) or cap in ("ALL", "CAP_ALL"):
                problems.append(
                    f"confinement.capabilities: {cap!r} is not one Linux capability name "
                    "(for example NET_BIND_SERVICE; ALL would undo the confinement)"
                )
        size = memory_bytes(self.memory)
        if size is None:
            problems.append(f"confinement.memory: {self.memory!r} is not a size like 512m or 1g")
        elif size < MIN_MEMORY_BYTES:
            problems.append(f"confinement.memory: {self.memory!r} is below 32m; no web process starts in that")
        if self.pids_limit < MIN_PIDS:
            problems.append(
                f"confinement.pids_limit: {self.pids_limit} is below {MIN_PIDS}; the workers could not start"
            )
        for path in self.tmpfs:
            if not str(path).startswith("/") or str(path) == "/":
                problems.append(f"confinement.tmpfs: {path!r} must be an absolute directory other than /")
        return problems

    def docker_kwargs(self):
        """Keyword arguments for ``containers.create`` (Docker SDK 5)."""
        kwargs = {
            "cap_drop": ["ALL"],
            "mem_limit": self.memory,
            # No swap beyond the memory limit: a leaking release is stopped, not slowed.
            "memswap_limit": self.memory,
            "pids_limit": self.pids_limit,
        }
        if self.capabilities:
            kwargs["cap_add"] = list(self.capabilities)
        if self.no_new_privileges:
            kwargs["security_opt"] = ["no-new-privileges:true"]
        if self.read_only:
            kwargs["read_only"] = True
            kwargs["tmpfs"] = {path: TMPFS_OPTIONS for path in self.tmpfs}
        return kwargs

    def describe(self):
        """One line for the step log: what the containers may do."""
        caps = ", ".join(self.capabilities) if self.capabilities else "none"
        parts = [
            f"capabilities {caps}",
            f"memory {self.memory}",
            f"pids {self.pids_limit}",
            "read-only root" if self.read_only else "writable root",
        ]
        if self.no_new_privileges:
            parts.append("no-new-privileges")
        return "; ".join(parts)
