"""The backup's CPU cgroup: an idle group beside the database container's (else that one), v1 and v2 layouts,
every refusal moves nothing."""

import errno
import os
import shutil
from pathlib import Path

import pytest
from ansible.module_utils.montaiguillon.backup import cgroup as cpu_cgroup
from ansible.module_utils.montaiguillon.backup.cgroup import joined, parse_mountinfo, parse_proc_cgroup

CID = "9e2405cda8b68902a0f624c9c1739be57fb32b416875d85a9679be8da21a5f0b"
DB_PID, OUR_PID = 4860, 777

V1_MOUNTS = """\
220 212 0:28 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
221 220 0:29 / {root}/cpu rw,relatime - cgroup cgroup rw,cpu
222 220 0:30 / {root}/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
224 220 0:32 / {root}/memory rw,relatime - cgroup cgroup rw,memory
230 220 0:38 / {root}/unified rw,relatime - cgroup2 cgroup2 rw
"""
V2_MOUNTS = "30 23 0:26 / {root} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"


class Host:
    """A fake /proc and cgroup file system under tmp_path."""

    def __init__(self, tmp_path, mounts, theirs, ours):
        self.proc = tmp_path / "proc"
        self.cgroup = tmp_path / "cgroup"
        for pid, text in ((DB_PID, theirs), (OUR_PID, ours)):
            (self.proc / str(pid)).mkdir(parents=True)
            (self.proc / str(pid) / "cgroup").write_text(text)
        (self.proc / "self").mkdir()
        (self.proc / "self" / "mountinfo").write_text(mounts.format(root=self.cgroup))

    def group(self, path, procs=(), controllers=None):
        directory = self.cgroup / path.lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cgroup.procs").write_text("".join(f"{pid}\n" for pid in procs))
        if controllers is not None:
            (directory / "cgroup.controllers").write_text(" ".join(controllers) + "\n")
        return directory

    def join(self, container_pid=DB_PID, container_id=CID):
        return joined(container_pid, container_id, proc=str(self.proc), pid=OUR_PID, token="t1")


@pytest.fixture(autouse=True)
def kernel(monkeypatch, tmp_path):
    """The fake cgroup file system behaves as the kernel's: a process is in one group per hierarchy, a new
    group comes with its files (cpu.idle only on Linux 5.15+), and only an empty group can be removed."""
    root = tmp_path / "cgroup"
    made = {"cpu.idle": True}

    def hierarchy(directory):
        first = Path(directory).relative_to(root).parts[0]
        return root / first if first in ("cpu", "cpuacct", "memory") else root  # v1: one tree each; v2: one

    def move(directory, pid):
        with open(os.path.join(directory, "cgroup.procs"), "a", encoding="ascii") as target:
            for procs in hierarchy(directory).rglob("cgroup.procs"):
                if procs.parent != Path(directory) and procs.is_file():
                    procs.write_text("".join(f"{p}\n" for p in procs.read_text().split() if p != str(pid)))
            target.write(f"{pid}\n")

    def new_group(path):
        os.mkdir(path)
        (Path(path) / "cgroup.procs").write_text("")
        if made["cpu.idle"]:
            (Path(path) / "cpu.idle").write_text("0\n")

    def remove_group(path):
        path = Path(path)
        procs = path / "cgroup.procs"
        if (procs.is_file() and procs.read_text().split()) or any(p.is_dir() for p in path.iterdir()):
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        shutil.rmtree(path)

    monkeypatch.setattr(cpu_cgroup, "_move", move)
    monkeypatch.setattr(cpu_cgroup, "_new_group", new_group)
    monkeypatch.setattr(cpu_cgroup, "_remove_group", remove_group)
    return made


def members(directory):
    return (directory / "cgroup.procs").read_text().split()


@pytest.fixture
def v1(tmp_path):
    """Hybrid hierarchy (cpu on v1), engine with the cgroupfs driver: /docker/<id>."""
    theirs = f"4:memory:/docker/{CID}\n2:cpuacct:/docker/{CID}\n1:cpu:/docker/{CID}\n0::/docker/{CID}\n"
    ours = "4:memory:/ssh\n2:cpuacct:/ssh\n1:cpu:/user.slice/session-3.scope\n0::/user.slice/session-3.scope\n"
    host = Host(tmp_path, V1_MOUNTS, theirs, ours)
    host.target = host.group(f"cpu/docker/{CID}", [DB_PID, 4901])
    host.own = host.group("cpu/user.slice/session-3.scope", [OUR_PID])
    return host


@pytest.fixture
def v2(tmp_path):
    """Unified hierarchy, engine with the systemd driver: system.slice/docker-<id>.scope."""
    scope = f"/system.slice/docker-{CID}.scope"
    host = Host(tmp_path, V2_MOUNTS, f"0::{scope}\n", "0::/system.slice/cron.service\n")
    host.target = host.group(scope, [DB_PID], controllers=["cpu", "io", "memory", "pids"])
    host.own = host.group("/system.slice/cron.service", [OUR_PID], controllers=["cpu", "memory"])
    return host


@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_the_process_is_in_an_idle_group_beside_the_database_inside_and_back_after(request, layout):
    host = request.getfixturevalue(layout)
    idle = host.target.parent / "montaiguillon-backup-t1"
    with host.join() as placement:
        assert placement.where == "idle group beside the database container"
        assert (idle / "cpu.idle").read_text().strip() == "1"
        assert members(idle) == [str(OUR_PID)]
        assert members(host.own) == []
        assert members(host.target) == [str(DB_PID)] + ([] if layout == "v2" else ["4901"])
    assert members(host.own) == [str(OUR_PID)]
    assert not idle.exists(), "the group is removed on the way out"


def test_the_dump_tool_is_adopted_only_if_it_is_the_tool(v1):
    tool = os.getpid()  # a real process, so that its /proc/<pid>/cmdline is there to read (pytest's: "python")
    idle = v1.target.parent / "montaiguillon-backup-t1"
    with v1.join() as placement:
        assert placement.adopt(tool, expect="mariadb-dump") is False  # a reused pid is left alone
        assert placement.adopt(0) is False  # the engine did not say
        assert members(idle) == [str(OUR_PID)]
        assert placement.adopt(tool, expect="python") is True
        assert members(idle) == [str(OUR_PID), str(tool)]


def test_without_cpu_idle_the_database_cgroup_is_joined_and_says_why(v1, kernel):
    kernel["cpu.idle"] = False  # a kernel before 5.15
    with v1.join() as placement:
        assert placement.where == "database container (no idle group: no cpu.idle in this kernel)"
        assert members(v1.target) == [str(DB_PID), "4901", str(OUR_PID)]
        assert not (v1.target.parent / "montaiguillon-backup-t1").exists(), "the half-made group is removed"
    assert members(v1.own) == [str(OUR_PID)]


def test_empty_groups_left_by_killed_runs_are_removed_busy_ones_kept(v1):
    # an empty directory stands for an empty group (rmdir succeeds); a non-empty one for a busy group
    stale = v1.target.parent / "montaiguillon-backup-dead"
    stale.mkdir()
    busy = v1.group("cpu/docker/montaiguillon-backup-busy", [4999])
    other = v1.target.parent / "not-ours"
    other.mkdir()
    with v1.join():
        pass
    assert not stale.exists() and busy.exists() and other.exists()


def test_no_refusal_leaves_a_group_behind(v1):
    (v1.target / "cgroup.procs").write_text("4901\n")
    with v1.join() as placement:
        assert placement.where.startswith("own: ")
        assert not placement.joined and placement.adopt(os.getpid()) is False
    assert not list(v1.target.parent.glob("montaiguillon-backup-*"))


def test_v1_moves_only_the_cpu_hierarchy(v1):
    memory = v1.group("memory/ssh", [OUR_PID])
    with v1.join() as placement:
        assert placement.joined
    assert members(memory) == [str(OUR_PID)]
    assert not (v1.cgroup / "memory" / "docker").exists()


def refusal(host, **kwargs):
    before = {path: path.read_text() for path in host.cgroup.rglob("cgroup.procs")}
    with host.join(**kwargs) as placement:
        assert not placement.joined
    assert {path: path.read_text() for path in host.cgroup.rglob("cgroup.procs")} == before, "something moved"
    return placement.where


def test_a_pid_from_another_namespace_is_refused(v1):
    # a remote engine's pid that happens to exist here belongs to another process
    (v1.proc / "31").mkdir()
    (v1.proc / "31" / "cgroup").write_text("1:cpu:/user.slice\n0::/user.slice\n")
    assert "not the database container's" in refusal(v1, container_pid=31)


def test_an_invisible_pid_is_refused(v1):
    assert "not visible here" in refusal(v1, container_pid=99999)


def test_no_pid_from_the_engine_is_refused(v1):
    assert "reports no process" in refusal(v1, container_pid=0)


def test_no_container_id_is_refused_not_matched_by_every_path(v1):
    assert "reports no process" in refusal(v1, container_id="")


def test_a_cgroup_that_does_not_hold_the_container_is_refused(v1):
    (v1.target / "cgroup.procs").write_text("4901\n")
    assert "does not hold the database container's process" in refusal(v1)


def test_v2_without_the_cpu_controller_is_refused(v2):
    (v2.target / "cgroup.controllers").write_text("memory pids\n")
    assert "cpu controller is not enabled" in refusal(v2)


def test_no_cgroup_mount_is_refused(v1):
    (v1.proc / "self" / "mountinfo").write_text("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n")
    assert "no cgroup hierarchy with the cpu controller" in refusal(v1)


def test_a_move_the_kernel_refuses_changes_nothing(v1, monkeypatch):
    def refuse(directory, pid):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(directory, "cgroup.procs"))

    monkeypatch.setattr(cpu_cgroup, "_move", refuse)  # neither the idle group nor the container's takes us
    with v1.join() as placement:
        assert placement.where == "own: cannot join the database container's cgroup (Permission denied)"
        assert not placement.joined
    assert members(v1.own) == [str(OUR_PID)]
    assert not list(v1.target.parent.glob("montaiguillon-backup-*")), "the idle group made for it is removed"


def test_already_inside_is_left_alone(v1):
    (v1.proc / str(OUR_PID) / "cgroup").write_text(f"1:cpu:/docker/{CID}\n")
    assert "already in" in refusal(v1)


def test_a_namespaced_mount_maps_paths_under_its_root(tmp_path):
    # inside a cgroup namespace whose root is /lab: the mount shows /lab as its root
    mounts = "221 220 0:29 /lab {root}/cpu rw - cgroup cgroup rw,cpu\n"
    host = Host(tmp_path, mounts, f"1:cpu:/lab/docker/{CID}\n", "1:cpu:/lab/ssh\n")
    target = host.group(f"cpu/docker/{CID}", [DB_PID])
    own = host.group("cpu/ssh", [OUR_PID])
    with host.join() as placement:
        assert placement.joined
        assert members(target.parent / "montaiguillon-backup-t1") == [str(OUR_PID)]
    assert members(own) == [str(OUR_PID)]


def test_parsers_read_real_lines():
    assert parse_proc_cgroup("4:cpu,cpuacct:/docker/x\n0::/docker/x\n") == {"cpu": "/docker/x", "": "/docker/x"}
    assert parse_proc_cgroup("0::/system.slice/docker-x.scope\n") == {"": "/system.slice/docker-x.scope"}
    mounts = parse_mountinfo(
        "25 21 0:22 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "26 21 0:23 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n"
    )
    assert mounts == {"cpu": ("/", "/sys/fs/cgroup/cpu,cpuacct")}


def test_on_this_machine_it_either_joins_or_says_why():
    # the real /proc: our own pid is never "the container's", so it must refuse with a reason
    with joined(os.getpid(), "no-such-container-id") as placement:
        assert placement.where.startswith("own: ")
