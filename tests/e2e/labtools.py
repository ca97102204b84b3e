"""Helpers for tests that run against the local lab (make lab-up)."""

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Which lab the tests drive: the default one, or a second one for parallel
# work (LAB_INVENTORY=/path/hosts.yml LAB_PREFIX=lab2, with its own ports).
INVENTORY = Path(os.environ.get("LAB_INVENTORY", ROOT / "inventories/lab/hosts.yml"))
PREFIX = os.environ.get("LAB_PREFIX", "lab")


def container(host):
    """Name of the lab container standing in for an inventory host (dev.site -> lab-dev-site)."""
    return f"{PREFIX}-{host.replace('.', '-')}"


RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)"
    r"\s+unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)"
)


class Run:
    def __init__(self, proc):
        self.rc = proc.returncode
        self.output = proc.stdout
        self.recap = {
            m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
            for m in map(RECAP.match, self.output.splitlines())
            if m
        }

    def changed(self):
        return {host: r["changed"] for host, r in self.recap.items()}


def ansible_playbook(*args, env=None):
    """Run ansible-playbook from the repository root; return rc, output and recap."""
    full_env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", **(env or {})}
    proc = subprocess.run(
        ["ansible-playbook", "-i", str(INVENTORY), *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1800,
        check=False,
    )
    return Run(proc)


def on_server(container, *command, check=True):
    """Run a command on a lab server (as root, through docker exec on the host)."""
    return subprocess.run(["docker", "exec", container, *command], capture_output=True, text=True, check=check)
