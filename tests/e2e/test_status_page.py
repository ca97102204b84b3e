"""The status page: each environment's, behind the proxy's basic authentication, seen in headless Chromium.

Each page is opened as a person would (Debian's chromium, headless) right after a backup and with the release
the lab runs; the rendered page must name that release and that backup. The screenshots are kept in
test-artifacts/ (PNG). `make status` prints the same facts for both environments in the terminal.
"""

import base64
import http.client
import json
import shutil
import ssl
import subprocess

import pytest
from labtools import INVENTORY, ROOT, on_server
from labtools import container as lab_container

pytestmark = pytest.mark.lab

ENVIRONMENTS = {"test": ("dev.site", 8443), "prod": ("site.com", 9443)}
ARTIFACTS = ROOT / "test-artifacts"
CA = INVENTORY.parent / ".generated/tls/ca.crt"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def password(environment):
    secrets = (INVENTORY.parent / "group_vars" / environment / "secrets.yml").read_text()
    lines = (line for line in secrets.splitlines() if line.startswith("vault_status_password:"))
    return next(lines).split(":", 1)[1].strip()


def live_version(host):
    ledger = on_server(lab_container(host), "cat", "/var/lib/montaiguillon/app/releases.jsonl").stdout
    entries = [json.loads(line) for line in ledger.splitlines() if line.strip()]
    return next(e["version"] for e in reversed(entries) if e["outcome"] in ("success", "rollback"))


def newest_backup(host):
    names = on_server(lab_container(host), "ls", "/var/backups/montaiguillon/mysql").stdout.split()
    return max(name[: -len(".json")] for name in names if name.endswith(".json") and ".drill" not in name)


def status_code(port, host, credentials=None):
    context = ssl.create_default_context(cafile=str(CA))
    context.check_hostname = False  # the certificate names the site; the lab publishes it on 127.0.0.1
    headers = {"Host": host}
    if credentials:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("GET", "/.status/", headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def chromium(*args):
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors",
         "--hide-scrollbars", "--window-size=1100,1800", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_page_is_for_the_team_only(environment):
    host, port = ENVIRONMENTS[environment]
    assert status_code(port, host) == 401
    assert status_code(port, host, ("status", "not-the-password")) == 401
    assert status_code(port, host, ("status", password(environment))) == 200


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is missing (make setup installs it)")
@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_page_shows_the_live_release_and_the_backup_just_taken(environment, playbook):
    host, port = ENVIRONMENTS[environment]
    run = playbook("backup.yml", "-l", environment)  # refreshes the page at its end
    assert run.rc == 0, run.output[-3000:]
    url = f"https://status:{password(environment)}@127.0.0.1:{port}/.status/"
    dom = chromium("--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f'id="live-version">{live_version(host)}<' in dom.stdout
    assert newest_backup(host) in dom.stdout
    assert f"{environment} — {host}" in dom.stdout

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"status-{environment}.png"
    shot.unlink(missing_ok=True)
    taken = chromium(f"--screenshot={shot}", url)
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000  # a rendered page


def test_make_status_prints_both_environments():
    out = subprocess.run(["make", "--no-print-directory", "status"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    for environment, (host, _port) in ENVIRONMENTS.items():
        assert f"{environment} — {host}" in out.stdout
        assert live_version(host) in out.stdout and newest_backup(host) in out.stdout
