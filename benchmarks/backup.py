#!/usr/bin/env python3
"""Backup benchmark: our modules against mysqldump | gzip and mysql <, on a generated database of 1 GiB or more.

On the lab's prod server (site.com), in one run, encrypted as production runs:
- generates the database montaiguillon_bench (>= --size-gib of InnoDB data,
  random rows, INSERT ... SELECT doubling; kept between runs unless --regenerate);
- backup: our library as cron runs it (on the server, nice 10, no Ansible;
  zstd + age to the server's recipients) against `mariadb-dump | gzip`
  run the way an operator would (docker exec on the server), same data;
  ours runs at the backup role's pace (backup_max_rate, or --max-rate), once
  more at full speed to show what the pace buys, and once without age to show
  what encryption costs;
- restore: mysql_restore of the encrypted backup, the identity brought into
  tmpfs for it as restore.yml does, against `mariadb < dump.sql` (binlog off
  for both, so the baseline is not slowed by binlog writes ours skips);
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
- the offsite copy of that backup to the lab's append-only store
  (`montaiguillon-backup offsite`, into a `bench` directory there), then the
  weekly drill as production runs it: the store's copy fetched back
  (`fetch --into`) and restored into a throwaway container; the target is on
  fetch + drill; the writer measured during the drill (how much it costs the site).
Ratios are against the baseline measured in the same run.

The server's cron is stopped while it runs (no scheduled backup or shipping
in the middle) and started again at the end; the bench database and files are
removed unless --keep; the store's bench copies always (by the lab's operator:
the server's own key cannot delete there).

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

from benchdb import (  # noqa: E402
    DB,
    HOST,
    PASSWORD_FILE,
    WORK_DIR,
    WRITER_RATE,
    Writer,
    cpu_times,
    latency,
    module,
    on_server,
    sql,
    steal_percent,
    timed,
)
from labtools import container as lab_container  # noqa: E402

BENCH_DIR = "/var/backups/montaiguillon/bench"
BENCH_CONFIG = f"{WORK_DIR}/config.json"  # the server's backup configuration, pointed at the bench
DRILL_SCRATCH = "/var/backups/montaiguillon/bench-drill"  # the offsite copy fetched for the drill
STORE = lab_container("backup.store")
STORE_BENCH = "bench"  # on the store, under site.com's own directory (the key's root)
STORE_ROOT = f"/srv/backup/{HOST}"
IDENTITY = ROOT / "inventories/lab/.generated/backup/age-identity.txt"  # the controller's (vault, in production)
IDENTITY_ON_SERVER = "/run/montaiguillon-bench/age-identity.txt"  # tmpfs, for the run only, as restores do
ALONE_SECONDS = 30  # the writer alone before each backup: that backup's reference
TARGETS = {"backup": 0.9, "restore": 0.9, "p99": 2.0, "drill": 600.0}

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
        {
            "backup_dir": BENCH_DIR,
            "backup": backup_id,
            "database": DB,
            "safety_backup": False,
            "decrypt_identity_file": IDENTITY_ON_SERVER,
        },
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


def prepare_offsite():
    """The server's own backup configuration and offsite key, pointed at the bench database, directory and a
    ``bench`` directory on the store; the identity in tmpfs for the run, as restore.yml brings it."""
    config = json.loads(on_server("cat /etc/montaiguillon/backup/config.json"))
    store_host = config["offsite"]["target"].rsplit(":", 1)[0]
    config.update(backup_dir=BENCH_DIR, database=DB, notify_url="", status_file=f"{WORK_DIR}/status.json",
                  log_file=f"{WORK_DIR}/backup.log")  # fmt: skip
    config["offsite"] = {**config["offsite"], "target": f"{store_host}:{STORE_BENCH}"}
    on_server(f"umask 077 && cat > {BENCH_CONFIG}", input_bytes=json.dumps(config).encode())
    on_server(f"install -d -m 0700 {os.path.dirname(IDENTITY_ON_SERVER)} && umask 077 && cat > {IDENTITY_ON_SERVER}",
              input_bytes=IDENTITY.read_bytes())  # fmt: skip
    forget_store_bench()


def forget_store_bench():
    """The store refuses deletions from the server: the lab's operator removes the bench's copies there."""
    subprocess.run(["docker", "exec", STORE, "rm", "-rf", f"{STORE_ROOT}/{STORE_BENCH}"], check=True)


def backup_tool(*args):
    """``montaiguillon-backup`` on the server (the installed cron tool), with the bench configuration."""
    out = on_server(f"nice -n 10 ionice -c2 -n7 montaiguillon-backup --config {BENCH_CONFIG} --json {' '.join(args)}")
    return json.loads(out)


def keep_only(backup_id):
    """Leave ``backup_id`` alone in the bench directory (its dump, manifest, drill record)."""
    on_server(f'cd {BENCH_DIR} && for f in *; do case $f in {backup_id}.*) ;; *) rm -rf -- "$f";; esac; done')


def drill_from_offsite(backup_id):
    """The weekly drill as production runs it: the store's copy fetched beside the backups, then drilled.

    Returns the drill record with ``fetch_seconds``, and the window to measure the writer in: the drill's
    own span (Ansible starting up on this 2-core controller is not the drill's cost).
    """
    on_server(f"rm -rf {DRILL_SCRATCH}")
    fetched = backup_tool("fetch", "--backup", backup_id, "--into", DRILL_SCRATCH)["fetch"]
    result = module("mysql_restore", {
        "mode": "drill", "backup_dir": DRILL_SCRATCH, "backup": backup_id, "record_dir": BENCH_DIR,
        "drill_source": "offsite", "database": DB, "drill_timeout": 600, "decrypt_identity_file": IDENTITY_ON_SERVER,
    })["drill"]  # fmt: skip
    on_server(f"rm -rf {DRILL_SCRATCH}")
    span = (datetime.fromisoformat(result[key]).timestamp() for key in ("started_at", "finished_at"))
    return {**result, "fetch_seconds": fetched["seconds"]}, *span


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
    prepare_offsite()
    try:
        return run(opts)
    finally:
        on_server(f"touch {WORK_DIR}/writer.stop")  # a writer left by a failed step stops by itself
        on_server(f"rm -rf {os.path.dirname(IDENTITY_ON_SERVER)} {DRILL_SCRATCH}")
        forget_store_bench()
        if not opts.keep:
            sql(f"DROP DATABASE IF EXISTS {DB}", database="mysql")
            on_server(f"rm -rf {BENCH_DIR} {WORK_DIR}")
        if cron_was_active:
            on_server("systemctl start cron")


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


def ours_at(rate, encrypt=True):
    result = our_backup(rate, encrypt=encrypt)
    return (result, *result["wall"])


def baseline():
    start = time.time()
    result = baseline_backup()
    return result, start, time.time()


def measure(opts, max_rate, rows):
    """Every step, in order; the figures and the writer's windows (name, alone, during)."""
    m = {"max_rate": max_rate, "windows": []}
    paced = [
        with_writer(f"our backup (zstd + age, max_rate {max_rate}) {i + 1}/{opts.windows}", lambda: ours_at(max_rate))
        for i in range(max(1, opts.windows))
    ]
    m["ours"] = paced[0][0]
    m["ours_seconds"] = statistics.median(result["duration_seconds"] for result, _alone, _during in paced)
    m["p99_ratios"] = [during["p99"] / alone["p99"] for _result, alone, during in paced]
    for i, (_result, alone, during) in enumerate(paced):
        m["windows"].append((f"during our backup ({max_rate}) {i + 1}/{len(paced)}", alone, during))
    m["full"], *window = with_writer("our backup at full speed (max_rate 0)", lambda: ours_at("0"))
    m["windows"].append(("during our backup (full speed)", *window))
    (m["base_seconds"], m["base_size"]), *window = with_writer("baseline backup (mariadb-dump | gzip)", baseline)
    m["windows"].append(("during mariadb-dump|gzip", *window))

    print("our backup without encryption (what age costs) ...", flush=True)
    m["plain"] = our_backup(max_rate, encrypt=False)
    print("our restore (mysql_restore, the identity brought for it) ...", flush=True)
    m["restored"], m["restore_wall"] = our_restore(m["ours"]["id"])
    assert int(sql("SELECT COUNT(*) FROM bench_rows")) == rows
    print("baseline restore (mariadb < dump.sql) ...", flush=True)
    m["base_restore"] = baseline_restore()
    assert int(sql("SELECT COUNT(*) FROM bench_rows")) == rows

    keep_only(m["ours"]["id"])
    print("offsite copy of the backup to the store (montaiguillon-backup offsite) ...", flush=True)
    m["offsite"] = backup_tool("offsite")["offsite"]
    m["drill"], *window = with_writer("restore drill of the offsite copy", lambda: drill_from_offsite(m["ours"]["id"]))
    m["windows"].append(("during the drill of the offsite copy", *window))
    return m


def print_figures(m, size, rows):
    ours, max_rate, drill = m["ours"], m["max_rate"], m["drill"]
    sql_bytes, mib = ours["uncompressed_bytes"], 1024 * 1024

    def line(name, seconds, size_bytes=None, note=""):
        size_text = f"  {size_bytes / mib:>6.0f} MiB" if size_bytes is not None else " " * 12
        print(f"{name:<40}{seconds:>9.1f}  {sql_bytes / mib / seconds:>7.1f} MiB/s{size_text}{note}")

    print()
    print(f"data: {size / 1024**3:.2f} GiB InnoDB, {rows} rows, dump {sql_bytes / mib:.0f} MiB of SQL")
    print(f"{'':<40}{'seconds':>9}  {'throughput':>14}  {'size':>10}")
    line(f"backup  ours (zstd + age, {max_rate})", m["ours_seconds"], ours["compressed_bytes"],
         f"   median of {len(m['p99_ratios'])}")  # fmt: skip
    line("backup  ours (zstd + age, full speed)", m["full"]["duration_seconds"], m["full"]["compressed_bytes"])
    line(f"backup  ours (zstd, no age, {max_rate})", m["plain"]["duration_seconds"], m["plain"]["compressed_bytes"])
    line("backup  mariadb-dump | gzip -6", m["base_seconds"], m["base_size"])
    line("restore ours (mysql_restore), load", m["restored"]["load_seconds"])
    line("  + row-count check of every table", m["restored"]["seconds"], None,
         f"   (with Ansible: {m['restore_wall']:.1f} s)")  # fmt: skip
    line("restore mariadb < dump.sql", m["base_restore"])
    line("offsite copy (rsync over ssh, append-only)", m["offsite"]["seconds"], ours["compressed_bytes"])
    line("drill   fetch of the offsite copy", drill["fetch_seconds"], ours["compressed_bytes"])
    line("drill   load + check, throwaway server", drill["restore_seconds"], None,
         f"   total {drill['total_seconds']:.1f} s, {drill['status']}")  # fmt: skip
    print()
    print(f"writer latency (ms){'samples':>29} {'p50':>7} {'p99':>7}   {'alone before: p50':>17} {'p99':>7}  p99 ratio")
    for name, alone, lat in m["windows"]:
        print(f"  {name:<38}{lat['n']:>7} {lat['p50']:>7.2f} {lat['p99']:>7.2f}   {alone['p50']:>17.2f}"
              f" {alone['p99']:>7.2f}  {lat['p99'] / alone['p99']:.1f}x")  # fmt: skip
    print("  of which the writer waited for a core (p99, ms) | the machine's steal time (%), during / alone before")
    for name, alone, lat in m["windows"]:
        print(f"  {name:<38}  wait {lat['runq_p99']:>6.2f} / {alone['runq_p99']:<6.2f}"
              f"  steal {lat['steal']:>4.1f} / {alone['steal']:.1f}")  # fmt: skip


def checks(m):
    """(name, value, target, met) for each target, against the baseline of the same run."""
    backup_ratio = m["base_seconds"] / m["ours_seconds"]
    restore_ratio = m["base_restore"] / m["restored"]["load_seconds"]
    worst = max(m["p99_ratios"])
    drill_seconds = m["drill"]["fetch_seconds"] + m["drill"]["total_seconds"]
    return [
        ("backup (zstd + age) throughput vs baseline", backup_ratio, f">= {TARGETS['backup']}x",
         backup_ratio >= TARGETS["backup"]),
        ("restore (load) throughput vs baseline", restore_ratio, f">= {TARGETS['restore']}x",
         restore_ratio >= TARGETS["restore"]),
        ("size, ours / baseline", m["ours"]["compressed_bytes"] / m["base_size"], "(smaller is better)", True),
        (f"writer p99 during backup ({m['max_rate']}) / before", worst, f"<= {TARGETS['p99']}x",
         worst <= TARGETS["p99"]),
        ("drill of the offsite copy, fetch + drill (s)", drill_seconds, f"< {TARGETS['drill']:.0f} s",
         drill_seconds < TARGETS["drill"] and m["drill"]["status"] == "passed"),
    ]  # fmt: skip


def run(opts):
    generate(opts.size_gib, opts.regenerate)
    rows = int(sql("SELECT COUNT(*) FROM bench_rows"))
    size = data_bytes()
    print(f"database: {size / 1024**3:.2f} GiB of InnoDB data, {rows} rows; writer {WRITER_RATE}/s", flush=True)
    figures = measure(opts, opts.max_rate or role_max_rate(), rows)
    print_figures(figures, size, rows)
    print()
    results = checks(figures)
    for name, value, target, ok in results:
        print(f"{name:<46}{value:>8.2f}   {target:<20}{'ok' if ok else 'MISSED'}")
    ratios = figures["p99_ratios"]
    if len(ratios) > 1:
        print(f"  (writer p99 ratio: the worst of {len(ratios)} paced backups;"
              f" all: {', '.join(f'{r:.2f}' for r in ratios)})")  # fmt: skip
    return 0 if all(ok for *_, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
