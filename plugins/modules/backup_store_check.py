#!/usr/bin/python
"""Ansible module: check from a server that its offsite store answers and is append-only."""

DOCUMENTATION = r"""
---
module: backup_store_check
short_description: Check from a server that its offsite backup store answers and refuses deletions
description:
  - Runs on the server whose backups go offsite, with the server's own SSH key, as its backups will.
  - Two read-only calls - a listing of the server's directory on the store (the store answers, its pinned host
    key and the server's key are accepted), then a dry run of C(rsync --delete) from an empty directory, which an
    append-only store (C(rrsync -no-del -no-overwrite) forced in its C(authorized_keys)) refuses.
  - Fails, saying which, when the store cannot be reached or would accept deletions; nothing is written on the
    store either way. The key and known_hosts live in a private temporary directory for the check only.
  - Used by the preflight play (before anything changes, for a store this run does not provision) and by the
    backup role once the key is installed.
version_added: "0.3.0"
author: Montaiguillon infrastructure (@montaiguillon)
options:
  host:
    description: The storage host.
    type: str
    required: true
  user:
    description: The server's account on the storage host.
    type: str
    default: offsite
  path:
    description: The server's directory on the store, relative to the account's root.
    type: str
    default: "."
  port:
    description: SSH port of the storage host.
    type: int
    default: 22
  ssh_private_key:
    description: The server's private SSH key for the store (from the vault).
    type: str
    required: true
  known_hosts:
    description: The storage host's pinned public key, as a known_hosts line.
    type: str
    required: true
  append_only:
    description: Require the store to refuse deletions. Off only for a mirror store (C(backup_offsite_delete)).
    type: bool
    default: true
  timeout:
    description: Seconds to wait for the store to answer.
    type: int
    default: 30
  when_tools_missing:
    description:
      - What to do when rsync or ssh is not installed on the server yet - V(skip) (the preflight of a server not
        provisioned yet; the backup role checks again once they are) or V(fail).
    type: str
    choices: [fail, skip]
    default: fail
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - server_module
attributes:
  check_mode:
    details: The check only reads; it runs in check mode too.
  idempotent:
    support: full
    description: Never changes anything.
seealso:
  - module: mysql_backup
"""

EXAMPLES = r"""
- name: Check the offsite store before anything changes
  backup_store_check:
    host: "{{ backup_offsite_host }}"
    user: "{{ backup_offsite_user }}"
    path: "{{ backup_offsite_path }}"
    ssh_private_key: "{{ backup_offsite_ssh_private_key }}"
    known_hosts: "{{ backup_offsite_known_hosts }}"
    when_tools_missing: skip
  no_log: true
"""

RETURN = r"""
target:
  description: The store, as rsync reaches it.
  returned: always
  type: str
  sample: offsite@backup.example.org:.
reachable:
  description: Whether the store answered with this server's key.
  returned: unless skipped
  type: bool
append_only:
  description: Whether the store refused the deletion probe (null when O(append_only) is off).
  returned: unless skipped
  type: bool
skipped_reason:
  description: Why nothing was checked (rsync or ssh missing, with O(when_tools_missing=skip)).
  returned: when skipped
  type: str
"""

import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.montaiguillon.backup.errors import BackupError
from ansible.module_utils.montaiguillon.backup.offsite import check_store


def argument_spec():
    return {
        "host": {"type": "str", "required": True},
        "user": {"type": "str", "default": "offsite"},
        "path": {"type": "str", "default": "."},
        "port": {"type": "int", "default": 22},
        "ssh_private_key": {"type": "str", "required": True, "no_log": True},
        "known_hosts": {"type": "str", "required": True},
        "append_only": {"type": "bool", "default": True},
        "timeout": {"type": "int", "default": 30},
        "when_tools_missing": {"type": "str", "choices": ["fail", "skip"], "default": "fail"},
    }


KEY_DIR = "/run"  # tmpfs on a systemd server: the key never reaches a disk


def private_dir():
    """A 0700 directory for the key, under KEY_DIR when the server has it, else the temporary directory."""
    base = KEY_DIR if os.access(KEY_DIR, os.W_OK) else None
    return tempfile.TemporaryDirectory(prefix="montaiguillon-store-check-", dir=base)


def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text.strip() + "\n")


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    target = f"{params['user']}@{params['host']}:{params['path']}"
    missing = [tool for tool in ("rsync", "ssh") if not shutil.which(tool)]
    if missing:
        message = f"{' and '.join(missing)} not installed on this server yet"
        if params["when_tools_missing"] == "skip":
            module.exit_json(changed=False, skipped=True, target=target, skipped_reason=message)
        module.fail_json(msg=f"cannot check the offsite store {target}: {message}", target=target)
    with private_dir() as directory:
        key, known_hosts = os.path.join(directory, "key"), os.path.join(directory, "known_hosts")
        write_private(key, params["ssh_private_key"])
        write_private(known_hosts, params["known_hosts"])
        try:
            found = check_store(
                target=target,
                ssh_key=key,
                known_hosts=known_hosts,
                port=params["port"],
                timeout=params["timeout"],
                append_only=params["append_only"],
            )
        except BackupError as exc:
            module.fail_json(msg=str(exc), target=target)
    module.exit_json(changed=False, **found)


if __name__ == "__main__":
    main()
