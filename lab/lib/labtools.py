"""Helpers for tests that run against the local lab (make lab-up)."""

import contextlib
import json
import os
import re
import subprocess
import tempfile
import time
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
        ["ansible-playbook", *([] if "-i" in args else ["-i", str(INVENTORY)]), *args],
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


def release(version, env=None):
    """`make release VERSION=version`: build and publish the site image; return the digest REF."""
    proc = subprocess.run(
        ["lab/bin/release", version],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return proc.stdout.strip().splitlines()[-1]


def derived_release(base_version, tag, dockerfile_tail, files=None, registry=None, pull="lab-registry:5000"):
    """Publish an image derived from a released one (a broken release, a bad migration); return its REF.

    Pushes where lab/bin/release does (REGISTRY_PUSH, a second lab's port);
    release() has logged Docker in to that registry already.
    """
    registry = registry or os.environ.get("REGISTRY_PUSH", "127.0.0.1:5000")
    with tempfile.TemporaryDirectory() as context:
        base = f"{registry}/montaiguillon/site:{base_version}"
        Path(context, "Dockerfile").write_text(f"FROM {base}\n{dockerfile_tail}\n")
        for name, content in (files or {}).items():
            Path(context, name).write_text(content)
        image = f"{registry}/montaiguillon/site:{tag}"
        subprocess.run(["docker", "build", "-q", "-t", image, context], check=True, capture_output=True)
    return _publish(image, registry, "site", pull)


def foreign_release(context, name, tag, build_args=None, registry=None, pull="lab-registry:5000"):
    """Build an image from a directory (a site that is not ours), publish it to the lab registry; its REF."""
    registry = registry or os.environ.get("REGISTRY_PUSH", "127.0.0.1:5000")
    image = f"{registry}/montaiguillon/{name}:{tag}"
    args = [item for key, value in (build_args or {}).items() for item in ("--build-arg", f"{key}={value}")]
    subprocess.run(["docker", "build", "-q", "-t", image, *args, str(context)], check=True, capture_output=True)
    return _publish(image, registry, name, pull)


def _publish(image, registry, name, pull):
    """Push ``image`` to the lab registry; the REF the servers pull it by (its digest)."""
    subprocess.run(["docker", "push", "-q", image], check=True, capture_output=True)
    digests = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{range .RepoDigests}}{{println .}}{{end}}", image],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    digest = next(d for d in digests if d.startswith(f"{registry}/montaiguillon/{name}@")).split("@")[1]
    return f"{pull}/montaiguillon/{name}@{digest}"


UPSTREAM_FILE = "/etc/montaiguillon/proxy/conf.d/app-upstream.conf"


def live_colour(host):
    """The colour the proxy of ``host`` sends the site's traffic to (its upstream file)."""
    return "blue" if "app-blue" in on_server(container(host), "cat", UPSTREAM_FILE).stdout else "green"


def live_image_ref(host):
    """The image reference the live slot of ``host`` was deployed from (its montaiguillon.image label)."""
    inspect = on_server(container(host), "docker", "inspect", f"app-{live_colour(host)}").stdout
    return json.loads(inspect)[0]["Config"]["Labels"]["montaiguillon.image"]


@contextlib.contextmanager
def foreign_versions(context, name, host="dev.site", group="test"):
    """Two versions (SITE_VERSION 1 and 2) of a site that is not ours, published; afterwards ``host``
    serves again the release it served before."""
    before = live_image_ref(host)
    tag = str(int(time.time()))
    yield {v: foreign_release(context, name, f"{tag}-{v}", {"SITE_VERSION": v}) for v in ("1", "2")}
    restored = ansible_playbook("deploy.yml", "-l", group, "-e", f"app_image={before}")
    if restored.rc != 0:
        raise RuntimeError(f"could not put back {before} on {host}:\n{restored.output[-3000:]}")
