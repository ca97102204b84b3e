"""The Docker engine after the docker role, and the firewall in front of it."""

import json
import time

import pytest
from reach import connects, instance_address

PROBE_IMAGE = "lab-registry:5000/montaiguillon/mariadb:10.11"
# The lab registry refuses anonymous pulls (htpasswd, like a private GHCR package).
REGISTRY = "lab-registry:5000"
PRIVATE_IMAGE = "lab-registry:5000/montaiguillon/proxy:1.22"
SDK_PULL = (
    "python3 -c \"import docker; docker.from_env().api.pull('lab-registry:5000/montaiguillon/proxy', tag='1.22')\""
)


def test_engine_runs_and_starts_at_boot(host):
    docker = host.service("docker")
    assert docker.is_running
    assert docker.is_enabled
    assert host.run("docker info --format '{{.ServerVersion}}'").rc == 0


def test_daemon_settings(host):
    settings = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert settings["live-restore"] is True
    assert settings["log-driver"] == "json-file"
    assert settings["log-opts"] == {"max-size": "10m", "max-file": "5"}
    assert settings["no-new-privileges"] is True
    assert settings["icc"] is False
    effective = json.loads(host.run("docker info --format '{{json .}}'").stdout)
    assert effective["LiveRestoreEnabled"] is True
    assert effective["LoggingDriver"] == "json-file"
    assert effective["Driver"] == "overlay2"  # not the slow vfs fallback


def test_python_sdk_for_modules(host):
    assert host.run("python3 -c 'import docker, requests'").rc == 0


def test_deploy_user_may_use_docker(host):
    assert "docker" in host.user("deploy").groups


def test_registry_credentials_are_for_root_only(host):
    directory = host.file("/root/.docker")
    assert (directory.user, directory.mode) == ("root", 0o700)
    config = host.file("/root/.docker/config.json")
    assert (config.user, config.group, config.mode) == ("root", "root", 0o600)
    assert list(json.loads(config.content_string)["auths"]) == [REGISTRY]


def test_anonymous_pull_is_refused(host):
    host.run(f"docker rmi {PRIVATE_IMAGE}")
    run = host.run(f"DOCKER_CONFIG=$(mktemp -d) docker pull {PRIVATE_IMAGE}")
    assert run.rc != 0
    assert "no basic auth credentials" in run.stderr, run.stderr
    assert host.run(f"docker image inspect {PRIVATE_IMAGE}").rc != 0


@pytest.mark.parametrize("client", ["cli", "sdk"])
def test_pulls_use_the_engine_credentials(host, client):
    """The docker CLI and the Docker SDK (community.docker, bluegreen_release) as root read them."""
    host.run(f"docker rmi {PRIVATE_IMAGE}")
    run = host.run(f"docker pull {PRIVATE_IMAGE}" if client == "cli" else SDK_PULL)
    assert run.rc == 0, run.stderr
    assert host.run(f"docker image inspect {PRIVATE_IMAGE}").rc == 0


@pytest.fixture
def published_container(host):
    """A container inside the server publishing an allowed and a forbidden port."""
    host.run("docker rm -f fw-probe")
    run = host.run(
        f"docker run -d --name fw-probe -e MYSQL_ALLOW_EMPTY_ROOT_PASSWORD=1 -p 80:3306 -p 8082:3306 {PROBE_IMAGE}"
    )
    assert run.rc == 0, run.stderr
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if host.run("docker exec fw-probe mysqladmin ping -h 127.0.0.1 --protocol=tcp --silent").rc == 0:
            break
        time.sleep(1)
    yield
    host.run("docker rm -f fw-probe")


def test_docker_published_ports_obey_the_firewall(host, published_container):
    """The well-known trap: Docker's DNAT bypasses INPUT rules; DOCKER-USER must catch it."""
    address = instance_address(host)
    assert connects(address, 80), "an allowed published port must be reachable"
    assert not connects(address, 8082), "a published port outside the allowed list must be dropped"
    # From the server itself the container still answers on both.
    assert host.run("python3 -c \"import socket; socket.create_connection(('127.0.0.1', 8082), 2)\"").rc == 0


def test_firewall_rules_survive_a_docker_restart(host):
    host.run("systemctl restart docker")
    rules = host.run("iptables -S DOCKER-USER").stdout
    assert "--ctorigdstport 80 -j RETURN" in rules
    assert "-j DROP" in rules
    assert host.run("iptables -C FORWARD -j DOCKER-USER").rc == 0


def test_containers_gain_no_privileges_and_the_default_bridge_is_isolated(host, published_container):
    status = host.run("docker exec fw-probe grep NoNewPrivs /proc/1/status")
    assert status.stdout.split() == ["NoNewPrivs:", "1"], status.stdout + status.stderr
    bridge = json.loads(host.check_output("docker network inspect bridge"))[0]
    assert bridge["Options"]["com.docker.network.bridge.enable_icc"] == "false"
