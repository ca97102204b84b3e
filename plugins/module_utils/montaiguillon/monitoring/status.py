"""A status page for one server, from the files it already has: an HTML page, or the same facts as text.

Reads what textfile.py reads, with textfile.py's readers (the backup tool's
status file, the backup directory's manifests and drill records, the release
ledger), plus the disk usage of some paths, a certificate's expiry and the
site's answer to a health URL. Sections: live release, last deploys, backups,
backup jobs, last drill, certificate, disk. A source that cannot be read shows
"no data" in its section, never an error page. Stdlib only: installed on the
servers beside textfile.py, render.py and charts.py, run from cron (``--html``) or by
hand (``--text``, what ``make status`` prints).
"""

import argparse
import datetime
import http.client
import os
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

try:
    from ..common import units
    from . import charts, render, textfile
except ImportError:  # run as a script: its siblings sit beside it, and python3 -I leaves that off sys.path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.dont_write_bytecode = True  # no __pycache__ in the installed directory
    import charts
    import render
    import textfile
    import units

parse_iso, number, human_bytes = textfile.parse_iso, textfile._number, units.human_bytes

JOBS = ("backup", "binlogs", "offsite", "drill")
OUTCOME_LEVELS = {"success": "ok", "rollback": "warn", "rolled_back": "warn", "failed": "bad"}
LOOPBACK = ("127.0.0.1", "::1", "localhost")
HEALTH_TIMEOUT = 3
NO_DATA = "no data"


# --- formatting ----------------------------------------------------------------------------------------------


def when(seconds):
    """``2026-12-04 13:33 UTC``, or "unknown"."""
    if seconds is None:
        return "unknown"
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def ago(seconds, now):
    """How long ago, the way a person says it: ``just now``, ``12 min ago``, ``3 h ago``, ``4 d ago``."""
    if seconds is None:
        return "never"
    delta = now - seconds
    if delta < 0:
        return "in the future"
    if delta >= 2 * 86400:
        return f"{int(delta // 86400)} d ago"
    if delta >= 3600:
        return f"{int(delta // 3600)} h ago"
    return f"{int(delta // 60)} min ago" if delta >= 60 else "just now"


def when_ago(seconds, now):
    return "unknown" if seconds is None else f"{when(seconds)} ({ago(seconds, now)})"


def seconds_text(value):
    return f"{value:.1f}" if number(value) else "-"


def text(value, default="unknown"):
    return default if value is None or value == "" else str(value)


def short_image(image):
    """``site@sha256:c4b0dd0123ab``: the repository's last part and 12 digits of the digest."""
    if not isinstance(image, str) or not image:
        return "unknown"
    name, _at, digest = image.rpartition("@")
    if not name:
        return image.rsplit("/", 1)[-1]
    algorithm, _colon, hexa = digest.partition(":")
    return f"{name.rsplit('/', 1)[-1]}@{f'{algorithm}:{hexa[:12]}' if hexa else digest[:12]}"


# --- probes: never raise -------------------------------------------------------------------------------------


def disk_usage(path):
    """``(percent used, bytes available)`` the way node-exporter's alert counts it, or None."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    size, available = stats.f_blocks * stats.f_frsize, stats.f_bavail * stats.f_frsize
    return (100.0 * (1 - available / size), available) if size else None


def certificate_expiry(path):
    """Seconds since the epoch of the certificate's notAfter, or None when it cannot be read."""
    try:
        return float(ssl.cert_time_to_seconds(ssl._ssl._test_decode_cert(path)["notAfter"]))
    except (OSError, ValueError, KeyError):
        return None


def tls_context(url):
    """Verified TLS, except for the server's own proxy on loopback (its certificate names the site, not 127.0.0.1)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https":
        return None
    context = ssl.create_default_context()
    if parts.hostname in LOOPBACK:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def check_health(url):
    """``(ok, HTTP status or None, what happened)`` of one GET with a 3 s timeout."""
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT, context=tls_context(url)) as answer:  # noqa: S310
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return False, None, f"failed: {exc}"
    ok = 200 <= status < 400
    return ok, status, f"{'ok' if ok else 'failed'} (HTTP {status})"


# --- sections: plain strings (render.py escapes them), built from the sources -------------------------------


def section(key, title, facts=(), table=None, chart="", note=None):
    """A fact is ``(element id, label, value, level)``; a table ``(id, headers, [(row id, cells)])``."""
    return {"key": key, "title": title, "facts": list(facts), "table": table, "chart": chart, "note": note}


def deploys(ledger):
    """Ledger entries with a known outcome (a line with another shape is skipped, not a crash)."""
    return [e for e in ledger if e.get("outcome") in textfile.OUTCOMES]


def live_entry(ledger):
    """The live release's ledger entry: the release textfile.py's metrics call live, its newest line."""
    known = deploys(ledger)
    for name, labels, _value in textfile.ledger_metrics(known):
        if name == "montaiguillon_release_live_info":
            return next(e for e in reversed(known) if e.get("release") == labels["release"])
    return None


def live_section(ledger, health, now):
    """The live release from the ledger, and the site's answer to its health URL (when one is given)."""
    probe = [] if health is None else [("live-health", "Health", health[2], "ok" if health[0] else "bad")]
    if ledger is None:
        return section("live", "Live release", probe, note=f"{NO_DATA}: the release ledger cannot be read")
    entry = live_entry(ledger)
    if entry is None:
        return section("live", "Live release", probe, note="no release has gone live yet")
    facts = [
        ("live-version", "Version", text(entry.get("version")), None),
        ("live-release", "Release", text(entry.get("release")), None),
        ("live-image", "Image", short_image(entry.get("image")), None),
        ("live-since", "Since", when_ago(parse_iso(entry.get("finished_at")), now), None),
    ]
    return section("live", "Live release", facts + probe)


def deploys_section(ledger, now):
    if ledger is None:
        return section("deploys", "Last deploys", note=f"{NO_DATA}: the release ledger cannot be read")
    known = deploys(ledger)
    if not known:
        return section("deploys", "Last deploys", note="no deploy yet")
    rows, bars = [], []
    for e in reversed(known[-10:]):
        finished, level = parse_iso(e.get("finished_at") or e.get("started_at")), OUTCOME_LEVELS[e["outcome"]]
        cells = [when_ago(finished, now), text(e.get("version")), (e["outcome"], level)]
        rows.append((None, [*cells, seconds_text(e.get("duration_seconds")), seconds_text(e.get("switch_seconds"))]))
    for e in (e for e in known[-30:] if number(e.get("duration_seconds"))):
        tip = f"{text(e.get('version'))}: {e['outcome']}, {e['duration_seconds']} s"
        bars.append((e["duration_seconds"], OUTCOME_LEVELS[e["outcome"]], tip))
    table = ("deploys-table", ["When", "Version", "Outcome", "Duration s", "Switch s"], rows)
    chart = charts.bars(bars, f"deploy durations, last {len(bars)} deploys", "s")
    return section("deploys", "Last deploys", table=table, chart=chart)


def complete_backups(catalog):
    """Complete backups that say when they finished, oldest first."""
    found = [
        (parse_iso(m.get("finished_at")), m) for m in catalog.get("manifests", []) if m.get("status") == "complete"
    ]
    return sorted((pair for pair in found if pair[0] is not None), key=lambda pair: pair[0])


def backups_section(catalog, now, max_age_hours):
    if catalog is None:
        return section("backups", "Backups", note=f"{NO_DATA}: the backup directory cannot be listed")
    backups = complete_backups(catalog)
    if not backups:
        return section("backups", "Backups", note="no complete backup")
    newest, manifest = backups[-1]
    level = "ok" if now - newest <= max_age_hours * 3600 else "bad"
    facts = [("latest-backup", "Latest", f"{text(manifest.get('id'))} ({ago(newest, now)})", level)]
    rows = []
    for finished, m in reversed(backups[-10:]):
        size = human_bytes(m["compressed_bytes"]) if number(m.get("compressed_bytes")) else "unknown"
        rows.append((None, [text(m.get("id")), text(m.get("kind")), size, ago(finished, now)]))
    points = [
        (finished, m["compressed_bytes"] / 1024, "ok", f"{text(m.get('id'))}: {human_bytes(m['compressed_bytes'])}")
        for finished, m in backups[-30:]
        if number(m.get("compressed_bytes"))
    ]
    table = ("backups-table", ["Id", "Kind", "Size", "Age"], rows)
    chart = charts.line(points, f"backup sizes, last {len(points)} backups", "KiB")
    return section("backups", "Backups", facts, table, chart)


def job_row(name, entry, now):
    result = text(entry.get("last_result"))
    level = {"ok": "ok", "failed": "bad"}.get(result, "warn")
    cells = [name, (result, level), ago(parse_iso(entry.get("last_success")), now)]
    return (f"job-{name}", [*cells, text(entry.get("consecutive_failures"), "0"), text(entry.get("last_error"), "")])


def jobs_section(status, now):
    if status is None:
        return section("jobs", "Backup jobs", note=f"{NO_DATA}: the backup status file cannot be read")
    names = [name for name in JOBS if isinstance(status.get(name), dict)]
    names += sorted(name for name, entry in status.items() if isinstance(entry, dict) and name not in JOBS)
    if not names:
        return section("jobs", "Backup jobs", note="no job has run yet")
    rows = [job_row(name, status[name], now) for name in names]
    headers = ["Job", "Last result", "Last success", "Failures in a row", "Last error"]
    return section("jobs", "Backup jobs", table=("jobs-table", headers, rows))


def drill_section(catalog, now):
    if catalog is None:
        return section("drill", "Last drill", note=f"{NO_DATA}: the backup directory cannot be listed")
    drill_time = textfile._drill_time
    drills = sorted((r for r in catalog.get("drills", []) if drill_time(r) is not None), key=drill_time)
    if not drills:
        return section("drill", "Last drill", note="no drill yet")
    last = drills[-1]
    result = text(last.get("status"), "failed")
    facts = [
        ("drill-when", "When", when_ago(drill_time(last), now), None),
        ("drill-backup", "Backup", text(last.get("id")), None),
        ("drill-passed", "Result", result, "ok" if result == "passed" else "bad"),
        ("drill-rto", "RTO (restore)", f"{seconds_text(last.get('restore_seconds'))} s", None),
    ]
    points = [
        (drill_time(r), r["restore_seconds"], "ok" if r.get("status") == "passed" else "bad",
         f"{text(r.get('id'))}: {r.get('status')}, {r['restore_seconds']} s")
        for r in drills[-30:]
        if number(r.get("restore_seconds"))
    ]  # fmt: skip
    return section("drill", "Last drill", facts, chart=charts.line(points, "restore seconds (RTO) per drill", "s"))


def certificate_section(path, expiry, now, min_days):
    if path is None:
        return section("certificate", "Certificate", note="not checked (no --certificate)")
    if expiry is None:
        return section("certificate", "Certificate", [("certificate-expiry", "Expires", "unknown", "warn")])
    days = int((expiry - now) // 86400)
    value = f"expired {when(expiry)}" if days < 0 else f"in {days} days ({when(expiry)})"
    level = "ok" if days >= min_days else "bad"
    return section("certificate", "Certificate", [("certificate-expiry", "Expires", value, level)])


def disk_section(disks, max_percent):
    facts = []
    for index, (path, usage) in enumerate(disks):
        if usage is None:
            facts.append((f"disk-{index}", path, "unknown", "warn"))
            continue
        percent, available = usage
        level = "bad" if percent > max_percent else "ok"
        facts.append((f"disk-{index}", path, f"{percent:.0f} % used, {human_bytes(available)} free", level))
    return section("disk", "Disk", facts)


def build(sources, now, limits):
    """Every section, from what ``collect`` read."""
    return [
        live_section(sources["ledger"], sources["health"], now),
        deploys_section(sources["ledger"], now),
        backups_section(sources["catalog"], now, limits.backup_max_age_hours),
        jobs_section(sources["status"], now),
        drill_section(sources["catalog"], now),
        certificate_section(sources["certificate_path"], sources["certificate"], now, limits.certificate_min_days),
        disk_section(sources["disks"], limits.disk_max_percent),
    ]


# --- command line --------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description="write a server's status page (HTML) or print it as text")
    parser.add_argument("--status-file", default="/var/lib/montaiguillon-backup/status.json")
    parser.add_argument("--ledger", default="/var/lib/montaiguillon/app/releases.jsonl")
    parser.add_argument("--backup-dir", default="/var/backups/montaiguillon/mysql")
    parser.add_argument("--disk", action="append", metavar="PATH", help="a filesystem to report (repeatable; /)")
    parser.add_argument("--certificate", metavar="PATH", help="a PEM certificate whose expiry to report")
    parser.add_argument("--health-url", metavar="URL", help="the site's health URL (one GET, 3 s timeout)")
    parser.add_argument("--environment", required=True, choices=("test", "prod"))
    parser.add_argument("--host", default=socket.gethostname())
    parser.add_argument("--html", metavar="OUT", help="write the page here (atomically, mode 0644)")
    parser.add_argument("--text", action="store_true", help="print the same facts on stdout")
    # Red beyond these, as the alerts (monitoring_backup_max_age_hours, _certificate_min_days, _disk_max_percent).
    parser.add_argument("--backup-max-age-hours", type=float, default=26, metavar="HOURS")
    parser.add_argument("--certificate-min-days", type=int, default=14, metavar="DAYS")
    parser.add_argument("--disk-max-percent", type=float, default=85, metavar="PERCENT")
    args = parser.parse_args(argv)
    if not args.html and not args.text:
        parser.error("nothing to do: give --html OUT, --text or both")
    if args.health_url is not None and not args.health_url.startswith(("http://", "https://")):
        parser.error(f"--health-url must be an http:// or https:// URL, got {args.health_url!r}")
    args.disk = args.disk or ["/"]
    return args


def collect(args):
    """What the page tells, read once; a source that cannot be read is None."""
    return {
        "status": textfile.read_json(args.status_file),
        "ledger": textfile.read_ledger(args.ledger),
        "catalog": textfile.read_catalog(args.backup_dir),
        "disks": [(path, disk_usage(path)) for path in args.disk],
        "certificate_path": args.certificate,
        "certificate": certificate_expiry(args.certificate) if args.certificate else None,
        "health": check_health(args.health_url) if args.health_url else None,
    }


def main(argv=None, now=None):
    args = parse_args(argv)
    now = time.time() if now is None else now
    sections = build(collect(args), now, args)
    title = f"{args.environment} — {args.host}"
    generated = (datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), when(now))
    if args.text:
        sys.stdout.write(render.text_page(sections, title, generated, colour=sys.stdout.isatty()))
    return textfile.write_output(args.html, render.html_page(sections, title, generated)) if args.html else 0


if __name__ == "__main__":
    sys.exit(main())
