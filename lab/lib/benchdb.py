"""The lab's prod server as the backup benchmark measures it: shell and SQL on it, our modules run
on it with ad-hoc Ansible, and the concurrent writer whose latency is the site's (benchmarks/backup.py).
"""

import json
import os
import statistics
import subprocess
import sys
import time

from labtools import INVENTORY, ROOT
from labtools import container as lab_container

HOST = "site.com"
SERVER = lab_container(HOST)
DB = "montaiguillon_bench"
WORK_DIR = "/var/tmp/montaiguillon-bench"  # noqa: S108 - on the lab server, root only (0700)
PASSWORD_FILE = "/etc/montaiguillon/mysql/secrets/root_password"  # noqa: S105 - a path, read on the server
WRITER_RATE = 50  # inserts per second

WRITER = r"""
import json, os, sys, time
import pymysql
db, rate, stop_file, max_seconds = sys.argv[1], float(sys.argv[2]), sys.argv[3], float(sys.argv[4])
password = open("/etc/montaiguillon/mysql/secrets/root_password").read().strip()
conn = pymysql.connect(unix_socket="/run/montaiguillon/mysql/mysqld.sock", user="root", password=password,
                       database=db, autocommit=True)
cur = conn.cursor()
def run_delay():  # nanoseconds this thread has waited, runnable, for a core
    with open("/proc/thread-self/schedstat") as handle:
        return int(handle.read().split()[1])
samples, interval, deadline = [], 1.0 / rate, time.monotonic() + max_seconds
next_at = time.monotonic()
while time.monotonic() < deadline and not os.path.exists(stop_file):
    wall, start, waited = time.time(), time.monotonic(), run_delay()
    cur.execute("INSERT INTO bench_writes (payload) VALUES (%s)", (os.urandom(16).hex(),))
    samples.append((wall, time.monotonic() - start, (run_delay() - waited) / 1e9))
    next_at += interval
    delay = next_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    else:
        next_at = time.monotonic()
print(json.dumps(samples))
"""


# ---- plumbing ----------------------------------------------------------------


def on_server(command, check=True, input_bytes=None):
    """A shell command on the lab server (as root)."""
    proc = subprocess.run(["docker", "exec", "-i", SERVER, "bash", "-o", "pipefail", "-ec", command],
                          input=input_bytes or b"", capture_output=True, check=False)  # fmt: skip
    if check and proc.returncode != 0:
        sys.exit(f"on {SERVER}: {command[:200]}\n{proc.stderr.decode(errors='replace')[-2000:]}")
    return proc.stdout.decode(errors="replace")


def sql(query, database=DB):
    return on_server(
        f"MYSQL_PWD=$(cat {PASSWORD_FILE}) docker exec -i -e MYSQL_PWD mysql mariadb -uroot -N -B {database}",
        input_bytes=query.encode(),
    ).strip()


def module(name, args):
    """Run one of our modules on the server with ad-hoc Ansible; return its result."""
    env = {**os.environ, "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "json"}
    args = {"login_password": "{{ mysql_root_password }}", **args}
    proc = subprocess.run(
        ["ansible", HOST, "-i", str(INVENTORY), "-m", name, "-a", json.dumps(args)],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
    )  # fmt: skip
    try:  # the json callback's document, then (ansible.cfg's profile_tasks) a recap
        document, _ = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{") :])
        result = document["plays"][0]["tasks"][0]["hosts"][HOST]
    except (ValueError, KeyError, IndexError):
        sys.exit(f"{name} did not answer:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    if result.get("failed"):
        sys.exit(f"{name} failed: {result.get('msg')}")
    return result


class Writer:
    """The concurrent writer, on the server; samples are (wall time, seconds, of which waiting for a core)."""

    def __init__(self, seconds_max=900):
        stop = f"{WORK_DIR}/writer.stop"
        on_server(f"rm -f {stop}")
        self.stop = stop
        on_server(f"cat > {WORK_DIR}/writer.py", input_bytes=WRITER.encode())
        command = ["docker", "exec", SERVER, "python3", f"{WORK_DIR}/writer.py", DB, str(WRITER_RATE), stop]
        self.proc = subprocess.Popen(
            [*command, str(seconds_max)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def finish(self):
        on_server(f"touch {self.stop}")
        out, err = self.proc.communicate(timeout=120)
        if self.proc.returncode != 0:
            sys.exit(f"the writer failed: {err.decode()[-1000:]}")
        return json.loads(out)


def p99(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def latency(samples, start=None, end=None):
    """p50/p99 of the writer's INSERTs in [start, end] (ms), and p99 of the part spent waiting for a core."""
    chosen = [s for s in samples if (start is None or s[0] >= start) and (end is None or s[0] <= end)]
    if len(chosen) < 20:
        sys.exit(f"too few writer samples ({len(chosen)}) to measure latency")
    seconds = [s[1] for s in chosen]
    return {
        "n": len(chosen),
        "p50": statistics.median(seconds) * 1000,
        "p99": p99(seconds) * 1000,
        "runq_p99": p99([s[2] for s in chosen]) * 1000,
    }


def cpu_times():
    """The machine's CPU counters (the first line of /proc/stat on the server: jiffies)."""
    fields = on_server("head -n 1 /proc/stat").split()
    if not fields or fields[0] != "cpu":
        sys.exit(f"unexpected /proc/stat on {SERVER}: {' '.join(fields)[:200]}")
    return [int(value) for value in fields[1:]]


def steal_percent(before, after):
    """Share of the CPU time between two ``cpu_times()`` the hypervisor gave to someone else (%)."""
    deltas = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(deltas[:8])  # user nice system idle iowait irq softirq steal (guest time is inside user)
    return 100.0 * deltas[7] / total if total > 0 and len(deltas) > 7 else 0.0


def timed(command):
    started = time.monotonic()
    on_server(command)
    return time.monotonic() - started
