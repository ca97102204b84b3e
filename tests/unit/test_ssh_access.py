"""The base role's SSH users: every key file read and checked before anything changes."""

import base64
import struct

import pytest
import sourcefile

ssh = sourcefile.load("plugins/filter/ssh_access.py", "ssh_access")


def blob(*fields):
    return base64.b64encode(b"".join(struct.pack(">I", len(f)) + f for f in fields)).decode()


ED25519 = f"ssh-ed25519 {blob(b'ssh-ed25519', bytes(range(32)))} alice@laptop"
ED25519_B = f"ssh-ed25519 {blob(b'ssh-ed25519', bytes(range(1, 33)))} ci"
EXPONENT, MODULUS_4096, MODULUS_1024 = b"\x01\x00\x01", b"\x00" + b"\xff" * 512, b"\x00" + b"\xff" * 128
RSA_4096 = "ssh-rsa " + blob(b"ssh-rsa", EXPONENT, MODULUS_4096) + " old"
RSA_1024 = "ssh-rsa " + blob(b"ssh-rsa", EXPONENT, MODULUS_1024) + " weak"


@pytest.mark.parametrize("line", [ED25519, RSA_4096, ED25519.rsplit(" ", 1)[0]])
def test_usable_keys_have_no_problem(line):
    assert ssh.ssh_key_problem(line) == ""


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("", "empty key"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "unknown key type"),
        ('command="rm -rf /" ' + ED25519, "unknown key type"),
        ("ssh-ed25519", "without its base64 body"),
        ("ssh-ed25519 not*base64", "does not decode"),
        (f"ssh-ed25519 {blob(b'ssh-ed25519', b'short')}", "wrong length"),
        (f"ssh-ed25519 {blob(b'ssh-rsa', bytes(32))}", "of another type"),
        ("ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x40ssh").decode(), "does not decode"),
        (RSA_1024, "ssh-rsa key of 1024 bits"),
    ],
)
def test_unusable_keys_say_why(line, reason):
    assert reason in ssh.ssh_key_problem(line)


def test_key_files_are_read_relative_to_the_inventory(tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys/deploy.pub").write_text(f"# CI of this environment\n{ED25519_B}\n\n")
    out = ssh.base_ssh_users(
        [{"name": "deploy", "sudo": True, "ssh_keys": [ED25519], "ssh_key_files": ["keys/deploy.pub"]}],
        str(tmp_path),
    )
    assert out["problems"] == []
    assert out["users"][0]["ssh_keys"] == [ED25519, ED25519_B]


def test_missing_and_empty_key_files_are_named(tmp_path):
    (tmp_path / "empty.pub").write_text("# nothing yet\n")
    out = ssh.base_ssh_users(
        [{"name": "deploy", "ssh_keys": [ED25519], "ssh_key_files": ["deploy.pub", "empty.pub"]}], str(tmp_path)
    )
    assert out["problems"] == [
        f"user deploy: key file {tmp_path}/deploy.pub is missing",
        f"user deploy: key file {tmp_path}/empty.pub is empty",
    ]


def test_a_bad_line_is_named_with_its_file_and_line(tmp_path):
    (tmp_path / "deploy.pub").write_text(f"{ED25519}\nssh-ed25519 oops\n")
    (problem,) = ssh.base_ssh_users([{"name": "deploy", "ssh_key_files": ["deploy.pub"]}], str(tmp_path))["problems"]
    assert problem.startswith(f"user deploy: {tmp_path}/deploy.pub line 2: ")


def test_a_present_user_without_any_key_is_refused_an_absent_one_is_not():
    out = ssh.base_ssh_users([{"name": "alice", "ssh_keys": []}, {"name": "bob", "state": "absent"}])
    assert out["problems"] == ["user alice: no SSH key (ssh_keys or ssh_key_files); an empty list would lock them out"]


def test_a_user_listed_twice_is_a_problem():
    users = [{"name": "deploy", "ssh_keys": [ED25519]}, {"name": "deploy", "ssh_keys": [ED25519_B]}]
    assert ssh.base_ssh_users(users)["problems"] == ["user deploy: listed twice in base_users"]


USERS = [{"name": "deploy", "sudo": True, "ssh_keys": [ED25519]}]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"login_user": "deploy"}, []),
        ({"login_user": "debian", "bootstrap_user": "debian"}, []),
        ({"login_user": "debian", "connection": "docker"}, []),
        ({"login_user": "root", "root_login": "prohibit-password"}, []),
        ({"login_user": "deploy", "bootstrap_user": "debian", "bootstrap_lock": True}, []),
        ({"login_user": "debian"}, ["Ansible logs in as debian, who would not be admitted"]),
        ({"login_user": "root"}, ["base_ssh_permit_root_login is 'no'"]),
        (
            {"login_user": "debian", "bootstrap_user": "debian", "bootstrap_lock": True},
            ["would lock debian, the account Ansible logs in as", "Ansible logs in as debian"],
        ),
    ],
)
def test_the_login_account_stays_admitted(kwargs, expected):
    problems = ssh.ssh_login_problems(USERS, **kwargs)
    assert len(problems) == len(expected)
    for problem, start in zip(problems, expected, strict=True):
        assert start in problem


def test_locking_the_bootstrap_user_needs_a_sudo_user_first():
    users = [{"name": "alice", "ssh_keys": [ED25519]}]
    (problem,) = ssh.ssh_login_problems(users, "alice", bootstrap_user="debian", bootstrap_lock=True)
    assert "needs a present sudo user" in problem


def test_every_user_comes_back_with_its_state():
    out = ssh.base_ssh_users([{"name": "deploy", "ssh_keys": [ED25519]}, {"name": "bob", "state": "absent"}])
    assert [(u["name"], u["state"]) for u in out["users"]] == [("deploy", "present"), ("bob", "absent")]
