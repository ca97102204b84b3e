"""Backups as background work: the pace, the CPU priority and writing behind.

The pace (``max_rate``) bounds the dump; the dump tool, compressor and reader
run under SCHED_IDLE (or nice); the file is handed to the disk a megabyte at a
time so the site's commits never queue behind a burst of dirty pages.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import time

from ansible.module_utils.montaiguillon.backup.errors import BackupError

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
