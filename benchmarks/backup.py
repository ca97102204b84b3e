#!/usr/bin/env python3
"""Backup benchmark: our modules against mysqldump | gzip and mysql <, on a generated database of 1 GiB or more.

On the lab's prod server (site.com), in one run:
- generates the database montaiguillon_bench (>= --size-gib of InnoDB data,
  random rows, INSERT ... SELECT doubling; kept between runs unless --regenerate);
- backup: our library as cron runs it (on the server, nice 10, no Ansible; zstd,
  then zstd + age) against `mariadb-dump | gzip`
  run the way an operator would (docker exec on the server), same data;
  ours runs at the backup role's pace (backup_max_rate, or --max-rate), and
  once more at full speed to show what the pace buys;
- restore: mysql_restore against `mariadb < dump.sql` (binlog off for both, so
  the baseline is not slowed by binlog writes ours skips);
- a concurrent writer (single-row INSERTs at a fixed rate, on the server, over
  the unix socket) measured during each backup and, as that backup's reference,
  alone in the ALONE_SECONDS just before it (same writer, same connection):
  this machine's own noise (fsync latency of its disk) drifts over minutes, and
  a single reference taken at the start made the ratios a measure of the drift;
  the paced backup is measured --windows times (3) and its target checked on
  the worst, so that one lucky window does not pass it;
  beside each window: how long the writer waited for a core (its run-queue
  wait, from /proc/thread-self/schedstat: CPU taken by the backup) and the
  machine's steal time (CPU taken by the hypervisor, /proc/stat), so a slow
  window can be told apart from a noisy machine;
- the restore drill (throwaway container) of the 1 GiB backup, the writer
  measured during it too (no target: how much a weekly drill costs the site).
Ratios are against the baseline measured in the same run.

The server's cron is stopped while it runs (no scheduled backup or shipping
in the middle) and started again at the end; the bench database and files are
removed unless --keep.

Usage: LAB_INVENTORY=... LAB_PREFIX=... benchmarks/backup.py [--size-gib 1] [--max-rate 20M] [--keep] [--regenerate]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lab/lib"))

from labtools import INVENTORY  # noqa: E402
from labtools import container as lab_container  # noqa: E402

HOST = "site.com"
SERVER = lab_container(HOST)
DB = "montaiguillon_bench"
BENCH_DIR = "/var/backups/montaiguillon/bench"
WORK_DIR = "/var/tmp/montaiguillon-bench"  # noqa: S108 - on the lab server, root only (0700)
PASSWORD_FILE = "/etc/montaiguillon/mysql/secrets/root_password"  # noqa: S105 - a path, read on the server
WRITER_RATE = 50  # inserts per second
ALONE_SECONDS = 30  # the writer alone before each backup: that backup's reference
TARGETS = {"backup": 0.9, "restore": 0.9, "p99": 2.0, "drill": 600.0}

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


# ---- steps -----------------------------------------------------------------------


def data_bytes():
    size = "COALESCE(SUM(data_length + index_length), 0)"
    out = sql(f"SELECT {size} FROM information_schema.tables WHERE table_schema = '{DB}'", database="mysql")  # noqa: S608
    return int(out or 0)


def generate(size_gib, regenerate):
    target = int(size_gib * 1024**3)
    query = f"SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = '{DB}'"  # noqa: S608 - a constant
    exists = sql(query, database="mysql")
    if exists == "1" and not regenerate and data_bytes() >= target:
        print(f"reusing {DB}: {data_bytes() / 1024**3:.2f} GiB", flush=True)
        return
    started = time.monotonic()
    sql(f"DROP DATABASE IF EXISTS {DB}; CREATE DATABASE {DB}", database="mysql")
    sql(
        "SET SESSION sql_log_bin = 0;"
        "CREATE TABLE bench_rows (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer INT NOT NULL, code CHAR(32) NOT NULL,"
        " note VARCHAR(255) NOT NULL, amount DECIMAL(12,2) NOT NULL, created DATETIME NOT NULL, KEY (customer));"
        "CREATE TABLE bench_writes (id BIGINT AUTO_INCREMENT PRIMARY KEY, payload CHAR(32) NOT NULL,"
        " at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6));"
        "INSERT INTO bench_rows (customer, code, note, amount, created)"
        " SELECT FLOOR(RAND() * 100000), MD5(RAND()), CONCAT('order ', seq, ' ', SHA2(RAND(), 256), ' ',"
        " SHA2(RAND(), 224)), ROUND(RAND() * 10000, 2), NOW() - INTERVAL FLOOR(RAND() * 31536000) SECOND"
        " FROM seq_1_to_4096;"
    )
    while data_bytes() < target:
        sql(
            "SET SESSION sql_log_bin = 0;"
            "INSERT INTO bench_rows (customer, code, note, amount, created)"
            " SELECT FLOOR(RAND() * 100000), MD5(RAND()), CONCAT('order ', id, ' ', SHA2(RAND(), 256), ' ',"
            " SHA2(RAND(), 224)), ROUND(RAND() * 10000, 2), NOW() - INTERVAL FLOOR(RAND() * 31536000) SECOND"
            " FROM bench_rows; ANALYZE TABLE bench_rows;"
        )
        print(f"  generated {data_bytes() / 1024**3:.2f} GiB", flush=True)
    print(f"generated {DB}: {data_bytes() / 1024**3:.2f} GiB in {time.monotonic() - started:.0f} s", flush=True)


def role_max_rate():
    """The pace scheduled backups run at: the backup role's default."""
    defaults = yaml.safe_load((ROOT / "roles/backup/defaults/main.yml").read_text())
    return str(defaults["backup_max_rate"])


OUR_BACKUP = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from ansible.module_utils.montaiguillon.backup.catalog import backup_dir_lock
from ansible.module_utils.montaiguillon.backup.container import docker_api
from ansible.module_utils.montaiguillon.backup.pacing import parse_rate
from ansible.module_utils.montaiguillon.backup.take import run_backup
work, db, backup_dir, max_rate, recipients = sys.argv[1:6]
login = {"login_user": "root", "login_password": open(sys.argv[6]).read().strip(),
         "login_unix_socket": "/run/montaiguillon/mysql/mysqld.sock", "connect_timeout": 10}
started = time.time()
with backup_dir_lock(backup_dir):
    manifest = run_backup(docker_api(), login, container="mysql", database=db, backup_dir=backup_dir,
                              kind="manual", label="benchmark", compression="zstd", max_rate=parse_rate(max_rate),
                              encrypt_recipient_file=recipients or None)
print(json.dumps({**manifest, "wall": [started, time.time()]}))
"""


def our_backup(max_rate, encrypt=False):
    """Our backup as cron runs it: the library on the server, at the scheduled runs' priority, no Ansible.

    Returns the manifest with ``wall``: the run's start and end (epoch seconds), the
    window the writer's latency is taken in. The library is this checkout's, copied over.
    """
    lib_dir = f"{WORK_DIR}/lib"
    target = f"{lib_dir}/ansible/module_utils"
    source = ROOT / "plugins/module_utils"
    tree = (source / "montaiguillon").rglob("*.py")
    names = [str(p.relative_to(source)) for p in tree if "__pycache__" not in p.parts]
    for name in names:
        on_server(f"mkdir -p {target}/{os.path.dirname(name)}")
        on_server(f"cat > {target}/{name}", input_bytes=(source / name).read_bytes())
    on_server(f"cat > {WORK_DIR}/our_backup.py", input_bytes=OUR_BACKUP.encode())
    recipients = "/etc/montaiguillon/backup/age-recipients.txt" if encrypt else "''"
    out = on_server(
        f"nice -n 10 ionice -c2 -n7 python3 {WORK_DIR}/our_backup.py {lib_dir} {DB} {BENCH_DIR} {max_rate}"
        f" {recipients} {PASSWORD_FILE}"
    )
    return json.loads(out.strip().splitlines()[-1])


def baseline_backup():
    command = (
        f"MYSQL_PWD=$(cat {PASSWORD_FILE}) docker exec -e MYSQL_PWD mysql mariadb-dump -uroot --single-transaction"
        f" --quick --routines --triggers --events {DB} | gzip -6 > {WORK_DIR}/baseline.sql.gz"
    )
    seconds = timed(command)
    size = int(on_server(f"stat -c %s {WORK_DIR}/baseline.sql.gz"))
    return seconds, size


def our_restore(backup_id):
    started = time.monotonic()
    result = module(
        "mysql_restore",
        {"backup_dir": BENCH_DIR, "backup": backup_id, "database": DB, "safety_backup": False},
    )
    return result["restore"], time.monotonic() - started


def baseline_restore():
    on_server(f"gzip -dc {WORK_DIR}/baseline.sql.gz > {WORK_DIR}/baseline.sql")
    sql(f"DROP DATABASE {DB}; CREATE DATABASE {DB}", database="mysql")
    command = (
        f"MYSQL_PWD=$(cat {PASSWORD_FILE}) docker exec -i -e MYSQL_PWD mysql mariadb -uroot"
        f" --init-command='SET SESSION sql_log_bin=0' {DB} < {WORK_DIR}/baseline.sql"
    )
    seconds = timed(command)
    on_server(f"rm -f {WORK_DIR}/baseline.sql")
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=1.0, help="InnoDB data size to generate (default 1)")
    parser.add_argument("--max-rate", default=None, help="pace of our backups (default: the backup role's)")
    parser.add_argument("--keep", action="store_true", help="keep the bench database and files")
    parser.add_argument("--regenerate", action="store_true", help="generate the database even if it exists")
    parser.add_argument(
        "--windows", type=int, default=3, help="paced backups measured with the writer, each after its reference"
    )
    opts = parser.parse_args()

    cron_was_active = on_server("systemctl is-active cron", check=False).strip() == "active"
    on_server("systemctl stop cron", check=False)
    on_server(f"mkdir -p -m 0700 {BENCH_DIR} {WORK_DIR}")
    try:
        return run(opts)
    finally:
        on_server(f"touch {WORK_DIR}/writer.stop")  # a writer left by a failed step stops by itself
        if not opts.keep:
            sql(f"DROP DATABASE IF EXISTS {DB}", database="mysql")
            on_server(f"rm -rf {BENCH_DIR} {WORK_DIR}")
        if cron_was_active:
            on_server("systemctl start cron")


def run(opts):
    generate(opts.size_gib, opts.regenerate)
    rows = int(sql("SELECT COUNT(*) FROM bench_rows"))
    size = data_bytes()
    print(f"database: {size / 1024**3:.2f} GiB of InnoDB data, {rows} rows; writer {WRITER_RATE}/s", flush=True)

    max_rate = opts.max_rate or role_max_rate()

    def with_writer(label, backup):
        """The writer alone for ALONE_SECONDS, then ``backup()`` -> (its result, latency alone, latency during)."""
        print(f"{label}, the writer alone {ALONE_SECONDS} s before ...", flush=True)
        writer = Writer()
        counters = cpu_times()
        time.sleep(ALONE_SECONDS)
        alone_until, before = time.time(), cpu_times()
        result, start, end = backup()
        after = cpu_times()
        samples = writer.finish()
        alone = {**latency(samples, end=alone_until), "steal": steal_percent(counters, before)}
        return result, alone, {**latency(samples, start, end), "steal": steal_percent(before, after)}

    def ours_at(rate):
        result = our_backup(rate)
        return (result, *result["wall"])

    def baseline():
        start = time.time()
        result = baseline_backup()
        return result, start, time.time()

    paced = [
        with_writer(f"our backup (mysql_backup, zstd, max_rate {max_rate}) {i + 1}/{opts.windows}",
                    lambda: ours_at(max_rate))
        for i in range(max(1, opts.windows))
    ]  # fmt: skip
    ours = paced[0][0]
    ours_seconds = statistics.median(result["duration_seconds"] for result, _alone, _during in paced)
    p99_ratios = [during["p99"] / alone["p99"] for _result, alone, during in paced]
    full, alone_full, during_full = with_writer("our backup at full speed (max_rate 0)", lambda: ours_at("0"))
    (base_seconds, base_size), alone_base, during_base = with_writer("baseline backup (mariadb-dump | gzip)", baseline)

    print("our backup, zstd + age encryption ...", flush=True)
    encrypted = our_backup(max_rate, encrypt=True)

    print("our restore (mysql_restore) ...", flush=True)
    restored, restore_wall = our_restore(ours["id"])
    assert int(sql("SELECT COUNT(*) FROM bench_rows")) == rows
    print("baseline restore (mariadb < dump.sql) ...", flush=True)
    base_restore = baseline_restore()
    assert int(sql("SELECT COUNT(*) FROM bench_rows")) == rows

    def drill_run():
        result = module(
            "mysql_restore",
            {"mode": "drill", "backup_dir": BENCH_DIR, "backup": ours["id"], "database": DB, "drill_timeout": 600},
        )["drill"]
        # the drill's own span: Ansible starting up on this 2-core controller is not the drill's cost
        return result, *(datetime.fromisoformat(result[key]).timestamp() for key in ("started_at", "finished_at"))

    drill, alone_drill, during_drill = with_writer("restore drill (throwaway container)", drill_run)

    sql_bytes = ours["uncompressed_bytes"]
    mib = 1024 * 1024

    def rate(seconds):
        return f"{sql_bytes / mib / seconds:7.1f} MiB/s"

    backup_ratio = base_seconds / ours_seconds
    restore_ratio = base_restore / restored["load_seconds"]
    print()
    print(f"data: {size / 1024**3:.2f} GiB InnoDB, {rows} rows, dump {sql_bytes / mib:.0f} MiB of SQL")
    print(f"{'':<40}{'seconds':>9}  {'throughput':>14}  {'size':>10}")
    print(f"{f'backup  ours (zstd, max_rate {max_rate})':<40}{ours_seconds:>9.1f}"
          f"  {rate(ours_seconds):>14}  {ours['compressed_bytes'] / mib:>6.0f} MiB"
          f"   median of {len(paced)}")  # fmt: skip
    print(f"{'backup  ours (zstd, full speed)':<40}{full['duration_seconds']:>9.1f}"
          f"  {rate(full['duration_seconds']):>14}  {full['compressed_bytes'] / mib:>6.0f} MiB")  # fmt: skip
    print(f"{f'backup  ours (zstd + age, {max_rate})':<40}{encrypted['duration_seconds']:>9.1f}"
          f"  {rate(encrypted['duration_seconds']):>14}  {encrypted['compressed_bytes'] / mib:>6.0f} MiB")  # fmt: skip
    print(f"{'backup  mariadb-dump | gzip -6':<40}{base_seconds:>9.1f}  {rate(base_seconds):>14}"
          f"  {base_size / mib:>6.0f} MiB")  # fmt: skip
    print(f"{'restore ours (mysql_restore), load':<40}{restored['load_seconds']:>9.1f}"
          f"  {rate(restored['load_seconds']):>14}")  # fmt: skip
    print(f"{'  + row-count check of every table':<40}{restored['seconds']:>9.1f}  {rate(restored['seconds']):>14}"
          f"              (with Ansible: {restore_wall:.1f} s)")  # fmt: skip
    print(f"{'restore mariadb < dump.sql':<40}{base_restore:>9.1f}  {rate(base_restore):>14}")
    print(f"{'drill   (load + check, throwaway server)':<40}{drill['restore_seconds']:>9.1f}"
          f"  {rate(drill['restore_seconds']):>14}"
          f"   total {drill['total_seconds']:.1f} s, {drill['status']}")  # fmt: skip
    print()
    print(f"writer latency (ms){'samples':>29} {'p50':>7} {'p99':>7}   {'alone before: p50':>17} {'p99':>7}  p99 ratio")
    windows = (
        *((f"during our backup ({max_rate}) {i + 1}/{len(paced)}", alone, during)
          for i, (_result, alone, during) in enumerate(paced)),
        ("during our backup (full speed)", alone_full, during_full),
        ("during mariadb-dump|gzip", alone_base, during_base),
        ("during the restore drill", alone_drill, during_drill),
    )  # fmt: skip
    for name, alone, lat in windows:
        print(f"  {name:<38}{lat['n']:>7} {lat['p50']:>7.2f} {lat['p99']:>7.2f}   {alone['p50']:>17.2f}"
              f" {alone['p99']:>7.2f}  {lat['p99'] / alone['p99']:.1f}x")  # fmt: skip
    print("  of which the writer waited for a core (p99, ms) | the machine's steal time (%), during / alone before")
    for name, alone, lat in windows:
        print(f"  {name:<38}  wait {lat['runq_p99']:>6.2f} / {alone['runq_p99']:<6.2f}"
              f"  steal {lat['steal']:>4.1f} / {alone['steal']:.1f}")  # fmt: skip
    print()
    checks = [
        ("backup throughput vs baseline", backup_ratio, f">= {TARGETS['backup']}x", backup_ratio >= TARGETS["backup"]),
        ("restore (load) throughput vs baseline", restore_ratio, f">= {TARGETS['restore']}x",
         restore_ratio >= TARGETS["restore"]),
        ("size, ours / baseline", ours["compressed_bytes"] / base_size, "(smaller is better)", True),
        (f"writer p99 during backup ({max_rate}) / before", max(p99_ratios), f"<= {TARGETS['p99']}x",
         max(p99_ratios) <= TARGETS["p99"]),
        ("drill of the whole backup (s)", drill["total_seconds"], f"< {TARGETS['drill']:.0f} s",
         drill["total_seconds"] < TARGETS["drill"] and drill["status"] == "passed"),
    ]  # fmt: skip
    for name, value, target, ok in checks:
        print(f"{name:<44}{value:>8.2f}   {target:<20}{'ok' if ok else 'MISSED'}")
    if len(p99_ratios) > 1:
        print(f"  (writer p99 ratio: the worst of {len(p99_ratios)} paced backups;"
              f" all: {', '.join(f'{r:.2f}' for r in p99_ratios)})")  # fmt: skip
    return 0 if all(ok for *_, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
