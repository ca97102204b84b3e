"""Configuration from environment variables (the image contract, see README.md).

Every function takes the environment as a mapping so tests can pass a dict.
Secrets may be given directly (``APP_DB_PASSWORD``) or as a path to a file
holding them (``APP_DB_PASSWORD_FILE``), as the official database images do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DB_HOST = "mysql"
DEFAULT_DB_PORT = 3306
DEFAULT_PORT = 8000
DEFAULT_VERSION = "dev"
DEFAULT_REVISION = "unknown"
# The migrations shipped next to the package: /app/migrations in the image,
# app/migrations in a checkout.
DEFAULT_MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

_TRUE = {"1", "true", "yes", "on"}


class ConfigError(Exception):
    """An environment variable is missing or has an unusable value."""


@dataclass(frozen=True)
class DBSettings:
    host: str
    port: int
    name: str
    user: str
    password: str = field(repr=False)

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.name}"


def _get(environ: Mapping[str, str], name: str) -> str | None:
    """The variable's value, None when unset or empty."""
    value = environ.get(name)
    return value if value else None


def read_secret(environ: Mapping[str, str], name: str) -> str | None:
    """NAME, or the content of the file named by NAME_FILE (one trailing newline removed)."""
    value = _get(environ, name)
    path = _get(environ, f"{name}_FILE")
    if value is not None and path is not None:
        raise ConfigError(f"both {name} and {name}_FILE are set; use only one")
    if path is None:
        return value
    try:
        content = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror or exc}") from exc
    return content.removesuffix("\n").removesuffix("\r")


def _int(environ: Mapping[str, str], name: str, default: int, *, minimum: int = 1, maximum: int | None = None) -> int:
    raw = _get(environ, name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ConfigError(f"{name} must be {bounds}, got {value}")
    return value


def db_settings(environ: Mapping[str, str], *, for_migrations: bool = False) -> DBSettings:
    """Connection settings for the site, or for migrations (APP_MIGRATE_* override user and password)."""
    name = _get(environ, "APP_DB_NAME")
    if name is None:
        raise ConfigError("APP_DB_NAME is not set")
    user = _get(environ, "APP_DB_USER")
    password = read_secret(environ, "APP_DB_PASSWORD")
    if for_migrations:
        user = _get(environ, "APP_MIGRATE_USER") or user
        migrate_password = read_secret(environ, "APP_MIGRATE_PASSWORD")
        if migrate_password is not None:
            password = migrate_password
    if user is None:
        wanted = "APP_MIGRATE_USER or APP_DB_USER" if for_migrations else "APP_DB_USER"
        raise ConfigError(f"{wanted} is not set")
    return DBSettings(
        host=_get(environ, "APP_DB_HOST") or DEFAULT_DB_HOST,
        port=_int(environ, "APP_DB_PORT", DEFAULT_DB_PORT, maximum=65535),
        name=name,
        user=user,
        password=password or "",
    )


def app_version(environ: Mapping[str, str]) -> str:
    return _get(environ, "APP_VERSION") or DEFAULT_VERSION


def app_revision(environ: Mapping[str, str]) -> str:
    return _get(environ, "APP_REVISION") or DEFAULT_REVISION


def migrations_dir(environ: Mapping[str, str]) -> Path:
    return Path(_get(environ, "APP_MIGRATIONS_DIR") or DEFAULT_MIGRATIONS_DIR)


def fail_health(environ: Mapping[str, str]) -> bool:
    return (_get(environ, "APP_FAIL_HEALTH") or "").strip().lower() in _TRUE


def fail_health_after(environ: Mapping[str, str]) -> int | None:
    """APP_FAIL_HEALTH_AFTER=N: /health is healthy N times (per worker process), then fails (a test release)."""
    if _get(environ, "APP_FAIL_HEALTH_AFTER") is None:
        return None
    return _int(environ, "APP_FAIL_HEALTH_AFTER", 0, minimum=0)


def port(environ: Mapping[str, str]) -> int:
    return _int(environ, "APP_PORT", DEFAULT_PORT, maximum=65535)


def workers(environ: Mapping[str, str]) -> int:
    return _int(environ, "APP_WORKERS", 2)


def threads(environ: Mapping[str, str]) -> int:
    return _int(environ, "APP_THREADS", 4)


def boot_delay(environ: Mapping[str, str]) -> float:
    raw = _get(environ, "APP_BOOT_DELAY")
    if raw is None:
        return 0.0
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"APP_BOOT_DELAY must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"APP_BOOT_DELAY must be a finite number >= 0, got {raw!r}")
    return value
