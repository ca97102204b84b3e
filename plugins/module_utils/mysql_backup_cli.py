"""The scheduled side of the backups: ``montaiguillon-backup`` on each server.

The servers have no Ansible, so cron cannot call the ``mysql_backup`` module.
The backup role installs this file, ``mysql_backup_lib`` and ``docker_common``
under ``{lib_dir}/ansible/module_utils/`` (the import path the modules use) and
a tiny entry point that puts ``{lib_dir}`` first on ``sys.path`` and calls
``main``. The work itself is the library's, exactly as the modules do it; this
file only reads the configuration and reports:

- one line per job in a log file and in syslog (the journal);
- a status file (JSON, no secrets) with, per job, the last attempt, the last
  success, the result and the error, so a failed or missed run is visible
  (``montaiguillon-backup status`` exits non-zero then);
- the exit code (0 ok, 1 failed, 2 bad configuration or usage);
- a webhook on failure (``notify_url``), best effort.

Commands: ``run`` (backup, retention, binlog shipping, offsite copy),
``ship-binlogs`` (binlogs and offsite copy), ``drill``, ``offsite``, ``status``,
``list``, ``selftest``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import syslog
import time
import urllib.request

from ansible.module_utils import mysql_backup_lib as lib
from ansible.module_utils.montaiguillon.common.clock import iso, parse_iso, utcnow

PROG = "montaiguillon-backup"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULTS = {
    "container": "mysql",
    "compression": "zstd",
    "min_size_bytes": 1024,
    "max_rate": "0",
    "retention": dict(lib.DEFAULT_RETENTION),
    "prune": True,
    "lock_timeout": 600,
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
    config["retention"] = {**lib.DEFAULT_RETENTION, **(loaded.get("retention") or {})}
    if config["offsite"].get("enabled"):
        absent = [k for k in ("target", "ssh_key", "known_hosts") if not config["offsite"].get(k)]
        if absent:
            raise ConfigError(f"offsite is enabled but {', '.join(absent)} is not set in {path}")
    try:
        lib.parse_rate(config["max_rate"])
    except lib.BackupError as exc:
        raise ConfigError(f"{exc} (in {path})") from exc
    config.setdefault("host", socket.gethostname())
    return config


# ---------------------------------------------------------------------------
# Reporting: log file, syslog, status file, webhook
# ---------------------------------------------------------------------------


LEVELS = {"info": syslog.LOG_INFO, "warning": syslog.LOG_WARNING, "error": syslog.LOG_ERR}


class Reporter:
    """Where a run's outcome goes: log file, syslog, the terminal, the status file, the webhook."""

    def __init__(self, config, out=None, err=None):
        self.config = config
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.warnings = []
        syslog.openlog(PROG, syslog.LOG_PID, syslog.LOG_DAEMON)

    def warn(self, message):
        self.warnings.append(message)
        self.log("warning", message)

    def log(self, level, message):
        syslog.syslog(LEVELS[level], message)
        line = f"{iso(utcnow())} {self.config['host']} {level}: {message}"
        path = self.config.get("log_file")
        if path:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                with os.fdopen(fd, "a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
            except OSError as exc:
                syslog.syslog(syslog.LOG_ERR, f"cannot write the log file {path}: {exc.strerror}")
        print(line, file=self.out if level == "info" else self.err, flush=True)

    def record(self, job, started, error=None, details=None):
        """Write this job's outcome to the status file (atomically) and return the job's entry."""
        path = self.config["status_file"]
        status = read_status(path)
        entry = status.get(job) if isinstance(status.get(job), dict) else {}
        now = iso(utcnow())
        entry.update(
            last_attempt=now,
            last_result="failed" if error else "ok",
            last_error=error,
            last_duration_seconds=round(time.monotonic() - started, 3),
            warnings=list(self.warnings),
        )
        if error:
            entry.setdefault("last_success", None)
            entry["consecutive_failures"] = int(entry.get("consecutive_failures") or 0) + 1
        else:
            entry.update(last_success=now, details=details or {}, consecutive_failures=0)
        status.update({job: entry, "host": self.config["host"], "updated_at": now})
        try:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            lib.write_json(path, status, mode=0o644)
        except (OSError, lib.BackupError) as exc:
            self.log("error", f"cannot write the status file {path}: {exc}")
        return entry

    def notify(self, job, error):
        url = self.config.get("notify_url")
        if not url:
            return
        if not url.startswith(("https://", "http://")):
            self.log("error", "notify_url must be an http(s) URL; no notification sent")
            return
        payload = {
            "host": self.config["host"],
            "job": job,
            "result": "failed",
            "error": error,
            "at": iso(utcnow()),
        }
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
            url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=int(self.config["notify_timeout"])):  # noqa: S310
                pass
        except Exception as exc:  # a notification must never hide the failure it reports
            self.log("error", f"the failure notification could not be sent: {exc}")


def read_status(path):
    try:
        with open(path, encoding="utf-8") as handle:
            status = json.load(handle)
        return status if isinstance(status, dict) else {}
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------------------
# Jobs (each returns a details dict, or raises BackupError)
# ---------------------------------------------------------------------------


def prepare_dir(config):
    try:
        os.makedirs(config["backup_dir"], mode=0o700, exist_ok=True)
    except OSError as exc:
        raise lib.BackupError(f"cannot create backup_dir {config['backup_dir']}: {exc.strerror}") from exc


def job_backup(config, reporter, kind="scheduled", label=""):
    prepare_dir(config)
    api = lib.docker_api(config.get("docker_host"))
    with lib.backup_dir_lock(config["backup_dir"], config["lock_timeout"]):
        backup = lib.run_backup(
            api,
            lib.login_options(config),
            container=config["container"],
            database=config["database"],
            backup_dir=config["backup_dir"],
            kind=kind,
            label=label,
            compression=config["compression"],
            min_size_bytes=config["min_size_bytes"],
            encrypt_recipient_file=config.get("encrypt_recipient_file"),
            max_rate=lib.parse_rate(config["max_rate"]),
            warn=reporter.warn,
        )
        pruned = []
        if config["prune"]:
            pruned = lib.apply_retention(config["backup_dir"], config["database"], config["retention"])
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
    prepare_dir(config)
    api = lib.docker_api(config.get("docker_host"))
    with lib.backup_dir_lock(config["backup_dir"], config["lock_timeout"]):
        shipped = lib.ship_binlogs(
            api,
            lib.login_options(config),
            container=config["container"],
            backup_dir=config["backup_dir"],
            encrypt_recipient_file=config.get("encrypt_recipient_file"),
            flush=bool(config["binlogs"].get("flush", True)),
            warn=reporter.warn,
        )
        shipped["pruned"] = lib.prune_shipped_binlogs(config["backup_dir"])
    return shipped


def job_offsite(config, reporter):
    offsite = config["offsite"]
    return lib.offsite_sync(
        config["backup_dir"],
        target=offsite["target"],
        ssh_key=offsite["ssh_key"],
        known_hosts=offsite["known_hosts"],
        port=offsite.get("port", 22),
        delete=bool(offsite.get("delete", False)),
        timeout=int(offsite.get("timeout", 600)),
        warn=reporter.warn,
    )


def job_drill(config, reporter, backup="latest"):
    backup_dir = config["backup_dir"]
    entry, _sha256 = lib.load_backup(backup_dir, backup, config["database"], reporter.warn)
    api = lib.docker_api(config.get("docker_host"))
    result = lib.run_drill(
        api,
        container=config["container"],
        entry=entry,
        identity_file=config.get("decrypt_identity_file"),
        smoke_query=config["drill"]["smoke_query"],
        timeout=int(config["drill"]["timeout"]),
    )
    with lib.backup_dir_lock(backup_dir, config["lock_timeout"]):
        lib.record_drill(backup_dir, entry, result)
    details = {
        "id": entry["id"],
        "status": result["status"],
        "restore_seconds": result.get("restore_seconds"),
        "total_seconds": result.get("total_seconds"),
        "mismatches": result.get("mismatches"),
    }
    if result["status"] != "passed":
        reason = result.get("error") or f"row counts differ from the manifest: {result.get('mismatches')}"
        raise lib.BackupError(f"restore drill of backup {entry['id']} failed: {reason}")
    return details


def describe(job, details):
    """One line telling what a successful job did."""
    if job == "backup":
        size = human_bytes(details["compressed_bytes"])
        return (
            f"backup ok: {details['id']} ({size}, {details['rows']} rows in {details['tables']} tables,"
            f" sha256 {details['sha256'][:16]}..., {details['duration_seconds']} s) at {details['path']};"
            f" pruned {len(details['pruned'])}"
        )
    if job == "binlogs":
        return (
            f"binlogs ok: shipped {len(details['shipped'])} ({human_bytes(details['bytes'])}),"
            f" active {details['active']}, pruned {len(details['pruned'])}"
        )
    if job == "offsite":
        return f"offsite ok: mirrored to {details['target']} in {details['seconds']} s"
    if job == "drill":
        return f"drill ok: {details['id']} restored in {details['restore_seconds']} s (RTO), row counts match"
    return f"{job} ok"


def human_bytes(count):
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover


def attempt(job, func, config, reporter, **kwargs):
    """Run one job and report it; return ``(ok, details_or_error)``."""
    started = time.monotonic()
    reporter.warnings = []
    try:
        details = func(config, reporter, **kwargs)
    except lib.BackupError as exc:
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


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def first_backup_recorded(status):
    """Whether a backup run (ok or failed) is recorded: binlog shipping alone writes the status file too."""
    return "backup" in status


def then_offsite(config, reporter, ok, results):
    """After a job that changed the backup directory: copy it offsite when enabled, and add that outcome."""
    if config["offsite"].get("enabled"):
        copied, results["offsite"] = attempt("offsite", job_offsite, config, reporter)
        ok = ok and copied
    return ok, results


def cmd_run(config, reporter, args):
    if args.first and first_backup_recorded(read_status(config["status_file"])):
        return True, {"skipped": "a backup run is already recorded (run --first takes only the first one)"}
    ok, report = attempt("backup", job_backup, config, reporter, kind=args.kind, label=args.label)
    results = {"backup": report}
    if config["binlogs"].get("enabled"):
        shipped, results["binlogs"] = attempt("binlogs", job_binlogs, config, reporter)
        ok = ok and shipped
    return then_offsite(config, reporter, ok, results)


def cmd_ship(config, reporter, _args):
    if not config["binlogs"].get("enabled"):
        reporter.log("info", "binlog shipping is disabled in the configuration")
        return True, {}
    ok, report = attempt("binlogs", job_binlogs, config, reporter)
    results = {"binlogs": report}
    return then_offsite(config, reporter, ok, results)


def cmd_drill(config, reporter, args):
    ok, report = attempt("drill", job_drill, config, reporter, backup=args.backup)
    results = {"drill": report}
    return then_offsite(config, reporter, ok, results)


def cmd_offsite(config, reporter, _args):
    if not config["offsite"].get("enabled"):
        reporter.log("error", "offsite copies are disabled in the configuration")
        return False, {}
    ok, report = attempt("offsite", job_offsite, config, reporter)
    return ok, {"offsite": report}


def status_problems(status, max_age_hours, now=None):
    """What an operator must look at, from the status file (empty when all is well)."""
    now = now or utcnow()
    problems = []
    backup = status.get("backup") or {}
    if not backup.get("last_success"):
        problems.append("no scheduled backup has ever succeeded")
    else:
        age = (now - parse_iso(backup["last_success"])).total_seconds() / 3600
        if age > max_age_hours:
            problems.append(
                f"the last successful backup is {age:.1f} h old (limit {max_age_hours} h):"
                " backups are failing or not running"
            )
    for job, entry in sorted(status.items()):
        if isinstance(entry, dict) and entry.get("last_result") == "failed":
            problems.append(f"the last {job} run failed at {entry.get('last_attempt')}: {entry.get('last_error')}")
    return problems


def cmd_status(config, _reporter, args):
    status = read_status(config["status_file"])
    max_age = args.max_age_hours if args.max_age_hours is not None else config["max_age_hours"]
    problems = status_problems(status, float(max_age))
    return not problems, {"status": status, "problems": problems}


def cmd_list(config, _reporter, _args):
    entries = lib.list_backups(config["backup_dir"], config["database"])
    rows = []
    for entry in entries:
        manifest = entry["manifest"] or {}
        drill = entry["drill"] or {}
        rows.append(
            {
                "id": entry["id"],
                "status": entry["status"],
                "bytes": manifest.get("compressed_bytes"),
                "sha256": manifest.get("sha256"),
                "rows": sum((manifest.get("row_counts") or {}).values()),
                "verified": manifest.get("verified"),
                "drill": drill.get("status"),
                "rto_seconds": drill.get("restore_seconds"),
                "problems": entry["problems"],
            }
        )
    return True, {"backups": rows, "shipped_binlogs": sorted(lib.shipped_binlogs(config["backup_dir"]))}


def cmd_selftest(config, _reporter, _args):
    """Check everything a scheduled run needs, without taking a backup."""
    checks = {}
    api = lib.docker_api(config.get("docker_host"))
    lib.inspect_container(api, config["container"])
    checks["container"] = config["container"]
    checks["tools"] = lib.detect_tools(api, config["container"])
    conn = lib.connect(lib.login_options(config))
    try:
        facts = lib.server_facts(conn, config["database"])
    finally:
        conn.close()
    if not facts["exists"]:
        raise lib.BackupError(f"database {config['database']} does not exist")
    checks["server"] = facts["version"]
    checks["log_bin"] = facts["log_bin"]
    checks["compression"] = lib.resolve_compression(config["compression"], lambda _m: None)
    for key in ("encrypt_recipient_file", "decrypt_identity_file"):
        if config.get(key) and not os.path.isfile(config[key]):
            raise lib.BackupError(f"{key} {config[key]} does not exist")
    return True, checks


COMMANDS = {
    "run": cmd_run,
    "ship-binlogs": cmd_ship,
    "drill": cmd_drill,
    "offsite": cmd_offsite,
    "status": cmd_status,
    "list": cmd_list,
    "selftest": cmd_selftest,
}


def parser(config_path):
    top = argparse.ArgumentParser(prog=PROG, description="Scheduled MySQL backups (see docs/backups.md).")
    top.add_argument("--config", default=config_path, help=f"configuration file (default {config_path})")
    top.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="back up, apply retention, ship binlogs, copy offsite (what cron runs)")
    run.add_argument("--kind", choices=["scheduled", "manual"], default="scheduled")
    run.add_argument("--label", default="")
    run.add_argument("--first", action="store_true", help="only when no backup run is recorded yet (provisioning)")
    sub.add_parser("ship-binlogs", help="copy closed binary logs next to the backups, then offsite")
    drill = sub.add_parser("drill", help="restore a backup into a throwaway container and record the RTO")
    drill.add_argument("--backup", default="latest", help="backup id (default: the newest good one)")
    sub.add_parser("offsite", help="mirror the backup directory to the storage host")
    status = sub.add_parser("status", help="print the status file; exit 1 when a run failed or backups are stale")
    status.add_argument("--max-age-hours", type=float)
    sub.add_parser("list", help="list the backups with their drill results")
    sub.add_parser("selftest", help="check the configuration, the container and the database; change nothing")
    return top


def main(argv=None, config="/etc/montaiguillon/backup/config.json"):
    args = parser(config).parse_args(argv)
    try:
        settings = load_config(args.config)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    os.umask(0o077)
    # With --json, stdout carries only the JSON document.
    reporter = Reporter(settings, out=sys.stderr if args.json else sys.stdout)
    try:
        ok, result = COMMANDS[args.command](settings, reporter, args)
    except lib.BackupError as exc:
        ok, result = False, {"error": str(exc)}
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps({"ok": ok, **result}, indent=2, default=str))
    elif args.command in ("status", "list", "selftest"):
        print(json.dumps(result, indent=2, default=str))
    return EXIT_OK if ok else EXIT_FAILED
