"""SSH on the lab servers: each environment's deploy key opens only its own server.

Runs against a provisioned lab (`make lab-up`, then site.yml): the deploy user
of dev.site holds .generated/deploy-test.pub, site.com's deploy-prod.pub.
"""

import subprocess

import pytest
import yaml
from labtools import INVENTORY, container, on_server

pytestmark = pytest.mark.lab
GENERATED = INVENTORY.parent / ".generated"
ENVIRONMENTS = {"dev.site": "test", "site.com": "prod"}


def ssh_port(host):
    groups = yaml.safe_load(INVENTORY.read_text())["all"]["children"]["lab_servers"]["children"]
    return next(g["hosts"][host]["ansible_port"] for g in groups.values() if host in g["hosts"])


def ssh_as_deploy(host, key):
    """rc and stderr of `ssh deploy@host true` with only ``key`` offered, host keys checked."""
    proc = subprocess.run(
        ["ssh", "-i", str(key), "-p", str(ssh_port(host)), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={GENERATED / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
         "-o", "ConnectTimeout=10", "deploy@127.0.0.1", "true"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return proc.returncode, proc.stderr


def test_the_environments_have_different_deploy_keys():
    test_key = (GENERATED / "deploy-test.pub").read_text().split()[1]
    prod_key = (GENERATED / "deploy-prod.pub").read_text().split()[1]
    assert test_key != prod_key


@pytest.mark.parametrize(("host", "env"), ENVIRONMENTS.items())
def test_each_deploy_key_opens_its_own_server(host, env):
    rc, stderr = ssh_as_deploy(host, GENERATED / f"deploy-{env}")
    assert rc == 0, stderr


@pytest.mark.parametrize(("host", "other"), [("site.com", "test"), ("dev.site", "prod")])
def test_the_other_environments_deploy_key_is_refused(host, other):
    """Whoever holds test's key (a job in the `test` GitHub environment) does not get into prod."""
    rc, stderr = ssh_as_deploy(host, GENERATED / f"deploy-{other}")
    assert rc == 255
    assert "Permission denied (publickey)" in stderr


@pytest.mark.parametrize("host", list(ENVIRONMENTS))
def test_sshd_admits_only_the_managed_group(host):
    effective = on_server(container(host), "sshd", "-T").stdout.splitlines()
    assert "allowgroups montaiguillon-ssh" in effective
    members = on_server(container(host), "getent", "group", "montaiguillon-ssh").stdout.strip().split(":")[3]
    assert set(members.split(",")) == {"deploy", "debian"}


def test_a_missing_key_file_fails_before_any_change_naming_it(playbook, tmp_path):
    inventory = tmp_path / "lab"
    subprocess.run(["cp", "-a", str(INVENTORY.parent), str(inventory)], check=True)
    (inventory / ".generated/deploy-test.pub").unlink()
    run = playbook("site.yml", "-i", str(inventory / "hosts.yml"), "-l", "test")
    assert run.rc != 0
    assert f"key file {inventory}/.generated/deploy-test.pub is missing" in run.output
    assert "PLAY [Provision" not in run.output  # no provisioning play started
    assert run.changed() == {"dev.site": 0}
