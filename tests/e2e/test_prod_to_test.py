"""prod's data on the test server, anonymised, only where the inventory opts in (issue 15.2).

On the lab: dev.site opts in (inventories/lab/group_vars/test/main.yml) with SQL that rewrites the sample
site's news. The copy travels encrypted, prod's identity is gone afterwards, and a failing anonymisation
leaves no raw copy behind. The last test puts dev.site's own data back from the safety backup.
"""

import json
import re

import pytest
from labtools import container as lab_container
from labtools import on_server

pytestmark = pytest.mark.lab

DEV = lab_container("dev.site")
PROD = lab_container("site.com")
BACKUP_DIR = "/var/backups/montaiguillon/mysql"
ANONYMISED = "Anonymised copy of production."
UNDO = {}  # the safety backup of dev.site's own data, taken by the import


MARIADB = (
    "MYSQL_PWD=$(cat /etc/montaiguillon/mysql/secrets/root_password)"
    " docker exec -e MYSQL_PWD mysql mariadb --default-character-set=utf8mb4 -uroot -N -B"
)


def news(container):
    script = f'{MARIADB} -e "SELECT id, title, body FROM montaiguillon.news ORDER BY id"'  # noqa: S608 - a constant
    return [tuple(line.split("\t")) for line in on_server(container, "sh", "-c", script).stdout.splitlines()]


def leftovers():
    """What an import must not leave on dev.site: prod's identity, the scratch copy."""
    listing = on_server(DEV, "sh", "-c", "ls /run/montaiguillon-backup /var/backups/montaiguillon", check=False)
    return [name for name in listing.stdout.split() if "prod" in name or name.startswith("montaiguillon-import-")]


@pytest.fixture(scope="module")
def dev_before():
    return news(DEV)


def import_prod(playbook, *extra):
    return playbook("playbooks/prod_to_test.yml", "-l", "dev.site", *extra)


def test_without_the_opt_in_nothing_is_copied(playbook, dev_before):
    run = import_prod(playbook, "-e", "import_confirm=yes", "-e", "backup_import_from_prod=false")
    assert run.rc != 0
    assert "backup_import_from_prod true in its inventory" in run.output and "Nothing was changed" in run.output
    assert news(DEV) == dev_before


def test_prod_is_never_a_target(playbook):
    run = playbook("playbooks/prod_to_test.yml", "-l", "site.com", "-e", "import_confirm=yes")
    assert run.rc != 0 or "no hosts matched" in run.output.lower()
    assert "Restored" not in run.output


def test_prod_s_rows_arrive_anonymised_and_the_keys_go(playbook, dev_before):
    prod_rows = news(PROD)
    run = import_prod(playbook, "-e", "import_confirm=yes")
    assert run.rc == 0, run.output[-3000:]
    copied = news(DEV)
    assert [row[0] for row in copied] == [row[0] for row in prod_rows]  # prod's rows, every one
    assert all(body == ANONYMISED for _id, _title, body in copied)
    assert not {title for _id, title, _body in copied} & {title for _id, title, _body in prod_rows}
    assert leftovers() == []
    safety = UNDO["safety"] = re.search(r"Safety backup of the state before: (\S+-safety)", run.output)[1]
    manifest = json.loads(on_server(DEV, "cat", f"{BACKUP_DIR}/{safety}.json").stdout)
    assert manifest["kind"] == "safety" and manifest["encryption"]  # dev.site's own undo path, encrypted


def test_a_failing_anonymisation_leaves_no_raw_copy(playbook):
    broken = json.dumps({"backup_import_anonymise_sql": ["UPDATE no_such_table SET x = 1"]})
    # An empty database: the site cannot answer its health check, and taking the maintenance page down
    # would wait for it the full minute (backup_restore_app_timeout) before it goes anyway.
    run = import_prod(playbook, "-e", "import_confirm=yes", "-e", broken, "-e", "backup_restore_app_timeout=5")
    assert run.rc != 0
    assert "the restored data was removed, the database is empty" in run.output
    tables = on_server(DEV, "sh", "-c", f"{MARIADB} -e 'SHOW TABLES FROM montaiguillon'")
    assert tables.stdout.strip() == ""
    assert leftovers() == []


def test_dev_site_gets_its_own_data_back_from_the_safety_backup(playbook, dev_before):
    undo = f"restore_backup={UNDO['safety']}"
    run = playbook("restore.yml", "-l", "dev.site", "-e", undo, "-e", "restore_confirm=yes")
    assert run.rc == 0, run.output[-3000:]
    assert news(DEV) == dev_before
