"""Filters that turn mysql_backup listings and results into lines a person reads."""

DOCUMENTATION = r"""
name: backup_table
short_description: One aligned line per backup of a mysql_backup state=list result
description:
  - Formats the C(backups) of a M(mysql_backup) listing (newest first) as aligned lines - id, kind,
    status, size, rows, verified, last drill and its restore time (RTO), and any problem.
positional: _input
options:
  _input:
    description: The C(backups) list returned by mysql_backup with state=list.
    type: list
    elements: dict
    required: true
"""


def _size(count):
    if not isinstance(count, int):
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "-"  # pragma: no cover


def backup_table(backups):
    """Lines like ``20261126T031500Z-scheduled  scheduled  complete  1.2 MiB  4012  yes  passed (3.1 s)``."""
    lines = [f"{'id':<30} {'kind':<10} {'status':<13} {'size':>10} {'rows':>10}  {'verified':<8}  drill (RTO)"]
    for backup in backups or []:
        manifest = backup.get("manifest") or {}
        drill = backup.get("drill") or {}
        rows = sum((manifest.get("row_counts") or {}).values()) if manifest else "-"
        verified = {True: "yes", False: "no"}.get(manifest.get("verified"), "-")
        drilled = f"{drill.get('status')} ({drill.get('restore_seconds')} s)" if drill else "-"
        line = (
            f"{backup.get('id', '?'):<30} {manifest.get('kind', '-'):<10} {backup.get('status', '?'):<13} "
            f"{_size(manifest.get('compressed_bytes')):>10} {rows!s:>10}  {verified:<8}  {drilled}"
        )
        problems = list(backup.get("problems") or [])
        if backup.get("checksum_ok") is False:
            problems.insert(0, "CHECKSUM MISMATCH")
        if problems:
            line += "  ! " + "; ".join(problems)
        lines.append(line)
    return lines


def binlog_position(binlog):
    """``mysql-bin.000003:385 (GTID 0-1-7)``, or a note when the backup has none."""
    if not binlog:
        return "none (binary logging was off: no point-in-time recovery from this backup)"
    gtid = f" (GTID {binlog['gtid']})" if binlog.get("gtid") else ""
    return f"{binlog.get('file')}:{binlog.get('position')}{gtid}"


def backup_status(status):
    """One line per job of montaiguillon-backup's status file (backup, binlogs, offsite, drill)."""
    if not status:
        return ["no scheduled run yet"]
    lines = []
    for job in ("backup", "binlogs", "offsite", "drill"):
        entry = status.get(job)
        if not isinstance(entry, dict):
            lines.append(f"{job:<8} never ran")
            continue
        line = (
            f"{job:<8} {entry.get('last_result', '?'):<7} last attempt {entry.get('last_attempt')},"
            f" last success {entry.get('last_success') or 'never'}"
        )
        if entry.get("last_result") == "failed":
            line += f" - {entry.get('last_error')}"
        lines.append(line)
    return lines


class FilterModule:
    def filters(self):
        return {"backup_table": backup_table, "binlog_position": binlog_position, "backup_status": backup_status}
