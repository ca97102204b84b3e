#!/usr/bin/env python3
"""Provisioning benchmark: lab up, first site.yml, second (idempotent) site.yml, cold and warm.

cold: the lab's images (server, MariaDB, proxy, registry) removed, no lab
      containers or volumes, no fact cache: everything is built and installed.
warm: images already built; the lab's containers and volumes removed (fresh
      servers), fact cache emptied: what `make lab` costs on a used machine.
The second run of site.yml must report changed=0. Ratios are against the
first provision measured in the same pass.

Usage: benchmarks/provision.py [--skip-cold]   (destroys and rebuilds the default lab)
"""

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lab/lib"))

from labtools import ansible_playbook  # noqa: E402

LAB_IMAGES = [
    "montaiguillon/lab-server:bookworm",
    "montaiguillon/mariadb:10.11",
    "montaiguillon/proxy:1.22",
    "montaiguillon/lab-registry:2",
]
TARGETS = {"lab up": 60.0, "second site.yml": 60.0}


def step(name, *args):
    started = time.monotonic()
    run = ansible_playbook(*args)
    took = time.monotonic() - started
    if run.rc != 0:
        sys.exit(f"{name} failed:\n{run.output[-3000:]}")
    return took, run


def one_pass(cold):
    step("lab down", "playbooks/lab.yml", "-e", "lab_state=absent")
    if cold:
        subprocess.run(["docker", "rmi", "-f", *LAB_IMAGES], capture_output=True, check=False)
        subprocess.run(["docker", "builder", "prune", "-af"], capture_output=True, check=False)
    shutil.rmtree(ROOT / ".cache/facts", ignore_errors=True)
    up, _ = step("lab up", "playbooks/lab.yml")
    first, _ = step("first site.yml", "site.yml")
    second, run = step("second site.yml", "site.yml")
    changed = sum(run.changed().values())
    return {"lab up": up, "first site.yml": first, "second site.yml": second, "changed": changed}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-cold", action="store_true", help="only the warm pass")
    opts = parser.parse_args()
    passes = {}
    if not opts.skip_cold:
        print("cold pass (rebuilding every lab image) ...", flush=True)
        passes["cold"] = one_pass(cold=True)
    print("warm pass ...", flush=True)
    passes["warm"] = one_pass(cold=False)

    print(f"\n{'step':<18}" + "".join(f"{name:>12}" for name in passes) + "   target")
    for key in ("lab up", "first site.yml", "second site.yml"):
        target = f"< {TARGETS[key]:.0f} s (warm)" if key in TARGETS else ""
        print(f"{key:<18}" + "".join(f"{p[key]:>11.1f}s" for p in passes.values()) + f"   {target}")
    print(f"{'second run changed':<18}" + "".join(f"{p['changed']:>12}" for p in passes.values()) + "   0")
    for name, p in passes.items():
        print(f"{name}: second run takes {p['second site.yml'] / p['first site.yml']:.2f}x the first")
    warm = passes["warm"]
    ok = warm["changed"] == 0 and all(warm[k] < v for k, v in TARGETS.items())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
