"""The maintenance page: on without a reload; off only after the live slot answered (or the wait ran out),
with the proxy reloaded the way a switch reloads it, and the flag gone either way."""

import pytest
from ansible.module_utils.montaiguillon.common.docker_engine import DockerError
from ansible.module_utils.montaiguillon.deploy.maintenance import MaintenancePage
from ansible.module_utils.montaiguillon.deploy.plan import parse_upstream_server, render_upstream
from ansible.module_utils.montaiguillon.deploy.probe import HttpAnswer, ProbeError
from ansible.module_utils.montaiguillon.deploy.proxy import TEST_AND_RELOAD_SCRIPT, TEST_REFUSED, Proxy, ProxyError


class Engine:
    def __init__(self, nginx_test=(0, "ok"), address="172.18.0.7"):
        self.nginx_test, self.address = nginx_test, address
        self.calls = []

    def exec(self, container, command):
        self.calls.append(command)
        if command == ["sh", "-c", TEST_AND_RELOAD_SCRIPT]:  # nginx -t, then (when it passes) the reload
            code, output = self.nginx_test
            return (0, "") if code == 0 else (TEST_REFUSED, output)
        return 0, ""

    def container_ip(self, name, network):
        if self.address is None:
            raise DockerError(f"container {name} does not exist")
        return self.address


class Probe:
    """Answers 503 ``failures`` times, then 200."""

    def __init__(self, failures=0, error=None):
        self.failures, self.error, self.urls = failures, error, []

    def get(self, url, timeout):
        self.urls.append(url)
        if self.error:
            raise ProbeError(self.error)
        if len(self.urls) <= self.failures:
            return HttpAnswer(503, {}, "starting")
        return HttpAnswer(200, {}, '{"status": "ok"}')


@pytest.fixture
def site(tmp_path):
    def make(engine=None, probe=None, live="blue"):
        conf = tmp_path / "conf.d"
        conf.mkdir(exist_ok=True)
        if live:
            (conf / "app-upstream.conf").write_text(render_upstream("montaiguillon_app", f"app-{live}", 8000, "live"))
        clock = [0.0]
        engine, probe = engine or Engine(), probe or Probe()
        proxy = Proxy(engine, "proxy", str(conf), str(conf / "app-upstream.conf"), lambda: clock[0], print)

        def sleep(seconds):
            clock[0] += seconds

        page = MaintenancePage(engine, proxy, probe, "app", "frontend", "/health", lambda: clock[0], sleep)
        return page, engine, probe, conf / "maintenance" / "on"

    return make


def test_on_writes_the_flag_once_and_never_reloads(site):
    page, engine, _probe, flag = site()
    assert page.turn_on("restore.yml: restore of X") is True
    assert flag.read_text() == "restore.yml: restore of X\n"
    assert page.turn_on("another reason") is False  # the first reason stays
    assert page.reason() == "restore.yml: restore of X" and engine.calls == []


def test_off_waits_for_the_live_slot_then_reloads_and_removes_the_flag(site):
    page, engine, probe, flag = site(probe=Probe(failures=2))
    page.turn_on("restore")
    result = page.turn_off(timeout=60)
    assert result == {"changed": True, "live": "app-blue", "healthy": True, "health": 'HTTP 200: {"status": "ok"}'}
    assert probe.urls == ["http://172.18.0.7:8000/health"] * 3
    assert engine.calls[0] == ["sh", "-c", TEST_AND_RELOAD_SCRIPT]  # tested and reloaded
    assert not flag.exists()
    assert page.turn_off(timeout=60)["changed"] is False  # off while off


def test_a_slot_that_never_answers_still_takes_the_page_down_and_says_so(site):
    page, _engine, probe, flag = site(probe=Probe(error="connection refused"))
    page.turn_on("restore")
    result = page.turn_off(timeout=6)
    assert result["healthy"] is False and result["health"] == "connection refused" and result["live"] == "app-blue"
    assert len(probe.urls) == 4  # at 0, 2, 4 and 6 s
    assert not flag.exists()


def test_a_proxy_that_refuses_its_configuration_keeps_the_page(site):
    page, _engine, _probe, flag = site(engine=Engine(nginx_test=(1, "unknown directive")))
    page.turn_on("restore")
    with pytest.raises(ProxyError, match="nginx -t in proxy refused its configuration"):
        page.turn_off(timeout=0)
    assert flag.exists()  # visitors keep the page rather than a broken proxy


def test_no_release_yet_means_nothing_to_wait_for(site):
    page, _engine, probe, flag = site(live=None)
    page.turn_on("restore")
    assert page.turn_off(timeout=60)["health"] == "no release yet: nothing to wait for"
    assert probe.urls == [] and not flag.exists()


def test_check_mode_writes_probes_and_reloads_nothing(site):
    page, engine, probe, flag = site()
    assert page.turn_on("restore", check_mode=True) is True and not flag.exists()
    page.turn_on("restore")
    assert page.turn_off(timeout=60, check_mode=True)["changed"] is True
    assert flag.exists() and probe.urls == [] and engine.calls == []


def test_the_upstream_file_names_the_live_slot_and_its_port():
    text = render_upstream("montaiguillon_app", "app-green", 8080, "live: green")
    assert parse_upstream_server(text, "app") == ("green", "app-green", 8080)
    assert parse_upstream_server("upstream x { server 127.0.0.1:9 down; }", "app") is None
    assert parse_upstream_server(None, "app") is None
