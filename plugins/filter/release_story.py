"""Filters that turn bluegreen_release results into lines a person reads."""

DOCUMENTATION = r"""
name: release_story
short_description: One line per step of a bluegreen_release result
description:
  - Formats the C(steps) of a bluegreen_release result as aligned lines
    (step, seconds, result, detail), headed by the release and its outcome.
positional: _input
options:
  _input:
    description: The registered result of bluegreen_release.
    type: dict
    required: true
"""


def release_story(result):
    """Lines like ``switch        0.12 s  ok      app-blue -> app-green``."""
    release = result.get("release") or {}
    head = "release {} ({}){}".format(
        release.get("release", "-"),
        release.get("outcome") or ("changed" if result.get("changed") else "no change"),
        f": {release['message']}" if release.get("message") else "",
    )
    lines = [head]
    for step in result.get("steps") or []:
        name, seconds, outcome = step.get("step", "?"), step.get("seconds", 0), step.get("result", "")
        lines.append(f"{name:<14} {seconds:7.2f} s  {outcome:<8} {step.get('detail') or ''}".rstrip())
    return lines


def release_table(entries):
    """The ledger as aligned lines, newest first."""
    lines = [
        f"{'release':<34} {'outcome':<11} {'version':<16} {'revision':<13} {'when':<20} {'took':>7}  "
        f"{'snapshot':<36} by"
    ]
    for entry in entries or []:
        lines.append(
            f"{entry.get('release', '-'):<34} {entry.get('outcome', '-'):<11} {entry.get('version') or '-'!s:<16} "
            f"{str(entry.get('revision') or '-')[:12]:<13} {str(entry.get('finished_at') or '-')[:19]:<20} "
            f"{float(entry.get('duration_seconds') or 0):6.1f}s  {_snapshot_cell(entry.get('snapshot')):<36} "
            f"{entry.get('requested_by') or '-'}"
        )
    return lines


def _snapshot_cell(snapshot):
    """``20261204T010054Z-pre-deploy``, ``... (pruned)`` once the backup role pruned it, ``-`` for none."""
    if not isinstance(snapshot, dict) or not snapshot.get("id"):
        return "-"
    return f"{snapshot['id']} (pruned)" if snapshot.get("state") == "pruned" else str(snapshot["id"])


class FilterModule:
    def filters(self):
        return {"release_story": release_story, "release_table": release_table}
