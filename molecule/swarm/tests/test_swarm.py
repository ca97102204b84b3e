"""Three lab servers after the docker and swarm roles: one swarm, labelled nodes, an encrypted overlay,
and a dnsrr service whose tasks on every node answer across the overlay by name."""

import json
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

IMAGE = "lab-registry:5000/montaiguillon/proxy:1.22"  # nginx, answering on port 80
INSTANCE = os.environ.get("MOLECULE_INSTANCE", "molecule-server")
PROJECT = Path(__file__).resolve().parents[3]
# The lab's load loop (lab/lib/load.py), run on the manager against its own proxy (127.0.0.1 there).
LOAD = """
import json, sys, time
sys.path.insert(0, "/root")
from load import Load
load = Load("https://127.0.0.1/", rate=int(sys.argv[2]), seconds=float(sys.argv[1]), host="site.com",
            cafile="/root/ca.crt")
with load:
    time.sleep(float(sys.argv[1]))
result = load.result
print(json.dumps({"sent": result.sent, "failures": dict(result.failures), "rate": round(result.rate, 1),
                  "summary": result.summary()}))
"""
NETWORK = "montaiguillon_swarm"


def test_the_engine_runs_without_live_restore_which_swarm_refuses(host):
    settings = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert settings["live-restore"] is False
    assert host.check_output("docker info --format '{{.Swarm.LocalNodeState}}'") == "active"


def test_one_manager_leads_two_workers_all_ready(manager):
    nodes = manager.check_output("docker node ls --format '{{.Hostname}} {{.Status}} {{.ManagerStatus}}'")
    assert sorted(line.split(" ", 2) for line in nodes.splitlines()) == [
        ["swarm1", "Ready", "Leader"],
        ["swarm2", "Ready", ""],
        ["swarm3", "Ready", ""],
    ]


def test_the_database_label_is_on_the_node_the_inventory_names_only(manager):
    labels = {
        node: json.loads(manager.check_output(f"docker node inspect {node} --format '{{{{json .Spec.Labels}}}}'"))
        for node in ("swarm1", "swarm2", "swarm3")
    }
    assert labels == {"swarm1": {"montaiguillon.database": "true"}, "swarm2": {}, "swarm3": {}}


@pytest.mark.parametrize(("name", "encrypted"), [(NETWORK, False), ("montaiguillon_sealed", True)])
def test_the_networks_are_attachable_overlays_encrypted_as_the_inventory_says(manager, name, encrypted):
    network = json.loads(manager.check_output(f"docker network inspect {name}"))[0]
    assert (network["Driver"], network["Scope"], network["Attachable"]) == ("overlay", "swarm", True)
    assert ("encrypted" in (network["Options"] or {})) is encrypted


def test_a_dnsrr_service_answers_from_every_node_across_the_overlay(manager):
    """What the site's service will stand on: no IPVS on these kernels, so no VIP; nginx resolves the tasks."""
    manager.run("docker service rm probe")
    manager.check_output(
        f"docker service create --detach --name probe --mode global --endpoint-mode dnsrr --network {NETWORK} "
        f"--with-registry-auth {IMAGE}"
    )
    try:
        deadline = time.monotonic() + 120
        running = []
        while time.monotonic() < deadline:
            states = manager.check_output(
                "docker service ps probe --filter desired-state=running --format '{{.Node}} {{.CurrentState}}'"
            )
            running = sorted(line.split()[0] for line in states.splitlines() if " Running " in f" {line} ")
            if running == ["swarm1", "swarm2", "swarm3"]:
                break
            time.sleep(1)
        assert running == ["swarm1", "swarm2", "swarm3"]
        # Each task by its address, 5 s each: an unreachable one answers nothing rather than hanging.
        ask = "exec 3<>/dev/tcp/\\$0/80 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && head -1 <&3"
        script = (
            "for ip in $(getent ahostsv4 tasks.probe | awk '{print $1}' | sort -u); do "
            f'echo "$ip $(timeout 5 bash -c "{ask}" $ip)"; done'
        )
        # A task counts as running once started; its name and route reach the other nodes by gossip
        # within seconds: ask until every task answers, for at most 30 s.
        deadline = time.monotonic() + 30
        while True:
            answers = manager.check_output(
                f"docker run --rm --network {NETWORK} --entrypoint bash {IMAGE} -c %s", script
            ).splitlines()
            served = [answer for answer in answers if answer.split(" ", 1)[-1].startswith("HTTP/1.1 200")]
            if len(served) == 3 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert len(answers) == 3 and served == answers, answers
    finally:
        manager.run("docker service rm probe")


# --- the release module's swarm engine (converge deployed `web`, a stand-in app) ----------------------------

RELEASE = {
    "topology": "swarm",
    "name": "web",
    "image": IMAGE,
    "replicas": 3,
    "networks": [NETWORK],
    "port": 80,
    "healthcheck_command": ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/80"],
    "health_timeout": 8,
    "env": {"RELEASE_NOTE": "first"},
    "secret_files": {"WEB_TOKEN": "molecule-not-a-secret"},
    "verify_url": "",
    "confinement": {"capabilities": ["CHOWN", "SETUID", "SETGID", "NET_BIND_SERVICE", "DAC_OVERRIDE"]},
    "requested_by": "molecule",
}


def service(manager, name="web"):
    return json.loads(manager.check_output(f"docker service inspect {name}"))[0]


def running_tasks(manager, name="web"):
    lines = manager.check_output(
        f"docker service ps {name} --filter desired-state=running --format '{{{{.Node}}}} {{{{.CurrentState}}}}'"
    )
    return sorted(line.split()[0] for line in lines.splitlines() if " Running " in f" {line} ")


def release_module(manager, **overrides):
    return manager.ansible("bluegreen_release", json.dumps({**RELEASE, **overrides}), check=False)


def test_the_release_is_a_dnsrr_service_by_digest_rolled_out_start_first_with_rollback(manager):
    spec = service(manager)["Spec"]
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Image"].startswith("lab-registry:5000/montaiguillon/proxy@sha256:")
    assert spec["EndpointSpec"]["Mode"] == "dnsrr"
    assert spec["Mode"]["Replicated"]["Replicas"] == 3
    update = spec["UpdateConfig"]
    assert (update["Order"], update["FailureAction"], update["Parallelism"]) == ("start-first", "rollback", 1)
    # created on three nodes; a later start-first rollout may leave two tasks on one node
    assert len(running_tasks(manager)) == 3 and len(set(running_tasks(manager))) >= 2


def test_the_secret_is_a_docker_secret_mounted_as_a_file_never_in_the_spec(manager):
    inspect = manager.check_output("docker service inspect web")
    assert "molecule-not-a-secret" not in inspect
    env = service(manager)["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
    assert "WEB_TOKEN_FILE=/run/secrets/WEB_TOKEN" in env
    task = manager.check_output("docker ps --filter label=com.docker.swarm.service.name=web --format '{{.ID}}'")
    content = manager.check_output(f"docker exec {task.splitlines()[0]} cat /run/secrets/WEB_TOKEN")
    assert content == "molecule-not-a-secret"


def test_a_new_release_rolls_out_a_broken_one_is_rolled_back_and_rollback_returns(manager):
    first = service(manager)["Spec"]["Labels"]["montaiguillon.release"]

    second = release_module(manager, env={"RELEASE_NOTE": f"second {time.time()}"})
    assert second["changed"] is True, second.get("msg")
    assert service(manager)["Spec"]["Labels"]["montaiguillon.release"] == second["release"]["release"]
    # start-first places each new task while the old one still runs: the spread may end uneven
    assert len(running_tasks(manager)) == 3

    broken = release_module(manager, env={"RELEASE_NOTE": "broken"}, healthcheck_command=["false"])
    assert broken.get("release", {}).get("outcome") == "rolled_back", broken
    assert "Swarm rolled the service back" in broken["msg"]
    assert service(manager)["Spec"]["Labels"]["montaiguillon.release"] == second["release"]["release"]
    assert len(running_tasks(manager)) == 3

    back = release_module(manager, state="rolled_back")
    assert back["changed"] is True, back.get("msg")
    assert service(manager)["Spec"]["Labels"]["montaiguillon.release"] == first
    outcomes = [
        json.loads(line)["outcome"]
        for line in manager.file("/var/lib/montaiguillon/web/releases.jsonl").content_string.splitlines()
    ]
    assert outcomes[-3:] == ["success", "rolled_back", "rollback"]


# --- under load, through the proxy -----------------------------------------------------------------------


@contextmanager
def load_on(manager, seconds, rate=200):
    """A bounded load on the manager's proxy (HTTPS on its 127.0.0.1) while the block runs; yields its result."""
    node = f"{INSTANCE}-swarm1"
    for source, target in (
        (PROJECT / "lab/lib/load.py", "/root/load.py"),
        (PROJECT / "inventories/lab/.generated/tls/ca.crt", "/root/ca.crt"),
    ):
        subprocess.run(["docker", "cp", str(source), f"{node}:{target}"], check=True)
    manager.run(f"cat > /root/run_load.py <<'EOF'\n{LOAD}\nEOF")
    process = subprocess.Popen(
        ["docker", "exec", node, "python3", "/root/run_load.py", str(seconds), str(rate)],
        stdout=subprocess.PIPE,
        text=True,
    )
    result = {}
    try:
        yield result
    finally:
        out, _ = process.communicate(timeout=seconds + 60)
        result.update(json.loads(out.strip().splitlines()[-1]))


def test_a_rollout_under_load_fails_no_request(manager):
    with load_on(manager, seconds=25) as load:
        time.sleep(2)
        rolled = release_module(manager, env={"RELEASE_NOTE": f"under load {time.time()}"})
        assert rolled["changed"] is True, rolled.get("msg")
    print(f"rollout under load: {load['summary']}")
    assert load["sent"] > 0 and load["failures"] == {}, load["summary"]
    assert load["rate"] >= 190, load["summary"]
