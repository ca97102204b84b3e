#!/usr/bin/env python3
"""Swarm benchmark on the lab's three-node site.com (make lab TOPOLOGY=swarm): issue 18's targets, in one run.

Prints: a deploy of an image already pulled on every node (3 tasks; the whole
ansible-playbook run and the rollout inside it), failed requests and the rate
reached during it, during a rollback and while a worker is killed (and how
long until the service runs 3 tasks on the survivors). Baseline measured in the
same run, same load: the same rollout done the way `docker service update`
does it by default (stop-first, the image's own 10 s health-check interval,
no rollback), to show what start-first and the 1 s health interval buy.

Usage: benchmarks/swarm.py [--rate 200]   (needs `make lab TOPOLOGY=swarm`)
"""

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lab/lib"))

from labtools import INVENTORY, ansible_playbook, container, on_server, release  # noqa: E402
from load import Load  # noqa: E402

MANAGER, WORKER = "site.com", "node3.site.com"
URL, CA = "https://127.0.0.1:9443/", INVENTORY.parent / ".generated/tls/ca.crt"
SWARM = ("-i", str(INVENTORY), "-i", str(INVENTORY.parent / "swarm.yml"))


def manager(*command):
    return on_server(container(MANAGER), *command).stdout.strip()


def playbook(name, *args):
    started = time.monotonic()
    run = ansible_playbook(name, *SWARM, "-l", "prod", *args)
    if run.rc != 0:
        sys.exit(f"{name} failed:\n{run.output[-3000:]}")
    return run, time.monotonic() - started


def step_seconds(run, step):
    found = re.search(rf'"{re.escape(step)}\s+([\d.]+) s ', run.output)
    return float(found[1]) if found else 0.0


def running_tasks():
    lines = manager(
        "docker", "service", "ps", "app", "--filter", "desired-state=running", "--format", "{{.Node}} {{.CurrentState}}"
    )
    return [line.split()[0] for line in lines.splitlines() if " Running " in f" {line} "]


def under_load(rate, action):
    """Run ``action`` 2 s into a load: (its result, seconds, the load's result)."""
    with Load(URL, rate=rate, seconds=400, cafile=str(CA), host=MANAGER, workers=rate) as traffic:
        time.sleep(2)
        started = time.monotonic()
        out = action()
        took = time.monotonic() - started
        time.sleep(2)
    return out, took, traffic.stop()


def naive_update(image):
    """What `docker service update --image` does with Swarm's defaults and the image's own health check."""
    manager(
        "docker",
        "service",
        "update",
        "--quiet",
        "--detach",
        "--image",
        image,
        "--update-order",
        "stop-first",
        "--update-failure-action",
        "pause",
        "--health-interval",
        "10s",
        "--health-start-period",
        "30s",
        "--with-registry-auth",
        "app",
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = manager("docker", "service", "inspect", "app", "--format", "{{.UpdateStatus.State}}")
        if state in ("completed", "paused", "rollback_completed"):
            return state
        time.sleep(0.5)
    return "timed out"


def lose_worker():
    subprocess.run(["docker", "kill", container(WORKER)], check=True, capture_output=True)
    killed = time.monotonic()
    while time.monotonic() - killed < 120:
        tasks = running_tasks()
        if len(tasks) == 3 and WORKER not in tasks:
            return time.monotonic() - killed
        time.sleep(0.5)
    return None


def bring_back():
    subprocess.run(["docker", "start", container(WORKER)], check=True, capture_output=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        state = manager("docker", "node", "inspect", WORKER, "--format", "{{.Status.State}}")
        if state == "ready":
            return
        time.sleep(1)
    sys.exit(f"{WORKER} did not rejoin the swarm")


def row(name, value, target, met=None):
    return name, value, target, "" if met is None else ("met" if met else "NOT MET")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=200, help="requests per second through site.com's proxy")
    args = parser.parse_args()
    if manager("docker", "info", "--format", "{{.Swarm.ControlAvailable}}") != "true":
        sys.exit("site.com is not a swarm manager: bring the lab up with `make lab TOPOLOGY=swarm`")
    suffix = str(int(time.time()))
    refs = {name: release(f"bench-{suffix}-{name}") for name in ("a", "b")}
    print("releases built; a, then b, then a again: every node has pulled both")
    for name in ("a", "b", "a"):
        playbook("deploy.yml", "-e", f"app_image={refs[name]}")

    run, deploy_seconds, deployed = under_load(
        args.rate, lambda: playbook("deploy.yml", "-e", f"app_image={refs['b']}")[0]
    )
    rollout = step_seconds(run, "rollout")
    ledger = json.loads(manager("tail", "-n", "1", "/var/lib/montaiguillon/app/releases.jsonl"))
    (_, rollback_seconds), _, rolled = under_load(args.rate, lambda: playbook("rollback.yml"))
    naive_image = ledger["image"]  # b by digest, from a
    naive_state, naive_seconds, naive = under_load(args.rate, lambda: naive_update(naive_image))
    playbook("deploy.yml", "-e", f"app_image={refs['b']}")  # the service back to the module's own spec
    try:
        recovered, _, lost = under_load(args.rate, lose_worker)
    finally:
        bring_back()

    rows = [
        row("deploy, image already on the nodes (3 tasks)", f"{deploy_seconds:.1f} s", "<= 30 s", deploy_seconds <= 30),
        row("  of which Swarm's rollout", f"{rollout:.1f} s", "-"),
        row("  naive rollout (stop-first, 10 s health)", f"{naive_seconds:.1f} s ({naive_state})", "-"),
        row("  ours / naive rollout time", f"{rollout / naive_seconds:.2f}x", "report"),
        row("failed requests, deploy", f"{deployed.failed} of {deployed.sent}", "0", deployed.failed == 0),
        row("failed requests, naive rollout", f"{naive.failed} of {naive.sent}", "-"),
        row(
            "failed requests, rollback",
            f"{rolled.failed} of {rolled.sent} ({rollback_seconds:.1f} s)",
            "0",
            rolled.failed == 0,
        ),
        row("failed requests, a worker killed", f"{lost.failed} of {lost.sent}", "0", lost.failed == 0),
        row("  3 tasks on the survivors after", f"{recovered:.1f} s" if recovered else "never", "report"),
        row(
            "request rate reached (deploy)",
            f"{deployed.rate:.0f}/s",
            f">= {args.rate * 0.9:.0f}/s",
            deployed.rate >= args.rate * 0.9,
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  {'value':>24}  {'target':<9}")
    for name, value, target, met in rows:
        print(f"{name:<{width}}  {value:>24}  {target:<9} {met}".rstrip())
    for what, result in (("deploy", deployed), ("rollback", rolled), ("worker killed", lost), ("naive", naive)):
        window = result.failure_window()
        if window:
            print(f"{what}: failed {dict(result.failures)} between {window[0]:.1f} s and {window[1]:.1f} s of the load")
    return 0 if not (deployed.failed or rolled.failed or lost.failed) and deploy_seconds <= 30 else 1


if __name__ == "__main__":
    raise SystemExit(main())
