"""site.com as a three-node swarm (`make lab TOPOLOGY=swarm`): deploys, a rollback and lost nodes, under load.

Skipped unless the lab was brought up with TOPOLOGY=swarm: CI's lab is one server per
environment, and molecule/swarm proves the engine, the proxy and a lost worker on every run.
Run with `make e2e-swarm` on a swarm lab. Traffic goes to site.com's proxy on 127.0.0.1:9443.
"""

import json
import re
import subprocess
import threading
import time

import pytest
from labtools import INVENTORY, on_server, release
from labtools import container as lab_container
from load import Load

MANAGER, WORKERS = "site.com", ("node2.site.com", "node3.site.com")
SWARM_INVENTORY = ("-i", str(INVENTORY), "-i", str(INVENTORY.parent / "swarm.yml"))
CA = INVENTORY.parent / ".generated/tls/ca.crt"
PROD_URL, RATE = "https://127.0.0.1:9443/", 200


def _swarm_lab():
    try:
        state = on_server(lab_container(MANAGER), "docker", "info", "--format", "{{.Swarm.ControlAvailable}}").stdout
    except (subprocess.CalledProcessError, OSError):
        return False
    return state.strip() == "true"


pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not _swarm_lab(), reason="the lab is not a swarm (make lab TOPOLOGY=swarm)"),
]


@pytest.fixture(scope="module")
def refs():
    suffix = str(int(time.time()))
    return {name: (f"swarm-{suffix}-{name}", release(f"swarm-{suffix}-{name}")) for name in ("v1", "v2", "v3")}


def run(playbook, name, *args):
    return playbook(name, *SWARM_INVENTORY, *args)


def deploy(playbook, ref):
    return run(playbook, "deploy.yml", "-l", "prod", "-e", f"app_image={ref}")


def load(seconds=240):
    # Enough connections that requests held up by a dead node (up to proxy_swarm_read_timeout) do not
    # lower the rate offered to the others.
    return Load(PROD_URL, rate=RATE, seconds=seconds, cafile=str(CA), host=MANAGER, workers=RATE)


def tasks():
    """Hostnames of the nodes running the app's tasks (one per task)."""
    lines = on_server(
        lab_container(MANAGER),
        "docker",
        "service",
        "ps",
        "app",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Node}} {{.CurrentState}}",
    ).stdout
    return sorted(line.split()[0] for line in lines.splitlines() if " Running " in f" {line} ")


def wait_for(check, seconds=90):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    return check()


def node_ready(host):
    state = on_server(lab_container(MANAGER), "docker", "node", "inspect", host, "--format", "{{.Status.State}}").stdout
    return state.strip() == "ready"


def bring_back(host):
    subprocess.run(["docker", "start", lab_container(host)], check=True, capture_output=True)
    assert wait_for(lambda: node_ready(host), 120), f"{host} did not rejoin the swarm"


def assert_no_failure(result, allowed, event=None):
    print(result.summary())
    window = result.failure_window()
    if window and event is not None:
        print(f"failed from {window[0] - event:+.2f} s to {window[1] - event:+.2f} s after the node was killed")
    assert result.failed == 0, result.summary()
    assert set(result.versions) <= set(allowed), result.summary()
    assert result.rate >= RATE * 0.9, f"the load fell below {RATE * 0.9:.0f}/s: {result.summary()}"


def served_version():
    with load(seconds=2) as probe:
        time.sleep(0.5)
    result = probe.stop()
    assert result.failed == 0, result.summary()
    return result.last_versions(1)[0]


def test_the_site_runs_as_three_tasks_spread_over_the_nodes(playbook, refs):
    version, ref = refs["v1"]
    result = deploy(playbook, ref)
    assert result.rc == 0, result.output[-3000:]
    assert len(tasks()) == 3
    assert served_version() == version


def test_a_deploy_under_load_fails_no_request(playbook, refs):
    (v1, _), (v2, ref) = refs["v1"], refs["v2"]
    with load() as traffic:
        time.sleep(2)
        started = time.monotonic()
        result = deploy(playbook, ref)
        seconds = time.monotonic() - started
        time.sleep(2)
    assert result.rc == 0, result.output[-3000:]
    print(f"deploy of 3 tasks: {seconds:.1f} s (ansible-playbook included)")
    assert_no_failure(traffic.stop(), {v1, v2})
    assert served_version() == v2


def test_a_rollback_under_load_fails_no_request(playbook, refs):
    (v1, _), (v2, _) = refs["v1"], refs["v2"]
    with load() as traffic:
        time.sleep(2)
        result = run(playbook, "rollback.yml", "-l", "prod")
        time.sleep(2)
    assert result.rc == 0, result.output[-3000:]
    assert_no_failure(traffic.stop(), {v1, v2})
    assert served_version() == v1


def test_backup_restore_and_drill_work_against_the_swarm_s_database(playbook):
    """The database stays on site.com: the same verbs; a restore stops the service's tasks on every node."""
    backup = run(playbook, "backup.yml", "-l", "prod")
    assert backup.rc == 0, backup.output[-3000:]
    backup_id = re.search(r"Backup (\S+) of database montaiguillon on site\.com", backup.output)[1]
    on_nodes = run(playbook, "restore.yml", "-l", WORKERS[0], "-e", "restore_confirm=yes")
    assert on_nodes.rc != 0 and f"does not hold prod's database: restore on {MANAGER}" in on_nodes.output
    restored = run(
        playbook, "restore.yml", "-l", MANAGER, "-e", f"restore_backup={backup_id}", "-e", "restore_confirm=yes"
    )
    assert restored.rc == 0, restored.output[-3000:]
    assert "app (the Swarm service, scaled to 0)" in restored.output
    assert len(tasks()) == 3
    assert served_version()
    drill = run(playbook, "playbooks/backup_drill.yml", "-l", "prod")
    assert drill.rc == 0, drill.output[-3000:]


def test_a_worker_killed_mid_deploy_fails_no_request(playbook, refs):
    (v1, _), (v3, ref) = refs["v1"], refs["v3"]
    outcome = {}
    with load() as traffic:
        time.sleep(2)
        deploying = threading.Thread(target=lambda: outcome.update(run=deploy(playbook, ref)))
        deploying.start()
        time.sleep(6)
        subprocess.run(["docker", "kill", lab_container(WORKERS[1])], check=True, capture_output=True)
        deploying.join()
        back = wait_for(lambda: len(tasks()) == 3 and WORKERS[1] not in tasks())
        time.sleep(2)
    result = traffic.stop()
    try:
        assert back, f"the service did not come back to 3 tasks on the survivors: {tasks()}"
        assert_no_failure(result, {v1, v3})
        # Swarm either finished the rollout on the survivors or rolled it back: either way, one release serves.
        ledger = on_server(lab_container(MANAGER), "tail", "-1", "/var/lib/montaiguillon/app/releases.jsonl").stdout
        print(f"deploy with a worker killed: {json.loads(ledger)['outcome']}")
    finally:
        bring_back(WORKERS[1])


def test_a_worker_killed_at_rest_fails_no_request():
    placed = tasks()
    worker = max(WORKERS, key=placed.count)  # the worker running the most tasks
    assert placed.count(worker) > 0, f"no task on a worker to lose: {placed}"
    with load(seconds=60) as traffic:
        time.sleep(2)
        killed = traffic.elapsed()
        subprocess.run(["docker", "kill", lab_container(worker)], check=True, capture_output=True)
        back = wait_for(lambda: len(tasks()) == 3 and worker not in tasks())
        time.sleep(2)
    result = traffic.stop()
    try:
        assert back, f"the service did not come back to 3 tasks on the survivors: {tasks()}"
        print(f"{worker} killed with {placed.count(worker)} of the 3 tasks")
        assert_no_failure(result, set(result.versions), killed)
    finally:
        bring_back(worker)
