"""Monitoring on the lab: node-exporter with our metrics on every server, Prometheus and Alertmanager on dev.site.

Each server exports the machine's metrics and ours (backups, drills, releases), which follow a new backup
within cron's minute; the exporter answers the monitoring host only (firewall), Prometheus and Alertmanager
answer on dev.site's 127.0.0.1 only. A failure reaches the lab's receiver (roles/lab, alerts.lab) as an
alert, then its resolution; the Watchdog's heartbeat reaches it every minute.
"""

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
from labtools import INVENTORY, ROOT, on_server
from labtools import container as lab_container

pytestmark = pytest.mark.lab

SERVERS = ("dev.site", "site.com")
RECEIVER_PORT = 9099  # roles/lab: lab_receiver_port
SCRAPE = (
    "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9100/metrics', timeout=5).read().decode())"
)


def metrics(host):
    return on_server(lab_container(host), "python3", "-c", SCRAPE).stdout


def sample(text, name, **labels):
    """The value of the sample ``name{labels}`` (labels as node-exporter orders them), or None."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    series = f"{name}{{{wanted}}}" if labels else name
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(match[1]) if match else None


@pytest.mark.parametrize("host", SERVERS)
def test_each_server_exports_our_metrics_beside_the_machine_s(host):
    text = metrics(host)
    assert re.search(r"^node_filesystem_avail_bytes\{", text, re.M)  # the machine's own
    assert sample(text, "node_textfile_scrape_error") == 0
    for source in ("backup_status", "release_ledger", "backup_catalog"):
        assert sample(text, "montaiguillon_textfile_source_ok", source=source) == 1, source
    assert sample(text, "montaiguillon_backup_last_success_timestamp_seconds", job_name="backup") > 0
    assert re.search(r"^montaiguillon_release_live_info\{", text, re.M)  # the lab's releases, from the ledger


# The environment cron gives a job (Debian's cron: a minimal PATH, HOME and SHELL).
CRON_ENV = ["env", "-i", "PATH=/usr/bin:/bin", "HOME=/root", "SHELL=/bin/sh", "LOGNAME=root"]


def metrics_cron_job(host):
    """The montaiguillon metrics job as installed in /etc/cron.d: (minute field, command line)."""
    lines = on_server(lab_container(host), "cat", "/etc/cron.d/montaiguillon-monitoring").stdout.splitlines()
    fields = lines[lines.index("#Ansible: montaiguillon metrics") + 1].split(None, 6)
    return fields[0], fields[6]  # minute hour day month weekday user COMMAND


def test_the_metrics_follow_a_new_backup_within_a_minute(playbook):
    """The cron line, run as cron runs it (every minute: its minute field), carries a new backup to the metrics."""

    def newest_manual():
        return sample(metrics("site.com"), "montaiguillon_backup_kind_last_timestamp_seconds", kind="manual") or 0

    before = newest_manual()
    run = playbook("backup.yml", "-l", "prod")
    assert run.rc == 0, run.output[-3000:]
    minute, command = metrics_cron_job("site.com")
    assert minute == "*"
    # Not waiting up to a minute for crond: the same command, in cron's environment.
    job = on_server(lab_container("site.com"), *CRON_ENV, "/bin/sh", "-c", command, check=False)
    assert job.returncode == 0, job.stdout + job.stderr
    assert newest_manual() > before


def lab_address(host):
    return subprocess.run(
        [str(ROOT / "lab/bin/address"), lab_container(host)], capture_output=True, text=True, check=True
    ).stdout.strip()


PROBE = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)"


def reach(source, target_address, port):
    """Whether ``source`` (a lab host) opens a TCP connection to ``target_address:port``."""
    return on_server(lab_container(source), "python3", "-c", PROBE, target_address, str(port), check=False)


@pytest.mark.parametrize("host", SERVERS)
@pytest.mark.parametrize("port", [9100, 9104, 9113], ids=["node", "mysqld", "nginx"])
def test_the_exporters_answer_the_monitoring_host_only(host, port):
    address = lab_address(host)
    assert reach("dev.site", address, port).returncode == 0  # the monitoring host
    refused = reach("backup.store", address, port)  # a neighbour on the same network
    assert refused.returncode != 0
    assert "timed out" in refused.stderr or "refused" in refused.stderr, refused.stderr


def test_prometheus_and_alertmanager_answer_on_the_monitoring_host_only():
    address = lab_address("dev.site")
    for port in (9090, 9093, 9094):
        assert reach("site.com", address, port).returncode != 0, port
    assert reach("dev.site", "127.0.0.1", 9090).returncode == 0
    assert reach("dev.site", "127.0.0.1", 9093).returncode == 0


def prometheus(path):
    """GET Prometheus's API on the monitoring host (it answers on 127.0.0.1 there)."""
    url = f"http://127.0.0.1:9090{path}"
    code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    return json.loads(on_server(lab_container("dev.site"), "python3", "-c", code).stdout)


def test_the_monitoring_host_scrapes_every_server():
    deadline = time.monotonic() + 30
    while True:
        targets = prometheus("/api/v1/targets")["data"]["activeTargets"]
        health = {t["labels"]["instance"]: t["health"] for t in targets if t["labels"]["job"] == "node"}
        if health == {"dev.site": "up", "site.com": "up"} or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert health == {"dev.site": "up", "site.com": "up"}
    nodes = [t["labels"] for t in targets if t["labels"]["job"] == "node"]
    environments = {labels["instance"]: labels["environment"] for labels in nodes}
    assert environments == {"dev.site": "test", "site.com": "prod"}


def received():
    with urllib.request.urlopen(f"http://127.0.0.1:{RECEIVER_PORT}/received", timeout=5) as answer:
        return json.load(answer)


def notifications(alertname, instance, status, since=0):
    """Alerts named ``alertname`` on ``instance`` with ``status`` in the receiver's messages from ``since`` on."""
    return [
        alert
        for message in received()["alerts"][since:]
        for alert in message["alerts"]
        if alert["labels"].get("alertname") == alertname
        and alert["labels"].get("instance") == instance
        and alert["status"] == status
    ]


def wait_for(condition, timeout):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(5)
    return condition()


def write_metrics_now(host):
    """What cron does every minute (the test does not wait for the minute)."""
    cron = on_server(lab_container(host), "cat", "/etc/cron.d/montaiguillon-monitoring").stdout
    command = next(line for line in cron.splitlines() if "textfile.py" in line and not line.startswith("#"))
    on_server(lab_container(host), "sh", "-c", command.split(" root ", 1)[1])


def store_ssh(action):
    on_server(lab_container("backup.store"), "systemctl", action, "ssh.service")


@pytest.fixture
def store_down():
    """The offsite store refuses connections (its SSH server stopped), and comes back afterwards."""
    store_ssh("stop")
    try:
        yield
    finally:
        store_ssh("start")


def offsite_copy():
    return on_server(lab_container("site.com"), "/usr/local/sbin/montaiguillon-backup", "offsite", check=False)


def test_the_watchdog_heartbeat_reaches_the_outside_switch():
    def recent():  # Alertmanager repeats it every minute: the last one is never much older
        got = received()
        return got["heartbeats"] > 0 and time.time() - got["last_heartbeat"] < 90

    assert wait_for(recent, 90)


def query(expr):
    """An instant query's ``{instance: value}`` from Prometheus on the monitoring host."""
    answer = prometheus("/api/v1/query?query=" + urllib.parse.quote(expr))
    return {r["metric"].get("instance"): float(r["value"][1]) for r in answer["data"]["result"]}


def test_each_site_is_probed_from_outside_with_its_certificate():
    sites = {"https://dev.site/", "https://site.com/"}
    assert wait_for(lambda: set(query("probe_success == 1")) == sites, 30)
    days = query("(probe_ssl_earliest_cert_expiry - time()) / 86400")
    assert set(days) == sites and all(day > 14 for day in days.values())  # the lab CA's certificates


def prod_proxy(action):
    on_server(lab_container("site.com"), "docker", action, "proxy")


@pytest.fixture
def prod_proxy_stopped():
    """site.com's proxy is stopped (the site is down from outside), and started again afterwards."""
    prod_proxy("stop")
    try:
        yield
    finally:
        prod_proxy("start")


# The backup tool's status file, rewritten as the tool writes it (whole, then renamed into place).
SET_LAST_BACKUP = """
import json, os, sys
path = "/var/lib/montaiguillon-backup/status.json"
with open(path) as f:
    status = json.load(f)
print(status["backup"]["last_success"])
status["backup"]["last_success"] = sys.argv[1]
with open(path + ".e2e", "w") as f:
    json.dump(status, f)
os.chmod(path + ".e2e", 0o644)
os.replace(path + ".e2e", path)
"""


def set_last_backup(host, when):
    """Set the status file's last successful backup time; returns the one it replaced."""
    return on_server(lab_container(host), "python3", "-c", SET_LAST_BACKUP, when).stdout.strip()


@pytest.fixture
def backups_missed():
    """site.com's last good backup dates from 27 hours ago, as when cron stopped a day ago; put back afterwards."""
    long_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 27 * 3600))
    real = set_last_backup("site.com", long_ago)
    try:
        yield
    finally:
        set_last_backup("site.com", real)


def test_a_bad_night_each_failure_alerts_the_team_then_resolves(store_down, prod_proxy_stopped, backups_missed):
    """Three failures at once (one incident, so the lab waits for the rules' ``for:`` once, not three times):
    the offsite store refuses connections, site.com's proxy is stopped, its last backup is past the deadline."""
    since, started = len(received()["alerts"]), time.monotonic()
    assert offsite_copy().returncode != 0
    write_metrics_now("site.com")
    offsite_failed = ("MontaiguillonBackupFailed", "site.com")
    site_down = ("MontaiguillonSiteDown", "https://site.com/")
    missed = ("MontaiguillonBackupMissed", "site.com")

    def delivered(status):
        return all(notifications(*alert, status, since) for alert in (offsite_failed, site_down, missed))

    assert wait_for(lambda: delivered("firing"), 180), received()["alerts"][since:]
    firing = notifications(*offsite_failed, "firing", since)[-1]
    assert firing["labels"]["job_name"] == "offsite" and firing["labels"]["environment"] == "prod"
    assert "the last offsite run failed" in firing["annotations"]["summary"]
    assert "no successful backup for" in notifications(*missed, "firing", since)[-1]["annotations"]["summary"]
    print(f"the three alerts delivered {time.monotonic() - started:.0f} s after the failures")

    store_ssh("start")
    prod_proxy("start")
    set_last_backup("site.com", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    assert offsite_copy().returncode == 0
    write_metrics_now("site.com")
    assert wait_for(lambda: delivered("resolved"), 180), received()["alerts"][since:]


def test_each_proxy_s_requests_are_counted():
    """nginx's own counters (stub_status on a host socket) through nginx-exporter, scraped by Prometheus."""
    assert wait_for(lambda: query("nginx_up") == {"dev.site": 1, "site.com": 1}, 30)
    before = query("nginx_http_requests_total")["site.com"]
    # The blackbox probes alone add a request every scrape interval.
    assert wait_for(lambda: query("nginx_http_requests_total")["site.com"] > before, 30)


def exporter_sql(sql):
    """Run ``sql`` on site.com's database as the metrics account (its password from the lab's secrets)."""
    secrets = (INVENTORY.parent / "group_vars/prod/secrets.yml").read_text()
    password = re.search(r"^vault_mysql_exporter_password: (\S+)$", secrets, re.M)[1]
    in_database = ["docker", "exec", "-e", f"MYSQL_PWD={password}", "mysql"]
    client = ["mariadb", "-N", "-u", "montaiguillon_exporter", "-e", sql]
    return on_server(lab_container("site.com"), *in_database, *client, check=False)


def test_each_database_is_watched_through_an_account_that_reads_no_data():
    assert wait_for(lambda: query("mysql_up") == {"dev.site": 1, "site.com": 1}, 30)
    assert exporter_sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST").returncode == 0
    for sql in ("SELECT COUNT(*) FROM montaiguillon.schema_migrations", "SELECT user FROM mysql.user LIMIT 1"):
        denied = exporter_sql(sql)
        assert denied.returncode != 0 and "denied" in denied.stderr, (sql, denied.stderr)
    mode = on_server(lab_container("site.com"), "stat", "-c", "%a %U", "/etc/prometheus/mysqld-exporter.cnf").stdout
    assert mode.split() == ["600", "prometheus"]  # its password, for the exporter alone
