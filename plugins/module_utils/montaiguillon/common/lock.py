"""One change at a time per server: the lock that deploys, rollbacks, restores and backup pruning share.

The roles point every one of them at the same file (``/var/lib/montaiguillon/change.lock``
by default: ``app_lock_file``, ``backup_change_lock_file``), so a deploy never
migrates a database a restore is loading, and pruning never removes a backup a
restore or a deploy's snapshot is being read from. Without a path, a deploy
uses ``{state_dir}/deploy.lock``.

The lock file is created with O_CREAT|O_EXCL and holds JSON
``{who, when, action, what, pid | until, boot_id, token}``. A module holds it for
its own run (``pid``: its process); a playbook holds it across tasks with a
lease (``until``: a restore, through the ``change_lock`` module). When it
already exists:

- its pid is dead on the same boot, its lease ran out, or it was left before a
  reboot: it is stale and taken over, with a warning;
- otherwise the change is refused with who holds it, since when, doing what,
  and how to break it (``break_lock=true``) if that holder is really dead.

The check-and-take is serialised with ``flock`` on a side file so two deploys
that both find a stale lock cannot both take it. ``release()`` removes the
file only if it is still ours (same token).
"""

import contextlib
import errno
import fcntl
import json
import os
import secrets
import socket
import time
from datetime import UTC, datetime, timedelta

from ansible.module_utils.montaiguillon.common.files import read_text

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


class LockHeld(Exception):
    """Someone else's live deploy holds the lock."""

    def __init__(self, message, holder=None):
        super().__init__(message)
        self.holder = holder or {}


def current_boot_id(path=BOOT_ID_PATH):
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def pid_alive(pid):
    """Whether a process with this pid exists on this machine."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_holder(path):
    """The lock file's content as a dict; None when there is no lock; {} when unreadable."""
    text = read_text(path)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def describe_holder(holder):
    until = f", lease until {holder['until']}" if holder.get("until") else ""
    return (
        f"locked by {holder.get('who') or 'unknown'} since {holder.get('when') or 'unknown'} "
        f"({holder.get('action') or 'deploying'} {holder.get('what') or 'unknown'}{until})"
    )


def _stamp(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class DeployLock:
    """The change lock (see the module's docstring); a deploy's by default (``action``)."""

    FILE_NAME = "deploy.lock"

    def __init__(
        self,
        path,
        who,
        what,
        break_lock=False,
        boot_id=None,
        pid=None,
        alive=pid_alive,
        now=None,
        action="deploying",
        lease_seconds=None,
        token=None,
    ):
        self.path = path
        self.who = who
        self.what = what
        self.action = action
        self.break_lock = break_lock
        self.boot_id = boot_id if boot_id is not None else current_boot_id()
        self.pid = pid if pid is not None else os.getpid()
        self.lease_seconds = lease_seconds
        self._alive = alive
        self._now = now or (lambda: datetime.now(UTC))
        self.token = token or secrets.token_hex(8)
        self.held = False
        self.warnings = []

    @classmethod
    def in_dir(cls, state_dir, **kwargs):
        return cls(os.path.join(state_dir, cls.FILE_NAME), **kwargs)

    def _content(self):
        now = self._now()
        content = {
            "who": self.who,
            "when": _stamp(now),
            "action": self.action,
            "what": self.what,
            "pid": self.pid,
            "boot_id": self.boot_id,
            "host": socket.gethostname(),
            "token": self.token,
        }
        if self.lease_seconds is not None:  # held across tasks: its process ends with each task
            content.update(pid=None, until=_stamp(now + timedelta(seconds=self.lease_seconds)))
        return content

    def _create(self):
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            os.write(fd, (json.dumps(self._content(), sort_keys=True) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def stale_reason(self, holder):
        """Why the existing lock may be taken over, or None if its owner may still be running."""
        if not holder:
            return None
        boot = holder.get("boot_id")
        if boot and self.boot_id and boot != self.boot_id:
            return "it was taken before the machine rebooted"
        if holder.get("until"):
            return f"its lease ran out at {holder['until']}" if holder["until"] < _stamp(self._now()) else None
        if not self._alive(holder.get("pid")):
            return f"its process {holder.get('pid')} is gone"
        return None

    def acquire(self):
        """Take the lock or raise LockHeld. Returns the warnings (takeovers)."""
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, mode=0o750, exist_ok=True)
        guard_fd = os.open(self.path + ".guard", os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            fcntl.flock(guard_fd, fcntl.LOCK_EX)
            try:
                self._create()
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise
                self._take_over(read_holder(self.path))
                self._create()
            self.held = True
        finally:
            fcntl.flock(guard_fd, fcntl.LOCK_UN)
            os.close(guard_fd)
        return self.warnings

    def _take_over(self, holder):
        if holder is None:  # vanished between our create and our read
            return
        if self.break_lock:
            self.warnings.append(f"broke the lock on request (break_lock): {describe_holder(holder)}")
        elif holder == {}:
            raise LockHeld(
                f"lock {self.path} exists but cannot be read; if no deploy, rollback or restore is running, "
                "re-run with break_lock=true",
                holder,
            )
        else:
            reason = self.stale_reason(holder)
            if reason is None:
                raise LockHeld(f"{describe_holder(holder)}; if that is dead, re-run with break_lock=true", holder)
            self.warnings.append(f"took over a stale lock ({reason}): {describe_holder(holder)}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def release(self):
        """Remove the lock if it is still ours. Safe to call more than once."""
        if not self.held:
            return
        self.held = False
        holder = read_holder(self.path)
        if holder and holder.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc_info):
        self.release()
        return False


def acquire_waiting(lock, wait, clock=time.monotonic, sleep=time.sleep):
    """``lock.acquire()``, tried again each second for up to ``wait`` s while a live holder has it.

    Returns ``(warnings, waited)``; the final refusal says how long it waited.
    """
    deadline = clock() + (wait or 0)
    waited = False
    while True:
        try:
            return lock.acquire(), waited
        except LockHeld as exc:
            if clock() >= deadline:
                if waited:
                    exc.args = (f"{exc} (waited {wait:g} s)",)
                raise
            waited = True
            sleep(1)


def release_token(path, token):
    """Remove the lock at ``path`` if ``token`` holds it; whether it did."""
    holder = read_holder(path)
    if not holder or holder.get("token") != token:
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return True
