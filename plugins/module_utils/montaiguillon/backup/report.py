"""What the cron tool tells: one line per job in its log and in syslog, the status
file (no secrets) that makes a failed or missed run visible, a webhook on failure.
"""

from __future__ import annotations

import json
import os
import sys
import syslog
import time
import urllib.request

from ansible.module_utils.montaiguillon.backup.catalog import write_json
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.settings import PROG
from ansible.module_utils.montaiguillon.common.clock import iso, parse_iso, utcnow
from ansible.module_utils.montaiguillon.common.units import human_bytes

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
            write_json(path, status, mode=0o644)
        except (OSError, BackupError) as exc:
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
