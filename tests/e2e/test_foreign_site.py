"""A site that is not ours, through the same deploy.yml and rollback.yml, under load (issue 16.2).

Debian's nginx serving a static page (tests/e2e/sites/static): no /version,
no migrations, no database variables, a root master process that needs three
capabilities, a read-only root with its writable paths on tmpfs. It honours
only the smallest contract: a port and a health path. Load goes to
https://127.0.0.1:8443 (the lab's dev.site) only.
"""

import http.client
import json
import ssl
import time
from pathlib import Path

import pytest
from labtools import container, foreign_versions, live_colour, on_server
from load import Load

pytestmark = pytest.mark.lab

CA = Path(__file__).resolve().parents[2] / "inventories/lab/.generated/tls/ca.crt"
URL, HOST, RATE = "https://127.0.0.1:8443/", "dev.site", 200
STATIC = Path(__file__).parent / "sites/static"
SITE_VARS = json.dumps(
    {
        "app_port": 8000,
        "app_health_path": "/",
        "app_migrate_command": [],
        "app_version_path": "",
        "app_database_environment": {},
        "app_tmpfs": ["/tmp", "/run", "/var/lib/nginx", "/var/log/nginx"],
        "app_capabilities": ["CHOWN", "SETUID", "SETGID"],
        "app_volumes": {"uploads": "/srv/site/uploads"},
    }
)


@pytest.fixture(scope="module")
def static_refs():
    """Two versions of the static site; afterwards dev.site gets back the release it served before."""
    with foreign_versions(STATIC, "static") as refs:
        yield refs


def served(path):
    context = ssl.create_default_context(cafile=str(CA))
    context.check_hostname = False  # the certificate names dev.site; the lab publishes it on 127.0.0.1
    connection = http.client.HTTPSConnection("127.0.0.1", 8443, context=context, timeout=5)
    connection.request("GET", path, headers={"Host": HOST})
    answer = connection.getresponse()
    return answer.read().decode().strip() if answer.status == 200 else f"HTTP {answer.status}"


def under_load(action):
    with Load(URL, rate=RATE, seconds=180, cafile=str(CA), host=HOST) as traffic:
        time.sleep(1)
        run = action()
        time.sleep(1)
    return run, traffic.stop()


def test_static_site_deploys_upgrades_and_rolls_back_under_load(playbook, static_refs):
    first = playbook("deploy.yml", "-l", "test", "-e", f"app_image={static_refs['1']}", "-e", SITE_VARS)
    assert first.rc == 0, first.output[-3000:]
    upload = f"uploaded while {live_colour(HOST)} was live"
    on_server(container(HOST), "docker", "exec", f"app-{live_colour(HOST)}", "sh", "-c",
              f"echo '{upload}' > /srv/site/uploads/probe.txt")  # fmt: skip

    run, result = under_load(
        lambda: playbook("deploy.yml", "-l", "test", "-e", f"app_image={static_refs['2']}", "-e", SITE_VARS)
    )
    assert run.rc == 0, run.output[-3000:]
    assert result.failed == 0, result.summary()
    assert set(result.versions) <= {"static-1", "static-2"} and set(result.last_versions()) == {"static-2"}
    assert served("/uploads/probe.txt") == upload  # the other slot mounts the same volume

    run, result = under_load(lambda: playbook("rollback.yml", "-l", "test", "-e", SITE_VARS))
    assert run.rc == 0, run.output[-3000:]
    assert result.failed == 0, result.summary()
    assert set(result.last_versions()) == {"static-1"}
    assert served("/uploads/probe.txt") == upload
    assert result.rate > RATE / 4, f"load too low to prove anything: {result.summary()}"
