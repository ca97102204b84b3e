"""The app contract: an app's database variables and its paths, checked before any server changes."""

import pytest
import sourcefile

contract = sourcefile.load("plugins/filter/app_contract.py", "app_contract")

FACTS = {
    "host": "mysql",
    "port": "3306",
    "name": "wordpress",
    "user": "wp",
    "password": "s3cret",
    "migrate_user": "wp_migrate",
    "migrate_password": "m1grate",
}


def test_each_fact_travels_its_own_way():
    mapping = {
        "host": "WORDPRESS_DB_HOST",
        "name": "WORDPRESS_DB_NAME",
        "user": "WORDPRESS_DB_USER",
        "password": "WORDPRESS_DB_PASSWORD",
        "migrate_password": "WP_MIGRATE_PASSWORD",
    }
    result = contract.app_database_environment(mapping, FACTS)
    assert result["problems"] == []
    assert result["env"] == {"WORDPRESS_DB_HOST": "mysql", "WORDPRESS_DB_NAME": "wordpress", "WORDPRESS_DB_USER": "wp"}
    # The password never lands in the plain environment, the migrations one only in the migration.
    assert result["secret_files"] == {"WORDPRESS_DB_PASSWORD": "s3cret"}
    assert result["migrate_secret_env"] == {"WP_MIGRATE_PASSWORD": "m1grate"}


def test_a_site_without_a_database_gets_nothing():
    for empty in ({}, None, ""):
        result = contract.app_database_environment(empty, FACTS)
        assert result == {"env": {}, "secret_files": {}, "migrate_secret_env": {}, "problems": []}


def test_the_role_defaults_give_the_sample_site_its_variables():
    defaults = {
        "host": "APP_DB_HOST",
        "port": "APP_DB_PORT",
        "name": "APP_DB_NAME",
        "user": "APP_DB_USER",
        "password": "APP_DB_PASSWORD",
        "migrate_user": "APP_MIGRATE_USER",
        "migrate_password": "APP_MIGRATE_PASSWORD",
    }
    result = contract.app_database_environment(defaults, FACTS)
    assert set(result["env"]) == {"APP_DB_HOST", "APP_DB_PORT", "APP_DB_NAME", "APP_DB_USER", "APP_MIGRATE_USER"}
    assert result["secret_files"] == {"APP_DB_PASSWORD": "s3cret"}


@pytest.mark.parametrize(
    ("mapping", "facts", "expected"),
    [
        ({"hots": "DB_HOST"}, FACTS, "app_database_environment.hots: 'hots' is not a database fact (known: host,"),
        ({"host": "DB HOST"}, FACTS, "app_database_environment.host: 'DB HOST' is not an environment variable name"),
        ({"host": 5}, FACTS, "app_database_environment.host: 5 is not an environment variable name"),
        ({"host": "DB", "name": "DB"}, FACTS, "app_database_environment.name: DB is already the variable of 'host'"),
        ({"password": "DB_PW"}, {**FACTS, "password": ""}, "the database fact 'password' has no value"),
        (["host"], FACTS, "app_database_environment must map database facts to variable names (got list)"),
    ],
)
def test_bad_mappings_are_named(mapping, facts, expected):
    result = contract.app_database_environment(mapping, facts)
    assert any(expected in problem for problem in result["problems"]), result["problems"]
    assert result["env"] == result["secret_files"] == result["migrate_secret_env"] == {}


def test_a_problem_never_shows_a_secret_value():
    result = contract.app_database_environment({"password": "DB_PW", "hots": "X"}, FACTS)
    assert result["problems"] and "s3cret" not in " ".join(result["problems"])


@pytest.mark.parametrize(
    ("port", "health", "version"),
    [(8000, "/health", "/version"), ("80", "/", ""), (8000, "/wp-admin/install.php", None), (1, "/ping?full=1", "")],
)
def test_good_contracts_pass(port, health, version):
    assert contract.app_contract_problems(port, health, version) == []


@pytest.mark.parametrize(
    ("port", "health", "version", "expected"),
    [
        (0, "/health", "", "app_port must be the port the app listens on, 1-65535 (got 0)"),
        ("http", "/health", "", "app_port must be the port the app listens on, 1-65535 (got 'http')"),
        (True, "/health", "", "app_port must be"),
        (8000, "health", "", "app_health_path must be a URL path like /health, starting with '/' (got 'health')"),
        (8000, "", "", "app_health_path must be a URL path"),
        (8000, "http://x/health", "", "app_health_path must be a URL path"),
        (8000, "/he alth", "", "app_health_path must be a URL path"),
        (8000, "/health", "version", "app_version_path must be a URL path"),
    ],
)
def test_bad_contracts_are_named(port, health, version, expected):
    assert any(expected in p for p in contract.app_contract_problems(port, health, version))
