"""Database access: one short-lived PyMySQL connection per request, with timeouts."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pymysql

from .config import DBSettings

# The site must answer /health quickly whatever the database does: at most
# CONNECT_TIMEOUT to connect, then READ_TIMEOUT per wait for the server.
CONNECT_TIMEOUT = 2
READ_TIMEOUT = 3
WRITE_TIMEOUT = 3
NEWS_LIMIT = 20

Connect = Callable[[], Any]


def connect(settings: DBSettings, *, autocommit: bool = True, read_timeout: int = READ_TIMEOUT) -> Any:
    return pymysql.connect(
        host=settings.host,
        port=settings.port,
        user=settings.user,
        password=settings.password,
        database=settings.name,
        charset="utf8mb4",
        autocommit=autocommit,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=read_timeout,
        write_timeout=WRITE_TIMEOUT,
    )


@contextlib.contextmanager
def connection(factory: Connect) -> Iterator[Any]:
    """A connection from factory, always closed afterwards (even when the server went away)."""
    conn = factory()
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def describe_error(exc: BaseException) -> str:
    """'message [code]' for MySQL errors, the plain text otherwise."""
    args = getattr(exc, "args", ())
    if isinstance(exc, pymysql.MySQLError) and len(args) >= 2 and isinstance(args[0], int):
        return f"{args[1]} [{args[0]}]"
    return str(exc) or type(exc).__name__


def error_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


@dataclass(frozen=True)
class NewsItem:
    title: str
    body: str
    published_at: datetime.datetime | None


def fetch_news(conn: Any, limit: int = NEWS_LIMIT) -> list[NewsItem]:
    """The newest news items first."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT title, body, published_at FROM news ORDER BY published_at DESC, id DESC LIMIT %s",
            (limit,),
        )
        rows = cur.fetchall()
    return [NewsItem(title=row[0], body=row[1], published_at=row[2]) for row in rows]
