"""mysql_restore: checksum refusal, restore, point-in-time replay, drills (fake engine and database)."""

import datetime as dt
import gzip
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from ansible.module_utils.montaiguillon.backup.catalog import backup_dir_lock, list_backups
from ansible.module_utils.montaiguillon.backup.drill import _wait_for_server, record_drill
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.manifest import validate_manifest
from ansible.module_utils.montaiguillon.backup.restore import decompress_commands, load_backup
from ansible.module_utils.montaiguillon.backup.take import run_backup
from ansible.module_utils.montaiguillon.common.clock import iso, parse_iso
from ansible.module_utils.testing import patch_module_args
from backup_fakes import LOGIN, MARIADB_COUNTS, MARIADB_DUMP, PASSWORD, FakeAPI, FakeConn, pad_dump
from test_mysql_backup_lib import write_backup

PKG = "ansible.module_utils.montaiguillon.backup"

DUMP = pad_dump(MARIADB_DUMP, 50_000)


@pytest.fixture
def mod(load_module):
    return load_module("mysql_restore")


@pytest.fixture
def world(mod, monkeypatch, tmp_path):
    class World:
        api = FakeAPI(dump=DUMP)
        conn = FakeConn()
        backup_dir = tmp_path / "backups"

    World.backup_dir.mkdir()
    monkeypatch.setattr(mod, "docker_api", lambda docker_host=None: World.api)
    monkeypatch.setattr(mod, "connect", lambda login, database=None: World.conn)
    monkeypatch.setattr(f"{PKG}.mysql.connect", lambda login, database=None: World.conn)
    return World


def backup(world, kind="scheduled"):
    with backup_dir_lock(str(world.backup_dir)):
        return run_backup(
            world.api,
            LOGIN,
            container="mysql",
            database="app",
            backup_dir=str(world.backup_dir),
            kind=kind,
            compression="gzip",
        )


def flip_byte(path):
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0x01
    Path(path).write_bytes(bytes(data))


def run(mod, capsys, **args):
    with patch_module_args(args), pytest.raises(SystemExit):
        mod.main()
    return json.loads(capsys.readouterr().out)


def args(world, **extra):
    return {"backup_dir": str(world.backup_dir), "login_password": PASSWORD, **extra}


# ---- choosing and verifying ------------------------------------------------


def test_a_flipped_byte_is_refused_and_nothing_is_run(mod, world, capsys):
    manifest = backup(world)
    flip_byte(manifest["path"])
    commands = len(world.api.commands)
    for mode in ("restore", "drill", "verify"):
        result = run(mod, capsys, **args(world, backup=manifest["id"], mode=mode))
        assert result["failed"] is True
        assert result["msg"].startswith(
            f"backup {manifest['id']} is corrupt: sha256 mismatch (expected {manifest['sha256']}, got "
        )
        assert result["msg"].endswith("); nothing was changed")
    assert world.api.commands[commands:] == []
    assert world.conn.queries == [q for q in world.conn.queries if not q[0].startswith(("DROP", "CREATE"))]


def test_a_backup_without_manifest_is_refused(world):
    manifest = backup(world)
    os.unlink(manifest["manifest_path"])
    with pytest.raises(BackupError, match=r"has no manifest .*nothing was changed"):
        load_backup(str(world.backup_dir), manifest["id"])


def test_latest_skips_a_corrupt_backup_with_a_warning(world):
    older = backup(world, kind="manual")
    newer = backup(world, kind="scheduled")
    flip_byte(newer["path"])
    warnings = []
    entry, actual = load_backup(str(world.backup_dir), "latest", "app", warnings.append)
    assert entry["id"] == older["id"]
    assert actual == older["sha256"]
    assert warnings and "corrupt" in warnings[0] and warnings[0].endswith("; skipped")


def test_latest_with_nothing_usable(world):
    with pytest.raises(BackupError, match="no complete backup with a valid checksum"):
        load_backup(str(world.backup_dir), "latest")


@pytest.mark.parametrize("name", ["yesterday", "../etc/passwd", "20260101T000000Z-manual"])
def test_unknown_backup_names(world, name):
    with pytest.raises(BackupError, match=r"nothing was changed|not a backup id"):
        load_backup(str(world.backup_dir), name)


def test_verify_mode_is_read_only(mod, world, capsys):
    manifest = backup(world)
    before = sorted(os.listdir(world.backup_dir))
    result = run(mod, capsys, **args(world, mode="verify"))
    assert result["changed"] is False
    assert result["checksum"] == {"expected": manifest["sha256"], "actual": manifest["sha256"], "ok": True}
    assert sorted(os.listdir(world.backup_dir)) == before


def test_check_mode_restore_verifies_but_runs_nothing(mod, world, capsys):
    backup(world)
    commands = len(world.api.commands)
    result = run(mod, capsys, _ansible_check_mode=True, **args(world))
    assert result["changed"] is True and result["checksum"]["ok"] is True
    assert world.api.commands[commands:] == []


# ---- restore ---------------------------------------------------------------


def test_restore_takes_a_safety_backup_then_loads_the_dump_and_checks_counts(mod, world, capsys):
    manifest = backup(world)
    world.api.loaded.clear()
    world.conn.queries.clear()
    result = run(mod, capsys, **args(world, backup=manifest["id"]))

    assert result["changed"] is True
    safety = result["safety_backup"]
    assert safety["kind"] == "safety" and safety["label"] == f"before restore of {manifest['id']}"
    assert os.path.exists(safety["path"])
    assert world.api.loaded == [DUMP]  # the client got exactly the dump, through stdin
    client = [c for c in world.api.commands if c[0] == "mariadb"][-1]
    assert "--init-command=SET SESSION sql_log_bin=0" in client and client[-1] == "app"
    sql = [q for q, _ in world.conn.queries]
    assert sql.index("SET SESSION sql_log_bin = 0") < sql.index("DROP DATABASE IF EXISTS `app`")
    assert "CREATE DATABASE `app` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci" in sql
    assert result["restore"]["row_counts"] == MARIADB_COUNTS
    assert result["restore"]["expected_row_counts"] == MARIADB_COUNTS
    assert "pitr" not in result
    assert PASSWORD not in json.dumps(result)


def test_a_backup_brought_for_the_restore_leaves_the_undo_path_with_the_server_s_own(mod, world, capsys, tmp_path):
    # prod's backup copied into a scratch directory of the test server: the safety backup goes to the test
    # server's own backup directory, where its retention and its restore.yml find it.
    manifest = backup(world)
    brought = tmp_path / "brought"
    brought.mkdir()
    for name in os.listdir(world.backup_dir):
        if name.startswith(manifest["id"]):
            shutil.copy(world.backup_dir / name, brought / name)
    own = set(os.listdir(world.backup_dir))
    result = run(mod, capsys, **args(world, backup_dir=str(brought), backup=manifest["id"],
                                     safety_backup_dir=str(world.backup_dir)))  # fmt: skip
    safety = result["safety_backup"]
    assert os.path.dirname(safety["path"]) == str(world.backup_dir)
    assert {n for n in os.listdir(world.backup_dir) if n not in own} >= {os.path.basename(safety["path"])}
    assert not [n for n in os.listdir(brought) if "safety" in n]


def test_restore_with_log_restore_keeps_the_binlog(mod, world, capsys):
    backup(world)
    world.conn.queries.clear()
    run(mod, capsys, **args(world, log_restore=True, safety_backup=False))
    client = [c for c in world.api.commands if c[0] == "mariadb"][-1]
    assert not any(arg.startswith("--init-command") for arg in client)
    assert "SET SESSION sql_log_bin = 0" not in [q for q, _ in world.conn.queries]


def test_row_count_mismatch_fails_and_names_the_undo_backup(mod, world, capsys):
    backup(world)
    world.conn.counts["users"] = 3
    result = run(mod, capsys, **args(world))
    assert result["failed"] is True
    safety = [e for e in list_backups(str(world.backup_dir)) if e["id"].endswith("-safety")]
    assert len(safety) == 1
    assert "row counts differ from the manifest" in result["msg"]
    assert f"The state before the restore is in safety backup {safety[0]['id']}." in result["msg"]


def test_a_failing_client_fails_the_restore(mod, world, capsys):
    backup(world)
    world.api.client_code, world.api.client_err = 1, b"ERROR 1064 (42000) at line 3"
    result = run(mod, capsys, **args(world, safety_backup=False))
    assert result["failed"] is True
    assert "mariadb exited with code 1 while loading the dump: ERROR 1064" in result["msg"]


def test_no_safety_backup_for_a_database_that_does_not_exist(mod, world, capsys):
    backup(world)
    world.conn.exists = False
    result = run(mod, capsys, **args(world))
    assert "safety_backup" not in result
    assert "no safety backup" in json.dumps(result["warnings"])  # 2.19 warnings are structured


# ---- point in time ---------------------------------------------------------


def test_point_in_time_replays_binlogs_from_the_backup_position(mod, world, capsys):
    manifest = backup(world)
    stop = parse_iso(manifest["started_at"]) + dt.timedelta(minutes=5)
    local = stop.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()
    world.api.loaded.clear()
    result = run(mod, capsys, **args(world, stop_datetime=local, safety_backup=False))

    reader = next(c for c in world.api.commands if c[0] == "mariadb-binlog")
    assert reader == [
        "mariadb-binlog",
        "--start-position=2218",
        f"--stop-datetime={stop:%Y-%m-%d %H:%M:%S}",
        "--database=app",
        "/var/lib/mysql/mysql-bin.000001",
        "/var/lib/mysql/mysql-bin.000002",
    ]
    assert world.api.envs[world.api.commands.index(reader)] == {"TZ": "UTC"}
    assert world.api.loaded == [DUMP, world.api.binlog_out]
    assert result["pitr"]["files"] == ["mysql-bin.000001", "mysql-bin.000002"]
    assert result["pitr"]["stop_datetime"] == iso(stop)
    assert "row_counts_after_pitr" in result["restore"]


def test_point_in_time_uses_shipped_copies_of_purged_binlogs(mod, world, capsys):
    manifest = backup(world)
    world.conn.binlogs = ["mysql-bin.000002"]
    shipped = world.backup_dir / "binlogs"
    shipped.mkdir()
    (shipped / "mysql-bin.000001").write_bytes(b"\xfebinlog-one")
    stop = parse_iso(manifest["started_at"]) + dt.timedelta(minutes=5)
    result = run(mod, capsys, **args(world, stop_datetime=iso(stop), safety_backup=False))
    assert result["pitr"]["files"] == ["mysql-bin.000001", "mysql-bin.000002"]
    assert world.api.files["mysql:/tmp/tmp.fake1/mysql-bin.000001"][0] == b"\xfebinlog-one"
    reader = next(c for c in world.api.commands if c[0] == "mariadb-binlog")
    assert reader[-2:] == ["/tmp/tmp.fake1/mysql-bin.000001", "/var/lib/mysql/mysql-bin.000002"]


def test_point_in_time_before_the_backup_is_refused(mod, world, capsys):
    manifest = backup(world)
    stop = parse_iso(manifest["started_at"]) - dt.timedelta(minutes=5)
    result = run(mod, capsys, **args(world, stop_datetime=iso(stop), safety_backup=False))
    assert result["failed"] is True and f"was taken before {iso(stop)}" in result["msg"]  # latest: none before
    chosen = {"backup": manifest["id"], "stop_datetime": iso(stop), "safety_backup": False}
    result = run(mod, capsys, **args(world, **chosen))
    assert result["failed"] is True and "is before backup" in result["msg"]


def test_point_in_time_needs_a_binlog_position(mod, world, capsys):
    world.conn.log_bin = False
    world.api.dump = DUMP.replace(
        b"-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000001', MASTER_LOG_POS=2218;\n", b""
    )
    manifest = backup(world)
    stop = parse_iso(manifest["started_at"]) + dt.timedelta(minutes=5)
    result = run(mod, capsys, **args(world, stop_datetime=iso(stop), safety_backup=False))
    assert result["failed"] is True and "has no binlog position" in result["msg"]


# ---- drills ----------------------------------------------------------------


@pytest.fixture
def drill_conn(world, monkeypatch):
    conn = FakeConn()
    monkeypatch.setattr(f"{PKG}.drill._wait_for_server", lambda login, container_id, api, timeout: conn)
    return conn


def test_drill_restores_into_a_throwaway_container_and_marks_the_backup_verified(mod, world, drill_conn, capsys):
    manifest = backup(world)
    result = run(mod, capsys, **args(world, mode="drill", smoke_query="SELECT COUNT(*) FROM users"))

    drill = result["drill"]
    assert drill["status"] == "passed"
    assert drill["mismatches"] == [] and drill["row_counts"] == MARIADB_COUNTS
    assert drill["restore_seconds"] >= 0 and drill["total_seconds"] >= drill["restore_seconds"]
    assert drill["smoke_result"] == [["42"]]
    created = world.api.created[0]
    assert created["image"] == "sha256:abc123"
    assert created["name"].startswith("mysql-drill-")
    assert created["host_config"]["network_mode"] == "none"
    assert created["host_config"]["cpu_shares"] == 2  # background work: the site's containers come first
    assert created["host_config"]["binds"][0].endswith(":/run/mysqld:rw")
    # same server configuration as production, read-only; never its data or socket
    assert created["host_config"]["binds"][1:] == ["/etc/montaiguillon/mysql/conf.d:/etc/mysql/conf.d:ro"]
    assert created["command"] == ["mariadbd", "--log-bin=mysql-bin"]
    assert len(created["environment"]["MYSQL_ROOT_PASSWORD"]) >= 24
    assert world.api.removed_containers == [("drill-1", True, True)]
    assert world.api.loaded[-1] == DUMP
    record = json.loads((world.backup_dir / f"{manifest['id']}.drill.json").read_text())
    assert record["status"] == "passed"
    on_disk = json.loads(Path(manifest["manifest_path"]).read_text())
    assert on_disk["verified"] is True and on_disk["last_drill"]["status"] == "passed"
    assert validate_manifest(on_disk, manifest["id"]) == []
    assert result["backup"]["verified"] is True


def test_a_drill_of_a_fetched_copy_is_recorded_where_the_backup_is_kept(mod, world, drill_conn, capsys, tmp_path):
    # The weekly drill of the offsite copy: fetched into a scratch directory, drilled there, recorded here.
    manifest = backup(world)
    scratch = tmp_path / "scratch"
    shutil.copytree(world.backup_dir, scratch)
    result = run(
        mod, capsys, **args(world, mode="drill", backup_dir=str(scratch), record_dir=str(world.backup_dir),
                            drill_source="offsite")
    )  # fmt: skip
    assert result["drill"]["status"] == "passed" and result["drill"]["source"] == "offsite"
    record = json.loads((world.backup_dir / f"{manifest['id']}.drill.json").read_text())
    assert record["source"] == "offsite" and record["status"] == "passed"
    kept = json.loads(Path(manifest["manifest_path"]).read_text())
    assert kept["verified"] is True and kept["last_drill"]["source"] == "offsite"
    assert not (scratch / f"{manifest['id']}.drill.json").exists()


def test_a_drill_of_a_copy_pruned_here_leaves_its_record_alone(world):
    # The store keeps backups longer than the server: the record is written, no manifest is invented.
    manifest = backup(world)
    entry = list_backups(str(world.backup_dir))[0]
    os.remove(manifest["manifest_path"])
    recorded = record_drill(str(world.backup_dir), entry, {"status": "passed", "finished_at": "x", "source": "offsite"})
    assert recorded["verified"] is True
    assert not Path(manifest["manifest_path"]).exists()
    assert json.loads((world.backup_dir / f"{manifest['id']}.drill.json").read_text())["source"] == "offsite"


def test_a_failed_drill_is_recorded_unverifies_and_fails(mod, world, drill_conn, capsys):
    manifest = backup(world)
    record_drill(
        str(world.backup_dir), list_backups(str(world.backup_dir))[0], {"status": "passed", "finished_at": "x"}
    )
    drill_conn.counts["users"] = 1
    result = run(mod, capsys, **args(world, mode="drill"))
    assert result["failed"] is True
    assert "restore drill of backup" in result["msg"] and "row counts differ" in result["msg"]
    assert result["drill"]["mismatches"] == [{"table": "users", "expected": 4, "actual": 1}]
    assert json.loads(Path(manifest["manifest_path"]).read_text())["verified"] is False
    assert world.api.removed_containers  # the container is removed even on failure


def test_a_drill_whose_server_never_starts_is_recorded_as_failed(mod, world, monkeypatch, capsys):
    backup(world)

    def never(login, container_id, api, timeout):
        raise BackupError("the drill server did not become ready within 300 s")

    monkeypatch.setattr(f"{PKG}.drill._wait_for_server", never)
    result = run(mod, capsys, **args(world, mode="drill"))
    assert result["failed"] is True and "did not become ready" in result["msg"]
    assert result["drill"]["status"] == "failed"
    assert world.api.removed_containers == [("drill-1", True, True)]


def test_encrypted_backup_needs_an_identity(world):
    manifest = {"id": "x", "compression": "gzip", "encryption": {"tool": "age"}}
    with pytest.raises(BackupError, match="set decrypt_identity_file"):
        decompress_commands(manifest, "/b/x.sql.gz.age")


def test_plain_backup_decompresses_with_its_compressor(world):
    manifest = backup(world)
    commands = decompress_commands(manifest, manifest["path"])
    assert commands == [["gzip", "-d", "-c", manifest["path"]]]
    assert gzip.decompress(Path(manifest["path"]).read_bytes()) == DUMP


# ---- the dump through a FIFO -------------------------------------------------


@pytest.fixture
def shared_dir(world, tmp_path):
    """The socket directory as the mysql role lays it out: a bind mount both sides see."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    world.api.shared = (str(run_dir), "/run/mysqld")
    return run_dir


def test_the_decompressor_writes_into_a_fifo_the_client_reads(mod, world, shared_dir, capsys):
    backup(world)
    world.api.loaded.clear()
    result = run(mod, capsys, **args(world, safety_backup=False, login_unix_socket=str(shared_dir / "mysqld.sock")))
    assert result["changed"] is True
    assert world.api.loaded == [DUMP]
    wrapper = [c for c in world.api.commands if c[:2] == ["sh", "-c"] and "mariadb" in c][-1]
    assert wrapper[3].startswith("/run/mysqld/.montaiguillon-dump-") and wrapper[4] == "mariadb"
    assert wrapper[-1] == "app"
    assert result["restore"]["row_counts"] == MARIADB_COUNTS
    assert os.listdir(shared_dir) == []


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            lambda api: setattr(api, "client_code", 1) or setattr(api, "client_err", b"ERROR 1064 (42000) at line 3"),
            "mariadb exited with code 1 while loading the dump: ERROR 1064",
        ),
        (lambda api: setattr(api, "client_opens_fifo", False), "exited with code 2 while loading the dump: sh: cannot"),
    ],
    ids=["client-fails", "fifo-never-opened"],
)
def test_a_failing_client_behind_the_fifo_fails_the_restore_and_leaves_no_fifo(
    mod, world, shared_dir, capsys, setup, message
):
    backup(world)
    setup(world.api)
    result = run(mod, capsys, **args(world, safety_backup=False, login_unix_socket=str(shared_dir / "mysqld.sock")))
    assert result["failed"] is True
    assert message in result["msg"]
    assert os.listdir(shared_dir) == []


def test_the_drill_waits_through_the_entrypoints_temporary_server_going_away(monkeypatch):
    # the image's entrypoint starts a server without networking, then stops it: a probe can connect to it
    # and lose it mid-query (2006). None of that is an error; the server that stays up is.
    pymysql = pytest.importorskip("pymysql")

    class Probe:
        def __init__(self, answer):
            self.answer, self.closed = answer, False

        def cursor(self):
            probe = self

            class Cursor:
                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    return False

                def execute(self, sql, args=None):
                    assert sql == "SELECT @@skip_networking"
                    if isinstance(probe.answer, Exception):
                        raise probe.answer

                def fetchone(self):
                    return (probe.answer,)

            return Cursor()

        def close(self):
            self.closed = True

    gone = pymysql.err.OperationalError(2006, "MySQL server has gone away (BrokenPipeError(32, 'Broken pipe'))")
    probes = [Probe(1), Probe(gone), Probe(0)]
    answers = [BackupError("cannot connect"), *probes]

    def connect(login, database=None):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    class Engine:
        def inspect_container(self, container_id):
            return {"State": {"Running": True}}

    monkeypatch.setattr(f"{PKG}.mysql.connect", connect)
    monkeypatch.setattr(time, "sleep", lambda _seconds: None)
    assert _wait_for_server({}, "drill-1", Engine(), timeout=30) is probes[2]
    assert [p.closed for p in probes] == [True, True, False]


# ---- the backup a point-in-time recovery starts from -------------------------


def test_latest_before_a_point_in_time_is_the_newest_good_backup_started_before_it(world):
    backups = world.backup_dir
    write_backup(backups, "20261126T031500Z-scheduled", started_at="2026-11-26T03:15:00Z")
    write_backup(backups, "20261126T091000Z-pre-deploy", started_at="2026-11-26T09:10:00Z")
    corrupt = write_backup(backups, "20261126T092000Z-manual", started_at="2026-11-26T09:20:00Z")
    write_backup(backups, "20261126T100000Z-scheduled", started_at="2026-11-26T10:00:00Z")
    flip_byte(str(backups / corrupt["file"]))
    warnings = []
    entry, _sha = load_backup(str(backups), "latest", "app", warnings.append, before=parse_iso("2026-11-26T09:30:00Z"))
    assert entry["id"] == "20261126T091000Z-pre-deploy"  # the 09:20 one is corrupt, the 10:00 one is after
    assert "corrupt" in warnings[0]
    entry, _sha = load_backup(str(backups), "latest", "app", before=parse_iso("2026-11-26T09:10:00Z"))
    assert entry["id"] == "20261126T031500Z-scheduled"  # started at the very moment: not before it


def test_no_backup_before_a_point_in_time_is_refused_naming_it(world):
    write_backup(world.backup_dir, "20261126T100000Z-scheduled", started_at="2026-11-26T10:00:00Z")
    with pytest.raises(BackupError) as refused:
        load_backup(str(world.backup_dir), "latest", "app", before=parse_iso("2026-11-26T09:30:00Z"))
    assert str(refused.value) == (
        f"no complete backup of app with a valid checksum was taken before 2026-11-26T09:30:00Z"
        f" in {world.backup_dir}; nothing was changed"
    )


def test_verify_with_a_point_in_time_names_the_backup_a_restore_starts_from(mod, world, capsys):
    write_backup(world.backup_dir, "20261126T031500Z-scheduled", started_at="2026-11-26T03:15:00Z")
    write_backup(world.backup_dir, "20261126T100000Z-scheduled", started_at="2026-11-26T10:00:00Z")
    result = run(mod, capsys, **args(world, mode="verify", database="app", stop_datetime="2026-11-26 09:30:00"))
    assert result["backup"]["id"] == "20261126T031500Z-scheduled"
    assert result["changed"] is False
