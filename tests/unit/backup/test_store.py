"""The offsite store prunes itself, by its own policy (montaiguillon/backup/store.py)."""

import datetime
import io
import json
import os
from contextlib import redirect_stdout

from ansible.module_utils.montaiguillon.backup import store

NOW = datetime.datetime(2026, 12, 3, 12, 0, tzinfo=datetime.UTC)


def backup(directory, day_offset, kind="scheduled", *, manifest=True, drill=False):
    """Write one backup's files, taken ``day_offset`` days before NOW; its id."""
    moment = NOW - datetime.timedelta(days=day_offset)
    identifier = f"{moment:%Y%m%dT%H%M%SZ}-{kind}"
    (directory / f"{identifier}.sql.zst.age").write_bytes(b"ciphertext")
    if manifest:
        (directory / f"{identifier}.json").write_text("{}")
    if drill:
        (directory / f"{identifier}.drill.json").write_text("{}")
    return identifier


def binlog(directory, name, day_offset):
    path = directory / "binlogs" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"events")
    stamp = (NOW - datetime.timedelta(days=day_offset)).timestamp()
    os.utime(path, (stamp, stamp))
    return path


def test_files_belong_to_their_backup_and_strangers_to_none():
    assert store.backup_id("20261126T031500Z-scheduled.sql.zst.age") == "20261126T031500Z-scheduled"
    assert store.backup_id("20261126T031500Z-pre-deploy-2.json") == "20261126T031500Z-pre-deploy-2"
    assert store.backup_id("20261126T031500Z-safety.drill.json") == "20261126T031500Z-safety"
    assert store.backup_id("status.json") is None
    assert store.backup_id("20261126T031500Z-scheduled") is None


def test_a_month_of_daily_backups_keeps_the_window_and_prunes_the_rest(tmp_path):
    ids = [backup(tmp_path, day, drill=day % 7 == 0) for day in range(60)]
    removed = store.prune_client(tmp_path, now=NOW, keep_days=35, keep_min=7)
    left = {store.backup_id(name) for name in os.listdir(tmp_path)}
    assert left == set(ids[:36])  # 0..35 days old
    assert len(removed) == 24 * 2 + 3  # dump + manifest of days 36..59, drill records of days 42, 49, 56


def test_the_newest_complete_backups_survive_a_server_that_stopped_sending(tmp_path):
    complete = [backup(tmp_path, day) for day in range(100, 110)]
    incomplete = backup(tmp_path, 99, manifest=False)
    store.prune_client(tmp_path, now=NOW, keep_days=35, keep_min=3)
    left = {store.backup_id(name) for name in os.listdir(tmp_path)}
    assert left == set(complete[:3])
    assert incomplete not in left  # a dump without its manifest does not count as a good copy


def test_binlogs_stay_while_the_oldest_kept_backup_may_need_them(tmp_path):
    backup(tmp_path, 10)
    backup(tmp_path, 50)
    old = binlog(tmp_path, "mysql-bin.000001", 20)
    needed = binlog(tmp_path, "mysql-bin.000002", 9)
    store.prune_client(tmp_path, now=NOW, keep_days=14, keep_min=1)
    assert not old.exists()
    assert needed.exists()


def test_a_dry_run_removes_nothing_and_says_what_would_go(tmp_path):
    client = tmp_path / "site.com"
    client.mkdir()
    old = backup(client, 90)
    backup(client, 1)
    out = io.StringIO()
    with redirect_stdout(out):
        assert store.main(["--root", str(tmp_path), "--keep-days", "30", "--keep-min", "1", "--dry-run"], now=NOW) == 0
    report = json.loads(out.getvalue())
    assert report == {"dry_run": True, "removed": {"site.com": [f"{old}.json", f"{old}.sql.zst.age"]}}
    assert (client / f"{old}.json").exists()


def test_stale_transfer_leftovers_go_fresh_ones_stay(tmp_path):
    backup(tmp_path, 1)
    stale = tmp_path / ".~tmp~"
    stale.mkdir()
    fresh = tmp_path / "x.partial"
    fresh.write_bytes(b"")
    two_days_ago = (NOW - datetime.timedelta(days=2)).timestamp()
    os.utime(stale, (two_days_ago, two_days_ago))
    os.utime(fresh, (NOW.timestamp(), NOW.timestamp()))
    store.prune_client(tmp_path, now=NOW, keep_days=30, keep_min=1)
    assert not stale.exists()
    assert fresh.exists()
