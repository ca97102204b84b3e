"""The proxy's switch on its own: upstream written, nginx -t and reload, the old file back on refusal."""

import os
import stat
import subprocess

import pytest
from ansible.module_utils.montaiguillon.deploy.plan import parse_upstream
from ansible.module_utils.montaiguillon.deploy.proxy import (
    NGINX_WORKERS_SCRIPT,
    RELOAD_FAILED,
    TEST_AND_RELOAD_SCRIPT,
    TEST_REFUSED,
    Proxy,
    ProxyError,
)


class Engine:
    """The proxy container: ``switch`` answers the test-and-reload script (by default it passes and lists
    workers 7 and 8), the worker list then shows new workers (9)."""

    def __init__(self, answers=None, running=True):
        self.answers = answers or {}
        self.running = running
        self.calls = []

    def exec(self, container, command):
        self.calls.append((container, command))
        if command == ["sh", "-c", TEST_AND_RELOAD_SCRIPT]:
            return self.answers.get("switch", (0, "7\n8\n2026/12/04 [notice] 1#1: signal process started\n"))
        if command == ["sh", "-c", NGINX_WORKERS_SCRIPT]:
            return 0, "9\n"
        return self.answers.get(command[1], (0, ""))

    def inspect_container(self, name):
        return (
            {"State": {"Running": self.running, "Status": "exited"}, "Mounts": []} if self.running is not None else None
        )


def make(tmp_path, engine):
    warnings = []
    ticks = iter(range(1000))
    proxy = Proxy(
        engine,
        "proxy",
        str(tmp_path),
        str(tmp_path / "app-upstream.conf"),
        lambda: next(ticks),
        lambda s: None,
        warnings.append,
    )
    return proxy, warnings


def test_point_at_writes_the_upstream_then_tests_and_reloads(tmp_path):
    engine = Engine()
    proxy, _ = make(tmp_path, engine)
    proxy.point_at("app", "app-green", 8000, "live: green")
    assert parse_upstream((tmp_path / "app-upstream.conf").read_text(), "app") == "green"
    # One exec tests and reloads; then the workers are listed until none of the old ones (7, 8) accepts.
    assert [c[1] for c in engine.calls] == [["sh", "-c", TEST_AND_RELOAD_SCRIPT], ["sh", "-c", NGINX_WORKERS_SCRIPT]]


def test_a_refused_upstream_puts_the_previous_file_back_and_says_why(tmp_path):
    (tmp_path / "app-upstream.conf").write_text("old\n")
    proxy, _ = make(tmp_path, Engine({"switch": (TEST_REFUSED, "host not found in upstream")}))
    with pytest.raises(ProxyError, match=r"nginx -t in proxy refused the upstream app-blue \(hint\); the previous"):
        proxy.point_at("app", "app-blue", 8000, "live: blue", " (hint)")
    assert (tmp_path / "app-upstream.conf").read_text() == "old\n"


def test_a_failed_reload_with_no_previous_file_leaves_none(tmp_path):
    proxy, _ = make(tmp_path, Engine({"switch": (RELOAD_FAILED, "signal failed")}))
    with pytest.raises(ProxyError, match="nginx -s reload in proxy failed; the previous upstream file is restored"):
        proxy.point_at("app", "app-blue", 8000, "live: blue")
    assert not (tmp_path / "app-upstream.conf").exists()


def test_the_slot_stamp_is_written_with_the_upstream_and_restored_with_it(tmp_path):
    slot = tmp_path / "app-slot.conf"
    proxy, _ = make(tmp_path, Engine())
    proxy.slot_path = str(slot)
    proxy.point_at("montaiguillon_app", "app-green", 8000, "live: green", slot="green")
    assert slot.read_text().splitlines()[-1] == 'map $host $montaiguillon_app_slot { default "green"; }'
    proxy.engine = Engine({"switch": (TEST_REFUSED, "emerg")})
    with pytest.raises(ProxyError):
        proxy.point_at("montaiguillon_app", "app-blue", 8000, "live: blue", slot="blue")
    assert 'default "green"' in slot.read_text()


def test_a_proxy_that_cannot_be_asked_finds_the_previous_files(tmp_path):
    class Restarting(Engine):
        def exec(self, container, command):
            raise OSError("container proxy is restarting")

    (tmp_path / "app-upstream.conf").write_text("old\n")
    proxy, _ = make(tmp_path, Restarting())
    proxy.slot_path = str(tmp_path / "app-slot.conf")
    with pytest.raises(OSError, match="restarting"):
        proxy.point_at("montaiguillon_app", "app-blue", 8000, "live: blue", slot="blue")
    assert (tmp_path / "app-upstream.conf").read_text() == "old\n"
    assert not (tmp_path / "app-slot.conf").exists()


def test_check_names_a_missing_proxy_and_a_missing_conf_dir(tmp_path):
    proxy, _ = make(tmp_path, Engine(running=None))
    with pytest.raises(ProxyError, match="proxy container proxy does not exist"):
        proxy.check()
    proxy, _ = make(tmp_path / "nope", Engine())
    with pytest.raises(ProxyError, match=r"proxy_conf_dir .*nope does not exist"):
        proxy.check()


def fake_nginx(tmp_path, test_exit, reload_exit):
    """An ``nginx`` on PATH that answers ``-t`` and ``-s reload`` with the given exit codes and logs its calls."""
    binary = tmp_path / "bin/nginx"
    binary.parent.mkdir()
    binary.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {tmp_path}/calls\n'
        f'if [ "$1" = -t ]; then echo "nginx: test says $1"; exit {test_exit}; fi\n'
        f"echo 'signal process started' >&2; exit {reload_exit}\n"
    )
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return {**os.environ, "PATH": f"{binary.parent}:{os.environ['PATH']}"}


@pytest.mark.parametrize(
    ("test_exit", "reload_exit", "expected", "calls"),
    [(0, 0, 0, ["-t", "-s reload"]), (1, 0, TEST_REFUSED, ["-t"]), (0, 1, RELOAD_FAILED, ["-t", "-s reload"])],
    ids=["passes", "test-refused", "reload-failed"],
)
def test_the_script_tests_before_it_reloads_and_says_which_failed(tmp_path, test_exit, reload_exit, expected, calls):
    env = fake_nginx(tmp_path, test_exit, reload_exit)
    run = subprocess.run(["sh", "-c", TEST_AND_RELOAD_SCRIPT], env=env, capture_output=True, text=True, check=False)
    assert run.returncode == expected
    assert (tmp_path / "calls").read_text().splitlines() == calls  # never a reload after a refused test
    if expected == TEST_REFUSED:
        assert "nginx: test says -t" in run.stdout  # the refusal's words, for the error message
