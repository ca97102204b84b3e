"""The backup role on a fresh server: the schedule, a run, its status, its failures, permissions, encryption."""

import json
import os
import re
from pathlib import Path

import pytest

BACKUP_DIR = "/var/backups/montaiguillon/mysql"
STATUS = "/var/lib/montaiguillon-backup/status.json"
LOG = "/var/log/montaiguillon-backup.log"
SECRET = "molecule-root-secret"
BACKUP_SECRET = "molecule-backup-secret"
CRON_ENV = "env -i PATH=/usr/bin:/bin HOME=/root SHELL=/bin/sh LOGNAME=root"


def cron_jobs(host):
    lines = host.file("/etc/cron.d/montaiguillon-backup").content_string.splitlines()
    marker = "#Ansible: "
    return {line[len(marker) :]: lines[i + 1] for i, line in enumerate(lines) if line.startswith(marker)}


def status(host):
    return json.loads(host.file(STATUS).content_string)


def dumps(host):
    return sorted(n for n in host.file(BACKUP_DIR).listdir() if re.match(r"^\d{8}T\d{6}Z-\w+\.sql\.zst\.age$", n))


def run_job(host, name):
    """Run a cron job's command line exactly as installed, in cron's environment."""
    command = cron_jobs(host)[name].split(None, 6)[6]
    return host.run(f"{CRON_ENV} /bin/sh -c '{command}'")


def test_cron_runs_the_backup_daily_the_shipping_every_15_minutes_and_the_drill_weekly(host):
    jobs = cron_jobs(host)
    assert jobs["montaiguillon backup"].startswith("15 3 * * * root nice -n 10 ionice -c2 -n7 ")
    assert jobs["montaiguillon backup"].endswith(f"/usr/local/sbin/montaiguillon-backup run >>{LOG} 2>&1")
    assert jobs["montaiguillon binlog shipping"].startswith("5-59/15 * * * * root ")
    assert " ship-binlogs " in jobs["montaiguillon binlog shipping"]
    drill = jobs["montaiguillon restore drill"]
    assert drill.startswith("45 4 * * 0 root ") and " drill " in drill
    assert host.service("cron").is_running and host.service("cron").is_enabled


def test_the_role_took_a_first_backup(host):
    first = status(host)["backup"]
    assert first["last_result"] == "ok"
    assert host.file(f"{BACKUP_DIR}/{first['details']['id']}.json").exists


def test_a_run_creates_a_backup_and_records_it(host):
    before = dumps(host)
    run = run_job(host, "montaiguillon backup")
    assert run.rc == 0, host.file(LOG).content_string[-2000:]
    new = sorted(set(dumps(host)) - set(before))
    assert len(new) == 1
    backup_id = new[0].split(".")[0]
    entry = status(host)["backup"]
    assert entry["last_result"] == "ok" and entry["details"]["id"] == backup_id
    assert entry["details"]["encrypted"] is True
    assert status(host)["binlogs"]["last_result"] == "ok"
    assert f"backup ok: {backup_id}" in host.file(LOG).content_string
    manifest = json.loads(host.file(f"{BACKUP_DIR}/{backup_id}.json").content_string)
    assert host.check_output(f"sha256sum {BACKUP_DIR}/{new[0]}").split()[0] == manifest["sha256"]
    assert host.run("montaiguillon-backup status").rc == 0


def test_backups_are_encrypted_at_rest_with_the_key_outside_the_backup_directory(host):
    newest = dumps(host)[-1]
    assert host.file(f"{BACKUP_DIR}/{newest}").content[:21] == b"age-encryption.org/v1"
    assert host.run(f"grep -rl 'AGE-SECRET-KEY' {BACKUP_DIR}").stdout == ""
    assert "AGE-SECRET-KEY-1" in host.file("/etc/montaiguillon/backup/age-identity.txt").content_string


@pytest.mark.parametrize(
    ("path", "mode"),
    [
        (BACKUP_DIR, 0o700),
        ("/etc/montaiguillon/backup", 0o700),
        ("/etc/montaiguillon/backup/config.json", 0o600),
        ("/etc/montaiguillon/backup/age-identity.txt", 0o600),
        ("/etc/montaiguillon/backup/age-recipients.txt", 0o644),
        ("/usr/local/sbin/montaiguillon-backup", 0o755),
        ("/usr/local/lib/montaiguillon-backup/ansible/module_utils/montaiguillon/backup/take.py", 0o644),
        (STATUS, 0o644),
        (LOG, 0o600),
    ],
)
def test_permissions(host, path, mode):
    assert host.file(path).mode == mode
    assert host.file(path).user == "root"


def test_backup_files_are_root_only(host):
    modes = host.check_output(f"stat -c '%a %U' {BACKUP_DIR}/*.json {BACKUP_DIR}/*.age").splitlines()
    assert modes and set(modes) == {"600 root"}


def test_the_password_is_only_in_the_root_only_settings(host):
    places = f"/etc/cron.d /var/lib/montaiguillon-backup {LOG} {BACKUP_DIR} /usr/local"
    found = host.run(f"grep -rl {BACKUP_SECRET} {places}").stdout
    assert found == ""
    assert BACKUP_SECRET in host.file("/etc/montaiguillon/backup/config.json").content_string


def test_scheduled_backups_run_as_the_backup_user_not_root(host):
    config = json.loads(host.file("/etc/montaiguillon/backup/config.json").content_string)
    assert config["login_user"] == "montaiguillon_backup"
    # The root password is nowhere the backup tool looks (config, cron, logs, status, backups).
    places = f"/etc/montaiguillon/backup /etc/cron.d /var/lib/montaiguillon-backup {LOG} {BACKUP_DIR} /usr/local"
    assert host.run(f"grep -rl {SECRET} {places}").stdout == ""
    # The role's first backup and the cron job ran as that user: its dumps are complete.
    run = run_job(host, "montaiguillon backup")
    assert run.rc == 0, host.file(LOG).content_string[-2000:]
    shipping = run_job(host, "montaiguillon binlog shipping")
    assert shipping.rc == 0, host.file(LOG).content_string[-2000:]
    assert status(host)["binlogs"]["last_result"] == "ok"


def test_the_library_is_the_one_the_modules_use(host):
    project = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
    source = project / "plugins" / "module_utils"
    ours = sorted(p.relative_to(source) for p in source.rglob("*.py") if "__pycache__" not in p.parts)
    installed = "/usr/local/lib/montaiguillon-backup/ansible/module_utils"
    on_server = set(host.check_output(f"cd {installed} && find . -name '*.py' -printf '%P\\n'").splitlines())
    needed = [p for p in ours if p.parts[0] == "montaiguillon"]
    assert needed and {str(p) for p in needed} <= on_server
    for path in needed:
        assert host.file(f"{installed}/{path}").content_string == (source / path).read_text(), path
    assert "docker_common.py" not in on_server
    retired = {"mysql_backup_lib.py", "mysql_backup_cli.py", "cpu_cgroup.py"}  # the package has them now
    assert not retired & on_server


def test_the_weekly_drill_restores_the_newest_backup_and_records_it(host):
    run = run_job(host, "montaiguillon restore drill")
    assert run.rc == 0, host.file(LOG).content_string[-2000:]
    drilled = status(host)["drill"]["details"]
    assert drilled["status"] == "passed" and drilled["restore_seconds"] > 0
    record = json.loads(host.file(f"{BACKUP_DIR}/{drilled['id']}.drill.json").content_string)
    assert record["status"] == "passed"


def test_a_failed_run_exits_non_zero_and_shows_in_the_status(host):
    host.check_output("docker stop -t 30 mysql")
    try:
        assert run_job(host, "montaiguillon backup").rc != 0
        entry = status(host)["backup"]
        assert entry["last_result"] == "failed"
        assert entry["last_error"] == "container mysql is not running"
        check = host.run("montaiguillon-backup status")
        assert check.rc == 1 and "the last backup run failed" in check.stdout
        assert "backup FAILED: container mysql is not running" in host.file(LOG).content_string
    finally:
        host.check_output("docker start mysql")
        # Healthy again, as the database tests of this scenario expect it.
        healthy = "[ \"$(docker inspect -f '{{.State.Health.Status}}' mysql)\" = healthy ]"
        host.run(f"for i in $(seq 120); do {healthy} && exit 0; sleep 1; done")
    assert run_job(host, "montaiguillon backup").rc == 0
