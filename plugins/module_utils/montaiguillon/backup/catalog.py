"""The backup directory: listing, freshness, checksums, free space, its lock.

Pure file-system logic; what the modules, the server CLI and the deploy's
stale-backup gate read.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time

from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.ids import DUMP_NAME_RE, id_sort_key, parse_backup_id
from ansible.module_utils.montaiguillon.backup.manifest import validate_manifest
from ansible.module_utils.montaiguillon.common.clock import iso, parse_iso
from ansible.module_utils.montaiguillon.common.files import FileWriteError, atomic_write_json, sha256_file


def write_json(path, document, mode=0o600):
    """A backup's JSON file (manifest, drill record, status), all or nothing; a failure is a ``BackupError``."""
    try:
        atomic_write_json(path, document, mode)
    except FileWriteError as exc:
        raise BackupError(exc.strerror) from exc


def verify_backup_file(path, manifest):
    """Return ``(ok, actual_sha256, message)``; the message follows the operator wording."""
    backup_id = manifest.get("id", os.path.basename(path))
    if not os.path.exists(path):
        return False, None, f"backup {backup_id} is missing its dump file {path}; nothing was changed"
    actual = sha256_file(path)
    expected = manifest.get("sha256")
    if actual != expected:
        return (
            False,
            actual,
            f"backup {backup_id} is corrupt: sha256 mismatch (expected {expected}, got {actual}); nothing was changed",
        )
    return True, actual, None


# Room a new backup needs: the newest dump's size times this (a database grows; compression varies).
SPACE_MARGIN = 1.5


def newest_dump_size(backup_dir):
    """Size in bytes of the newest dump file in ``backup_dir`` (0 when there is none)."""
    newest = (None, 0)
    for name in os.listdir(backup_dir):
        if DUMP_NAME_RE.match(name):
            info = os.stat(os.path.join(backup_dir, name))
            newest = max(newest, (info.st_mtime, info.st_size), key=lambda pair: pair[0] or 0)
    return newest[1]


def check_free_space(backup_dir, min_size_bytes=0, free_bytes=None):
    """Refuse to start a backup that would fill the disk: free space >= the newest dump's size x SPACE_MARGIN.

    ``free_bytes`` is for tests; by default it is what an unprivileged writer may use on that file system.
    """
    if free_bytes is None:
        stats = os.statvfs(backup_dir)
        free_bytes = stats.f_bavail * stats.f_frsize
    last = newest_dump_size(backup_dir)
    needed = int(max(last * SPACE_MARGIN, min_size_bytes))
    if free_bytes < needed:
        raise BackupError(
            f"not enough room in {backup_dir}: {free_bytes} bytes free, the last backup took {last} bytes and a new "
            f"one needs {needed} ({SPACE_MARGIN}x); nothing was written. Free space or move backup_dir"
        )
    return free_bytes, needed


def remove_stale_partials(backup_dir):
    """Remove ``*.partial`` files; call only while holding the backup dir lock."""
    removed = []
    for name in sorted(os.listdir(backup_dir)):
        if name.endswith(".partial"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(backup_dir, name))
            removed.append(name)
    return removed


@contextlib.contextmanager
def backup_dir_lock(backup_dir, timeout=600, sleep=time.sleep):
    """Hold ``{backup_dir}/.lock`` (flock) so backups, restores and pruning never overlap."""
    fd = os.open(os.path.join(backup_dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BackupError(
                        f"another backup or restore still holds {backup_dir}/.lock after {timeout} s"
                    ) from None
                sleep(1)
        yield
    finally:
        os.close(fd)


def _read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def list_backups(backup_dir, database=None):
    """Describe every backup in ``backup_dir``, newest first.

    Each entry: id, taken_at (datetime), status (complete | incomplete |
    invalid | failed | missing-file | size-mismatch), problems, path,
    manifest_path, manifest, drill. ``incomplete`` is a dump without a manifest
    (the manifest is written last, so that backup never finished). With
    ``database``, only that database's backups (those whose manifest names it).
    """
    if not os.path.isdir(backup_dir):
        return []
    manifests, dumps = _backup_files(backup_dir)
    entries = []
    for backup_id in manifests | set(dumps):
        entry = _describe(backup_dir, backup_id, manifests, dumps)
        manifest = entry["manifest"]
        if database is not None and (not isinstance(manifest, dict) or manifest.get("database") != database):
            continue
        entries.append(entry)
    entries.sort(key=lambda e: id_sort_key(e["id"]), reverse=True)
    return entries


def _backup_files(backup_dir):
    """The ids that have a manifest, and each id's dump files."""
    manifests, dumps = set(), {}
    for name in os.listdir(backup_dir):
        if name.startswith(".") or name.endswith((".partial", ".drill.json")):
            continue
        if name.endswith(".json"):
            if parse_backup_id(name[:-5]):
                manifests.add(name[:-5])
            continue
        match = DUMP_NAME_RE.match(name)
        if match and parse_backup_id(match["id"]):
            dumps.setdefault(match["id"], []).append(name)
    return manifests, dumps


def _describe(backup_dir, backup_id, manifests, dumps):
    """One backup's entry: its manifest checked against the files beside it, and its drill record."""
    entry = {
        "id": backup_id,
        "taken_at": parse_backup_id(backup_id)[0],
        "status": "complete",
        "problems": [],
        "path": None,
        "manifest_path": os.path.join(backup_dir, f"{backup_id}.json"),
        "manifest": None,
        "drill": None,
    }
    if backup_id not in manifests:
        entry.update(
            status="incomplete", manifest_path=None, path=os.path.join(backup_dir, sorted(dumps[backup_id])[0])
        )
        entry["problems"].append("dump file without a manifest: the backup never finished")
        return entry
    try:
        manifest = _read_json(entry["manifest_path"])
    except (OSError, ValueError) as exc:
        entry.update(status="invalid", problems=[f"unreadable manifest: {exc}"])
        return entry
    entry["manifest"] = manifest
    problems = validate_manifest(manifest, backup_id)
    if problems:
        entry.update(status="invalid", problems=problems)
    else:
        entry["path"] = os.path.join(backup_dir, manifest["file"])
        if manifest["status"] != "complete":
            entry["status"] = manifest["status"]
        elif not os.path.exists(entry["path"]):
            entry.update(status="missing-file", problems=[f"{manifest['file']} is missing"])
        elif os.path.getsize(entry["path"]) != manifest["compressed_bytes"]:
            entry.update(status="size-mismatch", problems=[f"{manifest['file']} size differs from the manifest"])
    drill_path = os.path.join(backup_dir, f"{backup_id}.drill.json")
    if os.path.exists(drill_path):
        try:
            entry["drill"] = _read_json(drill_path)
        except (OSError, ValueError) as exc:
            entry["problems"].append(f"unreadable drill record: {exc}")
    return entry


def latest_good(entries):
    """The newest complete entry (``entries`` newest first), or None."""
    return next((e for e in entries if e["status"] == "complete"), None)


def backup_freshness(entries, *, backup_dir, database, max_age_hours, now):
    """Whether a deploy may go on: the newest good scheduled or manual backup is at most ``max_age_hours`` old.

    Pre-deploy and safety snapshots do not count: they say nothing about the
    schedule. ``entries`` newest first, as ``list_backups`` returns them.
    Returns ``{ok, newest, age_hours, reason}``; ``reason`` completes
    "refusing to deploy, ..." or stands alone when ``ok``.
    """
    newest = next(
        (e for e in entries if e["status"] == "complete" and e["manifest"].get("kind") in ("scheduled", "manual")),
        None,
    )
    if newest is None:
        reason = f"there is no good backup of {database} in {backup_dir}"
        return {"ok": False, "newest": None, "age_hours": None, "reason": reason}
    age = round((now - parse_iso(newest["manifest"]["finished_at"])).total_seconds() / 3600, 1)
    if age <= max_age_hours:
        return {
            "ok": True,
            "newest": newest["id"],
            "age_hours": age,
            "reason": f"newest good backup {newest['id']}, {age} h old",
        }
    reason = f"the newest good backup ({newest['id']}) is {age} h old"
    return {"ok": False, "newest": newest["id"], "age_hours": age, "reason": reason}


def public_entry(entry):
    """An entry as a module returns it (JSON-friendly)."""
    result = dict(entry)
    result["taken_at"] = iso(entry["taken_at"])
    return result


def remove_backup(backup_dir, entry):
    """Delete a backup: manifest first (so it never looks complete half-way), then the rest."""
    backup_id = entry["id"]
    names = [f"{backup_id}.json", f"{backup_id}.drill.json"]
    for name in os.listdir(backup_dir):
        match = DUMP_NAME_RE.match(name)
        if match and match["id"] == backup_id:
            names.append(name)
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(backup_dir, name))
