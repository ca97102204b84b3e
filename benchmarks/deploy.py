#!/usr/bin/env python3
"""Deploy benchmark on the lab (site.com): zero downtime against a naive re-create, in one run.

Prints: failed requests during our blue/green deploy vs during a naive
in-place re-create of the same release (the baseline, measured in the same
run under the same load), deploy wall time, traffic-switch time, rollback
time, a no-change deploy, a deploy of an image already on the server, and
Ansible's share of the deploy time. The site boots in APP_BOOT_DELAY seconds
(default 2) so that a re-create really costs traffic.

Usage: benchmarks/deploy.py [--rate 200] [--boot-delay 2]   (needs `make lab`)
"""

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lab/lib"))

from labtools import ansible_playbook, container, on_server, release  # noqa: E402
from load import Load  # noqa: E402

HOST, URL = "site.com", "https://127.0.0.1:9443/"
CA = ROOT / "inventories/lab/.generated/tls/ca.crt"
SERVER = container(HOST)


def timed(fn, *args):
    started = time.monotonic()
    out = fn(*args)
    return out, time.monotonic() - started


def deploy(ref, boot_delay, *extra):
    run = ansible_playbook(
        "deploy.yml",
        "-l",
        "prod",
        "-e",
        f"app_image={ref}",
        "-e",
        json.dumps({"app_extra_environment": {"APP_BOOT_DELAY": str(boot_delay)}}),
        *extra,
    )
    if run.rc != 0:
        sys.exit(f"deploy of {ref} failed:\n{run.output[-3000:]}")
    return run


def step_seconds(run, step):
    """Seconds of one step of the deploy's story (the module's printed steps), 0 when absent."""
    found = re.search(rf'"{re.escape(step)}\s+([\d.]+) s ', run.output)
    return float(found[1]) if found else 0.0


def ledger_last():
    text = on_server(SERVER, "tail", "-n", "1", "/var/lib/montaiguillon/app/releases.jsonl").stdout
    return json.loads(text)


def live_container():
    upstream = on_server(SERVER, "cat", "/etc/montaiguillon/proxy/conf.d/app-upstream.conf").stdout
    return "app-blue" if "app-blue" in upstream else "app-green"


def naive_recreate(name):
    """What a hand-made deploy does: stop and remove the container, start it again with the same settings."""
    info = json.loads(on_server(SERVER, "docker", "inspect", name).stdout)[0]
    networks = list(info["NetworkSettings"]["Networks"])
    args = ["docker", "create", "--name", name, "--network", networks[0], "--restart", "unless-stopped"]
    for env in info["Config"]["Env"]:
        args += ["-e", env]
    for key, value in info["Config"]["Labels"].items():
        args += ["--label", f"{key}={value}"]
    args += same_confinement(info)
    args.append(info["Config"]["Image"])
    on_server(SERVER, "docker", "rm", "-f", name)
    on_server(SERVER, *args)
    for network in networks[1:]:
        on_server(SERVER, "docker", "network", "connect", network, name)
    on_server(SERVER, "docker", "start", name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until it serves again (as the person doing it would)
        probe = on_server(SERVER, "docker", "inspect", "-f", "{{.State.Health.Status}}", name, check=False)
        if probe.stdout.strip() == "healthy":
            return
        time.sleep(0.5)


def same_confinement(info):
    """``docker create`` options giving the re-created container the mounts and limits it had."""
    host, args = info["HostConfig"], []
    for mount in info["Mounts"]:
        source = mount["Name"] if mount["Type"] == "volume" else mount["Source"]
        args += ["-v", f"{source}:{mount['Destination']}{'' if mount['RW'] else ':ro'}"]
    for path, options in (host.get("Tmpfs") or {}).items():
        args += ["--tmpfs", f"{path}:{options}" if options else path]
    args += ["--read-only"] if host.get("ReadonlyRootfs") else []
    args += [f"--cap-drop={cap}" for cap in host.get("CapDrop") or []]
    args += [f"--cap-add={cap}" for cap in host.get("CapAdd") or []]
    args += [f"--security-opt={opt}" for opt in host.get("SecurityOpt") or []]
    args += [f"--memory={host['Memory']}"] if host.get("Memory") else []
    args += [f"--pids-limit={host['PidsLimit']}"] if host.get("PidsLimit") else []
    return args


def under_load(rate, action, *args):
    with Load(URL, rate=rate, seconds=300, cafile=str(CA), host=HOST) as traffic:
        time.sleep(2)
        out, took = timed(action, *args)
        time.sleep(2)
    return out, took, traffic.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=200, help="requests per second during deploys")
    parser.add_argument("--boot-delay", type=float, default=2.0, help="seconds the site takes to boot")
    opts = parser.parse_args()

    stamp = str(int(time.time()))
    print(f"building two releases (bench-{stamp}-a, -b) ...", flush=True)
    ref_a, ref_b = release(f"bench-{stamp}-a"), release(f"bench-{stamp}-b")
    deploy(ref_a, opts.boot_delay)

    print(f"blue/green deploy under {opts.rate} req/s ...", flush=True)
    _, deploy_wall, ours = under_load(opts.rate, deploy, ref_b, opts.boot_delay)
    entry = ledger_last()
    module_seconds = entry["duration_seconds"]

    print("naive re-create of the same release under the same load ...", flush=True)
    _, _, naive = under_load(opts.rate, naive_recreate, live_container())

    _, nochange = timed(deploy, ref_b, opts.boot_delay)
    print("rollback under load ...", flush=True)
    _, rollback_wall, rolled = under_load(opts.rate, ansible_playbook, "rollback.yml", "-l", "prod")
    present_run, present_wall = timed(deploy, ref_b, opts.boot_delay)  # image already on the server
    present_watch = step_seconds(present_run, "watch")

    rows = [
        ("failed requests, blue/green deploy", f"{ours.failed} of {ours.sent}", "0"),
        ("failed requests, naive re-create (baseline)", f"{naive.failed} of {naive.sent}", "-"),
        ("traffic lost, naive re-create (failed / rate)", f"{naive.failed / naive.rate:.2f} s", "-"),
        ("longest answer gap, blue/green", f"{ours.gaps():.2f} s", "-"),
        ("request rate sustained", f"{ours.rate:.0f}/s", f">= {opts.rate}"),
        ("deploy wall time (new image, pulled)", f"{deploy_wall:.1f} s", "-"),
        ("  of which in the module (server)", f"{module_seconds:.1f} s", "-"),
        ("  Ansible's share", f"{(deploy_wall - module_seconds) / deploy_wall:.0%}", "-"),
        ("traffic switch (write, nginx -t, reload)", f"{entry.get('switch_seconds') or 0:.2f} s", "< 1 s"),
        ("deploy of an image already on the server", f"{present_wall:.1f} s", "< 30 s"),
        ("  of which the watch window after the switch", f"{present_watch:.1f} s", "-"),
        ("  of which the site booting (APP_BOOT_DELAY)", f"{opts.boot_delay:.1f} s", "-"),
        ("no-change deploy", f"{nochange:.1f} s", "< 10 s"),
        ("rollback (warm slot)", f"{rollback_wall:.1f} s, {rolled.failed} failed", "< 10 s, 0"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  {'value':>18}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>18}  {target}")
    if naive.failed:
        print(f"\nblue/green lost {ours.failed} requests where the naive re-create lost {naive.failed} (same load).")
    return 0 if ours.failed == 0 and rolled.failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
