"""The offsite store's own pruning, run on the storage host (never by a server).

The servers copy their encrypted backups to the store through rrsync with
``-no-del -no-overwrite``: they can add files, never delete or replace one.
So retention on the store is the store's business, on its own schedule and
with its own policy, and a compromised server cannot shorten it:

- every backup (dump, manifest, drill record) younger than ``keep_days`` stays;
- the ``keep_min`` newest complete backups stay whatever their age (a server
  that stopped sending does not lose its last good copies to the clock);
- a shipped binlog stays while it may be needed to roll the oldest kept
  backup forward (its mtime, the time its last event was written, is not
  older than that backup);
- leftovers of an interrupted transfer (rsync's ``.~tmp~`` directories,
  ``*.partial``) older than a day go.

Standard library only: the storage host has python3 and nothing else of ours.
``python3 store.py --root /srv/backup --keep-days 35 --keep-min 7 [--dry-run]``
prunes every client directory under the root and prints what it removed.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import sys

ID_RE = re.compile(r"^(?P<ts>\d{8}T\d{6}Z)-(?P<kind>scheduled|manual|pre-deploy|safety)(?:-[1-9]\d*)?$")
DUMP_RE = re.compile(r"^(?P<id>[^/]+?)\.sql\.(?:zst|gz)(?:\.age)?$")
BINLOG_DIR = "binlogs"
LEFTOVER_SECONDS = 86400


def backup_id(name):
    """The backup id a file of the store belongs to (dump, manifest, drill record), or None."""
    match = DUMP_RE.match(name)
    stem = match.group("id") if match else re.sub(r"(\.drill)?\.json$", "", name)
    return stem if ID_RE.match(stem) and stem != name else None


def taken_at(identifier):
    """UTC time a backup was started, from its id."""
    stamp = ID_RE.match(identifier).group("ts")
    return datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)


def plan(names, *, now, keep_days, keep_min):
    """Which backup ids to keep and which to prune, from the file names of one client directory.

    A backup is complete when both its dump and its manifest are there.
    """
    files = {}
    for name in names:
        identifier = backup_id(name)
        if identifier:
            files.setdefault(identifier, []).append(name)
    complete = sorted(
        (i for i, group in files.items() if any(DUMP_RE.match(n) for n in group) and f"{i}.json" in group),
        key=taken_at,
        reverse=True,
    )
    cutoff = now - datetime.timedelta(days=keep_days)
    keep = {i for i in files if taken_at(i) >= cutoff} | set(complete[:keep_min])
    prune = sorted(set(files) - keep, key=taken_at)
    return {
        "keep": sorted(keep, key=taken_at),
        "prune": prune,
        "files": {i: sorted(files[i]) for i in prune},
        "oldest_kept": min((taken_at(i) for i in keep), default=None),
    }


def prune_client(directory, *, now, keep_days, keep_min, dry_run=False):
    """Prune one client's directory; the list of paths removed (or that would be)."""
    decided = plan(os.listdir(directory), now=now, keep_days=keep_days, keep_min=keep_min)
    doomed = [os.path.join(directory, name) for identifier in decided["prune"] for name in decided["files"][identifier]]
    binlogs = os.path.join(directory, BINLOG_DIR)
    if os.path.isdir(binlogs) and decided["oldest_kept"] is not None:
        horizon = decided["oldest_kept"].timestamp()
        doomed += [
            os.path.join(binlogs, name)
            for name in sorted(os.listdir(binlogs))
            if os.path.isfile(os.path.join(binlogs, name)) and os.path.getmtime(os.path.join(binlogs, name)) < horizon
        ]
    for root, dirs, names in os.walk(directory):
        for name in dirs + names:
            path = os.path.join(root, name)
            stale = now.timestamp() - os.lstat(path).st_mtime > LEFTOVER_SECONDS
            if stale and (name.startswith(".~tmp~") or name.endswith(".partial")):
                doomed.append(path)
    if not dry_run:
        for path in doomed:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
    return doomed


def main(argv=None, now=None):
    parser = argparse.ArgumentParser(description="Prune the offsite store's client directories (store-side retention).")
    parser.add_argument("--root", required=True, help="the store's root: one directory per server")
    parser.add_argument("--keep-days", type=int, required=True, help="keep every backup younger than this")
    parser.add_argument("--keep-min", type=int, required=True, help="always keep this many newest complete backups")
    parser.add_argument("--dry-run", action="store_true", help="print what would go, remove nothing")
    args = parser.parse_args(argv)
    if args.keep_days < 1 or args.keep_min < 1:
        parser.error("--keep-days and --keep-min must be at least 1")
    if not os.path.isdir(args.root):
        parser.error(f"--root {args.root} is not a directory")
    now = now or datetime.datetime.now(datetime.UTC)
    report = {}
    for client in sorted(os.listdir(args.root)):
        directory = os.path.join(args.root, client)
        if os.path.isdir(directory) and not client.startswith("."):
            removed = prune_client(
                directory, now=now, keep_days=args.keep_days, keep_min=args.keep_min, dry_run=args.dry_run
            )
            report[client] = [os.path.relpath(path, directory) for path in removed]
    sys.stdout.write(json.dumps({"dry_run": args.dry_run, "removed": report}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
