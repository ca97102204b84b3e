#!/usr/bin/python
"""Ansible module: take a checked, compressed backup of a MySQL/MariaDB database that runs in a container."""
# Over 400 lines for its documentation: DOCUMENTATION, EXAMPLES and RETURN are 257 of them (what
# ansible-doc shows); the rest, the argument spec and BackupManager, calls module_utils/montaiguillon/backup.

DOCUMENTATION = r"""
---
module: mysql_backup
short_description: Back up a MySQL/MariaDB database running in a Docker container, with retention
description:
  - Streams C(mariadb-dump) (or C(mysqldump)) from inside the database container through Docker exec,
    with C(--single-transaction) so writes are never blocked, and the binlog and GTID position in the
    dump header (C(--master-data=2 --gtid) on MariaDB, C(--source-data=2) on MySQL 8.0.26 and later).
  - Compresses on the server as the bytes arrive (C(zstd), or C(gzip)), optionally encrypts with C(age),
    and writes C({backup_dir}/{id}.sql.zst.partial), renamed to its final name only after fsync and checks.
    No uncompressed copy ever touches the disk; the sha256 is computed while writing.
  - Checks the dump's exit code, its C(-- Dump completed) trailer and a minimum size. A failed backup
    (including a full disk) removes its partial file and leaves earlier backups untouched.
  - Writes a manifest C({id}.json) beside the dump, atomically. It records the server image and version,
    binlog file, position and GTID, sizes, sha256, per-table row counts, timings, tool and flags, kind and label.
    Row counts are counted in the dump stream itself, so they belong to the same snapshot as the data.
  - Applies the retention policy only after the new backup is complete and checked. The newest
    backup and the newest drill-verified one (see M(mysql_restore) C(mode=drill)) are never pruned.
  - Credentials reach the dump tool through a mode 0600 C(--defaults-extra-file) placed in a private
    C(mktemp -d) directory of the container through the Docker archive API and removed afterwards; they are
    never on a command line.
  - With O(state=list), lists the backups (newest first) with their manifests and drill results.
  - Backups, restores and pruning of one O(backup_dir) are serialised by a lock file C({backup_dir}/.lock).
version_added: "0.1.0"
author: Montaiguillon infrastructure (@montaiguillon)
options:
  state:
    description:
      - V(present) takes a backup then applies retention.
      - V(list) only lists the backups in O(backup_dir).
    type: str
    choices: [present, list]
    default: present
  backup_dir:
    description:
      - Directory holding the backups on the server. Created (mode 0700) when missing.
    type: path
    required: true
  database:
    description:
      - Database to back up. Required with O(state=present); with O(state=list), only lists its backups.
    type: str
  kind:
    description: Why this backup is taken; part of its id and recorded in the manifest.
    type: str
    choices: [scheduled, manual, pre-deploy, safety]
    default: manual
  label:
    description: Free text recorded in the manifest, for example the release id of a deploy.
    type: str
    default: ""
  compression:
    description:
      - Compressor run on the server. V(zstd) falls back to V(gzip) with a warning when the binary is missing.
    type: str
    choices: [zstd, gzip]
    default: zstd
  min_size_bytes:
    description: An uncompressed dump smaller than this is an error (an empty or broken dump).
    type: int
    default: 1024
  max_rate:
    description:
      - Most bytes of dump per second, like C(20M), C(512k) or C(1G) (binary units); V(0) means no limit.
      - A paced dump leaves CPU to the site. On a small server a dump at full speed takes every core
        (the database thread serving it, the dump tool, the compressor) and the site's own queries wait
        for one; C(benchmarks/backup.py) measures the writer latency this costs, with and without a limit.
    type: str
    default: "0"
  encrypt_recipient_file:
    description:
      - Path on the server of an C(age) recipients file (public keys). When set, the compressed dump is
        piped through C(age -R) and the file ends in C(.age). Fails when the C(age) binary is missing.
    type: path
  retention:
    description:
      - Which complete backups of O(database) to keep; the others are deleted after a successful backup.
      - Deploys never crowd the ladder, and so never make the stale-backup gate refuse a deploy.
      - Periods are counted in UTC and only periods that have a backup count, as in restic.
    type: dict
    default: {}
    suboptions:
      keep_last:
        description: Keep this many newest backups whatever their age.
        type: int
        default: 3
      daily:
        description: Keep the newest backup of each of this many most recent days.
        type: int
        default: 7
      weekly:
        description: Keep the newest backup of each of this many most recent ISO weeks.
        type: int
        default: 4
      monthly:
        description: Keep the newest backup of each of this many most recent months.
        type: int
        default: 6
      snapshots:
        description:
          - Pre-deploy and safety snapshots have their own pool, apart from the ladder above (which keeps
            scheduled and manual backups). Keep this many newest.
        type: int
        default: 5
      snapshot_days:
        description: Prune pre-deploy and safety snapshots older than this many days (the newest one stays).
        type: int
        default: 7
  prune:
    description: Apply O(retention) after the backup. V(false) keeps everything.
    type: bool
    default: true
  change_lock_file:
    description:
      - The server's change lock, shared with deploys, rollbacks and restores (the roles point all of them at
        one file). Pruning holds it, so it never removes a backup a restore is loading; when a holder keeps it
        past O(change_lock_wait), pruning is skipped with a warning (the new backup is kept, the next run prunes).
      - Unset, pruning takes no lock.
    type: path
  change_lock_wait:
    description: Seconds pruning waits for the change lock before skipping.
    type: float
    default: 60
  verify_checksums:
    description: With O(state=list), also hash every dump and report C(checksum_ok) (reads every file).
    type: bool
    default: false
  max_age_hours:
    description:
      - Also judge whether a deploy may go on (RV(freshness)) - the newest good C(scheduled) or
        C(manual) backup of O(database) is at most this many hours old (pre-deploy and safety snapshots
        do not count). With O(state=present) the judgement comes before the dump (see O(refuse_stale)).
    type: float
  refuse_stale:
    description:
      - With O(state=present) and O(max_age_hours), take no backup when the judgement fails - RV(refused)
        says why and nothing changes. A pre-deploy snapshot is then one call, not a list and a backup.
    type: bool
    default: false
requirements:
  - zstd or gzip on the server; age when O(encrypt_recipient_file) is set
  - the database container has mariadb-dump or mysqldump, a client, sh, and a writable /tmp
attributes:
  check_mode:
    details: Connects and reads only; reports the backup it would take and the backups retention would prune.
  idempotent:
    support: none
    description:
      - Every run with O(state=present) takes a new backup (C(changed=true)); O(state=list) never changes anything.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - server_module
  - mysql_container
notes:
  - Consistency with C(--single-transaction) covers transactional (InnoDB) tables only.
  - Backup files are mode 0600; the dump holds every row of the database.
  - A killed run can leave C(*.partial) files; the next backup removes them (under the lock).
seealso:
  - module: mysql_restore
"""

EXAMPLES = r"""
- name: Take the nightly backup
  mysql_backup:
    backup_dir: /var/backups/montaiguillon/mysql
    database: montaiguillon
    container: mysql
    kind: scheduled
    login_password: "{{ mysql_root_password }}"
    retention:
      daily: 7
      weekly: 4
      monthly: 6

- name: Back up before a deploy, linked to the release
  mysql_backup:
    backup_dir: /var/backups/montaiguillon/mysql
    database: montaiguillon
    kind: pre-deploy
    label: "{{ release_id }}"
    login_password: "{{ mysql_root_password }}"
  register: predeploy_backup

- name: List the backups
  mysql_backup:
    state: list
    backup_dir: /var/backups/montaiguillon/mysql
    database: montaiguillon
  register: backups
"""

RETURN = r"""
backup:
  description: Manifest of the backup taken (O(state=present)); in check mode only the planned id and file.
  returned: state is present
  type: dict
  sample:
    id: 20261126T091108Z-manual
    status: complete
    database: montaiguillon
    file: 20261126T091108Z-manual.sql.zst
    path: /var/backups/montaiguillon/mysql/20261126T091108Z-manual.sql.zst
    manifest_path: /var/backups/montaiguillon/mysql/20261126T091108Z-manual.json
    kind: manual
    label: ""
    started_at: "2026-11-26T09:11:08Z"
    finished_at: "2026-11-26T09:11:09Z"
    duration_seconds: 0.84
    compression: zstd
    encryption: null
    sha256: 3f1c...
    compressed_bytes: 1532
    uncompressed_bytes: 6210
    server:
      container: mysql
      image: montaiguillon/mariadb:10.11
      image_id: sha256:47e0...
      version: 10.11.19-MariaDB-0+deb12u1-log
      charset: utf8mb4
      collation: utf8mb4_general_ci
    binlog: {file: mysql-bin.000001, position: 2218, gtid: 0-1-8}
    tool: {name: mariadb-dump, flags: [--single-transaction, --quick, "..."], transport: fifo}
    pacing: {max_rate_bytes: 26214400, paused_seconds: 0.31, cpu_cgroup: idle group beside the database container}
    row_counts: {users: 3, orders: 12}
    row_counts_source: dump
    verified: false
pruned:
  description: Ids of the backups deleted by retention (in check mode, those that would be).
  returned: state is present
  type: list
  elements: str
backups:
  description: Backups in O(backup_dir), newest first.
  returned: state is list
  type: list
  elements: dict
  contains:
    id: {description: Backup id, type: str}
    taken_at: {description: UTC time from the id, type: str}
    status:
      description: complete, incomplete (no manifest), invalid, failed, missing-file or size-mismatch.
      type: str
    problems: {description: What is wrong when not complete, type: list}
    path: {description: Dump file, type: str}
    manifest: {description: The manifest, type: dict}
    drill: {description: "The last drill record, or null", type: dict}
    checksum_ok: {description: "With O(verify_checksums), whether the sha256 matches", type: bool}
freshness:
  description: With O(max_age_hours), whether the backups are fresh enough to deploy.
  returned: max_age_hours is set
  type: dict
  contains:
    ok: {description: The newest good scheduled or manual backup is young enough, type: bool}
    newest: {description: "Its id, or null when there is none", type: str}
    age_hours: {description: "Its age in hours (one decimal), or null", type: float}
    reason: {description: "The judgement in words, e.g. C(the newest good backup (ID) is 47.9 h old)", type: str}
refused:
  description: Why no backup was taken (RV(freshness)'s reason), with O(refuse_stale) and stale backups.
  returned: state is present, refuse_stale is true and the backups are stale
  type: str
latest_good:
  description: Id of the newest complete backup (checksum verified too with O(verify_checksums)), or null.
  returned: state is list
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.montaiguillon.backup.catalog import (
    backup_dir_lock,
    backup_freshness,
    latest_good,
    list_backups,
    public_entry,
    verify_backup_file,
)
from ansible.module_utils.montaiguillon.backup.container import docker_api, inspect_container
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.ids import dump_file_name, make_backup_id
from ansible.module_utils.montaiguillon.backup.mysql import (
    CONTAINER_ARGUMENT_SPEC,
    ContainerModule,
    existing_database_facts,
)
from ansible.module_utils.montaiguillon.backup.retention import plan_retention, prune_under_lock
from ansible.module_utils.montaiguillon.backup.settings import BackupSettings
from ansible.module_utils.montaiguillon.backup.take import run_backup
from ansible.module_utils.montaiguillon.common.clock import iso, utcnow


def argument_spec():
    return {
        "state": {"type": "str", "choices": ["present", "list"], "default": "present"},
        "backup_dir": {"type": "path", "required": True},
        "database": {"type": "str"},
        "kind": {"type": "str", "choices": ["scheduled", "manual", "pre-deploy", "safety"], "default": "manual"},
        "label": {"type": "str", "default": ""},
        **BackupSettings.argument_spec(),
        "prune": {"type": "bool", "default": True},
        "change_lock_file": {"type": "path"},
        "change_lock_wait": {"type": "float", "default": 60},
        "verify_checksums": {"type": "bool", "default": False},
        "max_age_hours": {"type": "float"},
        "refuse_stale": {"type": "bool", "default": False},
        **CONTAINER_ARGUMENT_SPEC,
    }


class BackupManager(ContainerModule):
    def list(self):
        entries = list_backups(self.params["backup_dir"], self.params["database"])
        result = []
        good = None
        for entry in entries:
            item = public_entry(entry)
            if self.params["verify_checksums"] and entry["status"] == "complete":
                ok, _detail, message = verify_backup_file(entry["path"], entry["manifest"])
                item["checksum_ok"] = ok
                if not ok:
                    item["problems"] = [*item["problems"], message.replace("; nothing was changed", "")]
                if ok and good is None:
                    good = entry["id"]
            result.append(item)
        if not self.params["verify_checksums"]:
            newest = latest_good(entries)
            good = newest["id"] if newest else None
        answer = {"changed": False, "backups": result, "latest_good": good}
        if self.params["max_age_hours"] is not None:
            answer["freshness"] = self.freshness(entries)
        return answer

    def freshness(self, entries=None):
        """backup_freshness of the backups in backup_dir against max_age_hours."""
        params = self.params
        if entries is None:
            entries = list_backups(params["backup_dir"], params["database"])
        return backup_freshness(
            entries,
            backup_dir=params["backup_dir"],
            database=params["database"],
            max_age_hours=params["max_age_hours"],
            now=utcnow(),
        )

    def plan(self):
        """Check mode: read-only probes, then what would be written and pruned."""
        params = self.params
        api = docker_api(params["docker_host"])
        inspect_container(api, params["container"])
        existing_database_facts(self.login, params["database"], params["container"])
        now = utcnow()
        backup_dir = params["backup_dir"]
        existing = os.listdir(backup_dir) if os.path.isdir(backup_dir) else []
        backup_id = make_backup_id(now, params["kind"], lambda c: any(n.startswith(c + ".") for n in existing))
        file_name = dump_file_name(backup_id, params["compression"], bool(params["encrypt_recipient_file"]))
        pruned = []
        if params["prune"]:
            entries = list_backups(backup_dir, params["database"])
            _kept, pruned = plan_retention(entries, params["retention"], params["database"], extra=(backup_id, now))
        backup = {
            "id": backup_id,
            "status": "planned",
            "database": params["database"],
            "file": file_name,
            "path": os.path.join(backup_dir, file_name),
            "kind": params["kind"],
            "label": params["label"],
            "started_at": iso(now),
        }
        return {"changed": True, "backup": backup, "pruned": pruned}

    def present(self):
        params = self.params
        if not params["database"]:
            self.module.fail_json(msg="database is required with state=present")
        settings = BackupSettings.from_mapping(params)  # bad input fails before anything is done
        judged = {}
        if params["max_age_hours"] is not None:
            judged["freshness"] = self.freshness()
            if params["refuse_stale"] and not judged["freshness"]["ok"]:
                return {
                    "changed": False,
                    "backup": {},
                    "pruned": [],
                    "refused": judged["freshness"]["reason"],
                    **judged,
                }
        if self.module.check_mode:
            return {**self.plan(), **judged}
        backup_dir = params["backup_dir"]
        try:
            os.makedirs(backup_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise BackupError(f"cannot create backup_dir {backup_dir}: {exc.strerror}") from exc
        api = docker_api(params["docker_host"])
        with backup_dir_lock(backup_dir, params["lock_timeout"]):
            backup = run_backup(
                api,
                self.login,
                container=params["container"],
                database=params["database"],
                backup_dir=backup_dir,
                kind=params["kind"],
                label=params["label"],
                warn=self.module.warn,
                **settings.take(),
            )
            pruned = []
            if params["prune"]:
                pruned = prune_under_lock(
                    backup_dir,
                    params["database"],
                    params["retention"],
                    lock_file=params["change_lock_file"],
                    wait=params["change_lock_wait"],
                    who=f"mysql_backup ({params['kind']} {backup['id']})",
                    warn=self.module.warn,
                )
        return {"changed": True, "backup": backup, "pruned": pruned, **judged}


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    manager = BackupManager(module)
    try:
        result = manager.list() if module.params["state"] == "list" else manager.present()
    except BackupError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
