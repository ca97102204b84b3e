"""TLS and HTTP hardening measured from outside by an independent scanner (testssl.sh, Debian's package).

The scan runs on this machine against the instance's own address (a container
this scenario created), port 443: protocols, cipher categories, forward
secrecy, server preferences and the HTTP security headers.
"""

import json
import os
import shutil
import subprocess

import pytest

# The instance container (.config/molecule/config.yml names it).
INSTANCE = os.environ.get("MOLECULE_INSTANCE", "molecule-server")
# Findings at MEDIUM or above that stay, each with its reason.
ACCEPTED = {
    # Mozilla "intermediate" sets ssl_prefer_server_ciphers off on purpose:
    # every cipher offered is strong, so the client picks the fastest for it.
    "cipher_order": "the client chooses among strong ciphers only",
}


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    if not shutil.which("testssl"):
        pytest.fail("testssl.sh is not installed on this machine (lab/bin/host-packages installs it)")
    address = subprocess.run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", INSTANCE],
        capture_output=True, text=True, check=True,
    ).stdout.split()[0]  # fmt: skip
    out = tmp_path_factory.mktemp("testssl") / "scan.json"
    run = subprocess.run(
        ["testssl", "--quiet", "--color", "0", "--warnings", "off", "-p", "-s", "-f", "-P", "-h",
         "--jsonfile-pretty", str(out), f"https://{address}:443"],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert out.exists(), run.stdout[-2000:] + run.stderr[-2000:]
    findings = json.loads(out.read_text())["scanResult"][0]
    return {f["id"]: f for section in findings.values() if isinstance(section, list) for f in section}


def test_only_tls_1_2_and_1_3_are_offered(scan):
    for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert scan[old]["finding"] == "not offered", (old, scan[old])
    assert scan["TLS1_2"]["finding"] == "offered"
    assert scan["TLS1_3"]["finding"].startswith("offered")


def test_no_weak_cipher_category_is_offered(scan):
    for weak in ("NULL", "aNULL", "EXPORT", "LOW", "3DES_IDEA", "AVERAGE"):
        assert scan[f"cipherlist_{weak}"]["finding"] == "not offered", weak
    assert scan["PFS"]["finding"] == "offered"


def test_hsts_and_the_security_headers_are_there_once(scan):
    assert scan["HSTS_time"]["severity"] == "OK", scan["HSTS_time"]
    assert scan["X-Content-Type-Options"]["finding"] == "nosniff"
    assert "X-Content-Type-Options_multiple" not in scan
    assert "frame-ancestors" in scan["Content-Security-Policy"]["finding"]


def test_nothing_at_medium_or_above_beyond_the_accepted(scan):
    serious = {i: f["finding"] for i, f in scan.items() if f["severity"] in {"MEDIUM", "HIGH", "CRITICAL"}}
    assert set(serious) <= set(ACCEPTED), serious
