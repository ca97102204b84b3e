"""The cron tool's jobs (backup, binlog shipping, offsite copy, drill), each run,
timed and reported; the library does the work.
"""

from __future__ import annotations

import contextlib
import os
import time

from ansible.module_utils.montaiguillon.backup import container
from ansible.module_utils.montaiguillon.backup.binlogs import prune_shipped_binlogs, ship_binlogs
from ansible.module_utils.montaiguillon.backup.catalog import backup_dir_lock
from ansible.module_utils.montaiguillon.backup.drill import record_drill, run_drill
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.mysql import login_options
from ansible.module_utils.montaiguillon.backup.offsite import offsite_fetch, offsite_sync
from ansible.module_utils.montaiguillon.backup.report import describe
from ansible.module_utils.montaiguillon.backup.restore import load_backup
from ansible.module_utils.montaiguillon.backup.retention import prune_under_lock
from ansible.module_utils.montaiguillon.backup.settings import PROG, BackupSettings
from ansible.module_utils.montaiguillon.backup.take import run_backup


def prepare_dir(config):
    try:
        os.makedirs(config["backup_dir"], mode=0o700, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot create backup_dir {config['backup_dir']}: {exc.strerror}") from exc


@contextlib.contextmanager
def on_the_server(config):
    """The backup directory (created if need be) locked, and the Docker API: what every job works with."""
    prepare_dir(config)
    api = container.docker_api(config.get("docker_host"))
    with backup_dir_lock(config["backup_dir"], config["lock_timeout"]):
        yield api


def in_the_database(job, api, config, reporter, **kwargs):
    """``job`` (run_backup, ship_binlogs) on the configured database container and backup directory."""
    return job(
        api,
        login_options(config),
        container=config["container"],
        backup_dir=config["backup_dir"],
        warn=reporter.warn,
        **kwargs,
    )


def offsite_store(config):
    """Where the offsite store is and how to reach it, as offsite_sync and offsite_fetch take it."""
    offsite = config["offsite"]
    return {
        "target": offsite["target"],
        "ssh_key": offsite["ssh_key"],
        "known_hosts": offsite["known_hosts"],
        "port": offsite.get("port", 22),
        "timeout": int(offsite.get("timeout", 600)),
    }


def job_backup(config, reporter, kind="scheduled", label=""):
    with on_the_server(config) as api:
        backup = in_the_database(
            run_backup,
            api,
            config,
            reporter,
            database=config["database"],
            kind=kind,
            label=label,
            **BackupSettings.from_mapping(config).take(),
        )
        pruned = []
        if config["prune"]:
            pruned = prune_under_lock(
                config["backup_dir"],
                config["database"],
                config["retention"],
                lock_file=config.get("change_lock_file"),
                wait=config["change_lock_wait"],
                who=f"{PROG} on {config['host']}",
                warn=reporter.warn,
            )
    return {
        "id": backup["id"],
        "path": backup["path"],
        "compressed_bytes": backup["compressed_bytes"],
        "uncompressed_bytes": backup["uncompressed_bytes"],
        "sha256": backup["sha256"],
        "rows": sum(backup["row_counts"].values()),
        "tables": len(backup["row_counts"]),
        "binlog": backup["binlog"],
        "encrypted": bool(backup["encryption"]),
        "duration_seconds": backup["duration_seconds"],
        "pruned": pruned,
    }


def job_binlogs(config, reporter):
    with on_the_server(config) as api:
        shipped = in_the_database(
            ship_binlogs,
            api,
            config,
            reporter,
            encrypt_recipient_file=config.get("encrypt_recipient_file"),
            flush=bool(config["binlogs"].get("flush", True)),
        )
        shipped["pruned"] = prune_shipped_binlogs(config["backup_dir"])
    return shipped


def job_offsite(config, reporter):
    return offsite_sync(
        config["backup_dir"],
        delete=bool(config["offsite"].get("delete", False)),
        warn=reporter.warn,
        **offsite_store(config),
    )


def job_fetch(config, _reporter, backup="latest", before=None, into=None):
    """Into the backup directory (a restore after it was lost) or ``into`` another (a drill of the offsite copy)."""
    target = {**config, "backup_dir": into} if into else config
    prepare_dir(target)
    with backup_dir_lock(target["backup_dir"], config["lock_timeout"]):
        return offsite_fetch(target["backup_dir"], backup=backup, before=before, **offsite_store(config))


def job_drill(config, reporter, backup="latest"):
    backup_dir = config["backup_dir"]
    entry, _sha256 = load_backup(backup_dir, backup, config["database"], reporter.warn)
    api = container.docker_api(config.get("docker_host"))
    result = run_drill(
        api,
        container=config["container"],
        entry=entry,
        identity_file=config.get("decrypt_identity_file"),
        smoke_query=config["drill"]["smoke_query"],
        timeout=int(config["drill"]["timeout"]),
    )
    with backup_dir_lock(backup_dir, config["lock_timeout"]):
        record_drill(backup_dir, entry, result)
    details = {
        "id": entry["id"],
        "status": result["status"],
        "restore_seconds": result.get("restore_seconds"),
        "total_seconds": result.get("total_seconds"),
        "mismatches": result.get("mismatches"),
    }
    if result["status"] != "passed":
        reason = result.get("error") or f"row counts differ from the manifest: {result.get('mismatches')}"
        raise BackupError(f"restore drill of backup {entry['id']} failed: {reason}")
    return details


def attempt(job, func, config, reporter, **kwargs):
    """Run one job and report it; return ``(ok, details_or_error)``."""
    started = time.monotonic()
    reporter.warnings = []
    try:
        details = func(config, reporter, **kwargs)
    except BackupError as exc:
        message = str(exc)
    except Exception as exc:  # unexpected: still a visible, recorded failure
        message = f"unexpected {exc.__class__.__name__}: {exc}"
    else:
        reporter.record(job, started, details=details)
        reporter.log("info", describe(job, details))
        return True, details
    reporter.record(job, started, error=message)
    reporter.log("error", f"{job} FAILED: {message}")
    reporter.notify(job, message)
    return False, message


def first_backup_recorded(status):
    """Whether a backup run (ok or failed) is recorded: binlog shipping alone writes the status file too."""
    return "backup" in status


def then_offsite(config, reporter, ok, results):
    """After a job that changed the backup directory: copy it offsite when enabled, and add that outcome."""
    if config["offsite"].get("enabled"):
        copied, results["offsite"] = attempt("offsite", job_offsite, config, reporter)
        ok = ok and copied
    return ok, results
