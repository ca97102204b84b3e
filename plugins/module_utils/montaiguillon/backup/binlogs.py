"""Binary logs: the replay sequence for a point-in-time restore, and shipping
the closed logs into the backup directory (encrypted when backups are).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import subprocess
import tempfile

from ansible.module_utils.montaiguillon.backup import mysql
from ansible.module_utils.montaiguillon.backup.catalog import list_backups
from ansible.module_utils.montaiguillon.backup.container import ExecStream, inspect_container
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.mysql import query_one
from ansible.module_utils.montaiguillon.backup.pipeline import CompressPipeline
from ansible.module_utils.montaiguillon.common.clock import parse_iso
from ansible.module_utils.montaiguillon.common.files import describe_os_error, fsync_dir


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


class ShortCopy(BackupError):
    """``cat`` ended well but fewer bytes came out of the container than the file holds."""

    def __init__(self, source, size, copied):
        super().__init__(f"{source} is {size} bytes on the server but {copied} bytes were copied")
        self.copied = copied


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
            raise ShortCopy(source, size, copied)
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


def _ship_copied(api, container, source, target, size, recipients_file, warn):
    """``_ship_one``, again once when the engine delivered nothing of a successful ``cat``.

    Docker can lose a short-lived exec's output (moby/moby#27289): the file is
    intact on the server, only that copy is empty. A second empty or any short
    copy is an error; nothing partial is ever kept.
    """
    try:
        return _ship_one(api, container, source, target, size, recipients_file)
    except ShortCopy as exc:
        if exc.copied or not size:
            raise
        warn(f"{exc}: the engine lost the output, copying it again")
    return _ship_one(api, container, source, target, size, recipients_file)


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
    conn = mysql.connect(login)
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
        result["bytes"] += _ship_copied(api, container, f"{basedir}/{name}", target, size, encrypt_recipient_file, warn)
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
