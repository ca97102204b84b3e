"""HTTP probing against a real socket: answers, refusals and bad URLs."""

import http.server
import socket

import pytest
from ansible.module_utils.montaiguillon.deploy.probe import HttpProbe, ProbeError, poll_until_ok


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"path={self.path} host={self.headers['Host']}".encode()
        self.send_response(503 if self.path.startswith("/down") else 200)
        self.send_header("X-App-Version", "1.2.3")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(http_server):
    return http_server(Handler)


def test_get_returns_status_lowercased_headers_and_body(server):
    answer = HttpProbe().get(f"{server}/version?x=1", host="site.test")
    assert answer.status == 200
    assert answer.headers["x-app-version"] == "1.2.3"
    assert answer.body == "path=/version?x=1 host=site.test"
    assert answer.describe() == "HTTP 200: path=/version?x=1 host=site.test"


def test_an_error_status_is_an_answer_not_an_exception(server):
    answer = HttpProbe().get(f"{server}/down")
    assert answer.status == 503
    assert answer.describe().startswith("HTTP 503: path=/down")


def test_a_refused_connection_is_a_probe_error_naming_the_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/up"
    with pytest.raises(ProbeError, match=rf"GET {url}: ConnectionRefusedError"):
        HttpProbe().get(url, timeout=1)


@pytest.mark.parametrize("url", ["ftp://host/x", "http:///nohost", "not a url"])
def test_only_http_and_https_urls_are_probed(url):
    with pytest.raises(ProbeError, match="only http:// and https:// URLs"):
        HttpProbe().get(url)


def test_poll_until_ok_tries_until_ok_sleeping_between():
    answers = iter([(False, "HTTP 503"), (False, "HTTP 503"), (True, "HTTP 200")])
    slept = []
    result = poll_until_ok(lambda: next(answers), 10, 0.5, lambda: 0, slept.append)
    assert result == (True, 3, "HTTP 200")
    assert slept == [0.5, 0.5]


def test_poll_until_ok_starts_quick_then_doubles_up_to_the_interval():
    slept = []
    result = poll_until_ok(lambda: (False, "refused"), 10, 1, lambda: sum(slept), slept.append, first=0.1)
    assert result[0] is False
    assert slept[:5] == [0.1, 0.2, 0.4, 0.8, 1] and set(slept[4:]) == {1}
    assert 10 <= sum(slept) < 11


def test_poll_until_ok_gives_up_at_the_deadline_with_the_last_answer():
    ticks = iter([0, 1, 2, 3])
    result = poll_until_ok(lambda: (False, "refused"), 2, 1, lambda: next(ticks), lambda s: None)
    assert result == (False, 2, "refused")
