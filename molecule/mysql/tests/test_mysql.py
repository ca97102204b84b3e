"""The database after the mysql role (and after its container was re-created)."""

import json

import pytest

ROOT = "molecule-root-secret"
SOCKET = "/run/montaiguillon/mysql/mysqld.sock"


def sql(host, query, user="root", password=ROOT, database="montaiguillon"):
    """Run SQL inside the container as a given user (over TCP, as a client would)."""
    return host.run(
        "docker exec -e MYSQL_PWD=%s mysql mariadb -h 127.0.0.1 --protocol=tcp -u %s -N -B %s -e %s",
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
