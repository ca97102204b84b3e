"""The workflows' unhappy paths, run for real by act against the lab (scripts/pipeline).

make test's pipeline proof runs cd.yml's happy path (a new headline reaches
prod, 0 failed requests). Here: a release that breaks only on prod is rolled
back by cd.yml's own rollback step; rollback.yml refuses a release id that
fails its pattern before any command runs; backup-now.yml backs prod up.
"""

import difflib
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from labtools import INVENTORY, on_server
from labtools import container as lab_container

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from pipeline_report import ssl_context_for  # noqa: E402

PROD = lab_container("site.com")
PROD_URL = "https://127.0.0.1:9443/"
LEDGER = "/var/lib/montaiguillon/app/releases.jsonl"
BACKUP_DIR = "/var/backups/montaiguillon/mysql"
CONTENT = ROOT / "app" / "montaiguillon_site" / "content.py"
# Prod-only configuration the broken release trips over (site.com's local
# overrides file, the documented place for them; removed afterwards).
FAULT_VARS = INVENTORY.parent / "host_vars" / "site.com" / "local.yml"


def pipeline(*args):
    proc = subprocess.run(
        [str(ROOT / "scripts" / "pipeline"), "--json", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    result = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, result, proc.stderr


def job(result, name):
    return next(j for j in result["jobs"] if name in j["label"])


def prod_page():
    """(status, X-App-Version) of site.com's page, the lab's own CA not checked (loopback)."""
    try:
        with urllib.request.urlopen(PROD_URL, timeout=10, context=ssl_context_for(PROD_URL)) as response:
            return response.status, response.headers.get("X-App-Version", "")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("X-App-Version", "")


def ledger():
    text = on_server(PROD, "cat", LEDGER).stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def prod_only_fault(tmp_path):
    """A patch to the site whose page fails (HTTP 500) where MONTAIGUILLON_E2E_FAULT is set, and prod set so."""
    source = CONTENT.read_text(encoding="utf-8")
    broken, count = re.subn(
        r"^HEADLINE = .*$",
        'HEADLINE = None if __import__("os").environ.get("MONTAIGUILLON_E2E_FAULT") else "Broken on prod only"',
        source,
        flags=re.M,
    )
    assert count == 1
    patch = tmp_path / "prod-only-fault.patch"
    relative = CONTENT.relative_to(ROOT).as_posix()
    lines = difflib.unified_diff(
        source.splitlines(keepends=True), broken.splitlines(keepends=True), f"a/{relative}", f"b/{relative}"
    )
    patch.write_text("".join(lines), encoding="utf-8")
    assert not FAULT_VARS.exists(), f"{FAULT_VARS} exists already: a local override this test would overwrite"
    FAULT_VARS.parent.mkdir(parents=True, exist_ok=True)
    FAULT_VARS.write_text('---\napp_extra_environment:\n  MONTAIGUILLON_E2E_FAULT: "1"\n', encoding="utf-8")
    try:
        yield patch
    finally:
        FAULT_VARS.unlink()
        if not any(FAULT_VARS.parent.iterdir()):
            FAULT_VARS.parent.rmdir()


def test_a_release_failing_prod_s_smoke_test_is_rolled_back_by_cd_yml(prod_only_fault):
    status, before = prod_page()
    assert status == 200 and before
    entries = len(ledger())
    rc, result, err = pipeline("--skip-ci", "--patch", str(prod_only_fault))
    assert rc == 1, err[-3000:]
    assert job(result, "Deploy to test")["status"] == "succeeded"  # no fault on test: its smoke test passed
    prod = job(result, "Promote to prod")
    assert prod["status"] == "failed" and prod["failed_step"] == "Smoke tests on site.com", err[-3000:]
    # The workflow's rollback step ran: site.com serves the release it served before, and says so.
    assert prod_page() == (200, before)
    new = ledger()[entries:]
    assert [e["outcome"] for e in new] == ["success", "rollback"], new
    assert new[1]["release"] == new[0]["previous_release"]
    log = Path(result["log"]).read_text(encoding="utf-8")
    assert "Success - Main Roll prod back (smoke tests failed)" in log
    assert "Success - Main Smoke tests after the rollback" in log


def test_rollback_yml_refuses_a_release_id_that_fails_its_pattern_before_any_command():
    entries = len(ledger())
    rc, result, err = pipeline("--dispatch", "rollback.yml", "--input", "environment=prod", "--input", "release=v2")
    assert rc == 1, err[-3000:]
    (only,) = result["jobs"]
    assert only["status"] == "failed" and only["failed_step"] == "Check the inputs"
    log = Path(result["log"]).read_text(encoding="utf-8")
    assert "TO: 'v2' is not a release id" in log
    assert "make deploy-tools" not in log and "Roll back to the previous release" not in log
    assert len(ledger()) == entries


def backups():
    names = on_server(PROD, "ls", BACKUP_DIR).stdout.split()
    return {n for n in names if re.match(r"^\d{8}T\d{6}Z-.*\.json$", n) and ".drill" not in n}


def test_backup_now_yml_backs_prod_up():
    before = backups()
    rc, result, err = pipeline("--dispatch", "backup-now.yml", "--input", "environment=prod")
    assert rc == 0, err[-3000:]
    assert [j["status"] for j in result["jobs"]] == ["succeeded"]
    (new,) = backups() - before
    manifest = json.loads(on_server(PROD, "cat", f"{BACKUP_DIR}/{new}").stdout)
    assert manifest["database"] == "montaiguillon", manifest
