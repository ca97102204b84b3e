"""``python3 -m montaiguillon_site migrate [--status]`` and ``healthcheck``: output and exit status."""

import io
import json
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from montaiguillon_site.__main__ import main
from montaiguillon_site.app import create_app

ENV = {"APP_DB_NAME": "site", "APP_DB_USER": "site", "APP_DB_PASSWORD": "s3cret"}


def run(argv, environ, fake_db):
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, environ, connect=fake_db.connect, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def env(migrations_dir):
    return {**ENV, "APP_MIGRATIONS_DIR": str(migrations_dir)}


def test_migrate_prints_what_it_applied_then_nothing(fake_db, env):
    code, out, err = run(["migrate"], env, fake_db)
    assert code == 0, err
    assert "applied 0001_create_things.sql" in out
    assert "applied 0003_seed_things.sql" in out
    assert out.rstrip().endswith("schema now at 3")
    assert all(conn.closed for conn in fake_db.connections)

    code, out, _ = run(["migrate"], env, fake_db)
    assert code == 0
    assert "applied 0" not in out
    assert "nothing to apply: schema at 3" in out


def test_migrate_failure_exits_non_zero_with_the_reason(fake_db, env):
    fake_db.fail_on = "ALTER TABLE"
    code, _, err = run(["migrate"], env, fake_db)
    assert code == 1
    assert err.startswith("migrate: error: 0002_add_colour.sql failed at statement 1 of 2")
    assert fake_db.applied.keys() == {1}
    assert fake_db.connections[0].closed


def test_migrate_when_database_is_unreachable(fake_db, env):
    fake_db.reachable = False
    code, _, err = run(["migrate"], env, fake_db)
    assert code == 1
    assert err.startswith("migrate: error: cannot connect to site@mysql:3306/site: Can't connect")
    assert "s3cret" not in err


def test_migrate_configuration_error_exits_2(fake_db, env):
    del env["APP_DB_NAME"]
    code, _, err = run(["migrate"], env, fake_db)
    assert code == 2
    assert "APP_DB_NAME is not set" in err
    assert fake_db.connect_settings == []


def test_migrate_uses_the_migration_credentials(fake_db, env, tmp_path):
    secret = tmp_path / "migrate_password"
    secret.write_text("owner-pw\n")
    env.update(APP_MIGRATE_USER="owner", APP_MIGRATE_PASSWORD_FILE=str(secret))
    code, _, _ = run(["migrate"], env, fake_db)
    assert code == 0
    settings = fake_db.connect_settings[0]
    assert (settings.user, settings.password) == ("owner", "owner-pw")


def test_status_lists_pending_without_changing_anything(fake_db, env):
    code, out, _ = run(["migrate", "--status"], env, fake_db)
    assert code == 0
    assert out.splitlines() == [
        "pending  0001_create_things.sql",
        "pending  0002_add_colour.sql",
        "pending  0003_seed_things.sql",
        "schema at 0, 3 pending",
    ]
    assert not fake_db.table_exists
    assert fake_db.statements_run() == []


def test_status_fails_when_the_database_does(fake_db, env):
    fake_db.table_exists = True
    fake_db.fail_on = "schema_migrations"
    code, _, err = run(["migrate", "--status"], env, fake_db)
    assert code == 1
    assert err.startswith("migrate: error: database error: You have an error")


def test_unknown_command_is_a_usage_error(fake_db, env, capsys):
    with pytest.raises(SystemExit) as raised:
        run(["migrat"], env, fake_db)
    assert raised.value.code == 2


# -- healthcheck against a real HTTP server on 127.0.0.1 ---------------------------------------


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve(env):
    servers = []

    def start(app):
        server = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_port

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_healthcheck_exit_status_follows_health(fake_db, env, serve):
    port = serve(create_app(env, connect=fake_db.connect))
    environ = {"APP_PORT": str(port)}

    code, out, _ = run(["healthcheck"], environ, fake_db)
    assert code == 1
    assert out.strip() == "unhealthy: HTTP 503: schema behind: at 0, image needs 3"

    assert run(["migrate"], env, fake_db)[0] == 0
    code, out, _ = run(["healthcheck"], environ, fake_db)
    assert code == 0
    assert json.loads(out)["status"] == "ok"


def test_healthcheck_when_nothing_listens(fake_db, env, serve):
    port = serve(create_app(env, connect=fake_db.connect))
    # A port that was free a moment ago: take one from a closed server.
    server = make_server("127.0.0.1", 0, create_app(env, connect=fake_db.connect))
    closed_port = server.server_port
    server.server_close()
    assert closed_port != port
    code, out, _ = run(["healthcheck"], {"APP_PORT": str(closed_port)}, fake_db)
    assert code == 1
    assert out.startswith(f"unhealthy: http://127.0.0.1:{closed_port}/health:")
