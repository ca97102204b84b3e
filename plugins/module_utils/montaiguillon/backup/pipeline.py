"""The compression pipeline: dump -> zstd/gzip [-> age] -> a partial file
renamed into place, every process of the chain checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading

from ansible.module_utils.montaiguillon.backup.container import CHUNK, STDERR_KEEP
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.ids import COMPRESSIONS
from ansible.module_utils.montaiguillon.backup.pacing import WriteBehind, background_prefix, without_background
from ansible.module_utils.montaiguillon.common.files import describe_os_error


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
