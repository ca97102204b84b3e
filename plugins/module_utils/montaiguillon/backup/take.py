"""Taking a backup: the dump through the pipeline, checked, with its manifest."""

from __future__ import annotations

import contextlib
import os
import shutil
import time

from ansible.module_utils.montaiguillon.backup import mysql
from ansible.module_utils.montaiguillon.backup.catalog import check_free_space, remove_stale_partials, write_json
from ansible.module_utils.montaiguillon.backup.cgroup import joined as joined_cpu_cgroup
from ansible.module_utils.montaiguillon.backup.container import (
    ExecStream,
    FifoDumpStream,
    container_credentials,
    detect_tools,
    dump_into,
    fifo_directory,
    inspect_container,
)
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.ids import COMPRESSIONS, dump_file_name, make_backup_id
from ansible.module_utils.montaiguillon.backup.manifest import build_manifest
from ansible.module_utils.montaiguillon.backup.pacing import Pacer, background_thread
from ansible.module_utils.montaiguillon.backup.pipeline import CompressPipeline, resolve_compression
from ansible.module_utils.montaiguillon.backup.scanner import DumpScanner, check_dump, dump_flags
from ansible.module_utils.montaiguillon.common.clock import utcnow
from ansible.module_utils.montaiguillon.common.files import describe_os_error, fsync_dir


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
    commands, encryption = _commands(compression, encrypt_recipient_file)
    info = inspect_container(api, container)
    tools = detect_tools(api, container)
    facts = _database_facts(login, container, database, warn)

    started = utcnow()
    clock = time.monotonic()
    backup_id = make_backup_id(started, kind, lambda c: any(n.startswith(c + ".") for n in os.listdir(backup_dir)))
    file_name = dump_file_name(backup_id, compression, encrypted=encryption is not None)
    final_path = os.path.join(backup_dir, file_name)
    dump = _Dump(api, container, info, login, database, tools, dump_flags(facts["version"], facts["log_bin"]))
    dump.run(commands, final_path, max_rate=max_rate, min_size_bytes=min_size_bytes)
    manifest = build_manifest(
        backup_id=backup_id,
        database=database,
        file_name=file_name,
        kind=kind,
        label=label,
        started=started,
        finished=utcnow(),
        duration=time.monotonic() - clock,
        compression=compression,
        encryption=encryption,
        sha256=dump.sha256,
        compressed_bytes=dump.compressed_bytes,
        scan=dump.scan,
        server={
            **server_image(info),
            "version": facts["version"],
            "charset": facts["charset"],
            "collation": facts["collation"],
        },
        tool={"name": tools["dump"], "flags": dump.flags, "transport": dump.transport},
        pacing={"max_rate_bytes": max_rate, "paused_seconds": round(dump.paused, 3), "cpu_cgroup": dump.cpu_where},
    )
    manifest_path = os.path.join(backup_dir, f"{backup_id}.json")
    try:
        write_json(manifest_path, manifest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(final_path)
        raise
    return {**manifest, "path": final_path, "manifest_path": manifest_path}


def _commands(compression, encrypt_recipient_file):
    """The compressor, then age when a recipient file is given; and the manifest's ``encryption``."""
    commands = [COMPRESSIONS[compression]["compress"]]
    if not encrypt_recipient_file:
        return commands, None
    if not shutil.which("age"):
        raise BackupError("encrypt_recipient_file is set but the age binary is missing on the server (apt: age)")
    if not os.path.isfile(encrypt_recipient_file):
        raise BackupError(f"encrypt_recipient_file {encrypt_recipient_file} does not exist")
    commands.append(["age", "-R", encrypt_recipient_file])
    return commands, {"tool": "age", "recipients_file": encrypt_recipient_file}


def _database_facts(login, container, database, warn):
    """The server's version, charset and binlog state; refuses a database that is not there."""
    facts = mysql.existing_database_facts(login, database, container)
    if not facts["log_bin"]:
        warn("binary logging is off on the server: this backup has no binlog position (no point-in-time recovery)")
    return facts


class _Dump:
    """One dump streamed out of the container into ``<final>.partial``, checked, renamed into place."""

    def __init__(self, api, container, info, login, database, tools, flags):
        self.api, self.container, self.info, self.login = api, container, info, login
        self.database, self.tools, self.flags = database, tools, flags
        self.scan = DumpScanner()
        self.sha256 = self.compressed_bytes = None
        self.paused = 0.0
        self.cpu_where = None
        self.transport = None

    def run(self, commands, final_path, *, max_rate, min_size_bytes):
        partial_path = final_path + ".partial"
        shared = fifo_directory(self.api, self.container, self.info, self.login)
        self.transport = "fifo" if shared else "docker-exec"
        user, password = self.login["login_user"], self.login.get("login_password")
        credentials = container_credentials(self.api, self.container, user, password)
        pid = self.info.get("State", {}).get("Pid")
        with credentials as cnf, joined_cpu_cgroup(pid, self.info.get("Id", "")) as cpu, background_thread():
            try:
                pipeline = CompressPipeline(commands, partial_path, background=True)
            except OSError as exc:
                raise BackupError(describe_os_error(exc, partial_path)) from exc
            stream = None
            try:
                stream = self._start(cnf, shared, cpu)
                self._copy(stream, pipeline, Pacer(max_rate))
                self.sha256, self.compressed_bytes = pipeline.finish()
                exit_code = stream.exit_code()
                self.scan.finish()
                problem = check_dump(self.scan, exit_code, min_size_bytes, self.tools["dump"], stream.stderr_text())
                if problem:
                    raise BackupError(problem)
                os.replace(partial_path, final_path)
                fsync_dir(os.path.dirname(final_path))
            except BaseException as exc:
                pipeline.abort()
                if stream is not None:
                    stream.kill()
                error = _kept(exc, partial_path)
                if error is exc:
                    raise
                raise error from exc
            finally:
                if stream is not None:
                    stream.close()
        self.cpu_where = cpu.where

    def _start(self, cnf, shared, cpu):
        dump = [*self.tools["background"], self.tools["dump"], f"--defaults-extra-file={cnf}", *self.flags]
        if shared:
            stream = FifoDumpStream(self.api, self.container, dump_into(dump, self.database), *shared)
        else:
            stream = ExecStream(self.api, self.container, [*dump, self.database])
        # docker exec starts the tool in the container's cgroup: it joins ours (a pid of this
        # namespace: the join already checked the container's process is visible here)
        if cpu.joined:
            cpu.adopt(stream.pid(), expect=self.tools["dump"])
        return stream

    def _copy(self, stream, pipeline, pace):
        for data in stream.stdout_chunks():
            self.scan.feed(data)
            pipeline.write(data)
            pace(len(data))
        self.paused = pace.slept


def _kept(exc, partial_path):
    """The error a failed dump raises: says the partial file went and earlier backups are untouched."""
    kept = "the partial file was removed; earlier backups are untouched"
    if isinstance(exc, OSError):
        return BackupError(f"{describe_os_error(exc, partial_path)} ({kept})")
    if isinstance(exc, BackupError):
        return BackupError(f"{exc} ({kept})")
    return exc
