"""A MySQL-backed site that is not ours, through the same playbooks, under load (issue 16.2).

WordPress from Debian's package on Debian's Apache and PHP
(tests/e2e/sites/wordpress): its database from our mysql role under its own
variable names (app_database_environment), the password read from a file, its
schema installed by the deploy's one-off migration with the migrations
account, an upload volume, a root Apache master that keeps four capabilities.
Deployed, upgraded and rolled back with 0 failed requests; its data restored
from a backup. Load goes to https://127.0.0.1:8443 (the lab's dev.site) only.
"""

import http.client
import json
import re
import ssl
import time
from pathlib import Path

import pytest
from labtools import container, foreign_versions, live_colour, on_server
from load import Load

pytestmark = pytest.mark.lab

CA = Path(__file__).resolve().parents[2] / "inventories/lab/.generated/tls/ca.crt"
HOST, PORT = "dev.site", 8443
SERVER = container(HOST)
WORDPRESS = Path(__file__).parent / "sites/wordpress"
UPLOADS = "/var/lib/wordpress/wp-content/uploads"
# Apache serves the assets itself, PHP renders the pages from the database: both are loaded,
# each request on a new TLS connection. Well under what the lab's two cores carry: at 150 + 8/s
# the lab was saturated before any deploy (pages p50 0.6 s, max 5 s, the client's timeout), so a
# lost request said nothing about the switch; at 60 + 4/s pages answer in p50 0.1 s, max 0.3 s.
ASSET, ASSET_RATE = "/wp-includes/css/dashicons.min.css", 60
PAGE, PAGE_RATE = "/", 4
SITE_VARS = json.dumps(
    {
        "app_port": 8000,
        "app_health_path": "/?rest_route=/",
        "app_version_path": "",
        "app_migrate_command": ["php", "/usr/local/lib/wordpress-migrate.php"],
        "app_database_environment": {
            "host": "WORDPRESS_DB_HOST",
            "name": "WORDPRESS_DB_NAME",
            "user": "WORDPRESS_DB_USER",
            "password": "WORDPRESS_DB_PASSWORD",
            "migrate_user": "WP_MIGRATE_USER",
            "migrate_password": "WP_MIGRATE_PASSWORD",
        },
        "app_secret_files_owner": "33:33",
        "app_tmpfs": ["/tmp", "/run", "/var/log/apache2"],
        "app_capabilities": ["CHOWN", "SETUID", "SETGID", "KILL"],
        # Its own volume (app_wp_uploads): the static site's app_uploads, made from another image, is root's.
        "app_volumes": {"wp_uploads": UPLOADS},
    }
)


@pytest.fixture(scope="module")
def sql(lab_secret):
    password = lab_secret("test", "vault_mysql_root_password")

    def run(query):
        out = on_server(
            SERVER, "docker", "exec", "-e", f"MYSQL_PWD={password}", "mysql",
            "mariadb", "-uroot", "-N", "-B", "montaiguillon", "-e", query, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout

    return run


@pytest.fixture(scope="module")
def wordpress_refs(sql):
    """Two versions of the WordPress image; afterwards dev.site serves the release it served before."""
    with foreign_versions(WORDPRESS, "wordpress") as refs:
        yield refs
    tables = sql("SHOW TABLES LIKE 'wp\\_%'").split()
    if tables:
        sql(f"DROP TABLE {', '.join(tables)}")


def get(path):
    context = ssl.create_default_context(cafile=str(CA))
    context.check_hostname = False  # the certificate names dev.site; the lab publishes it on 127.0.0.1
    connection = http.client.HTTPSConnection("127.0.0.1", PORT, context=context, timeout=10)
    connection.request("GET", path, headers={"Host": HOST})
    answer = connection.getresponse()
    body = answer.read().decode(errors="replace")
    return answer.status, body


def under_load(action):
    """Run ``action`` while both the assets and the PHP pages are loaded; its result and both loads'."""
    with (
        Load(f"https://127.0.0.1:{PORT}{ASSET}", rate=ASSET_RATE, seconds=180, cafile=str(CA), host=HOST) as assets,
        Load(f"https://127.0.0.1:{PORT}{PAGE}", rate=PAGE_RATE, seconds=180, cafile=str(CA), host=HOST) as pages,
    ):
        time.sleep(1)
        run = action()
        time.sleep(1)
    return run, assets.stop(), pages.stop()


def assert_served_by(version, *loads):
    for result in loads:
        assert result.failed == 0, result.summary()
        # The answers of the last half second after the playbook returned (at least one).
        last = max(1, int(result.rate / 2))
        assert set(result.last_versions(last)) == {f"wordpress-{version}"}, result.summary()
    assert loads[0].rate > ASSET_RATE / 4, f"load too low to prove anything: {loads[0].summary()}"


def deploy(playbook, ref):
    return playbook("deploy.yml", "-l", "test", "-e", f"app_image={ref}", "-e", SITE_VARS)


def test_wordpress_installs_by_its_migration_and_reads_the_database_we_gave_it(playbook, wordpress_refs):
    run = deploy(playbook, wordpress_refs["1"])
    assert run.rc == 0, run.output[-3000:]
    assert re.search(r"migrate .* exited 0: wordpress: (installed|schema upgraded)", run.output), run.output[-3000:]
    status, page = get("/?p=1")
    assert status == 200 and "Hello world!" in page
    # The slots hold no password in their configuration: it is a file, WORDPRESS_DB_PASSWORD_FILE.
    config = json.loads(on_server(SERVER, "docker", "inspect", f"app-{live_colour(HOST)}").stdout)[0]["Config"]["Env"]
    assert "WORDPRESS_DB_PASSWORD_FILE=/run/secrets/WORDPRESS_DB_PASSWORD" in config
    assert not [v for v in config if v.startswith(("WORDPRESS_DB_PASSWORD=", "WP_MIGRATE_PASSWORD="))]


def test_wordpress_upgrades_and_rolls_back_under_load_keeping_uploads(playbook, wordpress_refs):
    upload = f"uploaded while {live_colour(HOST)} was live"
    on_server(SERVER, "docker", "exec", "-u", "www-data", f"app-{live_colour(HOST)}", "sh", "-c",
              f"echo '{upload}' > {UPLOADS}/probe.txt")  # fmt: skip

    run, assets, pages = under_load(lambda: deploy(playbook, wordpress_refs["2"]))
    assert run.rc == 0, run.output[-3000:]
    assert_served_by("2", assets, pages)
    assert get("/wp-content/uploads/probe.txt") == (200, upload + "\n")  # the other slot mounts the same volume

    run, assets, pages = under_load(lambda: playbook("rollback.yml", "-l", "test", "-e", SITE_VARS))
    assert run.rc == 0, run.output[-3000:]
    assert_served_by("1", assets, pages)
    assert get("/wp-content/uploads/probe.txt") == (200, upload + "\n")


def test_a_backup_of_wordpress_restores_its_posts(playbook, wordpress_refs, sql):
    sql("UPDATE wp_posts SET post_title = 'Backed up title' WHERE ID = 1")
    backup = playbook("backup.yml", "-l", HOST)
    assert backup.rc == 0, backup.output[-3000:]
    backup_id = re.search(r"Backup (\S+) of database montaiguillon on dev\.site", backup.output)[1]
    sql("UPDATE wp_posts SET post_title = 'Lost title' WHERE ID = 1")
    assert "Lost title" in get("/?p=1")[1]

    done = playbook(
        "restore.yml", "-l", HOST, "-e", f"restore_backup={backup_id}", "-e", "restore_confirm=yes", "-e", SITE_VARS
    )
    assert done.rc == 0, done.output[-3000:]
    status, page = get("/?p=1")
    assert status == 200 and "Backed up title" in page and "Lost title" not in page
