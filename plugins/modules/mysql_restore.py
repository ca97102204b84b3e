#!/usr/bin/python
"""Ansible module: verify, restore or drill-restore a backup taken by mysql_backup."""

DOCUMENTATION = r"""
---
module: mysql_restore
short_description: Verify, restore (optionally to a point in time) or drill a MySQL/MariaDB backup
description:
  - Works on backups written by M(mysql_backup). Before anything else, checks the manifest and the
    dump's sha256; a mismatch fails with C(backup ID is corrupt - sha256 mismatch) and changes nothing.
  - V(verify) mode stops there (read-only).
  - V(restore) mode first takes a safety backup of the current database (kind C(safety), its id returned
    as the undo path), drops and recreates the database, streams the decompressed dump into the client
    inside the container (Docker exec with stdin), then compares every table's row count with the manifest.
    With O(stop_datetime) it then replays the binary logs from the backup's binlog position up to that
    time (point-in-time recovery), from the server's binlogs or copies in C({backup_dir}/binlogs/).
  - V(drill) mode restores into a throwaway container of the same image as O(container) (no network,
    random root password), compares row counts, runs O(smoke_query), measures the restore time (RTO),
    removes the container, writes C({id}.drill.json) and marks the manifest C(verified).
  - The restore and the binlog replay are not written to the server's binary log unless O(log_restore) is set.
version_added: "0.1.0"
author: Montaiguillon infrastructure (@montaiguillon)
options:
  mode:
    description: What to do with the backup.
    type: str
    choices: [restore, drill, verify]
    default: restore
  backup_dir:
    description: Directory holding the backups on the server.
    type: path
    required: true
  backup:
    description:
      - Backup id, or V(latest) for the newest complete backup (of O(database) when given) whose checksum verifies.
    type: str
    default: latest
  database:
    description:
      - Database to restore into; defaults to the database recorded in the manifest.
      - With O(backup=latest), only backups of this database are considered.
    type: str
  safety_backup:
    description: In V(restore) mode, back up the current database first (skipped when it does not exist).
    type: bool
    default: true
  safety_backup_dir:
    description:
      - Where the safety backup goes; defaults to O(backup_dir). Set when O(backup_dir) holds a backup brought
        for this restore only (prod's, copied to the test server), so the undo path stays with the server's own
        backups.
    type: path
  stop_datetime:
    description:
      - Point-in-time recovery target, an ISO date-time such as C(2026-11-26 09:30:00) (no zone means UTC).
        Events at or after it are not replayed. The backup must have a binlog position.
      - With O(backup=latest), the newest complete backup started before it is the one restored
        (in every mode, so V(verify) names the backup a restore would start from).
    type: str
  decrypt_identity_file:
    description:
      - C(age) identity file on the server, needed for encrypted backups (not for V(verify)) and for
        point-in-time recovery from encrypted shipped binlogs (C({backup_dir}/binlogs/*.age)).
    type: path
  smoke_query:
    description: Query run against the restored database in V(drill) mode.
    type: str
    default: SELECT COUNT(*) FROM information_schema.tables
  drill_timeout:
    description: Seconds to wait for the drill container's server to accept connections.
    type: int
    default: 300
  record_dir:
    description:
      - V(drill) mode - the directory where the backup is kept, to record the drill in (C({id}.drill.json), the
        manifest's C(verified)), when O(backup_dir) holds a copy fetched for the drill, such as the offsite
        copy brought into a scratch directory. Defaults to O(backup_dir).
    type: path
  drill_source:
    description: V(drill) mode - where the drilled copy came from, written in the drill record.
    type: str
    choices: [local, offsite]
    default: local
  log_restore:
    description:
      - Write the restored data and replayed events to the server's binary log (needed when it has replicas).
        Off by default, so the binlog keeps only real history and a later point-in-time recovery stays clean.
    type: bool
    default: false
  encrypt_recipient_file:
    description:
      - Path on the server of an C(age) recipients file (public keys). When set, the safety backup is
        encrypted like every other backup (its file ends in C(.age)); set it whenever backups are encrypted,
        or the safety backup is a plaintext dump beside the encrypted ones.
    type: path
  compression:
    description: Compression of the safety backup.
    type: str
    choices: [zstd, gzip]
    default: zstd
requirements:
  - zstd or gzip on the server (as the backup used); age for encrypted backups
attributes:
  check_mode:
    details: The checksum is verified in check mode too; nothing is restored, started or written.
  idempotent:
    support: none
    description: V(restore) and V(drill) always act; V(verify) never changes anything.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - server_module
  - mysql_container
notes:
  - Stop the application's writers before a restore; the database is dropped and recreated.
  - The drill container is named C({container}-drill-{random}) and carries the label C(montaiguillon.backup-drill).
seealso:
  - module: mysql_backup
"""

EXAMPLES = r"""
- name: Check the newest backup without touching anything
  mysql_restore:
    mode: verify
    backup_dir: /var/backups/montaiguillon/mysql
    database: montaiguillon

- name: Weekly restore drill (records the RTO and marks the backup verified)
  mysql_restore:
    mode: drill
    backup_dir: /var/backups/montaiguillon/mysql
    database: montaiguillon
    smoke_query: SELECT COUNT(*) FROM users

- name: Roll the database back to the pre-deploy backup of a release
  mysql_restore:
    backup_dir: /var/backups/montaiguillon/mysql
    backup: "{{ predeploy_backup.backup.id }}"
    login_password: "{{ mysql_root_password }}"
  register: restored

- name: Recover to just before a bad statement
  mysql_restore:
    backup_dir: /var/backups/montaiguillon/mysql
    database: montaiguillon
    stop_datetime: "2026-11-26 14:02:00"
    login_password: "{{ mysql_root_password }}"
"""

RETURN = r"""
backup:
  description: Manifest of the backup used (after a drill, with C(verified) updated).
  returned: always
  type: dict
checksum:
  description: The sha256 check.
  returned: always
  type: dict
  sample: {expected: 3f1c..., actual: 3f1c..., ok: true}
safety_backup:
  description: Manifest of the safety backup taken before the restore; restore its C(id) to undo.
  returned: mode is restore and a safety backup was taken
  type: dict
restore:
  description: What the restore did.
  returned: mode is restore
  type: dict
  sample:
    database: montaiguillon
    seconds: 1.9
    load_seconds: 1.7
    row_counts: {users: 3}
    expected_row_counts: {users: 3}
    row_counts_after_pitr: {users: 5}
pitr:
  description: The binlog replay, with O(stop_datetime).
  returned: mode is restore and stop_datetime is set
  type: dict
  sample: {from: {file: mysql-bin.000001, position: 2218, gtid: 0-1-8}, stop_datetime: "2026-11-26T09:30:00Z",
           files: [mysql-bin.000001]}
drill:
  description: The drill record, as written to C({id}.drill.json).
  returned: mode is drill
  type: dict
  sample:
    status: passed
    restore_seconds: 1.2
    load_seconds: 1.1
    startup_seconds: 4.1
    total_seconds: 5.6
    row_counts: {users: 3}
    mismatches: []
    smoke_result: [["312"]]
    source: local
"""

import contextlib
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.montaiguillon.backup.binlogs import parse_stop_datetime
from ansible.module_utils.montaiguillon.backup.catalog import backup_dir_lock
from ansible.module_utils.montaiguillon.backup.container import (
    container_credentials,
    detect_tools,
    docker_api,
    fifo_directory,
    inspect_container,
)
from ansible.module_utils.montaiguillon.backup.drill import record_drill, run_drill
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.manifest import compare_row_counts
from ansible.module_utils.montaiguillon.backup.mysql import (
    CONTAINER_ARGUMENT_SPEC,
    ContainerModule,
    connect,
    count_rows,
    recreate_database,
    server_facts,
)
from ansible.module_utils.montaiguillon.backup.restore import (
    decompress_commands,
    load_backup,
    replay_binlogs,
    restore_stream,
)
from ansible.module_utils.montaiguillon.backup.settings import BackupSettings
from ansible.module_utils.montaiguillon.backup.take import run_backup


def argument_spec():
    return {
        "mode": {"type": "str", "choices": ["restore", "drill", "verify"], "default": "restore"},
        "backup_dir": {"type": "path", "required": True},
        "backup": {"type": "str", "default": "latest"},
        "database": {"type": "str"},
        "safety_backup": {"type": "bool", "default": True},
        "safety_backup_dir": {"type": "path"},
        "stop_datetime": {"type": "str"},
        "decrypt_identity_file": {"type": "path"},
        "smoke_query": {"type": "str", "default": "SELECT COUNT(*) FROM information_schema.tables"},
        "drill_timeout": {"type": "int", "default": 300},
        "record_dir": {"type": "path"},
        "drill_source": {"type": "str", "choices": ["local", "offsite"], "default": "local"},
        "log_restore": {"type": "bool", "default": False},
        **BackupSettings.argument_spec(["compression", "encrypt_recipient_file"]),  # of the safety backup
        **CONTAINER_ARGUMENT_SPEC,
    }


class RestoreManager(ContainerModule):
    def run(self):
        params = self.params
        stop_at = parse_stop_datetime(params["stop_datetime"]) if params["stop_datetime"] else None
        entry, actual = load_backup(
            params["backup_dir"], params["backup"], params["database"], self.module.warn, before=stop_at
        )
        manifest = entry["manifest"]
        result = {
            "changed": False,
            "backup": {**manifest, "path": entry["path"]},
            "checksum": {"expected": manifest["sha256"], "actual": actual, "ok": True},
        }
        if params["mode"] == "verify":
            return result
        if self.module.check_mode:
            result["changed"] = True
            result["msg"] = f"would {params['mode']} backup {entry['id']}"
            return result
        if params["mode"] == "drill":
            return self.drill(entry, result)
        return self.restore(entry, stop_at, result)

    def drill(self, entry, result):
        params = self.params
        api = docker_api(params["docker_host"])
        drill = run_drill(
            api,
            container=params["container"],
            entry=entry,
            identity_file=params["decrypt_identity_file"],
            smoke_query=params["smoke_query"],
            timeout=params["drill_timeout"],
        )
        drill["source"] = params["drill_source"]
        record_dir = params["record_dir"] or params["backup_dir"]
        with backup_dir_lock(record_dir, params["lock_timeout"]):
            manifest = record_drill(record_dir, entry, drill)
        result.update(changed=True, drill=drill, backup={**manifest, "path": entry["path"]})
        if drill["status"] != "passed":
            reason = drill.get("error") or f"row counts differ: {drill.get('mismatches')}"
            self.module.fail_json(msg=f"restore drill of backup {entry['id']} failed: {reason}", **result)
        return result

    def restore(self, entry, stop_at, result):
        params = self.params
        manifest = entry["manifest"]
        database = params["database"] or manifest["database"]
        api = docker_api(params["docker_host"])
        info = inspect_container(api, params["container"])
        tools = detect_tools(api, params["container"])
        commands = decompress_commands(manifest, entry["path"], params["decrypt_identity_file"])
        shared = fifo_directory(api, params["container"], info, self.login)
        safety_dir = params["safety_backup_dir"] or params["backup_dir"]
        with contextlib.ExitStack() as locks:
            for directory in dict.fromkeys((params["backup_dir"], safety_dir)):
                locks.enter_context(backup_dir_lock(directory, params["lock_timeout"]))
            conn = connect(self.login)
            try:
                exists = server_facts(conn, database)["exists"]
            finally:
                conn.close()
            safety = None
            if params["safety_backup"] and exists:
                safety = run_backup(
                    api,
                    self.login,
                    container=params["container"],
                    database=database,
                    backup_dir=safety_dir,
                    kind="safety",
                    label=f"before restore of {entry['id']}",
                    warn=self.module.warn,
                    # the restore runs behind the maintenance page: the safety backup is not paced
                    **BackupSettings.from_mapping(params).take(min_size_bytes=0),
                )
                result["safety_backup"] = safety
            elif params["safety_backup"]:
                self.module.warn(f"database {database} does not exist yet: no safety backup taken")
            undo = f" The state before the restore is in safety backup {safety['id']}." if safety else ""
            try:
                result["restore"] = self._load(api, tools, commands, manifest, database, stop_at, result, shared)
            except BackupError as exc:
                raise BackupError(f"restore of backup {entry['id']} into {database} failed: {exc}.{undo}") from exc
        result["changed"] = True
        return result

    def _load(self, api, tools, commands, manifest, database, stop_at, result, shared=None):
        params = self.params
        server = manifest.get("server") or {}
        conn = connect(self.login)
        try:
            clock = time.monotonic()
            recreate_database(conn, database, server.get("charset"), server.get("collation"), params["log_restore"])
            with container_credentials(api, params["container"], params["login_user"], params["login_password"]) as cnf:
                restore_stream(
                    api, params["container"], tools["client"], cnf, database, commands, params["log_restore"], shared
                )
                load_seconds = round(time.monotonic() - clock, 3)
                counts = count_rows(conn, database, manifest["row_counts"])
                seconds = round(time.monotonic() - clock, 3)
                mismatches = compare_row_counts(manifest["row_counts"], counts)
                if mismatches:
                    raise BackupError(f"row counts differ from the manifest after loading the dump: {mismatches}")
                report = {
                    "database": database,
                    "seconds": seconds,
                    "load_seconds": load_seconds,
                    "row_counts": counts,
                    "expected_row_counts": manifest["row_counts"],
                }
                if stop_at is not None:
                    result["pitr"] = replay_binlogs(
                        api,
                        params["container"],
                        tools,
                        cnf,
                        conn,
                        database,
                        manifest,
                        stop_at,
                        params["backup_dir"],
                        params["log_restore"],
                        identity_file=params["decrypt_identity_file"],
                    )
                    report["row_counts_after_pitr"] = count_rows(conn, database, manifest["row_counts"])
            return report
        finally:
            conn.close()


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        result = RestoreManager(module).run()
    except BackupError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
