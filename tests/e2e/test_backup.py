"""Backups proven by restoring them, on the lab's prod server (site.com).

Runs against the local lab (127.0.0.1 and the lab's own containers only):
`make lab` first, or a second lab with LAB_INVENTORY/LAB_PREFIX. The module
fixture applies the backup role to site.com (idempotent), so the file also
runs before the role is part of site.yml. Each test writes its own table.
"""

import hashlib
import http.client
import json
import re
import ssl
import subprocess
import threading
import time

import pytest
import yaml
from labtools import INVENTORY, PREFIX, live_colour, live_image_ref, on_server, release
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
MAINTENANCE_FLAG = "/etc/montaiguillon/proxy/conf.d/maintenance/on"
PROXY_HEALTH = "/.proxy/health"
CHANGE_LOCK = "/var/lib/montaiguillon/change.lock"


def https_port(host=HOST):
    """The site's HTTPS port on 127.0.0.1, from the lab's inventory (each lab has its own)."""
    hosts = yaml.safe_load(INVENTORY.read_text())["all"]["children"]["lab_servers"]["children"]
    return next(g["hosts"][host]["lab_https_port"] for g in hosts.values() if host in g.get("hosts", {}))


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


class Visitor:
    """Polls the site (and the proxy's health endpoint) on 127.0.0.1 until stopped, at most ``seconds``.

    One new TLS connection per request, as a new visitor; records (time, path,
    status, maintenance header, Retry-After, body). Bounded in time and count.
    """

    def __init__(self, seconds=900, interval=0.2, max_requests=20000):
        self.port, self.seconds, self.interval, self.max_requests = https_port(), seconds, interval, max_requests
        self.seen = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._tls = ssl.create_default_context()
        self._tls.check_hostname = False
        self._tls.verify_mode = ssl.CERT_NONE

    def get(self, path):
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=5, context=self._tls)
        try:
            conn.request("GET", path, headers={"Host": HOST})
            response = conn.getresponse()
            body = response.read(4096).decode("utf-8", "replace")
            return (response.status, response.getheader("X-Montaiguillon-Maintenance"),
                    response.getheader("Retry-After"), body)  # fmt: skip
        except OSError as exc:
            return (f"error: {exc.__class__.__name__}", None, None, "")
        finally:
            conn.close()

    def _run(self):
        start = time.monotonic()
        while not self._stop.is_set() and time.monotonic() - start < self.seconds:
            if len(self.seen) >= self.max_requests:
                break
            for path in ("/", PROXY_HEALTH):
                self.seen.append((time.monotonic() - start, path, *self.get(path)))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)

    def site(self):
        """Statuses of the site's page in order, maintenance answers as 'maintenance'."""
        return [("maintenance" if flag == "on" else status) for _, path, status, flag, _, _ in self.seen if path == "/"]

    def health(self):
        return {status for _, path, status, _, _, _ in self.seen if path == PROXY_HEALTH}

    def maintenance_pages(self):
        return [(retry, body) for _, path, status, flag, retry, body in self.seen if path == "/" and flag == "on"]


def runs(sequence):
    """Collapse consecutive repeats: [200, 200, 'maintenance', 200] -> [200, 'maintenance', 200]."""
    return [value for i, value in enumerate(sequence) if i == 0 or sequence[i - 1] != value]


def site_is_served():
    status, flag, _, _ = Visitor().get("/")
    return status == 200 and flag is None


def maintenance_flag_exists():
    return shell(f"test -e {MAINTENANCE_FLAG}", check=False).returncode == 0


def lock_holder():
    """The server's change lock, or None when free."""
    held = shell(f"cat {CHANGE_LOCK}", check=False)
    return json.loads(held.stdout) if held.returncode == 0 else None


class LockWatcher:
    """Reads the server's change lock every half second while a playbook runs: the holders seen."""

    def __init__(self):
        self.holders, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            holder = lock_holder()
            if holder and holder not in self.holders:
                self.holders.append(holder)
            self._stop.wait(0.5)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


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


def leftover_fifos():
    """FIFOs a backup or a restore left in the server's socket directory."""
    return shell("find /run/montaiguillon/mysql -type p").stdout.split()


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
    # The dump came through a FIFO in the socket directory (not through dockerd), and left nothing there.
    assert written["tool"]["transport"] == "fifo"
    assert leftover_fifos() == []
    # It ran in an idle CPU cgroup beside the database container's (the site's processes preempt it at
    # once), and removed that group when it was done.
    assert written["pacing"]["cpu_cgroup"] == "idle group beside the database container"
    empty_groups = (  # left over; one holding processes is a backup running now
        "find /sys/fs/cgroup -maxdepth 4 -name 'montaiguillon-backup-*'"
        " -exec sh -c '[ -z \"$(cat $0/cgroup.procs)\" ] && echo $0' {} \\;"
    )
    assert shell(empty_groups).stdout.split() == []
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
    assert leftover_fifos() == []
    assert shell("docker inspect -f '{{.State.Running}}' app-probe").stdout.strip() == "true"
    assert shell("docker inspect -f '{{.State.StartedAt}}' app-probe").stdout.strip() != started_before
    shell("docker rm -f app-probe")

    undo = re.search(r"Undo: (ansible-playbook restore\.yml .*?restore_confirm=yes)", done.output)[1]
    safety = re.search(r"restore_backup=(\S+)", undo)[1]
    assert safety.endswith("-safety")
    # The lab encrypts its backups: the safety backup too, and no plaintext dump of any kind is left.
    assert manifest(safety)["file"].endswith(".age"), manifest(safety)
    dumps = [name for name in shell(f"ls {BACKUP_DIR}").stdout.split() if ".sql" in name]
    assert dumps and [name for name in dumps if not name.endswith(".age")] == []
    undone = restore(playbook, "-e", f"restore_backup={safety}", "-e", "restore_confirm=yes")
    assert undone.rc == 0, undone.output[-3000:]
    assert rows(sql, "probe_restore") == later


def test_after_the_backup_directory_is_lost_a_restore_comes_from_the_offsite_store(playbook, sql):
    sql("DROP TABLE IF EXISTS probe_offsite; CREATE TABLE probe_offsite (id INT PRIMARY KEY);"
        " INSERT INTO probe_offsite VALUES (1);")  # fmt: skip
    backup_id, _ = take_backup(playbook)  # backup.yml copies it offsite
    stored = f"/srv/backup/{HOST}/{manifest(backup_id)['file']}"
    subprocess.run(["docker", "exec", STORE, "test", "-f", stored], check=True)
    sql("INSERT INTO probe_offsite VALUES (2)")
    shell(f"mv {BACKUP_DIR} {BACKUP_DIR}.lost && install -d -m 0700 {BACKUP_DIR}")
    try:
        nothing = restore(playbook, "-e", "restore_confirm=yes")
        assert nothing.rc != 0 and "no complete backup with a valid checksum" in nothing.output
        done = restore(playbook, "-e", "restore_from=offsite", "-e", "restore_confirm=yes")
        assert done.rc == 0, done.output[-3000:]
        assert f"backup {backup_id} (" in done.output
        assert [r[0] for r in rows(sql, "probe_offsite")] == ["1"]
        # Brought back: the manifests and the one dump, still encrypted; the other dumps stay offsite.
        dumps = [name for name in shell(f"ls {BACKUP_DIR}").stdout.split() if ".sql" in name]
        assert manifest(backup_id)["file"] in dumps and all(name.endswith(".age") for name in dumps)
    finally:
        shell(f"rm -rf {BACKUP_DIR} && mv {BACKUP_DIR}.lost {BACKUP_DIR}")


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
    served = site_is_served()

    with Visitor() as visitor:
        run = restore(playbook, "-e", f"restore_backup={backup_id}", "-e", "restore_confirm=yes")
    assert run.rc != 0
    assert f"backup {backup_id} is corrupt: sha256 mismatch" in run.output
    # Refused before anything: the maintenance page was never turned on.
    assert "Turn the maintenance page on" not in run.output
    assert not maintenance_flag_exists()
    assert "maintenance" not in visitor.site()
    if served:
        assert runs(visitor.site()) == [200]
    assert "nothing was changed" in run.output
    assert "Restore the database (safety backup first)" not in run.output
    assert [r[0] for r in rows(sql, "probe_corrupt")] == ["1", "2"]
    assert backup_ids() == before  # not even a safety backup
    shell(f"rm -f {BACKUP_DIR}/{backup_id}.*")


# ---- the site during a restore: maintenance page, then back -------------------------


@pytest.fixture(scope="module")
def deployed_site(playbook):
    """site.com serves the site: a lab rebuilt by the smoke test has no release yet, so ship one."""
    if not site_is_served():
        ref = release(f"e2e-maintenance-{int(time.time())}")
        run = playbook("backup.yml", "-l", HOST)  # a prod deploy wants a recent backup
        assert run.rc == 0, run.output[-3000:]
        run = playbook("deploy.yml", "-l", HOST, "-e", f"app_image={ref}")
        assert run.rc == 0, run.output[-3000:]
    assert site_is_served(), "site.com does not serve the site after a deploy"


@pytest.fixture
def served_site(deployed_site):
    """site.com serves the site, not in maintenance."""
    assert site_is_served()
    assert not maintenance_flag_exists()


def test_the_plan_and_check_mode_never_turn_maintenance_on(playbook, served_site):
    with Visitor() as visitor:
        plan = restore(playbook)
        checked = restore(playbook, "--check", "-e", "restore_confirm=yes")
    assert plan.rc == 0, plan.output[-3000:]
    assert "Nothing was changed. Run again with -e restore_confirm=yes" in plan.output
    assert "the site shows its maintenance page (503, Retry-After)" in plan.output
    assert checked.rc == 0, checked.output[-3000:]
    assert runs(visitor.site()) == [200]
    assert visitor.health() == {200}
    assert not maintenance_flag_exists()


def test_a_restore_shows_the_maintenance_page_then_the_site_comes_back(playbook, sql, served_site):
    sql("DROP TABLE IF EXISTS probe_maint; CREATE TABLE probe_maint (id INT PRIMARY KEY, v TEXT);"
        " INSERT INTO probe_maint VALUES (1,'backed up');")  # fmt: skip
    backup_id, _ = take_backup(playbook)
    sql("INSERT INTO probe_maint VALUES (2,'written after')")

    with Visitor() as visitor, LockWatcher() as lock:
        done = restore(playbook, "-e", f"restore_backup={backup_id}", "-e", "restore_confirm=yes")
        time.sleep(2)  # a few answers after the restore, from the site itself
    assert done.rc == 0, done.output[-3000:]
    assert [r[0] for r in rows(sql, "probe_maint")] == ["1"]
    # The restore held the server's change lock (deploys, rollbacks, pruning wait) and gave it back.
    assert [(h["action"], h["what"]) for h in lock.holders] == [("restoring", f"{backup_id} into montaiguillon")]
    assert lock.holders[0]["until"] > lock.holders[0]["when"]
    assert lock.holders[0]["who"].startswith("restore.yml by ")  # named for whoever is refused meanwhile
    assert lock_holder() is None
    # Visitors saw the site, then only the maintenance page, then the site again:
    # never a proxy error (the app was stopped and restarted meanwhile).
    assert runs(visitor.site()) == [200, "maintenance", 200], runs(visitor.site())
    pages = visitor.maintenance_pages()
    assert all(retry == "120" and "Back in a few minutes" in body for retry, body in pages)
    statuses = {status for _, path, status, flag, _, _ in visitor.seen if path == "/" and flag == "on"}
    assert statuses == {503}
    # The proxy's own health endpoint answered all along.
    assert visitor.health() == {200}
    assert not maintenance_flag_exists()


def test_a_failed_restore_takes_the_maintenance_page_down(playbook, sql, served_site):
    sql("DROP TABLE IF EXISTS probe_failed; CREATE TABLE probe_failed (id INT PRIMARY KEY);"
        " INSERT INTO probe_failed VALUES (1);")  # fmt: skip
    backup_id, _ = take_backup(playbook)
    # The dump is intact (its checksum passes) but the manifest now expects a row
    # the dump does not have: the restore fails after loading, in maintenance.
    lie = (
        "import json, sys; p = sys.argv[1]; m = json.load(open(p)); m['row_counts']['probe_failed'] += 1;"
        " json.dump(m, open(p, 'w'))"
    )
    on_server(SERVER, "python3", "-c", lie, f"{BACKUP_DIR}/{backup_id}.json")

    with Visitor() as visitor:
        failed = restore(playbook, "-e", f"restore_backup={backup_id}", "-e", "restore_confirm=yes")
        time.sleep(2)
    shell(f"rm -f {BACKUP_DIR}/{backup_id}.*")
    assert failed.rc != 0
    assert f"restore of {backup_id} failed" in failed.output
    assert runs(visitor.site()) == [200, "maintenance", 200], runs(visitor.site())
    assert visitor.health() == {200}
    assert not maintenance_flag_exists()


def test_maintenance_by_hand_on_then_off(playbook, served_site):
    on = playbook("playbooks/maintenance.yml", "-l", HOST, "-e", "maintenance=on")
    try:
        assert on.rc == 0, on.output[-3000:]
        assert maintenance_flag_exists()
        status, flag, retry, body = Visitor().get("/")
        assert (status, flag, retry) == (503, "on", "120")
        assert "<title>Back in a few minutes</title>" in body
        assert Visitor().get(PROXY_HEALTH)[0] == 200
        again = playbook("playbooks/maintenance.yml", "-l", HOST, "-e", "maintenance=on")
        assert again.rc == 0 and again.changed()[HOST] == 0
        # No deploy behind the page (a restore may be rewriting the database): refused before any change.
        label = '{{index .Config.Labels "montaiguillon.image"}}'
        live = shell(f"docker inspect -f '{label}' app-blue app-green", check=False)  # whichever slots exist
        deploy = playbook("deploy.yml", "-l", "prod", "-e", f"app_image={live.stdout.split()[0]}")
        assert deploy.rc != 0, deploy.output[-3000:]
        assert "the maintenance page is on (playbooks/maintenance.yml" in deploy.output
    finally:
        off = playbook("playbooks/maintenance.yml", "-l", HOST, "-e", "maintenance=off")
    assert off.rc == 0, off.output[-3000:]
    assert off.changed()[HOST] > 0
    assert site_is_served()
    assert not maintenance_flag_exists()
    off_again = playbook("playbooks/maintenance.yml", "-l", HOST, "-e", "maintenance=off")
    assert off_again.rc == 0 and off_again.changed()[HOST] == 0, off_again.output[-3000:]


def test_a_deploy_while_a_restore_holds_the_change_lock_waits_then_is_refused_naming_it(
    playbook, served_site, tmp_path
):
    hold = tmp_path / "hold.yml"
    hold.write_text(
        "- hosts: prod\n  gather_facts: false\n  tasks:\n"
        f"    - change_lock: {{path: {CHANGE_LOCK}, who: e2e, action: restoring, what: e2e-backup, lease: 600}}\n"
    )
    live = live_colour(HOST)
    taken = playbook(str(hold))
    try:
        assert taken.rc == 0, taken.output[-3000:]
        with Visitor() as visitor:
            deploy = playbook(
                "deploy.yml", "-l", HOST, "-e", f"app_image={live_image_ref(HOST)}", "-e", "app_lock_wait=3"
            )
        assert deploy.rc != 0, deploy.output[-3000:]
        assert "locked by e2e since " in deploy.output
        assert "(restoring e2e-backup, lease until " in deploy.output and "(waited 3 s)" in deploy.output
        assert lock_holder()["who"] == "e2e"  # the restore's lock is untouched
    finally:
        shell(f"rm -f {CHANGE_LOCK}")
    assert live_colour(HOST) == live
    assert runs(visitor.site()) == [200]


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
    # Append-only: the store keeps what the server has pruned since (a backup covers it), never less.
    assert set(shell(f"ls {BACKUP_DIR}/binlogs").stdout.split()) <= set(binlogs)


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


IDENTITY_FILES = ("/etc/montaiguillon/backup/age-identity.txt", "/run/montaiguillon-backup/age-identity.txt")


def test_prod_keeps_no_decryption_identity_and_no_unattended_drill():
    """As in production: whoever reads site.com's disk cannot decrypt its backups (issue 15.2)."""
    assert shell(f"ls {' '.join(IDENTITY_FILES)}", check=False).returncode != 0
    assert "#Ansible: montaiguillon restore drill" not in shell(f"cat {CRON_FILE}").stdout


def test_restore_drill_records_the_restore_time_with_the_backup(playbook):
    # Run from the controller (make drill ENV=prod, the weekly workflow): the identity comes for its length.
    run = playbook("playbooks/backup_drill.yml", "-l", HOST)
    assert run.rc == 0, run.output[-3000:]
    # With a store, the drilled copy is the store's (issue 15): fetched beside the backups, then removed.
    drilled = re.search(r"Drill of backup (\S+) on site\.com: passed \(the offsite copy\)", run.output)[1]
    rto = float(re.search(r"RTO: restored in ([\d.]+) s", run.output)[1])
    record = json.loads(shell(f"cat {BACKUP_DIR}/{drilled}.drill.json").stdout)
    assert record["status"] == "passed" and record["mismatches"] == [] and record["source"] == "offsite"
    assert "montaiguillon-drill-" not in shell(f"ls {BACKUP_DIR}/..").stdout
    assert record["restore_seconds"] == rto > 0
    assert manifest(drilled)["verified"] is True
    # No drill container is left behind, and the record went offsite too.
    assert shell("docker ps -aq --filter label=montaiguillon.backup-drill").stdout.strip() == ""
    subprocess.run(["docker", "exec", STORE, "test", "-f", f"/srv/backup/{HOST}/{drilled}.drill.json"], check=True)
    listing = playbook("playbooks/backups.yml", "-l", HOST, "-e", "backups_verify=true")
    assert listing.rc == 0, listing.output[-3000:]
    assert re.search(rf"{drilled}\s+\S+\s+complete .* yes\s+passed \({rto} s\)", listing.output)
    assert shell(f"ls {' '.join(IDENTITY_FILES)}", check=False).returncode != 0  # and took its identity away


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

        forced = pre_deploy("-e", f"backup_dir={stale}", "-e", "backup_deploy_force=true")  # deploy.yml: deploy_force
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
