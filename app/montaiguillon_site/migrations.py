"""Numbered SQL migrations: discovery, statement splitting, applying, status.

Files are named ``NNNN_name.sql`` and applied in numeric order. Each applied
migration is recorded in ``schema_migrations`` in the same transaction as its
last statements, so a failed migration is never recorded. A named lock keeps
two runs from interleaving.
"""

from __future__ import annotations

import contextlib
import datetime
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .db import describe_error, error_code

LOCK_NAME = "montaiguillon_migrate"
LOCK_TIMEOUT = 30
FILENAME_RE = re.compile(r"^(?P<version>[0-9]+)_(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)\.sql$")
ER_NO_SUCH_TABLE = 1146

CREATE_TABLE_SQL = """CREATE TABLE IF NOT EXISTS schema_migrations (
  version INT NOT NULL PRIMARY KEY,
  name VARCHAR(255) NOT NULL,
  applied_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
RECORD_SQL = "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, UTC_TIMESTAMP())"
APPLIED_SQL = "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"


class MigrationError(Exception):
    """A migration could not be found, read, parsed or applied."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path = field(compare=False)

    @property
    def filename(self) -> str:
        return self.path.name

    def statements(self) -> list[str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise MigrationError(f"{self.filename}: cannot read: {exc}") from exc
        try:
            statements = split_sql(text)
        except MigrationError as exc:
            raise MigrationError(f"{self.filename}: {exc}") from None
        if not statements:
            raise MigrationError(f"{self.filename}: contains no SQL statement")
        return statements


@dataclass(frozen=True)
class Applied:
    version: int
    name: str
    applied_at: datetime.datetime | None


def discover(directory: Path) -> list[Migration]:
    """The migrations in directory, in numeric order. Other than *.sql files are ignored."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MigrationError(f"migrations directory not found: {directory}")
    found: dict[int, Migration] = {}
    for path in directory.iterdir():
        if path.suffix != ".sql" or not path.is_file():
            continue
        match = FILENAME_RE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files must be named NNNN_name.sql")
        version = int(match["version"])
        if version < 1:
            raise MigrationError(f"{path.name}: migration numbers start at 1")
        if version in found:
            raise MigrationError(f"{path.name} and {found[version].filename} have the same number {version}")
        found[version] = Migration(version=version, name=match["name"], path=path)
    return [found[version] for version in sorted(found)]


def _skip_quoted(text: str, start: int) -> int:
    """Index just after the string or identifier opened at start.

    A doubled quote ('it''s') needs no special case: it reads as a string closed
    and another opened at once, which splits the same way.
    """
    quote = text[start]
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "\\" and quote != "`":
            i += 2
            continue
        if char == quote:
            return i + 1
        i += 1
    line = text.count("\n", 0, start) + 1
    raise MigrationError(f"unterminated {quote} quote starting on line {line}")


def _is_line_comment(text: str, i: int) -> bool:
    if text[i] == "#":
        return True
    # MySQL needs whitespace (or the end) after "--" for a comment.
    return text.startswith("--", i) and (i + 2 == len(text) or text[i + 2] in " \t\r\n")


def split_sql(text: str) -> list[str]:
    """Split a script into statements on ';', ignoring those in strings, identifiers and comments.

    Chunks holding only comments are dropped. The mysql client's DELIMITER command
    is not SQL and is rejected.
    """
    statements: list[str] = []
    start = 0
    has_code = False
    i = 0
    while i < len(text):
        char = text[i]
        if char in "'\"`":
            has_code = True
            i = _skip_quoted(text, i)
        elif _is_line_comment(text, i):
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                line = text.count("\n", 0, i) + 1
                raise MigrationError(f"unterminated /* comment starting on line {line}")
            has_code = has_code or text.startswith("/*!", i)  # executable comment
            i = end + 2
        elif char == ";":
            if has_code:
                statements.append(text[start:i].strip())
            start, has_code = i + 1, False
            i += 1
        else:
            if not has_code and not char.isspace():
                if re.match(r"DELIMITER\s", text[i : i + 10], re.IGNORECASE):
                    line = text.count("\n", 0, i) + 1
                    raise MigrationError(f"line {line}: DELIMITER is a mysql client command, not SQL")
                has_code = True
            i += 1
    if has_code:
        statements.append(text[start:].strip())
    return statements


def read_applied(conn: Any) -> dict[int, Applied]:
    """The migrations recorded in the database; none when schema_migrations does not exist yet."""
    try:
        with conn.cursor() as cur:
            cur.execute(APPLIED_SQL)
            rows = cur.fetchall()
    except Exception as exc:
        if error_code(exc) == ER_NO_SUCH_TABLE:
            return {}
        raise
    return {int(row[0]): Applied(version=int(row[0]), name=row[1], applied_at=row[2]) for row in rows}


def _acquire_lock(conn: Any, timeout: int) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT GET_LOCK(%s, %s)", (LOCK_NAME, timeout))
        row = cur.fetchone()
    if not row or row[0] != 1:
        raise MigrationError(f"could not take the lock {LOCK_NAME!r} within {timeout} s: another migration is running")


def _release_lock(conn: Any) -> None:
    # Closing the connection releases the lock too: failures here do not matter.
    with contextlib.suppress(Exception), conn.cursor() as cur:
        cur.execute("SELECT RELEASE_LOCK(%s)", (LOCK_NAME,))
        cur.fetchone()


def _apply_one(conn: Any, migration: Migration, statements: Sequence[str]) -> None:
    step = "connecting"
    try:
        with conn.cursor() as cur:
            for number, statement in enumerate(statements, 1):
                step = f"statement {number} of {len(statements)}"
                cur.execute(statement)
            step = "recording it in schema_migrations"
            cur.execute(RECORD_SQL, (migration.version, migration.name))
        conn.commit()
    except Exception as exc:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise MigrationError(
            f"{migration.filename} failed at {step}: {describe_error(exc)}; it was not recorded as applied"
        ) from exc


def migrate(
    conn: Any,
    migrations: Iterable[Migration],
    *,
    out: Callable[[str], object] = print,
    lock_timeout: int = LOCK_TIMEOUT,
) -> list[Migration]:
    """Apply the migrations not recorded yet, in order; return those applied.

    conn must not be in autocommit mode: each migration is committed with its record.
    """
    # Read and split every file first: a broken file stops the run before the database is touched.
    plans = [(migration, migration.statements()) for migration in migrations]
    _acquire_lock(conn, lock_timeout)
    try:
        with conn.cursor() as cur:
            cur.execute(CREATE_TABLE_SQL)
        conn.commit()
        applied = read_applied(conn)
        pending = [(migration, statements) for migration, statements in plans if migration.version not in applied]
        if not pending:
            out(f"nothing to apply: schema at {max(applied, default=0)}")
            return []
        for migration, statements in pending:
            _apply_one(conn, migration, statements)
            out(f"applied {migration.filename} ({len(statements)} statement(s))")
        out(f"schema now at {max([*applied, *(m.version for m, _ in pending)])}")
        return [migration for migration, _ in pending]
    finally:
        _release_lock(conn)


def status_lines(applied: dict[int, Applied], migrations: Sequence[Migration]) -> list[str]:
    """One line per migration: applied (with when) or pending; applied ones unknown to this image too."""
    shipped = {migration.version: migration for migration in migrations}
    lines = []
    for version in sorted(set(shipped) | set(applied)):
        if version in applied:
            record = applied[version]
            when = f"{record.applied_at:%Y-%m-%d %H:%M:%S} UTC" if record.applied_at else "unknown time"
            note = "" if version in shipped else "  (not shipped in this image)"
            lines.append(f"applied  {version:04d}_{record.name}  {when}{note}")
        else:
            lines.append(f"pending  {shipped[version].filename}")
    pending = sum(1 for version in shipped if version not in applied)
    lines.append(f"schema at {max(applied, default=0)}, {pending} pending")
    return lines
