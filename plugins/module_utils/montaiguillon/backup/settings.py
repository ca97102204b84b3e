"""How backups are taken, written once: ``BackupSettings``; and the cron tool's configuration file.

Every path that takes a backup (the ``mysql_backup`` module, the safety backup of
``mysql_restore``, the server's cron tool reading ``config.json``) reads its
settings through ``BackupSettings``: the modules' argument specs and the cron
tool's defaults are derived from its fields, and its validation is the only
one. The role's side (its variables, ``config.json`` and every task that takes
a backup) is checked against the fields by tests/unit/backup/test_settings.py,
so a new option cannot be forgotten on one path (as the encryption of the
safety backup once was).
"""

from __future__ import annotations

import dataclasses
import json
import socket
from typing import Optional

from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.pacing import parse_rate
from ansible.module_utils.montaiguillon.backup.retention import DEFAULT_RETENTION

PROG = "montaiguillon-backup"


def _meta(ansible_type, role_variable, **spec):
    """A setting's type in the modules' argument specs, and the role variable that feeds it."""
    return {"spec": {"type": ansible_type, **spec}, "role_variable": role_variable}


@dataclasses.dataclass(frozen=True)
class BackupSettings:
    """What every backup is taken with, whichever path takes it; validated here only."""

    compression: str = dataclasses.field(
        default="zstd", metadata=_meta("str", "backup_compression", choices=["zstd", "gzip"])
    )
    min_size_bytes: int = dataclasses.field(default=1024, metadata=_meta("int", "backup_min_size_bytes"))
    max_rate: str = dataclasses.field(default="0", metadata=_meta("str", "backup_max_rate"))
    # None: not encrypted. The role sets it from backup_encrypt (a bool) and its recipients file.
    # Optional, not `str | None`: ansible-test's pylint reads module_utils as Python before 3.10 would.
    encrypt_recipient_file: Optional[str] = dataclasses.field(  # noqa: UP045
        default=None, metadata=_meta("path", "backup_encrypt")
    )
    retention: dict = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_RETENTION),
        metadata=_meta(
            "dict",
            "backup_retention",
            options={key: {"type": "int", "default": value} for key, value in DEFAULT_RETENTION.items()},
        ),
    )

    @classmethod
    def fields(cls, names=None):
        return [f for f in dataclasses.fields(cls) if names is None or f.name in names]

    @classmethod
    def argument_spec(cls, names=None):
        """The modules' argument spec entries of these settings (all, or ``names``)."""
        spec = {}
        for field in cls.fields(names):
            entry = dict(field.metadata["spec"])
            default = field.default_factory() if field.default is dataclasses.MISSING else field.default
            if entry["type"] == "dict":
                entry["default"] = {}  # the sub-options carry the defaults
            elif default is not None:
                entry["default"] = default
            spec[field.name] = entry
        return spec

    @classmethod
    def defaults(cls):
        return dataclasses.asdict(cls())

    @classmethod
    def from_mapping(cls, values):
        """Settings from module parameters or ``config.json`` (absent keys: defaults); a bad value raises
        ``BackupError`` naming the key."""
        known = {f.name for f in cls.fields()}
        settings = cls(**{k: v for k, v in values.items() if k in known and v is not None})
        settings.validate()
        return settings

    def validate(self):
        choices = self.fields(["compression"])[0].metadata["spec"]["choices"]
        if self.compression not in choices:
            raise BackupError(f"compression must be one of {', '.join(choices)}, not {self.compression!r}")
        if not isinstance(self.min_size_bytes, int) or self.min_size_bytes < 0:
            raise BackupError(f"min_size_bytes must be a whole number of bytes >= 0, not {self.min_size_bytes!r}")
        parse_rate(self.max_rate)
        unknown = sorted(set(self.retention) - set(DEFAULT_RETENTION))
        if unknown:
            raise BackupError(
                f"retention has unknown keys {', '.join(unknown)} (known: {', '.join(DEFAULT_RETENTION)})"
            )
        for key, value in self.retention.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise BackupError(f"retention.{key} must be a whole number >= 0, not {value!r}")

    def take(self, **overrides):
        """Keyword arguments of ``run_backup`` for these settings (the pace in bytes per second)."""
        values = {
            "compression": self.compression,
            "min_size_bytes": self.min_size_bytes,
            "encrypt_recipient_file": self.encrypt_recipient_file,
            "max_rate": parse_rate(self.max_rate),
        }
        return {**values, **overrides}


EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


DEFAULTS = {
    "container": "mysql",
    **BackupSettings.defaults(),
    "prune": True,
    "lock_timeout": 600,
    # The server's change lock (shared with deploys, rollbacks and restores), held while pruning.
    "change_lock_file": None,
    "change_lock_wait": 60,
    "login_user": "root",
    "login_unix_socket": "/run/montaiguillon/mysql/mysqld.sock",
    "connect_timeout": 10,
    "status_file": "/var/lib/montaiguillon-backup/status.json",
    "log_file": "/var/log/montaiguillon-backup.log",
    "max_age_hours": 26,
    "binlogs": {"enabled": True, "flush": True},
    "offsite": {"enabled": False},
    "drill": {"smoke_query": "SELECT COUNT(*) FROM information_schema.tables", "timeout": 300},
    "notify_url": "",
    "notify_timeout": 10,
}


REQUIRED = ("backup_dir", "database")


class ConfigError(Exception):
    """The configuration file is missing, unreadable or incomplete."""


def load_config(path):
    try:
        with open(path, encoding="utf-8") as handle:
            loaded = json.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"the configuration {path} is not valid JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"the configuration {path} is not a JSON object")
    missing = [key for key in REQUIRED if not loaded.get(key)]
    if missing:
        raise ConfigError(f"the configuration {path} lacks {', '.join(missing)}")
    config = {**DEFAULTS, **loaded}
    for key in ("binlogs", "offsite", "drill"):
        config[key] = {**DEFAULTS[key], **(loaded.get(key) or {})}
    config["retention"] = {**DEFAULT_RETENTION, **(loaded.get("retention") or {})}
    if config["offsite"].get("enabled"):
        absent = [k for k in ("target", "ssh_key", "known_hosts") if not config["offsite"].get(k)]
        if absent:
            raise ConfigError(f"offsite is enabled but {', '.join(absent)} is not set in {path}")
    try:
        BackupSettings.from_mapping(config)
    except (BackupError, TypeError) as exc:
        raise ConfigError(f"{exc} (in {path})") from exc
    config.setdefault("host", socket.gethostname())
    return config
