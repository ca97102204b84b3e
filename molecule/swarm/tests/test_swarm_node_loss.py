"""Losing a worker under load (its own file: it kills a node, so it runs after every test of test_swarm.py)."""

import subprocess
import time

from test_swarm import INSTANCE, load_on, running_tasks


def test_a_worker_lost_under_load_fails_no_request_and_the_service_comes_back_to_three_tasks(manager):
    """Kills swarm3 (the scenario is destroyed next)."""
    with load_on(manager, seconds=30) as load:
        time.sleep(2)
        subprocess.run(["docker", "kill", f"{INSTANCE}-swarm3"], check=True, capture_output=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            survivors = running_tasks(manager)
            if len(survivors) == 3 and "swarm3" not in survivors:
                break
            time.sleep(1)
    print(f"worker lost under load: {load['summary']}; tasks on {survivors}")
    assert len(survivors) == 3 and set(survivors) <= {"swarm1", "swarm2"}, survivors
    assert load["sent"] > 0 and load["failures"] == {}, load["summary"]
