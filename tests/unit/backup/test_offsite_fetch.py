"""A server whose backup directory was lost gets its backup back from the offsite store: manifests first,
the choice made on them, then only the chosen dump (and the shipped binlogs for a point in time)."""

import os
import shutil

import pytest
from ansible.module_utils.montaiguillon.backup.catalog import list_backups
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.jobs import job_fetch
from ansible.module_utils.montaiguillon.backup.offsite import choose_offsite, offsite_fetch
from ansible.module_utils.montaiguillon.common.clock import parse_iso
from backup_fakes import rsync_through_a_local_shell
from test_mysql_backup_lib import write_backup

PKG = "ansible.module_utils.montaiguillon.backup"
IDS = ["20261124T031500Z-scheduled", "20261125T031500Z-scheduled", "20261126T031500Z-scheduled"]


@pytest.fixture
def store(tmp_path):
    """The offsite store of one server: three backups, shipped binlogs, a drill record."""
    directory = tmp_path / "store"
    directory.mkdir()
    for day, backup_id in zip((24, 25, 26), IDS, strict=True):
        write_backup(directory, backup_id, content=f"dump {day}".encode(), started_at=f"2026-11-{day}T03:15:00Z")
    (directory / "binlogs").mkdir()
    (directory / "binlogs" / "mysql-bin.000007.age").write_bytes(b"binlog")
    (directory / f"{IDS[0]}.drill.json").write_text("{}")
    return directory


@pytest.fixture
def fetch(tmp_path, monkeypatch):
    """offsite_fetch for real with rsync, the remote shell replaced by a local one."""
    if not shutil.which("rsync"):
        pytest.skip("rsync not installed")
    keys = rsync_through_a_local_shell(monkeypatch, tmp_path, "fetch_command")
    return lambda backup_dir, store, **kwargs: offsite_fetch(str(backup_dir), target=f"u@h:{store}", **keys, **kwargs)


def test_after_a_wipe_the_newest_backup_comes_back_and_nothing_else_but_the_manifests(tmp_path, store, fetch):
    wiped = tmp_path / "backups"
    wiped.mkdir()
    result = fetch(wiped, store)
    assert result["id"] == IDS[2] and result["binlogs"] is False
    entries = {e["id"]: e["status"] for e in list_backups(str(wiped))}
    assert entries == {IDS[2]: "complete", IDS[1]: "missing-file", IDS[0]: "missing-file"}
    assert (wiped / f"{IDS[2]}.sql.zst").read_bytes() == b"dump 26"
    assert not (wiped / "binlogs").exists()


def test_a_point_in_time_brings_the_backup_before_it_and_the_binlogs(tmp_path, store, fetch):
    wiped = tmp_path / "backups"
    wiped.mkdir()
    result = fetch(wiped, store, before=parse_iso("2026-11-25T12:00:00Z"))
    assert result["id"] == IDS[1] and result["binlogs"] is True
    assert (wiped / f"{IDS[1]}.sql.zst").read_bytes() == b"dump 25"
    assert os.listdir(wiped / "binlogs") == ["mysql-bin.000007.age"]
    assert not (wiped / f"{IDS[2]}.sql.zst").exists()


def test_a_file_the_server_still_has_is_never_replaced(tmp_path, store, fetch):
    kept = tmp_path / "backups"
    kept.mkdir()
    write_backup(kept, IDS[2], content=b"the server's own copy", started_at="2026-11-26T03:15:00Z")
    fetch(kept, store)
    assert (kept / f"{IDS[2]}.sql.zst").read_bytes() == b"the server's own copy"


def test_nothing_to_bring_back_is_named(tmp_path, store, fetch):
    wiped = tmp_path / "backups"
    wiped.mkdir()
    with pytest.raises(BackupError, match=r"holds no complete backup taken before 2026-11-20T00:00:00Z; nothing was"):
        fetch(wiped, store, before=parse_iso("2026-11-20T00:00:00Z"))
    with pytest.raises(BackupError, match=r"backup 20261101T000000Z-manual is not a complete backup in the offsite"):
        fetch(wiped, store, backup="20261101T000000Z-manual")
    assert not any(name.endswith(".zst") for name in os.listdir(wiped))


def test_a_drill_fetches_into_a_scratch_directory_and_leaves_the_backup_directory_alone(tmp_path, store, monkeypatch):
    # montaiguillon-backup fetch --into DIR: the offsite copy brought beside the backups, for a drill of it.
    if not shutil.which("rsync"):
        pytest.skip("rsync not installed")
    keys = rsync_through_a_local_shell(monkeypatch, tmp_path, "fetch_command")
    backups, scratch = tmp_path / "backups", tmp_path / "drill-scratch"
    backups.mkdir()
    config = {
        "backup_dir": str(backups),
        "lock_timeout": 5,
        "offsite": {"target": f"u@h:{store}", "ssh_key": keys["ssh_key"], "known_hosts": keys["known_hosts"]},
    }
    report = job_fetch(config, None, into=str(scratch))
    assert report["id"] == IDS[2]
    assert (scratch / f"{IDS[2]}.sql.zst").read_bytes() == b"dump 26"
    # root's alone whatever the modes on the store (here 0755 and 0644)
    assert oct(scratch.stat().st_mode & 0o777) == "0o700"
    assert {oct(f.stat().st_mode & 0o777) for f in scratch.iterdir()} == {"0o600"}
    assert os.listdir(backups) == []


def test_choose_offsite_skips_failed_backups(tmp_path):
    write_backup(tmp_path, IDS[0], started_at="2026-11-24T03:15:00Z")
    write_backup(tmp_path, IDS[1], started_at="2026-11-25T03:15:00Z", status="failed")
    assert choose_offsite(list_backups(str(tmp_path))) == IDS[0]
