"""Backups proven by restoring them, on the lab's prod server (site.com).

Runs against the local lab (127.0.0.1 and the lab's own containers only):
`make lab` first, or a second lab with LAB_INVENTORY/LAB_PREFIX. The module
fixture applies the backup role to site.com (idempotent), so the file also
runs before the role is part of site.yml. Each test writes its own table.
"""

import hashlib
import json
import re
import subprocess
import time

import pytest
from labtools import INVENTORY, PREFIX, on_server
from labtools import container as lab_container

pytestmark = pytest.mark.lab

HOST = "site.com"
SERVER = lab_container(HOST)
STORE = f"{PREFIX}-backup-store"
BACKUP_DIR = "/var/backups/montaiguillon/mysql"
STATUS_FILE = "/var/lib/montaiguillon-backup/status.json"
CRON_FILE = "/etc/cron.d/montaiguillon-backup"
IDENTITY = INVENTORY.parent / ".generated" / "backup" / "age-identity.txt"
# The environment cron gives a job (Debian's cron: a minimal PATH, HOME and SHELL).
CRON_ENV = ["env", "-i", "PATH=/usr/bin:/bin", "HOME=/root", "SHELL=/bin/sh", "LOGNAME=root"]


# ---- helpers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def sql(lab_secret):
    password = lab_secret("prod", "vault_mysql_root_password")

    def run(query, check=True):
        out = on_server(
            SERVER, "docker", "exec", "-e", f"MYSQL_PWD={password}", "mysql",
            "mariadb", "-uroot", "-N", "-B", "montaiguillon", "-e", query, check=False,
        )  # fmt: skip
        if check:
            assert out.returncode == 0, out.stderr
        return out

    return run


def rows(sql, table):
    out = sql(f"SELECT * FROM {table} ORDER BY id").stdout  # noqa: S608 - our own table names
    return [tuple(line.split("\t")) for line in out.splitlines()]


def shell(command, check=True):
    return on_server(SERVER, "sh", "-c", command, check=check)


def manifest(backup_id, backup_dir=BACKUP_DIR):
    return json.loads(shell(f"cat {backup_dir}/{backup_id}.json").stdout)


def backup_ids(backup_dir=BACKUP_DIR):
    names = shell(f"ls {backup_dir}").stdout.split()
    return sorted(name[:-5] for name in names if re.match(r"^\d{8}T\d{6}Z-.*\.json$", name) and ".drill" not in name)


def server_now():
    """The server's clock, as restore_to wants it (UTC)."""
    return shell("date -u '+%Y-%m-%d %H:%M:%S'").stdout.strip()


def cron_command(name):
    """The command line of the cron job named ``name``, exactly as installed in /etc/cron.d."""
    lines = shell(f"cat {CRON_FILE}").stdout.splitlines()
    job = lines[lines.index(f"#Ansible: {name}") + 1]
    return job.split(None, 6)[6]  # minute hour day month weekday user COMMAND


def run_cron_job(name):
    return on_server(SERVER, *CRON_ENV, "/bin/sh", "-c", cron_command(name), check=False)


def take_backup(playbook):
    run = playbook("backup.yml", "-l", HOST)
    assert run.rc == 0, run.output[-3000:]
    return re.search(r"Backup (\S+) of database montaiguillon on site\.com", run.output)[1], run


def restore(playbook, *extra):
    return playbook("restore.yml", "-l", HOST, *extra)


@pytest.fixture(scope="module", autouse=True)
def provisioned(playbook, tmp_path_factory):
    """The backup role on site.com (on top of `make lab`), as site.yml applies it."""
    play = tmp_path_factory.mktemp("backup") / "backup_role.yml"
    play.write_text("- hosts: prod\n  roles: [backup]\n")
    run = playbook(str(play))
    assert run.rc == 0, run.output[-4000:]
    return run


# ---- backup now ----------------------------------------------------------------


def test_backup_playbook_says_where_the_backup_is_and_what_it_holds(playbook, sql):
    sql("DROP TABLE IF EXISTS probe_now; CREATE TABLE probe_now (id INT PRIMARY KEY, v TEXT);"
        " INSERT INTO probe_now VALUES (1,'a'),(2,'b'),(3,'c');")  # fmt: skip
    backup_id, run = take_backup(playbook)
    written = manifest(backup_id)
    path = f"{BACKUP_DIR}/{written['file']}"
    assert f"file: {path}" in run.output
    assert f"sha256: {written['sha256']}" in run.output
    assert "probe_now=3" in run.output
    assert "encrypted with age" in run.output
    assert shell(f"sha256sum {path}").stdout.split()[0] == written["sha256"]
    assert written["row_counts"]["probe_now"] == 3
    # Encrypted at rest: the SQL is nowhere in the file, and the file is root's only.
    assert shell(f"grep -c probe_now {path}", check=False).stdout.strip() == "0"
    assert shell(f"stat -c %a {path} {BACKUP_DIR}").stdout.split() == ["600", "700"]


# ---- restore -----------------------------------------------------------------------


def test_restore_brings_back_exactly_the_backed_up_rows_and_can_be_undone(playbook, sql):
    sql("DROP TABLE IF EXISTS probe_restore; CREATE TABLE probe_restore (id INT PRIMARY KEY, v TEXT);"
        " INSERT INTO probe_restore VALUES (1,'one'),(2,'two'),(3,'three');")  # fmt: skip
    backed_up = rows(sql, "probe_restore")
    backup_id, _ = take_backup(playbook)
    sql("INSERT INTO probe_restore VALUES (4,'four'); UPDATE probe_restore SET v='changed' WHERE id=1;"
        " DELETE FROM probe_restore WHERE id=2;")  # fmt: skip
    later = rows(sql, "probe_restore")
    # A container of the site (label montaiguillon.app) is stopped during the restore, started after.
    image = shell("docker inspect -f '{{.Config.Image}}' mysql").stdout.strip()
    shell(f"docker rm -f app-probe >/dev/null 2>&1; docker run -d --name app-probe --init"
          f" --label montaiguillon.app=probe --entrypoint sleep {image} 600")  # fmt: skip
    started_before = shell("docker inspect -f '{{.State.StartedAt}}' app-probe").stdout.strip()

    plan = restore(playbook, "-e", f"restore_backup={backup_id}")
    assert plan.rc == 0, plan.output[-3000:]
    assert "Nothing was changed. Run again with -e restore_confirm=yes" in plan.output
    assert f"backup {backup_id} (manual" in plan.output
    assert "stopped: app-probe" in plan.output
    assert rows(sql, "probe_restore") == later

    done = restore(playbook, "-e", f"restore_backup={backup_id}", "-e", "restore_confirm=yes")
    assert done.rc == 0, done.output[-3000:]
    assert rows(sql, "probe_restore") == backed_up
    assert shell("docker inspect -f '{{.State.Running}}' app-probe").stdout.strip() == "true"
    assert shell("docker inspect -f '{{.State.StartedAt}}' app-probe").stdout.strip() != started_before
    shell("docker rm -f app-probe")

    undo = re.search(r"Undo: (ansible-playbook restore\.yml .*?restore_confirm=yes)", done.output)[1]
    safety = re.search(r"restore_backup=(\S+)", undo)[1]
    assert safety.endswith("-safety")
    undone = restore(playbook, "-e", f"restore_backup={safety}", "-e", "restore_confirm=yes")
    assert undone.rc == 0, undone.output[-3000:]
    assert rows(sql, "probe_restore") == later


def test_restore_to_a_point_in_time_between_two_writes(playbook, sql):
    sql("DROP TABLE IF EXISTS probe_pitr; CREATE TABLE probe_pitr (id INT PRIMARY KEY, v TEXT);"
        " INSERT INTO probe_pitr VALUES (1,'in the backup');")  # fmt: skip
    take_backup(playbook)
    sql("INSERT INTO probe_pitr VALUES (2,'after the backup, before the point')")
    time.sleep(1.5)
    point = server_now()
    time.sleep(1.5)
    sql("INSERT INTO probe_pitr VALUES (3,'after the point')")

    run = restore(playbook, "-e", f"restore_to='{point}'", "-e", "restore_confirm=yes")
    assert run.rc == 0, run.output[-3000:]
    assert "Replayed binlogs" in run.output
    assert [r[0] for r in rows(sql, "probe_pitr")] == ["1", "2"]


def test_point_in_time_from_shipped_binlogs_the_server_no_longer_has(playbook, sql):
    sql("DROP TABLE IF EXISTS probe_shipped; CREATE TABLE probe_shipped (id INT PRIMARY KEY, v TEXT);"
        " INSERT INTO probe_shipped VALUES (1,'in the backup');")  # fmt: skip
    take_backup(playbook)
    sql("INSERT INTO probe_shipped VALUES (2,'only in a shipped binlog')")
    shipping = run_cron_job("montaiguillon binlog shipping")
    assert shipping.returncode == 0, shipping.stdout + shipping.stderr
    time.sleep(1.5)
    point = server_now()
    time.sleep(1.5)
    sql("INSERT INTO probe_shipped VALUES (3,'after the point')")
    active = sql("SHOW MASTER STATUS").stdout.split()[0]
    sql(f"PURGE BINARY LOGS TO '{active}'")
    assert len(sql("SHOW BINARY LOGS").stdout.splitlines()) == 1
    shipped = shell(f"ls {BACKUP_DIR}/binlogs").stdout.split()
    assert shipped and all(name.endswith(".age") for name in shipped)

    run = restore(playbook, "-e", f"restore_to={point.replace(' ', 'T')}", "-e", "restore_confirm=yes")
    assert run.rc == 0, run.output[-3000:]
    assert [r[0] for r in rows(sql, "probe_shipped")] == ["1", "2"]


def test_a_corrupted_backup_is_refused_and_nothing_changes(playbook, sql):
    sql("DROP TABLE IF EXISTS probe_corrupt; CREATE TABLE probe_corrupt (id INT PRIMARY KEY, v TEXT);"
        " INSERT INTO probe_corrupt VALUES (1,'backed up');")  # fmt: skip
    backup_id, _ = take_backup(playbook)
    sql("INSERT INTO probe_corrupt VALUES (2,'written after')")
    path = f"{BACKUP_DIR}/{manifest(backup_id)['file']}"
    flip = (
        "import sys; p = sys.argv[1]; d = bytearray(open(p, 'rb').read()); d[len(d) // 2] ^= 1;"
        " open(p, 'wb').write(bytes(d))"
    )
    on_server(SERVER, "python3", "-c", flip, path)
    before = backup_ids()

    run = restore(playbook, "-e", f"restore_backup={backup_id}", "-e", "restore_confirm=yes")
    assert run.rc != 0
    assert f"backup {backup_id} is corrupt: sha256 mismatch" in run.output
    assert "nothing was changed" in run.output
    assert "Restore the database (safety backup first)" not in run.output
    assert [r[0] for r in rows(sql, "probe_corrupt")] == ["1", "2"]
    assert backup_ids() == before  # not even a safety backup
    shell(f"rm -f {BACKUP_DIR}/{backup_id}.*")


def test_a_full_disk_fails_the_backup_cleanly_and_keeps_the_earlier_ones(playbook, sql):
    full = "/srv/probe-full-disk"
    shell(f"mkdir -p {full} && mount -t tmpfs -o size=2m,mode=0700 tmpfs {full}")
    try:
        first = playbook("backup.yml", "-l", HOST, "-e", f"backup_dir={full}")
        assert first.rc == 0, first.output[-3000:]
        earlier = backup_ids(full)
        assert len(earlier) == 1
        # ~1.5 MB of incompressible rows, and the disk filled but for 64 KiB.
        sql("DROP TABLE IF EXISTS probe_big; CREATE TABLE probe_big (id INT PRIMARY KEY, v BLOB);"
            " INSERT INTO probe_big SELECT seq, RANDOM_BYTES(1024) FROM seq_1_to_1500;")  # fmt: skip
        shell(f"dd if=/dev/zero of={full}/filler bs=1k count=$(( $(df -k --output=avail {full} | tail -1) - 64 ))"
              " 2>/dev/null; true")  # fmt: skip

        second = playbook("backup.yml", "-l", HOST, "-e", f"backup_dir={full}")
        assert second.rc != 0
        assert "no space left on device" in second.output
        assert "earlier backups are untouched" in second.output
        assert backup_ids(full) == earlier
        assert not [n for n in shell(f"ls -a {full}").stdout.split() if n.endswith(".partial")]
        kept = manifest(earlier[0], full)
        assert shell(f"sha256sum {full}/{kept['file']}").stdout.split()[0] == kept["sha256"]
    finally:
        shell(f"umount {full}; rmdir {full}", check=False)
        sql("DROP TABLE IF EXISTS probe_big")


# ---- the schedule -----------------------------------------------------------------


def test_the_cron_entry_really_runs_the_backup_and_copies_it_offsite(sql):
    sql("DROP TABLE IF EXISTS probe_cron; CREATE TABLE probe_cron (id INT PRIMARY KEY);"
        " INSERT INTO probe_cron VALUES (1),(2);")  # fmt: skip
    before = backup_ids()
    assert shell("systemctl is-active cron").stdout.strip() == "active"
    assert cron_command("montaiguillon backup").endswith("-backup run >>/var/log/montaiguillon-backup.log 2>&1")

    ran = run_cron_job("montaiguillon backup")
    assert ran.returncode == 0, shell("tail -5 /var/log/montaiguillon-backup.log").stdout
    new = sorted(set(backup_ids()) - set(before))
    assert len(new) == 1 and new[0].endswith("-scheduled")
    written = manifest(new[0])
    assert written["row_counts"]["probe_cron"] == 2
    status = json.loads(shell(f"cat {STATUS_FILE}").stdout)
    assert status["backup"]["last_result"] == "ok"
    assert status["backup"]["details"]["id"] == new[0]
    assert {status[job]["last_result"] for job in ("binlogs", "offsite")} == {"ok"}
    assert f"backup ok: {new[0]}" in shell("tail -5 /var/log/montaiguillon-backup.log").stdout

    # The offsite copy: same bytes on the storage host, restorable with the key kept off the server.
    stored = f"/srv/backup/{HOST}/{written['file']}"
    copy = subprocess.run(["docker", "exec", STORE, "cat", stored], capture_output=True, check=True).stdout
    assert len(copy) == written["compressed_bytes"]
    assert hashlib.sha256(copy).hexdigest() == written["sha256"]
    compressed = subprocess.run(["age", "-d", "-i", str(IDENTITY)], input=copy, capture_output=True, check=True).stdout
    plain = subprocess.run(["zstd", "-dc"], input=compressed, capture_output=True, check=True).stdout
    assert plain.startswith(b"/*M!999999") or plain.startswith(b"-- MariaDB dump")
    assert b"INSERT INTO `probe_cron` VALUES" in plain
    assert plain.rstrip().splitlines()[-1].startswith(b"-- Dump completed")
    binlogs = subprocess.run(["docker", "exec", STORE, "ls", f"/srv/backup/{HOST}/binlogs"], capture_output=True,
                             text=True, check=True).stdout.split()  # fmt: skip
    assert binlogs == sorted(shell(f"ls {BACKUP_DIR}/binlogs").stdout.split())


def test_a_failed_run_is_visible_in_exit_code_status_and_log():
    shell("docker stop -t 30 mysql >/dev/null")
    try:
        ran = run_cron_job("montaiguillon backup")
        assert ran.returncode != 0
        status = json.loads(shell(f"cat {STATUS_FILE}").stdout)
        assert status["backup"]["last_result"] == "failed"
        assert "container mysql is not running" in status["backup"]["last_error"]
        assert status["backup"]["last_success"]  # the last good one is still named
        check = shell("montaiguillon-backup status", check=False)
        assert check.returncode == 1
        assert "the last backup run failed" in check.stdout
        log = shell("tail -5 /var/log/montaiguillon-backup.log").stdout
        assert "backup FAILED: container mysql is not running" in log
        journal = shell("journalctl -t montaiguillon-backup --since '-2 min' --no-pager").stdout
        assert "backup FAILED" in journal
    finally:
        shell("docker start mysql >/dev/null")
        healthy = "[ \"$(docker inspect -f '{{.State.Health.Status}}' mysql)\" = healthy ]"
        shell(f"for i in $(seq 60); do {healthy} && exit 0; sleep 1; done; exit 1")
    assert run_cron_job("montaiguillon backup").returncode == 0
    assert shell("montaiguillon-backup status", check=False).returncode == 0


def test_restore_drill_records_the_restore_time_with_the_backup(playbook):
    assert "montaiguillon-backup drill" in cron_command("montaiguillon restore drill")
    run = playbook("playbooks/backup_drill.yml", "-l", HOST)
    assert run.rc == 0, run.output[-3000:]
    drilled = re.search(r"Drill of backup (\S+) on site\.com: passed", run.output)[1]
    rto = float(re.search(r"RTO: restored in ([\d.]+) s", run.output)[1])
    record = json.loads(shell(f"cat {BACKUP_DIR}/{drilled}.drill.json").stdout)
    assert record["status"] == "passed" and record["mismatches"] == []
    assert record["restore_seconds"] == rto > 0
    assert manifest(drilled)["verified"] is True
    # No drill container is left behind, and the record went offsite too.
    assert shell("docker ps -aq --filter label=montaiguillon.backup-drill").stdout.strip() == ""
    subprocess.run(["docker", "exec", STORE, "test", "-f", f"/srv/backup/{HOST}/{drilled}.drill.json"], check=True)
    listing = playbook("playbooks/backups.yml", "-l", HOST, "-e", "backups_verify=true")
    assert listing.rc == 0, listing.output[-3000:]
    assert re.search(rf"{drilled}\s+\S+\s+complete .* yes\s+passed \({rto} s\)", listing.output)


# ---- the deploy's guard -----------------------------------------------------------------


@pytest.fixture
def pre_deploy(playbook, tmp_path):
    play = tmp_path / "pre_deploy.yml"
    play.write_text(
        "- hosts: prod\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.include_role: {name: backup, tasks_from: pre_deploy}\n"
        "    - ansible.builtin.debug: {var: backup_pre_deploy_snapshot}\n"
    )
    return lambda *extra: playbook(str(play), *extra)


def test_a_deploy_refuses_to_start_when_the_last_backup_is_too_old(pre_deploy):
    stale = "/var/backups/montaiguillon/probe-stale"
    # A copy of a real backup, as if taken two days ago (id, file and times moved back 48 h).
    age_it = r"""
import json, os, re, shutil, sys, datetime as dt
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, mode=0o700, exist_ok=True)
name = sorted(n for n in os.listdir(src) if re.match(r'^\d{8}T\d{6}Z-scheduled\.json$', n))[-1]
m = json.load(open(os.path.join(src, name)))
old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=48)
new_id = old.strftime('%Y%m%dT%H%M%SZ') + '-scheduled'
new_file = m['file'].replace(m['id'], new_id)
shutil.copy(os.path.join(src, m['file']), os.path.join(dst, new_file))
stamp = old.strftime('%Y-%m-%dT%H:%M:%SZ')
m.update(id=new_id, file=new_file, started_at=stamp, finished_at=stamp)
json.dump(m, open(os.path.join(dst, new_id + '.json'), 'w'))
"""
    on_server(SERVER, "python3", "-c", age_it, BACKUP_DIR, stale)
    try:
        refused = pre_deploy("-e", f"backup_dir={stale}")
        assert refused.rc != 0
        stale_message = r"refusing to deploy, the newest good backup \(\S+-scheduled\) is 4[78]\.\d h old"
        assert re.search(stale_message, refused.output)
        assert "limit backup_max_age_hours=26 h" in refused.output
        assert backup_ids(stale) == backup_ids(stale)[:1]  # no snapshot taken

        empty = pre_deploy("-e", "backup_dir=/var/backups/montaiguillon/probe-empty")
        assert empty.rc != 0 and "there is no good backup of montaiguillon" in empty.output

        forced = pre_deploy("-e", f"backup_dir={stale}", "-e", "deploy_force=true")
        assert forced.rc == 0, forced.output[-3000:]
        snapshot = re.search(r'"id": "(\S+-pre-deploy)"', forced.output)[1]
        assert manifest(snapshot, stale)["kind"] == "pre-deploy"
    finally:
        shell(f"rm -rf {stale} /var/backups/montaiguillon/probe-empty")


def test_a_deploy_with_a_recent_backup_takes_a_pre_deploy_snapshot(pre_deploy):
    run = pre_deploy("-e", "backup_pre_deploy_label=release-probe")
    assert run.rc == 0, run.output[-3000:]
    snapshot = json.loads(re.search(r'"backup_pre_deploy_snapshot": (\{.*?\})', run.output, re.S)[1])
    written = manifest(snapshot["id"])
    assert written["kind"] == "pre-deploy" and written["label"] == "release-probe"
    assert snapshot["sha256"] == written["sha256"]
    assert snapshot["path"] == f"{BACKUP_DIR}/{written['file']}"
