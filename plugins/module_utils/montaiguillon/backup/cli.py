"""The scheduled side of the backups: ``montaiguillon-backup`` on each server.

The servers have no Ansible, so cron cannot call the ``mysql_backup`` module.
The backup role installs the ``montaiguillon`` package (this file, the backup
library beside it, ``common``) under
``{lib_dir}/ansible/module_utils/`` (the import path the modules use) and
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
import sys

from ansible.module_utils.montaiguillon.backup import container, mysql
from ansible.module_utils.montaiguillon.backup.binlogs import parse_stop_datetime, shipped_binlogs
from ansible.module_utils.montaiguillon.backup.catalog import list_backups
from ansible.module_utils.montaiguillon.backup.container import detect_tools, inspect_container
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.jobs import (
    attempt,
    first_backup_recorded,
    job_backup,
    job_binlogs,
    job_drill,
    job_fetch,
    job_offsite,
    then_offsite,
)
from ansible.module_utils.montaiguillon.backup.mysql import login_options
from ansible.module_utils.montaiguillon.backup.pipeline import resolve_compression
from ansible.module_utils.montaiguillon.backup.report import Reporter, read_status, status_problems
from ansible.module_utils.montaiguillon.backup.settings import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    ConfigError,
    load_config,
)


def cmd_run(config, reporter, args):
    if args.first and first_backup_recorded(read_status(config["status_file"])):
        return True, {"skipped": "a backup run is already recorded (run --first takes only the first one)"}
    ok, report = attempt("backup", job_backup, config, reporter, kind=args.kind, label=args.label)
    results = {"backup": report}
    if config["binlogs"].get("enabled"):
        shipped, results["binlogs"] = attempt("binlogs", job_binlogs, config, reporter)
        ok = ok and shipped
    return then_offsite(config, reporter, ok, results)


def disabled(config, reporter, section, level, why):
    """The command's answer when ``config[section]`` is off (an error unless ``level`` is info); None when on."""
    if config[section].get("enabled"):
        return None
    reporter.log(level, why)
    return level == "info", {}


def attempt_then_offsite(name, job, config, reporter, **kwargs):
    ok, report = attempt(name, job, config, reporter, **kwargs)
    return then_offsite(config, reporter, ok, {name: report})


def cmd_ship(config, reporter, _args):
    off = disabled(config, reporter, "binlogs", "info", "binlog shipping is disabled in the configuration")
    return off or attempt_then_offsite("binlogs", job_binlogs, config, reporter)


def cmd_drill(config, reporter, args):
    return attempt_then_offsite("drill", job_drill, config, reporter, backup=args.backup)


def cmd_offsite(config, reporter, _args):
    off = disabled(config, reporter, "offsite", "error", "offsite copies are disabled in the configuration")
    if off:
        return off
    ok, report = attempt("offsite", job_offsite, config, reporter)
    return ok, {"offsite": report}


def cmd_fetch(config, reporter, args):
    why = "offsite copies are disabled in the configuration: there is no store to fetch from"
    off = disabled(config, reporter, "offsite", "error", why)
    if off:
        return off
    # Asked for by a person (restore.yml), not scheduled: logged, not kept in the status file.
    try:
        before = parse_stop_datetime(args.before) if args.before else None
        report = job_fetch(config, reporter, backup=args.backup, before=before, into=args.into)
    except BackupError as exc:
        reporter.log("error", f"fetch FAILED: {exc}")
        return False, {"error": str(exc)}
    where = f"the offsite store into {args.into}" if args.into else "the offsite store"
    reporter.log("info", f"fetch ok: {report['id']} ({report['file']}) from {where} in {report['seconds']} s")
    return True, {"fetch": report}


def cmd_status(config, _reporter, args):
    status = read_status(config["status_file"])
    max_age = args.max_age_hours if args.max_age_hours is not None else config["max_age_hours"]
    problems = status_problems(status, float(max_age))
    return not problems, {"status": status, "problems": problems}


def cmd_list(config, _reporter, _args):
    entries = list_backups(config["backup_dir"], config["database"])
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
    return True, {"backups": rows, "shipped_binlogs": sorted(shipped_binlogs(config["backup_dir"]))}


def cmd_selftest(config, _reporter, _args):
    """Check everything a scheduled run needs, without taking a backup."""
    checks = {}
    api = container.docker_api(config.get("docker_host"))
    inspect_container(api, config["container"])
    checks["container"] = config["container"]
    checks["tools"] = detect_tools(api, config["container"])
    facts = mysql.existing_database_facts(login_options(config), config["database"], config["container"])
    checks["server"] = facts["version"]
    checks["log_bin"] = facts["log_bin"]
    checks["compression"] = resolve_compression(config["compression"], lambda _m: None)
    for key in ("encrypt_recipient_file", "decrypt_identity_file"):
        if config.get(key) and not os.path.isfile(config[key]):
            raise BackupError(f"{key} {config[key]} does not exist")
    return True, checks


COMMANDS = {
    "run": cmd_run,
    "ship-binlogs": cmd_ship,
    "drill": cmd_drill,
    "offsite": cmd_offsite,
    "fetch": cmd_fetch,
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
    fetch = sub.add_parser("fetch", help="bring a backup back from the storage host (after the directory was lost)")
    fetch.add_argument("--backup", default="latest", help="backup id (default: the newest complete one)")
    fetch.add_argument("--before", help="the newest complete backup started before this UTC time, and the binlogs")
    fetch.add_argument(
        "--into", help="another directory to fetch into (created 0700): a drill of the offsite copy, not a restore"
    )
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
    except BackupError as exc:
        ok, result = False, {"error": str(exc)}
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps({"ok": ok, **result}, indent=2, default=str))
    elif args.command in ("status", "list", "selftest"):
        print(json.dumps(result, indent=2, default=str))
    return EXIT_OK if ok else EXIT_FAILED
