"""The proxy's switch on its own: upstream written, nginx -t and reload, the old file back on refusal."""

import pytest
from ansible.module_utils.montaiguillon.deploy.plan import parse_upstream
from ansible.module_utils.montaiguillon.deploy.proxy import Proxy, ProxyError


class Engine:
    def __init__(self, answers=None, running=True):
        self.answers = answers or {}
        self.running = running
        self.calls = []

    def exec(self, container, command):
        self.calls.append((container, command[:3]))
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
    assert [c[1][:2] for c in engine.calls if c[1][0] == "nginx"] == [["nginx", "-t"], ["nginx", "-s"]]


def test_a_refused_upstream_puts_the_previous_file_back_and_says_why(tmp_path):
    (tmp_path / "app-upstream.conf").write_text("old\n")
    proxy, _ = make(tmp_path, Engine({"-t": (1, "host not found in upstream")}))
    with pytest.raises(ProxyError, match=r"nginx -t in proxy refused the upstream app-blue \(hint\); the previous"):
        proxy.point_at("app", "app-blue", 8000, "live: blue", " (hint)")
    assert (tmp_path / "app-upstream.conf").read_text() == "old\n"


def test_a_failed_reload_with_no_previous_file_leaves_none(tmp_path):
    proxy, _ = make(tmp_path, Engine({"-s": (1, "signal failed")}))
    with pytest.raises(ProxyError, match="nginx -s reload in proxy failed; the previous upstream file is restored"):
        proxy.point_at("app", "app-blue", 8000, "live: blue")
    assert not (tmp_path / "app-upstream.conf").exists()


def test_the_slot_stamp_is_written_with_the_upstream_and_restored_with_it(tmp_path):
    slot = tmp_path / "app-slot.conf"
    proxy, _ = make(tmp_path, Engine())
    proxy.slot_path = str(slot)
    proxy.point_at("montaiguillon_app", "app-green", 8000, "live: green", slot="green")
    assert slot.read_text().splitlines()[-1] == 'map $host $montaiguillon_app_slot { default "green"; }'
    proxy.engine = Engine({"-t": (1, "emerg")})
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
