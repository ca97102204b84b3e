"""The offsite store as an attacker holding a server's credentials finds it (issue 15, item 3).

Runs on the lab after `make lab`: backup.store (roles/backup_store) takes each
server's copies through rrsync -no-del -no-overwrite in that server's own
directory. From site.com, with site.com's own offsite key, the tests try to
delete, overwrite, reach dev.site's directory and get a shell: each is
refused and the stored bytes stay. The store's own prune keeps what its
policy says. Traffic stays inside the lab's containers.
"""

import hashlib
import json
import shlex

import pytest
from labtools import PREFIX, on_server
from labtools import container as lab_container

pytestmark = pytest.mark.lab

SERVER = lab_container("site.com")
OTHER = lab_container("dev.site")
STORE = f"{PREFIX}-backup-store"
KEY = "/etc/montaiguillon/backup/offsite_ed25519"
KNOWN = "/etc/montaiguillon/backup/offsite_known_hosts"
SSH = f"ssh -i {KEY} -o BatchMode=yes -o IdentitiesOnly=yes -o UserKnownHostsFile={KNOWN} -o StrictHostKeyChecking=yes"
TARGET = "offsite@backup.store"


def as_server(container, script):
    """Run a shell script on a lab server, as root (which holds the offsite key)."""
    return on_server(container, "sh", "-c", script, check=False)


def stored(path):
    """sha256 of a file on the store, or None when it is not there."""
    out = on_server(STORE, "sha256sum", f"/srv/backup/{path}", check=False)
    return out.stdout.split()[0] if out.returncode == 0 else None


@pytest.fixture(scope="module")
def a_stored_backup():
    """site.com's backups copied offsite now; the name of one stored dump."""
    copy = on_server(SERVER, "montaiguillon-backup", "--json", "offsite", check=False)
    assert copy.returncode == 0, copy.stdout + copy.stderr
    names = on_server(STORE, "ls", "/srv/backup/site.com").stdout.split()
    dumps = sorted(n for n in names if n.endswith((".sql.zst.age", ".sql.zst")))
    assert dumps, names
    return f"site.com/{dumps[-1]}"


def test_the_servers_key_cannot_delete_what_is_stored(a_stored_backup):
    before = stored(a_stored_backup)
    attempt = as_server(
        SERVER, f"mkdir -p /tmp/empty && rsync -a --delete --rsh {shlex.quote(SSH)} /tmp/empty/ {TARGET}:./"
    )
    assert attempt.returncode != 0
    assert "--delete" in attempt.stderr and "disabled" in attempt.stderr, attempt.stderr
    assert stored(a_stored_backup) == before


def test_the_servers_key_cannot_overwrite_what_is_stored(a_stored_backup):
    before = stored(a_stored_backup)
    name = a_stored_backup.split("/", 1)[1]
    attempt = as_server(
        SERVER,
        f"mkdir -p /tmp/forged && echo forged > /tmp/forged/{name}"
        f" && rsync -a --rsh {shlex.quote(SSH)} /tmp/forged/{name} {TARGET}:./{name}",
    )
    # rrsync -no-overwrite forces --ignore-existing: the transfer "succeeds" and changes nothing.
    assert attempt.returncode == 0, attempt.stderr
    assert stored(a_stored_backup) == before
    assert before != hashlib.sha256(b"forged\n").hexdigest()


def test_a_servers_key_cannot_reach_another_servers_directory(a_stored_backup):
    for path in ("../site.com/", "/srv/backup/site.com/"):
        listing = as_server(OTHER, f"rsync --list-only --rsh {shlex.quote(SSH)} {TARGET}:{path}")
        assert listing.returncode != 0, path
        assert "rrsync error" in listing.stderr, listing.stderr
    own = as_server(OTHER, f"rsync --list-only --rsh {shlex.quote(SSH)} {TARGET}:./")
    assert own.returncode == 0, own.stderr
    assert a_stored_backup.split("/", 1)[1] not in own.stdout


def test_the_servers_key_gets_no_shell_on_the_store():
    shell = as_server(SERVER, f"{SSH} {TARGET} 'rm -rf /srv/backup; echo done'")
    assert shell.returncode != 0
    assert "does not run rsync" in shell.stderr, shell.stderr
    assert "done" not in shell.stdout


def test_the_store_prunes_by_its_own_policy(a_stored_backup):
    cron = on_server(STORE, "crontab", "-l", "-u", "root").stdout
    assert "store.py --root /srv/backup --keep-days 14 --keep-min 7" in cron
    dry = on_server(
        STORE, "python3", "/usr/local/lib/montaiguillon-store/store.py", "--root", "/srv/backup",
        "--keep-days", "14", "--keep-min", "7", "--dry-run",
    )  # fmt: skip
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True
    assert a_stored_backup.split("/", 1)[1] not in report["removed"].get("site.com", [])


@pytest.fixture
def store_check(playbook, tmp_path):
    """The backup role's store check (preflight and offsite.yml run it) on site.com, with extra vars."""
    play = tmp_path / "store_check.yml"
    play.write_text(
        "- hosts: prod\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.include_role: {name: backup, tasks_from: check_store}\n"
    )
    return lambda *extra: playbook(str(play), *extra)


def test_the_server_checks_its_store_answers_and_refuses_deletions(store_check):
    names = set(on_server(STORE, "ls", "-a", "/srv/backup/site.com").stdout.split())
    ok = store_check()
    assert ok.rc == 0, ok.output[-3000:]
    unreachable = store_check("-e", "backup_offsite_port=2")
    assert unreachable.rc != 0
    assert "site.com: the offsite store set by backup_offsite_host (backup.store)" in unreachable.output
    assert "cannot be reached or refused this server's key" in unreachable.output
    # the checks wrote nothing on the store
    assert set(on_server(STORE, "ls", "-a", "/srv/backup/site.com").stdout.split()) == names
