"""Decisions the backup role used to take in Jinja, now in the library and the module: deploy freshness."""

import datetime as dt
import json

import pytest
from ansible.module_utils.montaiguillon.backup.catalog import backup_freshness, list_backups
from ansible.module_utils.montaiguillon.backup.ids import make_backup_id
from ansible.module_utils.testing import patch_module_args
from test_mysql_backup_lib import write_backup

NOW = dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.UTC)


def stamp(hours_ago):
    return (NOW - dt.timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def backup(directory, hours_ago, kind="scheduled", **changes):
    moment = NOW - dt.timedelta(hours=hours_ago)
    backup_id = make_backup_id(moment, kind)
    times = {"started_at": stamp(hours_ago), "finished_at": stamp(hours_ago)}
    return write_backup(directory, backup_id, kind=kind, **times, **changes)["id"]


def freshness(directory, max_age_hours=26):
    entries = list_backups(str(directory), "app")
    return backup_freshness(entries, backup_dir=str(directory), database="app", max_age_hours=max_age_hours, now=NOW)


def test_a_recent_scheduled_backup_lets_the_deploy_go_on(tmp_path):
    newest = backup(tmp_path, 3)
    backup(tmp_path, 27)
    assert freshness(tmp_path) == {
        "ok": True,
        "newest": newest,
        "age_hours": 3.0,
        "reason": f"newest good backup {newest}, 3.0 h old",
    }


def test_a_stale_backup_refuses_naming_it_and_its_age(tmp_path):
    old = backup(tmp_path, 47.9)
    judged = freshness(tmp_path)
    assert judged["ok"] is False and judged["newest"] == old and judged["age_hours"] == 47.9
    assert judged["reason"] == f"the newest good backup ({old}) is 47.9 h old"


def test_the_limit_is_inclusive(tmp_path):
    backup(tmp_path, 26)
    assert freshness(tmp_path)["ok"] is True
    assert freshness(tmp_path, max_age_hours=25.9)["ok"] is False


def test_snapshots_do_not_count_only_scheduled_and_manual_backups(tmp_path):
    old = backup(tmp_path, 48)
    backup(tmp_path, 1, kind="pre-deploy")
    backup(tmp_path, 2, kind="safety")
    judged = freshness(tmp_path)
    assert judged["ok"] is False and judged["newest"] == old
    manual = backup(tmp_path, 5, kind="manual")
    assert freshness(tmp_path)["newest"] == manual and freshness(tmp_path)["ok"] is True


def test_a_broken_newer_backup_is_skipped(tmp_path):
    good = backup(tmp_path, 10)
    broken = backup(tmp_path, 1)
    (tmp_path / f"{broken}.sql.zst").unlink()
    assert freshness(tmp_path)["newest"] == good


def test_no_good_backup_names_the_database_and_the_directory(tmp_path):
    empty = tmp_path / "empty"
    judged = freshness(empty)
    assert judged == {
        "ok": False,
        "newest": None,
        "age_hours": None,
        "reason": f"there is no good backup of app in {empty}",
    }


@pytest.fixture
def mod(load_module):
    return load_module("mysql_backup")


def test_the_module_reports_freshness_only_when_asked(mod, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mod, "utcnow", lambda: NOW)
    newest = backup(tmp_path, 30)

    def listing(**extra):
        args = {"state": "list", "backup_dir": str(tmp_path), "database": "app", **extra}
        with patch_module_args(args), pytest.raises(SystemExit):
            mod.main()
        return json.loads(capsys.readouterr().out)

    assert "freshness" not in listing()
    result = listing(max_age_hours=26)
    assert result["changed"] is False
    assert result["freshness"] == {
        "ok": False,
        "newest": newest,
        "age_hours": 30.0,
        "reason": f"the newest good backup ({newest}) is 30.0 h old",
    }
    assert listing(max_age_hours=48)["freshness"]["ok"] is True
