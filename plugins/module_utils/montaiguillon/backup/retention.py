"""Which backups to keep: the GFS ladder for scheduled and manual backups,
a bounded pool (count and age) for pre-deploy and safety snapshots.
"""

from __future__ import annotations

import datetime as dt

from ansible.module_utils.montaiguillon.backup.catalog import list_backups, remove_backup
from ansible.module_utils.montaiguillon.backup.ids import id_sort_key, parse_backup_id
from ansible.module_utils.montaiguillon.common.lock import DeployLock, LockHeld, acquire_waiting

# The ladder (keep_last, daily, weekly, monthly) keeps scheduled and manual backups; snapshots
# (pre-deploy, safety) have their own pool: the newest `snapshots` not older than `snapshot_days`.
DEFAULT_RETENTION = {"keep_last": 3, "daily": 7, "weekly": 4, "monthly": 6, "snapshots": 5, "snapshot_days": 7}


LADDER_KINDS = ("scheduled", "manual")


_BUCKETS = (
    ("daily", lambda moment: moment.date()),
    ("weekly", lambda moment: tuple(moment.isocalendar())[:2]),
    ("monthly", lambda moment: (moment.year, moment.month)),
)


def select_retention(backups, policy, protect=()):
    """Return the set of backup ids to keep.

    ``backups`` is an iterable of ``(id, datetime)``; ``policy`` has ``keep_last``,
    ``daily``, ``weekly`` and ``monthly`` counts. Keeps the newest ``keep_last``
    backups, then, for each period kind, the newest backup of each of the N most
    recent periods that have a backup (days, ISO weeks, months, in UTC). Ids in
    ``protect`` are always kept.
    """
    ordered = sorted(
        ((bid, when.astimezone(dt.UTC)) for bid, when in backups),
        key=lambda b: (b[1], id_sort_key(b[0])),
        reverse=True,
    )
    keep = {bid for bid, _when in ordered[: max(0, int(policy.get("keep_last") or 0))]}
    for name, bucket in _BUCKETS:
        limit = max(0, int(policy.get(name) or 0))
        seen = set()
        for bid, when in ordered:
            if len(seen) >= limit:
                break
            key = bucket(when)
            if key not in seen:
                seen.add(key)
                keep.add(bid)
    known = {bid for bid, _when in ordered}
    keep.update(bid for bid in protect if bid in known)
    return keep


def _kind_of(backup_id):
    parsed = parse_backup_id(backup_id)
    return parsed[1] if parsed else None


def select_snapshots(snapshots, policy, now):
    """Ids of the pre-deploy and safety snapshots to keep: the newest ``snapshots``, none older than
    ``snapshot_days`` (the newest one always)."""
    ordered = sorted(snapshots, key=lambda p: (p[1], id_sort_key(p[0])), reverse=True)
    count = max(1, int(policy.get("snapshots", DEFAULT_RETENTION["snapshots"])))
    max_age = dt.timedelta(days=max(0, float(policy.get("snapshot_days", DEFAULT_RETENTION["snapshot_days"]))))
    keep = {bid for bid, when in ordered[:count] if now - when <= max_age}
    if ordered:
        keep.add(ordered[0][0])
    return keep


def plan_retention(entries, policy, database, extra=None, now=None):
    """Split the complete backups of ``database`` into (keep, prune) id lists.

    ``entries`` comes from ``list_backups``; ``extra`` is an ``(id, datetime)`` for a
    backup about to be taken (check mode). Only complete backups are candidates:
    incomplete or damaged ones are left for an operator to look at. Scheduled and
    manual backups climb the ladder (``keep_last``, daily, weekly, monthly), which
    snapshots never crowd: pre-deploy and safety snapshots have their own pool
    (``snapshots``, ``snapshot_days``). The newest backup of each group and the newest
    drill-verified one are never pruned.
    """
    candidates = [e for e in entries if e["status"] == "complete" and e["manifest"].get("database") == database]
    pairs = [(e["id"], e["taken_at"]) for e in candidates]
    if extra is not None:
        pairs.append(extra)
    if not pairs:
        return [], []
    now = now or max(when for _bid, when in pairs)
    ladder = [p for p in pairs if _kind_of(p[0]) in LADDER_KINDS]
    snapshots = [p for p in pairs if _kind_of(p[0]) not in LADDER_KINDS]
    protect = {max(group, key=lambda p: (p[1], id_sort_key(p[0])))[0] for group in (ladder, snapshots) if group}
    verified = [e for e in candidates if e["manifest"].get("verified") is True]
    if verified:
        protect.add(max(verified, key=lambda e: (e["taken_at"], id_sort_key(e["id"])))["id"])
    keep = select_retention(ladder, policy, protect) | select_snapshots(snapshots, policy, now) | protect
    order = sorted(pairs, key=lambda p: (p[1], id_sort_key(p[0])), reverse=True)
    return [bid for bid, _when in order if bid in keep], [bid for bid, _when in order if bid not in keep]


def apply_retention(backup_dir, database, policy):
    """Prune per ``policy`` (caller holds the lock); return the pruned ids."""
    entries = list_backups(backup_dir, database)
    _keep, prune = plan_retention(entries, policy, database)
    by_id = {e["id"]: e for e in entries}
    for backup_id in prune:
        remove_backup(backup_dir, by_id[backup_id])
    return prune


def prune_under_lock(backup_dir, database, policy, *, lock_file, wait, who, warn):
    """``apply_retention`` holding the server's change lock (``lock_file``; None: no lock).

    Pruning must not remove a backup a restore is loading or a deploy's snapshot
    a rollback may need: it waits up to ``wait`` s for the holder, then skips
    (the backup just taken stays; the next run prunes) and says who held it.
    """
    if not lock_file:
        return apply_retention(backup_dir, database, policy)
    lock = DeployLock(lock_file, who=who, what=backup_dir, action="pruning the backups in")
    try:
        warnings, _waited = acquire_waiting(lock, wait)
    except LockHeld as exc:
        warn(f"pruning skipped this time: {exc}")
        return []
    for warning in warnings:
        warn(warning)
    try:
        return apply_retention(backup_dir, database, policy)
    finally:
        lock.release()
