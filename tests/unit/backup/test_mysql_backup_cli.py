"""montaiguillon-backup, the command cron runs: exit codes, status file, log, webhook (fake engine and database)."""

import datetime as dt
import http.server
import json
import os
import syslog
import threading
import typing

import pytest
from ansible.module_utils.montaiguillon.backup import cli
from ansible.module_utils.montaiguillon.common.clock import iso, utcnow
from backup_fakes import MARIADB_DUMP, PASSWORD, FakeAPI, FakeConn, pad_dump

PKG = "ansible.module_utils.montaiguillon.backup"

DUMP = pad_dump(MARIADB_DUMP, 50_000)


@pytest.fixture
def world(monkeypatch, tmp_path):
    class World:
        api = FakeAPI(dump=DUMP)
        conn = FakeConn()
        backup_dir = tmp_path / "backups"
        status_file = tmp_path / "state" / "status.json"
        log_file = tmp_path / "backup.log"
        config_file = tmp_path / "config.json"
        syslog: typing.ClassVar[list] = []

    monkeypatch.setattr(f"{PKG}.container.docker_api", lambda docker_host=None: World.api)
    monkeypatch.setattr(f"{PKG}.mysql.connect", lambda login, database=None: World.conn)
    monkeypatch.setattr(syslog, "syslog", lambda priority, message: World.syslog.append((priority, message)))
    write_config(World)
    umask = os.umask(0o022)  # main() sets 077 for the process: give it back afterwards
    yield World
    os.umask(umask)


def write_config(world, **extra):
    config = {
        "host": "site.com",
        "backup_dir": str(world.backup_dir),
        "database": "app",
        "compression": "gzip",
        "login_password": PASSWORD,
        "status_file": str(world.status_file),
        "log_file": str(world.log_file),
        "binlogs": {"enabled": False},
        **extra,
    }
    world.config_file.write_text(json.dumps(config))


def main(world, *argv):
    return cli.main(["--config", str(world.config_file), *argv])


def status(world):
    return json.loads(world.status_file.read_text())


def test_run_backs_up_records_success_and_logs_one_line(world, capsys):
    assert main(world, "run") == 0
    entry = status(world)["backup"]
    assert entry["last_result"] == "ok" and entry["last_error"] is None
    assert entry["last_success"] == entry["last_attempt"]
    backup_id = entry["details"]["id"]
    assert backup_id.endswith("-scheduled")
    assert (world.backup_dir / f"{backup_id}.json").exists()
    assert entry["details"]["rows"] == 6 and entry["details"]["tables"] == 3
    assert oct(world.status_file.stat().st_mode & 0o777) == "0o644"
    log = world.log_file.read_text()
    assert f"site.com info: backup ok: {backup_id}" in log
    assert any(f"backup ok: {backup_id}" in message for _, message in world.syslog)
    assert PASSWORD not in log and PASSWORD not in world.status_file.read_text()
    assert oct(world.log_file.stat().st_mode & 0o777) == "0o600"


def test_a_failed_run_exits_1_keeps_the_last_success_and_counts_failures(world, capsys):
    assert main(world, "run") == 0
    good = status(world)["backup"]["last_success"]
    world.api.running = False
    assert main(world, "run") == 1
    assert main(world, "run") == 1
    entry = status(world)["backup"]
    assert entry["last_result"] == "failed"
    assert entry["last_error"] == "container mysql is not running"
    assert entry["last_success"] == good
    assert entry["consecutive_failures"] == 2
    assert "error: backup FAILED: container mysql is not running" in world.log_file.read_text()
    assert "backup FAILED" in capsys.readouterr().err


def test_a_failure_is_posted_to_the_webhook(world, capsys):
    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.handle_request, daemon=True).start()
    write_config(world, notify_url=f"http://127.0.0.1:{server.server_port}/hook")
    world.api.running = False
    try:
        assert main(world, "run") == 1
    finally:
        server.server_close()
    assert received == [
        {
            "host": "site.com",
            "job": "backup",
            "result": "failed",
            "error": "container mysql is not running",
            "at": received[0]["at"],
        }
    ]


def test_an_unreachable_webhook_is_logged_and_does_not_hide_the_failure(world, capsys):
    write_config(world, notify_url="http://127.0.0.1:9/hook", notify_timeout=2)
    world.api.running = False
    assert main(world, "run") == 1
    log = world.log_file.read_text()
    assert "backup FAILED" in log and "the failure notification could not be sent" in log


def test_run_also_ships_binlogs_and_a_shipping_failure_fails_the_run(world, capsys):
    write_config(world, binlogs={"enabled": True})
    world.conn.log_bin = False  # the backup works (no position), shipping cannot
    assert main(world, "run") == 1
    current = status(world)
    assert current["backup"]["last_result"] == "ok"
    assert current["binlogs"]["last_result"] == "failed"
    assert "binary logging is off" in current["binlogs"]["last_error"]


@pytest.mark.parametrize(
    ("hours_ago", "failed_job", "expected_code", "problem"),
    [
        (1, None, 0, None),
        (30, None, 1, "the last successful backup is 30.0 h old (limit 26.0 h)"),
        (1, "offsite", 1, "the last offsite run failed"),
        (None, None, 1, "no scheduled backup has ever succeeded"),
    ],
)
def test_status_exits_non_zero_when_backups_are_stale_or_failing(
    world, capsys, hours_ago, failed_job, expected_code, problem
):
    now = utcnow()
    document = {}
    if hours_ago is not None:
        when = iso(now - dt.timedelta(hours=hours_ago))
        document["backup"] = {"last_result": "ok", "last_success": when, "last_attempt": when}
    if failed_job:
        document[failed_job] = {"last_result": "failed", "last_error": "rsync exit 255", "last_attempt": "x"}
    world.status_file.parent.mkdir(parents=True)
    world.status_file.write_text(json.dumps(document))
    assert main(world, "status") == expected_code
    problems = json.loads(capsys.readouterr().out)["problems"]
    if problem:
        assert any(p.startswith(problem) for p in problems), problems
    else:
        assert problems == []


def test_json_output_is_only_json_on_stdout(world, capsys):
    assert main(world, "--json", "run") == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["ok"] is True and result["backup"]["id"].endswith("-scheduled")
    assert "backup ok" in err


def test_drill_records_the_result_and_a_failed_drill_exits_1(world, monkeypatch, capsys):
    assert main(world, "run") == 0
    drill_conn = FakeConn()
    monkeypatch.setattr(f"{PKG}.drill._wait_for_server", lambda login, container_id, api, timeout: drill_conn)
    assert main(world, "drill") == 0
    entry = status(world)["drill"]
    assert entry["last_result"] == "ok" and entry["details"]["status"] == "passed"
    drill_conn.counts["users"] = 0
    assert main(world, "drill") == 1
    assert "row counts differ" in status(world)["drill"]["last_error"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the configuration"),
        ("{not json", "is not valid JSON"),
        ('{"backup_dir": "/b"}', "lacks database"),
        ('{"backup_dir": "/b", "database": "d", "offsite": {"enabled": true}}', "offsite is enabled but target"),
        ('{"backup_dir": "/b", "database": "d", "max_rate": "fast"}', "max_rate 'fast' is not a rate"),
    ],
)
def test_a_bad_configuration_exits_2_with_a_clear_message(tmp_path, capsys, content, message):
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    assert cli.main(["--config", str(path), "run"]) == 2
    assert message in capsys.readouterr().err


def test_run_first_backs_up_only_when_no_backup_run_is_recorded(world, capsys):
    write_config(world, binlogs={"enabled": False})
    # Binlog shipping ran first and wrote the status file: that is not a backup run.
    world.status_file.parent.mkdir(parents=True, exist_ok=True)
    world.status_file.write_text(json.dumps({"binlogs": {"last_result": "ok"}}))
    assert main(world, "--json", "run", "--first") == 0
    first = json.loads(capsys.readouterr().out)
    assert "skipped" not in first and first["backup"]["id"].endswith("-scheduled")
    taken = sorted(world.backup_dir.glob("*.json"))
    assert len(taken) == 1

    assert main(world, "--json", "run", "--first") == 0
    again = json.loads(capsys.readouterr().out)
    assert again["skipped"] == "a backup run is already recorded (run --first takes only the first one)"
    assert sorted(world.backup_dir.glob("*.json")) == taken


def test_a_failed_first_run_still_counts_as_recorded(world, capsys):
    world.status_file.parent.mkdir(parents=True, exist_ok=True)
    world.status_file.write_text(json.dumps({"backup": {"last_result": "failed"}}))
    assert main(world, "--json", "run", "--first") == 0
    assert "skipped" in json.loads(capsys.readouterr().out)
    assert not world.backup_dir.exists() or list(world.backup_dir.glob("*.json")) == []


def test_fetch_needs_the_offsite_store_and_leaves_the_status_file_alone(world, capsys):
    write_config(world)
    assert main(world, "fetch") == 1
    assert "offsite copies are disabled in the configuration: there is no store" in capsys.readouterr().err
    assert not world.status_file.exists()
