"""Restore drills: the newest backup into a throwaway server, checked and recorded beside it."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import time

from ansible.module_utils.montaiguillon.backup import mysql
from ansible.module_utils.montaiguillon.backup.catalog import _read_json, write_json
from ansible.module_utils.montaiguillon.backup.container import container_credentials, detect_tools, inspect_container
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.manifest import compare_row_counts
from ansible.module_utils.montaiguillon.backup.mysql import (
    HAS_PYMYSQL,
    count_rows,
    pymysql,
    query_one,
    quote_identifier,
    recreate_database,
)
from ansible.module_utils.montaiguillon.backup.restore import decompress_commands, restore_stream
from ansible.module_utils.montaiguillon.common.clock import iso, utcnow
from ansible.module_utils.montaiguillon.common.docker_engine import DockerException


def _wait_for_server(login, container_id, api, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        state = api.inspect_container(container_id)["State"]
        if not state.get("Running"):
            logs = api.logs(container_id, tail=20).decode(errors="replace")
            raise BackupError(f"the drill container stopped (exit {state.get('ExitCode')}): {logs.strip()[-800:]}")
        try:
            conn = mysql.connect(login)
        except BackupError as exc:
            last = exc
            time.sleep(0.5)
            continue
        # the image's entrypoint first runs a temporary server without networking,
        # then stops it: a probe can meet it going away (not ready yet, ask again)
        try:
            if int(query_one(conn, "SELECT @@skip_networking")[0]) == 0:
                return conn
        except pymysql.err.MySQLError as exc:
            last = exc
        with contextlib.suppress(Exception):
            conn.close()
        time.sleep(0.5)
    raise BackupError(f"the drill server did not become ready within {timeout} s: {last}")


def config_binds(container_info):
    """The server configuration bind-mounted into the source container (under /etc/mysql), read-only."""
    return [
        f"{mount['Source']}:{mount['Destination']}:ro"
        for mount in container_info.get("Mounts") or []
        if mount.get("Type") == "bind" and str(mount.get("Destination", "")).startswith("/etc/mysql")
    ]


# A drill is background work too: its server loads the whole backup at full
# speed on the site's cores. At Docker's smallest CPU weight it gets what the
# site leaves (as fast as at the default weight on an idle server: 93-97 s
# either way for the benchmark's 1 GiB); a 50/s writer's wait for a core at
# p99 during a drill, two A/B pairs: 1.31 and 1.38 ms, against 2.09 and 2.32 ms
# at the default weight.
DRILL_CPU_SHARES = 2


def run_drill(api, *, container, entry, identity_file=None, smoke_query, timeout=300):
    """Restore ``entry`` into a throwaway container of the same image and check it."""
    manifest = entry["manifest"]
    info = inspect_container(api, container)
    tools = detect_tools(api, container)
    commands = decompress_commands(manifest, entry["path"], identity_file)
    password = secrets.token_urlsafe(24)
    name = f"{info.get('Name', '/' + container).lstrip('/')}-drill-{secrets.token_hex(4)}"
    sockdir = tempfile.mkdtemp(prefix="mysql-drill-")
    login = {
        "login_user": "root",
        "login_password": password,
        "login_unix_socket": os.path.join(sockdir, "mysqld.sock"),
    }
    result = {
        "id": manifest["id"],
        "status": "failed",
        "started_at": iso(utcnow()),
        "image": info.get("Config", {}).get("Image"),
        "image_id": info.get("Image"),
        "container": name,
    }
    clock = time.monotonic()
    container_id = None
    try:
        container_id = _start_server(api, info, name, password, sockdir, manifest["id"])
        conn = _wait_for_server(login, container_id, api, timeout)
        result["startup_seconds"] = round(time.monotonic() - clock, 3)
        try:
            with container_credentials(api, container_id, "root", password) as cnf:
                result.update(_load_and_check(api, container_id, conn, cnf, tools, manifest, commands, smoke_query))
        finally:
            conn.close()
        result["status"] = "failed" if result["mismatches"] else "passed"
    except BackupError as exc:
        result["error"] = str(exc)
    except (DockerException, OSError) as exc:
        result["error"] = f"drill failed: {exc}"
    except Exception as exc:
        if HAS_PYMYSQL and isinstance(exc, pymysql.err.MySQLError):
            result["error"] = f"drill query failed: {exc}"
        else:
            raise
    finally:
        if container_id is not None:
            with contextlib.suppress(Exception):
                api.remove_container(container_id, v=True, force=True)
        shutil.rmtree(sockdir, ignore_errors=True)
    result["finished_at"] = iso(utcnow())
    result["total_seconds"] = round(time.monotonic() - clock, 3)
    return result


def _start_server(api, info, name, password, sockdir, backup_id):
    """A throwaway server of the live one's image and configuration: no network, the smallest CPU weight."""
    created = api.create_container(
        info.get("Image"),
        command=info.get("Config", {}).get("Cmd"),
        name=name,
        environment={"MYSQL_ROOT_PASSWORD": password},
        labels={"montaiguillon.backup-drill": backup_id},
        host_config=api.create_host_config(
            binds=[f"{sockdir}:/run/mysqld:rw", *config_binds(info)],
            network_mode="none",
            cpu_shares=DRILL_CPU_SHARES,
        ),
    )
    api.start(created["Id"])
    return created["Id"]


def _load_and_check(api, container_id, conn, cnf, tools, manifest, commands, smoke_query):
    """Load the backup into the throwaway server; its timings, row counts against the manifest's, the smoke query."""
    server = manifest.get("server") or {}
    recreate_database(conn, manifest["database"], server.get("charset"), server.get("collation"))
    clock = time.monotonic()
    restore_stream(api, container_id, tools["client"], cnf, manifest["database"], commands)
    load_seconds = round(time.monotonic() - clock, 3)
    actual = count_rows(conn, manifest["database"], manifest["row_counts"])
    restore_seconds = round(time.monotonic() - clock, 3)
    with conn.cursor() as cur:
        cur.execute(f"USE {quote_identifier(manifest['database'])}")
        cur.execute(smoke_query)
        rows = cur.fetchmany(5)
    return {
        "load_seconds": load_seconds,
        "restore_seconds": restore_seconds,
        "row_counts": actual,
        "mismatches": compare_row_counts(manifest["row_counts"], actual),
        "smoke_query": smoke_query,
        "smoke_result": [[str(v) if v is not None else None for v in row] for row in rows],
    }


def record_drill(backup_dir, entry, result):
    """Write ``{id}.drill.json`` in ``backup_dir`` and set ``verified`` on the backup's manifest there.

    The caller holds ``backup_dir``'s lock. The drilled copy may have been fetched elsewhere (the offsite
    copy, into a scratch directory): the record still goes where the backup is kept, and when that
    directory no longer has the backup's manifest (pruned there), the record stands alone.
    """
    backup_id = entry["id"]
    write_json(os.path.join(backup_dir, f"{backup_id}.drill.json"), result)
    manifest_path = os.path.join(backup_dir, os.path.basename(entry["manifest_path"]))
    kept = os.path.isfile(manifest_path)
    manifest = _read_json(manifest_path) if kept else dict(entry["manifest"])
    manifest["verified"] = result["status"] == "passed"
    manifest["last_drill"] = {
        "status": result["status"],
        "at": result["finished_at"],
        "restore_seconds": result.get("restore_seconds"),
        "source": result.get("source", "local"),
    }
    if kept:
        write_json(manifest_path, manifest)
    return manifest
