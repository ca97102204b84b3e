"""run_backup end to end with a fake Docker engine and a fake PyMySQL; real gzip/zstd subprocesses."""

import errno
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from ansible.module_utils.montaiguillon.backup.container import fifo_directory
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.manifest import validate_manifest
from ansible.module_utils.montaiguillon.backup.pacing import (
    SYNC_FILE_RANGE_WRITE,
    WriteBehind,
    libc_sync_file_range,
    without_background,
)
from ansible.module_utils.montaiguillon.backup.pipeline import _open_partial
from ansible.module_utils.montaiguillon.backup.restore import decompress_commands
from ansible.module_utils.montaiguillon.backup.retention import apply_retention
from ansible.module_utils.montaiguillon.backup.scanner import DumpScanner
from ansible.module_utils.montaiguillon.backup.take import run_backup
from backup_fakes import LOGIN, MARIADB_COUNTS, MARIADB_DUMP, PASSWORD, FakeAPI, FakeConn, pad_dump

PKG = "ansible.module_utils.montaiguillon.backup"

BIG_DUMP = pad_dump(MARIADB_DUMP, 200_000)


@pytest.fixture
def conn(monkeypatch):
    connection = FakeConn()
    monkeypatch.setattr(f"{PKG}.mysql.connect", lambda login, database=None: connection)
    return connection


@pytest.fixture
def backup_dir(tmp_path):
    directory = tmp_path / "backups"
    directory.mkdir()
    return directory


def take(api, backup_dir, warnings=None, login=None, **kwargs):
    options = {"container": "mysql", "database": "app", "kind": "scheduled", "compression": "gzip"}
    options.update(kwargs)
    return run_backup(
        api,
        login or getattr(api, "login", LOGIN),
        backup_dir=str(backup_dir),
        warn=(warnings if warnings is not None else []).append,
        **options,
    )


@pytest.fixture(params=["docker-exec", "fifo"])
def engine(request, tmp_path):
    """Make a FakeAPI whose dump comes either through the exec or through a FIFO in the socket directory."""

    def make(**kwargs):
        api = FakeAPI(**kwargs)
        api.login = dict(LOGIN)
        if request.param == "fifo":
            run_dir = tmp_path / "run"
            run_dir.mkdir(exist_ok=True)
            api.shared = (str(run_dir), "/run/mysqld")
            api.login["login_unix_socket"] = str(run_dir / "mysqld.sock")
        return api

    make.transport = request.param
    return make


def decompress(path):
    if path.endswith(".gz"):
        return gzip.decompress(Path(path).read_bytes())
    return subprocess.run(["zstd", "-dc", path], check=True, capture_output=True).stdout


def test_backup_writes_a_checked_dump_and_a_valid_manifest(backup_dir, conn, engine):
    api = engine(dump=BIG_DUMP)
    manifest = take(api, backup_dir, label="release-42")

    path = manifest["path"]
    assert path == str(backup_dir / f"{manifest['id']}.sql.gz")
    assert decompress(path) == BIG_DUMP
    assert manifest["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert manifest["compressed_bytes"] == os.path.getsize(path)
    assert manifest["uncompressed_bytes"] == len(BIG_DUMP)
    assert manifest["row_counts"] == MARIADB_COUNTS
    assert manifest["binlog"] == {"file": "mysql-bin.000001", "position": 2218, "gtid": "0-1-8"}
    assert manifest["server"]["image"] == "montaiguillon/mariadb:10.11"
    assert manifest["server"]["version"] == "10.11.19-MariaDB-0+deb12u1-log"
    assert (manifest["kind"], manifest["label"], manifest["status"]) == ("scheduled", "release-42", "complete")
    assert manifest["tool"]["transport"] == engine.transport
    on_disk = json.loads((backup_dir / f"{manifest['id']}.json").read_text())
    assert validate_manifest(on_disk, manifest["id"]) == []
    assert sorted(os.listdir(backup_dir)) == sorted([f"{manifest['id']}.json", f"{manifest['id']}.sql.gz"])
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_backup_runs_the_dump_with_consistent_flags_and_no_password_on_a_command_line(backup_dir, conn):
    api = FakeAPI(dump=BIG_DUMP)
    take(api, backup_dir)
    dump_cmd = next(c for c in api.commands if c[0] == "mariadb-dump")
    assert dump_cmd[1] == "--defaults-extra-file=/tmp/tmp.fake1/client.cnf"
    assert {"--single-transaction", "--quick", "--master-data=2", "--gtid", "--routines"} <= set(dump_cmd)
    assert dump_cmd[-1] == "app"
    assert all(PASSWORD not in " ".join(c) for c in api.commands)
    assert all(env is None or PASSWORD not in json.dumps(env) for env in api.envs)
    assert api.removed_dirs == ["/tmp/tmp.fake1"]


def test_backup_without_binlog_warns_and_records_no_position(backup_dir, conn):
    conn.log_bin = False
    dump = BIG_DUMP.replace(b"-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000001', MASTER_LOG_POS=2218;\n", b"")
    warnings = []
    manifest = take(FakeAPI(dump=dump), backup_dir, warnings)
    assert manifest["binlog"] is None
    assert "--master-data=2" not in manifest["tool"]["flags"]
    assert any("binary logging is off" in w for w in warnings)


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd binary not installed")
def test_backup_with_zstd(backup_dir, conn):
    manifest = take(FakeAPI(dump=BIG_DUMP), backup_dir, compression="zstd")
    assert manifest["file"].endswith(".sql.zst")
    assert decompress(manifest["path"]) == BIG_DUMP


def test_missing_zstd_falls_back_to_gzip_with_a_warning(backup_dir, conn, monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "zstd" else real_which(name))
    warnings = []
    manifest = take(FakeAPI(dump=BIG_DUMP), backup_dir, warnings, compression="zstd")
    assert manifest["compression"] == "gzip"
    assert manifest["file"].endswith(".sql.gz")
    assert any("zstd binary is missing" in w for w in warnings)


@pytest.fixture
def earlier(backup_dir, conn):
    """A good earlier backup that failures must leave untouched."""
    take(FakeAPI(dump=BIG_DUMP), backup_dir, label="earlier")
    files = {name: (backup_dir / name).read_bytes() for name in os.listdir(backup_dir)}
    return files


def assert_only(backup_dir, files):
    assert {name: (backup_dir / name).read_bytes() for name in os.listdir(backup_dir)} == files


@pytest.mark.parametrize(
    ("dump", "code", "stderr", "message"),
    [
        (b"", 0, b"", "suspiciously small (0 bytes < min_size_bytes 1024)"),
        (MARIADB_DUMP[:300], 0, b"", "suspiciously small"),
        (BIG_DUMP[:-40], 0, b"", "does not end with the '-- Dump completed' trailer"),
        (
            BIG_DUMP[:5000],
            2,
            b"mariadb-dump: Got error: 1045",
            "mariadb-dump exited with code 2: mariadb-dump: Got error: 1045",
        ),
    ],
    ids=["empty", "small", "cut", "exit-code"],
)
def test_a_bad_dump_fails_and_leaves_earlier_backups_intact(
    backup_dir, conn, earlier, engine, dump, code, stderr, message
):
    api = engine(dump=dump)
    api.dump_code, api.dump_err = code, stderr
    with pytest.raises(BackupError) as failure:
        take(api, backup_dir)
    assert message in str(failure.value)
    assert "the partial file was removed; earlier backups are untouched" in str(failure.value)
    assert_only(backup_dir, earlier)
    assert api.removed_dirs == ["/tmp/tmp.fake1"]  # credentials removed on failure too


class FullDisk:
    """A file that accepts ``room`` bytes then fails like a full disk."""

    def __init__(self, handle, room):
        self.handle = handle
        self.room = room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)


def test_a_full_disk_fails_cleanly(backup_dir, conn, earlier, monkeypatch):
    real_open = _open_partial
    monkeypatch.setattr(f"{PKG}.pipeline._open_partial", lambda path: FullDisk(real_open(path), room=100))
    api = FakeAPI(dump=pad_dump(MARIADB_DUMP, 3_000_000))
    with pytest.raises(BackupError, match=r"^no space left on device while writing .*\.sql\.gz\.partial \(the partial"):
        take(api, backup_dir)
    assert_only(backup_dir, earlier)


def test_a_failing_manifest_write_removes_the_dump(backup_dir, conn, earlier, monkeypatch):
    def full(path, document, mode=0o600):
        raise BackupError(f"no space left on device while writing {path}")

    monkeypatch.setattr(f"{PKG}.take.write_json", full)
    with pytest.raises(BackupError, match=r"no space left on device while writing .*json"):
        take(FakeAPI(dump=BIG_DUMP), backup_dir)
    assert_only(backup_dir, earlier)


def test_stale_partials_are_removed_with_a_warning(backup_dir, conn):
    (backup_dir / "20200101T000000Z-manual.sql.zst.partial").write_bytes(b"junk")
    warnings = []
    take(FakeAPI(dump=BIG_DUMP), backup_dir, warnings)
    assert not (backup_dir / "20200101T000000Z-manual.sql.zst.partial").exists()
    assert any("interrupted backup" in w for w in warnings)


def test_a_missing_database_is_refused_before_dumping(backup_dir, conn):
    conn.exists = False
    api = FakeAPI(dump=BIG_DUMP)
    with pytest.raises(BackupError, match="database app does not exist"):
        take(api, backup_dir)
    assert not any(c[0] == "mariadb-dump" for c in api.commands)
    assert os.listdir(backup_dir) == []


def test_a_missing_container_is_a_clear_error(backup_dir, conn):
    with pytest.raises(BackupError, match="container missing not found"):
        take(FakeAPI(), backup_dir, container="missing")


def test_encryption_needs_the_age_binary(backup_dir, conn, monkeypatch, tmp_path):
    recipients = tmp_path / "recipients.txt"
    recipients.write_text("age1xyz\n")
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "age" else real_which(name))
    with pytest.raises(BackupError, match="age binary is missing"):
        take(FakeAPI(dump=BIG_DUMP), backup_dir, encrypt_recipient_file=str(recipients))


@pytest.mark.skipif(shutil.which("age") is None or shutil.which("age-keygen") is None, reason="age not installed")
def test_encrypted_backup_round_trips(backup_dir, conn, tmp_path):
    key = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    recipients = tmp_path / "recipients.txt"
    recipients.write_bytes(subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True).stdout)
    manifest = take(FakeAPI(dump=BIG_DUMP), backup_dir, encrypt_recipient_file=str(recipients))
    assert manifest["file"].endswith(".sql.gz.age")
    assert manifest["encryption"] == {"tool": "age", "recipients_file": str(recipients)}
    commands = decompress_commands(manifest, manifest["path"], str(key))
    first = subprocess.Popen(commands[0], stdout=subprocess.PIPE)
    plain = subprocess.run(commands[1], stdin=first.stdout, capture_output=True, check=True).stdout
    first.wait()
    assert plain == BIG_DUMP


def test_retention_after_backup_prunes_old_backups_of_the_database(backup_dir, conn):
    ids = [take(FakeAPI(dump=BIG_DUMP), backup_dir, kind="manual")["id"] for _ in range(3)]
    pruned = apply_retention(str(backup_dir), "app", {"keep_last": 1, "daily": 0, "weekly": 0, "monthly": 0})
    assert pruned == [ids[1], ids[0]]
    assert sorted(os.listdir(backup_dir)) == sorted([f"{ids[2]}.json", f"{ids[2]}.sql.gz"])


@pytest.mark.parametrize(
    ("tools", "prefix"),
    [
        (["chrt", "nice"], ["chrt", "-i", "0"]),  # SCHED_IDLE: a core only when nothing else wants it
        (["nice"], ["nice", "-n", "10"]),
    ],
    ids=["sched-idle", "nice"],
)
def test_the_dump_and_the_compressor_yield_the_cpu_to_the_site(backup_dir, conn, monkeypatch, tools, prefix):
    api = FakeAPI(dump=BIG_DUMP)
    tools_out = b"".join(b"/usr/bin/%s\n" % name.encode() for name in ["mariadb-dump", "mariadb", *tools])
    original = api.handle

    def handle(cmd, stdin, record):
        if cmd[0] == "sh":
            return tools_out, b"", 0
        return original(without_background(cmd), stdin, record)

    api.handle = handle
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}" if name in [*tools, "gzip"] else None)
    spawned, policies = [], []
    real_popen = subprocess.Popen

    def popen(cmd, **kwargs):
        spawned.append(cmd)
        policies.append(os.sched_getscheduler(0))
        return real_popen(without_background(cmd), **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen)
    policy_before = os.sched_getscheduler(0)
    manifest = take(api, backup_dir)
    dump_cmd = next(c for c in api.commands if "mariadb-dump" in c)
    assert dump_cmd[: len(prefix) + 1] == [*prefix, "mariadb-dump"]
    assert spawned[0] == [*prefix, "gzip", "-c", "-6"]
    assert policies == [os.SCHED_IDLE]  # the thread reading the dump is background work too...
    assert os.sched_getscheduler(0) == policy_before  # ...only while it dumps
    assert manifest["tool"]["name"] == "mariadb-dump"
    assert gzip.decompress(Path(manifest["path"]).read_bytes()) == BIG_DUMP


# ---- the dump through a FIFO ----------------------------------------------------


@pytest.fixture
def fifo_api(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    api = FakeAPI(dump=BIG_DUMP)
    api.shared = (str(run_dir), "/run/mysqld")
    api.login = {**LOGIN, "login_unix_socket": str(run_dir / "mysqld.sock")}
    return api


def test_the_dump_comes_through_a_fifo_in_the_socket_directory_and_leaves_nothing_there(backup_dir, conn, fifo_api):
    manifest = take(fifo_api, backup_dir)
    dump_cmd = next(c for c in fifo_api.commands if c[0] == "mariadb-dump")
    assert re.fullmatch(r"--result-file=/run/mysqld/\.montaiguillon-dump-[0-9a-f]{16}\.fifo", dump_cmd[-2])
    assert dump_cmd[-1] == "app"
    assert manifest["tool"]["transport"] == "fifo"
    assert gzip.decompress(Path(manifest["path"]).read_bytes()) == BIG_DUMP
    assert os.listdir(fifo_api.shared[0]) == []  # neither the probe nor the dump's FIFO is left


def test_a_dump_tool_that_fails_before_opening_the_fifo_is_reported_not_awaited(backup_dir, conn, fifo_api, earlier):
    fifo_api.dump_opens_fifo = False
    fifo_api.dump_code, fifo_api.dump_err = 2, b"mariadb-dump: Got error: 2002: Can't connect"
    with pytest.raises(BackupError, match="mariadb-dump exited with code 2: mariadb-dump: Got error: 2002"):
        take(fifo_api, backup_dir)
    assert_only(backup_dir, earlier)
    assert os.listdir(fifo_api.shared[0]) == []


def test_the_dump_falls_back_to_the_exec_when_the_container_cannot_see_the_fifo(backup_dir, conn, fifo_api):
    original = fifo_api.handle
    fifo_api.handle = lambda cmd, stdin, record: (b"", b"", 1) if cmd[0] == "test" else original(cmd, stdin, record)
    manifest = take(fifo_api, backup_dir)
    assert manifest["tool"]["transport"] == "docker-exec"
    assert not any(a.startswith("--result-file") for a in next(c for c in fifo_api.commands if c[0] == "mariadb-dump"))
    assert gzip.decompress(Path(manifest["path"]).read_bytes()) == BIG_DUMP


@pytest.mark.parametrize(
    ("login", "mount"),
    [
        ({"login_host": "db.internal"}, {}),  # over TCP: the socket directory says nothing of the server
        ({}, {"RW": False}),
        ({}, {"Type": "volume"}),
    ],
    ids=["tcp-login", "read-only", "not-a-bind-mount"],
)
def test_no_fifo_without_a_writable_bind_mount_of_the_socket_directory(fifo_api, login, mount):
    info = fifo_api.inspect_container("mysql")
    info["Mounts"][1].update(mount)
    assert fifo_directory(fifo_api, "mysql", info, {**fifo_api.login, **login}) is None
    assert fifo_directory(fifo_api, "mysql", fifo_api.inspect_container("mysql"), fifo_api.login) == (
        fifo_api.shared[0],
        "/run/mysqld",
    )


def test_the_fifo_is_read_in_small_pieces_so_the_pace_holds_the_dump_close(backup_dir, conn, fifo_api, monkeypatch):
    sizes = []
    real_feed = DumpScanner.feed
    monkeypatch.setattr(DumpScanner, "feed", lambda self, data: sizes.append(len(data)) or real_feed(self, data))
    fifo_api.frame_size = 256 * 1024
    take(fifo_api, backup_dir)
    assert sum(sizes) == len(BIG_DUMP)
    assert max(sizes) <= 16 * 1024  # the burst benchmarks/backup.py found the site does not feel


def noisy_dump(size):
    """A valid dump with ``size`` random bytes (as hex, in a comment) that compression cannot squeeze away."""
    return MARIADB_DUMP.replace(b"-- Dump completed", b"-- " + os.urandom(size).hex().encode() + b"\n-- Dump completed")


class RecordingSync:
    """Stands in for sync_file_range and fadvise: records what the writer asked of the disk."""

    def __init__(self, fail=None):
        self.calls = []
        self.fail = fail

    def sync_range(self, fd, offset, nbytes, flags):
        if self.fail is not None:
            raise self.fail
        kind = "start" if flags == SYNC_FILE_RANGE_WRITE else "wait"
        self.calls.append((kind, offset, nbytes))

    def drop(self, fd, offset, nbytes):
        self.calls.append(("drop", offset, nbytes))


def test_write_behind_hands_each_step_to_the_disk_and_waits_for_the_one_before():
    disk = RecordingSync()
    behind = WriteBehind(7, step=100, sync_range=disk.sync_range, drop=disk.drop)
    for size in (60, 60, 250, 10):  # 380 bytes: three whole steps, 80 left to the final fsync
        behind.wrote(size)
    assert disk.calls == [
        ("start", 0, 100),
        ("start", 100, 100),
        ("wait", 0, 100),
        ("drop", 0, 100),
        ("start", 200, 100),
        ("wait", 100, 100),
        ("drop", 100, 100),
    ]
    behind.finished()
    assert disk.calls[-1] == ("drop", 0, 0)  # the whole file leaves the page cache


def test_write_behind_is_a_no_op_where_sync_file_range_is_missing():
    disk = RecordingSync()
    behind = WriteBehind(7, step=100, sync_range=False, drop=disk.drop)
    behind.wrote(1000)
    assert disk.calls == []


def test_write_behind_on_a_real_file_keeps_every_byte(tmp_path):
    assert libc_sync_file_range() is not None  # the servers are Linux with a C library that has it
    data = os.urandom(3 * 1024 * 1024 + 123)
    path = tmp_path / "out"
    with path.open("wb") as handle:
        behind = WriteBehind(handle.fileno(), step=256 * 1024)
        for start in range(0, len(data), 100_000):
            handle.write(data[start : start + 100_000])
            handle.flush()
            behind.wrote(len(data[start : start + 100_000]))
        os.fsync(handle.fileno())
        behind.finished()
    assert path.read_bytes() == data


def test_backup_files_are_written_behind_while_the_dump_runs(backup_dir, conn, monkeypatch):
    disk = RecordingSync()
    monkeypatch.setattr(f"{PKG}.pacing.libc_sync_file_range", lambda: disk.sync_range)
    monkeypatch.setattr(f"{PKG}.pacing.drop_cached", disk.drop)
    monkeypatch.setattr(f"{PKG}.pacing.WRITE_BEHIND_BYTES", 64 * 1024)
    api = FakeAPI(dump=noisy_dump(600_000))  # gzip cannot shrink it below ~600 kB: several steps
    result = take(api, backup_dir)
    started = [offset for kind, offset, _ in disk.calls if kind == "start"]
    assert started == list(range(0, len(started) * 64 * 1024, 64 * 1024))
    assert len(started) == result["compressed_bytes"] // (64 * 1024) > 5
    assert disk.calls[-1] == ("drop", 0, 0)


def test_a_disk_error_while_writing_behind_fails_the_backup_cleanly(backup_dir, conn, earlier, monkeypatch):
    disk = RecordingSync(fail=OSError(errno.EIO, "Input/output error"))
    monkeypatch.setattr(f"{PKG}.pacing.libc_sync_file_range", lambda: disk.sync_range)
    api = FakeAPI(dump=noisy_dump(2_000_000))
    failed = r"^Input/output error while writing .*\.sql\.gz\.partial \(the partial file was removed"
    with pytest.raises(BackupError, match=failed):
        take(api, backup_dir)
    assert_only(backup_dir, earlier)
