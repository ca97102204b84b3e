"""The database side: PyMySQL connections (1.0.2 API), server facts, row counts,
and the login options every module working on a database in a container shares.

Callers reach ``connect`` as ``mysql.connect`` (one seam for tests).
"""

from __future__ import annotations

import re

from ansible.module_utils.montaiguillon.backup.errors import BackupError

try:
    import pymysql

    HAS_PYMYSQL = True
except ImportError:  # pragma: no cover - reported by the modules
    pymysql = None
    HAS_PYMYSQL = False


def option_file(user, password, extra=None):
    """A [client] option file; values quoted so any character survives."""

    def quote(value):
        value = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{value}"'

    lines = ["[client]", f"user={quote(user)}", f"password={quote(password or '')}"]
    for key, value in (extra or {}).items():
        lines.append(f"{key}={quote(value)}")
    return ("\n".join(lines) + "\n").encode()


def quote_identifier(name):
    return "`" + name.replace("`", "``") + "`"


# Options of every module working on a database in a container (documented by
# plugins/doc_fragments/mysql_container.py), and the login part of them.
LOGIN_KEYS = ("login_user", "login_password", "login_unix_socket", "login_host", "login_port", "connect_timeout")


CONTAINER_ARGUMENT_SPEC = {
    "container": {"type": "str", "default": "mysql"},
    "lock_timeout": {"type": "int", "default": 600},
    "login_user": {"type": "str", "default": "root"},
    "login_password": {"type": "str", "no_log": True},
    "login_unix_socket": {"type": "path", "default": "/run/montaiguillon/mysql/mysqld.sock"},
    "login_host": {"type": "str"},
    "login_port": {"type": "int", "default": 3306},
    "connect_timeout": {"type": "int", "default": 10},
    "docker_host": {"type": "str"},
}


def login_options(params):
    """The login part of a module's or a config file's parameters, as ``connect`` takes it."""
    return {key: params.get(key) for key in LOGIN_KEYS}


class ContainerModule:
    """What a module working on a database in a container starts from: its parameters and its login."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.login = login_options(self.params)


def connect(login, database=None):
    if not HAS_PYMYSQL:
        raise BackupError("PyMySQL is missing on the server (Debian: python3-pymysql)")
    kwargs = {
        "user": login["login_user"],
        "password": login.get("login_password") or "",
        "charset": "utf8mb4",
        "autocommit": True,
        "connect_timeout": int(login.get("connect_timeout") or 10),
    }
    if login.get("login_host"):
        kwargs.update(host=login["login_host"], port=int(login.get("login_port") or 3306))
        where = f"{login['login_host']}:{kwargs['port']}"
    else:
        kwargs["unix_socket"] = login["login_unix_socket"]
        where = login["login_unix_socket"]
    if database:
        kwargs["database"] = database
    try:
        return pymysql.connect(**kwargs)
    except pymysql.err.MySQLError as exc:
        raise BackupError(f"cannot connect to MySQL as {login['login_user']} via {where}: {exc}") from exc


def query_one(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()


def server_facts(conn, database):
    version = query_one(conn, "SELECT VERSION()")[0]
    log_bin = bool(int(query_one(conn, "SELECT @@log_bin")[0]))
    schema = query_one(
        conn,
        "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA"
        " WHERE SCHEMA_NAME = %s",
        (database,),
    )
    return {
        "version": version,
        "log_bin": log_bin,
        "exists": schema is not None,
        "charset": schema[0] if schema else None,
        "collation": schema[1] if schema else None,
    }


def existing_database_facts(login, database, container):
    """``server_facts`` of ``database``, which must exist: ``BackupError`` naming it and ``container`` otherwise."""
    conn = connect(login)
    try:
        facts = server_facts(conn, database)
    finally:
        conn.close()
    if not facts["exists"]:
        raise BackupError(f"database {database} does not exist on the server in {container}")
    return facts


def count_rows(conn, database, tables):
    counts = {}
    with conn.cursor() as cur:
        for table in tables:
            cur.execute(f"SELECT COUNT(*) FROM {quote_identifier(database)}.{quote_identifier(table)}")  # noqa: S608
            counts[table] = int(cur.fetchone()[0])
    return counts


def recreate_database(conn, database, charset=None, collation=None, log_to_binlog=False):
    with conn.cursor() as cur:
        if not log_to_binlog:
            cur.execute("SET SESSION sql_log_bin = 0")
        cur.execute(f"DROP DATABASE IF EXISTS {quote_identifier(database)}")
        options = ""
        if charset and re.match(r"^\w+$", charset):
            options += f" CHARACTER SET {charset}"
        if collation and re.match(r"^\w+$", collation):
            options += f" COLLATE {collation}"
        cur.execute(f"CREATE DATABASE {quote_identifier(database)}{options}")
