"""The confinement every release container gets: what Docker is told, and what is refused."""

import pytest
from ansible.module_utils.montaiguillon.deploy.confinement import Confinement, memory_bytes


def confinement(**options):
    return Confinement.from_params({"confinement": options})


def test_defaults_drop_everything_and_limit_memory_and_processes():
    kwargs = Confinement.from_params({}).docker_kwargs()
    assert kwargs == {
        "cap_drop": ["ALL"],
        "mem_limit": "512m",
        "memswap_limit": "512m",
        "pids_limit": 256,
        "security_opt": ["no-new-privileges:true"],
    }


def test_read_only_root_gets_private_scratch_dirs():
    kwargs = confinement(read_only=True, tmpfs=["/tmp", "/var/run/app"]).docker_kwargs()
    assert kwargs["read_only"] is True
    assert set(kwargs["tmpfs"]) == {"/tmp", "/var/run/app"}
    assert all("noexec" in options and "nosuid" in options for options in kwargs["tmpfs"].values())


def test_kept_capabilities_are_named_in_capitals():
    assert confinement(capabilities=["net_bind_service"]).docker_kwargs()["cap_add"] == ["NET_BIND_SERVICE"]


def test_no_new_privileges_can_be_turned_off_explicitly():
    assert "security_opt" not in confinement(no_new_privileges=False).docker_kwargs()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"memory": "half"}, "confinement.memory: 'half' is not a size like 512m or 1g"),
        ({"memory": "16m"}, "confinement.memory: '16m' is below 32m"),
        ({"pids_limit": 8}, "confinement.pids_limit: 8 is below 16"),
        ({"capabilities": ["ALL"]}, "ALL would undo the confinement"),
        ({"capabilities": ["net bind"]}, "'NET BIND' is not one Linux capability name"),
        ({"tmpfs": ["tmp"]}, "confinement.tmpfs: 'tmp' must be an absolute directory"),
        ({"tmpfs": ["/"]}, "confinement.tmpfs: '/' must be an absolute directory other than /"),
    ],
)
def test_bad_options_are_named(options, message):
    errors = confinement(**options).errors()
    assert len(errors) == 1 and message in errors[0]


def test_good_options_have_no_errors():
    assert confinement(capabilities=["CAP_CHOWN"], memory="1g", pids_limit=16, read_only=True).errors() == []


@pytest.mark.parametrize(("text", "size"), [("512m", 512 * 1024**2), ("1G", 1024**3), ("1024", 1024), ("2x", None)])
def test_memory_notation(text, size):
    assert memory_bytes(text) == size
