"""The release ledger: durable appends, tolerant reads, lookups; atomic file replacement."""

import json
import os

import pytest
from ansible.module_utils.montaiguillon.common import files
from ansible.module_utils.montaiguillon.common.files import atomic_write_text as atomic_write
from ansible.module_utils.montaiguillon.common.files import read_text
from ansible.module_utils.montaiguillon.deploy import ledger as release_ledger
from ansible.module_utils.montaiguillon.deploy.ledger import ReleaseLedger


def entry(release, outcome="success", image_id=None):
    return {"release": release, "outcome": outcome, "image_id": image_id or f"sha256:{release}", "image": "site"}


@pytest.fixture
def ledger(tmp_path):
    return ReleaseLedger.in_dir(str(tmp_path / "state"))


def test_append_then_read_in_order(ledger):
    ledger.append(entry("A"))
    ledger.append(entry("B"))
    assert [e["release"] for e in ledger.read()] == ["A", "B"]
    assert ledger.warnings == []
    lines = read_text(ledger.path).splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)
    assert os.path.basename(ledger.path) == "releases.jsonl"


def test_append_fsyncs_every_entry(ledger, monkeypatch):
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(release_ledger.os, "fsync", lambda fd: calls.append(fd) or real_fsync(fd))
    ledger.append(entry("A"))
    ledger.append(entry("B"))
    # the file each time, and its directory when the file was created
    assert len(calls) >= 3


def test_missing_ledger_reads_empty(ledger):
    assert ledger.read() == []
    assert ledger.last(3) == []


def test_truncated_last_line_is_ignored_with_a_warning(ledger):
    ledger.append(entry("A"))
    with open(ledger.path, "a", encoding="utf-8") as handle:
        handle.write('{"release": "B", "outc')  # a crash in the middle of an append
    assert [e["release"] for e in ledger.read()] == ["A"]
    assert ledger.warnings and "truncated" in ledger.warnings[0]


def test_append_after_a_truncated_line_stays_readable(ledger):
    ledger.append(entry("A"))
    with open(ledger.path, "a", encoding="utf-8") as handle:
        handle.write('{"release": "B"')
    ledger.append(entry("C"))
    assert [e["release"] for e in ledger.read()] == ["A", "C"]
    assert "line 2 is not valid JSON" in ledger.warnings[0]


def test_non_object_lines_are_skipped(ledger):
    os.makedirs(os.path.dirname(ledger.path))
    with open(ledger.path, "w", encoding="utf-8") as handle:
        handle.write('[1, 2]\n{"release": "A", "outcome": "success"}\n\n')
    assert [e["release"] for e in ledger.read()] == ["A"]
    assert "not an object" in ledger.warnings[0]


def test_last_returns_the_newest(ledger):
    for name in "ABCD":
        ledger.append(entry(name))
    assert [e["release"] for e in ledger.last(2)] == ["C", "D"]
    assert ledger.last(0) == []


def test_lookups_previous_find_latest(ledger):
    ledger.append(entry("A"))
    ledger.append(entry("X", outcome="failed"))
    ledger.append(entry("B"))
    ledger.append(entry("Y", outcome="rolled_back"))
    assert ledger.previous("B")["release"] == "A"
    assert ledger.previous("A") is None
    assert ledger.find("A")["image_id"] == "sha256:A"
    assert ledger.find("X") is None  # a failed attempt is not a release one can return to
    ledger.append(entry("A", outcome="rollback"))
    assert ledger.previous("A")["release"] == "B"


def test_atomic_write_replaces_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "app-upstream.conf"
    atomic_write(str(path), "one\n")
    atomic_write(str(path), "two\n", mode=0o640)
    assert path.read_text() == "two\n"
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    assert [p.name for p in tmp_path.iterdir()] == ["app-upstream.conf"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "app-upstream.conf"
    path.write_text("old\n")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(str(path), "new\n")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["app-upstream.conf"]


def test_read_text_of_a_missing_file_is_none(tmp_path):
    assert read_text(str(tmp_path / "nope")) is None


def test_the_ledger_says_which_snapshots_were_pruned():
    kept = {"id": "20261204T010054Z-pre-deploy", "path": "/b/20261204T010054Z-pre-deploy.sql.zst.age"}
    gone = {"id": "20261101T080000Z-pre-deploy", "path": "/b/20261101T080000Z-pre-deploy.sql.zst.age"}
    entries = [{"release": "r1", "snapshot": gone}, {"release": "r2", "snapshot": kept}, {"release": "r3"}]
    out = release_ledger.with_snapshot_state(entries, exists=lambda path: path == kept["path"])
    assert [e.get("snapshot", {}).get("state") for e in out] == ["pruned", "kept", None]
    assert entries[0]["snapshot"] == gone  # what the ledger recorded is not rewritten
