#!/usr/bin/env python3
"""Hardening benchmark: Lynis's hardening index of the lab servers after site.yml, against stock Debian.

Runs `lynis audit system --quick` (Debian's lynis, copied from this machine
into each container, so nothing is installed on the servers) in:

    stock      a fresh debian:bookworm container this benchmark starts (the baseline)
    dev.site   lab-dev-site, as `make lab` left it
    site.com   lab-site-com

and prints each hardening index, its ratio to the baseline measured in the
same run, the target (80), and the suggestions Lynis left open on site.com
(their ids; docs/security.md says why each stays). All three are containers:
Lynis skips the same kernel and boot tests in each, so the figures compare.
The full results go to benchmarks/results/hardening.json.

Usage: benchmarks/hardening.py [--json]      (needs `make lab` and `apt-get install lynis`)
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "hardening.json"
TARGET_INDEX = 80
STOCK_IMAGE = "debian:bookworm"
STOCK_NAME = "bench-hardening-stock"
SERVERS = {"dev.site": "lab-dev-site", "site.com": "lab-site-com"}
LYNIS_FILES = ["/usr/sbin/lynis", "/usr/share/lynis", "/etc/lynis"]
REPORT = "/root/lynis-report.dat"  # inside the audited container
LOG = "/root/lynis.log"


def docker(*args, check=True):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def parse_report(text):
    """Hardening index, warnings and suggestions (id, text) from a lynis-report.dat."""
    index = re.search(r"^hardening_index=(\d+)$", text, re.M)
    if index is None:
        raise ValueError("the Lynis report has no hardening_index line")

    def entries(kind):
        return [tuple(line.split("|")[:2]) for line in re.findall(rf"^{kind}\[\]=(.*)$", text, re.M)]

    return {"index": int(index.group(1)), "warnings": entries("warning"), "suggestions": entries("suggestion")}


def audit(container):
    """Copy Lynis in, run the quick audit, read its report back."""
    for path in LYNIS_FILES:
        docker("exec", container, "mkdir", "-p", str(Path(path).parent))
        docker("cp", path, f"{container}:{Path(path).parent}")
    started = time.monotonic()
    run = docker(
        "exec", "-w", "/usr/share/lynis", container, "lynis", "audit", "system", "--quick", "--no-colors",
        "--report-file", REPORT, "--logfile", LOG, check=False,
    )  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"lynis failed in {container}: {run.stderr[-500:] or run.stdout[-500:]}")
    report = parse_report(docker("exec", container, "cat", REPORT).stdout)
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def stock_baseline():
    docker("rm", "-f", STOCK_NAME, check=False)
    docker("run", "-d", "--name", STOCK_NAME, STOCK_IMAGE, "sleep", "600")
    try:
        return audit(STOCK_NAME)
    finally:
        docker("rm", "-f", STOCK_NAME, check=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if not shutil.which("lynis"):
        sys.exit("hardening: lynis is not installed here (apt-get install lynis); nothing was measured")
    running = docker("ps", "--format", "{{.Names}}").stdout.split()
    missing = [name for name in SERVERS.values() if name not in running]
    if missing:
        sys.exit(f"hardening: lab servers not running: {', '.join(missing)} (make lab); nothing was measured")
    results = {"stock": stock_baseline()}
    for label, container in SERVERS.items():
        results[label] = audit(container)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    base = results["stock"]["index"]
    print(f"{'system':<10} {'index':>5} {'vs stock':>8} {'target':>6}  warnings  suggestions")
    for label, result in results.items():
        verdict = "ok" if result["index"] >= TARGET_INDEX else "below"
        print(
            f"{label:<10} {result['index']:>5} {result['index'] / base:>7.2f}x {TARGET_INDEX:>6}  "
            f"{len(result['warnings']):>8}  {len(result['suggestions']):>11}  {verdict if label != 'stock' else ''}"
        )
    print("open on site.com: " + ", ".join(sorted({s[0] for s in results["site.com"]["suggestions"]})))
    print(f"details: {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
