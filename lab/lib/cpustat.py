"""CPU figures from the kernel's counters: cgroup cpu.stat / cpuacct.usage and /proc/<pid>/stat.

Pure functions (no Docker), for benchmarks/monitoring.py; tested in tests/unit/test_monitoring_benchmark.py.
"""

import posixpath
import statistics

TARGET_PERCENT = 5.0  # of one CPU, added by monitoring at idle (issue 17)


def split_sections(text):
    """``== name`` headed sections of a command's output -> {name: body}."""
    sections, name = {}, None
    for line in text.splitlines():
        if line.startswith("== "):
            name = line[3:]
            sections[name] = []
        elif name is not None:
            sections[name].append(line)
    return {key: "\n".join(lines) for key, lines in sections.items()}


def cgroup_paths(proc_cgroup):
    """The unified (v2) and cpuacct (v1) paths of a /proc/<pid>/cgroup -> (unified or None, cpuacct or None)."""
    unified = cpuacct = None
    for line in proc_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            unified = path
        elif "cpuacct" in controllers.split(","):
            cpuacct = path
    return unified, cpuacct


def cpu_file_candidates(proc_cgroup):
    """Files that may count the CPU of a process's cgroup, best first (the first that exists is read).

    cgroup v2 (the group's cpu.stat, in a private or the host's namespace), the unified hierarchy of a
    hybrid host, then v1's cpuacct.usage.
    """
    unified, cpuacct = cgroup_paths(proc_cgroup)
    candidates = []
    if unified is not None:
        relative = unified.lstrip("/")
        candidates += [
            posixpath.join("/sys/fs/cgroup", relative, "cpu.stat"),
            posixpath.join("/sys/fs/cgroup/unified", relative, "cpu.stat"),
        ]
    if cpuacct is not None:
        relative = cpuacct.lstrip("/")
        candidates += [
            posixpath.join("/sys/fs/cgroup/cpuacct", relative, "cpuacct.usage"),
            posixpath.join("/sys/fs/cgroup/cpu,cpuacct", relative, "cpuacct.usage"),
        ]
    return candidates


def independent_files(files):
    """Counter files without those of a group nested in another's (counted there already), order kept."""
    files = list(dict.fromkeys(files))
    dirs = [posixpath.dirname(f) for f in files]
    return [
        f
        for f, d in zip(files, dirs, strict=True)
        if not any(other != d and d.startswith(other.rstrip("/") + "/") for other in dirs)
    ]


def parse_usage_usec(name, text):
    """Microseconds of CPU a group used, from its cgroup v2 cpu.stat or its v1 cpuacct.usage (nanoseconds)."""
    if name.endswith("cpu.stat"):
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value)
        raise ValueError(f"{name} has no usage_usec line")
    if name.endswith("cpuacct.usage"):
        return int(text.strip()) // 1000
    raise ValueError(f"{name}: not a CPU counter this benchmark reads")


def parse_proc_stat(text):
    """utime, stime, cutime, cstime (clock ticks) and starttime of a /proc/<pid>/stat line.

    The command name (field 2) is in parentheses and may hold spaces or parentheses: fields are
    counted from the last ')'.
    """
    head, paren, tail = text.strip().rpartition(")")
    if not paren or "(" not in head:
        raise ValueError(f"not a /proc/<pid>/stat line: {text[:80]!r}")
    fields = tail.split()  # fields[0] is field 3 (state)
    if len(fields) < 20:
        raise ValueError(f"short /proc/<pid>/stat line: {text[:80]!r}")
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return {"utime": utime, "stime": stime, "cutime": cutime, "cstime": cstime, "starttime": int(fields[19])}


def effective_cpus(nproc, nano_cpus=0, cpu_quota=0, cpu_period=0):
    """The CPUs a container may use: its cpuset (nproc inside it), capped by --cpus or a CFS quota."""
    cpus = float(nproc)
    if nano_cpus and nano_cpus > 0:
        cpus = min(cpus, nano_cpus / 1e9)
    if cpu_quota and cpu_quota > 0:
        cpus = min(cpus, cpu_quota / (cpu_period or 100_000))
    return cpus


def cpu_percent(usec_before, usec_after, seconds):
    """CPU used between two counter samples, in % of one CPU."""
    if seconds <= 0:
        raise ValueError("a window has no length")
    if usec_after < usec_before:
        raise ValueError("the CPU counter went back (the container restarted?)")
    return 100.0 * (usec_after - usec_before) / (seconds * 1e6)


def process_percent(before, after, clk_tck, seconds):
    """A process's CPU between two /proc/<pid>/stat samples (its own and its reaped children's), in % of
    one CPU; None when it is not the same process at both ends (stopped, restarted)."""
    if before is None or after is None or before["starttime"] != after["starttime"]:
        return None
    ticks = sum(after[key] - before[key] for key in ("utime", "stime", "cutime", "cstime"))
    return 100.0 * ticks / clk_tck / seconds


def summarize(without, with_):
    """Means over the rounds of the windows without and with monitoring (% of one CPU), what monitoring
    adds, the ratio with/without, and the difference round by round."""
    base, loaded = statistics.mean(without), statistics.mean(with_)
    return {
        "without": base,
        "with": loaded,
        "added": loaded - base,
        "ratio": loaded / base if base > 0 else None,
        "per_round": [w - b for b, w in zip(without, with_, strict=True)],
    }


def verdict(added, target=TARGET_PERCENT):
    """Is what monitoring adds within the target (% of one CPU)?"""
    return "ok" if added <= target else "OVER"
