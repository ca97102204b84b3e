"""Backup ids, kinds and file names.

An id is the UTC start time and the kind (``20260101T020000Z-scheduled``,
with ``-2`` and up when two start in the same second); the dump is
``<id>.sql.<zst|gz>[.age]`` beside its manifest ``<id>.json``.
"""

from __future__ import annotations

import datetime as dt
import re

FORMAT_VERSION = 1


KINDS = ("scheduled", "manual", "pre-deploy", "safety")


COMPRESSIONS = {
    "zstd": {
        "ext": "zst",
        "compress": ["zstd", "-q", "-T0", "-3", "-c"],
        "decompress": ["zstd", "-q", "-d", "-c"],
    },
    "gzip": {"ext": "gz", "compress": ["gzip", "-c", "-6"], "decompress": ["gzip", "-d", "-c"]},
}


ID_RE = re.compile(r"^(?P<ts>\d{8}T\d{6}Z)-(?P<kind>scheduled|manual|pre-deploy|safety)(?:-(?P<seq>[1-9]\d*))?$")


DUMP_NAME_RE = re.compile(r"^(?P<id>[^/]+?)\.sql\.(?P<ext>zst|gz)(?P<age>\.age)?$")


SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def make_backup_id(now, kind, exists=lambda _backup_id: False):
    """``20261126T091108Z-manual``; ``-2``, ``-3``... when that second is taken."""
    if kind not in KINDS:
        raise ValueError(f"unknown backup kind {kind!r}")
    base = f"{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{kind}"
    candidate, seq = base, 1
    while exists(candidate):
        seq += 1
        candidate = f"{base}-{seq}"
    return candidate


def parse_backup_id(backup_id):
    """Return ``(datetime, kind, seq)`` or None when it is not one of our ids."""
    match = ID_RE.match(backup_id or "")
    if not match:
        return None
    moment = dt.datetime.strptime(match["ts"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    return moment, match["kind"], int(match["seq"] or 1)


def id_sort_key(backup_id):
    parsed = parse_backup_id(backup_id)
    if parsed is None:
        return (dt.datetime.min.replace(tzinfo=dt.UTC), 0, backup_id)
    return (parsed[0], parsed[2], backup_id)


def dump_file_name(backup_id, compression, encrypted=False):
    return f"{backup_id}.sql.{COMPRESSIONS[compression]['ext']}" + (".age" if encrypted else "")
