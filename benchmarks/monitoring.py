#!/usr/bin/env python3
"""Monitoring benchmark: the CPU monitoring costs each lab server at idle, against the same server without it.

Issue 17's target: monitoring adds at most 5 % of one CPU to a server at idle.
On dev.site and site.com, in the same run, windows of --seconds (60) with
monitoring and without it, alternated --rounds times (2: without, with,
without, with) so that a drift of this machine's load cancels out:

    without   the monitoring services stopped (node-, mysqld- and nginx-exporter
              on every server; Prometheus, Alertmanager and the blackbox exporter
              on the monitoring host: each one roles/monitoring runs and found
              active) and /etc/cron.d/montaiguillon-monitoring moved aside (the
              metrics every minute, the status page every 2 minutes)
    with      everything as roles/monitoring left it

Each window starts --settle (15) seconds after the switch, so that stopping
or starting the services (Prometheus replaying its WAL) is not counted as idle.

What a server uses is read from the kernel's cgroup counters, sampled at each
window's start and end by `docker exec`: the server container's own group
(cgroup v2 cpu.stat usage_usec, or v1 cpuacct.usage) plus the groups of the
containers its Docker runs (site, proxy, MariaDB), which on a cgroup v1 host
are not inside the server's group; a group nested in another is counted once.
Figures are in % of one CPU and of the CPUs the server may use (its cpuset
and quota). Each monitoring process's own share comes from /proc/<pid>/stat
(utime + stime, with its reaped children's), and cron's main process gives
what all cron jobs took (the monitoring cron file's, and the backup's binlog
shipping if one fell in a window).

Prints, per server: without, with, the difference (what monitoring adds), the
ratio with/without, the verdict against 5 % of one CPU, then where the CPU goes.
Everything is put back in a `finally` (also on Ctrl-C or SIGTERM): the
services it stopped started again, the cron file moved back unchanged (same
content, mode, owner, mtime), then checked. A line of JSON per run is
appended to benchmarks/results/monitoring.jsonl.

The lab scrapes every 5 s where production scrapes every 30 s: Prometheus's
share here is an upper bound of production's. Anything else running on this
machine (tests, other labs) lands in the windows: the per-round figures show
how steady they were.

Usage: benchmarks/monitoring.py [--seconds 60] [--rounds 2] [--settle 15] [--results FILE]   (needs `make lab`)
"""

import argparse
import datetime
import json
import posixpath
import signal
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lab/lib"))

from cpustat import (  # noqa: E402
    TARGET_PERCENT,
    cpu_file_candidates,
    cpu_percent,
    effective_cpus,
    independent_files,
    parse_proc_stat,
    parse_usage_usec,
    process_percent,
    split_sections,
    summarize,
    verdict,
)
from labtools import container as lab_container  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "monitoring.jsonl"
SERVERS = ["dev.site", "site.com"]
# What roles/monitoring runs, in the order they are stopped (the servers first, the exporters last);
# started again in the reverse order. Only those active when the run starts are touched.
MONITORING_SERVICES = [
    "prometheus",
    "prometheus-alertmanager",
    "prometheus-blackbox-exporter",
    "prometheus-mysqld-exporter",
    "prometheus-nginx-exporter",
    "prometheus-node-exporter",
]
CRON_FILE = "/etc/cron.d/montaiguillon-monitoring"
ASIDE_DIR = "/var/tmp/montaiguillon-bench-monitoring"  # noqa: S108 - on the lab server, root only (0700)
ASIDE_FILE = f"{ASIDE_DIR}/montaiguillon-monitoring"
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"

# ---- one lab server -------------------------------------------------------------------------


class Server:
    """A lab server: its CPU counters, and the monitoring this run switched off, to switch on again."""

    def __init__(self, label):
        self.label = label
        self.container = lab_container(label)
        self.services = []  # monitoring services active when the run started
        self.stopped = []  # those this run stopped: started again by restore()
        self.cron_before = None  # the cron file's identity when the run started (None: there was none)
        self.cron_aside = False
        self.cpu_files, self.cpus, self.clk_tck = [], 1.0, 100
        self.discovered = False

    def sh(self, script, *args, check=True):
        proc = subprocess.run(
            ["docker", "exec", self.container, "sh", "-c", script, "sh", *args],
            capture_output=True,
            text=True,
            check=False,
            start_new_session=True,  # Ctrl-C reaches this script alone, not a command half-way through
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"on {self.container}: {script[:120]}: {proc.stderr.strip()[-500:]}")
        return proc.stdout

    # -- what is there

    def discover(self):
        """CPU counter files, CPUs, clock ticks, the monitoring that runs; a leftover of a killed run put back."""
        out = split_sections(
            self.sh(
                "echo '== self'; cat /proc/self/cgroup; echo '== nproc'; nproc; echo '== clk_tck'; getconf CLK_TCK;"
                " if command -v docker >/dev/null; then for id in $(docker ps -q); do"
                ' echo "== container $id"; cat /proc/$(docker inspect -f "{{.State.Pid}}" "$id")/cgroup; done; fi'
            )
        )
        groups = [body for name, body in out.items() if name == "self" or name.startswith("container ")]
        candidates = [c for body in groups for c in cpu_file_candidates(body)]
        found = set(self.sh('for f; do [ -r "$f" ] && echo "$f"; done; true', *candidates).split())
        chosen = [next((c for c in cpu_file_candidates(body) if c in found), None) for body in groups]
        if chosen[0] is None:
            raise RuntimeError(f"{self.container}: no cgroup CPU counter among {cpu_file_candidates(groups[0])}")
        self.cpu_files = independent_files([c for c in chosen if c])
        limits = subprocess.run(
            [
                "docker",
                "inspect",
                "-f",
                "{{.HostConfig.NanoCpus}} {{.HostConfig.CpuQuota}} {{.HostConfig.CpuPeriod}}",
                self.container,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        self.cpus = effective_cpus(int(out["nproc"]), *(int(v) for v in limits))
        self.clk_tck = int(out["clk_tck"])
        self.services = [s for s in MONITORING_SERVICES if self.is_active(s)]
        self.put_back_leftover()
        self.cron_before = self.cron_identity()
        self.discovered = True

    def unit_exists(self, service):
        state = self.sh(f"systemctl show -p LoadState --value {service}", check=False).strip()
        return state == "loaded"

    def is_active(self, service):
        return self.sh(f"systemctl is-active {service}", check=False).strip() == "active"

    def cron_identity(self):
        """Content, mode, owner and mtime of the monitoring cron file; None when there is none."""
        out = self.sh(f'[ -e {CRON_FILE} ] || exit 0; stat -c "%a %U:%G %s %Y" {CRON_FILE}; sha256sum {CRON_FILE}')
        return out.strip() or None

    def put_back_leftover(self):
        """A run killed outright (SIGKILL) may have left the cron file aside: put it back, or refuse to start."""
        state = self.sh(f"[ -e {ASIDE_FILE} ] || exit 0; [ -e {CRON_FILE} ] && echo both || echo aside").strip()
        if state == "aside":
            self.sh(f"mv {ASIDE_FILE} {CRON_FILE} && rmdir {ASIDE_DIR}")
            print(f"{self.label}: put back {CRON_FILE}, left aside by an earlier run", flush=True)
        elif state == "both":
            raise RuntimeError(
                f"{self.container}: {ASIDE_FILE} (left by an earlier run) and {CRON_FILE} both exist;"
                " compare them, remove the one not wanted, run again"
            )

    # -- switching monitoring off and on

    def monitoring_off(self):
        self.stopped = list(self.services)  # before stopping: a stop cut short is still started again
        if self.stopped:
            self.sh(f"systemctl stop {' '.join(self.stopped)}")
        if self.cron_before is not None:
            self.cron_aside = True
            self.sh(f"install -d -m 0700 {ASIDE_DIR} && mv {CRON_FILE} {ASIDE_FILE}")

    def monitoring_on(self):
        """Start again what this run stopped, put the cron file back; return what could not be (messages)."""
        problems = []
        if self.cron_aside:
            state = self.sh(
                f"[ -e {ASIDE_FILE} ] || {{ echo missing; exit 0; }}; [ -e {CRON_FILE} ] && {{ echo taken; exit 0; }};"
                f" mv {ASIDE_FILE} {CRON_FILE} && rmdir {ASIDE_DIR} && echo back",
                check=False,
            ).strip()
            if state == "back":
                self.cron_aside = False
            elif state == "taken":
                problems.append(f"{CRON_FILE} was written again meanwhile (Ansible?); ours is left at {ASIDE_FILE}")
            else:
                self.cron_aside = state != "missing"
                problems.append(f"{CRON_FILE} not put back ({state or 'docker exec failed'}), look in {ASIDE_FILE}")
        if self.stopped:
            started = subprocess.run(
                ["docker", "exec", self.container, "systemctl", "start", *reversed(self.stopped)],
                capture_output=True,
                text=True,
                check=False,
                start_new_session=True,
            )
            if started.returncode == 0:
                self.stopped = []
            else:
                problems.append(f"systemctl start {' '.join(self.stopped)}: {started.stderr.strip()[-300:]}")
        return problems

    def check_restored(self):
        """What differs from the run's start: services not active, the cron file not as it was."""
        if not self.discovered:  # stopped before it knew the start: it changed nothing
            return []
        problems = [
            f"{s} is {self.sh(f'systemctl is-active {s}', check=False).strip()}"
            for s in self.services
            if not self.is_active(s)
        ]
        if self.cron_identity() != self.cron_before:
            problems.append(f"{CRON_FILE} differs from the run's start (was: {self.cron_before})")
        return problems

    # -- samples

    def processes(self):
        """{name: pid} of the monitoring services running now, and cron's main process."""
        names = [*self.services, "cron"]
        pids = self.sh(f"systemctl show -p MainPID --value {' '.join(names)}").split()
        return {name: pid for name, pid in zip(names, pids, strict=True) if pid != "0"}

    def sample(self, pids):
        """The server's CPU counters (µs), its uptime, and the processes' /proc/<pid>/stat, read at once."""
        stat_files = {f"/proc/{pid}/stat": name for name, pid in pids.items()}
        out = split_sections(
            self.sh('for f; do echo "== $f"; cat "$f" 2>/dev/null; done', "/proc/uptime", *self.cpu_files, *stat_files)
        )
        missing = [f for f in self.cpu_files if not out.get(f)]
        if missing:
            raise RuntimeError(f"{self.container}: CPU counters gone: {missing} (a container was re-created?)")
        return {
            "uptime": float(out["/proc/uptime"].split()[0]),
            "usec": sum(parse_usage_usec(f, out[f]) for f in self.cpu_files),
            "procs": {name: parse_proc_stat(out[f]) if out.get(f) else None for f, name in stat_files.items()},
        }

    def window(self, before, after):
        """% of one CPU the server used between two samples, and each process's."""
        seconds = after["uptime"] - before["uptime"]
        procs = {
            name: process_percent(before["procs"][name], after["procs"].get(name), self.clk_tck, seconds)
            for name in before["procs"]
        }
        return {"seconds": seconds, "percent": cpu_percent(before["usec"], after["usec"], seconds), "procs": procs}


# ---- the run ----------------------------------------------------------------------------


@contextmanager
def uninterrupted():
    """Ctrl-C and SIGTERM held off while monitoring is put back."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def interrupted(signum, frame):
    raise KeyboardInterrupt


def restore(servers):
    """Monitoring back on every server, then checked; the problems found (messages)."""
    problems = []
    with uninterrupted():
        for server in servers:
            try:
                problems += [f"{server.label}: {p}" for p in server.monitoring_on()]
            except (RuntimeError, OSError) as error:
                problems.append(f"{server.label}: {error}")
        for server in servers:
            try:
                problems += [f"{server.label}: {p}" for p in server.check_restored()]
            except (RuntimeError, OSError) as error:
                problems.append(f"{server.label}: {error}")
    return problems


def measure_window(servers, kind, seconds, settle, label):
    """Switch monitoring (off for "without"), let it settle, then one window on every server at once."""
    print(
        f"{label}: monitoring {'off' if kind == 'without' else 'on'}, settling {settle:g} s,"
        f" measuring {seconds:g} s ...",
        flush=True,
    )
    for server in servers:
        problems = server.monitoring_off() if kind == "without" else server.monitoring_on()
        if problems:
            raise RuntimeError(f"{server.label}: {'; '.join(problems)}")
    time.sleep(settle)
    pids = {server.label: server.processes() for server in servers}
    before = {server.label: server.sample(pids[server.label]) for server in servers}
    time.sleep(seconds)
    after = {server.label: server.sample(pids[server.label]) for server in servers}
    return {server.label: server.window(before[server.label], after[server.label]) for server in servers}


def scrape_interval(server):
    out = server.sh(f"grep -m1 -E '^\\s*scrape_interval:' {PROMETHEUS_CONFIG} || true").split(":", 1)
    return out[1].strip() if len(out) == 2 else "?"


def figures(servers, rounds):
    """Per server: the summary of its windows and the processes' shares (mean of the windows they ran in)."""
    result = {}
    for server in servers:
        windows = {kind: [r[kind][server.label] for r in rounds] for kind in ("without", "with")}
        summary = summarize([w["percent"] for w in windows["without"]], [w["percent"] for w in windows["with"]])
        procs = {}
        for kind, kind_windows in windows.items():
            for name in kind_windows[0]["procs"]:
                values = [w["procs"].get(name) for w in kind_windows]
                values = [v for v in values if v is not None]
                procs.setdefault(name, {})[kind] = statistics.mean(values) if values else None
        result[server.label] = {
            **summary,
            "cpus": server.cpus,
            "of_machine": {key: summary[key] / server.cpus for key in ("without", "with", "added")},
            "verdict": verdict(summary["added"]),
            "processes": procs,
            "counters": server.cpu_files,
            "services": server.services,
        }
    return result


def print_figures(results, opts, interval):
    print()
    print(
        f"CPU at idle, mean of {opts.rounds} round(s) of {opts.seconds:g} s windows"
        f" (without, with), settle {opts.settle:g} s; Prometheus scrapes every {interval} here (production 30s)"
    )
    print(f"{'server':<10}{'CPU used':<14}{'without':>9}{'with':>9}{'added':>9}{'with/without':>14}  target")
    for label, r in results.items():
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        machine, unit = r["of_machine"], f"% of {r['cpus']:g} CPUs"
        print(
            f"{label:<10}{'% of one CPU':<14}{r['without']:>8.2f}%{r['with']:>8.2f}%{r['added']:>+8.2f}%{ratio:>14}"
            f"  <= {TARGET_PERCENT:g}% of one CPU: {r['verdict']}"
        )
        print(f"{'':<10}{unit:<14}{machine['without']:>8.2f}%{machine['with']:>8.2f}%{machine['added']:>+8.2f}%")
    for label, r in results.items():
        print(f"  {label} added per round: {', '.join(f'{d:+.2f}%' for d in r['per_round'])}")
    print()
    print("where it goes, % of one CPU from /proc/<pid>/stat (utime+stime, with reaped children), with monitoring:")
    for label, r in results.items():
        parts, total = [], 0.0
        for name, shares in r["processes"].items():
            if name == "cron":
                continue
            share = shares.get("with")
            total += share or 0.0
            short = name.removeprefix("prometheus-")
            parts.append(f"{short} {share:.2f}" if share is not None else f"{short} - (restarted in a window)")
        cron = r["processes"].get("cron", {})
        cron_with, cron_without = cron.get("with"), cron.get("without")
        if cron_with is not None and cron_without is not None:
            total += cron_with - cron_without
            parts.append(f"cron jobs {cron_with:.2f} (without: {cron_without:.2f})")
        print(f"  {label:<9} {', '.join(parts)}")
        print(
            f"  {'':<9} monitoring's processes {total:.2f} of the {r['added']:+.2f} measured on the server"
            " (the rest: journald, the proxy and MariaDB answering probes, noise)"
        )
    if opts.seconds < 120:
        print("  (windows under 2 minutes: the cron jobs (every minute, every 2) may or may not fall in a window)")


def append_result(path, record):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def run(servers, opts):
    for server in servers:
        server.discover()
        print(
            f"{server.label}: {server.cpus:g} CPUs; monitoring: {', '.join(server.services) or 'no service'}"
            f"{', ' + CRON_FILE if server.cron_before else ''}; CPU counted in {len(server.cpu_files)} cgroups"
            f" (the server's and its containers', {posixpath.basename(server.cpu_files[0])})",
            flush=True,
        )
        idle = [s for s in MONITORING_SERVICES if s not in server.services and server.unit_exists(s)]
        if idle:
            print(f"  {server.label}: installed but not active, left alone: {', '.join(idle)}", flush=True)
    rounds = []
    for i in range(opts.rounds):
        rounds.append(
            {
                kind: measure_window(servers, kind, opts.seconds, opts.settle, f"round {i + 1}/{opts.rounds}, {kind}")
                for kind in ("without", "with")
            }
        )
    return rounds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each window (default 60)")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of windows, without then with (default 2)")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds after each switch before a window")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON lines file each run is appended to")
    opts = parser.parse_args(argv)
    if opts.seconds <= 0 or opts.rounds < 1 or opts.settle < 0:
        parser.error("--seconds must be > 0, --rounds >= 1, --settle >= 0")

    servers = [Server(label) for label in SERVERS]
    running = subprocess.run(
        ["docker", "ps", "--format", "{{.Names}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    missing = [s.container for s in servers if s.container not in running]
    if missing:
        sys.exit(f"monitoring: lab servers not running: {', '.join(missing)} (make lab); nothing was measured")
    signal.signal(signal.SIGTERM, interrupted)
    started = datetime.datetime.now(datetime.UTC)
    try:
        rounds = run(servers, opts)
    except KeyboardInterrupt:
        rounds = None
        print("\ninterrupted: putting monitoring back ...", flush=True)
    finally:
        problems = restore(servers)
        if problems:
            print("MONITORING NOT AS IT WAS:\n  " + "\n  ".join(problems), file=sys.stderr, flush=True)
        else:
            print("monitoring back as it was on every server (services active, cron file unchanged)", flush=True)
    if rounds is None:
        return 2 if problems else 130
    host = next((s for s in servers if "prometheus" in s.services), None)
    interval = scrape_interval(host) if host else "?"
    results = figures(servers, rounds)
    print_figures(results, opts, interval)
    record = {
        "at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": opts.seconds,
        "rounds": opts.rounds,
        "settle": opts.settle,
        "scrape_interval": interval,
        "target_percent_of_one_cpu": TARGET_PERCENT,
        "servers": results,
        "windows": rounds,
    }
    append_result(opts.results, record)
    print(f"\nappended to {opts.results}")
    if problems:
        return 2
    return 0 if all(r["verdict"] == "ok" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
