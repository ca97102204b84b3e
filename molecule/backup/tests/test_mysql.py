"""The database after the mysql role (and after its container was re-created)."""

import json
import os
import re
from pathlib import Path

import ansible.module_utils
import pytest

ROOT = "molecule-root-secret"
SOCKET = "/run/montaiguillon/mysql/mysqld.sock"


def sql(host, query, user="root", password=ROOT, database="montaiguillon", tcp=None):
    """Run SQL inside the container as a given user: over TCP as a client would, root through its socket."""
    via = "-h 127.0.0.1 --protocol=tcp" if (user != "root" if tcp is None else tcp) else "--protocol=socket"
    return host.run(
        f"docker exec -e MYSQL_PWD=%s mysql mariadb {via} -u %s -N -B %s -e %s",
        password,
        user,
        database,
        query,
    )


def inspect(host):
    return json.loads(host.check_output("docker inspect mysql"))[0]


def test_container_is_healthy_and_restarts_by_itself(host):
    state = inspect(host)
    assert state["State"]["Health"]["Status"] == "healthy"
    assert state["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"


def test_never_published_and_on_an_internal_network(host):
    state = inspect(host)
    assert not state["HostConfig"]["PortBindings"]
    assert list(state["NetworkSettings"]["Networks"]) == ["montaiguillon_backend"]
    network = json.loads(host.check_output("docker network inspect montaiguillon_backend"))[0]
    assert network["Internal"] is True
    assert ":3306" not in host.check_output("ss -ltn")


def test_root_password_is_not_in_the_container_environment(host):
    env = inspect(host)["Config"]["Env"]
    assert not [e for e in env if ROOT in e]
    secret = host.file("/etc/montaiguillon/mysql/secrets/root_password")
    assert secret.mode == 0o600
    assert host.file("/etc/montaiguillon/mysql/secrets").mode == 0o700


def test_database_runs_with_least_privilege(host):
    config = inspect(host)["HostConfig"]
    assert config["CapDrop"] == ["ALL"]
    assert sorted(c.removeprefix("CAP_") for c in config["CapAdd"]) == [
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "SETGID",
        "SETUID",
    ]
    assert "no-new-privileges:true" in config["SecurityOpt"]
    assert config["Memory"] == 1024**3
    assert config["PidsLimit"] == 512


def test_settings_from_the_template(host):
    out = sql(host, "SELECT @@innodb_buffer_pool_size, @@log_bin, @@binlog_format, @@character_set_server")
    assert out.rc == 0, out.stderr
    assert out.stdout.split() == [str(64 * 1024 * 1024), "1", "ROW", "utf8mb4"]


def test_socket_on_the_host_for_ansible_and_backups(host):
    assert host.file(SOCKET).is_socket


def test_app_user_has_data_rights_only(host):
    assert sql(host, "SELECT 1", "montaiguillon", "molecule-app-secret").rc == 0
    denied = sql(host, "CREATE TABLE nope (id INT)", "montaiguillon", "molecule-app-secret")
    assert denied.rc != 0
    assert "denied" in denied.stderr
    assert sql(host, "SELECT 1", "montaiguillon", "molecule-app-secret", database="mysql").rc != 0


def test_migrate_user_can_change_the_schema(host):
    user, password = "montaiguillon_migrate", "molecule-migrate-secret"
    assert sql(host, "CREATE TABLE IF NOT EXISTS probe (id INT)", user, password).rc == 0
    assert sql(host, "DROP TABLE probe", user, password).rc == 0


@pytest.mark.parametrize("wrong", ["", "not-the-password"])
def test_root_needs_its_password(host, wrong):
    assert sql(host, "SELECT 1", "root", wrong).rc != 0


def test_data_survived_the_container_re_create(host):
    out = sql(host, "SELECT note FROM survival WHERE id = 1")
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() == "written before re-create"


# ---- the backup user: what a complete dump needs, nothing more -------------------

BACKUP_USER, BACKUP_PASSWORD = "montaiguillon_backup", "molecule-backup-secret"


def as_backup_user(host, query):
    """SQL as the backup user, the way the backups connect: the server's unix socket."""
    return host.run(
        "docker exec -e MYSQL_PWD=%s mysql mariadb -u %s -N -B montaiguillon -e %s", BACKUP_PASSWORD, BACKUP_USER, query
    )


def dump_flags():
    """The flags the backup library passes to mariadb-dump (so this test follows it)."""
    project = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
    # As Ansible ships them (and tests/conftest.py imports them): ansible.module_utils.<name>.
    ansible.module_utils.__path__.append(str(project / "plugins" / "module_utils"))
    from ansible.module_utils.montaiguillon.backup.scanner import dump_flags as library_flags

    return library_flags("10.11.0-MariaDB", log_bin=True)


@pytest.fixture(scope="module")
def schema_objects(host):
    """A view, a trigger, a procedure, a function and an event, owned by the migrations user."""
    for statement in (
        "CREATE TABLE IF NOT EXISTS bk_probe (id INT PRIMARY KEY, v VARCHAR(16))",
        "REPLACE INTO bk_probe VALUES (1, 'one')",
        "CREATE OR REPLACE DEFINER VIEW bk_view AS SELECT id FROM bk_probe",
        "CREATE OR REPLACE DEFINER TRIGGER bk_trigger BEFORE INSERT ON bk_probe FOR EACH ROW SET NEW.v = UPPER(NEW.v)",
        "CREATE OR REPLACE DEFINER PROCEDURE bk_procedure() SELECT COUNT(*) FROM bk_probe",
        "CREATE OR REPLACE DEFINER FUNCTION bk_function() RETURNS INT DETERMINISTIC RETURN 42",
        "CREATE OR REPLACE DEFINER EVENT bk_event ON SCHEDULE EVERY 1 DAY DO DELETE FROM bk_probe WHERE id > 1000",
    ):
        out = sql(host, statement.replace("DEFINER", "DEFINER=`montaiguillon_migrate`@`%`"))
        assert out.rc == 0, out.stderr


def test_backup_user_dumps_everything_with_the_binlog_position(host, schema_objects):
    dump = host.run(
        "docker exec -e MYSQL_PWD=%s mysql mariadb-dump -u %s " + " ".join(dump_flags()) + " montaiguillon",
        BACKUP_PASSWORD,
        BACKUP_USER,
    )
    assert dump.rc == 0, dump.stderr
    for needle in (
        r"CREATE TABLE `bk_probe`",
        r"VIEW `?bk_view`?",
        r"TRIGGER `?bk_trigger`?",
        r"PROCEDURE `?bk_procedure`?",
        r"FUNCTION `?bk_function`?",
        r"EVENT `?bk_event`?",
        r"MASTER_LOG_POS=\d+",
        r"gtid_slave_pos='[\d-]+'",
        r"-- Dump completed",
    ):
        assert re.search(needle, dump.stdout), needle


def test_backup_user_can_flush_and_list_binlogs_for_shipping(host):
    assert as_backup_user(host, "FLUSH BINARY LOGS").rc == 0
    listed = as_backup_user(host, "SHOW BINARY LOGS")
    assert listed.rc == 0 and "mysql-bin" in listed.stdout


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO bk_probe VALUES (2, 'two')",
        "UPDATE bk_probe SET v = 'x'",
        "DELETE FROM bk_probe",
        "DROP TABLE bk_probe",
        "DROP DATABASE montaiguillon",
        "CREATE TABLE bk_nope (id INT)",
        "CREATE USER intruder IDENTIFIED BY 'x'",
        "SELECT COUNT(*) FROM mysql.user",
        "SET SESSION sql_log_bin = 0",
        "PURGE BINARY LOGS BEFORE NOW()",
    ],
)
def test_backup_user_cannot_write_drop_or_administer(host, schema_objects, statement):
    out = as_backup_user(host, statement)
    assert out.rc != 0, statement
    assert "denied" in out.stderr or "privilege" in out.stderr, out.stderr


def test_backup_user_connects_locally_only(host):
    grants = sql(host, "SELECT Host FROM mysql.user WHERE User = 'montaiguillon_backup'")
    assert grants.stdout.split() == ["localhost"]


def test_root_logs_in_only_from_inside_the_container(host):
    assert sql(host, "SELECT Host FROM mysql.user WHERE User = 'root'").stdout.split() == ["localhost"]
    over_tcp = sql(host, "SELECT 1", tcp=True)
    assert over_tcp.rc != 0 and "denied" in over_tcp.stderr, over_tcp.stderr
