"""Fixtures for the site's unit tests: an in-memory stand-in for the database.

FakeDatabase understands exactly the queries the site sends (lock, schema_migrations,
news) and records every other statement as a migration statement, with
transactions: a rollback discards what was not committed.
"""

import datetime
import sys
from pathlib import Path

import pymysql
import pytest

APP_DIR = Path(__file__).resolve().parent.parent
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))


class FakeDatabase:
    def __init__(self):
        self.reachable = True
        self.table_exists = False
        self.applied = {}  # version -> (name, applied_at)
        self.news = []  # rows (title, body, published_at) as the server would return them
        self.lock_result = 1
        self.lock_held = False
        self.fail_on = None  # a statement containing this text fails
        self.fail_error = pymysql.err.ProgrammingError(1064, "You have an error in your SQL syntax")
        self.committed = []  # migration statements committed, in order
        self.log = []  # every query sent, in order
        self.connections = []
        self.connect_settings = []

    def connect(self, settings=None):
        self.connect_settings.append(settings)
        if not self.reachable:
            raise pymysql.err.OperationalError(2003, "Can't connect to MySQL server on 'mysql' (timed out)")
        conn = FakeConnection(self)
        self.connections.append(conn)
        return conn

    def statements_run(self):
        """Migration statements that reached the database, committed or not."""
        return [sql for sql in self.log if not _is_bookkeeping(sql)]


def _is_bookkeeping(sql):
    return any(word in sql for word in ("GET_LOCK", "RELEASE_LOCK", "schema_migrations", "FROM news"))


class FakeConnection:
    def __init__(self, database):
        self.db = database
        self.closed = False
        self.pending_statements = []
        self.pending_records = []
        self.rollbacks = 0

    def cursor(self):
        if self.closed:
            raise pymysql.err.InterfaceError(0, "connection closed")
        return FakeCursor(self)

    def commit(self):
        self.db.committed.extend(self.pending_statements)
        for version, name in self.pending_records:
            assert version not in self.db.applied, "duplicate primary key"
            self.db.applied[version] = (name, datetime.datetime(2024, 1, 1, 12, 0, 0))
        self.pending_statements, self.pending_records = [], []

    def rollback(self):
        self.rollbacks += 1
        self.pending_statements, self.pending_records = [], []

    def close(self):
        self.closed = True
        self.db.lock_held = False  # the server releases a connection's locks


class FakeCursor:
    def __init__(self, conn):
        self.conn = conn
        self.rows = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql, args=None):
        db = self.conn.db
        db.log.append(sql)
        if db.fail_on and db.fail_on in sql:
            raise db.fail_error
        if "GET_LOCK" in sql:
            self.rows = [(db.lock_result,)]
            db.lock_held = db.lock_result == 1
        elif "RELEASE_LOCK" in sql:
            self.rows = [(1 if db.lock_held else 0,)]
            db.lock_held = False
        elif sql.startswith("CREATE TABLE IF NOT EXISTS schema_migrations"):
            db.table_exists = True
        elif "schema_migrations" in sql:
            if not db.table_exists:
                raise pymysql.err.ProgrammingError(1146, "Table 'site.schema_migrations' doesn't exist")
            if sql.startswith("INSERT"):
                assert db.lock_held, "a migration was recorded without holding the lock"
                self.conn.pending_records.append(args)
            else:
                self.rows = [(version, name, when) for version, (name, when) in sorted(db.applied.items())]
        elif "FROM news" in sql:
            self.rows = list(db.news)
        else:
            self.conn.pending_statements.append(sql)
        return len(self.rows)

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self):
        return list(self.rows)


@pytest.fixture
def fake_db():
    return FakeDatabase()


@pytest.fixture
def migrations_dir(tmp_path):
    """Three small migrations in a temporary directory."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "0001_create_things.sql").write_text("CREATE TABLE things (id INT);\n")
    (directory / "0002_add_colour.sql").write_text(
        "ALTER TABLE things ADD colour VARCHAR(20);\nUPDATE things SET colour = 'red; or blue';\n"
    )
    (directory / "0003_seed_things.sql").write_text("INSERT INTO things (id) VALUES (1);\n")
    return directory
