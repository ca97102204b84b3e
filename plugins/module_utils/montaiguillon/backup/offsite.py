"""The offsite copy: rsync to the append-only store (the store refuses deletes and overwrites),
and back from it when the server's backup directory is lost."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time

from ansible.module_utils.montaiguillon.backup.catalog import list_backups
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.common.clock import iso, parse_iso

RSYNC_VANISHED = 24
# Never created: only named in the dry run that checks the store refuses deletions.
PROBE_DIR = ".montaiguillon-append-only-probe"


def _ssh(ssh_key, known_hosts, port, timeout):
    """The ssh command rsync goes through: this key only, the pinned host key, no prompt."""
    return [
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


def _rsync(ssh, timeout):
    return ["rsync", "--archive", f"--timeout={int(timeout)}", "--rsh", " ".join(shlex.quote(p) for p in ssh)]


def rsync_command(backup_dir, *, target, ssh_key, known_hosts, port=22, delete=False, timeout=600):
    """The rsync command line that mirrors ``backup_dir`` to ``target`` (``user@host:path``) over SSH."""
    cmd = [*_rsync(_ssh(ssh_key, known_hosts, port, timeout), timeout), "--exclude=/.lock", "--exclude=*.partial"]
    cmd.append("--exclude=/.tmp-*")
    if delete:
        # A mirror: deletions after the transfer, new files put in place together.
        cmd += ["--delete-after", "--delay-updates"]
    else:
        # An append-only store (rrsync -no-del -no-overwrite refuses both
        # options above): add what is missing, never replace what is there.
        cmd.append("--ignore-existing")
    return [*cmd, backup_dir.rstrip("/") + "/", target.rstrip("/") + "/"]


def fetch_command(backup_dir, *, target, ssh_key, known_hosts, port=22, timeout=600, include=()):
    """The rsync command line that brings ``include`` (rsync patterns) back from the store into ``backup_dir``.

    Only what the server lacks: a file already there is never replaced. Whatever the modes on the
    store, what arrives is root's alone (directories 0700, files 0600), as the backups are here.
    """
    filters = [f"--include={pattern}" for pattern in include] + ["--exclude=*"]
    cmd = [*_rsync(_ssh(ssh_key, known_hosts, port, timeout), timeout), "--ignore-existing", "--chmod=D0700,F0600"]
    cmd += filters
    return [*cmd, target.rstrip("/") + "/", backup_dir.rstrip("/") + "/"]


def offsite_sync(backup_dir, *, target, ssh_key, known_hosts, port=22, delete=False, timeout=600, warn=lambda _m: None):
    """Mirror ``backup_dir`` (dumps, manifests, drill records, shipped binlogs) to the storage host."""
    _check_tools(ssh_key, known_hosts)
    cmd = rsync_command(
        backup_dir, target=target, ssh_key=ssh_key, known_hosts=known_hosts, port=port, delete=delete, timeout=timeout
    )
    clock = time.monotonic()
    _run_rsync(cmd, target, "offsite copy to", timeout, warn)
    return {"target": target, "seconds": round(time.monotonic() - clock, 3), "deleted": delete}


def choose_offsite(entries, backup="latest", before=None):
    """The id to bring back: ``backup`` itself, or the newest complete backup (started before ``before``).

    ``entries`` are ``list_backups`` of the directory the manifests were fetched into
    (a dump not fetched yet is ``missing-file``, its manifest says ``complete``).
    """
    complete = [e for e in entries if e["manifest"] and e["manifest"].get("status") == "complete"]
    if backup != "latest":
        if not any(e["id"] == backup for e in complete):
            raise BackupError(f"backup {backup} is not a complete backup in the offsite store; nothing was changed")
        return backup
    for entry in complete:  # newest first
        if before is None or parse_iso(entry["manifest"]["started_at"]) < before:
            return entry["id"]
    when = f" taken before {iso(before)}" if before else ""
    raise BackupError(f"the offsite store holds no complete backup{when}; nothing was changed")


def offsite_fetch(backup_dir, *, target, ssh_key, known_hosts, port=22, timeout=600, backup="latest", before=None):
    """Bring a backup (its dump, its manifest and, with ``before``, the shipped binlogs) back from the store.

    For a restore after the server's backup directory was lost: the manifests first,
    the choice made on them, then only the chosen dump. Returns what was chosen.
    """
    _check_tools(ssh_key, known_hosts)
    options = {"target": target, "ssh_key": ssh_key, "known_hosts": known_hosts, "port": port, "timeout": timeout}
    clock = time.monotonic()
    _run_rsync(fetch_command(backup_dir, include=["/*.json"], **options), target, "fetching the manifests from")
    chosen = choose_offsite(list_backups(backup_dir), backup, before)
    manifest = next(e["manifest"] for e in list_backups(backup_dir) if e["id"] == chosen)
    include = [f"/{manifest['file']}"] + (["/binlogs/", "/binlogs/*"] if before is not None else [])
    _run_rsync(fetch_command(backup_dir, include=include, **options), target, f"fetching {chosen} from")
    return {"id": chosen, "file": manifest["file"], "binlogs": before is not None,
            "seconds": round(time.monotonic() - clock, 3)}  # fmt: skip


def check_store(*, target, ssh_key, known_hosts, port=22, timeout=30, append_only=True):
    """Whether this server reaches its offsite store and, unless ``append_only`` is off, the store refuses deletions.

    Two read-only rsync calls: a listing of the server's directory there (the store answers, the pinned host
    key and this server's key are accepted), then a dry run of ``--delete`` from an empty directory: an
    append-only store (``rrsync -no-del`` forced in its authorized_keys) refuses the option, and a dry run
    changes nothing either way. Returns what was found; ``BackupError`` says what is wrong.
    """
    _check_tools(ssh_key, known_hosts)
    rsh = " ".join(shlex.quote(part) for part in _ssh(ssh_key, known_hosts, port, timeout))
    base = ["rsync", f"--timeout={int(timeout)}", "--rsh", rsh]
    root = target.rstrip("/") + "/"
    listing = _probe([*base, "--list-only", root], timeout)
    if listing.returncode != 0:
        raise BackupError(
            f"the offsite store {target} cannot be reached or refused this server's key "
            f"(rsync exit {listing.returncode}): {listing.stderr.strip()[-400:]}"
        )
    if not append_only:
        return {"target": target, "reachable": True, "append_only": None}
    with tempfile.TemporaryDirectory(prefix="montaiguillon-store-probe-") as empty:
        probe = _probe([*base, "--dry-run", "--recursive", "--delete", empty + "/", root + PROBE_DIR + "/"], timeout)
    if probe.returncode == 0:
        raise BackupError(
            f"the offsite store {target} accepts deletions from this server's key: it is not append-only, so a "
            "compromised server could erase its own backups there (force `rrsync -no-del -no-overwrite` in the "
            "store's authorized_keys, docs/backups.md; or set backup_offsite_delete for a mirror, not recommended)"
        )
    if "disabled" not in probe.stderr:
        raise BackupError(
            f"the offsite store {target} did not refuse the deletion probe as an append-only store does "
            f"(rsync exit {probe.returncode}): {probe.stderr.strip()[-400:]}"
        )
    return {"target": target, "reachable": True, "append_only": True}


def _probe(cmd, timeout):
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=int(timeout) * 4)


def _check_tools(ssh_key, known_hosts):
    for path, what in ((ssh_key, "offsite SSH key"), (known_hosts, "offsite known_hosts file")):
        if not os.path.isfile(path):
            raise BackupError(f"the {what} {path} does not exist")
    if not shutil.which("rsync"):
        raise BackupError("the rsync binary is missing on the server (apt: rsync)")


def _run_rsync(cmd, target, doing, timeout=600, warn=lambda _m: None):
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=int(timeout) * 4)
    if proc.returncode == RSYNC_VANISHED:
        warn("some files vanished during the offsite copy (retention ran meanwhile); the next copy catches up")
    elif proc.returncode != 0:
        detail = proc.stderr.strip()[-800:]
        raise BackupError(f"{doing} {target} failed (rsync exit {proc.returncode}): {detail}")
