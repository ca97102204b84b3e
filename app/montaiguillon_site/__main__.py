"""Command line: ``python3 -m montaiguillon_site migrate [--status]`` and ``... healthcheck``.

Exit status: 0 success, 1 failure (database, migration, lock, unhealthy), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from . import config, db
from .migrations import MigrationError, discover, migrate, read_applied, status_lines

# Long enough to wait for the lock (30 s) and for slow DDL.
MIGRATE_READ_TIMEOUT = 900
HEALTHCHECK_TIMEOUT = 4


def _connect_for_migrations(settings: config.DBSettings) -> Any:
    return db.connect(settings, autocommit=False, read_timeout=MIGRATE_READ_TIMEOUT)


def run_migrate(
    environ: Mapping[str, str],
    *,
    status_only: bool,
    connect: Callable[[config.DBSettings], Any],
    out: TextIO,
    err: TextIO,
) -> int:
    def fail(message: str, code: int = 1) -> int:
        print(f"migrate: error: {message}", file=err)
        return code

    try:
        settings = config.db_settings(environ, for_migrations=True)
        directory = config.migrations_dir(environ)
    except config.ConfigError as exc:
        return fail(f"configuration: {exc}", 2)
    try:
        migrations = discover(directory)
    except MigrationError as exc:
        return fail(str(exc))
    try:
        conn = connect(settings)
    except Exception as exc:
        return fail(f"cannot connect to {settings.describe()}: {db.describe_error(exc)}")
    try:
        if status_only:
            for line in status_lines(read_applied(conn), migrations):
                print(line, file=out)
        else:
            print(f"migrating {settings.describe()} with {len(migrations)} migration(s) from {directory}", file=out)
            migrate(conn, migrations, out=functools.partial(print, file=out))
    except MigrationError as exc:
        return fail(str(exc))
    except Exception as exc:
        return fail(f"database error: {db.describe_error(exc)}")
    finally:
        try:
            conn.close()
        except Exception as exc:
            print(f"migrate: warning: closing the connection: {db.describe_error(exc)}", file=err)
    return 0


def run_healthcheck(
    environ: Mapping[str, str], *, out: TextIO, opener: Callable[..., Any] = urllib.request.urlopen
) -> int:
    """GET /health on this container; 0 when it answers 200 (for Docker's HEALTHCHECK)."""
    try:
        url = f"http://127.0.0.1:{config.port(environ)}/health"
    except config.ConfigError as exc:
        print(f"unhealthy: {exc}", file=out)
        return 1
    try:
        with opener(url, timeout=HEALTHCHECK_TIMEOUT) as response:
            print(response.read().decode("utf-8", "replace").strip(), file=out)
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", "replace").strip()
        try:
            reason = json.loads(body).get("reason", body)
        except (ValueError, AttributeError):
            reason = body
        print(f"unhealthy: HTTP {exc.code}: {reason}", file=out)
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}", file=out)
    return 1


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    connect: Callable[[config.DBSettings], Any] = _connect_for_migrations,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    environ = os.environ if environ is None else environ
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    parser = argparse.ArgumentParser(prog="python3 -m montaiguillon_site", description="Montaiguillon site tools")
    commands = parser.add_subparsers(dest="command", required=True)
    migrate_parser = commands.add_parser("migrate", help="apply the pending database migrations")
    migrate_parser.add_argument("--status", action="store_true", help="only list applied and pending migrations")
    commands.add_parser("healthcheck", help="exit 0 when this container's /health answers 200")
    args = parser.parse_args(argv)
    if args.command == "migrate":
        return run_migrate(environ, status_only=args.status, connect=connect, out=out, err=err)
    return run_healthcheck(environ, out=out)


if __name__ == "__main__":
    sys.exit(main())
