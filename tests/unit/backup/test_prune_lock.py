"""Pruning holds the server's change lock: it never removes a backup while a restore or a deploy holds it."""

from ansible.module_utils.montaiguillon.backup.retention import prune_under_lock
from ansible.module_utils.montaiguillon.common.lock import DeployLock, read_holder
from test_mysql_backup_lib import write_backup

POLICY = {"keep_last": 1, "daily": 0, "weekly": 0, "monthly": 0, "snapshots": 0, "snapshot_days": 0}
IDS = ["20261120T031500Z-scheduled", "20261121T031500Z-scheduled", "20261122T031500Z-scheduled"]


def backups(tmp_path):
    directory = tmp_path / "backups"
    directory.mkdir()
    for backup_id in IDS:
        write_backup(directory, backup_id)
    return directory


def prune(directory, lock_file, warnings, wait=0):
    return prune_under_lock(
        str(directory), "app", POLICY, lock_file=lock_file, wait=wait, who="cron", warn=warnings.append
    )


def test_pruning_waits_for_a_restore_then_skips_and_keeps_every_backup(tmp_path):
    directory = backups(tmp_path)
    lock_file = str(tmp_path / "change.lock")
    DeployLock(lock_file, who="ops@ctl", what=IDS[0], action="restoring", lease_seconds=3600).acquire()
    warnings = []
    assert prune(directory, lock_file, warnings) == []
    assert sorted(p.name for p in directory.glob("*.json")) == [f"{i}.json" for i in IDS]
    assert warnings[0].startswith("pruning skipped this time: locked by ops@ctl since ")
    assert f"(restoring {IDS[0]}, lease until " in warnings[0]
    assert read_holder(lock_file)["who"] == "ops@ctl"  # the restore's lock is untouched


def test_pruning_takes_the_free_lock_and_gives_it_back(tmp_path):
    directory = backups(tmp_path)
    lock_file = str(tmp_path / "change.lock")
    warnings = []
    assert sorted(prune(directory, lock_file, warnings)) == IDS[:2]
    assert [p.name for p in directory.glob("*.json")] == [f"{IDS[2]}.json"]
    assert read_holder(lock_file) is None and warnings == []


def test_without_a_lock_file_pruning_runs_as_before(tmp_path):
    directory = backups(tmp_path)
    assert sorted(prune(directory, None, [])) == IDS[:2]
