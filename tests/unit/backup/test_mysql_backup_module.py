"""The mysql_backup module: arguments, check mode, listing, failures as one clear message."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from ansible.module_utils.montaiguillon.backup.cgroup import IDLE_PLACE, Placement
from ansible.module_utils.montaiguillon.backup.ids import id_sort_key
from ansible.module_utils.montaiguillon.backup.pacing import without_background
from ansible.module_utils.montaiguillon.backup.retention import DEFAULT_RETENTION
from ansible.module_utils.testing import patch_module_args
from backup_fakes import MARIADB_DUMP, PASSWORD, FakeAPI, FakeConn, pad_dump

PKG = "ansible.module_utils.montaiguillon.backup"

DUMP = pad_dump(MARIADB_DUMP, 50_000)


@pytest.fixture
def mod(load_module):
    return load_module("mysql_backup")


@pytest.fixture
def world(mod, monkeypatch, tmp_path):
    """Fake engine and database wired into the module and the library."""

    class World:
        api = FakeAPI(dump=DUMP)
        conn = FakeConn()
        backup_dir = tmp_path / "backups"

    monkeypatch.setattr(mod, "docker_api", lambda docker_host=None: World.api)
    monkeypatch.setattr(f"{PKG}.mysql.connect", lambda login, database=None: World.conn)
    return World


def run(mod, capsys, **args):
    with patch_module_args(args), pytest.raises(SystemExit):
        mod.main()
    return json.loads(capsys.readouterr().out)


def base(world, **extra):
    return {
        "backup_dir": str(world.backup_dir),
        "database": "app",
        "login_password": PASSWORD,
        "compression": "gzip",
        **extra,
    }


def test_backup_then_list(mod, world, capsys):
    result = run(mod, capsys, **base(world, kind="pre-deploy", label="r7"))
    assert result["changed"] is True
    backup = result["backup"]
    assert backup["kind"] == "pre-deploy" and backup["label"] == "r7"
    assert os.path.exists(backup["path"])
    assert result["pruned"] == []
    assert PASSWORD not in json.dumps(result)
    assert oct(world.backup_dir.stat().st_mode & 0o777) == "0o700"

    listing = run(mod, capsys, state="list", backup_dir=str(world.backup_dir), verify_checksums=True)
    assert listing["changed"] is False
    assert listing["latest_good"] == backup["id"]
    assert [(b["id"], b["status"], b["checksum_ok"]) for b in listing["backups"]] == [(backup["id"], "complete", True)]


def test_list_flags_a_corrupt_backup_and_picks_the_previous_good_one(mod, world, capsys):
    first = run(mod, capsys, **base(world, kind="manual"))["backup"]
    second = run(mod, capsys, **base(world, kind="scheduled"))["backup"]
    path = Path(second["path"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    plain = run(mod, capsys, state="list", backup_dir=str(world.backup_dir))
    assert plain["latest_good"] == max(first["id"], second["id"], key=id_sort_key)
    checked = run(mod, capsys, state="list", backup_dir=str(world.backup_dir), verify_checksums=True)
    newest, older = checked["backups"]
    assert newest["checksum_ok"] is False and "sha256 mismatch" in newest["problems"][0]
    assert checked["latest_good"] == older["id"]


def test_check_mode_writes_nothing_and_reports_what_retention_would_prune(mod, world, capsys):
    ids = [run(mod, capsys, **base(world, kind="manual"))["backup"]["id"] for _ in range(3)]
    before = sorted(os.listdir(world.backup_dir))
    commands = len(world.api.commands)

    result = run(
        mod,
        capsys,
        _ansible_check_mode=True,
        **base(world, retention={"keep_last": 2, "daily": 0, "weekly": 0, "monthly": 0}),
    )
    assert result["changed"] is True
    assert result["backup"]["status"] == "planned"
    assert result["pruned"] == [ids[1], ids[0]]
    assert sorted(os.listdir(world.backup_dir)) == before
    assert not any(c[0] == "mariadb-dump" for c in world.api.commands[commands:])


def test_retention_defaults_apply_and_prune_happens_after_the_backup(mod, world, capsys):
    ids = [run(mod, capsys, **base(world, kind="manual", prune=False))["backup"]["id"] for _ in range(4)]
    result = run(mod, capsys, **base(world, kind="manual", retention={"keep_last": 1}))
    # daily 7 keeps the newest of today only; keep_last 1 the new one: the 4 earlier ones go
    assert sorted(result["pruned"]) == sorted(ids)
    remaining = {name.split(".")[0] for name in os.listdir(world.backup_dir) if not name.startswith(".")}
    assert remaining == {result["backup"]["id"]}


def files(world):
    return sorted(n for n in os.listdir(world.backup_dir) if not n.startswith(".")) if world.backup_dir.exists() else []


def test_a_snapshot_that_refuses_stale_backups_takes_nothing_and_says_why(mod, world, capsys):
    args = base(world, kind="pre-deploy", max_age_hours=26, refuse_stale=True)
    refused = run(mod, capsys, **args)
    assert refused["changed"] is False and refused["backup"] == {}
    assert "there is no good backup of app" in refused["refused"]
    assert refused["freshness"]["ok"] is False
    assert files(world) == [] and not any(c[0] == "mariadb-dump" for c in world.api.commands)

    run(mod, capsys, **base(world, kind="scheduled"))
    taken = run(mod, capsys, **args)
    assert taken["changed"] is True and "refused" not in taken
    assert taken["freshness"]["ok"] is True and taken["backup"]["kind"] == "pre-deploy"


def test_a_forced_snapshot_is_taken_and_still_reports_the_stale_backups(mod, world, capsys):
    forced = run(mod, capsys, **base(world, kind="pre-deploy", max_age_hours=26, refuse_stale=False))
    assert forced["changed"] is True and os.path.exists(forced["backup"]["path"])
    assert forced["freshness"]["ok"] is False and "refused" not in forced


def test_failures_are_one_message_and_leave_nothing(mod, world, capsys):
    world.api.dump = b""
    result = run(mod, capsys, **base(world))
    assert result["failed"] is True
    assert "suspiciously small" in result["msg"]
    assert [n for n in os.listdir(world.backup_dir) if not n.startswith(".")] == []


def test_a_paced_backup_records_its_pace_and_holds_the_same_data(mod, world, capsys, monkeypatch):
    # time passes only in sleep(): the clock is the real one plus what was slept
    real, offset = time.monotonic, [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: real() + offset[0])
    monkeypatch.setattr(time, "sleep", lambda seconds: offset.__setitem__(0, offset[0] + seconds))
    fast = run(mod, capsys, **base(world))["backup"]
    paced = run(mod, capsys, **base(world, max_rate="64k"))["backup"]
    assert fast["pacing"]["max_rate_bytes"] == 0 and fast["pacing"]["paused_seconds"] == 0.0
    assert paced["pacing"]["max_rate_bytes"] == 65536
    # the whole dump at 64 KiB/s: it took (at least) size / rate, mostly asleep
    assert paced["duration_seconds"] >= paced["uncompressed_bytes"] / 65536 * 0.95
    assert paced["pacing"]["paused_seconds"] == pytest.approx(paced["uncompressed_bytes"] / 65536, rel=0.1)
    assert fast["duration_seconds"] < paced["duration_seconds"] / 4
    assert paced["row_counts"] == fast["row_counts"] and paced["uncompressed_bytes"] == fast["uncompressed_bytes"]


def test_the_backup_joins_the_database_cgroup_before_its_compressor_starts(mod, world, capsys, monkeypatch):
    # children inherit the cgroup at fork: the compressor must start inside, the process leaves after
    events, real_popen = [], subprocess.Popen

    class Joined:
        def __init__(self, pid, container_id):
            events.append(("join", pid, container_id))

        def __enter__(self):
            return Placement(IDLE_PLACE, "/sys/fs/cgroup/cpu/docker/montaiguillon-backup-t")

        def __exit__(self, *exc):
            events.append(("leave",))

    def popen(cmd, *args, **kwargs):
        events.append(("spawn", without_background(list(cmd))[0]))
        return real_popen(cmd, *args, **kwargs)

    world.api.pid = 4860
    monkeypatch.setattr(f"{PKG}.take.joined_cpu_cgroup", Joined)
    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(Placement, "adopt", lambda _self, pid, expect=None: events.append(("adopt", pid, expect)))
    backup = run(mod, capsys, **base(world))["backup"]
    assert events == [
        ("join", 4860, world.api.container_id),
        ("spawn", "gzip"),
        ("adopt", world.api.exec_pid, "mariadb-dump"),  # docker exec starts the dump tool in the container's group
        ("leave",),
    ]
    assert backup["pacing"]["cpu_cgroup"] == "idle group beside the database container"


def test_a_backup_that_cannot_join_says_why_in_its_manifest(mod, world, capsys):
    # the fake engine reports no process: the backup runs in its own cgroup and records why
    backup = run(mod, capsys, **base(world))["backup"]
    assert backup["pacing"]["cpu_cgroup"] == "own: the engine reports no process for the database container"
    manifest = json.loads(Path(backup["manifest_path"]).read_text())
    assert manifest["pacing"]["cpu_cgroup"] == backup["pacing"]["cpu_cgroup"]


@pytest.mark.parametrize("max_rate", ["fast", "-1M", "1k"])
def test_a_bad_pace_fails_before_anything_is_done(mod, world, capsys, max_rate):
    result = run(mod, capsys, **base(world, max_rate=max_rate))
    assert result["failed"] is True
    assert f"max_rate {max_rate!r}" in result["msg"]
    assert world.api.commands == [] and not world.backup_dir.exists()


def test_present_needs_a_database(mod, world, capsys):
    result = run(mod, capsys, backup_dir=str(world.backup_dir))
    assert result["failed"] is True and "database is required" in result["msg"]


def test_password_is_no_log(mod):
    spec = mod.argument_spec()
    assert spec["login_password"]["no_log"] is True
    assert spec["login_unix_socket"]["default"] == "/run/montaiguillon/mysql/mysqld.sock"
    assert {k: v["default"] for k, v in spec["retention"]["options"].items()} == DEFAULT_RETENTION
