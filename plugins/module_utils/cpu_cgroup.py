"""Run this process, for a while, in the CPU cgroup of a container.

Why: a backup's host-side work (the thread reading the dump, the compressor)
runs under SCHED_IDLE, but Linux compares scheduling policies only between
tasks of the same CPU cgroup. Between cgroups it compares the groups, and a
group holding only idle tasks still weighs as much as the database
container's: a query of the site waking up then waits for its turn (a slice of
a few milliseconds) instead of taking the core at once. Inside the database
container's cgroup, the backup's idle tasks give the core back the moment a
database thread wants it. The backup is charged to the database it reads, as a
sidecar would be.

Cgroup v1 (or hybrid): only the hierarchy holding the ``cpu`` controller is
joined. Cgroup v2: the unified cgroup is joined, so memory the process and its
children allocate meanwhile (the compressor's few MiB, the page cache of the
file it writes) also counts against the container's limit.

Every check that can fail does before anything moves: the container's process
must be visible here (same PID namespace: not a remote engine) and listed in
the cgroup named after the container; otherwise the caller is told why and
nothing changes.
"""

import contextlib
import os


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


@contextlib.contextmanager
def joined(container_pid, container_id, proc="/proc", pid=None):
    """Run the calling process in the container's CPU cgroup inside the block.

    Yields ``None`` when joined, else the reason it was not (nothing moved). On
    the way out the process goes back to its own cgroup (children it started
    meanwhile stay where they are: they are expected to have ended).
    """
    pid = pid or os.getpid()
    try:
        target, own = plan_join(container_pid, container_id, proc=proc, own_pid=str(pid))
        if target == own:
            raise NotJoined("already in the database container's cgroup")
        _move(target, pid)
    except NotJoined as exc:
        yield str(exc)
        return
    except OSError as exc:
        yield f"cannot join the database container's cgroup ({exc.strerror})"
        return
    try:
        yield None
    finally:
        with contextlib.suppress(OSError):  # gone, or not allowed back: the process ends soon anyway
            _move(own, pid)
