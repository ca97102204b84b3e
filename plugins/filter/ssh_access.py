"""Who may log in over SSH: the base role's users, their keys and the accounts sshd admits.

The base role reads every key file here, on the controller, before it changes
anything: a missing or empty file, a key that does not parse, or a user left
without a key is a named problem, never an empty authorized_keys.
"""

import base64
import binascii
import struct
from pathlib import Path

DOCUMENTATION = r"""
name: ssh_access
short_description: Resolve and check the base role's SSH users
description:
  - C(base_ssh_users) reads each user's C(ssh_key_files) (controller paths),
    joins them to C(ssh_keys) and returns C({users, problems}).
  - C(ssh_key_problem) says why one public key line is unusable (empty when it is usable).
  - C(ssh_login_problems) says whether the account Ansible logs in as stays admitted.
positional: _input
options:
  _input:
    description: base_users (for base_ssh_users), a key line (for ssh_key_problem).
    type: raw
    required: true
"""

# Key types sshd accepts today; the blob's first field repeats the type.
KEY_TYPES = {
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
}
MIN_RSA_BITS = 3072


def _fields(blob):
    """The length-prefixed fields of an SSH public key blob; ValueError when they do not add up."""
    fields, offset = [], 0
    while offset < len(blob):
        if offset + 4 > len(blob):
            raise ValueError("truncated length")
        (size,) = struct.unpack(">I", blob[offset : offset + 4])
        offset += 4
        if offset + size > len(blob):
            raise ValueError("truncated field")
        fields.append(blob[offset : offset + size])
        offset += size
    return fields


def ssh_key_problem(line):
    """Why ``line`` is not a usable public key ('' when it is). Options before the type are refused."""
    parts = str(line or "").split()
    if not parts:
        return "empty key"
    if parts[0] not in KEY_TYPES:
        return f"unknown key type {parts[0][:40]!r} (private key, options or a typo?)"
    if len(parts) < 2:
        return f"{parts[0]} key without its base64 body"
    try:
        fields = _fields(base64.b64decode(parts[1], validate=True))
    except (binascii.Error, ValueError) as exc:
        return f"{parts[0]} key whose body does not decode ({exc})"
    if not fields or fields[0].decode("ascii", "replace") != parts[0]:
        return f"{parts[0]} key whose body is of another type"
    if parts[0] == "ssh-ed25519" and (len(fields) != 2 or len(fields[1]) != 32):
        return "ssh-ed25519 key of the wrong length"
    if parts[0] == "ssh-rsa":
        bits = int.from_bytes(fields[2], "big").bit_length() if len(fields) == 3 else 0
        if bits < MIN_RSA_BITS:
            return f"ssh-rsa key of {bits} bits (at least {MIN_RSA_BITS})"
    return ""


def _key_lines(text):
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _user_keys(user, base_dir):
    """(keys, problems) of one present user: its ssh_keys and the lines of its ssh_key_files."""
    name, keys, problems = user.get("name", "?"), [], []
    sources = [(f"ssh_keys[{i}]", key) for i, key in enumerate(user.get("ssh_keys") or [])]
    for file_name in user.get("ssh_key_files") or []:
        path = Path(base_dir or ".", file_name).expanduser()
        if not path.is_file():
            problems.append(f"user {name}: key file {path} is missing")
            continue
        lines = _key_lines(path.read_text(errors="replace"))
        if not lines:
            problems.append(f"user {name}: key file {path} is empty")
        sources += [(f"{path} line {i + 1}", line) for i, line in enumerate(lines)]
    for where, key in sources:
        problem = ssh_key_problem(key)
        if problem:
            problems.append(f"user {name}: {where}: {problem}")
        elif key.strip() not in keys:
            keys.append(key.strip())
    if not keys and not problems:
        problems.append(f"user {name}: no SSH key (ssh_keys or ssh_key_files); an empty list would lock them out")
    return keys, problems


def base_ssh_users(users, base_dir=""):
    """{users, problems}: present users get ``ssh_keys`` = every valid key from both sources.

    Relative key files are taken from ``base_dir`` (the inventory directory).
    Absent users need no key. Duplicate names are a problem too. Every user comes back with its state.
    """
    resolved, problems, seen = [], [], set()
    for user in users or []:
        user = {**user, "state": user.get("state", "present")}
        name = user.get("name", "?")
        if name in seen:
            problems.append(f"user {name}: listed twice in base_users")
        seen.add(name)
        if user["state"] == "present":
            user["ssh_keys"], user_problems = _user_keys(user, base_dir)
            problems += user_problems
        resolved.append(user)
    return {"users": resolved, "problems": problems}


def ssh_login_problems(users, login_user, connection="ssh", bootstrap_user="", bootstrap_lock=False, root_login="no"):
    """Problems if the account Ansible logs in as would be refused by AllowGroups or locked mid-run."""
    if connection not in ("ssh", "paramiko", "smart"):
        return []
    present = {u.get("name") for u in users or [] if u.get("state", "present") == "present"}
    problems = []
    if bootstrap_lock and login_user == bootstrap_user:
        problems.append(
            f"base_bootstrap_user_lock would lock {bootstrap_user}, the account Ansible logs in as; "
            "run as one of base_users (e.g. -u deploy) to lock it"
        )
    elif bootstrap_lock and not any(u.get("sudo") for u in users or [] if u.get("name") in present):
        problems.append("base_bootstrap_user_lock needs a present sudo user in base_users first")
    allowed = present | ({bootstrap_user} if bootstrap_user and not bootstrap_lock else set())
    if login_user == "root":
        if root_login == "no":
            problems.append("Ansible logs in as root over SSH but base_ssh_permit_root_login is 'no'")
    elif login_user not in allowed:
        problems.append(
            f"Ansible logs in as {login_user}, who would not be admitted by sshd (AllowGroups): "
            "list them in base_users or set base_bootstrap_user"
        )
    return problems


class FilterModule:
    def filters(self):
        return {
            "base_ssh_users": base_ssh_users,
            "ssh_key_problem": ssh_key_problem,
            "ssh_login_problems": ssh_login_problems,
        }
