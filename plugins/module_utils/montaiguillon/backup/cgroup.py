"""Run a backup, for a while, in an idle CPU cgroup beside the database container's.

Why: a backup's processes (the thread reading the dump, the compressor, the
dump tool) run under SCHED_IDLE, but Linux compares scheduling policies only
between tasks of the same CPU cgroup. Between cgroups it compares the groups,
and a group holding only idle tasks still weighs as much as any container: a
process of the site waking up (its app, in its own container) then waits for
the tick, up to 4 ms at 250 Hz, instead of taking the core at once. Traced on
the lab (sched_switch/sched_wakeup, 15 s of a 25M backup, a 50/s writer in
another container): with the backup in the database container's cgroup the
writer waited a millisecond or more 28 times, up to 3.8 ms, behind the
compressor's threads; with the backup in a group marked ``cpu.idle`` (Linux
5.15+), 4 and 6 times in two runs, up to 2.5 ms, never behind the backup. The kernel treats such
a group as idle against its siblings: any other group's task preempts it on
waking, and a core running only idle groups counts as free.

So the process makes a cgroup named ``montaiguillon-backup-<random>`` next to
the database container's (same parent: the site's containers are its
siblings), marks it idle, moves in, and ``adopt`` moves the dump tool there
too (``docker exec`` starts it in the container's cgroup). On the way out it
moves back and removes the group; empty groups left by a killed run are
removed by the next one. Where ``cpu.idle`` is missing (older kernel) or the
group cannot be made, the process joins the database container's cgroup
instead, as before: inside it, database threads at least preempt the
backup's idle tasks at once.

Cgroup v1 (or hybrid): only the hierarchy holding the ``cpu`` controller is
used. Cgroup v2: the unified cgroup, so memory the process and its children
allocate meanwhile (the compressor's few MiB, the page cache of the file it
writes) counts in that group too.

Every check that can fail does before anything moves: the container's process
must be visible here (same PID namespace: not a remote engine) and listed in
the cgroup named after the container; otherwise the caller is told why and
nothing changes.
"""

import contextlib
import os
import secrets


class NotJoined(Exception):
    """This process cannot join the container's CPU cgroup (the message says why)."""


def parse_proc_cgroup(text):
    """``/proc/<pid>/cgroup`` -> ``{"cpu": path}`` (the v1 hierarchy with cpu) and/or ``{"": path}`` (v2)."""
    found = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _hid, controllers, path = parts
        if controllers == "" and parts[0] == "0":
            found[""] = path
        elif "cpu" in controllers.split(","):
            found["cpu"] = path
    return found


def parse_mountinfo(text):
    """``/proc/self/mountinfo`` -> ``{"cpu": (mount root, mount point), "": (...)}`` for cgroup mounts."""
    found = {}
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 4 or sep < 5:
            continue
        fstype, options = fields[sep + 1], fields[sep + 3].split(",")
        root, point = fields[3], fields[4].replace("\\040", " ")
        if fstype == "cgroup2":
            found.setdefault("", (root, point))
        elif fstype == "cgroup" and "cpu" in options:
            found.setdefault("cpu", (root, point))
    return found


def _cgroup_dir(mounts, key, path):
    root, point = mounts[key]
    if root != "/" and not (path == root or path.startswith(root.rstrip("/") + "/")):
        return None
    relative = path[len(root) :] if root != "/" else path
    return os.path.join(point, relative.lstrip("/"))


def _read(path):
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def plan_join(container_pid, container_id, proc="/proc", own_pid="self"):
    """Find ``(target directory, own directory)``; raise NotJoined with the reason."""
    if not container_pid or not container_id:
        raise NotJoined("the engine reports no process for the database container")
    try:
        theirs = parse_proc_cgroup(_read(f"{proc}/{container_pid}/cgroup"))
        ours = parse_proc_cgroup(_read(f"{proc}/{own_pid}/cgroup"))
        mounts = parse_mountinfo(_read(f"{proc}/self/mountinfo"))
    except OSError as exc:
        raise NotJoined(f"the database container's process is not visible here ({exc.strerror})") from exc
    key = "cpu" if "cpu" in theirs and "cpu" in mounts else ""
    if key not in theirs or key not in ours or key not in mounts:
        raise NotJoined("no cgroup hierarchy with the cpu controller is mounted here")
    if container_id not in theirs[key]:
        raise NotJoined(f"process {container_pid} here is not the database container's (another PID namespace)")
    target = _cgroup_dir(mounts, key, theirs[key])
    own = _cgroup_dir(mounts, key, ours[key])
    if target is None or own is None:
        raise NotJoined("the cgroup file system mounted here does not show the database container's cgroup")
    try:
        members = _read(os.path.join(target, "cgroup.procs")).split()
    except OSError as exc:
        raise NotJoined(f"cannot read {target}/cgroup.procs ({exc.strerror})") from exc
    if str(container_pid) not in members:
        raise NotJoined(f"{target} does not hold the database container's process")
    if key == "" and "cpu" not in _controllers(target):
        raise NotJoined("the cpu controller is not enabled for the database container's cgroup")
    return target, own


def _controllers(directory):
    try:
        return _read(os.path.join(directory, "cgroup.controllers")).split()
    except OSError:
        return []


def _move(directory, pid):
    with open(os.path.join(directory, "cgroup.procs"), "w", encoding="ascii") as handle:
        handle.write(str(pid))


IDLE_PREFIX = "montaiguillon-backup-"
IDLE_PLACE = "idle group beside the database container"
CONTAINER_PLACE = "database container"


class Placement:
    """Where ``joined`` put the process: ``where`` says it, ``adopt`` moves another process there."""

    def __init__(self, where, directory=None):
        self.where = where
        self.directory = directory

    @property
    def joined(self):
        return self.directory is not None

    def adopt(self, pid, expect=None):
        """Move ``pid`` (a process of this PID namespace) into the group; ``expect``: a word of its command line.

        Returns whether it moved: a process that ended, or whose command line
        does not hold ``expect`` (a pid reused, or from another namespace), is
        left alone.
        """
        if self.directory is None or not pid:
            return False
        try:
            if expect is not None:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    if expect.encode() not in handle.read():
                        return False
            _move(self.directory, pid)
        except OSError:
            return False
        return True


def _remove_stale_idle_groups(parent):
    """Remove empty groups earlier runs left (killed before their cleanup); the kernel refuses busy ones."""
    with contextlib.suppress(OSError):
        for name in os.listdir(parent):
            if name.startswith(IDLE_PREFIX):
                with contextlib.suppress(OSError):
                    _remove_group(os.path.join(parent, name))


def _new_group(directory):
    os.mkdir(directory, 0o755)  # in a cgroup file system the kernel fills it (cgroup.procs, cpu.idle, ...)


def _remove_group(directory):
    os.rmdir(directory)  # the kernel refuses (EBUSY) while a process or a child group is inside


def _make_idle_group(target, token=None):
    """A new cgroup marked idle beside ``target``; its path, or raise OSError (nothing is left behind)."""
    parent = os.path.dirname(target)
    _remove_stale_idle_groups(parent)
    directory = os.path.join(parent, IDLE_PREFIX + (token or secrets.token_hex(4)))
    _new_group(directory)
    try:
        # r+: the kernel makes the file with the group; where it does not (before Linux 5.15) it is missing
        with open(os.path.join(directory, "cpu.idle"), "r+", encoding="ascii") as handle:
            handle.write("1")
    except OSError:
        with contextlib.suppress(OSError):
            _remove_group(directory)
        raise
    return directory


@contextlib.contextmanager
def joined(container_pid, container_id, proc="/proc", pid=None, token=None):
    """Run the calling process in an idle CPU cgroup beside the container's inside the block.

    Yields a ``Placement``: ``where`` is ``IDLE_PLACE``, ``CONTAINER_PLACE``
    and why there is no idle group (the container's cgroup instead), or
    ``own: <why>`` (nothing moved). On the way out the process goes back to
    its own cgroup and the idle group is removed (children it started
    meanwhile are expected to have ended; if one has not, the group stays and
    the next run removes it).
    """
    pid = pid or os.getpid()
    idle = None
    try:
        target, own = plan_join(container_pid, container_id, proc=proc, own_pid=str(pid))
        if target == own:
            raise NotJoined("already in the database container's cgroup")
        try:
            idle = _make_idle_group(target, token)
            _move(idle, pid)
            placement = Placement(IDLE_PLACE, idle)
        except OSError as exc:
            if idle is not None:
                with contextlib.suppress(OSError):
                    _remove_group(idle)
                idle = None
            _move(target, pid)
            why = "no cpu.idle in this kernel" if exc.filename and exc.filename.endswith("cpu.idle") else exc.strerror
            placement = Placement(f"{CONTAINER_PLACE} (no idle group: {why})", target)
    except NotJoined as exc:
        yield Placement(f"own: {exc}")
        return
    except OSError as exc:
        yield Placement(f"own: cannot join the database container's cgroup ({exc.strerror})")
        return
    try:
        yield placement
    finally:
        with contextlib.suppress(OSError):  # gone, or not allowed back: the process ends soon anyway
            _move(own, pid)
        if idle is not None:
            with contextlib.suppress(OSError):  # busy: a child still runs; the next run removes it
                _remove_group(idle)
