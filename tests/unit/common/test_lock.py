"""The change lock: exclusive, stale locks taken over, live ones refused; held by a process or by a lease."""

import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from ansible.module_utils.montaiguillon.common.lock import (
    DeployLock,
    LockHeld,
    acquire_waiting,
    pid_alive,
    read_holder,
    release_token,
)

BOOT = "boot-1111"


def make_lock(tmp_path, who="alice", what="site:2", alive=lambda pid: True, boot_id=BOOT, pid=4242, **kwargs):
    return DeployLock.in_dir(str(tmp_path), who=who, what=what, alive=alive, boot_id=boot_id, pid=pid, **kwargs)


def write_holder(tmp_path, **fields):
    holder = {"who": "bob", "when": "2026-11-26T09:00:00Z", "what": "site:1", "pid": 999, "boot_id": BOOT}
    holder.update(fields)
    (tmp_path / "deploy.lock").write_text(json.dumps(holder))
    return holder


def test_acquire_writes_who_when_what_pid_boot(tmp_path):
    lock = make_lock(tmp_path)
    assert lock.acquire() == []
    holder = read_holder(str(tmp_path / "deploy.lock"))
    assert holder["who"] == "alice" and holder["what"] == "site:2"
    assert holder["pid"] == 4242 and holder["boot_id"] == BOOT
    assert holder["when"].endswith("Z")
    lock.release()
    assert not (tmp_path / "deploy.lock").exists()


def test_live_lock_is_refused_with_who_when_what(tmp_path):
    write_holder(tmp_path)
    lock = make_lock(tmp_path, alive=lambda pid: pid == 999)
    with pytest.raises(LockHeld) as caught:
        lock.acquire()
    message = str(caught.value)
    assert "locked by bob since 2026-11-26T09:00:00Z (deploying site:1)" in message
    assert "re-run with break_lock=true" in message
    assert caught.value.holder["who"] == "bob"
    assert read_holder(str(tmp_path / "deploy.lock"))["who"] == "bob"  # untouched


def test_second_deploy_in_the_same_run_is_refused(tmp_path):
    first = make_lock(tmp_path, who="alice")
    first.acquire()
    with pytest.raises(LockHeld, match="locked by alice"):
        make_lock(tmp_path, who="carol", pid=5555).acquire()
    first.release()
    make_lock(tmp_path, who="carol", pid=5555).acquire()


def test_stale_lock_of_a_dead_pid_is_taken_over_with_a_warning(tmp_path):
    write_holder(tmp_path)
    lock = make_lock(tmp_path, alive=lambda pid: False)
    warnings = lock.acquire()
    assert len(warnings) == 1
    assert "stale" in warnings[0] and "process 999 is gone" in warnings[0] and "bob" in warnings[0]
    assert read_holder(str(tmp_path / "deploy.lock"))["who"] == "alice"


def test_lock_from_before_a_reboot_is_stale_even_if_the_pid_exists(tmp_path):
    write_holder(tmp_path, boot_id="boot-0000")
    warnings = make_lock(tmp_path, alive=lambda pid: True).acquire()
    assert "rebooted" in warnings[0]


def test_break_lock_takes_a_live_lock(tmp_path):
    write_holder(tmp_path)
    warnings = make_lock(tmp_path, alive=lambda pid: True, break_lock=True).acquire()
    assert "break_lock" in warnings[0] and "bob" in warnings[0]
    assert read_holder(str(tmp_path / "deploy.lock"))["who"] == "alice"


def test_unreadable_lock_is_refused_unless_broken(tmp_path):
    (tmp_path / "deploy.lock").write_text("")
    with pytest.raises(LockHeld, match="cannot be read"):
        make_lock(tmp_path).acquire()
    make_lock(tmp_path, break_lock=True).acquire()


def test_release_leaves_someone_elses_lock(tmp_path):
    lock = make_lock(tmp_path)
    lock.acquire()
    write_holder(tmp_path, who="mallory")  # someone broke our lock and took it
    lock.release()
    assert read_holder(str(tmp_path / "deploy.lock"))["who"] == "mallory"


def test_context_manager_releases_on_error(tmp_path):
    with pytest.raises(RuntimeError), make_lock(tmp_path):
        assert (tmp_path / "deploy.lock").exists()
        raise RuntimeError("deploy blew up")
    assert not (tmp_path / "deploy.lock").exists()


def test_release_twice_is_harmless(tmp_path):
    lock = make_lock(tmp_path)
    lock.acquire()
    lock.release()
    lock.release()


def test_pid_alive():
    assert pid_alive(os.getpid()) is True
    assert pid_alive(2**22 + 12345) is False
    assert pid_alive(None) is False
    assert pid_alive("x") is False


def test_read_holder_missing_is_none(tmp_path):
    assert read_holder(str(tmp_path / "deploy.lock")) is None


# ---- held across a playbook's tasks: a lease ---------------------------------

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def test_a_lease_holds_after_its_process_is_gone_until_it_runs_out(tmp_path):
    restore = make_lock(
        tmp_path,
        who="ops@ctl",
        what="20261126T031500Z-scheduled",
        action="restoring",
        lease_seconds=3600,
        now=lambda: T0,
    )
    restore.acquire()
    holder = read_holder(str(tmp_path / "deploy.lock"))
    assert holder["until"] == "2026-11-26T10:00:00Z" and holder["pid"] is None
    deploy = make_lock(tmp_path, alive=lambda pid: False, now=lambda: T0 + timedelta(minutes=59))
    with pytest.raises(LockHeld) as refused:
        deploy.acquire()
    assert str(refused.value) == (
        "locked by ops@ctl since 2026-11-26T09:00:00Z (restoring 20261126T031500Z-scheduled,"
        " lease until 2026-11-26T10:00:00Z); if that is dead, re-run with break_lock=true"
    )
    late = make_lock(tmp_path, now=lambda: T0 + timedelta(minutes=61))
    assert "its lease ran out at 2026-11-26T10:00:00Z" in late.acquire()[0]
    assert read_holder(str(tmp_path / "deploy.lock"))["who"] == "alice"


def test_only_its_token_releases_a_lease(tmp_path):
    lease = make_lock(tmp_path, lease_seconds=60, token="restore-token")
    lease.acquire()
    path = str(tmp_path / "deploy.lock")
    assert release_token(path, "another") is False and os.path.exists(path)
    assert release_token(path, "restore-token") is True and not os.path.exists(path)
    assert release_token(path, "restore-token") is False  # already gone: nothing to do


def test_acquire_waiting_waits_for_the_holder_then_names_it_and_the_wait(tmp_path):
    write_holder(tmp_path)
    clock = [0.0]
    lock = make_lock(tmp_path)
    with pytest.raises(LockHeld, match=r"locked by bob .*break_lock=true \(waited 3 s\)"):
        acquire_waiting(lock, 3, clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    assert clock[0] == 3

    def holder_finishes(seconds):
        clock[0] += seconds
        (tmp_path / "deploy.lock").unlink()

    assert acquire_waiting(lock, 3, clock=lambda: clock[0], sleep=holder_finishes) == ([], True)
