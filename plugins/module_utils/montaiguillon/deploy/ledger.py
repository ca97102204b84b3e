"""The release ledger: one JSON object per line in ``{state_dir}/releases.jsonl``.

Appending is a single ``write()`` on a file opened with O_APPEND, followed by
``fsync`` (and an fsync of the directory when the file is new), so a crash
leaves at worst a truncated last line. Reading skips such a line (and reports
it in ``warnings``) instead of failing: the ledger must never block a deploy
or a rollback.

File writes and reads go through ``montaiguillon.common.files``.
"""

import json
import os

from ansible.module_utils.montaiguillon.common.files import fsync_dir, read_text
from ansible.module_utils.montaiguillon.deploy.plan import find_release, previous_release


class ReleaseLedger:
    """Append-only JSON-lines history of the releases on one server."""

    FILE_NAME = "releases.jsonl"

    def __init__(self, path):
        self.path = path
        self.warnings = []

    @classmethod
    def in_dir(cls, state_dir):
        return cls(os.path.join(state_dir, cls.FILE_NAME))

    def append(self, entry):
        """Add one entry (a dict) durably."""
        line = json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str) + "\n"
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, mode=0o750, exist_ok=True)
        is_new = not os.path.exists(self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            # A crash during an earlier append may have left a line without its
            # newline: start on a fresh line so this entry stays readable.
            size = os.fstat(fd).st_size
            if size:
                with open(self.path, "rb") as reader:
                    reader.seek(size - 1)
                    if reader.read(1) != b"\n":
                        line = "\n" + line
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        if is_new:
            fsync_dir(directory)
        return entry

    def read(self):
        """All readable entries, oldest first. Unreadable lines land in ``warnings``."""
        self.warnings = []
        text = read_text(self.path)
        if not text:
            return []
        lines = text.split("\n")
        entries = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                last = number == len(lines) or all(not rest.strip() for rest in lines[number:])
                where = "its last line is truncated" if last else f"line {number} is not valid JSON"
                self.warnings.append(f"release ledger {self.path}: {where}; ignored")
                continue
            if isinstance(entry, dict):
                entries.append(entry)
            else:
                self.warnings.append(f"release ledger {self.path}: line {number} is not an object; ignored")
        return entries

    def last(self, count):
        """The newest ``count`` entries, oldest first."""
        if count <= 0:
            return []
        return self.read()[-count:]

    def find(self, release_id):
        """The latest entry that made ``release_id`` live, or None."""
        return find_release(self.read(), release_id)

    def previous(self, live_release_id):
        """The release that was live before ``live_release_id`` (rollback's default)."""
        return previous_release(self.read(), live_release_id)


def with_snapshot_state(entries, exists=os.path.exists):
    """Copies of ``entries`` whose pre-deploy snapshot says whether its file is still kept.

    Snapshots live in their own retention pool (the backup role): an old release's snapshot is
    pruned in time. The ledger keeps what it recorded and says ``kept`` or ``pruned`` beside it,
    so nobody plans a restore from a file that is gone.
    """
    out = []
    for entry in entries:
        snapshot = entry.get("snapshot")
        if isinstance(snapshot, dict) and snapshot.get("path"):
            entry = {**entry, "snapshot": {**snapshot, "state": "kept" if exists(snapshot["path"]) else "pruned"}}
        out.append(entry)
    return out
