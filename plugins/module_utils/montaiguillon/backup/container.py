"""Docker exec plumbing (low-level API of Docker SDK 5.0.3: ``exec_create``,
``exec_start(socket=True)``, ``exec_inspect``, ``put_archive``): exec streams,
the FIFO a dump comes through, files and credentials put into a container.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import secrets
import select
import signal
import socket
import struct
import tarfile
import threading
import time

from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.mysql import option_file
from ansible.module_utils.montaiguillon.backup.pacing import FIFO_BYTES, background_prefix, without_background
from ansible.module_utils.montaiguillon.common.docker_engine import DockerError, DockerException, get_client

CHUNK = 1 << 20


STDERR_KEEP = 16 * 1024


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
            # Both streams, multiplexed (no tty): stdout is the data, stderr the tool's complaint.
            streams = {"stdout": True, "stderr": True, "tty": False}
            created = api.exec_create(container, cmd, stdin=stdin, environment=environment, user=user, **streams)
            self.exec_id = created["Id"]
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
