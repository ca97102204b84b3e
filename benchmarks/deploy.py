#!/usr/bin/env python3
"""Deploy benchmark on the lab (site.com): zero downtime against a naive re-create, in one run.

Prints, against issue 16's targets: failed requests during our blue/green
deploy under an unthrottled load (the rate it reached) vs during a naive
in-place re-create of the same release (the baseline, same run, same load);
p99 latency around the switch against the steady p99 before the deploy; the
traffic-switch time; a deploy of an image already on the server (until the
new release answers, and with the watch window); a no-change deploy; a
rollback with and without the load; Ansible's share of the deploy time. The
site boots in APP_BOOT_DELAY seconds (default 2) so that a re-create really
costs traffic.

Usage: benchmarks/deploy.py [--rate 0] [--connections 32] [--boot-delay 2]   (needs `make lab`)
  --rate 0 (default): unthrottled, each connection sends its next request when answered.
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
    """What a hand-made deploy does: stop and remove the container, start it again with the same settings,
    reload the proxy."""
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
            break
        time.sleep(0.5)
    # nginx resolved the name at its last reload: the new container may have another address (504s
    # until a reload), which the person would see and fix; the next phases start from a served site.
    on_server(SERVER, "docker", "exec", "proxy", "nginx", "-s", "reload")


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


def under_load(load, action, *args):
    """Run ``action`` 2 s into a load; (its output, seconds, the load's result, when it began in the load)."""
    with Load(URL, seconds=300, cafile=str(CA), host=HOST, **load) as traffic:
        time.sleep(2)
        began = traffic.elapsed()
        out, took = timed(action, *args)
        time.sleep(2)
    return out, took, traffic.stop(), began


def around_the_switch(result, version, began):
    """(steady p99 before the deploy, p99 from 0.5 s before to 1 s after the first answer of ``version``)."""
    switched = result.first_answer(version, after=began)
    if switched is None:
        sys.exit(f"the load never saw version {version} answer: the deploy did not go live")
    return result.p99(0, began), result.p99(switched - 0.5, switched + 1.0)


def row(name, value, target, met=None):
    return (name, value, target, "" if met is None else ("met" if met else "NOT MET"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=0, help="requests per second during deploys (0: unthrottled)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections of the unthrottled load")
    parser.add_argument("--boot-delay", type=float, default=2.0, help="seconds the site takes to boot")
    opts = parser.parse_args()
    load = {"rate": opts.rate, "workers": opts.connections if opts.rate == 0 else None}
    light = {"rate": 20, "workers": 4}  # only to see when the new release answers

    stamp = str(int(time.time()))
    print(f"building two releases (bench-{stamp}-a, -b) ...", flush=True)
    ref_a, ref_b = release(f"bench-{stamp}-a"), release(f"bench-{stamp}-b")
    deploy(ref_a, opts.boot_delay)

    how = f"{opts.rate} req/s" if opts.rate else f"an unthrottled load ({opts.connections} connections)"
    print(f"blue/green deploy under {how} ...", flush=True)
    _, deploy_wall, ours, began_deploy = under_load(load, deploy, ref_b, opts.boot_delay)
    entry = ledger_last()
    version_b, module_seconds = entry["version"], entry["duration_seconds"]
    steady_p99, switch_p99 = around_the_switch(ours, version_b, began_deploy)

    print("naive re-create of the same release under the same load ...", flush=True)
    _, _, naive, _ = under_load(load, naive_recreate, live_container())

    _, nochange = timed(deploy, ref_b, opts.boot_delay)
    print("rollback under the same load ...", flush=True)
    _, loaded_rollback, rolled, began_rollback = under_load(load, ansible_playbook, "rollback.yml", "-l", "prod")
    print("deploy of an image already on the server, then a rollback without load ...", flush=True)
    present_run, present_wall, seen, began = under_load(light, deploy, ref_b, opts.boot_delay)
    present_live = seen.first_answer(version_b, after=began) - began
    present_watch = step_seconds(present_run, "watch")
    _, rollback_wall = timed(ansible_playbook, "rollback.yml", "-l", "prod")

    switch = entry.get("switch_seconds") or 0
    ratio = switch_p99 / steady_p99
    rows = [
        row("failed requests, blue/green deploy", f"{ours.failed} of {ours.sent}", "0", ours.failed == 0),
        row("failed requests, naive re-create (baseline)", f"{naive.failed} of {naive.sent}", "-"),
        row("traffic lost, naive re-create (failed / rate)", f"{naive.failed / naive.rate:.2f} s", "-"),
        row("longest answer gap, blue/green", f"{ours.gaps():.2f} s", "-"),
        row("request rate reached" if not opts.rate else "request rate sustained", f"{ours.rate:.0f}/s", "report"),
        row("p99 latency before the deploy (steady)", f"{steady_p99 * 1000:.0f} ms", "-"),
        row("p99 latency around the switch", f"{switch_p99 * 1000:.0f} ms ({ratio:.2f}x)", "<= 1.5x", ratio <= 1.5),
        row("deploy wall time (new image, pulled)", f"{deploy_wall:.1f} s", "-"),
        row("  of which in the module (server)", f"{module_seconds:.1f} s", "-"),
        row("  Ansible's share", f"{(deploy_wall - module_seconds) / deploy_wall:.0%}", "-"),
        row("traffic switch (write, nginx -t, reload)", f"{switch:.2f} s", "<= 0.5 s", switch <= 0.5),
        row("image already on the server: live after", f"{present_live:.1f} s", "<= 8 s", present_live <= 8),
        row("  the whole deploy, with the watch window", f"{present_wall:.1f} s", "-"),
        row("  of which the watch window after the switch", f"{present_watch:.1f} s", "-"),
        row("  of which the site booting (APP_BOOT_DELAY)", f"{opts.boot_delay:.1f} s", "-"),
        row("no-change deploy", f"{nochange:.1f} s", "<= 3 s", nochange <= 3),
        row("rollback (warm slot)", f"{rollback_wall:.1f} s", "<= 3 s", rollback_wall <= 3),
        row(
            "rollback under the load",
            f"{loaded_rollback:.1f} s, {rolled.failed} failed",
            "0 failed",
            not rolled.failed,
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  {'value':>18}  {'target':<9} ")
    for name, value, target, met in rows:
        print(f"{name:<{width}}  {value:>18}  {target:<9} {met}".rstrip())
    if naive.failed:
        print(f"\nblue/green lost {ours.failed} requests where the naive re-create lost {naive.failed} (same load).")
    phases = (
        ("blue/green deploy", ours, began_deploy),
        ("rollback under the load", rolled, began_rollback),
        ("deploy of an image already on the server (light load)", seen, began),
    )
    for what, result, start in phases:
        window = result.failure_window()
        if window:
            print(
                f"{what}: failed {dict(result.failures)} from {window[0] - start:+.2f} s to {window[1] - start:+.2f} s "
                "after it began"
            )
    return 0 if ours.failed == 0 and rolled.failed == 0 and seen.failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
