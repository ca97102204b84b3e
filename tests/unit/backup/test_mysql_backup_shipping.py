"""Binlog shipping, pruning of shipped binlogs, PITR from encrypted shipped copies, the offsite command line."""

import datetime as dt
import json
import os
import shutil
import subprocess

import pytest
from ansible.module_utils.montaiguillon.backup.binlogs import (
    decrypt_to,
    prune_shipped_binlogs,
    ship_binlogs,
    shipped_binlogs,
)
from ansible.module_utils.montaiguillon.backup.catalog import backup_dir_lock
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.offsite import offsite_sync, rsync_command
from ansible.module_utils.montaiguillon.backup.take import run_backup
from ansible.module_utils.montaiguillon.common.clock import iso, parse_iso
from ansible.module_utils.testing import patch_module_args
from backup_fakes import LOGIN, MARIADB_DUMP, PASSWORD, FakeAPI, FakeConn, pad_dump, rsync_through_a_local_shell

PKG = "ansible.module_utils.montaiguillon.backup"

DUMP = pad_dump(MARIADB_DUMP, 50_000)
HAS_AGE = shutil.which("age") is not None and shutil.which("age-keygen") is not None


class BinlogAPI(FakeAPI):
    """FakeAPI whose container has binlog files that ``cat`` prints."""

    def __init__(self, binlogs, **kwargs):
        super().__init__(**kwargs)
        self.binlog_files = binlogs  # path -> bytes

    def handle(self, cmd, stdin, record):
        if cmd[0] == "cat":
            if cmd[1] not in self.binlog_files:
                return b"", f"cat: {cmd[1]}: No such file or directory".encode(), 1
            return self.binlog_files[cmd[1]], b"", 0
        return super().handle(cmd, stdin, record)


@pytest.fixture
def conn(monkeypatch):
    connection = FakeConn()
    connection.binlogs = ["mysql-bin.000001", "mysql-bin.000002", "mysql-bin.000003"]
    monkeypatch.setattr(f"{PKG}.mysql.connect", lambda login, database=None: connection)
    return connection


def binlog_bytes(name):
    return (b"\xfebin" + name.encode()).ljust(100, b".")  # FakeCursor reports 100 bytes per binlog


def api_with(names):
    return BinlogAPI({f"/var/lib/mysql/{name}": binlog_bytes(name) for name in names})


@pytest.fixture
def age_key(tmp_path):
    key = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    recipients = tmp_path / "recipients.txt"
    recipients.write_bytes(subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True).stdout)
    return key, recipients


def test_shipping_flushes_then_copies_every_closed_binlog_but_the_active_one(tmp_path, conn):
    api = api_with(conn.binlogs)
    result = ship_binlogs(api, LOGIN, container="mysql", backup_dir=str(tmp_path))
    assert ("FLUSH BINARY LOGS", None) in conn.queries
    assert result["shipped"] == ["mysql-bin.000001", "mysql-bin.000002"]
    assert result["active"] == "mysql-bin.000003" and result["bytes"] == 200
    shipped = tmp_path / "binlogs"
    assert sorted(os.listdir(shipped)) == ["mysql-bin.000001", "mysql-bin.000002"]
    assert (shipped / "mysql-bin.000002").read_bytes() == binlog_bytes("mysql-bin.000002")
    assert oct(shipped.stat().st_mode & 0o777) == "0o700"
    assert oct((shipped / "mysql-bin.000001").stat().st_mode & 0o777) == "0o600"


def test_shipping_again_copies_only_what_is_new_and_without_flush_leaves_the_active_file(tmp_path, conn):
    ship_binlogs(api_with(conn.binlogs), LOGIN, container="mysql", backup_dir=str(tmp_path))
    conn.binlogs.append("mysql-bin.000004")
    conn.queries.clear()
    result = ship_binlogs(api_with(conn.binlogs), LOGIN, container="mysql", backup_dir=str(tmp_path), flush=False)
    assert ("FLUSH BINARY LOGS", None) not in conn.queries
    assert result["shipped"] == ["mysql-bin.000003"]


def test_a_short_copy_is_an_error_and_leaves_no_file(tmp_path, conn):
    api = api_with(conn.binlogs)
    api.binlog_files["/var/lib/mysql/mysql-bin.000002"] = b"\xfetruncated"
    with pytest.raises(BackupError, match=r"mysql-bin.000002 is 100 bytes on the server but 10 bytes were copied"):
        ship_binlogs(api, LOGIN, container="mysql", backup_dir=str(tmp_path))
    assert sorted(os.listdir(tmp_path / "binlogs")) == ["mysql-bin.000001"]


def test_a_purged_binlog_that_was_never_shipped_is_reported_as_a_gap(tmp_path, conn):
    ship_binlogs(api_with(conn.binlogs), LOGIN, container="mysql", backup_dir=str(tmp_path))
    conn.binlogs = ["mysql-bin.000007", "mysql-bin.000008"]
    warnings = []
    result = ship_binlogs(
        api_with(conn.binlogs), LOGIN, container="mysql", backup_dir=str(tmp_path), warn=warnings.append
    )
    assert "mysql-bin.000002 up to mysql-bin.000007 were purged" in result["gap"]
    assert warnings and "cannot cross that gap" in warnings[0]


def test_shipping_needs_binary_logging(tmp_path, conn):
    conn.log_bin = False
    with pytest.raises(BackupError, match="binary logging is off"):
        ship_binlogs(api_with([]), LOGIN, container="mysql", backup_dir=str(tmp_path))


@pytest.mark.skipif(not HAS_AGE, reason="age not installed")
def test_encrypted_shipping_writes_only_age_files_that_decrypt_to_the_binlog(tmp_path, conn, age_key):
    key, recipients = age_key
    api = api_with(conn.binlogs)
    ship_binlogs(api, LOGIN, container="mysql", backup_dir=str(tmp_path), encrypt_recipient_file=str(recipients))
    shipped = tmp_path / "binlogs"
    assert sorted(os.listdir(shipped)) == ["mysql-bin.000001.age", "mysql-bin.000002.age"]
    assert binlog_bytes("mysql-bin.000001") not in (shipped / "mysql-bin.000001.age").read_bytes()
    plain = subprocess.run(
        ["age", "-d", "-i", str(key), str(shipped / "mysql-bin.000001.age")], check=True, capture_output=True
    ).stdout
    assert plain == binlog_bytes("mysql-bin.000001")
    assert shipped_binlogs(str(tmp_path)) == {
        "mysql-bin.000001": "mysql-bin.000001.age",
        "mysql-bin.000002": "mysql-bin.000002.age",
    }


def write_backup(backup_dir, backup_id, binlog_file):
    manifest = {
        "format": 1,
        "id": backup_id,
        "status": "complete",
        "database": "app",
        "file": f"{backup_id}.sql.gz",
        "kind": "scheduled",
        "label": "",
        "compression": "gzip",
        "sha256": "0" * 64,
        "compressed_bytes": 4,
        "uncompressed_bytes": 4,
        "row_counts": {},
        "started_at": "2026-11-26T03:15:00Z",
        "finished_at": "2026-11-26T03:15:01Z",
        "binlog": {"file": binlog_file, "position": 4, "gtid": None},
    }
    (backup_dir / f"{backup_id}.sql.gz").write_bytes(b"dump")
    (backup_dir / f"{backup_id}.json").write_text(json.dumps(manifest))


def test_shipped_binlogs_older_than_every_kept_backup_are_pruned(tmp_path):
    shipped = tmp_path / "binlogs"
    shipped.mkdir()
    for number in range(1, 6):
        (shipped / f"mysql-bin.{number:06d}").write_bytes(b"x")
    (shipped / "mysql-bin.000002.age").write_bytes(b"x")
    assert prune_shipped_binlogs(str(tmp_path)) == []  # no backup: nothing is known to be useless
    write_backup(tmp_path, "20261125T031500Z-scheduled", "mysql-bin.000003")
    write_backup(tmp_path, "20261126T031500Z-scheduled", "mysql-bin.000005")
    assert prune_shipped_binlogs(str(tmp_path)) == ["mysql-bin.000001", "mysql-bin.000002"]
    assert sorted(os.listdir(shipped)) == ["mysql-bin.000003", "mysql-bin.000004", "mysql-bin.000005"]


# ---- point in time from encrypted shipped copies ---------------------------------


@pytest.mark.skipif(not HAS_AGE, reason="age not installed")
def test_point_in_time_decrypts_shipped_binlogs_for_the_replay_and_removes_the_plain_copy(
    load_module, monkeypatch, tmp_path, age_key, capsys
):
    key, recipients = age_key
    mod = load_module("mysql_restore")
    api, conn = FakeAPI(dump=DUMP), FakeConn()
    monkeypatch.setattr(mod, "docker_api", lambda docker_host=None: api)
    monkeypatch.setattr(mod, "connect", lambda login, database=None: conn)
    monkeypatch.setattr(f"{PKG}.mysql.connect", lambda login, database=None: conn)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    with backup_dir_lock(str(backup_dir)):
        manifest = run_backup(
            api, LOGIN, container="mysql", database="app", backup_dir=str(backup_dir), kind="scheduled",
            compression="gzip", encrypt_recipient_file=str(recipients),
        )  # fmt: skip
    ship_api = api_with(["mysql-bin.000001", "mysql-bin.000002"])
    ship_binlogs(ship_api, LOGIN, container="mysql", backup_dir=str(backup_dir), encrypt_recipient_file=str(recipients))
    conn.binlogs = ["mysql-bin.000002"]  # the server purged 000001
    stop = parse_iso(manifest["started_at"]) + dt.timedelta(minutes=5)
    args = {
        "backup_dir": str(backup_dir),
        "login_password": PASSWORD,
        "stop_datetime": iso(stop),
        "safety_backup": False,
        "decrypt_identity_file": str(key),
    }
    with patch_module_args(args), pytest.raises(SystemExit):
        mod.main()
    result = json.loads(capsys.readouterr().out)
    assert result.get("failed") is not True, result
    assert result["pitr"]["files"] == ["mysql-bin.000001", "mysql-bin.000002"]
    assert 0 <= result["restore"]["load_seconds"] <= result["restore"]["seconds"]
    assert api.files["mysql:/tmp/tmp.fake1/mysql-bin.000001"][0] == binlog_bytes("mysql-bin.000001")
    assert not [name for name in os.listdir(backup_dir) if name.startswith(".tmp-")]


def test_point_in_time_from_encrypted_shipped_binlogs_needs_the_identity(tmp_path):
    shipped = tmp_path / "binlogs"
    shipped.mkdir()
    (shipped / "mysql-bin.000001.age").write_bytes(b"age-encrypted")
    with pytest.raises(BackupError, match=r"000001\.age is encrypted with age: set decrypt_identity_file"):
        decrypt_to(str(shipped / "mysql-bin.000001.age"), str(tmp_path), "mysql-bin.000001", None)


# ---- offsite --------------------------------------------------------------------------


def test_rsync_adds_to_the_store_over_pinned_ssh_without_locks_or_partials():
    cmd = rsync_command("/var/backups/m/", target="offsite@store:.", ssh_key="/etc/k", known_hosts="/etc/kh", port=2222)
    assert cmd[0] == "rsync" and cmd[-2:] == ["/var/backups/m/", "offsite@store:./"]
    # Append-only by default: nothing an rrsync -no-del -no-overwrite store refuses.
    assert {"--archive", "--ignore-existing", "--exclude=/.lock", "--exclude=*.partial"} <= set(cmd)
    assert not {"--delete-after", "--delay-updates"} & set(cmd)
    ssh = cmd[cmd.index("--rsh") + 1]
    assert ssh.startswith("ssh -i /etc/k -p 2222 ")
    assert "StrictHostKeyChecking=yes" in ssh and "UserKnownHostsFile=/etc/kh" in ssh and "BatchMode=yes" in ssh


def test_rsync_mirrors_deletions_only_when_asked():
    mirror = rsync_command("/b", target="u@h:p", ssh_key="/k", known_hosts="/kh", delete=True)
    assert {"--delete-after", "--delay-updates"} <= set(mirror)
    assert "--ignore-existing" not in mirror


def test_offsite_without_its_key_is_a_clear_error(tmp_path):
    with pytest.raises(BackupError, match=r"the offsite SSH key /nope does not exist"):
        offsite_sync(str(tmp_path), target="u@h:p", ssh_key="/nope", known_hosts="/nope2")


def test_offsite_failure_names_the_target_and_rsync_error(tmp_path, monkeypatch):
    for name in ("key", "known_hosts"):
        (tmp_path / name).write_text("x")
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 255, "", "ssh: connect to host store port 22: Connection refused")

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(BackupError, match=r"offsite copy to u@store:p failed \(rsync exit 255\): ssh: connect"):
        offsite_sync(
            str(tmp_path), target="u@store:p", ssh_key=str(tmp_path / "key"), known_hosts=str(tmp_path / "known_hosts")
        )
    assert calls and calls[0][0] == "rsync"


def test_offsite_copy_to_a_local_directory_through_a_fake_ssh(tmp_path, monkeypatch):
    """rsync for real (remote shell replaced by a local one): files arrive, locks and partials do not."""
    if not shutil.which("rsync"):
        pytest.skip("rsync not installed")
    source, target = tmp_path / "backups", tmp_path / "store"
    source.mkdir()
    (source / "20261126T031500Z-scheduled.sql.zst").write_bytes(b"dump")
    (source / "20261126T031500Z-scheduled.json").write_text("{}")
    (source / ".lock").write_text("")
    (source / "x.sql.zst.partial").write_bytes(b"half")
    keys = rsync_through_a_local_shell(monkeypatch, tmp_path, "rsync_command")
    result = offsite_sync(str(source), target=f"u@h:{target}", **keys)
    assert sorted(os.listdir(target)) == ["20261126T031500Z-scheduled.json", "20261126T031500Z-scheduled.sql.zst"]
    assert result["target"] == f"u@h:{target}"


class LosingAPI(BinlogAPI):
    """The engine loses the output of the first ``cat`` of ``losing`` (moby/moby#27289), or of every one."""

    def __init__(self, binlogs, losing, times):
        super().__init__(binlogs)
        self.losing, self.times = losing, times

    def handle(self, cmd, stdin, record):
        if cmd[0] == "cat" and cmd[1] == self.losing and self.times:
            self.times -= 1
            return b"", b"", 0
        return super().handle(cmd, stdin, record)


def test_output_the_engine_lost_once_is_copied_again_with_a_warning(tmp_path, conn):
    files = api_with(conn.binlogs).binlog_files
    api = LosingAPI(files, "/var/lib/mysql/mysql-bin.000002", times=1)
    warnings = []
    result = ship_binlogs(api, LOGIN, container="mysql", backup_dir=str(tmp_path), warn=warnings.append)
    assert result["shipped"] == ["mysql-bin.000001", "mysql-bin.000002"]
    assert (tmp_path / "binlogs" / "mysql-bin.000002").read_bytes() == binlog_bytes("mysql-bin.000002")
    assert warnings == [
        "/var/lib/mysql/mysql-bin.000002 is 100 bytes on the server but 0 bytes were copied: "
        "the engine lost the output, copying it again"
    ]


def test_output_lost_twice_is_an_error_and_leaves_no_file(tmp_path, conn):
    api = LosingAPI(api_with(conn.binlogs).binlog_files, "/var/lib/mysql/mysql-bin.000002", times=2)
    with pytest.raises(BackupError, match=r"mysql-bin.000002 is 100 bytes on the server but 0 bytes were copied"):
        ship_binlogs(api, LOGIN, container="mysql", backup_dir=str(tmp_path), warn=lambda _m: None)
    assert sorted(os.listdir(tmp_path / "binlogs")) == ["mysql-bin.000001"]
