"""Metrics for node-exporter's textfile collector, from files a server already has.

Reads the backup tool's status file (JSON: one entry per job with last_attempt,
last_result, last_success, last_duration_seconds, consecutive_failures, details),
the backup directory's catalogue (each backup's manifest, ``{id}.json``, and
each drill's record, ``{id}.drill.json``: drills run from the controller leave
no trace in the status file, so drill metrics come from the records) and the
release ledger (JSON lines: release, version, outcome, started_at,
finished_at, duration_seconds) and writes one .prom file atomically (0644).
Stdlib only: installed alone on the servers and run from cron every minute.
The formats are read, not imported: the code that writes them lives elsewhere.
"""

import argparse
import datetime
import json
import os
import sys
import tempfile

OUTCOMES = ("success", "failed", "rolled_back", "rollback")


def parse_iso(text):
    """Seconds since the epoch of an ISO 8601 UTC time, or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.timestamp()


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def backup_metrics(status):
    """Sample lines (name, labels, value) from the backup status document."""
    samples = []
    for job, entry in sorted(status.items()):
        if not isinstance(entry, dict):
            continue
        labels = {"job_name": job}
        attempt, success = parse_iso(entry.get("last_attempt")), parse_iso(entry.get("last_success"))
        if attempt is not None:
            samples.append(("montaiguillon_backup_last_attempt_timestamp_seconds", labels, attempt))
        samples.append(("montaiguillon_backup_last_success_timestamp_seconds", labels, success or 0))
        samples.append(("montaiguillon_backup_last_run_failed", labels, int(entry.get("last_result") == "failed")))
        samples.append(
            ("montaiguillon_backup_consecutive_failures", labels, int(entry.get("consecutive_failures") or 0))
        )
        if _number(entry.get("last_duration_seconds")):
            samples.append(("montaiguillon_backup_last_duration_seconds", labels, entry["last_duration_seconds"]))
        details = entry.get("details") if isinstance(entry.get("details"), dict) else {}
        for key, value in sorted(details.items()):
            if _number(value):
                samples.append(("montaiguillon_backup_detail", {**labels, "key": key}, value))
    return samples


def ledger_metrics(entries):
    """Sample lines from the release ledger entries (oldest first)."""
    samples = []
    counts = {outcome: 0 for outcome in OUTCOMES}
    durations = {outcome: 0.0 for outcome in OUTCOMES}
    live = None
    for entry in entries:
        outcome = entry.get("outcome")
        if outcome not in counts:
            continue
        counts[outcome] += 1
        if _number(entry.get("duration_seconds")):
            durations[outcome] += entry["duration_seconds"]
        if outcome in ("success", "rollback") and entry.get("release"):
            live = entry
    for outcome in OUTCOMES:
        samples.append(("montaiguillon_deploys_total", {"outcome": outcome}, counts[outcome]))
        samples.append(
            ("montaiguillon_deploy_duration_seconds_sum", {"outcome": outcome}, round(durations[outcome], 3))
        )
    if live is not None:
        labels = {"release": live["release"], "version": live.get("version") or ""}
        samples.append(("montaiguillon_release_live_info", labels, 1))
        since = parse_iso(live.get("finished_at"))
        if since is not None:
            samples.append(("montaiguillon_release_live_since_timestamp_seconds", {}, since))
    return samples


def catalog_metrics(catalog):
    """Samples from the catalogue: the newest complete backup of each kind, the newest drill."""
    samples, newest, counts, oldest = [], {}, {}, None
    for manifest in catalog.get("manifests", []):
        kind, when = manifest.get("kind"), parse_iso(manifest.get("finished_at"))
        if manifest.get("status") != "complete" or not isinstance(kind, str) or when is None:
            continue
        oldest = when if oldest is None else min(oldest, when)
        counts[kind] = counts.get(kind, 0) + 1
        if kind not in newest or when > newest[kind][0]:
            newest[kind] = (when, manifest)
    for kind, (when, manifest) in sorted(newest.items()):
        labels = {"kind": kind}
        samples.append(("montaiguillon_backup_kind_last_timestamp_seconds", labels, when))
        samples.append(("montaiguillon_backup_kind_count", labels, counts[kind]))
        if _number(manifest.get("compressed_bytes")):
            samples.append(("montaiguillon_backup_kind_last_size_bytes", labels, manifest["compressed_bytes"]))
    return samples + drill_metrics(catalog.get("drills", []), oldest)


def _drill_time(record):
    return parse_iso(record.get("finished_at") or record.get("started_at"))


def drill_metrics(records, oldest_backup=None):
    """The newest drill (when, passed, restore time), the newest one that passed, and since when one is due.

    A drill is due since the last one that passed or, on a server never drilled, since its oldest backup
    kept: a new server is not overdue on its first day, one that never drills becomes so.
    """
    drills = sorted((r for r in records if _drill_time(r) is not None), key=_drill_time)
    samples = []
    if drills:
        last = drills[-1]
        samples.append(("montaiguillon_drill_last_timestamp_seconds", {}, _drill_time(last)))
        samples.append(("montaiguillon_drill_last_passed", {}, int(last.get("status") == "passed")))
        if _number(last.get("restore_seconds")):
            samples.append(("montaiguillon_drill_last_restore_seconds", {}, last["restore_seconds"]))
    passed = [r for r in drills if r.get("status") == "passed"]
    samples.append(("montaiguillon_drill_last_success_timestamp_seconds", {}, _drill_time(passed[-1]) if passed else 0))
    due_since = _drill_time(passed[-1]) if passed else oldest_backup
    if due_since is not None:
        samples.append(("montaiguillon_drill_due_since_timestamp_seconds", {}, due_since))
    return samples


def read_catalog(backup_dir):
    """``{manifests, drills}`` from the backup directory's JSON files, or None when it cannot be listed."""
    try:
        names = sorted(os.listdir(backup_dir))
    except OSError:
        return None
    catalog = {"manifests": [], "drills": []}
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        document = read_json(os.path.join(backup_dir, name))
        if document is not None:
            catalog["drills" if name.endswith(".drill.json") else "manifests"].append(document)
    return catalog


def read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_ledger(path):
    """Entries of a JSON-lines ledger (unreadable lines skipped), or None when the file is absent."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.readlines()
    except OSError:
        return None
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def render(status, ledger, catalog=None):
    """The .prom text: a sample per line, plus whether each source could be read."""
    samples = [
        ("montaiguillon_textfile_source_ok", {"source": "backup_status"}, int(status is not None)),
        ("montaiguillon_textfile_source_ok", {"source": "release_ledger"}, int(ledger is not None)),
        ("montaiguillon_textfile_source_ok", {"source": "backup_catalog"}, int(catalog is not None)),
    ]
    samples += backup_metrics(status or {}) + ledger_metrics(ledger or [])
    samples += catalog_metrics(catalog or {})
    lines = []
    for name, labels, value in samples:
        text = ",".join(f'{key}="{_label(val)}"' for key, val in sorted(labels.items()))
        lines.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")
    return "\n".join(lines) + "\n"


def atomic_write(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".montaiguillon-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_output(path, text):
    """``atomic_write``, for a command line: 0, or 1 with the reason on stderr."""
    try:
        atomic_write(path, text)
    except OSError as exc:
        print(f"cannot write {path}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description="write Montaiguillon metrics for node-exporter's textfile collector")
    parser.add_argument("--status-file", default="/var/lib/montaiguillon-backup/status.json")
    parser.add_argument("--ledger", default="/var/lib/montaiguillon/app/releases.jsonl")
    parser.add_argument("--backup-dir", default="/var/backups/montaiguillon/mysql")
    parser.add_argument("--output", default="/var/lib/prometheus/node-exporter/montaiguillon.prom")
    args = parser.parse_args(argv)
    if not args.output.endswith(".prom"):
        parser.error(f"--output must end with .prom (node-exporter reads only those), got {args.output!r}")
    metrics = render(read_json(args.status_file), read_ledger(args.ledger), read_catalog(args.backup_dir))
    return write_output(args.output, metrics)


if __name__ == "__main__":
    sys.exit(main())
