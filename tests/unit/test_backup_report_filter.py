"""The backup_report filters: what backups.yml and backup.yml print."""

import pytest
import sourcefile

report = sourcefile.load("plugins/filter/backup_report.py", "backup_report")


def entry(backup_id, status="complete", drill=None, problems=(), checksum_ok=None, **manifest):
    item = {
        "id": backup_id,
        "status": status,
        "problems": list(problems),
        "drill": drill,
        "manifest": {"kind": "scheduled", "compressed_bytes": 3 * 1024 * 1024, "row_counts": {"a": 2, "b": 5},
                     "verified": False, **manifest},
    }  # fmt: skip
    if checksum_ok is not None:
        item["checksum_ok"] = checksum_ok
    return item


def test_backup_table_lines_show_size_rows_verification_and_drill():
    lines = report.backup_table(
        [
            entry("20261126T031500Z-scheduled", verified=True, drill={"status": "passed", "restore_seconds": 3.2}),
            entry("20261125T031500Z-scheduled", checksum_ok=False),
            {"id": "20261124T031500Z-manual", "status": "incomplete", "manifest": None, "drill": None,
             "problems": ["dump file without a manifest: the backup never finished"]},
        ]
    )  # fmt: skip
    assert lines[0].split() == ["id", "kind", "status", "size", "rows", "verified", "drill", "(RTO)"]
    assert lines[1].split() == ["20261126T031500Z-scheduled", "scheduled", "complete", "3.0", "MiB", "7", "yes",
                                "passed", "(3.2", "s)"]  # fmt: skip
    assert lines[2].endswith("! CHECKSUM MISMATCH")
    assert "incomplete" in lines[3] and lines[3].endswith("! dump file without a manifest: the backup never finished")


@pytest.mark.parametrize(
    ("binlog", "text"),
    [
        ({"file": "mysql-bin.000003", "position": 385, "gtid": "0-1-7"}, "mysql-bin.000003:385 (GTID 0-1-7)"),
        ({"file": "binlog.000002", "position": 157, "gtid": None}, "binlog.000002:157"),
        (None, "none (binary logging was off: no point-in-time recovery from this backup)"),
    ],
)
def test_binlog_position(binlog, text):
    assert report.binlog_position(binlog) == text


def test_backup_status_names_each_job_and_the_error_of_a_failed_one():
    lines = report.backup_status(
        {
            "backup": {"last_result": "ok", "last_attempt": "T2", "last_success": "T2"},
            "offsite": {"last_result": "failed", "last_attempt": "T3", "last_success": None, "last_error": "rsync 255"},
        }
    )
    assert lines[0] == "backup   ok      last attempt T2, last success T2"
    assert lines[1] == "binlogs  never ran"
    assert lines[2] == "offsite  failed  last attempt T3, last success never - rsync 255"
    assert report.backup_status({}) == ["no scheduled run yet"]
