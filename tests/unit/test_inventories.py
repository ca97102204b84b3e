"""Both worlds have the same shape: groups test and prod; production secrets are vaulted."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# One vault ID and password per environment: test's password cannot open prod's vault.
EXAMPLE_VAULT_PASSWORDS = {env: f"montaiguillon-example-{env}-vault-password\n" for env in ("test", "prod")}
# The one installed beside this Python (the venv's), else the one on PATH.
ANSIBLE_INVENTORY = (
    str(Path(sys.executable).with_name("ansible-inventory"))
    if Path(sys.executable).with_name("ansible-inventory").exists()
    else shutil.which("ansible-inventory") or "ansible-inventory"
)


def vault_ids(tmp_path, envs=("test", "prod")):
    """``--vault-id env@file`` arguments for the example passwords of ``envs``."""
    args = []
    for env in envs:
        password = tmp_path / f"vault-pass-{env}"
        password.write_text(EXAMPLE_VAULT_PASSWORDS[env])
        password.chmod(0o600)
        args += ["--vault-id", f"{env}@{password}"]
    return args


def ansible_env():
    return {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}


def inventory(name, tmp_path):
    proc = subprocess.run(
        [ANSIBLE_INVENTORY, "-i", f"inventories/{name}/hosts.yml", "--list", *vault_ids(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=ansible_env(),
    )
    return json.loads(proc.stdout)


def group_hosts(data, group):
    return set(data.get(group, {}).get("hosts", []))


@pytest.mark.parametrize("name", ["lab", "production"])
def test_each_world_has_test_and_prod(name, tmp_path):
    data = inventory(name, tmp_path)
    assert group_hosts(data, "test") == {"dev.site"}
    assert group_hosts(data, "prod") == {"site.com"}


def test_production_environments_are_named_after_their_group(tmp_path):
    hostvars = inventory("production", tmp_path)["_meta"]["hostvars"]
    assert hostvars["dev.site"]["site_environment"] == "test"
    assert hostvars["site.com"]["site_environment"] == "prod"


@pytest.mark.parametrize("env", ["test", "prod"])
def test_production_secrets_are_vaulted_and_complete(env, tmp_path):
    vault = ROOT / "inventories/production/group_vars" / env / "vault.yml"
    assert vault.read_text().startswith(f"$ANSIBLE_VAULT;1.2;AES256;{env}\n")
    hostvars = inventory("production", tmp_path)["_meta"]["hostvars"]
    host = {"test": "dev.site", "prod": "site.com"}[env]
    names = (
        "vault_mysql_root_password",
        "vault_mysql_app_password",
        "vault_mysql_migrate_password",
        "vault_mysql_backup_password",
        "vault_status_password",
        "vault_mysql_exporter_password",
    )
    backup = ("vault_backup_age_recipient", "vault_backup_age_identity", "vault_backup_offsite_ssh_key")
    for name in (*names, "vault_registry_username", "vault_registry_token", *backup):
        assert hostvars[host][name].endswith("CHANGE-ME"), name


@pytest.mark.parametrize(("env", "other"), [("test", "prod"), ("prod", "test")])
def test_one_environments_vault_password_does_not_open_the_others(env, other, tmp_path):
    view = [str(Path(ANSIBLE_INVENTORY).with_name("ansible-vault")), "view", *vault_ids(tmp_path, [env])]
    mine = subprocess.run([*view, f"inventories/production/group_vars/{env}/vault.yml"], cwd=ROOT,
                          capture_output=True, text=True, env=ansible_env(), check=False)  # fmt: skip
    theirs = subprocess.run([*view, f"inventories/production/group_vars/{other}/vault.yml"], cwd=ROOT,
                            capture_output=True, text=True, env=ansible_env(), check=False)  # fmt: skip
    assert mine.returncode == 0 and "vault_mysql_root_password" in mine.stdout
    assert theirs.returncode != 0 and "Decryption failed" in theirs.stderr


def test_production_backups_are_encrypted_and_copied_off_the_server(tmp_path):
    hostvars = inventory("production", tmp_path)["_meta"]["hostvars"]
    for host in ("dev.site", "site.com"):
        assert hostvars[host]["backup_encrypt"] is True
        assert hostvars[host]["backup_offsite_enabled"] is True
        assert hostvars[host]["backup_age_identity"] == "{{ vault_backup_age_identity }}"
        assert hostvars[host]["backup_offsite_ssh_private_key"] == "{{ vault_backup_offsite_ssh_key }}"


def test_production_servers_pull_from_ghcr_with_the_vaulted_token(tmp_path):
    """Servers log in with their own read-only token (pulls outlive CD's GITHUB_TOKEN)."""
    hostvars = inventory("production", tmp_path)["_meta"]["hostvars"]
    for host in ("dev.site", "site.com"):
        assert hostvars[host]["docker_registry_auths"] == [
            {
                "registry": "ghcr.io",
                "username": "{{ vault_registry_username }}",
                "password": "{{ vault_registry_token }}",
            }
        ]
        assert {"vault_registry_username", "vault_registry_token"} <= set(hostvars[host]["preflight_extra_secrets"])


def test_lab_servers_log_in_to_the_lab_registry_with_the_generated_password(tmp_path):
    hostvars = inventory("lab", tmp_path)["_meta"]["hostvars"]
    for host in ("dev.site", "site.com"):
        (auth,) = hostvars[host]["docker_registry_auths"]
        assert auth["registry"] == "{{ lab_registry }}"
        assert "/registry/password" in auth["password"] and "lookup(" in auth["password"]


def test_no_plain_secret_in_production_vars():
    for path in (ROOT / "inventories/production").rglob("*.yml"):
        text = path.read_text()
        if text.startswith("$ANSIBLE_VAULT;"):
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if "password" in key and value.strip():
                assert value.strip().startswith('"{{'), f"{path}: {line}"


def test_each_production_environment_authorises_only_its_own_deploy_key(tmp_path):
    """test's deploy key (held by the `test` GitHub environment) does not open site.com."""
    hostvars = inventory("production", tmp_path)["_meta"]["hostvars"]
    for host, env in (("dev.site", "test"), ("site.com", "prod")):
        (deploy,) = [u for u in hostvars[host]["base_users"] if u["name"] == "deploy"]
        assert deploy["ssh_key_files"] == ["keys/deploy-{{ site_environment }}.pub"]
        assert hostvars[host]["site_environment"] == env
        assert "ssh_keys" not in deploy
