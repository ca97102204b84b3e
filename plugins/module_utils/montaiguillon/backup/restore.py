"""Restoring a backup: streamed into the server, then binary logs replayed to a point in time."""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import os
import shutil
import signal
import threading
import time

from ansible.module_utils.montaiguillon.backup.binlogs import (
    BINLOG_DIR,
    binlog_sequence,
    decrypt_to,
    private_tempdir,
    shipped_binlogs,
)
from ansible.module_utils.montaiguillon.backup.catalog import list_backups, verify_backup_file
from ansible.module_utils.montaiguillon.backup.container import (
    CHUNK,
    STDERR_KEEP,
    ExecStream,
    _unlink_quietly,
    container_tempdir,
    fifo_name,
    tar_stream,
)
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.ids import COMPRESSIONS, parse_backup_id
from ansible.module_utils.montaiguillon.backup.pipeline import chain_errors, spawn_chain
from ansible.module_utils.montaiguillon.common.clock import iso, parse_iso
from ansible.module_utils.montaiguillon.common.docker_engine import DockerException


def load_backup(backup_dir, backup, database=None, warn=lambda _msg: None, before=None):
    """Resolve ``backup`` (an id or ``latest``) and verify it; return ``(entry, sha256)``.

    ``latest`` is the newest complete backup whose checksum verifies; corrupt ones
    are skipped with a warning. With ``before`` (a point in time to recover to),
    the newest such backup started before it: the one the binlogs are replayed
    from. An explicit id must have a valid manifest and a matching checksum, else
    BackupError and nothing is changed.
    """
    entries = list_backups(backup_dir, database)
    if backup == "latest":
        for entry in entries:
            if entry["status"] != "complete":
                continue
            if before is not None and parse_iso(entry["manifest"]["started_at"]) >= before:
                continue
            ok, actual, message = verify_backup_file(entry["path"], entry["manifest"])
            if ok:
                return entry, actual
            warn(message.replace("; nothing was changed", "; skipped"))
        if before is not None:
            raise BackupError(
                f"no complete backup{f' of {database}' if database else ''} with a valid checksum was taken before"
                f" {iso(before)} in {backup_dir}; nothing was changed"
            )
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
    shipped = shipped_binlogs(backup_dir)
    sequence = binlog_sequence(binlog["file"], server_files, sorted(shipped))
    with contextlib.ExitStack() as stack:
        uploads = _ShippedUploads(api, container, stack, backup_dir, identity_file)
        paths = [
            os.path.join(os.path.dirname(basename), name) if source == "server" else uploads.path(name, shipped[name])
            for name, source in sequence
        ]
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
        _pipe_events(api, container, stack, tools, reader_cmd, writer_cmd)
    return {"from": binlog, "stop_datetime": iso(stop_at), "files": [name for name, _size in sequence]}


class _ShippedUploads:
    """Shipped binlogs copied into one temporary directory of the container (decrypted first)."""

    def __init__(self, api, container, stack, backup_dir, identity_file):
        self.api, self.container, self.stack = api, container, stack
        self.backup_dir, self.identity_file = backup_dir, identity_file
        self.upload_dir = None

    def path(self, name, file_name):
        """Copy the shipped ``file_name`` (binlog ``name``) into the container; its path there."""
        if self.upload_dir is None:
            self.upload_dir = self.stack.enter_context(container_tempdir(self.api, self.container))
        local = os.path.join(self.backup_dir, BINLOG_DIR, file_name)
        if file_name.endswith(".age"):
            private = self.stack.enter_context(private_tempdir(self.backup_dir))
            local = decrypt_to(local, private, name, self.identity_file)
        try:
            self.api.put_archive(self.container, self.upload_dir, tar_stream(name, local))
        except DockerException as exc:
            raise BackupError(f"cannot copy the shipped binlog {name} into {self.container}: {exc}") from exc
        return f"{self.upload_dir}/{name}"


def _pipe_events(api, container, stack, tools, reader_cmd, writer_cmd):
    """The binlog reader's events into the client, both in the container; either one failing is named."""
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
