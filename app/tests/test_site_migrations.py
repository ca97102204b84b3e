"""Migration discovery, splitting and the apply/skip/record/lock logic."""

import datetime
import re

import pymysql
import pytest
from montaiguillon_site.config import DEFAULT_MIGRATIONS_DIR
from montaiguillon_site.migrations import (
    LOCK_NAME,
    Migration,
    MigrationError,
    discover,
    migrate,
    read_applied,
    split_sql,
    status_lines,
)

# -- discovery -------------------------------------------------------------------


def test_discover_orders_numerically_and_ignores_other_files(tmp_path):
    for name in ("10_ten.sql", "9_nine.sql", "0002_two.sql", "README.md", "0003_three.sql.bak"):
        (tmp_path / name).write_text("SELECT 1;")
    found = discover(tmp_path)
    assert [(m.version, m.name) for m in found] == [(2, "two"), (9, "nine"), (10, "ten")]


@pytest.mark.parametrize("name", ["create.sql", "0001-create.sql", "0001_.sql", "v1_create.sql"])
def test_discover_rejects_badly_named_sql_files(tmp_path, name):
    (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=re.escape("NNNN_name.sql")):
        discover(tmp_path)


def test_discover_rejects_duplicate_numbers(tmp_path):
    (tmp_path / "0002_a.sql").write_text("SELECT 1;")
    (tmp_path / "2_b.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="same number 2"):
        discover(tmp_path)


def test_discover_rejects_number_zero(tmp_path):
    (tmp_path / "0000_init.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="start at 1"):
        discover(tmp_path)


def test_discover_needs_the_directory(tmp_path):
    with pytest.raises(MigrationError, match="not found"):
        discover(tmp_path / "missing")


# -- splitting ----------------------------------------------------------------------


def test_split_ignores_semicolons_in_strings_identifiers_and_comments():
    script = """
-- a comment; with a semicolon
CREATE TABLE `odd;name` (id INT); # trailing; comment
INSERT INTO t VALUES ('it''s; fine', "say \\"hi\\"; ok", 'back\\\\'); /* block; comment */
UPDATE t SET a = 1--1;
"""
    assert split_sql(script) == [
        "-- a comment; with a semicolon\nCREATE TABLE `odd;name` (id INT)",
        "# trailing; comment\nINSERT INTO t VALUES ('it''s; fine', \"say \\\"hi\\\"; ok\", 'back\\\\')",
        "/* block; comment */\nUPDATE t SET a = 1--1",
    ]


def test_split_keeps_a_last_statement_without_semicolon_and_drops_comment_only_chunks():
    assert split_sql("SELECT 1;\n-- the end\n") == ["SELECT 1"]
    assert split_sql("SELECT 1;\nSELECT 2") == ["SELECT 1", "SELECT 2"]
    assert split_sql("/* nothing */ ;;\n") == []


def test_split_keeps_executable_comments():
    assert split_sql("/*!40101 SET NAMES utf8mb4 */;") == ["/*!40101 SET NAMES utf8mb4 */"]


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("INSERT INTO t VALUES ('open;\n", "unterminated ' quote starting on line 1"),
        ("SELECT 1;\n/* open", "unterminated /\\* comment starting on line 2"),
        ("DELIMITER //\nCREATE PROCEDURE p() BEGIN SELECT 1; END//", "line 1: DELIMITER"),
    ],
)
def test_split_rejects_what_it_cannot_send(script, message):
    with pytest.raises(MigrationError, match=message):
        split_sql(script)


def test_a_file_without_statements_is_an_error(tmp_path):
    path = tmp_path / "0001_empty.sql"
    path.write_text("-- TODO\n")
    with pytest.raises(MigrationError, match=re.escape("0001_empty.sql: contains no SQL statement")):
        Migration(1, "empty", path).statements()


# -- applying ------------------------------------------------------------------------


def test_migrate_applies_everything_in_order_and_records_it(fake_db, migrations_dir):
    conn = fake_db.connect()
    printed = []
    applied = migrate(conn, discover(migrations_dir), out=printed.append)
    assert [m.version for m in applied] == [1, 2, 3]
    assert fake_db.committed == [
        "CREATE TABLE things (id INT)",
        "ALTER TABLE things ADD colour VARCHAR(20)",
        "UPDATE things SET colour = 'red; or blue'",
        "INSERT INTO things (id) VALUES (1)",
    ]
    assert fake_db.applied.keys() == {1, 2, 3}
    assert fake_db.applied[2][0] == "add_colour"
    assert printed == [
        "applied 0001_create_things.sql (1 statement(s))",
        "applied 0002_add_colour.sql (2 statement(s))",
        "applied 0003_seed_things.sql (1 statement(s))",
        "schema now at 3",
    ]


def test_migrate_takes_the_lock_first_and_releases_it(fake_db, migrations_dir):
    conn = fake_db.connect()
    migrate(conn, discover(migrations_dir), out=lambda line: None)
    assert "GET_LOCK" in fake_db.log[0]
    assert "RELEASE_LOCK" in fake_db.log[-1]
    assert not fake_db.lock_held
    assert LOCK_NAME == "montaiguillon_migrate"


def test_migrate_is_idempotent(fake_db, migrations_dir):
    migrate(fake_db.connect(), discover(migrations_dir), out=lambda line: None)
    statements_before = fake_db.statements_run()
    printed = []
    assert migrate(fake_db.connect(), discover(migrations_dir), out=printed.append) == []
    assert fake_db.statements_run() == statements_before
    assert printed == ["nothing to apply: schema at 3"]


def test_migrate_applies_only_pending(fake_db, migrations_dir):
    fake_db.table_exists = True
    fake_db.applied = {1: ("create_things", None), 2: ("add_colour", None)}
    applied = migrate(fake_db.connect(), discover(migrations_dir), out=lambda line: None)
    assert [m.version for m in applied] == [3]
    assert fake_db.committed == ["INSERT INTO things (id) VALUES (1)"]


def test_a_failed_migration_is_not_recorded_and_stops_the_run(fake_db, migrations_dir):
    fake_db.fail_on = "UPDATE things"
    conn = fake_db.connect()
    printed = []
    with pytest.raises(MigrationError) as raised:
        migrate(conn, discover(migrations_dir), out=printed.append)
    message = str(raised.value)
    assert message.startswith("0002_add_colour.sql failed at statement 2 of 2: You have an error")
    assert "not recorded" in message
    assert fake_db.applied.keys() == {1}
    assert conn.rollbacks == 1
    assert not any("INSERT INTO things" in sql for sql in fake_db.log)  # 0003 never ran
    assert printed == ["applied 0001_create_things.sql (1 statement(s))"]
    assert not fake_db.lock_held


def test_a_failure_to_record_rolls_back(fake_db, migrations_dir):
    fake_db.fail_on = "INSERT INTO schema_migrations"
    conn = fake_db.connect()
    with pytest.raises(MigrationError, match=re.escape("0001_create_things.sql failed at recording it")):
        migrate(conn, discover(migrations_dir), out=lambda line: None)
    assert fake_db.applied == {}
    assert fake_db.committed == []


def test_migrate_gives_up_when_another_run_holds_the_lock(fake_db, migrations_dir):
    fake_db.lock_result = 0
    with pytest.raises(MigrationError, match="could not take the lock 'montaiguillon_migrate' within 30 s"):
        migrate(fake_db.connect(), discover(migrations_dir), out=lambda line: None)
    assert fake_db.statements_run() == []
    assert not fake_db.table_exists


def test_a_broken_file_stops_before_touching_the_database(fake_db, migrations_dir):
    (migrations_dir / "0004_broken.sql").write_text("INSERT INTO t VALUES ('unterminated);\n")
    with pytest.raises(MigrationError, match=re.escape("0004_broken.sql: unterminated")):
        migrate(fake_db.connect(), discover(migrations_dir), out=lambda line: None)
    assert fake_db.log == []


# -- status ------------------------------------------------------------------------------


def test_read_applied_without_table_is_empty_and_other_errors_propagate(fake_db):
    assert read_applied(fake_db.connect()) == {}
    fake_db.table_exists = True
    fake_db.fail_on = "schema_migrations"
    with pytest.raises(pymysql.err.ProgrammingError):
        read_applied(fake_db.connect())


def test_status_lines(fake_db, migrations_dir):
    fake_db.table_exists = True
    fake_db.applied = {1: ("create_things", datetime.datetime(2024, 5, 1, 8, 30)), 7: ("from_the_future", None)}
    lines = status_lines(read_applied(fake_db.connect()), discover(migrations_dir))
    assert lines == [
        "applied  0001_create_things  2024-05-01 08:30:00 UTC",
        "pending  0002_add_colour.sql",
        "pending  0003_seed_things.sql",
        "applied  0007_from_the_future  unknown time  (not shipped in this image)",
        "schema at 7, 2 pending",
    ]


# -- the migrations shipped in the image --------------------------------------------------


def test_shipped_migrations_are_numbered_from_one_without_gaps():
    shipped = discover(DEFAULT_MIGRATIONS_DIR)
    assert [m.version for m in shipped] == list(range(1, len(shipped) + 1))
    assert [m.filename for m in shipped[:2]] == ["0001_create_news.sql", "0002_seed_news.sql"]


def test_shipped_migrations_create_and_seed_the_news():
    create, seed = (m.statements() for m in discover(DEFAULT_MIGRATIONS_DIR)[:2])
    assert len(create) == 1
    assert create[0].startswith("-- ")
    assert "CREATE TABLE IF NOT EXISTS news" in create[0]
    assert len(seed) == 1
    assert seed[0].count("),\n") == 2  # three rows in one INSERT, the ';' inside a text kept
    assert "volunteers; the view" in seed[0]
