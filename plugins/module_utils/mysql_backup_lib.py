"""Backups of a MySQL/MariaDB server that runs in a Docker container.

Shared by the ``mysql_backup`` and ``mysql_restore`` modules.

Part 1 is pure logic (only the local file system): backup ids, manifests,
retention, atomic files, checksums, listing and the dump scanner. It is what the
unit tests cover most.

Part 2 is the runtime: Docker exec streams (low-level API of Docker SDK 5.0.3:
``exec_create``/``exec_start(socket=True)``/``exec_inspect``/``put_archive``;
the client comes from ``docker_common``), the PyMySQL connection (1.0.2 API),
the backup pipeline, restore streaming, point-in-time replay and drills.

Everything that fails raises ``BackupError`` with a message fit for an operator;
messages never hold a password or a command line that holds one.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import datetime as dt
import errno
import fcntl
import hashlib
import io
import itertools
import json
import os
import re
import secrets
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import tarfile
import tempfile
import threading
import time

from ansible.module_utils.cpu_cgroup import joined as joined_cpu_cgroup
from ansible.module_utils.montaiguillon.common.clock import iso, parse_iso, utcnow
from ansible.module_utils.montaiguillon.common.docker_engine import DockerError, DockerException, get_client
from ansible.module_utils.montaiguillon.common.files import (
    FileWriteError,
    atomic_write_json,
    describe_os_error,
    fsync_dir,
    sha256_file,
)

try:
    import pymysql

    HAS_PYMYSQL = True
except ImportError:  # pragma: no cover - reported by the modules
    pymysql = None
    HAS_PYMYSQL = False


FORMAT_VERSION = 1
KINDS = ("scheduled", "manual", "pre-deploy", "safety")
# The ladder (keep_last, daily, weekly, monthly) keeps scheduled and manual backups; snapshots
# (pre-deploy, safety) have their own pool: the newest `snapshots` not older than `snapshot_days`.
DEFAULT_RETENTION = {"keep_last": 3, "daily": 7, "weekly": 4, "monthly": 6, "snapshots": 5, "snapshot_days": 7}
LADDER_KINDS = ("scheduled", "manual")
COMPRESSIONS = {
    "zstd": {
        "ext": "zst",
        "compress": ["zstd", "-q", "-T0", "-3", "-c"],
        "decompress": ["zstd", "-q", "-d", "-c"],
    },
    "gzip": {"ext": "gz", "compress": ["gzip", "-c", "-6"], "decompress": ["gzip", "-d", "-c"]},
}
ID_RE = re.compile(r"^(?P<ts>\d{8}T\d{6}Z)-(?P<kind>scheduled|manual|pre-deploy|safety)(?:-(?P<seq>[1-9]\d*))?$")
DUMP_NAME_RE = re.compile(r"^(?P<id>[^/]+?)\.sql\.(?P<ext>zst|gz)(?P<age>\.age)?$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20
STDERR_KEEP = 16 * 1024
# Backups are background work: the dump tool (in the database container), the
# compressor and the thread reading the dump run under SCHED_IDLE where chrt
# exists (they get a core only when nothing else wants it, and give it back the
# moment a query wakes up), else at nice 10, in an idle CPU cgroup (see
# cpu_cgroup: so that this holds against the site's containers too). Measured
# with benchmarks/backup.py on 2 cores: a full-speed dump took the writer's p99
# to 15-35x its idle value at nice 10, 3.5x under SCHED_IDLE. The thread inside
# mysqld that serves the dump keeps the server's priority: the pace (max_rate)
# bounds it.
BACKUP_NICE = 10
BACKGROUND_PREFIXES = (["chrt", "-i", "0"], ["nice", "-n", str(BACKUP_NICE)])
# The FIFO a dump comes through holds this much, and is read this much at a
# time: with the pace applied every 16 KiB, the database and the dump tool work
# in bursts of about a millisecond, not the ~80 ms a 1 MiB pipe allowed, and the
# site's queries stop queueing behind them (writer p99 over idle, setup of
# benchmarks/backup.py: 1 MiB pipe 3.2x at 12M, 64 KiB 1.8x at 14M, 16 KiB 1.2x).
FIFO_BYTES = 16 * 1024


class BackupError(Exception):
    """A failure explained for the operator (never holds a secret)."""


RATE_RE = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kKmMgG]?)(?:i?B)?(?:/s)?\s*$")
RATE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_rate(value):
    """Bytes per second from ``20M``, ``512k``, ``1.5G``, ``20MiB/s`` or a number of bytes; 0 means no limit."""
    if value is None or value == "":
        return 0
    match = RATE_RE.match(str(value))
    if not match:
        raise BackupError(f"max_rate {value!r} is not a rate: give bytes per second like 20M, 512k or 0 (no limit)")
    rate = float(match["number"]) * RATE_UNITS[match["unit"].lower()]
    if 0 < rate < 64 * 1024:
        raise BackupError(f"max_rate {value!r} is below 64k per second: a backup would take days; 0 means no limit")
    return int(rate)


class Pacer:
    """Holds a stream to ``rate`` bytes per second on average (0: no limit) by sleeping between chunks.

    A paced dump leaves CPU to the site: the database thread serving the dump,
    the dump tool and the compressor all wait while the reader sleeps, so on a
    small server the site's queries find a free core at once. Like
    pg_basebackup's --max-rate, the limit applies to the data read (here the
    uncompressed dump).
    """

    def __init__(self, rate, clock=None, sleep=None):
        self.rate = rate
        self.clock = clock or time.monotonic
        self.sleep = sleep or time.sleep
        self.start = None
        self.total = 0
        self.slept = 0.0

    def __call__(self, size):
        if not self.rate:
            return
        now = self.clock()
        if self.start is None:
            self.start = now
        self.total += size
        ahead = self.total / self.rate - (now - self.start)
        if ahead > 0:
            self.sleep(ahead)
            self.slept += ahead


# --------------------------------------------------------------------------
# Backup ids
# --------------------------------------------------------------------------


def make_backup_id(now, kind, exists=lambda _backup_id: False):
    """``20261126T091108Z-manual``; ``-2``, ``-3``... when that second is taken."""
    if kind not in KINDS:
        raise ValueError(f"unknown backup kind {kind!r}")
    base = f"{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{kind}"
    candidate, seq = base, 1
    while exists(candidate):
        seq += 1
        candidate = f"{base}-{seq}"
    return candidate


def parse_backup_id(backup_id):
    """Return ``(datetime, kind, seq)`` or None when it is not one of our ids."""
    match = ID_RE.match(backup_id or "")
    if not match:
        return None
    moment = dt.datetime.strptime(match["ts"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    return moment, match["kind"], int(match["seq"] or 1)


def id_sort_key(backup_id):
    parsed = parse_backup_id(backup_id)
    if parsed is None:
        return (dt.datetime.min.replace(tzinfo=dt.UTC), 0, backup_id)
    return (parsed[0], parsed[2], backup_id)


def dump_file_name(backup_id, compression, encrypted=False):
    return f"{backup_id}.sql.{COMPRESSIONS[compression]['ext']}" + (".age" if encrypted else "")


# --------------------------------------------------------------------------
# Retention
# --------------------------------------------------------------------------

_BUCKETS = (
    ("daily", lambda moment: moment.date()),
    ("weekly", lambda moment: tuple(moment.isocalendar())[:2]),
    ("monthly", lambda moment: (moment.year, moment.month)),
)


def select_retention(backups, policy, protect=()):
    """Return the set of backup ids to keep.

    ``backups`` is an iterable of ``(id, datetime)``; ``policy`` has ``keep_last``,
    ``daily``, ``weekly`` and ``monthly`` counts. Keeps the newest ``keep_last``
    backups, then, for each period kind, the newest backup of each of the N most
    recent periods that have a backup (days, ISO weeks, months, in UTC). Ids in
    ``protect`` are always kept.
    """
    ordered = sorted(
        ((bid, when.astimezone(dt.UTC)) for bid, when in backups),
        key=lambda b: (b[1], id_sort_key(b[0])),
        reverse=True,
    )
    keep = {bid for bid, _when in ordered[: max(0, int(policy.get("keep_last") or 0))]}
    for name, bucket in _BUCKETS:
        limit = max(0, int(policy.get(name) or 0))
        seen = set()
        for bid, when in ordered:
            if len(seen) >= limit:
                break
            key = bucket(when)
            if key not in seen:
                seen.add(key)
                keep.add(bid)
    known = {bid for bid, _when in ordered}
    keep.update(bid for bid in protect if bid in known)
    return keep


def _kind_of(backup_id):
    parsed = parse_backup_id(backup_id)
    return parsed[1] if parsed else None


def select_snapshots(snapshots, policy, now):
    """Ids of the pre-deploy and safety snapshots to keep: the newest ``snapshots``, none older than
    ``snapshot_days`` (the newest one always)."""
    ordered = sorted(snapshots, key=lambda p: (p[1], id_sort_key(p[0])), reverse=True)
    count = max(1, int(policy.get("snapshots", DEFAULT_RETENTION["snapshots"])))
    max_age = dt.timedelta(days=max(0, float(policy.get("snapshot_days", DEFAULT_RETENTION["snapshot_days"]))))
    keep = {bid for bid, when in ordered[:count] if now - when <= max_age}
    if ordered:
        keep.add(ordered[0][0])
    return keep


def plan_retention(entries, policy, database, extra=None, now=None):
    """Split the complete backups of ``database`` into (keep, prune) id lists.

    ``entries`` comes from ``list_backups``; ``extra`` is an ``(id, datetime)`` for a
    backup about to be taken (check mode). Only complete backups are candidates:
    incomplete or damaged ones are left for an operator to look at. Scheduled and
    manual backups climb the ladder (``keep_last``, daily, weekly, monthly), which
    snapshots never crowd: pre-deploy and safety snapshots have their own pool
    (``snapshots``, ``snapshot_days``). The newest backup of each group and the newest
    drill-verified one are never pruned.
    """
    candidates = [e for e in entries if e["status"] == "complete" and e["manifest"].get("database") == database]
    pairs = [(e["id"], e["taken_at"]) for e in candidates]
    if extra is not None:
        pairs.append(extra)
    if not pairs:
        return [], []
    now = now or max(when for _bid, when in pairs)
    ladder = [p for p in pairs if _kind_of(p[0]) in LADDER_KINDS]
    snapshots = [p for p in pairs if _kind_of(p[0]) not in LADDER_KINDS]
    protect = {max(group, key=lambda p: (p[1], id_sort_key(p[0])))[0] for group in (ladder, snapshots) if group}
    verified = [e for e in candidates if e["manifest"].get("verified") is True]
    if verified:
        protect.add(max(verified, key=lambda e: (e["taken_at"], id_sort_key(e["id"])))["id"])
    keep = select_retention(ladder, policy, protect) | select_snapshots(snapshots, policy, now) | protect
    order = sorted(pairs, key=lambda p: (p[1], id_sort_key(p[0])), reverse=True)
    return [bid for bid, _when in order if bid in keep], [bid for bid, _when in order if bid not in keep]


# --------------------------------------------------------------------------
# Files: atomic writes, checksums, errors
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------

_MANIFEST_TYPES = {
    "format": int,
    "id": str,
    "database": str,
    "file": str,
    "status": str,
    "kind": str,
    "label": str,
    "compression": str,
    "sha256": str,
    "compressed_bytes": int,
    "uncompressed_bytes": int,
    "row_counts": dict,
    "started_at": str,
    "finished_at": str,
}


def build_manifest(
    *,
    backup_id,
    database,
    file_name,
    kind,
    label,
    started,
    finished,
    duration,
    compression,
    encryption,
    sha256,
    compressed_bytes,
    scan,
    server,
    tool,
    pacing=None,
):
    """Assemble the manifest of a finished, checked backup (``scan`` is a DumpScanner)."""
    binlog = None
    if scan.binlog_file:
        binlog = {"file": scan.binlog_file, "position": scan.binlog_position, "gtid": scan.gtid}
    return {
        "format": FORMAT_VERSION,
        "id": backup_id,
        "status": "complete",
        "database": database,
        "file": file_name,
        "kind": kind,
        "label": label or "",
        "started_at": iso(started),
        "finished_at": iso(finished),
        "duration_seconds": round(duration, 3),
        "pacing": pacing or {"max_rate_bytes": 0, "paused_seconds": 0.0},
        "compression": compression,
        "encryption": encryption,
        "sha256": sha256,
        "compressed_bytes": compressed_bytes,
        "uncompressed_bytes": scan.total_bytes,
        "server": server,
        "binlog": binlog,
        "tool": tool,
        "row_counts": dict(sorted(scan.row_counts.items())),
        "row_counts_source": "dump",
        "row_counts_note": "rows counted in the dump stream itself: the same snapshot as the data",
        "verified": False,
    }


def validate_manifest(manifest, expected_id=None):
    """Return a list of problems (empty when the manifest is usable)."""
    if not isinstance(manifest, dict):
        return ["manifest is not a JSON object"]
    problems = []
    for key, kind in _MANIFEST_TYPES.items():
        value = manifest.get(key)
        if value is None:
            problems.append(f"missing {key}")
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            problems.append(f"{key} should be {kind.__name__}")
    if problems:
        return problems
    if manifest["format"] != FORMAT_VERSION:
        problems.append(f"unsupported manifest format {manifest['format']}")
    if parse_backup_id(manifest["id"]) is None:
        problems.append(f"bad id {manifest['id']!r}")
    if expected_id is not None and manifest["id"] != expected_id:
        problems.append(f"id {manifest['id']!r} does not match file name {expected_id!r}")
    match = DUMP_NAME_RE.match(manifest["file"])
    if not match or match["id"] != manifest["id"] or "/" in manifest["file"]:
        problems.append(f"bad file name {manifest['file']!r}")
    if manifest["compression"] not in COMPRESSIONS:
        problems.append(f"unknown compression {manifest['compression']!r}")
    if manifest["kind"] not in KINDS:
        problems.append(f"unknown kind {manifest['kind']!r}")
    if not SHA256_RE.match(manifest["sha256"]):
        problems.append("sha256 is not 64 lowercase hex digits")
    if manifest["compressed_bytes"] < 0 or manifest["uncompressed_bytes"] < 0:
        problems.append("negative size")
    for table, count in manifest["row_counts"].items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            problems.append(f"bad row count for {table!r}")
    for key in ("started_at", "finished_at"):
        try:
            parse_iso(manifest[key])
        except ValueError:
            problems.append(f"{key} is not an ISO timestamp")
    binlog = manifest.get("binlog")
    if binlog is not None and not (
        isinstance(binlog, dict) and binlog.get("file") and isinstance(binlog.get("position"), int)
    ):
        problems.append("binlog should be null or have file and position")
    return problems


def compare_row_counts(expected, actual):
    """Return ``[{table, expected, actual}]`` for every table whose count differs."""
    return [
        {"table": table, "expected": count, "actual": actual.get(table)}
        for table, count in sorted(expected.items())
        if actual.get(table) != count
    ]


# --------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------


def _read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def list_backups(backup_dir, database=None):
    """Describe every backup in ``backup_dir``, newest first.

    Each entry: id, taken_at (datetime), status (complete | incomplete |
    invalid | failed | missing-file | size-mismatch), problems, path,
    manifest_path, manifest, drill. ``incomplete`` is a dump without a manifest
    (the manifest is written last, so that backup never finished).
    """
    if not os.path.isdir(backup_dir):
        return []
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
    entries = []
    for backup_id in manifests | set(dumps):
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
            if database is None:
                entries.append(entry)
            continue
        try:
            manifest = _read_json(entry["manifest_path"])
        except (OSError, ValueError) as exc:
            entry.update(status="invalid", problems=[f"unreadable manifest: {exc}"])
            if database is None:
                entries.append(entry)
            continue
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
        if database is not None and (not isinstance(manifest, dict) or manifest.get("database") != database):
            continue
        entries.append(entry)
    entries.sort(key=lambda e: id_sort_key(e["id"]), reverse=True)
    return entries


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


# --------------------------------------------------------------------------
# The dump scanner: counts rows and reads the header as the bytes stream past
# --------------------------------------------------------------------------


class DumpScanner:
    """Read a mysqldump/mariadb-dump stream once, without storing it.

    Learns the binlog position (``--master-data=2``/``--source-data=2``), the GTID
    position, the server version, the tables (``CREATE TABLE``) and the exact
    number of rows of each table in the dump, and whether the dump ends with the
    ``-- Dump completed`` trailer. Works for both INSERT layouts (all rows on one
    line, or one row per line as MariaDB 10.11 writes them). The dump tools escape
    newlines inside strings, so a line never starts inside a string.
    """

    _INSERT = re.compile(rb"^INSERT INTO `((?:[^`]|``)+)` VALUES")
    _CREATE = re.compile(rb"^CREATE TABLE `((?:[^`]|``)+)` \(")
    _POSITION = re.compile(
        rb"^-- CHANGE (?:MASTER|REPLICATION SOURCE) TO (?:MASTER|SOURCE)_LOG_FILE='([^']+)',"
        rb" (?:MASTER|SOURCE)_LOG_POS=(\d+)"
    )
    _MARIADB_GTID = re.compile(rb"^-- SET GLOBAL gtid_slave_pos='([^']*)'")
    _MYSQL_GTID = re.compile(rb"^SET @@GLOBAL\.GTID_PURGED=(?:/\*!80000 '\+'\*/ )?'([^']*)'")
    _VERSION = re.compile(rb"^-- Server version\s+(\S.*?)\s*$")
    _TRAILER = b"-- Dump completed"

    def __init__(self):
        self.total_bytes = 0
        self.row_counts = {}
        self.binlog_file = None
        self.binlog_position = None
        self.gtid = None
        self.server_version = None
        self._pending = bytearray()
        self._insert_table = None
        self._tail = b""

    def feed(self, data):
        self.total_bytes += len(data)
        self._tail = (self._tail + data[-256:])[-256:]
        self._pending += data
        self._process(final=False)

    def finish(self):
        self._process(final=True)
        return self

    @property
    def trailer_ok(self):
        lines = [line.strip() for line in self._tail.splitlines() if line.strip()]
        return bool(lines) and lines[-1].startswith(self._TRAILER)

    @staticmethod
    def _name(raw):
        return raw.replace(b"``", b"`").decode("utf-8", "replace")

    def _process(self, final):
        buf = self._pending
        pos = 0
        while pos < len(buf):
            if self._insert_table is not None:
                # Rows of an INSERT: whole lines at once. The statement ends at the
                # first ";" that ends a line (a string never holds a raw newline).
                end = buf.find(b";\n", pos)
                if end >= 0:
                    self._rows(buf[pos : end + 1])
                    pos = end + 2
                    continue
                last = len(buf) - 1 if final else buf.rfind(b"\n", pos)
                if last >= 0:
                    self._rows(buf[pos : last + 1])
                    pos = last + 1
                break
            end = buf.find(b"\n", pos)
            if end < 0:
                if final:
                    self._line(bytes(buf[pos:]))
                    pos = len(buf)
                break
            self._line(bytes(buf[pos:end]))
            pos = end + 1
        del buf[:pos]

    def _rows(self, block):
        # Drop what is inside strings at C speed: escaped pairs (\\ first, then \'),
        # then every other piece between quotes. Whole lines only, so quotes pair up.
        pieces = bytes(block).replace(b"\\\\", b"").replace(b"\\'", b"").split(b"'")
        stripped = b"".join(pieces[::2])
        self.row_counts[self._insert_table] = self.row_counts.get(self._insert_table, 0) + stripped.count(b"(")
        if stripped.rstrip().endswith(b";"):
            self._insert_table = None

    def _line(self, line):
        if line.startswith(b"INSERT INTO `"):
            match = self._INSERT.match(line)
            if match:
                self._insert_table = self._name(match[1])
                self._rows(line[match.end() :])
        elif line.startswith(b"CREATE TABLE `"):
            match = self._CREATE.match(line)
            if match:
                self.row_counts.setdefault(self._name(match[1]), 0)
        elif line.startswith(b"-- "):
            for pattern, handler in (
                (self._POSITION, self._set_position),
                (self._MARIADB_GTID, self._set_gtid),
                (self._VERSION, self._set_version),
            ):
                match = pattern.match(line)
                if match:
                    handler(match)
        elif line.startswith(b"SET @@GLOBAL.GTID_PURGED"):
            match = self._MYSQL_GTID.match(line)
            if match:
                self._set_gtid(match)

    def _set_position(self, match):
        self.binlog_file, self.binlog_position = match[1].decode(), int(match[2])

    def _set_gtid(self, match):
        self.gtid = match[1].decode()

    def _set_version(self, match):
        self.server_version = match[1].decode("utf-8", "replace")


def check_dump(scan, exit_code, min_size_bytes, tool, stderr=""):
    """Return the reason a finished dump is unusable, or None when it is good."""
    detail = f": {stderr.strip()[-500:]}" if stderr.strip() else ""
    if exit_code != 0:
        return f"{tool} exited with code {exit_code}{detail}"
    if scan.total_bytes < min_size_bytes:
        return (
            f"the dump is suspiciously small ({scan.total_bytes} bytes < min_size_bytes {min_size_bytes}):"
            f" a broken pipe or an empty database?{detail}"
        )
    if not scan.trailer_ok:
        return f"the dump does not end with the '-- Dump completed' trailer: it was cut short{detail}"
    return None


def dump_flags(server_version, log_bin):
    """The dump tool's flags (no credentials) for this server."""
    flags = [
        "--single-transaction",
        "--quick",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--default-character-set=utf8mb4",
        "--max-allowed-packet=1G",
    ]
    if log_bin:
        if "mariadb" in (server_version or "").lower():
            flags += ["--master-data=2", "--gtid"]
        elif version_tuple(server_version) >= (8, 0, 26):
            flags += ["--source-data=2"]
        else:
            flags += ["--master-data=2"]
    return flags


def version_tuple(version):
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", version or "")
    return tuple(int(part) for part in match.groups()) if match else (0, 0, 0)


def parse_stop_datetime(value):
    """An ISO date-time (naive = UTC) -> aware UTC datetime."""
    try:
        return parse_iso(str(value).strip().replace(" ", "T", 1))
    except ValueError:
        raise BackupError(f"stop_datetime {value!r} is not an ISO date-time such as 2026-11-26 09:30:00") from None


def binlog_sequence(start_file, server_files, shipped_files):
    """Binlog files to replay from ``start_file`` on: ``[(name, "server" | "shipped")]``.

    Server copies win; shipped copies (``{backup_dir}/binlogs``) fill in files the
    server has purged. The numbering must have no gap.
    """

    def number(name):
        match = re.match(r"^(.*)\.(\d+)$", name)
        return (match[1], int(match[2])) if match else (name, -1)

    prefix, first = number(start_file)
    sources = {}
    for name in shipped_files:
        sources[name] = "shipped"
    for name in server_files:
        sources[name] = "server"
    wanted = sorted(
        (n for n in sources if number(n)[0] == prefix and number(n)[1] >= first),
        key=lambda n: number(n)[1],
    )
    if not wanted or wanted[0] != start_file:
        raise BackupError(
            f"binlog {start_file} (the backup's position) is neither on the server nor in the shipped copies:"
            " point-in-time recovery is impossible from this backup"
        )
    for before, after in itertools.pairwise(wanted):
        if number(after)[1] != number(before)[1] + 1:
            raise BackupError(f"binlog gap between {before} and {after}: point-in-time recovery is impossible")
    return [(name, sources[name]) for name in wanted]


def option_file(user, password, extra=None):
    """A [client] option file; values quoted so any character survives."""

    def quote(value):
        value = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{value}"'

    lines = ["[client]", f"user={quote(user)}", f"password={quote(password or '')}"]
    for key, value in (extra or {}).items():
        lines.append(f"{key}={quote(value)}")
    return ("\n".join(lines) + "\n").encode()


def quote_identifier(name):
    return "`" + name.replace("`", "``") + "`"


# ==========================================================================
# Part 2: runtime (Docker, PyMySQL, subprocesses)
# ==========================================================================


def docker_api(docker_host=None, timeout=120):
    """The low-level APIClient (exec sockets need it) of docker_common's checked client."""
    try:
        return get_client(docker_host, timeout=timeout).api
    except DockerError as exc:
        raise BackupError(str(exc)) from exc


class _FrameReader:
    """Read Docker's multiplexed stream (8-byte frame headers) from a raw socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    def _fill(self, size):
        while len(self.buf) < size and not self.eof:
            data = self.sock.recv(max(CHUNK, size - len(self.buf)))
            if not data:
                self.eof = True
            self.buf += data
        return len(self.buf) >= size

    def __iter__(self):
        while self._fill(8):
            stream, size = self.buf[0], struct.unpack(">I", self.buf[4:8])[0]
            if not self._fill(8 + size):
                return
            data = bytes(self.buf[8 : 8 + size])
            del self.buf[: 8 + size]
            yield stream, data


class ExecStream:
    """A process started in a container with ``docker exec``, its output streamed.

    Uses the low-level API only: ``exec_create`` + ``exec_start(socket=True)`` +
    ``exec_inspect`` (present in Docker SDK 5.0.3). stdin, when attached, is the
    socket itself; ``close_stdin`` half-closes it so the process sees EOF.
    """

    def __init__(self, api, container, cmd, stdin=False, environment=None, user=""):
        self.api = api
        program = without_background(cmd)  # the tool behind a chrt/nice prefix
        self.tool = os.path.basename(program[0])
        self.stderr = bytearray()
        try:
            self.exec_id = api.exec_create(
                container,
                cmd,
                stdin=stdin,
                stdout=True,
                stderr=True,
                tty=False,
                environment=environment,
                user=user,
            )["Id"]
            self._raw = api.exec_start(self.exec_id, socket=True)
        except DockerException as exc:
            raise BackupError(f"cannot run {self.tool} in container {container}: {exc}") from exc
        self.sock = getattr(self._raw, "_sock", self._raw)
        self.sock.settimeout(None)

    def stdout_chunks(self):
        for stream, data in _FrameReader(self.sock):
            if stream == 2:
                self.stderr += data
                del self.stderr[:-STDERR_KEEP]
            else:
                yield data

    def send(self, data):
        self.sock.sendall(data)

    def close_stdin(self):
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def stderr_text(self):
        return self.stderr.decode("utf-8", "replace")

    def pid(self, timeout=1.0):
        """The process's pid as the engine sees it (0 if it does not say in ``timeout``: not started, or ended)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                pid = self.api.exec_inspect(self.exec_id).get("Pid") or 0
            except DockerException:
                return 0
            if pid or time.monotonic() >= deadline:
                return pid
            time.sleep(0.01)

    def running(self):
        try:
            return bool(self.api.exec_inspect(self.exec_id).get("Running"))
        except DockerException:
            return False

    def exit_code(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            info = self.api.exec_inspect(self.exec_id)
            if not info.get("Running"):
                return info.get("ExitCode")
            if time.monotonic() >= deadline:
                raise BackupError(f"{self.tool} is still running in the container after its output ended")
            time.sleep(0.05)

    def kill(self):
        """Stop the process (it runs on this host: exec_inspect's Pid is a host pid)."""
        with contextlib.suppress(Exception):
            info = self.api.exec_inspect(self.exec_id)
            pid = info.get("Pid")
            if info.get("Running") and pid:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    if self.tool.encode() in handle.read():
                        os.kill(pid, signal.SIGTERM)
        self.close()

    def close(self):
        with contextlib.suppress(Exception):
            self.sock.close()
        with contextlib.suppress(Exception):
            self._raw.close()


def fifo_name(kind=""):
    """A FIFO's name in a shared directory: hidden, ours, unguessable."""
    return f".montaiguillon-dump-{kind}{secrets.token_hex(8)}.fifo"


def _unlink_quietly(path):
    with contextlib.suppress(OSError):
        os.unlink(path)


class FifoDumpStream:
    """A dump written by a process in the container into a FIFO this host reads.

    The FIFO lives in a directory bind-mounted into the container (the mysql
    role's socket directory), so the dump goes from the tool to this process
    through one kernel pipe instead of through dockerd and containerd-shim,
    which at full speed spent more CPU moving the bytes than the database spent
    producing them, at normal priority, on the site's cores. The exec itself
    only carries the tool's stderr. Same interface as ``ExecStream``.
    """

    # ``Pacer`` sleeps between reads, so the pipe's size bounds how far the tool
    # and the database can run ahead between two naps (see FIFO_BYTES).

    def __init__(self, api, container, build_cmd, host_dir, container_dir):
        name = fifo_name()
        self.host_path = os.path.join(host_dir, name)
        self.fd = None
        self.exec = None
        self.stderr_thread = None
        os.mkfifo(self.host_path, 0o600)
        try:
            # Non-blocking: opening the read end must not wait for the writer.
            self.fd = os.open(self.host_path, os.O_RDONLY | os.O_NONBLOCK)
            with contextlib.suppress(OSError, AttributeError):  # AttributeError: Python < 3.10
                fcntl.fcntl(self.fd, fcntl.F_SETPIPE_SZ, FIFO_BYTES)
            self.exec = ExecStream(api, container, build_cmd(f"{container_dir}/{name}"))
            self.tool = self.exec.tool
            self.stderr_thread = threading.Thread(target=self._collect_stderr, daemon=True)
            self.stderr_thread.start()
        except BaseException:
            self.close()
            raise

    def _collect_stderr(self):
        with contextlib.suppress(OSError):
            for _stdout in self.exec.stdout_chunks():  # the exec carries only stderr: the exec collects it
                pass

    def stdout_chunks(self):
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while True:
            if not poller.poll(1000):
                # Nothing yet: the tool has not opened the FIFO (connecting,
                # waiting for a lock) or ended without opening it.
                if not self.exec.running():
                    return
                continue
            try:
                data = os.read(self.fd, FIFO_BYTES)
            except BlockingIOError:
                continue
            if not data:
                return  # the writer closed its end: the dump is over
            yield data

    def pid(self, timeout=1.0):
        return self.exec.pid(timeout)

    def stderr_text(self):
        if self.stderr_thread is not None:
            self.stderr_thread.join(timeout=30)
        return self.exec.stderr_text()

    def exit_code(self, timeout=30.0):
        return self.exec.exit_code(timeout)

    def kill(self):
        if self.exec is not None:
            self.exec.kill()
        self.close()

    def close(self):
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        if self.exec is not None:
            self.exec.close()
        _unlink_quietly(self.host_path)


def dump_into(dump, database):
    """The dump command writing into the file (a FIFO) given by path."""
    return lambda path: [*dump, f"--result-file={path}", database]


def fifo_directory(api, container, info, login):
    """``(host_dir, container_dir)`` where a FIFO made here is seen by the container, or None.

    The directory of the server's unix socket, when it is a writable bind mount
    (the mysql role's layout); checked from inside the container, so a remote
    Docker host or another layout falls back to streaming through the exec.
    """
    socket_path = login.get("login_unix_socket")
    if not socket_path or login.get("login_host"):
        return None
    host_dir = os.path.realpath(os.path.dirname(socket_path))
    for mount in info.get("Mounts") or []:
        source = mount.get("Source") or ""
        if mount.get("Type") != "bind" or not mount.get("RW") or os.path.realpath(source) != host_dir:
            continue
        probe = os.path.join(host_dir, fifo_name("probe-"))
        try:
            os.mkfifo(probe, 0o600)
        except OSError:
            return None
        try:
            target = f"{mount['Destination']}/{os.path.basename(probe)}"
            code, _out, _err = run_in_container(api, container, ["test", "-p", target])
        finally:
            _unlink_quietly(probe)
        return (host_dir, mount["Destination"]) if code == 0 else None
    return None


def run_in_container(api, container, cmd, stdin_data=None, environment=None):
    """Run a short command; return ``(exit_code, stdout_bytes, stderr_text)``."""
    stream = ExecStream(api, container, cmd, stdin=stdin_data is not None, environment=environment)
    try:
        if stdin_data is not None:
            stream.send(stdin_data)
            stream.close_stdin()
        out = b"".join(stream.stdout_chunks())
        return stream.exit_code(), out, stream.stderr_text()
    finally:
        stream.close()


def put_file(api, container, directory, name, data, mode=0o600):
    """Place a file in the container through the archive API (no command line, no log)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), mode, int(time.time())
        tar.addfile(info, io.BytesIO(data))
    try:
        api.put_archive(container, directory, buf.getvalue())
    except DockerException as exc:
        raise BackupError(f"cannot write a file into {container}:{directory}: {exc}") from exc


def tar_stream(name, path, mode=0o600):
    """Yield a one-file tar archive of ``path`` chunk by chunk (no copy in memory or on disk)."""
    size = os.path.getsize(path)
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, int(time.time())
    yield info.tobuf(format=tarfile.GNU_FORMAT)
    left = size
    with open(path, "rb") as handle:
        while left:
            chunk = handle.read(min(CHUNK, left))
            if not chunk:
                raise BackupError(f"{path} shrank while it was being sent")
            left -= len(chunk)
            yield chunk
    yield b"\0" * ((-size) % tarfile.BLOCKSIZE) + b"\0" * (2 * tarfile.BLOCKSIZE)


@contextlib.contextmanager
def container_tempdir(api, container):
    """A private directory made by ``mktemp -d`` in the container, removed afterwards."""
    code, out, err = run_in_container(api, container, ["mktemp", "-d"])
    path = out.decode().strip()
    if code != 0 or not path.startswith("/"):
        raise BackupError(f"cannot make a temporary directory in container {container}: {err.strip()}")
    try:
        yield path
    finally:
        with contextlib.suppress(Exception):
            run_in_container(api, container, ["rm", "-rf", path])


@contextlib.contextmanager
def container_credentials(api, container, user, password, extra=None):
    """A mode-0600 ``--defaults-extra-file`` in a private temp dir of the container, removed afterwards."""
    with container_tempdir(api, container) as directory:
        put_file(api, container, directory, "client.cnf", option_file(user, password, extra))
        yield f"{directory}/client.cnf"


def detect_tools(api, container):
    """Which client tools the container has: dump, client and binlog (names)."""
    script = (
        "for t in mariadb-dump mysqldump mariadb mysql mariadb-binlog mysqlbinlog chrt nice;"
        ' do command -v "$t" || true; done'
    )
    code, out, err = run_in_container(api, container, ["sh", "-c", script])
    found = {os.path.basename(p) for p in out.decode().split()}

    def pick(*names):
        return next((n for n in names if n in found), None)

    tools = {
        "dump": pick("mariadb-dump", "mysqldump"),
        "client": pick("mariadb", "mysql"),
        "binlog": pick("mariadb-binlog", "mysqlbinlog"),
        "background": background_prefix(found.__contains__),
    }
    if code != 0 or not tools["dump"] or not tools["client"]:
        raise BackupError(f"container {container} has neither mariadb-dump nor mysqldump (or no client) {err.strip()}")
    return tools


def inspect_container(api, container):
    try:
        info = api.inspect_container(container)
    except DockerException as exc:
        raise BackupError(f"container {container} not found or not inspectable: {exc}") from exc
    if not info.get("State", {}).get("Running"):
        raise BackupError(f"container {container} is not running")
    return info


# ---- PyMySQL --------------------------------------------------------------

# Options of every module working on a database in a container (documented by
# plugins/doc_fragments/mysql_container.py), and the login part of them.
LOGIN_KEYS = ("login_user", "login_password", "login_unix_socket", "login_host", "login_port", "connect_timeout")
CONTAINER_ARGUMENT_SPEC = {
    "container": {"type": "str", "default": "mysql"},
    "lock_timeout": {"type": "int", "default": 600},
    "login_user": {"type": "str", "default": "root"},
    "login_password": {"type": "str", "no_log": True},
    "login_unix_socket": {"type": "path", "default": "/run/montaiguillon/mysql/mysqld.sock"},
    "login_host": {"type": "str"},
    "login_port": {"type": "int", "default": 3306},
    "connect_timeout": {"type": "int", "default": 10},
    "docker_host": {"type": "str"},
}


def login_options(params):
    """The login part of a module's or a config file's parameters, as ``connect`` takes it."""
    return {key: params.get(key) for key in LOGIN_KEYS}


def connect(login, database=None):
    if not HAS_PYMYSQL:
        raise BackupError("PyMySQL is missing on the server (Debian: python3-pymysql)")
    kwargs = {
        "user": login["login_user"],
        "password": login.get("login_password") or "",
        "charset": "utf8mb4",
        "autocommit": True,
        "connect_timeout": int(login.get("connect_timeout") or 10),
    }
    if login.get("login_host"):
        kwargs.update(host=login["login_host"], port=int(login.get("login_port") or 3306))
        where = f"{login['login_host']}:{kwargs['port']}"
    else:
        kwargs["unix_socket"] = login["login_unix_socket"]
        where = login["login_unix_socket"]
    if database:
        kwargs["database"] = database
    try:
        return pymysql.connect(**kwargs)
    except pymysql.err.MySQLError as exc:
        raise BackupError(f"cannot connect to MySQL as {login['login_user']} via {where}: {exc}") from exc


def query_one(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()


def server_facts(conn, database):
    version = query_one(conn, "SELECT VERSION()")[0]
    log_bin = bool(int(query_one(conn, "SELECT @@log_bin")[0]))
    schema = query_one(
        conn,
        "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA"
        " WHERE SCHEMA_NAME = %s",
        (database,),
    )
    return {
        "version": version,
        "log_bin": log_bin,
        "exists": schema is not None,
        "charset": schema[0] if schema else None,
        "collation": schema[1] if schema else None,
    }


def count_rows(conn, database, tables):
    counts = {}
    with conn.cursor() as cur:
        for table in tables:
            cur.execute(f"SELECT COUNT(*) FROM {quote_identifier(database)}.{quote_identifier(table)}")  # noqa: S608
            counts[table] = int(cur.fetchone()[0])
    return counts


def recreate_database(conn, database, charset=None, collation=None, log_to_binlog=False):
    with conn.cursor() as cur:
        if not log_to_binlog:
            cur.execute("SET SESSION sql_log_bin = 0")
        cur.execute(f"DROP DATABASE IF EXISTS {quote_identifier(database)}")
        options = ""
        if charset and re.match(r"^\w+$", charset):
            options += f" CHARACTER SET {charset}"
        if collation and re.match(r"^\w+$", collation):
            options += f" COLLATE {collation}"
        cur.execute(f"CREATE DATABASE {quote_identifier(database)}{options}")


# ---- Compression pipeline -------------------------------------------------


def resolve_compression(requested, warn):
    if requested == "zstd" and not shutil.which("zstd"):
        warn("the zstd binary is missing on the server: compressing with gzip instead (install zstd)")
        requested = "gzip"
    if not shutil.which(COMPRESSIONS[requested]["compress"][0]):
        raise BackupError(f"the {requested} binary is missing on the server")
    return requested


def _open_partial(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


def _reap(proc):
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
    with contextlib.suppress(Exception):
        proc.wait(timeout=30)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def background_prefix(has):
    """The prefix running a command as background work (see BACKUP_NICE); ``has(name)``: is the tool there."""
    return next((list(prefix) for prefix in BACKGROUND_PREFIXES if has(prefix[0])), [])


def without_background(cmd):
    for prefix in BACKGROUND_PREFIXES:
        if cmd[: len(prefix)] == prefix:
            return cmd[len(prefix) :]
    return cmd


@contextlib.contextmanager
def background_thread():
    """Run the calling thread, and the threads it starts, as background work (SCHED_IDLE) for a while."""
    try:
        before = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not allowed: nice and the pace still apply
        before = None
    try:
        yield
    finally:
        if before is not None:
            with contextlib.suppress(OSError):
                os.sched_setscheduler(0, *before)


def spawn_chain(commands, stack, stdin=None, background=False, stdout=None):
    """Start ``commands`` as a shell-less pipeline; ``stack`` reaps them and their stderr files.

    Returns ``(procs, errfiles)``; read the output from ``procs[-1].stdout``,
    unless ``stdout`` (a file descriptor) is where the last one writes.
    """
    procs, errfiles = [], []
    upstream = stdin
    for index, cmd in enumerate(commands):
        errfile, name = tempfile.mkstemp(prefix="mysql-backup-stderr-")
        os.unlink(name)
        stack.callback(os.close, errfile)
        if background:
            cmd = [*background_prefix(shutil.which), *cmd]
        last = index == len(commands) - 1
        proc = subprocess.Popen(
            cmd, stdin=upstream, stdout=stdout if last and stdout is not None else subprocess.PIPE, stderr=errfile
        )
        stack.callback(_reap, proc)
        if procs:
            procs[-1].stdout.close()
        procs.append(proc)
        errfiles.append(errfile)
        upstream = proc.stdout
    return procs, errfiles


def chain_errors(procs, errfiles, ignore=()):
    """Describe the first process of a finished chain that failed, or None."""
    for proc, errfile in zip(procs, errfiles, strict=True):
        if proc.returncode not in (0, *ignore):
            size = os.lseek(errfile, 0, os.SEEK_END)
            text = os.pread(errfile, STDERR_KEEP, max(0, size - STDERR_KEEP)).decode("utf-8", "replace").strip()
            args = list(proc.args)
            program = without_background(args)[0]
            return f"{program} failed with code {proc.returncode}: {text}"
    return None


# A backup file is written behind itself: each WRITE_BEHIND_BYTES written are
# handed to the disk at once (sync_file_range), the step before is waited for
# and dropped from the page cache. Left to the kernel, a backup's dirty pages
# went to disk in bursts (those older than 30 s, every 5 s, then the rest at the
# final fsync) and the site's commits, whose fsync waits for the disk, queued
# behind them: 268 ms and 76 ms stalls of a 50/s writer in one paced backup of
# 1 GiB. A steady trickle of 1 MiB writes costs a commit a few ms at most; the
# same reasoning as PostgreSQL's checkpoint_flush_after. Like it, a no-op where
# the call does not exist.
WRITE_BEHIND_BYTES = 1 << 20
SYNC_FILE_RANGE_WAIT_BEFORE = 1
SYNC_FILE_RANGE_WRITE = 2
SYNC_FILE_RANGE_WAIT_AFTER = 4


def libc_sync_file_range():
    """``sync_file_range(fd, offset, nbytes, flags)`` from the C library, or None where it is missing."""
    try:
        func = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    func.restype = ctypes.c_int

    def sync_file_range(fd, offset, nbytes, flags):
        if func(fd, offset, nbytes, flags) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return sync_file_range


def drop_cached(fd, offset, length):
    """Drop a written range from the page cache (advice: an error is not worth failing a backup)."""
    with contextlib.suppress(OSError, AttributeError):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


class WriteBehind:
    """Hands a file's bytes to the disk ``step`` by step as they are written (see WRITE_BEHIND_BYTES)."""

    def __init__(self, fd, step=None, sync_range=None, drop=None):
        self.fd = fd
        self.step = step or WRITE_BEHIND_BYTES
        self.sync_range = libc_sync_file_range() if sync_range is None else sync_range
        self.drop = drop or drop_cached
        self.written = 0
        self.started = 0
        self.pending = None

    def wrote(self, size):
        """Record ``size`` more bytes written (and flushed to the kernel) at the end of the file."""
        self.written += size
        if not self.sync_range:
            return
        while self.written - self.started >= self.step:
            offset, self.started = self.started, self.started + self.step
            self.sync_range(self.fd, offset, self.step, SYNC_FILE_RANGE_WRITE)
            if self.pending is not None:
                self.sync_range(
                    self.fd,
                    *self.pending,
                    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER,
                )
                self.drop(self.fd, *self.pending)
            self.pending = (offset, self.step)

    def finished(self):
        """After the file's fsync: nothing of it stays in the page cache."""
        self.drop(self.fd, 0, 0)


class CompressPipeline:
    """stdin -> compressor [-> age] -> partial file (written behind), sha256 computed on the way."""

    def __init__(self, commands, out_path, background=False):
        self.out_path = out_path
        self.digest = hashlib.sha256()
        self.size = 0
        self.error = None
        self.sink = None
        self.stack = contextlib.ExitStack()
        self.handle = _open_partial(out_path)
        try:
            self.procs, self.errfiles = spawn_chain(commands, self.stack, stdin=subprocess.PIPE, background=background)
        except OSError:
            self.abort()
            raise
        self.sink = threading.Thread(target=self._drain, daemon=True)
        self.sink.start()

    def _drain(self):
        out = self.procs[-1].stdout
        try:
            behind = WriteBehind(self.handle.fileno())
            while True:
                chunk = out.read1(CHUNK)
                if not chunk:
                    break
                self.handle.write(chunk)
                self.handle.flush()
                behind.wrote(len(chunk))
                self.digest.update(chunk)
                self.size += len(chunk)
            self.handle.flush()
            os.fsync(self.handle.fileno())
            behind.finished()
        except OSError as exc:
            self.error = exc
            for proc in self.procs:
                with contextlib.suppress(OSError):
                    proc.kill()

    def _raise_sink_error(self):
        if self.error is not None:
            raise BackupError(describe_os_error(self.error, self.out_path)) from self.error

    def write(self, data):
        try:
            self.procs[0].stdin.write(data)
        except (BrokenPipeError, ValueError) as exc:
            self.sink.join()
            self._raise_sink_error()
            for proc in self.procs:
                proc.wait()
            raise BackupError(f"the compressor stopped early: {chain_errors(self.procs, self.errfiles)}") from exc

    def finish(self):
        """Close the input, wait, fsync; return ``(sha256, compressed_bytes)``."""
        with contextlib.suppress(BrokenPipeError):
            self.procs[0].stdin.close()
        for proc in self.procs:
            proc.wait()
        self.sink.join()
        self._raise_sink_error()
        try:
            self.handle.close()
        except OSError as exc:
            raise BackupError(describe_os_error(exc, self.out_path)) from exc
        problem = chain_errors(self.procs, self.errfiles)
        if problem:
            raise BackupError(problem)
        self.stack.close()
        return self.digest.hexdigest(), self.size

    def abort(self):
        """Stop everything and remove the partial file."""
        for proc in getattr(self, "procs", []):
            with contextlib.suppress(OSError):
                proc.kill()
        if self.sink is not None:
            self.sink.join(timeout=30)
        self.stack.close()
        with contextlib.suppress(OSError):
            self.handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.out_path)


# ---- Backup ---------------------------------------------------------------


def server_image(container_info):
    return {
        "container": container_info.get("Name", "").lstrip("/"),
        "image": container_info.get("Config", {}).get("Image"),
        "image_id": container_info.get("Image"),
    }


def run_backup(
    api,
    login,
    *,
    container,
    database,
    backup_dir,
    kind,
    label="",
    compression="zstd",
    min_size_bytes=1024,
    encrypt_recipient_file=None,
    max_rate=0,
    warn=lambda _msg: None,
):
    """Take one backup into ``backup_dir`` and return its manifest (with ``path``).

    ``max_rate`` (bytes per second of dump, 0: no limit) paces the dump so that
    a backup leaves the server's CPU to the site (see ``Pacer``).

    The caller holds ``backup_dir_lock``. Nothing is left under a final name
    unless the dump succeeded, ended with its trailer and is big enough.
    """
    for name in remove_stale_partials(backup_dir):
        warn(f"removed {name} left by an interrupted backup")
    check_free_space(backup_dir, min_size_bytes)
    compression = resolve_compression(compression, warn)
    commands = [COMPRESSIONS[compression]["compress"]]
    encryption = None
    if encrypt_recipient_file:
        if not shutil.which("age"):
            raise BackupError("encrypt_recipient_file is set but the age binary is missing on the server (apt: age)")
        if not os.path.isfile(encrypt_recipient_file):
            raise BackupError(f"encrypt_recipient_file {encrypt_recipient_file} does not exist")
        commands.append(["age", "-R", encrypt_recipient_file])
        encryption = {"tool": "age", "recipients_file": encrypt_recipient_file}

    info = inspect_container(api, container)
    tools = detect_tools(api, container)
    conn = connect(login)
    try:
        facts = server_facts(conn, database)
    finally:
        conn.close()
    if not facts["exists"]:
        raise BackupError(f"database {database} does not exist on the server in {container}")
    if not facts["log_bin"]:
        warn("binary logging is off on the server: this backup has no binlog position (no point-in-time recovery)")

    started = utcnow()
    clock = time.monotonic()
    backup_id = make_backup_id(started, kind, lambda c: any(n.startswith(c + ".") for n in os.listdir(backup_dir)))
    file_name = dump_file_name(backup_id, compression, encrypted=encryption is not None)
    final_path = os.path.join(backup_dir, file_name)
    partial_path = final_path + ".partial"
    flags = dump_flags(facts["version"], facts["log_bin"])
    scan = DumpScanner()

    shared = fifo_directory(api, container, info, login)
    credentials = container_credentials(api, container, login["login_user"], login.get("login_password"))
    state = info.get("State", {})
    with credentials as cnf, joined_cpu_cgroup(state.get("Pid"), info.get("Id", "")) as cpu, background_thread():
        try:
            pipeline = CompressPipeline(commands, partial_path, background=True)
        except OSError as exc:
            raise BackupError(describe_os_error(exc, partial_path)) from exc
        stream = None
        pace = Pacer(max_rate)
        try:
            dump = [*tools["background"], tools["dump"], f"--defaults-extra-file={cnf}", *flags]
            if shared:
                stream = FifoDumpStream(api, container, dump_into(dump, database), *shared)
            else:
                stream = ExecStream(api, container, [*dump, database])
            # docker exec starts the tool in the container's cgroup: it joins ours (a pid of this
            # namespace: the join already checked the container's process is visible here)
            if cpu.joined:
                cpu.adopt(stream.pid(), expect=tools["dump"])
            for data in stream.stdout_chunks():
                scan.feed(data)
                pipeline.write(data)
                pace(len(data))
            sha256, compressed_bytes = pipeline.finish()
            exit_code = stream.exit_code()
            scan.finish()
            problem = check_dump(scan, exit_code, min_size_bytes, tools["dump"], stream.stderr_text())
            if problem:
                raise BackupError(problem)
            os.replace(partial_path, final_path)
            fsync_dir(backup_dir)
        except BaseException as exc:
            pipeline.abort()
            if stream is not None:
                stream.kill()
            kept = "the partial file was removed; earlier backups are untouched"
            if isinstance(exc, OSError):
                raise BackupError(f"{describe_os_error(exc, partial_path)} ({kept})") from exc
            if isinstance(exc, BackupError):
                raise BackupError(f"{exc} ({kept})") from exc
            raise
        finally:
            if stream is not None:
                stream.close()

    finished = utcnow()
    manifest = build_manifest(
        backup_id=backup_id,
        database=database,
        file_name=file_name,
        kind=kind,
        label=label,
        started=started,
        finished=finished,
        duration=time.monotonic() - clock,
        compression=compression,
        encryption=encryption,
        sha256=sha256,
        compressed_bytes=compressed_bytes,
        scan=scan,
        server={
            **server_image(info),
            "version": facts["version"],
            "charset": facts["charset"],
            "collation": facts["collation"],
        },
        tool={"name": tools["dump"], "flags": flags, "transport": "fifo" if shared else "docker-exec"},
        pacing={
            "max_rate_bytes": max_rate,
            "paused_seconds": round(pace.slept, 3),
            "cpu_cgroup": cpu.where,
        },
    )
    try:
        write_json(os.path.join(backup_dir, f"{backup_id}.json"), manifest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(final_path)
        raise
    return {**manifest, "path": final_path, "manifest_path": os.path.join(backup_dir, f"{backup_id}.json")}


def apply_retention(backup_dir, database, policy):
    """Prune per ``policy`` (caller holds the lock); return the pruned ids."""
    entries = list_backups(backup_dir, database)
    _keep, prune = plan_retention(entries, policy, database)
    by_id = {e["id"]: e for e in entries}
    for backup_id in prune:
        remove_backup(backup_dir, by_id[backup_id])
    return prune


# ---- Restore --------------------------------------------------------------


def load_backup(backup_dir, backup, database=None, warn=lambda _msg: None):
    """Resolve ``backup`` (an id or ``latest``) and verify it; return ``(entry, sha256)``.

    ``latest`` is the newest complete backup whose checksum verifies; corrupt ones
    are skipped with a warning. An explicit id must have a valid manifest and a
    matching checksum, else BackupError and nothing is changed.
    """
    entries = list_backups(backup_dir, database)
    if backup == "latest":
        for entry in entries:
            if entry["status"] != "complete":
                continue
            ok, actual, message = verify_backup_file(entry["path"], entry["manifest"])
            if ok:
                return entry, actual
            warn(message.replace("; nothing was changed", "; skipped"))
        raise BackupError(f"no complete backup with a valid checksum in {backup_dir}; nothing was changed")
    if parse_backup_id(backup) is None:
        raise BackupError(f"{backup!r} is not a backup id (such as 20261126T091108Z-manual) nor 'latest'")
    entry = next((e for e in list_backups(backup_dir) if e["id"] == backup), None)
    if entry is None:
        raise BackupError(f"backup {backup} not found in {backup_dir}; nothing was changed")
    if entry["manifest"] is None:
        raise BackupError(f"backup {backup} has no manifest (it never finished); nothing was changed")
    if entry["status"] != "complete":
        raise BackupError(
            f"backup {backup} is not usable ({entry['status']}: {'; '.join(entry['problems'])}); nothing was changed"
        )
    ok, actual, message = verify_backup_file(entry["path"], entry["manifest"])
    if not ok:
        raise BackupError(message)
    return entry, actual


def decompress_commands(manifest, path, identity_file=None):
    commands = []
    if manifest.get("encryption"):
        if not identity_file:
            raise BackupError(f"backup {manifest['id']} is encrypted with age: set decrypt_identity_file")
        if not shutil.which("age"):
            raise BackupError("the age binary is missing on the server (apt: age)")
        commands.append(["age", "-d", "-i", identity_file, path])
        commands.append(COMPRESSIONS[manifest["compression"]]["decompress"])
    else:
        commands.append([*COMPRESSIONS[manifest["compression"]]["decompress"], path])
    if not shutil.which(commands[-1][0]):
        raise BackupError(f"the {commands[-1][0]} binary is missing on the server")
    return commands


def pump_into_exec(stream, chunks):
    """Write ``chunks`` to the exec's stdin while a thread drains its output."""
    output = bytearray()

    def drain():
        for data in stream.stdout_chunks():
            output.extend(data)
            del output[:-STDERR_KEEP]

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        for chunk in chunks:
            if not reader.is_alive():
                break  # the process ended: stop feeding it
            stream.send(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the process ended early; its exit code tells why
    finally:
        stream.close_stdin()
    reader.join()
    return bytes(output)


def _process_chunks(procs):
    out = procs[-1].stdout
    while True:
        chunk = out.read1(CHUNK)
        if not chunk:
            return
        yield chunk


def restore_stream(api, container, client, cnf, database, commands, log_to_binlog=False, shared=None):
    """Decompress on the server and pipe into the client inside ``container``.

    With ``shared`` (``fifo_directory``), the decompressor writes straight into
    a FIFO the client reads: the dump skips this process and dockerd.
    """
    cmd = [client, f"--defaults-extra-file={cnf}", "--max-allowed-packet=1G"]
    if not log_to_binlog:
        cmd.append("--init-command=SET SESSION sql_log_bin=0")
    cmd.append(database)
    if shared:
        return _restore_through_fifo(api, container, cmd, commands, *shared)
    with contextlib.ExitStack() as stack:
        procs, errfiles = spawn_chain(commands, stack)
        stream = ExecStream(api, container, cmd, stdin=True)
        stack.callback(stream.close)
        pump_into_exec(stream, _process_chunks(procs))
        code = stream.exit_code()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()  # the client stopped reading: its exit code says why
            proc.wait()
        problem = chain_errors(procs, errfiles, ignore=(-signal.SIGKILL, -signal.SIGPIPE))
    if problem:
        raise BackupError(problem)
    if code != 0:
        detail = stream.stderr_text().strip()[-800:]
        raise BackupError(f"{client} exited with code {code} while loading the dump: {detail}")


def _open_fifo_writer(path, stream):
    """Open the write end once the process in the container has the read end open; None if it ended first."""
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
            if not stream.running():
                return None
            time.sleep(0.02)
            continue
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, CHUNK)
        return fd


def _restore_through_fifo(api, container, cmd, commands, host_dir, container_dir):
    name = fifo_name()
    host_path = os.path.join(host_dir, name)
    os.mkfifo(host_path, 0o600)
    with contextlib.ExitStack() as stack:
        stack.callback(_unlink_quietly, host_path)
        # The shell opens the FIFO as the client's stdin, then becomes the client.
        stream = ExecStream(api, container, ["sh", "-c", 'exec "$@" < "$0"', f"{container_dir}/{name}", *cmd])
        stack.callback(stream.close)
        drain = threading.Thread(target=lambda: collections.deque(stream.stdout_chunks(), maxlen=0), daemon=True)
        drain.start()
        fd = _open_fifo_writer(host_path, stream)
        procs, errfiles = [], []
        if fd is not None:
            try:
                procs, errfiles = spawn_chain(commands, stack, stdout=fd)
            finally:
                os.close(fd)  # the decompressor holds the write end now
            for proc in procs:
                proc.wait()
        drain.join()
        code = stream.exit_code()
        # A client that stopped reading leaves the decompressor a broken pipe: the client's code says why.
        problem = chain_errors(procs, errfiles) if code == 0 else None
    if code != 0:
        detail = stream.stderr_text().strip()[-800:]
        raise BackupError(f"{cmd[0]} exited with code {code} while loading the dump: {detail}")
    if problem:
        raise BackupError(problem)
    return None


def replay_binlogs(
    api, container, tools, cnf, conn, database, manifest, stop_at, backup_dir, log_to_binlog=False, identity_file=None
):
    """Replay the binlog events of ``database`` from the backup's position up to ``stop_at``.

    Shipped copies encrypted with age (``*.age``) are decrypted with ``identity_file``
    into a private directory of ``backup_dir`` just long enough to be sent to the container.
    """
    binlog = manifest.get("binlog")
    if not binlog:
        raise BackupError(f"backup {manifest['id']} has no binlog position (binary logging was off): no PITR")
    if stop_at <= parse_iso(manifest["started_at"]):
        raise BackupError(f"stop_datetime {iso(stop_at)} is before backup {manifest['id']} was taken")
    if not tools.get("binlog"):
        raise BackupError(f"container {container} has no mariadb-binlog/mysqlbinlog")
    with conn.cursor() as cur:
        cur.execute("SHOW BINARY LOGS")
        server_files = [row[0] for row in cur.fetchall()]
        cur.execute("SELECT @@log_bin_basename")
        basename = cur.fetchone()[0]
    shipped_dir = os.path.join(backup_dir, BINLOG_DIR)
    shipped = shipped_binlogs(backup_dir)
    sequence = binlog_sequence(binlog["file"], server_files, sorted(shipped))
    with contextlib.ExitStack() as stack:
        paths = []
        upload_dir = None
        for name, source in sequence:
            if source == "server":
                paths.append(os.path.join(os.path.dirname(basename), name))
                continue
            if upload_dir is None:
                upload_dir = stack.enter_context(container_tempdir(api, container))
            local = os.path.join(shipped_dir, shipped[name])
            if shipped[name].endswith(".age"):
                local = decrypt_to(local, stack.enter_context(private_tempdir(backup_dir)), name, identity_file)
            try:
                api.put_archive(container, upload_dir, tar_stream(name, local))
            except DockerException as exc:
                raise BackupError(f"cannot copy the shipped binlog {name} into {container}: {exc}") from exc
            paths.append(f"{upload_dir}/{name}")
        reader_cmd = [
            tools["binlog"],
            f"--start-position={binlog['position']}",
            f"--stop-datetime={stop_at:%Y-%m-%d %H:%M:%S}",
            f"--database={database}",
            *paths,
        ]
        writer_cmd = [tools["client"], f"--defaults-extra-file={cnf}", "--max-allowed-packet=1G"]
        if not log_to_binlog:
            writer_cmd.append("--init-command=SET SESSION sql_log_bin=0")
        reader = ExecStream(api, container, reader_cmd, environment={"TZ": "UTC"})
        stack.callback(reader.close)
        writer = ExecStream(api, container, writer_cmd, stdin=True)
        stack.callback(writer.close)
        pump_into_exec(writer, reader.stdout_chunks())
        writer_code = writer.exit_code()
        if writer_code != 0:
            reader.kill()
            detail = writer.stderr_text().strip()[-800:]
            raise BackupError(f"replaying binlogs failed ({tools['client']} exited with code {writer_code}): {detail}")
        reader_code = reader.exit_code()
        if reader_code != 0:
            detail = reader.stderr_text().strip()[-800:]
            raise BackupError(f"{tools['binlog']} exited with code {reader_code}: {detail}")
    return {"from": binlog, "stop_datetime": iso(stop_at), "files": [name for name, _size in sequence]}


# ---- Binlog shipping --------------------------------------------------------

BINLOG_DIR = "binlogs"
_BINLOG_NAME_RE = re.compile(r"^[\w.-]+\.\d+$")


def shipped_binlogs(backup_dir):
    """``{binlog name: file name}`` of the copies in ``{backup_dir}/binlogs`` (``NAME.age`` when encrypted)."""
    directory = os.path.join(backup_dir, BINLOG_DIR)
    if not os.path.isdir(directory):
        return {}
    found = {}
    for name in os.listdir(directory):
        if name.startswith(".") or name.endswith(".partial"):
            continue
        base = name[: -len(".age")] if name.endswith(".age") else name
        if _BINLOG_NAME_RE.match(base):
            found[base] = name
    return found


def binlog_number(name):
    """``("mysql-bin", 12)`` for ``mysql-bin.000012``."""
    prefix, _dot, number = name.rpartition(".")
    return prefix, int(number) if number.isdigit() else -1


@contextlib.contextmanager
def private_tempdir(backup_dir):
    """A 0700 directory inside ``backup_dir`` (same disk, same protection), removed afterwards."""
    path = tempfile.mkdtemp(dir=backup_dir, prefix=".tmp-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def decrypt_to(path, directory, name, identity_file):
    """Decrypt an age file into ``directory/name``; return that path."""
    if not identity_file:
        raise BackupError(f"{os.path.basename(path)} is encrypted with age: set decrypt_identity_file")
    if not shutil.which("age"):
        raise BackupError("the age binary is missing on the server (apt: age)")
    target = os.path.join(directory, name)
    proc = subprocess.run(
        ["age", "-d", "-i", identity_file, "-o", target, path], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise BackupError(f"cannot decrypt {os.path.basename(path)}: {proc.stderr.strip()[-500:]}")
    return target


def _ship_one(api, container, source, target, size, recipients_file):
    """Copy one closed binlog out of the container into ``target`` (atomically, optionally encrypted)."""
    partial = target + ".partial"
    commands = [["age", "-R", recipients_file]] if recipients_file else [["cat"]]
    try:
        pipeline = CompressPipeline(commands, partial)
    except OSError as exc:
        raise BackupError(describe_os_error(exc, partial)) from exc
    stream = None
    try:
        copied = 0
        stream = ExecStream(api, container, ["cat", source])
        for data in stream.stdout_chunks():
            copied += len(data)
            pipeline.write(data)
        pipeline.finish()
        code = stream.exit_code()
        if code != 0:
            raise BackupError(f"cat {source} in {container} exited with code {code}: {stream.stderr_text().strip()}")
        if copied != size:
            raise BackupError(f"{source} is {size} bytes on the server but {copied} bytes were copied")
        os.replace(partial, target)
        fsync_dir(os.path.dirname(target))
        return copied
    except BaseException as exc:
        pipeline.abort()
        if stream is not None:
            stream.kill()
        if isinstance(exc, OSError):
            raise BackupError(describe_os_error(exc, partial)) from exc
        raise
    finally:
        if stream is not None:
            stream.close()


def ship_binlogs(api, login, *, container, backup_dir, encrypt_recipient_file=None, flush=True, warn=lambda _m: None):
    """Copy the server's closed binary logs into ``{backup_dir}/binlogs`` (caller holds the lock).

    With ``flush``, ``FLUSH BINARY LOGS`` first closes the active file, so
    everything written up to now is shipped: the recovery point of a lost
    server is then the interval between two runs. Files already shipped are
    skipped; a file the server purged before it was shipped is reported
    (point-in-time recovery cannot cross that gap).
    """
    if encrypt_recipient_file:
        if not shutil.which("age"):
            raise BackupError("encrypt_recipient_file is set but the age binary is missing on the server (apt: age)")
        if not os.path.isfile(encrypt_recipient_file):
            raise BackupError(f"encrypt_recipient_file {encrypt_recipient_file} does not exist")
    inspect_container(api, container)
    conn = connect(login)
    try:
        if not int(query_one(conn, "SELECT @@log_bin")[0]):
            raise BackupError("binary logging is off on the server: there are no binlogs to ship")
        if flush:
            query_one(conn, "FLUSH BINARY LOGS")
        with conn.cursor() as cur:
            cur.execute("SHOW BINARY LOGS")
            logs = [(row[0], int(row[1])) for row in cur.fetchall()]
        basedir = os.path.dirname(query_one(conn, "SELECT @@log_bin_basename")[0])
    finally:
        conn.close()
    directory = os.path.join(backup_dir, BINLOG_DIR)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".partial"):
            os.unlink(os.path.join(directory, name))
    already = shipped_binlogs(backup_dir)
    closed, active = logs[:-1], (logs[-1][0] if logs else None)
    result = {"shipped": [], "bytes": 0, "active": active, "flushed": flush, "gap": None}
    if closed and already:
        prefix, first = binlog_number(closed[0][0])
        newest = max((binlog_number(n)[1] for n in already if binlog_number(n)[0] == prefix), default=None)
        if newest is not None and newest + 1 < first:
            result["gap"] = f"binlogs after {prefix}.{newest:06d} up to {closed[0][0]} were purged before being shipped"
            warn(result["gap"] + ": point-in-time recovery cannot cross that gap")
    suffix = ".age" if encrypt_recipient_file else ""
    for name, size in closed:
        if name in already:
            continue
        target = os.path.join(directory, name + suffix)
        result["bytes"] += _ship_one(api, container, f"{basedir}/{name}", target, size, encrypt_recipient_file)
        result["shipped"].append(name)
    return result


def prune_shipped_binlogs(backup_dir):
    """Delete shipped binlogs older than every complete backup's start file (caller holds the lock).

    A point-in-time recovery starts from a backup's binlog position, so files
    before the oldest kept backup's can never be used again.
    """
    starts = [
        binlog_number(entry["manifest"]["binlog"]["file"])
        for entry in list_backups(backup_dir)
        if entry["status"] == "complete" and (entry["manifest"] or {}).get("binlog")
    ]
    if not starts:
        return []
    directory = os.path.join(backup_dir, BINLOG_DIR)
    removed = set()
    for file_name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        name = file_name[: -len(".age")] if file_name.endswith(".age") else file_name
        if file_name.startswith(".") or not _BINLOG_NAME_RE.match(name):
            continue
        prefix, number = binlog_number(name)
        oldest = min((n for p, n in starts if p == prefix), default=None)
        if oldest is not None and number < oldest:
            os.unlink(os.path.join(directory, file_name))
            removed.add(name)
    return sorted(removed)


# ---- Offsite copy -----------------------------------------------------------

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


# ---- Drill ----------------------------------------------------------------


def _wait_for_server(login, container_id, api, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        state = api.inspect_container(container_id)["State"]
        if not state.get("Running"):
            logs = api.logs(container_id, tail=20).decode(errors="replace")
            raise BackupError(f"the drill container stopped (exit {state.get('ExitCode')}): {logs.strip()[-800:]}")
        try:
            conn = connect(login)
        except BackupError as exc:
            last = exc
            time.sleep(0.5)
            continue
        # the image's entrypoint first runs a temporary server without networking,
        # then stops it: a probe can meet it going away (not ready yet, ask again)
        try:
            if int(query_one(conn, "SELECT @@skip_networking")[0]) == 0:
                return conn
        except pymysql.err.MySQLError as exc:
            last = exc
        with contextlib.suppress(Exception):
            conn.close()
        time.sleep(0.5)
    raise BackupError(f"the drill server did not become ready within {timeout} s: {last}")


def config_binds(container_info):
    """The server configuration bind-mounted into the source container (under /etc/mysql), read-only."""
    return [
        f"{mount['Source']}:{mount['Destination']}:ro"
        for mount in container_info.get("Mounts") or []
        if mount.get("Type") == "bind" and str(mount.get("Destination", "")).startswith("/etc/mysql")
    ]


# A drill is background work too: its server loads the whole backup at full
# speed on the site's cores. At Docker's smallest CPU weight it gets what the
# site leaves (as fast as at the default weight on an idle server: 93-97 s
# either way for the benchmark's 1 GiB); a 50/s writer's wait for a core at
# p99 during a drill, two A/B pairs: 1.31 and 1.38 ms, against 2.09 and 2.32 ms
# at the default weight.
DRILL_CPU_SHARES = 2


def run_drill(api, *, container, entry, identity_file=None, smoke_query, timeout=300):
    """Restore ``entry`` into a throwaway container of the same image and check it."""
    manifest = entry["manifest"]
    info = inspect_container(api, container)
    image_id = info.get("Image")
    tools = detect_tools(api, container)
    commands = decompress_commands(manifest, entry["path"], identity_file)
    password = secrets.token_urlsafe(24)
    name = f"{info.get('Name', '/' + container).lstrip('/')}-drill-{secrets.token_hex(4)}"
    sockdir = tempfile.mkdtemp(prefix="mysql-drill-")
    login = {
        "login_user": "root",
        "login_password": password,
        "login_unix_socket": os.path.join(sockdir, "mysqld.sock"),
    }
    result = {
        "id": manifest["id"],
        "status": "failed",
        "started_at": iso(utcnow()),
        "image": info.get("Config", {}).get("Image"),
        "image_id": image_id,
        "container": name,
    }
    clock = time.monotonic()
    container_id = None
    try:
        created = api.create_container(
            image_id,
            command=info.get("Config", {}).get("Cmd"),
            name=name,
            environment={"MYSQL_ROOT_PASSWORD": password},
            labels={"montaiguillon.backup-drill": manifest["id"]},
            host_config=api.create_host_config(
                binds=[f"{sockdir}:/run/mysqld:rw", *config_binds(info)],
                network_mode="none",
                cpu_shares=DRILL_CPU_SHARES,
            ),
        )
        container_id = created["Id"]
        api.start(container_id)
        conn = _wait_for_server(login, container_id, api, timeout)
        result["startup_seconds"] = round(time.monotonic() - clock, 3)
        try:
            server = manifest.get("server") or {}
            recreate_database(conn, manifest["database"], server.get("charset"), server.get("collation"))
            restore_clock = time.monotonic()
            with container_credentials(api, container_id, "root", password) as cnf:
                restore_stream(api, container_id, tools["client"], cnf, manifest["database"], commands)
            result["load_seconds"] = round(time.monotonic() - restore_clock, 3)
            actual = count_rows(conn, manifest["database"], manifest["row_counts"])
            result["restore_seconds"] = round(time.monotonic() - restore_clock, 3)
            result["row_counts"] = actual
            result["mismatches"] = compare_row_counts(manifest["row_counts"], actual)
            with conn.cursor() as cur:
                cur.execute(f"USE {quote_identifier(manifest['database'])}")
                cur.execute(smoke_query)
                rows = cur.fetchmany(5)
            result["smoke_query"] = smoke_query
            result["smoke_result"] = [[str(v) if v is not None else None for v in row] for row in rows]
        finally:
            conn.close()
        result["status"] = "failed" if result["mismatches"] else "passed"
    except BackupError as exc:
        result["error"] = str(exc)
    except (DockerException, OSError) as exc:
        result["error"] = f"drill failed: {exc}"
    except Exception as exc:
        if HAS_PYMYSQL and isinstance(exc, pymysql.err.MySQLError):
            result["error"] = f"drill query failed: {exc}"
        else:
            raise
    finally:
        if container_id is not None:
            with contextlib.suppress(Exception):
                api.remove_container(container_id, v=True, force=True)
        shutil.rmtree(sockdir, ignore_errors=True)
    result["finished_at"] = iso(utcnow())
    result["total_seconds"] = round(time.monotonic() - clock, 3)
    return result


def record_drill(backup_dir, entry, result):
    """Write ``{id}.drill.json`` and set the manifest's ``verified`` (caller holds the lock)."""
    backup_id = entry["id"]
    write_json(os.path.join(backup_dir, f"{backup_id}.drill.json"), result)
    manifest = _read_json(entry["manifest_path"])
    manifest["verified"] = result["status"] == "passed"
    manifest["last_drill"] = {
        "status": result["status"],
        "at": result["finished_at"],
        "restore_seconds": result.get("restore_seconds"),
    }
    write_json(entry["manifest_path"], manifest)
    return manifest
