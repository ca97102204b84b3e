"""The offsite copy: rsync to the append-only store (the store refuses deletes and overwrites)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time

from ansible.module_utils.montaiguillon.backup.errors import BackupError

RSYNC_VANISHED = 24


def rsync_command(backup_dir, *, target, ssh_key, known_hosts, port=22, delete=False, timeout=600):
    """The rsync command line that mirrors ``backup_dir`` to ``target`` (``user@host:path``) over SSH."""
    ssh = [
        "ssh",
        "-i",
        ssh_key,
        "-p",
        str(int(port)),
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"ConnectTimeout={min(int(timeout), 60)}",
    ]
    cmd = [
        "rsync",
        "--archive",
        f"--timeout={int(timeout)}",
        "--exclude=/.lock",
        "--exclude=*.partial",
        "--exclude=/.tmp-*",
        "--rsh",
        " ".join(shlex.quote(part) for part in ssh),
    ]
    if delete:
        # A mirror: deletions after the transfer, new files put in place together.
        cmd += ["--delete-after", "--delay-updates"]
    else:
        # An append-only store (rrsync -no-del -no-overwrite refuses both
        # options above): add what is missing, never replace what is there.
        cmd.append("--ignore-existing")
    return [*cmd, backup_dir.rstrip("/") + "/", target.rstrip("/") + "/"]


def offsite_sync(backup_dir, *, target, ssh_key, known_hosts, port=22, delete=False, timeout=600, warn=lambda _m: None):
    """Mirror ``backup_dir`` (dumps, manifests, drill records, shipped binlogs) to the storage host."""
    for path, what in ((ssh_key, "offsite SSH key"), (known_hosts, "offsite known_hosts file")):
        if not os.path.isfile(path):
            raise BackupError(f"the {what} {path} does not exist")
    if not shutil.which("rsync"):
        raise BackupError("the rsync binary is missing on the server (apt: rsync)")
    cmd = rsync_command(
        backup_dir, target=target, ssh_key=ssh_key, known_hosts=known_hosts, port=port, delete=delete, timeout=timeout
    )
    clock = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=int(timeout) * 4)
    if proc.returncode == RSYNC_VANISHED:
        warn("some files vanished during the offsite copy (retention ran meanwhile); the next copy catches up")
    elif proc.returncode != 0:
        detail = proc.stderr.strip()[-800:]
        raise BackupError(f"offsite copy to {target} failed (rsync exit {proc.returncode}): {detail}")
    return {"target": target, "seconds": round(time.monotonic() - clock, 3), "deleted": delete}
