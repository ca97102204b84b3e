"""A server checks its offsite store before trusting it: reachable with its key, and append-only.

rsync runs for real; ssh is replaced by a local script that runs the remote side the way the store's
authorized_keys would: through rrsync -no-del -no-overwrite (the lab's and docs' store), or a plain shell
(a store account without the forced command), or not at all (unreachable).
"""

import json
import shutil

import pytest
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.offsite import PROBE_DIR, check_store

PKG = "ansible.module_utils.montaiguillon.backup"

STORES = {
    # The forced command of roles/backup_store's authorized_keys.
    "append-only": (
        '[ "$1" = -l ] && shift 2\nshift\nSSH_ORIGINAL_COMMAND="$*" exec rrsync -no-del -no-overwrite -no-lock {root}\n'
    ),
    # An account where the server's key gets a shell: rsync --delete works.
    "plain": '[ "$1" = -l ] && shift 2\nshift\ncd {root} && exec sh -c "$*"\n',
    "unreachable": 'echo "ssh: connect to host backup.example port 22: Connection refused" >&2\nexit 255\n',
}


@pytest.fixture
def store(tmp_path, monkeypatch):
    """``store(kind)``: the store's directory and the key files' arguments, ssh going to that kind of store."""
    if not (shutil.which("rsync") and shutil.which("rrsync")):
        pytest.skip("rsync (with rrsync) not installed")
    root = tmp_path / "store"
    root.mkdir()
    (root / "20261126T031500Z-scheduled.json").write_text("{}")
    for name in ("key", "known_hosts"):
        (tmp_path / name).write_text("x")

    def make(kind):
        fake = tmp_path / f"ssh-{kind}"
        fake.write_text("#!/bin/sh\n" + STORES[kind].format(root=root))
        fake.chmod(0o755)
        monkeypatch.setattr(f"{PKG}.offsite._ssh", lambda *_args: [str(fake)])
        return {"target": "offsite@backup.example:.", "ssh_key": str(tmp_path / "key"),
                "known_hosts": str(tmp_path / "known_hosts")}  # fmt: skip

    make.root = root
    return make


def test_an_append_only_store_passes_and_nothing_is_written_there(store):
    found = check_store(**store("append-only"))
    assert found == {"target": "offsite@backup.example:.", "reachable": True, "append_only": True}
    assert sorted(p.name for p in store.root.iterdir()) == ["20261126T031500Z-scheduled.json"]


def test_a_store_that_accepts_deletions_is_refused_naming_the_fix(store):
    with pytest.raises(BackupError, match=r"accepts deletions from this server's key: it is not append-only.*rrsync"):
        check_store(**store("plain"))
    assert not (store.root / PROBE_DIR).exists()  # a dry run: the store is as it was
    assert (store.root / "20261126T031500Z-scheduled.json").exists()


def test_a_mirror_store_is_accepted_when_deletions_are_wanted(store):
    found = check_store(**store("plain"), append_only=False)
    assert found["reachable"] is True and found["append_only"] is None


def test_an_unreachable_store_is_named_with_what_ssh_said(store):
    with pytest.raises(BackupError, match=r"offsite@backup.example:\. cannot be reached .*Connection refused"):
        check_store(**store("unreachable"))


@pytest.fixture
def mod(load_module):
    return load_module("backup_store_check")


def test_the_module_refuses_a_store_accepting_deletions_and_keeps_no_key(mod, store, run_module, monkeypatch, tmp_path):
    store("plain")
    monkeypatch.setattr(mod, "KEY_DIR", str(tmp_path))
    keys = {"ssh_private_key": "PRIVATE KEY", "known_hosts": "backup.example ssh-ed25519 AAAA"}
    result = run_module(mod, host="backup.example", **keys)
    assert result["failed"] is True and "not append-only" in result["msg"]
    assert "PRIVATE KEY" not in json.dumps(result)
    assert not list(tmp_path.glob("montaiguillon-store-check-*"))  # the key's directory is gone


def test_the_preflight_skips_a_server_without_rsync_yet(mod, run_module, monkeypatch):
    monkeypatch.setattr(mod.shutil, "which", lambda tool: None if tool == "rsync" else "/usr/bin/ssh")
    args = {"host": "backup.example", "ssh_private_key": "k", "known_hosts": "h"}
    skipped = run_module(mod, **args, when_tools_missing="skip")
    assert skipped["changed"] is False and skipped["skipped_reason"] == "rsync not installed on this server yet"
    failed = run_module(mod, **args)
    assert failed["failed"] is True and "rsync not installed" in failed["msg"]
