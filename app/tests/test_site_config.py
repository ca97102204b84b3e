"""Environment variables of the contract, and the gunicorn settings built from them."""

import importlib

import pytest
from montaiguillon_site import config
from montaiguillon_site.config import ConfigError, db_settings

BASE = {"APP_DB_NAME": "site", "APP_DB_USER": "site"}


def test_database_defaults():
    settings = db_settings(BASE)
    assert (settings.host, settings.port, settings.name, settings.user, settings.password) == (
        "mysql",
        3306,
        "site",
        "site",
        "",
    )


def test_database_settings_from_environment():
    settings = db_settings({**BASE, "APP_DB_HOST": "db.internal", "APP_DB_PORT": "3307", "APP_DB_PASSWORD": "pw"})
    assert (settings.host, settings.port, settings.password) == ("db.internal", 3307, "pw")


def test_password_from_file_keeps_inner_whitespace(tmp_path):
    value = " pass word "
    secret = tmp_path / "password"
    secret.write_text(value + "\n")
    assert db_settings({**BASE, "APP_DB_PASSWORD_FILE": str(secret)}).password == value


def test_password_and_password_file_together_is_an_error(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("a")
    with pytest.raises(ConfigError, match="both APP_DB_PASSWORD and APP_DB_PASSWORD_FILE"):
        db_settings({**BASE, "APP_DB_PASSWORD": "b", "APP_DB_PASSWORD_FILE": str(secret)})


def test_unreadable_password_file_names_the_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=f"APP_DB_PASSWORD_FILE: cannot read {missing}"):
        db_settings({**BASE, "APP_DB_PASSWORD_FILE": str(missing)})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"APP_DB_USER": "site"}, "APP_DB_NAME is not set"),
        ({"APP_DB_NAME": "site"}, "APP_DB_USER is not set"),
        ({**BASE, "APP_DB_PORT": "mysql"}, "APP_DB_PORT must be an integer"),
        ({**BASE, "APP_DB_PORT": "70000"}, "APP_DB_PORT must be between 1 and 65535"),
    ],
)
def test_invalid_database_settings(environ, message):
    with pytest.raises(ConfigError, match=message):
        db_settings(environ)


def test_migration_credentials_fall_back_to_the_site_ones():
    environ = {**BASE, "APP_DB_PASSWORD": "site-pw"}
    settings = db_settings(environ, for_migrations=True)
    assert (settings.user, settings.password) == ("site", "site-pw")
    settings = db_settings(
        {**environ, "APP_MIGRATE_USER": "owner", "APP_MIGRATE_PASSWORD": "owner-pw"}, for_migrations=True
    )
    assert (settings.user, settings.password) == ("owner", "owner-pw")
    # The site itself never uses them.
    assert db_settings({**environ, "APP_MIGRATE_USER": "owner"}).user == "site"


def test_password_is_not_in_the_repr():
    assert "hunter2" not in repr(db_settings({**BASE, "APP_DB_PASSWORD": "hunter2"}))


@pytest.mark.parametrize(("raw", "expected"), [(None, 0.0), ("", 0.0), ("2", 2.0), ("0.5", 0.5)])
def test_boot_delay(raw, expected):
    assert config.boot_delay({} if raw is None else {"APP_BOOT_DELAY": raw}) == expected


@pytest.mark.parametrize("raw", ["soon", "-1", "nan", "inf"])
def test_invalid_boot_delay(raw):
    with pytest.raises(ConfigError, match="APP_BOOT_DELAY"):
        config.boot_delay({"APP_BOOT_DELAY": raw})


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("true", True), ("0", False), ("", False)])
def test_fail_health_flag(raw, expected):
    assert config.fail_health({"APP_FAIL_HEALTH": raw}) is expected


# -- gunicorn settings ---------------------------------------------------------------------


def load_gunicorn_conf(monkeypatch, **env):
    for name in ("APP_PORT", "APP_WORKERS", "APP_THREADS", "APP_BOOT_DELAY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    import montaiguillon_site.gunicorn_conf as module

    return importlib.reload(module)


def test_gunicorn_defaults(monkeypatch):
    conf = load_gunicorn_conf(monkeypatch)
    assert conf.bind == ["0.0.0.0:8000"]
    assert (conf.worker_class, conf.workers, conf.threads) == ("gthread", 2, 4)
    assert conf.graceful_timeout == 10
    assert conf.accesslog == "-"


def test_gunicorn_conf_exposes_only_gunicorn_settings(monkeypatch):
    # gunicorn applies every public name of the module as a setting and refuses
    # values of the wrong type (an imported module named "config" broke startup).
    conf = load_gunicorn_conf(monkeypatch)
    public = {name for name in vars(conf) if not name.startswith("_")}
    assert public == {
        "bind",
        "worker_class",
        "workers",
        "threads",
        "graceful_timeout",
        "timeout",
        "keepalive",
        "accesslog",
        "errorlog",
        "on_starting",
    }


def test_gunicorn_binds_app_port(monkeypatch):
    conf = load_gunicorn_conf(monkeypatch, APP_PORT="9090", APP_WORKERS="3", APP_THREADS="8")
    assert conf.bind == ["0.0.0.0:9090"]
    assert (conf.workers, conf.threads) == (3, 8)


def test_gunicorn_refuses_a_bad_port(monkeypatch):
    with pytest.raises(ConfigError, match="APP_PORT must be an integer"):
        load_gunicorn_conf(monkeypatch, APP_PORT="http")


class FakeLog:
    def info(self, *args):
        pass


class FakeServer:
    log = FakeLog()


def test_boot_delay_sleeps_before_the_port_is_bound(monkeypatch):
    conf = load_gunicorn_conf(monkeypatch, APP_BOOT_DELAY="1.5")
    slept = []
    monkeypatch.setattr(conf._time, "sleep", slept.append)
    conf.on_starting(FakeServer())
    assert slept == [1.5]


def test_no_boot_delay_by_default(monkeypatch):
    conf = load_gunicorn_conf(monkeypatch)
    slept = []
    monkeypatch.setattr(conf._time, "sleep", slept.append)
    conf.on_starting(FakeServer())
    assert slept == []
