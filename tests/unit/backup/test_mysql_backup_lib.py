"""Pure logic of mysql_backup_lib: ids, retention, manifests, files, listing, the dump scanner."""

import datetime as dt
import hashlib
import json
import os

import pytest
from ansible.module_utils.montaiguillon.backup.binlogs import binlog_sequence, parse_stop_datetime
from ansible.module_utils.montaiguillon.backup.catalog import (
    backup_dir_lock,
    backup_freshness,
    check_free_space,
    latest_good,
    list_backups,
    newest_dump_size,
    public_entry,
    remove_backup,
    remove_stale_partials,
    verify_backup_file,
)
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.ids import id_sort_key, make_backup_id, parse_backup_id
from ansible.module_utils.montaiguillon.backup.manifest import build_manifest, compare_row_counts, validate_manifest
from ansible.module_utils.montaiguillon.backup.mysql import option_file, quote_identifier
from ansible.module_utils.montaiguillon.backup.pacing import Pacer, parse_rate
from ansible.module_utils.montaiguillon.backup.retention import DEFAULT_RETENTION, plan_retention, select_retention
from ansible.module_utils.montaiguillon.backup.scanner import DumpScanner, check_dump, dump_flags
from ansible.module_utils.montaiguillon.common.clock import iso
from backup_fakes import MARIADB_COUNTS, MARIADB_DUMP, MYSQL_COUNTS, MYSQL_DUMP

UTC = dt.UTC


def at(day, hour=3, month=1, year=2026):
    return dt.datetime(year, month, 1, hour, tzinfo=UTC) + dt.timedelta(days=day - 1)


def bid(moment, kind="scheduled"):
    return make_backup_id(moment, kind)


def good_manifest(backup_id="20260105T030000Z-scheduled", **changes):
    manifest = {
        "format": 1,
        "id": backup_id,
        "status": "complete",
        "database": "app",
        "file": f"{backup_id}.sql.zst",
        "kind": parse_backup_id(backup_id)[1],
        "label": "",
        "started_at": "2026-01-05T03:00:00Z",
        "finished_at": "2026-01-05T03:00:02Z",
        "compression": "zstd",
        "sha256": "0" * 64,
        "compressed_bytes": 10,
        "uncompressed_bytes": 2000,
        "row_counts": {"users": 3},
        "binlog": {"file": "mysql-bin.000001", "position": 4, "gtid": "0-1-1"},
        "verified": False,
    }
    manifest.update(changes)
    return manifest


def write_backup(directory, backup_id, content=b"dump-bytes", database="app", **changes):
    """A complete backup on disk whose manifest matches its file."""
    name = f"{backup_id}.sql.zst"
    (directory / name).write_bytes(content)
    manifest = good_manifest(
        backup_id,
        database=database,
        file=name,
        sha256=hashlib.sha256(content).hexdigest(),
        compressed_bytes=len(content),
        **changes,
    )
    (directory / f"{backup_id}.json").write_text(json.dumps(manifest))
    return manifest


# ---- ids ------------------------------------------------------------------


def test_backup_id_is_utc_timestamp_and_kind():
    moment = dt.datetime(2026, 11, 26, 10, 11, 8, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert make_backup_id(moment, "pre-deploy") == "20261126T091108Z-pre-deploy"


def test_backup_id_gets_a_sequence_when_the_second_is_taken():
    taken = {"20261126T091108Z-manual", "20261126T091108Z-manual-2"}
    moment = dt.datetime(2026, 11, 26, 9, 11, 8, tzinfo=UTC)
    assert make_backup_id(moment, "manual", taken.__contains__) == "20261126T091108Z-manual-3"


def test_backup_id_refuses_unknown_kind():
    with pytest.raises(ValueError):
        make_backup_id(at(1), "hourly")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20261126T091108Z-manual", (dt.datetime(2026, 11, 26, 9, 11, 8, tzinfo=UTC), "manual", 1)),
        ("20261126T091108Z-pre-deploy-2", (dt.datetime(2026, 11, 26, 9, 11, 8, tzinfo=UTC), "pre-deploy", 2)),
        ("20261126T091108Z-hourly", None),
        ("20261126-manual", None),
        ("../20261126T091108Z-manual", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_backup_id(text, expected):
    assert parse_backup_id(text) == expected


def test_ids_sort_by_time_then_sequence():
    ids = [
        "20260102T000000Z-manual-2",
        "20260102T000000Z-manual",
        "20260101T235959Z-safety",
        "20260102T000000Z-manual-10",
    ]
    assert sorted(ids, key=id_sort_key) == [
        "20260101T235959Z-safety",
        "20260102T000000Z-manual",
        "20260102T000000Z-manual-2",
        "20260102T000000Z-manual-10",
    ]


# ---- retention ------------------------------------------------------------


def daily(days, hour=3):
    """One backup a day for ``days`` days from 2026-01-01."""
    return [(bid(at(d, hour)), at(d, hour)) for d in range(1, days + 1)]


NONE = {"keep_last": 0, "daily": 0, "weekly": 0, "monthly": 0}


@pytest.mark.parametrize(
    ("backups", "policy", "protect", "expected"),
    [
        pytest.param([], DEFAULT_RETENTION, (), set(), id="nothing-to-keep"),
        pytest.param(daily(10), {**NONE, "daily": 7}, (), {bid(at(d)) for d in range(4, 11)}, id="daily-7-of-10"),
        pytest.param(
            [(bid(at(1, h)), at(1, h)) for h in (1, 5, 9)] + [(bid(at(2, h)), at(2, h)) for h in (2, 8)],
            {**NONE, "daily": 7},
            (),
            {bid(at(1, 9)), bid(at(2, 8))},
            id="newest-of-each-day",
        ),
        pytest.param(
            [(bid(at(d)), at(d)) for d in (1, 5, 9, 20)],
            {**NONE, "daily": 2},
            (),
            {bid(at(9)), bid(at(20))},
            id="days-without-backup-do-not-count",
        ),
        pytest.param(
            daily(31),
            {**NONE, "weekly": 4},
            (),
            # ISO weeks of January 2026 end on Sundays 4, 11, 18, 25; the newest of the
            # 4 most recent weeks: Sat 31 (week 5), Sun 25, Sun 18, Sun 11.
            {bid(at(31)), bid(at(25)), bid(at(18)), bid(at(11))},
            id="weekly-4",
        ),
        pytest.param(
            [(bid(at(d)), at(d)) for d in range(1, 200, 3)],
            {**NONE, "monthly": 3},
            (),
            {bid(at(199)), bid(at(181)), bid(at(151))},
            id="monthly-3-newest-of-each-month",
        ),
        pytest.param(daily(10), {**NONE, "keep_last": 3}, (), {bid(at(d)) for d in (8, 9, 10)}, id="keep-last-3"),
        pytest.param(daily(10), NONE, (), set(), id="all-zero-keeps-nothing"),
        pytest.param(daily(10), NONE, (bid(at(2)),), {bid(at(2))}, id="protected-is-kept"),
        pytest.param(daily(3), NONE, ("20990101T000000Z-manual",), set(), id="unknown-protected-ignored"),
        pytest.param(
            daily(10),
            {"keep_last": 1, "daily": 2, "weekly": 2, "monthly": 1},
            (),
            # keep_last: 10; daily: 10, 9; weekly (weeks end Sun 4): 10 and 4; monthly: 10
            {bid(at(10)), bid(at(9)), bid(at(4))},
            id="union-of-rules",
        ),
        pytest.param(
            [
                (
                    bid(dt.datetime(2026, 1, 2, 0, 30, tzinfo=UTC)),
                    dt.datetime(2026, 1, 2, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))),
                ),
                (
                    bid(dt.datetime(2026, 1, 1, 23, 30, tzinfo=UTC)),
                    dt.datetime(2026, 1, 2, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))),
                ),
            ],
            {**NONE, "daily": 2},
            (),
            # in UTC these are two different days, so both are kept
            {bid(dt.datetime(2026, 1, 2, 0, 30, tzinfo=UTC)), bid(dt.datetime(2026, 1, 1, 23, 30, tzinfo=UTC))},
            id="days-are-utc-days",
        ),
    ],
)
def test_select_retention(backups, policy, protect, expected):
    assert select_retention(backups, policy, protect) == expected


def test_default_policy_over_a_year_keeps_a_bounded_set():
    backups = daily(365)
    keep = select_retention(backups, DEFAULT_RETENTION)
    # 7 daily (the last 7 days) + at most 4 weekly + 6 monthly, overlapping at the newest.
    assert {bid(at(d)) for d in range(359, 366)} <= keep
    assert len(keep) <= 3 + 7 + 4 + 6
    assert bid(at(1)) not in keep
    months = {parse_backup_id(k)[0].month for k in keep}
    assert len(months) == 6


def entry(backup_id, database="app", status="complete", verified=False):
    return {
        "id": backup_id,
        "taken_at": parse_backup_id(backup_id)[0],
        "status": status,
        "manifest": {"database": database, "verified": verified},
    }


def test_plan_retention_never_prunes_the_newest_or_the_newest_verified():
    entries = [entry(bid(at(d))) for d in range(10, 0, -1)]
    entries[5] = entry(bid(at(5)), verified=True)
    keep, prune = plan_retention(entries, NONE, "app")
    assert keep == [bid(at(10)), bid(at(5))]
    assert len(prune) == 8
    assert prune[0] == bid(at(9))  # newest first


def test_plan_retention_only_touches_complete_backups_of_the_database():
    entries = [
        entry(bid(at(5))),
        entry(bid(at(4)), database="other"),
        entry(bid(at(3)), status="missing-file"),
        entry(bid(at(2))),
    ]
    keep, prune = plan_retention(entries, NONE, "app")
    assert keep == [bid(at(5))]
    assert prune == [bid(at(2))]


def test_plan_retention_in_check_mode_counts_the_planned_backup_as_newest():
    entries = [entry(bid(at(d))) for d in (3, 2, 1)]
    planned = (bid(at(4)), at(4))
    keep, prune = plan_retention(entries, {**NONE, "keep_last": 2}, "app", extra=planned)
    assert keep == [bid(at(4)), bid(at(3))]
    assert prune == [bid(at(2)), bid(at(1))]


def test_snapshots_have_their_own_bounded_pool():
    scheduled = [entry(bid(at(d))) for d in (3, 2, 1)]
    snapshots = [entry(bid(at(3, hour=h), "pre-deploy")) for h in range(4, 12)]
    snapshots.append(entry(bid(at(3, hour=12), "safety")))
    policy = {**DEFAULT_RETENTION, "snapshots": 3}
    keep, prune = plan_retention(scheduled + snapshots, policy, "app")
    assert {bid(at(d)) for d in (3, 2, 1)} <= set(keep)  # nine snapshots crowd out no scheduled backup
    kept_snapshots = [k for k in keep if parse_backup_id(k)[1] != "scheduled"]
    assert kept_snapshots == [
        bid(at(3, hour=12), "safety"),
        bid(at(3, hour=11), "pre-deploy"),
        bid(at(3, hour=10), "pre-deploy"),
    ]
    assert len(prune) == 6


def test_old_snapshots_go_even_under_the_count_but_the_newest_stays():
    entries = [entry(bid(at(20))), entry(bid(at(1, hour=4), "pre-deploy")), entry(bid(at(2, hour=4), "pre-deploy"))]
    keep, prune = plan_retention(entries, {**DEFAULT_RETENTION, "snapshot_days": 7}, "app")
    assert keep == [bid(at(20)), bid(at(2, hour=4), "pre-deploy")]
    assert prune == [bid(at(1, hour=4), "pre-deploy")]


def test_a_month_of_ten_deploys_a_day_never_blocks_a_deploy_nor_prunes_the_ladder():
    """Simulated clock: a scheduled backup at 03:00, ten prod deploys a day (each a pre-deploy snapshot
    then retention), for 31 days. The gate always passes; the ladder keeps what it would without deploys."""
    policy = dict(DEFAULT_RETENTION)
    present = []

    def take(moment, kind):
        present.append(entry(bid(moment, kind)))
        keep, _ = plan_retention(present, policy, "app", now=moment)
        present[:] = [e for e in present if e["id"] in keep]

    for day in range(1, 32):
        take(at(day, hour=3), "scheduled")
        for hour in range(8, 18):
            moment = at(day, hour=hour)
            newest_first = sorted(present, key=lambda e: e["taken_at"], reverse=True)
            for e in newest_first:
                e["manifest"].update(kind=parse_backup_id(e["id"])[1], finished_at=iso(e["taken_at"]))
            gate = backup_freshness(newest_first, backup_dir="/b", database="app", max_age_hours=26, now=moment)
            assert gate["ok"], (day, hour, gate["reason"])
            take(moment, "pre-deploy")
    ladder_alone = select_retention([(bid(at(d)), at(d)) for d in range(1, 32)], policy)
    assert {e["id"] for e in present if "scheduled" in e["id"]} == ladder_alone
    assert sum("pre-deploy" in e["id"] for e in present) == policy["snapshots"]


def test_a_backup_needs_room_for_the_last_one_and_a_margin(tmp_path):
    (tmp_path / "20260105T030000Z-scheduled.sql.zst.age").write_bytes(b"x" * 1000)
    assert check_free_space(str(tmp_path), free_bytes=1500) == (1500, 1500)
    with pytest.raises(BackupError, match=r"not enough room in .*: 1499 bytes free, the last backup took 1000"):
        check_free_space(str(tmp_path), free_bytes=1499)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20260105T030000Z-scheduled.sql.zst.age"]


def test_the_newest_dump_sets_the_size_and_a_first_backup_needs_the_minimum(tmp_path):
    assert check_free_space(str(tmp_path), min_size_bytes=1024, free_bytes=1024) == (1024, 1024)
    old, new = tmp_path / "20260104T030000Z-scheduled.sql.gz", tmp_path / "20260105T030000Z-scheduled.sql.gz"
    old.write_bytes(b"x" * 5000)
    new.write_bytes(b"x" * 100)
    os.utime(old, (1_000_000, 1_000_000))
    assert newest_dump_size(str(tmp_path)) == 100


# ---- files ----------------------------------------------------------------


def test_verify_backup_file_detects_one_flipped_byte(tmp_path):
    manifest = write_backup(tmp_path, "20260105T030000Z-scheduled", content=b"A" * 5000)
    path = tmp_path / manifest["file"]
    assert verify_backup_file(str(path), manifest) == (True, manifest["sha256"], None)
    data = bytearray(path.read_bytes())
    data[2500] ^= 0x01
    path.write_bytes(bytes(data))
    ok, actual, message = verify_backup_file(str(path), manifest)
    assert not ok
    assert actual == hashlib.sha256(bytes(data)).hexdigest()
    assert message == (
        f"backup 20260105T030000Z-scheduled is corrupt: sha256 mismatch (expected {manifest['sha256']},"
        f" got {actual}); nothing was changed"
    )


def test_verify_backup_file_reports_a_missing_file(tmp_path):
    ok, actual, message = verify_backup_file(str(tmp_path / "nope.sql.zst"), good_manifest())
    assert (ok, actual) == (False, None)
    assert "missing its dump file" in message


def test_remove_stale_partials(tmp_path):
    (tmp_path / "20260105T030000Z-scheduled.sql.zst.partial").write_bytes(b"x")
    (tmp_path / ".x.json.abc.partial").write_bytes(b"x")
    (tmp_path / "keep.json").write_text("{}")
    assert sorted(remove_stale_partials(str(tmp_path))) == [
        ".x.json.abc.partial",
        "20260105T030000Z-scheduled.sql.zst.partial",
    ]
    assert os.listdir(tmp_path) == ["keep.json"]


def test_backup_dir_lock_times_out_while_another_holder_has_it(tmp_path):
    held = backup_dir_lock(str(tmp_path))
    second = backup_dir_lock(str(tmp_path), timeout=0, sleep=lambda _s: None)
    with held, pytest.raises(BackupError, match="still holds"), second:
        pass
    with backup_dir_lock(str(tmp_path), timeout=0):
        pass


# ---- manifests ------------------------------------------------------------


def test_good_manifest_validates():
    assert validate_manifest(good_manifest(), "20260105T030000Z-scheduled") == []


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"sha256": None}, "missing sha256"),
        ({"sha256": "ABC"}, "sha256 is not 64"),
        ({"compressed_bytes": "10"}, "compressed_bytes should be int"),
        ({"compressed_bytes": True}, "compressed_bytes should be int"),
        ({"format": 2}, "unsupported manifest format"),
        ({"id": "garbage"}, "bad id"),
        ({"file": "../../etc/passwd.sql.zst"}, "bad file name"),
        ({"file": "20260101T000000Z-manual.sql.zst"}, "bad file name"),
        ({"compression": "xz"}, "unknown compression"),
        ({"kind": "hourly"}, "unknown kind"),
        ({"row_counts": {"users": -1}}, "bad row count"),
        ({"started_at": "yesterday"}, "started_at is not an ISO timestamp"),
        ({"binlog": {"file": "mysql-bin.000001"}}, "binlog should be null"),
        ({"uncompressed_bytes": -5}, "negative size"),
    ],
)
def test_manifest_validation_finds(changes, problem):
    problems = validate_manifest(good_manifest(**changes))
    assert any(problem in p for p in problems), problems


def test_manifest_validation_checks_id_against_file_name():
    assert "does not match file name" in validate_manifest(good_manifest(), "20260106T030000Z-scheduled")[0]


def test_manifest_validation_refuses_non_objects():
    assert validate_manifest(["x"]) == ["manifest is not a JSON object"]


def test_build_manifest_from_scan_validates():
    scan = DumpScanner()
    scan.feed(MARIADB_DUMP)
    scan.finish()
    start = dt.datetime(2026, 1, 5, 3, tzinfo=UTC)
    manifest = build_manifest(
        backup_id="20260105T030000Z-scheduled",
        database="app",
        file_name="20260105T030000Z-scheduled.sql.zst",
        kind="scheduled",
        label="r42",
        started=start,
        finished=start + dt.timedelta(seconds=2),
        duration=2.0004,
        compression="zstd",
        encryption=None,
        sha256="a" * 64,
        compressed_bytes=99,
        scan=scan,
        server={"image": "montaiguillon/mariadb:10.11", "version": "10.11.19"},
        tool={"name": "mariadb-dump", "flags": ["--single-transaction"]},
    )
    assert validate_manifest(manifest, "20260105T030000Z-scheduled") == []
    assert manifest["binlog"] == {"file": "mysql-bin.000001", "position": 2218, "gtid": "0-1-8"}
    assert manifest["row_counts"] == MARIADB_COUNTS
    assert manifest["uncompressed_bytes"] == len(MARIADB_DUMP)
    assert (manifest["status"], manifest["verified"], manifest["label"]) == ("complete", False, "r42")
    assert manifest["duration_seconds"] == 2.0


def test_compare_row_counts():
    assert compare_row_counts({"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 9}) == []
    assert compare_row_counts({"a": 1, "b": 2}, {"a": 1}) == [{"table": "b", "expected": 2, "actual": None}]


# ---- listing --------------------------------------------------------------


def test_list_backups_reports_every_state_newest_first(tmp_path):
    write_backup(tmp_path, "20260101T030000Z-scheduled")
    write_backup(tmp_path, "20260102T030000Z-scheduled", verified=True)
    (tmp_path / "20260102T030000Z-scheduled.drill.json").write_text(json.dumps({"status": "passed"}))
    missing = write_backup(tmp_path, "20260103T030000Z-scheduled")
    os.unlink(tmp_path / missing["file"])
    write_backup(tmp_path, "20260104T030000Z-manual")
    (tmp_path / "20260104T030000Z-manual.sql.zst").write_bytes(b"short")
    (tmp_path / "20260105T030000Z-manual.sql.zst").write_bytes(b"orphan")
    (tmp_path / "20260106T030000Z-manual.json").write_text("{not json")
    write_backup(tmp_path, "20260107T030000Z-manual", database="other")
    (tmp_path / "20260108T030000Z-manual.sql.zst.partial").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("ignored")

    entries = list_backups(str(tmp_path))
    assert [(e["id"], e["status"]) for e in entries] == [
        ("20260107T030000Z-manual", "complete"),
        ("20260106T030000Z-manual", "invalid"),
        ("20260105T030000Z-manual", "incomplete"),
        ("20260104T030000Z-manual", "size-mismatch"),
        ("20260103T030000Z-scheduled", "missing-file"),
        ("20260102T030000Z-scheduled", "complete"),
        ("20260101T030000Z-scheduled", "complete"),
    ]
    assert entries[5]["drill"] == {"status": "passed"}
    assert entries[5]["path"] == str(tmp_path / "20260102T030000Z-scheduled.sql.zst")
    assert latest_good(entries)["id"] == "20260107T030000Z-manual"

    app_only = list_backups(str(tmp_path), database="app")
    assert [e["id"] for e in app_only] == [
        "20260104T030000Z-manual",
        "20260103T030000Z-scheduled",
        "20260102T030000Z-scheduled",
        "20260101T030000Z-scheduled",
    ]
    assert latest_good(app_only)["id"] == "20260102T030000Z-scheduled"
    assert public_entry(app_only[0])["taken_at"] == "2026-01-04T03:00:00Z"


def test_list_backups_of_a_missing_dir_is_empty(tmp_path):
    assert list_backups(str(tmp_path / "none")) == []
    assert latest_good([]) is None


def test_remove_backup_deletes_dump_manifest_and_drill(tmp_path):
    write_backup(tmp_path, "20260101T030000Z-scheduled")
    (tmp_path / "20260101T030000Z-scheduled.drill.json").write_text("{}")
    write_backup(tmp_path, "20260102T030000Z-scheduled")
    remove_backup(str(tmp_path), {"id": "20260101T030000Z-scheduled"})
    assert sorted(os.listdir(tmp_path)) == ["20260102T030000Z-scheduled.json", "20260102T030000Z-scheduled.sql.zst"]


# ---- dump scanner ---------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1000, len(MARIADB_DUMP)])
def test_scanner_reads_mariadb_dump_in_any_chunking(chunk):
    scan = DumpScanner()
    for start in range(0, len(MARIADB_DUMP), chunk):
        scan.feed(MARIADB_DUMP[start : start + chunk])
    scan.finish()
    assert scan.row_counts == MARIADB_COUNTS
    assert (scan.binlog_file, scan.binlog_position, scan.gtid) == ("mysql-bin.000001", 2218, "0-1-8")
    assert scan.server_version == "10.11.19-MariaDB-0+deb12u1-log"
    assert scan.trailer_ok
    assert scan.total_bytes == len(MARIADB_DUMP)


@pytest.mark.parametrize("chunk", [1, 5, 4096])
def test_scanner_reads_mysql_single_line_inserts(chunk):
    scan = DumpScanner()
    for start in range(0, len(MYSQL_DUMP), chunk):
        scan.feed(MYSQL_DUMP[start : start + chunk])
    scan.finish()
    assert scan.row_counts == MYSQL_COUNTS
    assert (scan.binlog_file, scan.binlog_position) == ("binlog.000007", 157)
    assert scan.gtid == "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-23"
    assert scan.trailer_ok


@pytest.mark.parametrize(
    "dump",
    [
        MARIADB_DUMP[: MARIADB_DUMP.index(b"-- Dump completed")],
        MARIADB_DUMP[: len(MARIADB_DUMP) // 2],
        b"",
        MARIADB_DUMP + b"INSERT INTO `x` VALUES (1);\n",
    ],
    ids=["no-trailer", "cut-in-half", "empty", "data-after-trailer"],
)
def test_scanner_notices_a_dump_that_does_not_end_with_its_trailer(dump):
    scan = DumpScanner()
    scan.feed(dump)
    assert not scan.finish().trailer_ok


def test_scanner_without_binlog_position():
    scan = DumpScanner()
    scan.feed(b"CREATE TABLE `t` (\n) ;\n-- Dump completed on x\n")
    scan.finish()
    assert (scan.binlog_file, scan.binlog_position, scan.gtid) == (None, None, None)
    assert scan.row_counts == {"t": 0}


def scanned(dump):
    scan = DumpScanner()
    scan.feed(dump)
    return scan.finish()


@pytest.mark.parametrize(
    ("exit_code", "dump", "min_size", "expected"),
    [
        (0, MARIADB_DUMP, 100, None),
        (2, MARIADB_DUMP, 100, "mariadb-dump exited with code 2: Access denied"),
        (0, b"-- Dump completed on x\n", 1024, "suspiciously small (23 bytes < min_size_bytes 1024)"),
        (0, MARIADB_DUMP[:-30], 100, "does not end with the '-- Dump completed' trailer"),
    ],
    ids=["good", "exit-code", "too-small", "no-trailer"],
)
def test_check_dump(exit_code, dump, min_size, expected):
    problem = check_dump(scanned(dump), exit_code, min_size, "mariadb-dump", "Access denied\n")
    if expected is None:
        assert problem is None
    else:
        assert expected in problem


@pytest.mark.parametrize(
    ("version", "log_bin", "expected"),
    [
        ("10.11.19-MariaDB-0+deb12u1-log", True, ["--master-data=2", "--gtid"]),
        ("10.11.19-MariaDB", False, []),
        ("8.0.36", True, ["--source-data=2"]),
        ("8.4.0", True, ["--source-data=2"]),
        ("8.0.25", True, ["--master-data=2"]),
        ("5.7.44-log", True, ["--master-data=2"]),
    ],
)
def test_dump_flags(version, log_bin, expected):
    flags = dump_flags(version, log_bin)
    assert flags[:6] == ["--single-transaction", "--quick", "--routines", "--triggers", "--events", "--hex-blob"]
    assert [f for f in flags if "data=" in f or f == "--gtid"] == expected
    assert not any("password" in f for f in flags)


# ---- point in time --------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "server", "shipped", "expected"),
    [
        ("b.000001", ["b.000001", "b.000002"], [], [("b.000001", "server"), ("b.000002", "server")]),
        ("b.000002", ["b.000003"], ["b.000001", "b.000002"], [("b.000002", "shipped"), ("b.000003", "server")]),
        ("b.000002", ["b.000002", "b.000003"], ["b.000002"], [("b.000002", "server"), ("b.000003", "server")]),
        ("b.000002", ["b.000002", "other.000003"], [], [("b.000002", "server")]),
    ],
    ids=["server", "shipped-fill-purged", "server-wins", "other-prefix-ignored"],
)
def test_binlog_sequence(start, server, shipped, expected):
    assert binlog_sequence(start, server, shipped) == expected


def test_binlog_sequence_refuses_a_gap():
    with pytest.raises(BackupError, match=r"binlog gap between b\.000002 and b\.000004"):
        binlog_sequence("b.000002", ["b.000002", "b.000004"], [])


def test_binlog_sequence_needs_the_start_file():
    with pytest.raises(BackupError, match="neither on the server nor in the shipped copies"):
        binlog_sequence("b.000001", ["b.000002"], [])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-26 09:30:00", dt.datetime(2026, 11, 26, 9, 30, tzinfo=UTC)),
        ("2026-11-26T09:30:00Z", dt.datetime(2026, 11, 26, 9, 30, tzinfo=UTC)),
        ("2026-11-26T10:30:00+01:00", dt.datetime(2026, 11, 26, 9, 30, tzinfo=UTC)),
    ],
)
def test_parse_stop_datetime(text, expected):
    assert parse_stop_datetime(text) == expected


def test_parse_stop_datetime_refuses_garbage():
    with pytest.raises(BackupError, match="not an ISO date-time"):
        parse_stop_datetime("last tuesday")


def test_option_file_quotes_every_character():
    text = option_file("root", 'a"b\\c\nd').decode()
    assert text == '[client]\nuser="root"\npassword="a\\"b\\\\c\\nd"\n'


def test_quote_identifier():
    assert quote_identifier("we`ird") == "`we``ird`"


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("0", 0),
        ("", 0),
        (None, 0),
        ("20M", 20 * 1024**2),
        ("512k", 512 * 1024),
        ("1.5G", int(1.5 * 1024**3)),
        ("20MiB/s", 20 * 1024**2),
        (" 100000 ", 100000),
        (20971520, 20971520),
    ],
)
def test_parse_rate(text, rate):
    assert parse_rate(text) == rate


def test_the_pacer_holds_the_average_rate_and_never_sleeps_when_behind():
    now = [100.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    pace = Pacer(1000, clock=lambda: now[0], sleep=sleep)
    pace(500)  # half a second of budget, used at once: wait for it
    assert slept == [0.5]
    now[0] += 2.0  # the source was slow: two seconds passed without data
    pace(500)
    assert slept == [0.5]  # behind the rate: no sleep
    assert pace.slept == 0.5
    unlimited = Pacer(0, clock=lambda: now[0], sleep=sleep)
    unlimited(10**9)
    assert slept == [0.5]
