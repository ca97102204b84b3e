"""Encryption on: every kind of backup (scheduled, manual, pre-deploy, safety) leaves no plaintext dump behind."""

import json
import os
import shutil
import subprocess
import syslog
import typing

import pytest
from ansible.module_utils.montaiguillon.backup import cli
from ansible.module_utils.testing import patch_module_args
from backup_fakes import MARIADB_DUMP, PASSWORD, FakeAPI, FakeConn, pad_dump

PKG = "ansible.module_utils.montaiguillon.backup"

DUMP = pad_dump(MARIADB_DUMP, 50_000)

pytestmark = pytest.mark.skipif(
    shutil.which("age") is None or shutil.which("age-keygen") is None, reason="age not installed"
)


@pytest.fixture
def world(load_module, monkeypatch, tmp_path):
    class World:
        api = FakeAPI(dump=DUMP)
        conn = FakeConn()
        backup_dir = tmp_path / "backups"
        identity = tmp_path / "identity.txt"
        recipients = tmp_path / "recipients.txt"
        backup_module = load_module("mysql_backup")
        restore_module = load_module("mysql_restore")
        syslog: typing.ClassVar[list] = []

    subprocess.run(["age-keygen", "-o", str(World.identity)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(World.identity)], check=True, capture_output=True).stdout
    World.recipients.write_bytes(public)
    for module in (World.backup_module, World.restore_module):
        monkeypatch.setattr(module, "docker_api", lambda docker_host=None: World.api)
    monkeypatch.setattr(World.restore_module, "connect", lambda login, database=None: World.conn)
    monkeypatch.setattr(f"{PKG}.container.docker_api", lambda docker_host=None: World.api)
    monkeypatch.setattr(f"{PKG}.mysql.connect", lambda login, database=None: World.conn)
    monkeypatch.setattr(syslog, "syslog", lambda priority, message: World.syslog.append((priority, message)))
    return World


def run_module(module, capsys, **args):
    with patch_module_args(args), pytest.raises(SystemExit):
        module.main()
    result = json.loads(capsys.readouterr().out)
    assert not result.get("failed"), result.get("msg")
    return result


def scheduled(world, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "host": "site.com",
                "backup_dir": str(world.backup_dir),
                "database": "app",
                "compression": "gzip",
                "login_password": PASSWORD,
                "status_file": str(tmp_path / "status.json"),
                "log_file": str(tmp_path / "backup.log"),
                "binlogs": {"enabled": False},
                "encrypt_recipient_file": str(world.recipients),
            }
        )
    )
    umask = os.umask(0o022)
    try:
        assert cli.main(["--config", str(config), "run"]) == 0
    finally:
        os.umask(umask)


def plaintext_dumps(backup_dir):
    """Dump files that are not age ciphertext: by name, and by content (age files start with its header)."""
    found = []
    for path in backup_dir.glob("*.sql*"):
        head = path.read_bytes()[:64]
        if not path.name.endswith(".age") or not head.startswith(b"age-encryption.org/v1"):
            found.append(path.name)
    return sorted(found)


def test_every_kind_of_backup_is_encrypted_when_encryption_is_on(world, capsys, tmp_path):
    common = {"backup_dir": str(world.backup_dir), "database": "app", "login_password": PASSWORD}
    encrypt = {"encrypt_recipient_file": str(world.recipients), "compression": "gzip"}

    scheduled(world, tmp_path)
    capsys.readouterr()  # the command's log line
    assert plaintext_dumps(world.backup_dir) == []

    for kind in ("manual", "pre-deploy"):
        run_module(world.backup_module, capsys, kind=kind, **common, **encrypt)
        assert plaintext_dumps(world.backup_dir) == [], kind

    result = run_module(
        world.restore_module,
        capsys,
        mode="restore",
        decrypt_identity_file=str(world.identity),
        **common,
        **encrypt,
    )
    safety = result["safety_backup"]
    assert safety["kind"] == "safety" and safety["path"].endswith(".age")
    assert plaintext_dumps(world.backup_dir) == []
    kinds = sorted(json.loads(p.read_text())["kind"] for p in world.backup_dir.glob("*.json"))
    assert kinds == ["manual", "pre-deploy", "safety", "scheduled"]
