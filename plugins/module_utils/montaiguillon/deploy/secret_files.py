"""Secrets a serving container reads from files, not from its environment.

``docker inspect`` shows a container's environment to whoever may talk to
Docker, and Docker keeps it in its own state on disk. A secret given as a file
shows only as a bind mount of a path: the serving slot gets, for each secret
``NAME``, a read-only file ``/run/secrets/NAME`` (mode 0400, owned by the
image's user) and the variable ``NAME_FILE`` naming it, the convention the
sample site and many official images (``mariadb``, ``wordpress``) follow.

Each colour has its own directory of files (``{state_dir}/secrets/{colour}``,
0700 root), rewritten when that colour's container is created, so the warm
previous colour keeps the files it was started with.
"""

import os
import re

from ansible.module_utils.montaiguillon.common.files import atomic_write_text

CONTAINER_DIR = "/run/secrets"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OWNER_RE = re.compile(r"^(\d+)(?::(\d+))?$")


class SecretFileError(Exception):
    """The secrets cannot be written as asked; the message names the option."""


def name_errors(secret_files):
    """Names that cannot be both a file name and an environment variable."""
    return [
        f"secret_files: {name!r} is not a variable name (letters, digits, '_'; not starting with a digit)"
        for name in secret_files or {}
        if not _NAME_RE.match(str(name))
    ]


def file_owner(image_user, override=None):
    """(uid, gid) the files belong to: ``override`` ("uid[:gid]") or the image's numeric USER.

    An image running as root (no USER) gets root's files. A named USER cannot be
    resolved on the server (it exists only in the image): the message says what to set.
    """
    spec = (override or image_user or "").strip()
    if not spec or spec in ("root", "0", "0:0"):
        return 0, 0
    match = _OWNER_RE.match(spec)
    if not match:
        raise SecretFileError(
            f"the image runs as user {spec!r}; secret files need its numeric uid[:gid]: "
            "set files_owner (app_secret_files_owner), for example '33:33' for Debian's www-data"
        )
    uid = int(match.group(1))
    return uid, int(match.group(2)) if match.group(2) is not None else uid


def write_secret_files(directory, secret_files, owner):
    """Write one 0400 file per secret in ``directory`` (0700); the bind mounts for ``containers.create``."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    wanted = {str(name) for name in secret_files}
    for stale in set(os.listdir(directory)) - wanted:
        os.unlink(os.path.join(directory, stale))
    volumes = {}
    for name, value in secret_files.items():
        path = os.path.join(directory, str(name))
        atomic_write_text(path, str(value), mode=0o400)
        os.chown(path, *owner)
        volumes[path] = {"bind": f"{CONTAINER_DIR}/{name}", "mode": "ro"}
    return volumes


def file_variables(secret_files):
    """``NAME_FILE=/run/secrets/NAME`` for each secret: what the serving container's environment holds."""
    return {f"{name}_FILE": f"{CONTAINER_DIR}/{name}" for name in secret_files or {}}
