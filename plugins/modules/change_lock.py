#!/usr/bin/python
"""Ansible module: take or release the server's change lock across a playbook's tasks."""

DOCUMENTATION = r"""
---
module: change_lock
short_description: Hold the server's change lock (deploys, rollbacks, restores, backup pruning) across tasks
description:
  - A server has one change lock. M(bluegreen_release) takes it for a deploy or a rollback, M(mysql_backup) for
    pruning; a restore is several tasks (maintenance page, stop the site, load, start again), so restore.yml
    holds it with this module from before the maintenance page until the site is back.
  - The holder is recorded with a lease (O(lease) seconds), so a playbook killed mid-way does not block the server
    forever; after the lease, the next change takes the lock over with a warning. A lock left before a reboot
    is stale too.
  - V(present) waits up to O(wait) seconds for a live holder, then fails naming who holds it, since when and
    doing what. Taken again with the same O(lease_id), it changes nothing.
  - V(absent) releases the lock only if O(lease_id) holds it (a lock someone else took over stays).
version_added: "0.2.0"
author: Montaiguillon infrastructure (@montaiguillon)
options:
  path:
    description: The lock file; every role points at the same one (C(/var/lib/montaiguillon/change.lock) by default).
    type: path
    required: true
  state:
    description: Take (V(present)) or release (V(absent)) the lock.
    type: str
    choices: [present, absent]
    default: present
  lease_id:
    description:
      - Identifies the holder. Taking returns it (generated when not given); releasing needs it.
    type: str
  action:
    description: What the holder does, as a verb (shown to whoever is refused), for example V(restoring).
    type: str
    default: changing
  what:
    description: What it works on (for example a backup id), shown to whoever is refused.
    type: str
    default: the server
  who:
    description: Who holds it. Defaults to C(user@host) of the server.
    type: str
  lease:
    description: Seconds the lock holds without its holder (then it is stale). Longer than the work it covers.
    type: int
    default: 7200
  wait:
    description: Seconds to wait for a live holder before failing. 0 fails at once.
    type: float
    default: 60
  break_lock:
    description: Take the lock even if it looks held. Only when its holder is known to be dead.
    type: bool
    default: false
attributes:
  check_mode:
    details: Says whether the lock could be taken (fails when a live holder has it) and writes nothing.
  idempotent:
    support: full
    description: Taking the lock again with the same O(lease_id), or releasing a lock already gone, changes nothing.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - server_module
seealso:
  - module: bluegreen_release
  - module: mysql_backup
"""

EXAMPLES = r"""
- name: Hold the server's change lock for the restore
  change_lock:
    path: /var/lib/montaiguillon/change.lock
    action: restoring
    what: 20261126T031500Z-scheduled
    lease: 7200
  register: restore_lock

- name: Release it
  change_lock:
    path: /var/lib/montaiguillon/change.lock
    state: absent
    lease_id: "{{ restore_lock.lease_id }}"
"""

RETURN = r"""
lease_id:
  description: The holder's id (state V(present)); pass it to release the lock.
  returned: state is present
  type: str
  sample: 3f2a9c0d1b7e4a55
holder:
  description: The lock's content after the task (who, when, action, what, until), or null when free.
  returned: always
  type: dict
  sample: {who: ops@ctl, when: "2026-11-26T09:00:00Z", action: restoring, what: 20261126T031500Z-scheduled,
           until: "2026-11-26T11:00:00Z"}
"""

import getpass
import secrets
import socket

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.montaiguillon.common.lock import (
    DeployLock,
    LockHeld,
    acquire_waiting,
    describe_holder,
    read_holder,
    release_token,
)


def argument_spec():
    return {
        "path": {"type": "path", "required": True},
        "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        "lease_id": {"type": "str"},
        "action": {"type": "str", "default": "changing"},
        "what": {"type": "str", "default": "the server"},
        "who": {"type": "str"},
        "lease": {"type": "int", "default": 7200},
        "wait": {"type": "float", "default": 60},
        "break_lock": {"type": "bool", "default": False},
    }


def public(holder):
    return {k: v for k, v in holder.items() if k != "token"} if holder else None


def take(module):
    params = module.params
    if params["lease"] < 1:
        module.fail_json(msg=f"lease must be at least 1 second, not {params['lease']}")
    token = params["lease_id"] or secrets.token_hex(8)
    holder = read_holder(params["path"])
    if holder and holder.get("token") == token:
        return {"changed": False, "lease_id": token, "holder": public(holder)}
    who = params["who"] or f"{getpass.getuser()}@{socket.gethostname()}"
    lock = DeployLock(
        params["path"],
        who=who,
        what=params["what"],
        action=params["action"],
        lease_seconds=params["lease"],
        token=token,
        break_lock=params["break_lock"],
    )
    if module.check_mode:
        stale = lock.stale_reason(holder) if holder else None
        if holder and stale is None and not params["break_lock"]:
            message = f"{describe_holder(holder)} (a run would wait up to {params['wait']:g} s for it)"
            module.fail_json(msg=message, holder=public(holder))
        return {"changed": True, "lease_id": token, "holder": public(holder)}
    try:
        warnings, _waited = acquire_waiting(lock, params["wait"])
    except LockHeld as exc:
        module.fail_json(msg=str(exc), holder=public(exc.holder))
    except OSError as exc:
        module.fail_json(msg=f"cannot take the lock {params['path']}: {exc}")
    for warning in warnings:
        module.warn(warning)
    return {"changed": True, "lease_id": token, "holder": public(read_holder(params["path"]))}


def release(module):
    params = module.params
    if not params["lease_id"]:
        module.fail_json(msg="state=absent needs the lease_id the lock was taken with")
    holder = read_holder(params["path"])
    ours = bool(holder) and holder.get("token") == params["lease_id"]
    if ours and not module.check_mode:
        release_token(params["path"], params["lease_id"])
        holder = read_holder(params["path"])
    elif holder and not ours:
        module.warn(f"the lock is no longer ours, left as it is: {describe_holder(holder)}")
    return {"changed": ours, "holder": public(None if ours else holder)}


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    result = take(module) if module.params["state"] == "present" else release(module)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
