"""common.files: atomic writes that leave the old file or the new one, and OS errors said plainly."""

import errno
import json
import os

import pytest
from ansible.module_utils.montaiguillon.backup.catalog import write_json
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.common import files


def test_atomic_write_creates_a_0600_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "x.json"
    files.atomic_write_json(str(target), {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert os.listdir(tmp_path) == ["x.json"]


def test_atomic_write_failure_leaves_no_final_file_and_no_temp(tmp_path, monkeypatch):
    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(files.FileWriteError, match=r"^no space left on device while writing .*x\.json$"):
        files.atomic_write_bytes(str(tmp_path / "x.json"), b"data")
    assert os.listdir(tmp_path) == []


def test_atomic_write_failure_keeps_the_previous_version(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    target.write_text("old")

    def broken(_src, _dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(files.os, "replace", broken)
    with pytest.raises(files.FileWriteError, match="Input/output error while writing"):
        files.atomic_write_bytes(str(target), b"new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["x.json"]


@pytest.mark.parametrize(
    ("err", "text"),
    [
        (errno.ENOSPC, "no space left on device while writing /b/x"),
        (errno.EDQUOT, "disk quota exceeded while writing /b/x"),
        (errno.EACCES, "Permission denied while writing /b/x"),
    ],
)
def test_describe_os_error(err, text):
    assert files.describe_os_error(OSError(err, os.strerror(err)), "/b/x") == text


def test_a_backups_json_write_failure_is_a_backup_error(tmp_path, monkeypatch):
    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(BackupError, match=r"^no space left on device while writing .*x\.json$"):
        write_json(str(tmp_path / "x.json"), {"a": 1})
    assert os.listdir(tmp_path) == []
