"""Manifests: the JSON document beside each dump that says what it holds and how to check it."""

from __future__ import annotations

from ansible.module_utils.montaiguillon.backup.ids import (
    COMPRESSIONS,
    DUMP_NAME_RE,
    FORMAT_VERSION,
    KINDS,
    SHA256_RE,
    parse_backup_id,
)
from ansible.module_utils.montaiguillon.common.clock import iso, parse_iso

_MANIFEST_TYPES = {
    "format": int,
    "id": str,
    "database": str,
    "file": str,
    "status": str,
    "kind": str,
    "label": str,
    "compression": str,
    "sha256": str,
    "compressed_bytes": int,
    "uncompressed_bytes": int,
    "row_counts": dict,
    "started_at": str,
    "finished_at": str,
}


def build_manifest(
    *,
    backup_id,
    database,
    file_name,
    kind,
    label,
    started,
    finished,
    duration,
    compression,
    encryption,
    sha256,
    compressed_bytes,
    scan,
    server,
    tool,
    pacing=None,
):
    """Assemble the manifest of a finished, checked backup (``scan`` is a DumpScanner)."""
    binlog = None
    if scan.binlog_file:
        binlog = {"file": scan.binlog_file, "position": scan.binlog_position, "gtid": scan.gtid}
    return {
        "format": FORMAT_VERSION,
        "id": backup_id,
        "status": "complete",
        "database": database,
        "file": file_name,
        "kind": kind,
        "label": label or "",
        "started_at": iso(started),
        "finished_at": iso(finished),
        "duration_seconds": round(duration, 3),
        "pacing": pacing or {"max_rate_bytes": 0, "paused_seconds": 0.0},
        "compression": compression,
        "encryption": encryption,
        "sha256": sha256,
        "compressed_bytes": compressed_bytes,
        "uncompressed_bytes": scan.total_bytes,
        "server": server,
        "binlog": binlog,
        "tool": tool,
        "row_counts": dict(sorted(scan.row_counts.items())),
        "row_counts_source": "dump",
        "row_counts_note": "rows counted in the dump stream itself: the same snapshot as the data",
        "verified": False,
    }


def validate_manifest(manifest, expected_id=None):
    """Return a list of problems (empty when the manifest is usable)."""
    if not isinstance(manifest, dict):
        return ["manifest is not a JSON object"]
    problems = []
    for key, kind in _MANIFEST_TYPES.items():
        value = manifest.get(key)
        if value is None:
            problems.append(f"missing {key}")
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            problems.append(f"{key} should be {kind.__name__}")
    if problems:
        return problems
    if manifest["format"] != FORMAT_VERSION:
        problems.append(f"unsupported manifest format {manifest['format']}")
    if parse_backup_id(manifest["id"]) is None:
        problems.append(f"bad id {manifest['id']!r}")
    if expected_id is not None and manifest["id"] != expected_id:
        problems.append(f"id {manifest['id']!r} does not match file name {expected_id!r}")
    match = DUMP_NAME_RE.match(manifest["file"])
    if not match or match["id"] != manifest["id"] or "/" in manifest["file"]:
        problems.append(f"bad file name {manifest['file']!r}")
    if manifest["compression"] not in COMPRESSIONS:
        problems.append(f"unknown compression {manifest['compression']!r}")
    if manifest["kind"] not in KINDS:
        problems.append(f"unknown kind {manifest['kind']!r}")
    if not SHA256_RE.match(manifest["sha256"]):
        problems.append("sha256 is not 64 lowercase hex digits")
    if manifest["compressed_bytes"] < 0 or manifest["uncompressed_bytes"] < 0:
        problems.append("negative size")
    for table, count in manifest["row_counts"].items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            problems.append(f"bad row count for {table!r}")
    for key in ("started_at", "finished_at"):
        try:
            parse_iso(manifest[key])
        except ValueError:
            problems.append(f"{key} is not an ISO timestamp")
    binlog = manifest.get("binlog")
    if binlog is not None and not (
        isinstance(binlog, dict) and binlog.get("file") and isinstance(binlog.get("position"), int)
    ):
        problems.append("binlog should be null or have file and position")
    return problems


def compare_row_counts(expected, actual):
    """Return ``[{table, expected, actual}]`` for every table whose count differs."""
    return [
        {"table": table, "expected": count, "actual": actual.get(table)}
        for table, count in sorted(expected.items())
        if actual.get(table) != count
    ]
