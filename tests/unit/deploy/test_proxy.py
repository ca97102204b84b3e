"""The proxy's switch on its own: upstream written, nginx -t and reload, the old file back on refusal."""

import os
import stat
import subprocess

import pytest
from ansible.module_utils.montaiguillon.deploy.plan import parse_upstream
from ansible.module_utils.montaiguillon.deploy.proxy import (
    RELOAD_FAILED,
    RELOAD_SLOW,
    TEST_AND_RELOAD_SCRIPT,
    TEST_REFUSED,
    Proxy,
    ProxyError,
    switch_script,
)


class Engine:
    """The proxy container: ``switch`` answers the test-and-reload script (by default it passes)."""

    def __init__(self, answers=None, running=True):
        self.answers = answers or {}
        self.running = running
        self.calls = []

    def exec(self, container, command):
        self.calls.append((container, command))
        if command == ["sh", "-c", TEST_AND_RELOAD_SCRIPT]:
            return self.answers.get("switch", (0, "2026/12/04 [notice] 1#1: signal process started\n"))
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
        warnings.append,
    )
    return proxy, warnings


def test_point_at_writes_the_upstream_then_tests_and_reloads(tmp_path):
    engine = Engine()
    proxy, _ = make(tmp_path, engine)
    proxy.point_at("app", "app-green", 8000, "live: green")
    assert parse_upstream((tmp_path / "app-upstream.conf").read_text(), "app") == "green"
    # One exec tests, reloads and waits for the old workers (each exec is a round trip through dockerd).
    assert [c[1] for c in engine.calls] == [["sh", "-c", TEST_AND_RELOAD_SCRIPT]]


def test_old_workers_still_accepting_after_the_wait_are_a_warning_not_a_failure(tmp_path):
    proxy, warnings = make(tmp_path, Engine({"switch": (RELOAD_SLOW, "old workers still accept connections: 7")}))
    proxy.point_at("app", "app-green", 8000, "live: green")
    assert parse_upstream((tmp_path / "app-upstream.conf").read_text(), "app") == "green"
    assert warnings == ["nginx in proxy still had old workers accepting connections 5 s after the reload "
                        "(old workers still accept connections: 7)"]  # fmt: skip


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


def fake_nginx(tmp_path, test_exit, reload_exit, on_reload=""):
    """An ``nginx`` on PATH that answers ``-t`` and ``-s reload`` with the given exit codes and logs its calls;
    ``on_reload``: shell run in the background by the reload (what the master then does to its workers)."""
    binary = tmp_path / "bin/nginx"
    binary.parent.mkdir()
    binary.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {tmp_path}/calls\n'
        f'if [ "$1" = -t ]; then echo "nginx: test says $1"; exit {test_exit}; fi\n'
        f"( {on_reload or ':'} ) >/dev/null 2>&1 &\n"
        f"echo 'signal process started' >&2; exit {reload_exit}\n"
    )
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return {**os.environ, "PATH": f"{binary.parent}:{os.environ['PATH']}"}


def fake_proc(tmp_path, processes):
    """A /proc with one ``<pid>/cmdline`` per process, as nginx leaves it: its title over the arguments' space,
    NUL-padded; and a shell whose arguments are NUL-separated."""
    processes = {**processes, 99: "sh\0-c\0nginx: worker process"}
    for pid, title in processes.items():
        (tmp_path / "proc" / str(pid)).mkdir(parents=True)
        (tmp_path / "proc" / str(pid) / "cmdline").write_bytes(title.encode() + b"\0" * 8)
    return str(tmp_path / "proc")


def retitle(tmp_path, pid, title):
    """Shell giving process ``pid`` of the fake /proc a new title (nginx retitles its workers)."""
    path = tmp_path / "proc" / str(pid)
    return f"mkdir -p {path}; printf '{title}\\0' > {path}/cmdline"


@pytest.mark.parametrize(
    ("test_exit", "reload_exit", "expected", "calls"),
    [(0, 0, 0, ["-t", "-s reload"]), (1, 0, TEST_REFUSED, ["-t"]), (0, 1, RELOAD_FAILED, ["-t", "-s reload"])],
    ids=["passes", "test-refused", "reload-failed"],
)
def test_the_script_tests_before_it_reloads_and_says_which_failed(tmp_path, test_exit, reload_exit, expected, calls):
    env = fake_nginx(tmp_path, test_exit, reload_exit)
    script = switch_script(proc=fake_proc(tmp_path, {1: "nginx: master process nginx"}))
    run = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=False)
    assert run.returncode == expected
    assert (tmp_path / "calls").read_text().splitlines() == calls  # never a reload after a refused test
    if expected == TEST_REFUSED:
        assert "nginx: test says -t" in run.stdout  # the refusal's words, for the error message


def test_the_script_returns_only_once_no_old_worker_accepts_connections(tmp_path):
    worker = "nginx: worker process"
    proc = fake_proc(tmp_path, {1: "nginx: master process nginx", 7: worker, 8: worker})
    # After the reload the master starts worker 9 at once, then retitles 7 and 8 one after the other.
    master = "; ".join(
        [
            retitle(tmp_path, 9, "nginx: worker process"),
            "sleep 0.2",
            retitle(tmp_path, 7, "nginx: worker process is shutting down"),
            "sleep 0.2",
            retitle(tmp_path, 8, "nginx: worker process is shutting down"),
        ]
    )
    env = fake_nginx(tmp_path, 0, 0, on_reload=master)
    run = subprocess.run(["sh", "-c", switch_script(proc=proc)], env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout
    # Had it returned with worker 9 up but 7 or 8 still accepting, a new connection could reach the old colour.
    assert (tmp_path / "proc/8/cmdline").read_bytes() == b"nginx: worker process is shutting down\0"


def test_the_script_gives_up_waiting_naming_the_old_workers_still_accepting(tmp_path):
    proc = fake_proc(tmp_path, {7: "nginx: worker process", 8: "nginx: worker process"})
    env = fake_nginx(tmp_path, 0, 0, on_reload=retitle(tmp_path, 8, "nginx: worker process is shutting down"))
    script = switch_script(proc=proc, timeout=0.3, poll=0.02)
    run = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=False)
    assert run.returncode == RELOAD_SLOW
    assert run.stdout.splitlines()[-1] == "old workers still accept connections: 7"
