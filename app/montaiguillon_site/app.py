"""The WSGI application: /, /health, /version."""

from __future__ import annotations

import functools
import html
import ipaddress
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config, content, db
from .migrations import MigrationError, discover, read_applied

log = logging.getLogger("montaiguillon_site")

ALLOWED_METHODS = ("GET", "HEAD")
REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    # Why a health check failed: for the container itself (its HEALTHCHECK,
    # `docker exec`) and the logs, never for a caller from outside.
    detail: str | None = None


def is_loopback(address: str | None) -> bool:
    """True for a caller inside this container (127.0.0.0/8, ::1)."""
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def public_failure(response: Response) -> Response:
    """The same failure without its reason (database error text tells an attacker too much); logged instead."""
    log.warning("health check failed: %s", response.detail)
    return Response(
        response.status,
        (json.dumps({"status": "unhealthy"}) + "\n").encode("utf-8"),
        response.content_type,
        response.headers,
    )


def json_response(status: int, payload: Mapping[str, Any]) -> Response:
    body = (json.dumps(payload) + "\n").encode("utf-8")
    return Response(status, body, "application/json", [("Cache-Control", "no-store")])


def text_response(status: int, text: str) -> Response:
    return Response(status, (text + "\n").encode("utf-8"), "text/plain; charset=utf-8")


def _header_safe(value: str) -> str:
    """Printable ASCII only: a header value can carry neither newlines nor other bytes."""
    return "".join(char if " " <= char <= "~" else "?" for char in value)


class SiteApp:
    """The site. connect() returns a new DB-API connection (PyMySQL in production)."""

    def __init__(
        self,
        *,
        version: str,
        revision: str,
        connect: db.Connect | None,
        migrations_dir: Path,
        fail_health: bool = False,
        fail_health_after: int | None = None,
        config_error: str | None = None,
    ) -> None:
        self.version = version
        self.revision = revision
        self.connect = connect
        self.migrations_dir = migrations_dir
        self.fail_health = fail_health
        self.fail_health_after = fail_health_after
        # next() on a count is atomic under the GIL: the worker's threads share it safely.
        self._health_answers = itertools.count(1)
        self.config_error = config_error
        self._shipped: list[int] | None = None
        self._routes: dict[str, Callable[[], Response]] = {
            "/": self.index,
            "/health": self.health,
            "/version": self.version_info,
        }

    # -- WSGI ------------------------------------------------------------------
    def __call__(self, environ: Mapping[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            response = self.dispatch(method, environ.get("PATH_INFO") or "/")
            if response.detail is not None and not is_loopback(environ.get("REMOTE_ADDR")):
                response = public_failure(response)
        except Exception:
            log.exception("unhandled error on %s %s", method, environ.get("PATH_INFO"))
            response = text_response(500, "Internal Server Error")
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("X-App-Version", _header_safe(self.version)),
            ("X-Content-Type-Options", "nosniff"),
            *response.headers,
        ]
        start_response(f"{response.status} {REASONS.get(response.status, '')}".rstrip(), headers)
        return [b""] if method == "HEAD" else [response.body]

    def dispatch(self, method: str, path: str) -> Response:
        handler = self._routes.get(path)
        if handler is None:
            return text_response(404, "Not Found")
        if method not in ALLOWED_METHODS:
            response = text_response(405, "Method Not Allowed")
            response.headers.append(("Allow", ", ".join(ALLOWED_METHODS)))
            return response
        return handler()

    # -- endpoints -----------------------------------------------------------------
    def version_info(self) -> Response:
        return json_response(200, {"version": self.version, "revision": self.revision})

    def shipped_versions(self) -> list[int]:
        """Migration numbers shipped with this image (read once, the image does not change)."""
        if self._shipped is None:
            self._shipped = [migration.version for migration in discover(self.migrations_dir)]
        return self._shipped

    def health(self) -> Response:
        def failure(reason: str) -> Response:
            response = json_response(503, {"status": "error", "reason": reason})
            response.detail = reason
            return response

        if self.fail_health:
            return failure("forced failure")
        if self.fail_health_after is not None and next(self._health_answers) > self.fail_health_after:
            return failure(f"forced failure after {self.fail_health_after} healthy answers")
        if self.config_error is not None or self.connect is None:
            return failure(f"configuration error: {self.config_error}")
        try:
            shipped = self.shipped_versions()
        except MigrationError as exc:
            return failure(f"migrations unreadable: {exc}")
        try:
            with db.connection(self.connect) as conn:
                try:
                    applied = read_applied(conn)
                except Exception as exc:
                    return failure(f"database query failed: {db.describe_error(exc)}")
        except Exception as exc:
            return failure(f"database unreachable: {db.describe_error(exc)}")
        at = max(applied, default=0)
        missing = [version for version in shipped if version not in applied]
        if missing:
            needs = max(shipped)
            if at < needs:
                return failure(f"schema behind: at {at}, image needs {needs}")
            return failure(f"schema behind: at {at}, missing migration(s) {', '.join(map(str, missing))}")
        return json_response(200, {"status": "ok", "version": self.version, "schema": at})

    def index(self) -> Response:
        news: list[db.NewsItem] | None = None
        if self.connect is not None:
            try:
                with db.connection(self.connect) as conn:
                    news = db.fetch_news(conn)
            except Exception as exc:
                log.warning("news unavailable: %s", db.describe_error(exc))
        else:
            log.warning("news unavailable: configuration error: %s", self.config_error)
        status = 200 if news is not None else 503
        response = Response(status, render_page(news, self.version).encode("utf-8"), "text/html; charset=utf-8")
        response.headers.append(("Cache-Control", "no-cache"))
        return response


def render_page(news: list[db.NewsItem] | None, version: str) -> str:
    esc = functools.partial(html.escape, quote=True)
    if news is None:
        section = f'<p class="notice">{esc(content.NEWS_UNAVAILABLE)}</p>'
    elif not news:
        section = f"<p>{esc(content.NO_NEWS)}</p>"
    else:
        items = []
        for item in news:
            when = ""
            if item.published_at is not None:
                when = f'<time datetime="{item.published_at:%Y-%m-%d}">{item.published_at:%Y-%m-%d}</time>\n'
            items.append(
                f'<article class="news">\n<h2>{esc(item.title)}</h2>\n{when}<p>{esc(item.body)}</p>\n</article>'
            )
        section = "\n".join(items)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(content.TITLE)}</title>
<style>body{{font-family:sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#222}}
time{{color:#666;font-size:.9em}}footer{{margin-top:3rem;color:#888;font-size:.8em}}</style>
</head>
<body>
<header>
<h1>{esc(content.HEADLINE)}</h1>
<p>{esc(content.INTRO)}</p>
</header>
<main>
{section}
</main>
<footer>{esc(content.TITLE)} &middot; version {esc(version)}</footer>
</body>
</html>
"""


def create_app(environ: Mapping[str, str] | None = None, connect: db.Connect | None = None) -> SiteApp:
    """The site configured from environ (os.environ by default).

    A configuration error does not stop the site: /health reports it and / answers 503.
    """
    environ = os.environ if environ is None else environ
    config_error = None
    if connect is None:
        try:
            settings = config.db_settings(environ)
        except config.ConfigError as exc:
            config_error = str(exc)
            log.error("configuration error: %s", exc)
        else:
            connect = functools.partial(db.connect, settings)
    fail_health_after = None
    try:
        fail_health_after = config.fail_health_after(environ)
    except config.ConfigError as exc:
        config_error = config_error or str(exc)
        log.error("configuration error: %s", exc)
    return SiteApp(
        version=config.app_version(environ),
        revision=config.app_revision(environ),
        connect=connect,
        migrations_dir=config.migrations_dir(environ),
        fail_health=config.fail_health(environ),
        fail_health_after=fail_health_after,
        config_error=config_error,
    )
