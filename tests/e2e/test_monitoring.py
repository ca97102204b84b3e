"""node-exporter with our metrics on every lab server (issue 17, first step).

Read on each server itself (the exporter answers there only until the monitoring host and its firewall
come): the machine's metrics and ours (backups, drills, releases), and ours follow a new backup within
cron's minute.
"""

import json
import re
import subprocess
import time

import pytest
from labtools import container as lab_container
from labtools import on_server

pytestmark = pytest.mark.lab

SERVERS = ("dev.site", "site.com")
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


def test_the_metrics_follow_a_new_backup_within_a_minute(playbook):
    def newest_manual():
        return sample(metrics("site.com"), "montaiguillon_backup_kind_last_timestamp_seconds", kind="manual") or 0

    before = newest_manual()
    run = playbook("backup.yml", "-l", "prod")
    assert run.rc == 0, run.output[-3000:]
    deadline = time.monotonic() + 75  # cron writes them every minute
    while newest_manual() <= before and time.monotonic() < deadline:
        time.sleep(5)
    assert newest_manual() > before


def test_the_exporter_answers_on_its_server_only():
    networks = subprocess.run(
        ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", lab_container("site.com")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    addresses = [n["IPAddress"] for n in json.loads(networks).values() if n.get("IPAddress")]
    assert addresses
    probe = "import socket, sys; socket.create_connection((sys.argv[1], 9100), timeout=3)"
    for address in addresses:  # from dev.site, a neighbour on the lab network
        attempt = on_server(lab_container("dev.site"), "python3", "-c", probe, address, check=False)
        assert attempt.returncode != 0 and "Connection refused" in attempt.stderr, attempt.stderr
