"""Named volumes a release's containers share: what a site keeps across releases (uploads).

Only Docker named volumes, never host paths: a host path would let an
inventory value mount any directory of the server (``/etc``, Docker's socket)
into the site. Each volume is named ``{app}_{key}`` so two apps on a server
never share one by accident; both slots and the migration mount the same
volumes, so an upload made on blue is there after a switch to green and after
a rollback.
"""

import re

_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Where a volume may not go: over the whole tree, or over what the system needs.
_FORBIDDEN = ("/", "/proc", "/sys", "/dev", "/etc", "/usr", "/bin", "/sbin", "/lib", "/run/secrets")


def volume_errors(volumes):
    """One sentence per bad entry, naming it."""
    problems = []
    for key, path in (volumes or {}).items():
        if not _KEY_RE.match(str(key)):
            problems.append(f"volumes: {key!r} is not a volume key (lowercase letters, digits, '_', a letter first)")
        text = str(path)
        normal = "/" + "/".join(part for part in text.split("/") if part)
        if not text.startswith("/") or ".." in text.split("/"):
            problems.append(f"volumes.{key}: {text!r} must be an absolute path inside the container, without '..'")
        elif normal in _FORBIDDEN or any(normal.startswith(root + "/") for root in _FORBIDDEN[1:]):
            problems.append(f"volumes.{key}: {text!r} is a system directory; mount the site's own data directory")
    return problems


def volume_mounts(app, volumes):
    """``containers.create`` volumes: ``{app}_{key}`` mounted read-write at each path."""
    return {f"{app}_{key}": {"bind": str(path), "mode": "rw"} for key, path in (volumes or {}).items()}
