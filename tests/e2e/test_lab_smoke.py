"""Lab smoke test: the lab from nothing, provisioned, idempotent, and robust to bad input.

Runs against the local lab (127.0.0.1 only). Tests run in file order: each
builds on the state the previous one left.
"""

import json
import os
import subprocess
import time

import pytest
from labtools import INVENTORY, on_server
from labtools import container as lab_container

pytestmark = pytest.mark.lab
LAB_ARGS = ["-e", f"lab_inventory_dir={INVENTORY.parent}", *os.environ.get("LAB_EXTRA_ARGS", "").split()]

SERVERS = {"dev.site": (lab_container("dev.site"), "test"), "site.com": (lab_container("site.com"), "prod")}
# Every host site.yml provisions: the two servers and the offsite backup store.
PROVISIONED = {*SERVERS, "backup.store"}
UNCHANGED = dict.fromkeys(PROVISIONED, 0)


def sql(container, environment, lab_secret, query):
    password = lab_secret(environment, "vault_mysql_root_password")
    return on_server(
        container, "docker", "exec", "-e", f"MYSQL_PWD={password}", "mysql",
        "mariadb", "-uroot", "-N", "-B", "montaiguillon", "-e", query, check=False,
    )  # fmt: skip


# The first thing site.yml writes on every host (roles/base).
PROVISIONING_MARK = "/etc/systemd/system/montaiguillon-firewall.service"


def never_provisioned(host):
    """Whether ``host``'s lab container exists and site.yml never ran on it."""
    name = lab_container(host)
    if subprocess.run(["docker", "inspect", name], capture_output=True).returncode != 0:
        return False
    return on_server(name, "test", "-e", PROVISIONING_MARK, check=False).returncode != 0


def changed_tasks(output):
    """The tasks of a run that reported a change (what a second run should not do)."""
    changed, task = [], None
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = line.split("]", 1)[0][6:]
        elif line.startswith("changed:") and task:
            changed.append(f"{task}: {line}")
    return "changed on a second run: " + "; ".join(changed)


def test_lab_comes_up_from_nothing(playbook):
    """A lab used before is taken down and brought up again. One that `make e2e`'s own `lab-up` just made
    from nothing (CI's: a fresh machine) is already that: its servers were never provisioned, and taking
    them down and up again would only repeat it (90 s)."""
    if not all(never_provisioned(host) for host in PROVISIONED):
        down = playbook("playbooks/lab.yml", "-e", "lab_state=absent", *LAB_ARGS)
        assert down.rc == 0, down.output
        for container, _ in SERVERS.values():
            assert subprocess.run(["docker", "inspect", container], capture_output=True).returncode != 0
        up = playbook("playbooks/lab.yml", *LAB_ARGS)
        assert up.rc == 0, up.output
        assert all(never_provisioned(host) for host in PROVISIONED)
    again = playbook("playbooks/lab.yml", *LAB_ARGS)
    assert again.rc == 0, again.output
    assert again.changed() == {"localhost": 0}, changed_tasks(again.output)


def test_first_provision(playbook):
    run = playbook("site.yml")
    assert run.rc == 0, run.output[-4000:]
    assert set(run.recap) == PROVISIONED
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in run.recap.values())


def test_second_run_changes_nothing(playbook):
    run = playbook("site.yml")
    assert run.rc == 0, run.output[-4000:]
    assert run.changed() == UNCHANGED


def test_check_mode_reports_no_change(playbook):
    run = playbook("site.yml", "--check")
    assert run.rc == 0, run.output[-4000:]
    assert run.changed() == UNCHANGED


@pytest.mark.parametrize("host", list(SERVERS))
def test_sql_through_the_database_container(host, lab_secret):
    container, environment = SERVERS[host]
    out = sql(container, environment, lab_secret, "SELECT DATABASE(), @@log_bin")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["montaiguillon", "1"]


def test_environments_have_their_own_secrets(lab_secret):
    assert lab_secret("test", "vault_mysql_root_password") != lab_secret("prod", "vault_mysql_root_password")
    for environment in ("test", "prod"):
        secrets = INVENTORY.parent / "group_vars" / environment / "secrets.yml"
        assert secrets.stat().st_mode & 0o777 == 0o600


def test_ssh_is_hardened_on_the_lab_servers():
    for container, _ in SERVERS.values():
        effective = on_server(container, "sshd", "-T").stdout.splitlines()
        assert "permitrootlogin no" in effective
        assert "passwordauthentication no" in effective


def test_database_survives_a_server_restart(playbook, lab_secret):
    container, environment = SERVERS["site.com"]
    write = sql(
        container, environment, lab_secret,
        "CREATE TABLE IF NOT EXISTS smoke (id INT PRIMARY KEY, note TEXT); REPLACE INTO smoke VALUES (1, 'kept');",
    )  # fmt: skip
    assert write.returncode == 0, write.stderr
    subprocess.run(["docker", "restart", "-t", "30", container], check=True, capture_output=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        out = sql(container, environment, lab_secret, "SELECT note FROM smoke WHERE id = 1")
        if out.returncode == 0:
            break
        time.sleep(1)
    assert out.stdout.strip() == "kept", out.stderr
    # The firewall came back with the server, and nothing drifted.
    rules = on_server(container, "iptables", "-S", "DOCKER-USER").stdout
    assert "--ctorigdstport 443 -j RETURN" in rules
    run = playbook("site.yml", "-l", "prod")
    assert run.rc == 0, run.output[-4000:]
    assert run.changed() == {"site.com": 0}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("site_environment=staging", "unknown environment 'staging'"),
        ("base_ssh_port=70000", "base_ssh_port must be between 1 and 65535"),
        ("mysql_image=Not/An:Image:!", "mysql_image must be an image reference"),
        ("vault_mysql_app_password=short", "mysql_app_password must have at least 12 characters"),
        ("docker_log_max_file=many", "docker_log_max_file"),
        ("monitoring_alert_for=soon", "monitoring_alert_for must be a Prometheus duration"),
        ("site_topology=swarm", "test_swarm_managers: no manager; a swarm needs 1, 3 or 5 managers"),
        (
            '{"docker_registry_auths": [{"registry": "lab-registry:5000", "username": "montaiguillon"}]}',
            "docker_registry_auths entry 1 (lab-registry:5000) needs registry",
        ),
    ],
)
def test_bad_input_fails_before_any_change(playbook, extra, message):
    run = playbook("site.yml", "-l", "test", "-e", extra)
    assert run.rc != 0
    assert message in run.output
    assert "PLAY [Provision" not in run.output  # no provisioning play started
    assert run.changed() == {"dev.site": 0}


def test_missing_vault_secret_is_named(playbook, tmp_path):
    """An inventory whose secrets file lacks one secret fails in the preflight, naming it."""
    inventory = tmp_path / "lab"
    subprocess.run(["cp", "-a", str(INVENTORY.parent), str(inventory)], check=True)
    secrets = inventory / "group_vars/test/secrets.yml"
    secrets.write_text("".join(line for line in secrets.read_text().splitlines(True) if "app_password" not in line))
    run = playbook("site.yml", "-i", str(inventory / "hosts.yml"), "-l", "test")
    assert run.rc != 0
    assert "missing secret vault_mysql_app_password" in run.output
    assert "PLAY [Provision" not in run.output  # no provisioning play started


PRIVATE_IMAGE = "lab-registry:5000/montaiguillon/proxy:1.22"


def test_registry_refuses_anonymous_pulls():
    """Like a private GHCR package: without the lab's account, no image."""
    container, _ = SERVERS["dev.site"]
    run = on_server(container, "sh", "-c", f"DOCKER_CONFIG=$(mktemp -d) docker pull {PRIVATE_IMAGE}", check=False)
    assert run.returncode != 0
    assert "no basic auth credentials" in run.stderr, run.stderr
    config = on_server(container, "stat", "-c", "%U %a", "/root/.docker/config.json").stdout.split()
    assert config == ["root", "600"]


def test_wrong_registry_password_is_named_and_never_shown(playbook):
    wrong = "Wrong-Registry-Password-4242"
    auth = {"registry": "lab-registry:5000", "username": "montaiguillon", "password": wrong}
    run = playbook("site.yml", "-l", "test", "-t", "docker", "-e", json.dumps({"docker_registry_auths": [auth]}))
    assert run.rc != 0
    assert "registry login(s) failed: lab-registry:5000 as montaiguillon" in run.output, run.output[-3000:]
    assert wrong not in run.output
    # The refused login left the server's good credentials alone.
    again = playbook("site.yml", "-l", "test", "-t", "docker")
    assert again.rc == 0, again.output[-4000:]
    assert again.changed() == {"dev.site": 0}


def test_root_password_the_volume_does_not_know_is_named(playbook):
    """A vault root password that no longer matches the data volume stops the run before any change."""
    wrong = "Wrong-Root-Password-4242"
    run = playbook("site.yml", "-l", "test", "-t", "mysql", "-e", f"vault_mysql_root_password={wrong}")
    assert run.rc != 0
    assert "refuses mysql_root_password" in run.output, run.output[-3000:]
    assert wrong not in run.output
    assert run.changed() == {"dev.site": 0}
    # The server's password file was left alone: the next run with the vault's password is clean.
    again = playbook("site.yml", "-l", "test", "-t", "mysql")
    assert again.rc == 0, again.output[-4000:]
    assert again.changed() == {"dev.site": 0}
